"""Step schedules fitted to a model: where the ``T`` time points of the reverse chain go.

The bound's per-step profile (``gdds eval --profile-steps``: :func:`gdds.likelihood.bound_terms` on a
uniform grid, saved as ``kl_profile`` in ``eval.json``) says in which intervals of ``t`` a model pays its
nats. :func:`fitted_grid` places ``steps`` time points so that each step of the new grid covers about
the same share of them: it inverts the cumulative of the profile, linear within each profiled interval
(the nats of an interval taken as spread evenly over it). A fitted grid is an explicit ``grid=`` of
:func:`gdds.sample` and :func:`gdds.nll_bound`: the chain it samples is still the model's exact chain,
scored by the bound on the same grid, so a paired bound (:func:`gdds.likelihood.paired_difference`) says
whether it helps (``tests/inference/test_step_grids.py`` checks it does on a process where it must).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def fitted_grid(profile_times: Sequence[float], profile_nats: Sequence[float], steps: int) -> list[float]:
    """``steps + 1`` strictly decreasing times from 1 to 0 that split the profile's nats into ``steps``
    equal shares.

    ``profile_times``: the ends ``t_1 < ... < t_K = 1`` of the profiled steps (the step ``k`` covers
    ``[t_{k-1}, t_k]``, ``t_0 = 0``: ``KLProfile.times``); ``profile_nats``: what step ``k`` pays (``[K]``,
    the reconstruction first: ``KLProfile.model[1:]``; a negative Monte-Carlo value counts as 0). Intervals
    that pay nothing get no time point inside them (beyond what equal shares need at their ends); a profile
    that pays nothing at all gives the uniform grid."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ends = torch.tensor([float(t) for t in profile_times], dtype=torch.float64)
    nats = torch.tensor([float(n) for n in profile_nats], dtype=torch.float64)
    if ends.numel() < 1 or ends.shape != nats.shape:
        raise ValueError(f"give one nats value per profiled step; got {ends.numel()} times, {nats.numel()} nats")
    knots = torch.cat([torch.zeros(1, dtype=torch.float64), ends])
    if not bool((knots[1:] > knots[:-1]).all()) or float(ends[-1]) != 1.0 or not bool(torch.isfinite(nats).all()):
        raise ValueError("profile_times must increase strictly in (0, 1] and end at 1.0, and the nats be finite")
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), nats.clamp_min(0.0).cumsum(0)])
    total = float(cum[-1])
    if total <= 0:
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    levels = torch.arange(1, steps, dtype=torch.float64) * (total / steps)
    j = torch.searchsorted(cum, levels).clamp(1, cum.numel() - 1)  # first knot with cum >= level: cum[j-1] < level
    share = (levels - cum[j - 1]) / (cum[j] - cum[j - 1])
    inner = knots[j - 1] + share * (knots[j] - knots[j - 1])
    return [1.0, *inner.flip(0).tolist(), 0.0]
