"""Tokenizers built from a corpus: character level and a byte-level BPE. Their whole
vocabulary is stored by ``save`` (a character list; the ``tokenizers`` JSON)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from ...files import write_atomically
from .base import AppendedSpecials, sha256_bytes
from .byte_bpe import byte_of_char

BPE_FILE = "bpe.json"
_SPECIALS = ("<mask>", "<bos>", "<eos>", "<pad>")


class CharTokenizer(AppendedSpecials):
    """One token per character (text8 style). Ids ``0..n-1`` are the characters in
    the order given (sorted by ``from_texts``), then ``<mask>`` = n, ``<bos>``,
    ``<eos>``, ``<pad>`` and ``<unk>`` = n + 4, the id of any character outside the
    list (so held-out text with a rare character still encodes)."""

    kind = "char"
    cut = "anywhere"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = list(chars)
        if not self.chars or any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("chars must be a non-empty list of distinct single characters")
        self.name = "char"
        self._set_specials(len(self.chars), (*_SPECIALS, "<unk>"))
        self.mask_id, self.bos_id, self.eos_id, self.pad_id, self.unk_id = (
            self._appended_id(s) for s in (*_SPECIALS, "<unk>")
        )
        self._ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """The characters seen in ``texts``, sorted by code point."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise ValueError("the character tokenizer needs non-empty training text (train_docs)")
        return cls(sorted(seen))

    def encode(self, text: str) -> list[int]:
        unk = self.unk_id
        return [self._ids.get(c, unk) for c in text]

    def _decode_base(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def _base_piece(self, i: int) -> str:
        return self.chars[i]

    def fingerprint(self) -> str:
        return sha256_bytes(json.dumps(self.chars, ensure_ascii=False).encode("utf-8", "surrogatepass"))

    def _save_payload(self, folder: Path) -> dict[str, Any]:
        return {"chars": self.chars}

    def _hf_base(self) -> Tokenizer:
        """A word-level vocabulary over single characters (every character its own piece, pieces
        joined back without spaces); the specials are in it so that ``<unk>`` works."""
        vocab = {**self._ids, **{name: self._appended_id(name) for name in self.appended}}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        return tok


class BPETokenizer(AppendedSpecials):
    """A byte-level BPE (GPT-2 pre-tokenisation, no prefix space) trained with the
    ``tokenizers`` library; any text encodes and decodes exactly. Its learned vocabulary
    (the 256 bytes and the merges) is followed by ``<mask>``, ``<bos>``, ``<eos>``,
    ``<pad>``."""

    kind = "bpe"
    cut = "space"

    def __init__(self, serialized: str) -> None:
        """From the ``tokenizers`` JSON of a trained byte-level BPE."""
        self._json = serialized
        self._tok = Tokenizer.from_str(serialized)
        self.name = "bpe"
        self._set_specials(self._tok.get_vocab_size(), _SPECIALS)
        self.mask_id, self.bos_id, self.eos_id, self.pad_id = (self._appended_id(s) for s in _SPECIALS)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> BPETokenizer:
        """Train on ``texts`` to ``vocab_size`` ids in all (4 of them specials); a small
        corpus can stop with fewer merges, hence a smaller vocabulary."""
        if vocab_size < 256 + len(_SPECIALS):
            raise ValueError(f"a byte-level BPE needs vocab_size >= {256 + len(_SPECIALS)} (256 bytes + "
                             f"{len(_SPECIALS)} specials); got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(_SPECIALS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok.to_str())

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _decode_base(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def _base_piece(self, i: int) -> str:
        table = byte_of_char()
        return bytes(table[c] for c in self._tok.id_to_token(i)).decode("utf-8", "backslashreplace")

    def fingerprint(self) -> str:
        return sha256_bytes(self._json.encode("utf-8"))

    def _hf_base(self) -> Tokenizer:
        return Tokenizer.from_str(self._json)

    def _save_payload(self, folder: Path) -> dict[str, Any]:
        data = self._json.encode("utf-8")
        write_atomically(folder / BPE_FILE, lambda fh: fh.write(data))
        return {"file": BPE_FILE}
