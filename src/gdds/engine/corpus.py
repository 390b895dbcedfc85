"""From ``data.*`` to a run's data: the corpus (:func:`gdds.data.corpora.recipes.resolve_corpus`), its
token store (built once by :func:`gdds.data.tokens.prepare.open_store`, memory-mapped after), the
compact vocabulary fitted from the store's counts, the blocks of every split, and the
co-occurrence embeddings computed on a token budget and cached on disk; and the blocks of another
corpus's held-out documents that a zero-shot evaluation reads (:func:`zero_shot_blocks`), from a
token store of their own.

Nothing here reads raw text once the store exists: a run start, ``gdds eval`` and ``gdds sample``
compute the corpus's cheap fingerprint, open the store and map it. Statistics (vocabulary,
unknown-token counts, unigram counts) come from the per-split counts the store keeps, so memory
does not grow with the corpus.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import PACKINGS, TOKENIZERS, Blocks, CompactTokenizer, CompactVocab, TextTokenizer, TokenArray
from ..data import embeddings as E
from ..data.corpora.recipes import resolve_corpus
from ..data.corpora.sources import HELD_OUT, Corpus, CorpusError, HeldOutCorpus, digest
from ..data.tokens.prepare import open_store
from ..data.tokens.store import TokenizerRecipe, TokenStore
from ..data.tokens.stream import StreamedBlocks
from ..files import cache_dir, write_cache
from .config import ConfigError, DataConfig, ProcessConfig


@dataclass
class Data:
    """Tokenizer (compact when configured), token arrays and blocks of every stored split, and the
    per-split counts of each model id."""

    tokenizer: TextTokenizer
    arrays: dict[str, TokenArray]
    blocks: dict[str, Blocks]
    counts: dict[str, np.ndarray]
    store: TokenStore | None  # None for a model folder (no corpus)
    notes: dict[str, Any] = field(default_factory=dict)

    def unigram_counts(self) -> torch.Tensor:
        """How often each model id occurs in the training split (``[vocab]`` int64)."""
        return torch.from_numpy(self.counts["train"].copy())

    def split(self, name: str) -> Blocks:
        """The blocks of split ``name``; :class:`ConfigError` when the corpus has no such split."""
        if name not in self.blocks:
            raise ConfigError(f"the corpus has no {name!r} split (it has {', '.join(self.blocks)})")
        return self.blocks[name]


def corpus_of(dc: DataConfig) -> Corpus:
    """The corpus of ``data.corpus`` and ``data.corpus_args`` (errors as :class:`ConfigError`)."""
    try:
        return resolve_corpus(dc.corpus, dict(dc.corpus_args), dc.valid_fraction, dc.test_fraction, dc.split_seed)
    except (CorpusError, FileNotFoundError) as exc:
        raise ConfigError(f"data.corpus={dc.corpus}: {exc}") from exc


def store_of(dc: DataConfig, root: Path | None = None, progress: bool = False, workers: int | None = None,
             build: bool | None = None, corpus: Corpus | None = None, rebuild: bool = False) -> TokenStore:
    """The token store of ``data.*`` (``corpus``: its :func:`corpus_of`, when already made), built
    on first use (afresh with ``rebuild``). Under torchrun only local rank 0 builds (``build=None``);
    the others wait for it and map it."""
    corpus = corpus_of(dc) if corpus is None else corpus
    entry = TOKENIZERS.get(dc.tokenizer)
    recipe = TokenizerRecipe(dc.tokenizer, dc.bpe_vocab_size if entry.sized else None)
    if build is None:
        build = int(os.environ.get("LOCAL_RANK", "0")) == 0
    try:
        return open_store(corpus, recipe, root=root, build=build, progress=progress, workers=workers,
                          rebuild=rebuild)
    except (CorpusError, FileNotFoundError) as exc:
        raise ConfigError(f"data.corpus={dc.corpus}: {exc}") from exc


def _mapped_counts(counts: np.ndarray, lookup: np.ndarray | None, size: int) -> np.ndarray:
    if lookup is None:
        return counts.astype(np.int64)
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, lookup, counts)
    return out


def build_data(dc: DataConfig, root: Path | None = None, progress: bool = False) -> Data:
    """The run's data from its token store (see the module docstring). A streaming split (FineWeb)
    becomes :class:`~gdds.data.tokens.stream.StreamedBlocks`; its stored head gives its counts."""
    corpus = corpus_of(dc)
    store = store_of(dc, root, progress, corpus=corpus)
    base = store.tokenizer
    tokenizer: TextTokenizer = base
    lookup = None
    splits = store.manifest["splits"]
    notes: dict[str, Any] = {"corpus": corpus.name, "store": str(store.folder),
                             "documents": {s: splits[s]["docs"] for s in store.splits()},
                             "tokens": {s: splits[s]["tokens"] for s in store.splits()},
                             "streamed": {s: "the store holds its first documents only" for s in store.splits()
                                          if store.streamed(s)}}
    if corpus.packing != dc.packing:
        notes["packing"] = f"{corpus.name} is meant for data.packing={corpus.packing}, not {dc.packing}"
    if dc.compact_vocab:
        # Without an unknown token to stand for ids unseen in training, keep the id *set* of every
        # split (no statistics), so evaluation text is never altered.
        fit_on = ["train"] if base.unk_id is not None else list(store.splits())
        seen = sum(store.counts(s) for s in fit_on) > 0
        seen[base.special_ids()] = True
        vocab = CompactVocab(np.flatnonzero(seen), base.vocab_size)
        tokenizer = CompactTokenizer(base, vocab, unk=base.unk_id is not None)
        lookup = vocab.lookup(np.arange(base.vocab_size))
        if tokenizer.unk_id is not None:
            lookup[lookup < 0] = tokenizer.unk_id
        notes["compact_vocab"] = {"size": vocab.size, "full_size": base.vocab_size}
    counts = {s: _mapped_counts(store.counts(s), lookup, tokenizer.vocab_size) for s in store.splits()}
    if tokenizer.unk_id is not None:
        notes["unk_tokens"] = {s: int(c[tokenizer.unk_id]) for s, c in counts.items()}
    arrays = {s: TokenArray(store.tokens(s, lookup), store.offsets(s), store.key) for s in store.splits()}
    blocks = {s: _streamed(dc, corpus, s, tokenizer) if store.streamed(s) else pack_blocks(arrays[s], tokenizer, dc)
              for s in store.splits()}
    return Data(tokenizer, arrays, blocks, counts, store, notes)


def _streamed(dc: DataConfig, corpus: Corpus, split: str, tokenizer: TextTokenizer) -> StreamedBlocks:
    """Blocks of a streaming split, read on the fly with the full vocabulary and wrap packing
    (a compact vocabulary fitted before the stream is read could not hold every id it meets)."""
    if dc.compact_vocab or dc.packing != "wrap":
        raise ConfigError(f"data.corpus={dc.corpus} streams its {split} split: set data.compact_vocab=false and "
                          "data.packing=wrap")
    return StreamedBlocks(corpus, split, tokenizer, dc.seq_len)


def pack_blocks(array: TokenArray, tok: TextTokenizer, dc: DataConfig) -> Blocks:
    """Blocks of ``array`` with the configured packing (:data:`gdds.data.PACKINGS`)."""
    try:
        return PACKINGS.get(dc.packing)(array, tok, dc.seq_len)
    except ValueError as exc:
        raise ConfigError(f"data.packing={dc.packing}, data.seq_len={dc.seq_len}: {exc}") from exc



def zero_shot_blocks(name: str, tokenizer: TextTokenizer, dc: DataConfig, root: Path | None = None) -> Blocks:
    """Blocks of corpus ``name``'s held-out documents (:meth:`gdds.data.corpora.sources.Corpus.held_out`: a named
    corpus's test split, e.g. PTB's or LAMBADA's; all of an embedded corpus or of local files) under a
    run's ``tokenizer`` and packing. They are tokenised once into a token store of their own
    (:class:`~gdds.data.corpora.sources.HeldOutCorpus`, keyed by the corpus's fingerprint and the tokenizer's
    identity) and mapped from it after, as a run's training data is."""
    try:
        store = open_store(HeldOutCorpus(resolve_corpus(name)), TokenizerRecipe(tokenizer.name, given=tokenizer),
                           root=root, progress=False)
    except (CorpusError, FileNotFoundError) as exc:
        raise ConfigError(f"zero-shot corpus {name}: {exc}") from exc
    return pack_blocks(TokenArray(store.tokens(HELD_OUT), store.offsets(HELD_OUT), store.key), tokenizer, dc)

def budget_tokens(array: TokenArray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The first whole documents of ``array`` within ``budget`` tokens (at least the start of the
    first one): ``(ids, offsets)``, read from the store's memory map."""
    offsets = np.asarray(array.offsets)
    whole = int(np.searchsorted(offsets, budget, side="right")) - 1
    if whole >= 1:
        return np.asarray(array.tokens[0:int(offsets[whole])]), offsets[:whole + 1].astype(np.int64)
    n = min(budget, int(offsets[1]))
    return np.asarray(array.tokens[0:n]), np.array([0, n], dtype=np.int64)


def cooccurrence(pc: ProcessConfig, data: Data) -> torch.Tensor:
    """Co-occurrence embeddings of the model's ids from the first ``process.embedding_tokens``
    tokens of the training split, cached in ``cache_dir("embeddings")`` (written atomically; a cache
    that cannot be written is a warning) under the store, the tokenizer, the budget and the dimension."""
    # v2: the counts are those of one pass again (57e42e9..81c5510 summed chunks in another order,
    # other last bits, another embeddings_sha256; their cache entries are not read).
    key = digest({"store": data.store.key, "tokenizer": data.tokenizer.identity(), "dim": pc.embedding_dim,
                  "budget": pc.embedding_tokens, "format": "cooccurrence-v2"})[:32]
    path = cache_dir("embeddings") / f"{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    ids, offsets = budget_tokens(data.arrays["train"], pc.embedding_tokens)
    emb = E.cooccurrence_embeddings(ids, data.tokenizer.vocab_size, dim=pc.embedding_dim, offsets=offsets)
    write_cache(path, lambda fh: np.save(fh, emb.numpy()), "co-occurrence embeddings")
    return emb
