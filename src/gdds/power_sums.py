"""Sums of powers of a kernel applied to vectors, ``sum_n w_n F^n v``: the Poisson series of uniformization
(:mod:`gdds.operators`, ``docs/math.md`` section 5) and how its products are taken (float32 or float64, all
columns at once or in blocks, each column only as far as its own weights reach)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import pdtrc
from torch import Tensor

from .kernels.base import FLUSH


def poisson_series(delta: float, tol: float = 1e-12) -> tuple[Tensor, float]:
    """Poisson(``delta``) probabilities for ``n = 0..N`` and the tail ``P(n > N) <= tol``."""
    if delta < 0:
        raise ValueError(f"a Poisson mean must be non-negative, got {delta}")
    hi = int(delta + 12 * math.sqrt(delta) + 40)
    n = np.arange(hi + 1)
    tails = pdtrc(n, delta)
    N = int(np.argmax(tails <= tol)) if (tails <= tol).any() else hi
    k = torch.arange(N + 1, dtype=torch.float64)
    logp = -delta + k * math.log(delta) - torch.lgamma(k + 1) if delta > 0 else torch.where(k == 0, 0.0, -math.inf)
    return torch.exp(logp), float(tails[N])


@dataclass(frozen=True)
class Products:
    """How the series multiplies by the kernel: in float32 (``mixed``, for kernels with
    :attr:`~gdds.kernels.Kernel.float32_apply`; the sums stay float64) and ``block`` columns at a time
    (``None``: all at once). Neither changes a column's sum beyond round-off; both are measured in
    ``benchmarks/operators.py``, the float64 path kept as the reference."""

    mixed: bool = False
    block: int | None = None


def power_sum(step: Callable[[Tensor, float], Tensor], v: Tensor, weights: Tensor, t: float,
              how: Products = Products()) -> Tensor:
    """``sum_n weights[n] F^n v``; ``weights`` is ``[N+1]`` or per column ``[N+1, n]``. Per-column weights
    that end early (a column's series truncated sooner, e.g. at an earlier time in
    :func:`gdds.operators.transposed_from_zero`) end that column's products: the columns go longest series
    first, and the ``n``-th product multiplies only those whose weights reach ``n`` (the same sum: the rest
    would add zeros)."""
    weights = weights.to(v.device)
    if how.block is not None and v.shape[1] > how.block:
        return torch.cat([power_sum(step, v[:, a:a + how.block], weights if weights.dim() == 1 else
                                    weights[:, a:a + how.block], t, Products(how.mixed)) for a in
                          range(0, v.shape[1], how.block)], dim=1)
    if weights.dim() == 1:
        return _sorted_power_sum(step, v, weights[:, None].expand(-1, v.shape[1]), t, how)
    reach = torch.where(weights != 0, torch.arange(weights.shape[0], device=v.device)[:, None], 0).amax(0)
    order = torch.argsort(reach, descending=True, stable=True)
    out = torch.empty_like(v)
    out[:, order] = _sorted_power_sum(step, v[:, order], weights[:, order], t, how)
    return out


def _sorted_power_sum(step: Callable[[Tensor, float], Tensor], v: Tensor, weights: Tensor, t: float,
                      how: Products) -> Tensor:
    """:func:`power_sum` of columns whose weights ``[N+1, n]`` end in decreasing order of their last nonzero."""
    active = (weights != 0).flip(0).cummax(0).values.flip(0).sum(1).tolist()  # columns still going at each n
    if not how.mixed:
        out, cur = weights[0] * v, v
        for n in range(1, weights.shape[0]):
            if active[n] == 0:
                break
            cur = step(cur[:, :active[n]], t)
            out[:, :active[n]].addcmul_(cur, weights[n, :active[n]])  # in place: the sums are memory-bound
        return out
    # float32 products of each column scaled to a largest entry of 1 (exact: the series is linear), so that
    # no entry overflows (mu / r can reach 1e160); entries below FLUSH of the column's largest are dropped
    # (subnormal float32 arithmetic is about 100 times slower)
    scale = v.abs().amax(0, keepdim=True).clamp_min(1e-300)
    flush = flush_nonnegative if bool((v >= 0).all()) else _flushed
    cur, total = flush((v / scale).float()), torch.zeros_like(v)
    for n in range(1, weights.shape[0]):
        if active[n] == 0:
            break
        cur = flush(step(cur[:, :active[n]], t))
        total[:, :active[n]].addcmul_(cur, weights[n, :active[n]])  # float32 terms summed in float64, in place
    return weights[0] * v + scale * total


def _flushed(v: Tensor) -> Tensor:
    return v.masked_fill_(v.abs() < FLUSH, 0.0)


_BELOW_FLUSH = float(np.nextafter(np.float32(FLUSH), np.float32(0)))  # x > this <=> x >= float32(FLUSH)


def flush_nonnegative(v: Tensor) -> Tensor:
    """:func:`_flushed` for a float32 ``v >= 0`` (the products of non-negative columns stay so), in one
    fused pass instead of three (about 10 times faster); the same entries are dropped."""
    return torch.nn.functional.threshold_(v, _BELOW_FLUSH, 0.0)
