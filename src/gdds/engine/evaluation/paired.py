"""Differences between two evaluated models, paired on the same validation blocks, over training
seeds (``gdds compare``'s verdicts; ``docs/math.md`` section 12).

Every model of a comparison is bounded on the same blocks with the same draws (they depend on the
evaluation seed only), whatever its training seed. So the per-block differences ``d[s, i]`` (method
minus reference, nats, training seed ``s``, block ``i`` of ``n_i`` tokens) share their blocks and
draws across seeds and correlate strongly (0.85-0.94 measured): the seeds' evaluation errors are
**not** independent. The mean difference and its standard error are therefore taken as follows.

- Average over the judged seeds per block, ``dbar_i = mean_s d[s, i]``; the mean is the ratio of
  sums ``D = sum_i dbar_i / sum_i n_i`` (the mean of the per-seed ratios, as every seed has the
  same blocks).
- ``se_blocks``: the delta-method standard error of that ratio across blocks
  (:func:`gdds.likelihood.summarize` on ``dbar``), ``B - 1`` degrees of freedom for ``B`` blocks.
- ``se_seeds``: the spread across seeds, ``stdev_s(D_s) / sqrt(S)`` with ``D_s`` the per-seed
  ratio, ``S - 1`` degrees of freedom.
- ``SE = sqrt(se_blocks^2 + se_seeds^2)``, with Welch-Satterthwaite degrees of freedom
  ``nu = SE^4 / (se_blocks^4 / (B - 1) + se_seeds^4 / (S - 1))``. Each of the two estimates also
  contains the seed x block residual's share ``var_residual / (S B)``, so the sum counts it twice:
  the standard error is slightly conservative.
- A two-sided Student-t test of ``D = 0`` (``p = 2 P(T_nu > |D| / SE)``, scipy) and the 95%
  interval ``D ± t_{nu, 0.975} SE``.

A verdict (``lower`` / ``higher``) needs at least :data:`MIN_SEEDS` judged seeds **and**
``p < ALPHA``; with fewer seeds the training noise (a difference moves by 0.05-0.07 nats/token
between seeds) is unknown or barely known, and the answer is "not significant" with that reason,
however small the evaluation's own error. Seeds that selected a variant are not judged
(:attr:`SeededDifference.judged`): a variant chosen on a seed would be favoured by that seed's noise.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch
from scipy import stats

from ...likelihood import summarize
from .reports import NLLReport, PerSequence

MIN_SEEDS = 3  # judged training seeds a verdict needs
ALPHA = 0.05  # two-sided level of the test
LEVEL = 0.95  # confidence level of the printed interval
VERDICT_RULE = (f"lower/higher only with at least {MIN_SEEDS} judged training seeds and a two-sided Student-t "
                f"p < {ALPHA:g} (mean over seeds of the per-block paired differences; SE from the blocks and "
                "from the spread across seeds, Welch-Satterthwaite degrees of freedom)")


def _values(report: NLLReport) -> PerSequence:
    if report.per_sequence is None:
        raise ValueError(f"{report.metric}: no per-sequence values saved (an evaluation made before they were "
                         "kept); evaluate again to pair it")
    return report.per_sequence


@dataclass(frozen=True)
class PairedTest:
    """The test of a mean paired difference over seeds (module docstring): ``mean`` nats/token, its
    standard errors, degrees of freedom, two-sided p-value and interval at :data:`LEVEL`."""

    mean: float
    se_blocks: float
    se_seeds: float | None
    standard_error: float
    df: float
    p_value: float
    interval: tuple[float, float]


def paired_test(per_block: Sequence[Sequence[float]], tokens: Sequence[int]) -> PairedTest:
    """The test of ``per_block[s][i]`` (nats, seed ``s``, block ``i`` of ``tokens[i]`` tokens; at
    least one seed and two blocks). One seed: ``se_seeds`` is ``None`` and only the blocks count."""
    d = torch.tensor(per_block, dtype=torch.float64)
    n = torch.tensor(tokens, dtype=torch.float64)
    if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] != n.numel():
        raise ValueError(f"need one value per block for each seed: got {tuple(d.shape)} values for "
                         f"{n.numel()} blocks")
    seeds, blocks = d.shape
    over_blocks = summarize(d.mean(0), n)
    mean, se_b = over_blocks.nats_per_token, over_blocks.standard_error
    se_s = None
    if seeds >= 2:
        se_s = statistics.stdev((d.sum(1) / n.sum()).tolist()) / math.sqrt(seeds)
    se = math.hypot(se_b, se_s or 0.0)
    parts = se_b ** 4 / (blocks - 1) + (0.0 if se_s is None else se_s ** 4 / (seeds - 1))
    df = se ** 4 / parts if parts > 0 else math.inf
    if se == 0:
        return PairedTest(mean, se_b, se_s, se, df, 1.0 if mean == 0 else 0.0, (mean, mean))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    return PairedTest(mean, se_b, se_s, se, df, float(2 * stats.t.sf(abs(mean) / se, df)), (mean - half, mean + half))


@dataclass(frozen=True)
class SeededDifference:
    """``method - reference`` on the same blocks for each training seed of ``seeds``: ``per_block[k]``
    holds seed ``seeds[k]``'s per-block differences (nats) on ``blocks`` of ``tokens`` tokens. Only the
    seeds in ``judged`` enter the mean, the test and the verdict; the others (a selection seed) are
    shown beside them."""

    method: str
    reference: str
    seeds: list[int]
    blocks: list[int]
    tokens: list[int]
    per_block: list[list[float]]
    judged: list[int]

    @property
    def per_seed(self) -> list[float]:
        """Each seed's difference, nats/token (ratio of sums over the blocks)."""
        total = sum(self.tokens)
        return [sum(row) / total for row in self.per_block]

    @property
    def per_seed_se(self) -> list[float]:
        """Each seed's standard error from its blocks alone (delta method)."""
        n = torch.tensor(self.tokens, dtype=torch.float64)
        return [summarize(torch.tensor(row, dtype=torch.float64), n).standard_error for row in self.per_block]

    @property
    def judged_seeds(self) -> list[int]:
        """The seeds of :attr:`seeds` that the verdict uses."""
        return [s for s in self.seeds if s in self.judged]

    @cached_property
    def test(self) -> PairedTest | None:
        """The test over the judged seeds (``None`` when none of this entry's seeds is judged)."""
        rows = [row for s, row in zip(self.seeds, self.per_block) if s in self.judged]
        return paired_test(rows, self.tokens) if rows else None

    @property
    def verdict(self) -> str:
        """``lower`` / ``higher`` (significant), ``not significant`` or ``not judged`` (:attr:`reason`)."""
        test, count = self.test, len(self.judged_seeds)
        if test is None:
            return "not judged"
        if count < MIN_SEEDS or test.p_value >= ALPHA:
            return "not significant"
        return "lower" if test.mean < 0 else "higher"

    @property
    def reason(self) -> str:
        """Why the verdict is what it is, in words."""
        test, count = self.test, len(self.judged_seeds)
        if test is None:
            return (f"trained only on seed {', '.join(map(str, self.seeds))}, not among the judged seeds "
                    f"{', '.join(map(str, self.judged))}")
        if count == 1:
            return "one seed: training noise unknown"
        if count < MIN_SEEDS:
            return f"{count} seeds: a verdict needs at least {MIN_SEEDS}"
        side = "<" if test.p_value < ALPHA else ">="
        return f"p = {test.p_value:.2g} {side} {ALPHA:g} over {count} seeds"

    def to_dict(self) -> dict[str, Any]:
        test = self.test
        fields = {"mean": None, "se_blocks": None, "se_seeds": None, "standard_error": None, "df": None,
                  "p_value": None, "interval": None}
        if test is not None:
            fields = {**asdict(test), "interval": list(test.interval)}
        return {"method": self.method, "reference": self.reference, "seeds": self.seeds, "judged": self.judged,
                "per_seed": self.per_seed, "per_seed_se": self.per_seed_se, **fields,
                "confidence_level": LEVEL, "verdict": self.verdict, "reason": self.reason,
                "verdict_rule": VERDICT_RULE, "blocks": self.blocks, "tokens": self.tokens,
                "per_block": self.per_block}


def seeded_difference(method: str, reference: str, seeds: Sequence[int], pairs: Sequence[tuple[NLLReport, NLLReport]],
                      judged: Sequence[int] | None = None) -> SeededDifference:
    """The :class:`SeededDifference` of ``(method's figure, reference's figure)`` for each seed of
    ``seeds`` (``judged``: the seeds the verdict uses, default all). Every figure must hold the same
    blocks with the same token counts."""
    if not pairs or len(pairs) != len(seeds):
        raise ValueError(f"need one pair of figures per seed; got {len(pairs)} pairs for seeds {list(seeds)}")
    first = _values(pairs[0][1])
    rows = []
    for a, b in pairs:
        va, vb = _values(a), _values(b)
        for v in (va, vb):
            if v.blocks != first.blocks or v.tokens != first.tokens:
                raise ValueError("the figures were not measured on the same blocks (different evaluation seeds or "
                                 "sequence counts); they cannot be paired")
        rows.append([x - y for x, y in zip(va.nats, vb.nats)])
    return SeededDifference(method, reference, list(seeds), list(first.blocks), list(first.tokens), rows,
                            list(seeds if judged is None else judged))
