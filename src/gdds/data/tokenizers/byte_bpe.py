"""Byte-level BPE in the ``tokenizers`` library's terms: the byte <-> printable-character table of
GPT-2, and the vocabulary and merge list of a BPE given by merge ranks (tiktoken's format: each
token's bytes and its rank), so GPT-2's ranks can be written as a ``tokenizer.json`` that
``tokenizers.Tokenizer`` and ``transformers.PreTrainedTokenizerFast`` read."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def byte_of_char() -> dict[str, int]:
    """Inverse of the byte -> printable character table of byte-level BPE (GPT-2):
    printable Latin-1 bytes stand for themselves, the others for chr(256 + n)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    table.update({chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in keep)})
    return table


@functools.lru_cache(maxsize=1)
def char_of_byte() -> dict[int, str]:
    """The byte -> printable character table (the inverse of :func:`byte_of_char`)."""
    return {b: c for c, b in byte_of_char().items()}


def _split(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    """The last merge that makes ``token``: BPE on its bytes with the merges ranked below it, which
    ends in two parts for every reachable token."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, where = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best:
                best, where = rank, i
        if where < 0:
            return None
        parts[where:where + 2] = [parts[where] + parts[where + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The ``tokenizers`` BPE vocabulary (printable-character strings -> ids = ranks) and merges
    (in rank order) equivalent to merge ``ranks``."""
    table = char_of_byte()

    def text(data: bytes) -> str:
        return "".join(table[b] for b in data)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1 and (pair := _split(token, ranks)) is not None:
            merges.append((text(pair[0]), text(pair[1])))
    return vocab, merges
