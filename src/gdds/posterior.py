"""Reverse steps of the mean parametrization (SPEC section 1, "Mean parametrization").

For one position with state ``x_t`` and denoiser output ``mu`` (a law of the clean
token), the model's reverse step to time ``s < t`` is

    p_theta(x_s = z | x_t) = sum_y mu(y) q(x_s = z | x_t, x0 = y) = g[z] * w[z],
    r = P_{0->t}^T e_{x_t},   w = P_{0->s} (mu / r),   g = P_{s->t}^T e_{x_t},

and the true posterior is ``q(x_s = z | x_t, x0) = g[z] (P_{0->s} e_{x0})[z] / r[x0]``.
Clean tokens with ``r[y] = 0`` cannot have produced ``x_t``: ``mu`` is renormalised
over the reachable ones first, so every step sums to 1. The same functions serve
the sampler and the likelihood bound, so the bound is that of the chain sampled.

Positions are processed in chunks of vectors ``[m, chunk]`` so that large
vocabularies fit in memory; ``r`` and ``g`` are computed once per distinct ``x_t``.
Column-constant kernels (mask, uniform, hybrids) use closed-form operators, which
makes every step ``O(m)`` per position.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .kernels import Mask
from .process import ForwardProcess

CHUNK_FLOATS = 2**24  # float64 entries per [m, chunk] working block (128 MiB)


def one_hot_columns(tokens: Tensor, m: int) -> Tensor:
    """``[m, n]`` float64 matrix whose column ``i`` is ``e_{tokens[i]}``."""
    v = torch.zeros(m, tokens.numel(), dtype=torch.float64, device=tokens.device)
    v[tokens, torch.arange(tokens.numel(), device=tokens.device)] = 1.0
    return v


def _per_token(process: ForwardProcess, xt: Tensor, s: float, t: float, **op: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct states ``u`` of ``xt``, the index of each position in ``u``, and
    ``r``, ``g`` as ``[m, len(u)]`` (columns ``P_{0->t}^T e_u``, ``P_{s->t}^T e_u``)."""
    uniq, where = torch.unique(xt, return_inverse=True)
    e = one_hot_columns(uniq, process.m)
    r = process.transition(e, 0.0, t, transpose=True, **op)
    g = process.transition(e, s, t, transpose=True, **op)
    return where, r, g


def reverse_step_probs(process: ForwardProcess, mu: Tensor, xt: Tensor, s: float, t: float, **op: Any) -> Tensor:
    """``p_theta(x_s = . | x_t)`` for positions ``xt [n]`` with clean-token laws
    ``mu [n, m]`` (probabilities, rows summing to 1); returns ``[n, m]`` float64.
    ``op`` is passed to :func:`gdds.operators.transition` (method, tol, step)."""
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"a reverse step needs 0 <= s < t <= 1; got s={s}, t={t}")
    n, m = mu.shape
    if xt.shape != (n,) or m != process.m:
        raise ValueError(f"mu must be [n, m] = [{xt.numel()}, {process.m}] for xt [n]; got {tuple(mu.shape)}")
    if isinstance(process.kernel, Mask):
        return _mask_step(process, mu, xt, s, t)
    where, r, g = _per_token(process, xt, s, t, **op)
    out = torch.empty(n, m, dtype=torch.float64, device=mu.device)
    chunk = max(1, CHUNK_FLOATS // m)
    for a in range(0, n, chunk):
        idx = slice(a, min(n, a + chunk))
        rr = r[:, where[idx]]
        mm = mu[idx].to(torch.float64).T * (rr > 0)
        total = mm.sum(0, keepdim=True)
        if (total <= 0).any():
            raise ValueError("the denoiser gives zero probability to every clean token that can reach x_t")
        ratio = torch.where(rr > 0, mm / total / rr.clamp_min(1e-300), torch.zeros_like(mm))
        w = process.transition(ratio, 0.0, s, **op) if s > 0 else ratio
        out[idx] = (g[:, where[idx]] * w).T
    # The step sums to 1 up to operator error; renormalise so that the sampler's draw and
    # the bound's scoring use the same distribution even with loose operator settings.
    out.clamp_min_(0.0)
    return out / out.sum(-1, keepdim=True)


def _mask_step(process: ForwardProcess, mu: Tensor, xt: Tensor, s: float, t: float) -> Tensor:
    """The same step in closed form for the absorbing kernel: an unmasked token stays;
    from the mask, ``p(y) = mu(y) (a_s - a_t) / (1 - a_t)`` for ``y != mask`` and the
    rest of the mass stays on the mask (``a = alpha``)."""
    mask_id = process.kernel.mask_id
    a_s, a_t = float(process.schedule.alpha(s)), float(process.schedule.alpha(t))
    out = torch.zeros(mu.shape, dtype=torch.float64, device=mu.device)
    kept = xt != mask_id
    if (mu[kept, xt[kept]] <= 0).any():
        raise ValueError("the denoiser gives zero probability to every clean token that can reach x_t")
    out[kept, xt[kept]] = 1.0
    rows = mu[~kept].to(torch.float64)
    rows = rows / rows.sum(-1, keepdim=True)
    stay = rows[:, mask_id] + (1 - rows[:, mask_id]) * (1 - a_s) / (1 - a_t)
    rows = rows * ((a_s - a_t) / (1 - a_t))
    rows[:, mask_id] = stay
    out[~kept] = rows
    return out


def true_posterior(process: ForwardProcess, x0: Tensor, xt: Tensor, s: float, t: float, **op: Any) -> Tensor:
    """``q(x_s = . | x_t, x0)`` for positions ``x0, xt [n]``; returns ``[n, m]`` float64."""
    mu = one_hot_columns(x0, process.m).T
    return reverse_step_probs(process, mu, xt, s, t, **op)
