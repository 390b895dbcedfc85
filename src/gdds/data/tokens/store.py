"""The token store: a corpus tokenised once into memory-mapped shards, read by every run after.

Layout of a store folder (``cache_dir("stores") / <key>``, the key a digest of the corpus's
cheap fingerprint (:func:`gdds.data.corpora.sources.file_stats`: names, sizes, dates and a sampled hash of
each file), the tokenizer's recipe or identity and the format version)::

    tokenizer/                   the base tokenizer (trained ones are trained here, once)
    train-00000.tokens           raw little-endian ids (uint16 when the vocabulary fits, else uint32)
    train-00000.offsets.npy      document boundaries inside the shard (int64, starts at 0)
    train-00000.counts.npy       how often each id occurs in the shard (int64 [vocab])
    train-00000.json             the shard's record, written last: a shard without it is not trusted
    ...                          the same for every stored split
    manifest.json                written last of all: the store is complete (its ``content`` is a
                                 digest of every split's offsets and counts)

Every file is written atomically (:func:`gdds.files.write_atomically`), so a killed ``prepare``
leaves complete shards and temporary files only; the next build (:mod:`gdds.data.tokens.prepare`) keeps
the complete shards, resumes after them and removes the temporary files. This module reads a
store; nothing here reads text.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...files import cache_dir
from ..corpora.sources import Corpus, CorpusError, digest
from ..tokenizers.base import PIECE_CHARS, TextTokenizer

FORMAT = "gdds-store-v1"
MANIFEST = "manifest.json"
TOKENIZER_FOLDER = "tokenizer"
SHARD_TOKENS = 1 << 26  # 64M tokens (128 MB of uint16) per shard
BATCH_CHARS = 1 << 20  # characters of text per tokenisation task


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (``vocab_size <= 65536``), else uint32 (little-endian)."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32).newbyteorder("<")


def encoder(tok: TextTokenizer) -> Callable[[list[str]], list[np.ndarray]]:
    """``texts -> [ids]`` in the store's dtype (:func:`token_dtype`), every id checked to be in the vocabulary.
    Texts up to :data:`PIECE_CHARS` go to the tokenizer's batch encoder together; a longer one is encoded
    piece by piece (:meth:`TextTokenizer.encode_pieces`), each piece stored in the dtype at once, so that
    memory stays a few bytes per character whatever the length of a document."""
    dtype = token_dtype(tok.vocab_size)

    def stored(ids: list[int]) -> np.ndarray:
        array = np.asarray(ids, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= tok.vocab_size):
            raise ValueError(f"{tok.name} produced ids outside [0, {tok.vocab_size})")
        return array.astype(dtype)

    def encode(texts: list[str]) -> list[np.ndarray]:
        short = iter(tok.encode_batch([t for t in texts if len(t) <= PIECE_CHARS]))
        return [stored(next(short)) if len(t) <= PIECE_CHARS
                else np.concatenate([stored(ids) for ids in tok.encode_pieces(t)]) for t in texts]

    return encode


class ShardedTokens:
    """A split's ids over its memory-mapped shards, indexed like one 1-D array (integer arrays,
    slices), optionally through ``lookup`` (base id -> model id, e.g. a compact vocabulary).
    Nothing is read before it is indexed."""

    def __init__(self, shards: list[np.ndarray], lookup: np.ndarray | None = None) -> None:
        self.shards, self.lookup = shards, lookup
        self.starts = np.concatenate([[0], np.cumsum([s.size for s in shards], dtype=np.int64)])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def size(self) -> int:
        return len(self)

    def _mapped(self, ids: np.ndarray) -> np.ndarray:
        return ids if self.lookup is None else self.lookup[ids]

    def __getitem__(self, index: np.ndarray | slice | int) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("a token store slice takes step 1")
            return self._mapped(self.read(start, stop))
        idx = np.asarray(index, dtype=np.int64)
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"token index out of range for {len(self)} tokens")
        first = int(shard.flat[0]) if idx.size else 0
        if idx.size == 0 or (shard == first).all():  # the common case: one shard
            return self._mapped(np.asarray(self.shards[first][idx - self.starts[first]]))
        out = np.empty(idx.shape, dtype=self.shards[0].dtype)
        for s in np.unique(shard):
            where = shard == s
            out[where] = self.shards[s][idx[where] - self.starts[s]]
        return self._mapped(out)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Base ids ``[start, stop)`` (not looked up), copied out of the shards."""
        parts = []
        for s, shard in enumerate(self.shards):
            lo, hi = max(start, self.starts[s]), min(stop, self.starts[s + 1])
            if lo < hi:
                parts.append(np.asarray(shard[lo - self.starts[s]:hi - self.starts[s]]))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def chunks(self, size: int = 1 << 24) -> Iterator[np.ndarray]:
        """The ids in order, ``size`` at a time, looked up (memory bounded by a chunk)."""
        for start in range(0, len(self), size):
            yield self[start:min(start + size, len(self))]


@dataclass(frozen=True)
class TokenizerRecipe:
    """How the store gets its tokenizer: built by name from the ``train`` split (``build(name,
    docs, size)``, for ``char`` and ``bpe``), or given (a fixed or already trained tokenizer)."""

    name: str
    vocab_size: int | None = None
    given: TextTokenizer | None = None

    def identity(self) -> dict[str, Any]:
        if self.given is not None:
            return {"given": self.given.identity()}
        return {"build": self.name, "vocab_size": self.vocab_size}


def store_key(corpus: Corpus, recipe: TokenizerRecipe) -> str:
    """The store's folder name: a digest of the format, the corpus fingerprint and the tokenizer."""
    return digest({"format": FORMAT, "corpus": corpus.fingerprint(), "tokenizer": recipe.identity()})[:32]


@dataclass(frozen=True)
class TokenStore:
    """A complete store: its folder, manifest and base tokenizer."""

    folder: Path
    manifest: dict[str, Any]
    tokenizer: TextTokenizer

    @property
    def key(self) -> str:
        """The folder's name, and the digest of what it holds (so that caches made from a store, e.g.
        co-occurrence embeddings, are not reused after ``gdds prepare --rebuild`` changed it)."""
        content = self.manifest.get("content")
        return f"{self.folder.name}-{content[:16]}" if content else self.folder.name

    def splits(self) -> tuple[str, ...]:
        """The stored splits (of a streaming split, only its first documents: :meth:`streamed`)."""
        return tuple(self.manifest["splits"])

    def streamed(self, split: str) -> bool:
        """Whether ``split`` is read on the fly by training (the store holds its head only)."""
        return split in self.manifest.get("streaming", {})

    def _check(self, split: str) -> dict[str, Any]:
        if split not in self.manifest["splits"]:
            raise CorpusError(f"the token store {self.folder} has no {split!r} split; it has {list(self.splits())}")
        return self.manifest["splits"][split]

    def _current(self, value: Any) -> Any:
        """``value`` (mapped or read from the folder), once the folder's manifest is checked to be still the
        one this store was opened with. Checked after reading, so what was read belongs to this store: a
        store replaced since it was opened (``gdds prepare --rebuild`` swaps in a new folder) is an error,
        never a mix of the two."""
        path = self.folder / MANIFEST
        if not path.is_file() or json.loads(path.read_text(encoding="utf-8")) != self.manifest:
            raise CorpusError(f"the token store {self.folder} was replaced (gdds prepare --rebuild) after it was "
                              "opened; run again to use the new one")
        return value

    def tokens(self, split: str, lookup: np.ndarray | None = None) -> ShardedTokens:
        """The ids of ``split``, memory-mapped, optionally through ``lookup`` (held in the store's dtype
        when its values fit, as a compact vocabulary's do, else in int32 (-1 for ids it lacks): ids
        read through it take 2 or 4 bytes each, not 8)."""
        dtype = np.dtype(self.manifest["dtype"])
        shards = [np.memmap(self.folder / f"{s['name']}.tokens", dtype=dtype, mode="r", shape=(s["tokens"],))
                  if s["tokens"] else np.zeros(0, dtype=dtype) for s in self._check(split)["shards"]]
        if lookup is not None and lookup.size:
            fits = lookup.min() >= 0 and lookup.max() <= np.iinfo(dtype).max
            lookup = lookup.astype(dtype if fits else np.int32)
        return self._current(ShardedTokens(shards, lookup))

    def offsets(self, split: str) -> np.ndarray:
        """Document boundaries of ``split`` (int64 ``[docs + 1]``, memory-mapped)."""
        self._check(split)
        return self._current(np.load(self.folder / f"{split}.offsets.npy", mmap_mode="r"))

    def counts(self, split: str) -> np.ndarray:
        """How often each base id occurs in ``split`` (int64 ``[vocab]``)."""
        self._check(split)
        return self._current(np.load(self.folder / f"{split}.counts.npy"))


def read_store(folder: Path) -> TokenStore:
    from ..tokenizers.registry import load_tokenizer

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{folder} holds a token store of format {manifest.get('format')!r}, not {FORMAT!r}; "
                          "remove the folder and prepare again")
    return TokenStore(folder, manifest, load_tokenizer(folder / TOKENIZER_FOLDER))


def stores_root(root: Path | str | None = None) -> Path:
    """Where stores live: ``root``, else :func:`gdds.files.cache_dir` ``/ "stores"``."""
    return Path(root) if root is not None else cache_dir("stores")


