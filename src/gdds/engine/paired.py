"""Differences between two evaluated models, paired on the same validation blocks (``gdds compare``'s
cross-method table).

Every model of a comparison is bounded on the same blocks (they depend on the evaluation seed only),
so the difference of two figures is estimated from per-sequence differences
(:func:`gdds.likelihood.paired_difference`): the between-sequence variation, most of a bound's
standard error, cancels. Methods on the same process also share the bound's draws (term indices and
``x_t``), which cancels more. With several training seeds, each seed gives one paired difference;
their mean carries two standard errors, the Monte-Carlo one (from the evaluation's draws and
blocks) and the one from the spread across seeds (training noise, initialisation included), and a
difference counts as significant only when it exceeds twice the larger of the two.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..likelihood import paired_difference
from .reports import NLLReport, PerSequence

SIGNIFICANCE = 2.0  # a difference is called significant beyond this many standard errors (about 95%)


def _values(report: NLLReport) -> PerSequence:
    if report.per_sequence is None:
        raise ValueError(f"{report.metric}: no per-sequence values saved (an evaluation made before they were "
                         "kept); evaluate again to pair it")
    return report.per_sequence


def difference(a: NLLReport, b: NLLReport) -> tuple[float, float]:
    """``a - b`` in nats/token and its standard error, from per-sequence differences on the same blocks."""
    va, vb = _values(a), _values(b)
    if va.blocks != vb.blocks or va.tokens != vb.tokens:
        raise ValueError("the two figures were not measured on the same blocks (different evaluation seeds or "
                         "sequence counts); they cannot be paired")
    d = paired_difference(torch.tensor(va.nats, dtype=torch.float64), torch.tensor(vb.nats, dtype=torch.float64),
                          torch.tensor(vb.tokens, dtype=torch.float64))
    return d.nats_per_token, d.standard_error


@dataclass(frozen=True)
class SeededDifference:
    """``method - reference`` per training seed (paired on blocks, ± Monte-Carlo SE), their mean,
    the mean's Monte-Carlo SE and, with two seeds or more, the SE from the spread across seeds."""

    method: str
    reference: str
    seeds: list[int]
    per_seed: list[float]
    per_seed_se: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed)

    @property
    def se_monte_carlo(self) -> float:
        """The standard error of :attr:`mean` from the evaluations' draws and blocks alone."""
        return math.sqrt(sum(se * se for se in self.per_seed_se)) / len(self.per_seed_se)

    @property
    def se_seeds(self) -> float | None:
        """The standard error of :attr:`mean` from the spread across seeds (``None`` with one seed)."""
        return statistics.stdev(self.per_seed) / math.sqrt(len(self.per_seed)) if len(self.per_seed) >= 2 else None

    @property
    def standard_error(self) -> float:
        """The larger of the two standard errors (the seeds' one when there are several seeds)."""
        return max(self.se_monte_carlo, self.se_seeds or 0.0)

    @property
    def verdict(self) -> str:
        """``lower``/``higher`` (significant: beyond :data:`SIGNIFICANCE` standard errors, and every
        seed on the same side) or ``not significant``."""
        side = {math.copysign(1.0, d) for d in self.per_seed}
        if abs(self.mean) <= SIGNIFICANCE * self.standard_error or len(side) > 1:
            return "not significant"
        return "lower" if self.mean < 0 else "higher"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "se_monte_carlo": self.se_monte_carlo, "se_seeds": self.se_seeds,
                "standard_error": self.standard_error, "verdict": self.verdict,
                "significance": f"|mean| > {SIGNIFICANCE:g} standard errors and every seed on the same side"}


def seeded_difference(method: str, reference: str, seeds: Sequence[int], pairs: Sequence[tuple[NLLReport, NLLReport]]
                      ) -> SeededDifference:
    """The :class:`SeededDifference` of ``(method's figure, reference's figure)`` for each seed."""
    diffs = [difference(a, b) for a, b in pairs]
    return SeededDifference(method, reference, list(seeds), [d for d, _ in diffs], [se for _, se in diffs])
