"""Sample quality of a sampler setting at equal entropy, with a bootstrap standard error
(``gdds decode-bench``, ``docs/decoding.md``).

A faster sampler that repeats itself gets a lower generative perplexity *and* a lower entropy, so
settings are compared where their samples have the same unigram entropy: each setting draws one
set of samples per nucleus ``top_p`` (a sweep, as ``gdds compare`` does), and the judge's
perplexity is read at a common entropy, linear in log-perplexity between the two sweep points
around it (:func:`gdds.engine.evaluation.entropy.log_interpolate`). Its standard error comes from
a bootstrap over samples: the sequences are resampled with replacement (the same rows at every
point of a sweep, since the points share their seed), each point's entropy and perplexity are
recomputed from the resampled sequences, and the interpolation is done again.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .entropy import log_interpolate

NO_SWEEP = "no sweep (the sampler takes no decoding, or the setting has its own top_p)"


@dataclass(frozen=True)
class SweepPoint:
    """One set of ``n`` samples drawn with nucleus ``top_p``: each sample's token counts ``counts [n, V]``,
    and under each judge ``j`` each sample's nats ``nats[j, i]`` and judge tokens ``tokens[j, i]``."""

    top_p: float
    counts: np.ndarray
    nats: np.ndarray
    tokens: np.ndarray

    @classmethod
    def of(cls, top_p: float, ids: torch.Tensor,
           judged: Sequence[tuple[Sequence[float], Sequence[int]]]) -> SweepPoint:
        """The point of samples ``ids [n, L]`` and each judge's
        :meth:`~gdds.engine.evaluation.judge.Judge.nll_per_text` of their texts."""
        rows = ids.detach().cpu().long()
        counts = torch.zeros(rows.shape[0], int(rows.max()) + 1, dtype=torch.long)
        counts.scatter_add_(1, rows, torch.ones_like(rows))
        nats = np.array([list(n) for n, _ in judged], dtype=np.float64).reshape(len(judged), rows.shape[0])
        tokens = np.array([list(t) for _, t in judged], dtype=np.int64).reshape(len(judged), rows.shape[0])
        return cls(top_p, counts.numpy(), nats, tokens)

    @property
    def samples(self) -> int:
        return self.counts.shape[0]

    def entropy(self, rows: np.ndarray | None = None) -> float:
        """Unigram entropy (nats) of the pooled samples ``rows`` (default all), as
        :func:`gdds.engine.evaluation.entropy.unigram_entropy`."""
        total = (self.counts if rows is None else self.counts[rows]).sum(0)
        p = total[total > 0] / total.sum()
        return float(-(p * np.log(p)).sum())

    def perplexity(self, judge: int, rows: np.ndarray | None = None) -> float:
        """Judge ``judge``'s generative perplexity of the samples ``rows`` (default all): ``exp`` of their
        nats over their judge tokens."""
        take = slice(None) if rows is None else rows
        return float(np.exp(self.nats[judge, take].sum() / self.tokens[judge, take].sum()))


def common_entropy(sweeps: Sequence[Sequence[SweepPoint]]) -> float | None:
    """The highest unigram entropy that every sweep reaches (a nucleus only lowers entropy), as
    :attr:`gdds.engine.evaluation.compare.Comparison.common_entropy`; ``None`` without sweeps or when
    they do not overlap."""
    spans = [[p.entropy() for p in sweep] for sweep in sweeps if sweep]
    if not spans:
        return None
    level = min(max(s) for s in spans)
    return level if level >= max(min(s) for s in spans) else None


def quality_at(sweep: Sequence[SweepPoint], target: float | None, judge: int,
               rows: np.ndarray | None = None, extrapolate: bool = False) -> float | None:
    """Judge ``judge``'s perplexity of ``sweep`` at entropy ``target`` (``None``: the sweep's one point,
    at its own entropy), from the samples ``rows``; ``None`` where the sweep does not reach ``target``
    (unless ``extrapolate``: :func:`~gdds.engine.evaluation.entropy.log_interpolate`)."""
    if target is None:
        if len(sweep) != 1:
            raise ValueError("a raw point (no target entropy) needs a sweep of exactly one point")
        return sweep[0].perplexity(judge, rows)
    return log_interpolate([(p.entropy(rows), p.perplexity(judge, rows)) for p in sweep], target, extrapolate)


@dataclass(frozen=True)
class Quality:
    """Generative perplexity of one setting under one judge: ``perplexity`` at ``entropy`` (the common
    entropy, or with ``swept`` false the setting's own raw point), ``standard_error`` by bootstrap over
    ``samples`` sequences (the standard deviation of ``resamples`` replicates, of which ``reached`` reached
    the entropy without extrapolation). ``perplexity`` is ``None`` where the sweep does not reach it."""

    judge: str
    perplexity: float | None
    standard_error: float | None
    entropy: float | None
    swept: bool
    samples: int
    resamples: int
    reached: int

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "generative_perplexity": self.perplexity, "standard_error": self.standard_error,
                "entropy": self.entropy, "at": "common entropy (nucleus sweep)" if self.swept else
                f"raw point, {NO_SWEEP}", "samples": self.samples,
                "bootstrap_resamples": self.resamples, "bootstrap_reached": self.reached}


def bootstrap_quality(sweep: Sequence[SweepPoint], target: float | None, judge: int, name: str,
                      resamples: int, seed: int) -> Quality:
    """:func:`quality_at` for ``sweep`` (``target`` ``None``: its raw point) with the standard deviation
    of ``resamples`` bootstrap replicates (rows drawn with replacement from a generator seeded with
    ``seed``, the same rows at every point). The common entropy is often the top of a sweep, which about
    half the replicates miss (a resample repeats sequences, so its entropy is lower): a replicate is
    extrapolated along the end segment of its own sweep, and ``reached`` counts those that needed none.
    The SE is ``None`` where the sweep itself does not reach ``target``."""
    if resamples < 2:
        raise ValueError(f"a bootstrap needs at least 2 resamples; got {resamples}")
    n = sweep[0].samples
    value = quality_at(sweep, target, judge)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, size=n) for _ in range(resamples)]
    reached = sum(quality_at(sweep, target, judge, rows) is not None for rows in draws)
    replicates = np.array([quality_at(sweep, target, judge, rows, extrapolate=True) for rows in draws],
                          dtype=np.float64) if value is not None else np.zeros(0)
    se = float(replicates.std(ddof=1)) if replicates.size >= 2 else None
    entropy = sweep[0].entropy() if target is None else target
    return Quality(name, value, se, entropy, target is not None, n, resamples, int(reached))
