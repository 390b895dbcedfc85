"""Compact vocabulary: only the token ids seen in the training split (plus specials), so
that small runs do not pay for 30,000- or 50,000-way outputs.

A :class:`CompactVocab` maps full ids to compact ids ``0..size-1`` and back, keeping
their order (compact id ``c`` stands for full id ``full_ids[c]``, ascending). Anything
indexed by full id follows the mapping through ``full_ids``, e.g. the embedding rows of
the semantic kernel: ``SemanticKNN(select_rows(emb, vocab.full_ids), ...)`` with
:func:`gdds.data.embeddings.select_rows`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from .base import TextTokenizer, UnknownTextError, listed, sha256_bytes, write_json

Ids = TypeVar("Ids", np.ndarray, torch.Tensor)


class CompactVocab:
    """The kept full ids (``full_ids``, sorted ascending) out of ``full_size``."""

    def __init__(self, full_ids: Iterable[int] | np.ndarray, full_size: int) -> None:
        ids = np.array(full_ids if isinstance(full_ids, np.ndarray) else list(full_ids), dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0 or np.any(np.diff(ids) <= 0):
            raise ValueError("full_ids must be a non-empty, strictly increasing list of token ids")
        if ids[0] < 0 or ids[-1] >= full_size:
            raise ValueError(f"full_ids must lie in [0, full_size={full_size}); got {ids[0]}..{ids[-1]}")
        self.full_size = int(full_size)
        self.full_ids = ids
        self.full_ids.flags.writeable = False
        self._lookup = np.full(self.full_size, -1, dtype=np.int64)
        self._lookup[ids] = np.arange(ids.size)
        self._torch: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def fit(cls, token_arrays: Iterable[np.ndarray], specials: Iterable[int], full_size: int) -> CompactVocab:
        """The ids that occur in ``token_arrays`` (e.g. the training split) plus ``specials``."""
        seen = np.zeros(int(full_size), dtype=bool)
        for array in token_arrays:
            flat = np.asarray(array).reshape(-1)
            if flat.size and (flat.min() < 0 or flat.max() >= full_size):
                raise ValueError(f"token ids must lie in [0, full_size={full_size}); got {flat.min()}..{flat.max()}")
            seen[flat] = True
        for s in specials:
            if not 0 <= int(s) < full_size:
                raise ValueError(f"special id {s} is outside [0, full_size={full_size})")
            seen[int(s)] = True
        return cls(np.flatnonzero(seen), full_size)

    @property
    def size(self) -> int:
        """Number of compact ids."""
        return int(self.full_ids.size)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._torch:
            self._torch[device] = (torch.from_numpy(self._lookup).to(device),
                                   torch.from_numpy(self.full_ids.copy()).to(device))
        return self._torch[device]

    def _check(self, ids: Ids, bound: int, what: str) -> None:
        bad = (ids < 0) | (ids >= bound)
        if bool(bad.any()):
            first = ids[bad].reshape(-1)[0]
            raise ValueError(f"token id {int(first)} is outside the {what} vocabulary [0, {bound})")

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Compact id of each full id in ``[0, full_size)``, -1 where it is not kept."""
        return self._lookup[np.asarray(ids, dtype=np.int64)]

    def to_compact(self, ids: Ids) -> Ids:
        """Full ids -> compact ids (int64 array or long tensor of the same shape).

        Raises ``ValueError`` naming the first id that is not kept."""
        if isinstance(ids, torch.Tensor):
            ids = ids.long()
            self._check(ids, self.full_size, "full")
            out = self._tables(ids.device)[0][ids]
        else:
            ids = np.asarray(ids).astype(np.int64, copy=False)
            self._check(ids, self.full_size, "full")
            out = self.lookup(ids)
        missing = out < 0
        if bool(missing.any()):
            first = int(ids[missing].reshape(-1)[0])
            raise ValueError(
                f"token id {first} is not in the compact vocabulary ({self.size} of {self.full_size} ids, fitted "
                "on the training split); fit it on more text, or encode with an unk fallback"
            )
        return out

    def to_full(self, ids: Ids) -> Ids:
        """Compact ids -> full ids (int64 array or long tensor of the same shape)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.long()
            self._check(ids, self.size, "compact")
            return self._tables(ids.device)[1][ids]
        ids = np.asarray(ids).astype(np.int64, copy=False)
        self._check(ids, self.size, "compact")
        return self.full_ids[ids]

    def fingerprint(self) -> str:
        """sha256 of ``full_size`` and ``full_ids``."""
        return sha256_bytes(np.int64(self.full_size).tobytes() + self.full_ids.tobytes())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (see :meth:`from_dict`)."""
        return {"full_size": self.full_size, "full_ids": self.full_ids.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompactVocab:
        """Inverse of :meth:`to_dict`."""
        return cls(data["full_ids"], data["full_size"])

    def save(self, path: str | Path) -> Path:
        """Write the mapping as JSON (atomically)."""
        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CompactVocab:
        """Read a mapping written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CompactVocab) and self.full_size == other.full_size
                and np.array_equal(self.full_ids, other.full_ids))

    def __repr__(self) -> str:
        return f"CompactVocab(size={self.size}, full_size={self.full_size})"


class CompactTokenizer(TextTokenizer):
    """``base`` in compact ids: encode = ``vocab.to_compact(base.encode(text))``, and
    the special ids are the compact images of the base's.

    A token outside the compact vocabulary raises :class:`UnknownTextError` naming it, unless
    ``unk=True``: then it becomes the base's unk token (which must be kept; WordPiece
    ``[UNK]``, the character tokenizer's ``<unk>``; GPT-2 and the byte-level BPE have
    none: fit the vocabulary on every split instead).
    """

    kind = "compact"

    def __init__(self, base: TextTokenizer, vocab: CompactVocab, unk: bool = False) -> None:
        if vocab.full_size != base.vocab_size:
            raise ValueError(f"the compact vocabulary maps {vocab.full_size} ids but {base.name} has {base.vocab_size}")
        if unk and base.unk_id is None:
            raise ValueError(f"{base.name} has no unk token, so unk=True is impossible; fit the vocabulary on all text")
        wanted = {"bos": base.bos_id, "eos": base.eos_id, "pad": base.pad_id, "mask": base.mask_id,
                  "unk": base.unk_id if unk else None}
        missing = [f"{k} ({v})" for k, v in wanted.items() if v is not None and vocab.lookup(np.array(v)) < 0]
        if missing:
            raise ValueError(f"the compact vocabulary lacks the special ids {missing}; "
                             "include base.special_ids() in the specials of CompactVocab.fit")
        self.base, self.vocab, self.unk = base, vocab, unk
        self.name = f"{base.name}+compact"
        self.vocab_size = vocab.size
        self.bos_id, self.eos_id, self.pad_id, self.mask_id, self.unk_id = (
            None if v is None else int(vocab.lookup(np.array(v))) for v in wanted.values()
        )

    def _map(self, full: list[int]) -> list[int]:
        ids = np.asarray(full, dtype=np.int64)
        out = self.vocab.lookup(ids)
        if self.unk:
            out[out < 0] = self.unk_id
        elif (out < 0).any():
            token = int(ids[out < 0][0])
            raise UnknownTextError(f"token {self.base.pieces([token])[0]!r} (id {token}) is not in the compact "
                                   f"vocabulary of {self.name}; fit it on more text or build the CompactTokenizer "
                                   "with unk=True")
        return out.tolist()

    def encode(self, text: str) -> list[int]:
        return self._map(self.base.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self._map(ids) for ids in self.base.encode_batch(texts)]

    def _cut_at(self, text: str, near: int) -> int | None:
        return self.base._cut_at(text, near)

    def _unknown(self, text: str) -> str:
        """The base's unknown characters, else the base tokens outside the compact vocabulary (never
        seen in the text it was fitted on)."""
        if self.base._represented(text) is None:
            return self.base._unknown(text)
        full = np.asarray(self.base.encode(text), dtype=np.int64)
        missing = full[self.vocab.lookup(full) < 0]
        pieces = list(dict.fromkeys(self.base.pieces(missing.tolist())))
        return (f"{missing.size} token(s) outside the {self.name} vocabulary, never seen in the text it was fitted on "
                f"({len(pieces)} distinct: {listed(pieces)})")

    def decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(self.vocab.full_ids[self._check_ids(ids)].tolist())

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return self.base.pieces(self.vocab.full_ids[self._check_ids(ids)].tolist())

    def fingerprint(self) -> str:
        return sha256_bytes(f"{self.base.fingerprint()}:{self.vocab.fingerprint()}:unk={self.unk}".encode())

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "base": self.base.identity()}

    def _save_payload(self, folder: Path) -> dict[str, Any]:
        self.base.save(folder / "base")
        return {"vocab": self.vocab.to_dict(), "unk": self.unk}
