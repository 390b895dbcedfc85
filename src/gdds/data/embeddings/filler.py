"""Filler rows: small deterministic random vectors for tokens without an embedding.

Shared by the co-occurrence embeddings (:mod:`gdds.data.embeddings.cooccurrence`) and word2vec/GloVe
text files (:mod:`gdds.data.embeddings.files`); see :mod:`gdds.data.embeddings` for why
rows are filled rather than left at zero.
"""
from __future__ import annotations

import math

import numpy as np

FILLER_SCALE = 0.01  # norm of a filler row, relative to the median norm of the real rows
_FILLER_CHUNK = 4096  # rows of random numbers drawn at a time (bounds memory)


def filler_rows(ids: np.ndarray, dim: int, scale: float, seed: int) -> np.ndarray:
    """Small deterministic random rows ``[len(ids), dim]`` (float32) for the token ``ids``.

    Row ``i`` is ``scale * z_i / sqrt(dim)`` with ``z_i`` the ``i``-th row of a standard
    normal ``[*, dim]`` stream drawn from ``numpy.random.default_rng(seed)``; so it depends
    only on ``(seed, dim, i)``, not on which other tokens need filling. Its norm is about
    ``scale``. Gaussian rows are distinct and nonzero with probability one.
    """
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((ids.size, dim), dtype=np.float32)
    if ids.size == 0:
        return out
    rng = np.random.default_rng(seed)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    last = int(sorted_ids[-1])
    for start in range(0, last + 1, _FILLER_CHUNK):
        stop = min(last + 1, start + _FILLER_CHUNK)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        lo, hi = np.searchsorted(sorted_ids, [start, stop])
        out[order[lo:hi]] = block[sorted_ids[lo:hi] - start]
    out *= np.float32(scale / math.sqrt(dim))
    return out


def filler_scale(rows: np.ndarray) -> float:
    """:data:`FILLER_SCALE` times the median norm of the nonzero ``rows`` (1 if none)."""
    norms = np.linalg.norm(rows, axis=1)
    norms = norms[norms > 0]
    return FILLER_SCALE * (float(np.median(norms)) if norms.size else 1.0)
