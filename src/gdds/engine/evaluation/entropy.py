"""Unigram entropies of generated token ids: descriptive statistics reported beside the generative
perplexity (a generator that repeats itself gets a low perplexity and a low entropy, so the two are
read together)."""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch


def _samples(token_ids: Sequence[Sequence[int]] | torch.Tensor | np.ndarray,
             ignore: Iterable[int] | None) -> list[np.ndarray]:
    if isinstance(token_ids, torch.Tensor):
        token_ids = token_ids.detach().cpu().numpy()
    if isinstance(token_ids, np.ndarray):
        if token_ids.ndim == 1:
            token_ids = token_ids[None]
        if token_ids.ndim != 2:
            raise ValueError(f"token ids must be 1-D or 2-D (samples x length), got shape {token_ids.shape}")
    rows = [np.asarray(row, dtype=np.int64).reshape(-1) for row in token_ids]
    if ignore is not None:
        drop = np.asarray(list(ignore), dtype=np.int64)
        rows = [row[~np.isin(row, drop)] for row in rows]
    return rows


def _entropy(ids: np.ndarray) -> float:
    _, counts = np.unique(ids, return_counts=True)
    n = counts.sum()
    p = counts / n
    return float(-(p * np.log(p)).sum())


def unigram_entropy(token_ids: Sequence[Sequence[int]] | torch.Tensor,
                    ignore: Iterable[int] | None = None) -> float:
    """Entropy (nats) of the empirical unigram distribution of the generated token ids,
    pooled over all samples (a tensor: 1-D is one sample, 2-D is samples x length).

    A descriptive statistic, exact for the samples given (no estimate of the model's
    entropy): ``log k`` for tokens uniform over ``k`` ids, 0 for a single repeated id.
    ``ignore``: ids left out before counting (e.g. padding).
    """
    rows = _samples(token_ids, ignore)
    ids = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("no tokens to compute a unigram entropy from")
    return _entropy(ids)


def per_sample_entropy(token_ids: Sequence[Sequence[int]] | torch.Tensor,
                       ignore: Iterable[int] | None = None) -> float:
    """Mean over samples of the entropy (nats) of each sample's own unigram distribution,
    the figure MDLM and ReMDM report. Samples left empty (after ``ignore``) are skipped.

    A descriptive statistic, exact for the samples given.
    """
    rows = [row for row in _samples(token_ids, ignore) if row.size]
    if not rows:
        raise ValueError("no tokens to compute a unigram entropy from")
    return float(np.mean([_entropy(row) for row in rows]))


def log_interpolate(points: Iterable[tuple[float, float]], target: float, extrapolate: bool = False) -> float | None:
    """A perplexity at entropy ``target`` from ``(entropy, perplexity)`` points (a nucleus sweep), linear in
    log-perplexity between the two points around it; ``None`` when the points do not reach ``target``
    (no extrapolation), unless ``extrapolate``: then along the end segment nearest to it (a bootstrap
    replicate of a sweep that ends just short of ``target``). How ``gdds compare`` and ``gdds decode-bench``
    compare samplers at equal entropy."""
    ordered = sorted((x, math.log(y)) for x, y in points)
    segments = list(itertools.pairwise(ordered))
    inside = [(a, b) for a, b in segments if a[0] <= target <= b[0]]
    if not inside and not (extrapolate and segments):
        return None
    (x0, y0), (x1, y1) = inside[0] if inside else segments[0] if target < ordered[0][0] else segments[-1]
    return math.exp(y0 if x1 == x0 else y0 + (y1 - y0) * (target - x0) / (x1 - x0))
