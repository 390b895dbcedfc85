"""A split's tokens (:class:`TokenArray`, read from the token store :mod:`gdds.data.tokens.store`) ->
fixed-length training blocks.

Two packings, both deterministic (the training loop owns shuffling), registered by their
configuration names in :data:`PACKINGS`: :class:`PackedBlocks` ("wrap", OpenWebText style)
and :class:`PaddedSentences` ("pad", LM1B style).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...registry import Registry
from ..tokenizers.base import TextTokenizer
from .store import ShardedTokens


@dataclass(frozen=True, eq=False)
class TokenArray:
    """Documents as one token stream: document ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.
    ``tokens`` is a memory-mapped array or a token store's :class:`~gdds.data.tokens.store.ShardedTokens`."""

    tokens: np.ndarray | ShardedTokens
    offsets: np.ndarray
    key: str

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document (int64)."""
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        """Total number of tokens."""
        return int(self.offsets[-1])

    def document(self, i: int) -> np.ndarray:
        """Tokens of document ``i``."""
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def _check_seq_len(seq_len: int) -> int:
    if int(seq_len) != seq_len or seq_len < 3:
        raise ValueError(f"seq_len must be an integer >= 3 (BOS, a token, EOS); got {seq_len}")
    return int(seq_len)


def _check_indices(indices: np.ndarray | Sequence[int] | torch.Tensor, n: int) -> np.ndarray:
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError(f"indices must be a 1-D integer array; got shape {idx.shape}, dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"block indices must lie in [0, {n}); got {idx.min()}..{idx.max()}")
    return idx


class _Blocks(ABC):
    """Shared indexing over ``rows(indices)``, the int64 blocks ``[len, seq_len]``."""

    seq_len: int

    @abstractmethod
    def __len__(self) -> int:
        """Number of blocks."""

    @abstractmethod
    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Blocks ``indices`` (valid int64 indices) as an int64 array ``[len, seq_len]``."""

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"block {i} out of range for {n} blocks")
        return self.rows(np.array([i % n]))[0]

    def mask(self, indices: np.ndarray | Sequence[int] | torch.Tensor) -> torch.Tensor | None:
        """Bool ``[len(indices), seq_len]``: True at the positions that count (not padding);
        ``None`` when every position counts."""
        return None

    def batch(self, indices: np.ndarray | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Blocks ``indices`` as a LongTensor ``[len(indices), seq_len]``."""
        return torch.from_numpy(self.rows(_check_indices(indices, len(self))))


class PackedBlocks(_Blocks):
    """"wrap" packing (OpenWebText style): each document becomes ``[BOS] doc [EOS]``
    (a ``None`` id is left out), all are concatenated in order and cut into
    consecutive blocks of ``seq_len``; the incomplete tail is dropped."""

    def __init__(self, array: TokenArray, seq_len: int, bos_id: int | None, eos_id: int | None) -> None:
        self.array, self.seq_len = array, _check_seq_len(seq_len)
        self.bos_id, self.eos_id = bos_id, eos_id
        self._extra = int(bos_id is not None) + int(eos_id is not None)
        docs = np.arange(len(array) + 1, dtype=np.int64)
        self._starts = array.offsets + self._extra * docs  # stream offset of each wrapped document
        self.n_blocks = int(self._starts[-1]) // self.seq_len
        if self.n_blocks == 0:
            raise ValueError(f"the documents give {int(self._starts[-1])} tokens with BOS/EOS, fewer than one block "
                             f"of seq_len = {self.seq_len}; use a shorter seq_len or more text")

    def __len__(self) -> int:
        return self.n_blocks

    def rows(self, indices: np.ndarray) -> np.ndarray:
        pos = indices[:, None] * self.seq_len + np.arange(self.seq_len)  # positions in the stream
        doc = np.searchsorted(self._starts, pos, side="right") - 1
        r = pos - self._starts[doc]  # position inside the wrapped document
        has_bos = self.bos_id is not None
        inner = r - int(has_bos)
        length = self.array.offsets[doc + 1] - self.array.offsets[doc]
        body = (inner >= 0) & (inner < length)
        src = np.where(body, self.array.offsets[doc] + inner, 0)
        out = np.where(body, self.array.tokens[src], -1).astype(np.int64)
        if has_bos:
            out[r == 0] = self.bos_id
        if self.eos_id is not None:
            out[inner == length] = self.eos_id
        return out


class PaddedSentences(_Blocks):
    """"pad" packing (LM1B style): block ``i`` is document ``i`` as ``[BOS] doc [EOS]``
    followed by ``pad_id`` up to ``seq_len``. A longer document is truncated to its
    first ``seq_len - 2`` tokens and still ends with EOS (``n_truncated`` counts them).
    :meth:`mask` marks the non-pad positions, so losses can ignore the padding."""

    def __init__(self, array: TokenArray, seq_len: int, bos_id: int, eos_id: int, pad_id: int) -> None:
        if None in (bos_id, eos_id, pad_id):
            raise ValueError("pad packing needs bos_id, eos_id and pad_id; every gdds tokenizer has them")
        self.array, self.seq_len = array, _check_seq_len(seq_len)
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self._kept = np.minimum(array.lengths, self.seq_len - 2)
        self.n_truncated = int(np.sum(array.lengths > self.seq_len - 2))

    def __len__(self) -> int:
        return len(self.array)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        r = np.arange(self.seq_len)[None, :]
        kept = self._kept[indices][:, None]
        body = (r >= 1) & (r <= kept)
        src = np.where(body, self.array.offsets[indices][:, None] + r - 1, 0)
        out = np.where(body, self.array.tokens[src], self.pad_id).astype(np.int64)
        out[:, 0] = self.bos_id
        np.put_along_axis(out, kept + 1, self.eos_id, axis=1)
        return out

    def mask(self, indices: np.ndarray | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Bool tensor ``[len(indices), seq_len]``: True on BOS, tokens and EOS, False on padding."""
        idx = _check_indices(indices, len(self))
        return torch.from_numpy(np.arange(self.seq_len)[None, :] <= self._kept[idx][:, None] + 1)


Blocks = PackedBlocks | PaddedSentences


def _wrap(array: TokenArray, tokenizer: TextTokenizer, seq_len: int) -> Blocks:
    return PackedBlocks(array, seq_len, tokenizer.bos_id, tokenizer.eos_id)


def _pad(array: TokenArray, tokenizer: TextTokenizer, seq_len: int) -> Blocks:
    if tokenizer.pad_id is None:
        raise ValueError(f"pad packing needs a pad token; {tokenizer.name} has none (use wrap packing)")
    return PaddedSentences(array, seq_len, tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)


PACKINGS: Registry[Callable[[TokenArray, TextTokenizer, int], Blocks]] = Registry("packing")
PACKINGS.register("wrap", _wrap)
PACKINGS.register("pad", _pad)
