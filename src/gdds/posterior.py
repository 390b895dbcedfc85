"""Reverse steps of the mean parametrization (``docs/math.md`` section 6; paper section 4.3).

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
makes every step ``O(m)`` per position. Every function works on the process's device
(:mod:`gdds.devices`) and returns its result there.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .categorical import Decoding, one_hot_columns
from .operators import DEFAULTS, OperatorSettings, tokens_from_zero, transposed_from_zero
from .process import ForwardProcess

CHUNK_FLOATS = 2**24  # float64 entries per [m, chunk] working block (128 MiB)
GUARD = 1e-5  # largest |sum_z p(z) - 1| of a step before its float32 products are redone in float64
MASS_MARGIN = 1e-12  # a weighted step's mass g . P_{0->s} rho below this share of max(g) max(rho): redone in float64


def _per_token(process: ForwardProcess, xt: Tensor, s: float, t: float, need_r: bool, op: OperatorSettings
               ) -> tuple[Tensor, Tensor | None, Tensor]:
    """The index of each position of ``xt`` among its distinct states ``u``, and ``r``, ``g`` as
    ``[m, len(u)]`` (columns ``P_{0->t}^T e_u``, ``P_{s->t}^T e_u``; ``r = P_{0->s}^T g``), both with
    float64 products; ``r`` is ``None`` unless ``need_r``. ``r`` decides which clean tokens can have
    produced ``x_t`` (a step that divides by it, a nucleus of ``mu``): a float32 product would call
    unreachable those whose ``q_t`` is below 1e-30 of the largest, where a ``mu`` given apart from ``r``
    may still put mass. A likelihood-weighted step with a neutral decoding needs no ``r``
    (:func:`_generic_step`)."""
    uniq, where = torch.unique(xt, return_inverse=True)
    g = process.transition(one_hot_columns(uniq, process.m), s, t, transpose=True, settings=op.exact())
    if not need_r:
        return where, None, g
    return where, process.transition(g, 0.0, s, transpose=True, settings=op.exact()) if s > 0 else g, g


def _unreachable() -> ValueError:
    return ValueError("the denoiser gives zero probability to every clean token that can reach x_t")


def reverse_step_probs(process: ForwardProcess, mu: Tensor, xt: Tensor, s: float, t: float,
                       decoding: Decoding | None = None, weighted: bool = False, *,
                       operators: OperatorSettings | None = None) -> Tensor:
    """``p_theta(x_s = . | x_t)`` for positions ``xt [n]`` with clean-token laws
    ``mu [n, m]`` (probabilities, rows summing to 1); returns ``[n, m]`` float64.
    ``operators`` (:class:`gdds.OperatorSettings`, default the accurate ones) is how
    :func:`gdds.operators.transition` is applied; for column-constant kernels the closed form is used
    unless it names another method.
    ``decoding`` (:class:`gdds.Decoding`; sampling only: unless neutral the step is then no longer the
    model's) filters ``mu`` after it is restricted to the clean tokens that can have produced ``x_t`` (and
    renormalised), so that a top-k of 1 picks the most probable of those.

    ``weighted=True`` reads the rows of ``mu`` as weights ``rho`` of the forward-likelihood
    parametrization: the clean-token law is ``mu(y) = rho(y) q_t(x_t | y) / Z`` with the exact
    ``q_t(x_t | .) = r`` (``docs/math.md`` section 6). Then ``mu / r = rho / Z`` and the step is
    ``g * P_{0->s} rho / (rho . r)``: no division by ``r``, so origins with a vanishing ``q_t`` (1e-150
    through a far neighbour) cannot blow the step up; with a neutral ``decoding``, ``rho . r`` is the sum
    of ``g * P_{0->s} rho`` and ``r`` is not computed."""
    _, (step,) = posterior_and_steps(process, [(mu, weighted)], None, xt, s, t, decoding, operators=operators)
    return step


def posterior_and_steps(process: ForwardProcess, laws: Sequence[tuple[Tensor, bool]], x0: Tensor | None, xt: Tensor,
                        s: float, t: float, decoding: Decoding | None = None, *,
                        operators: OperatorSettings | None = None) -> tuple[Tensor | None, list[Tensor]]:
    """The true posterior ``q(x_s | x_t, x0)`` (``None`` without ``x0 [n]``) and the reverse step of each
    ``(mu, weighted)`` of ``laws`` (as :func:`reverse_step_probs`) at positions ``xt [n]``, sharing what
    they have in common: ``r`` and ``g`` once per distinct ``x_t``, ``P_{0->s} e_{x0}`` once per distinct
    ``x0`` (the likelihood bound scores several denoisers on the same draws this way)."""
    if not 0.0 <= s < t <= 1.0:
        raise ValueError(f"a reverse step needs 0 <= s < t <= 1; got s={s}, t={t}")
    xt = xt.to(process.device)
    n, m = xt.numel(), process.m
    for mu, _ in laws:
        if xt.shape != (n,) or tuple(mu.shape) != (n, m):
            raise ValueError(f"mu must be [n, m] = [{n}, {m}] for xt [n]; got {tuple(mu.shape)}")
    laws = [(mu.to(process.device), weighted) for mu, weighted in laws]
    decoding = Decoding() if decoding is None else decoding
    op = DEFAULTS if operators is None else operators
    if process.kernel.column_constant and op.method in ("auto", "closed"):
        steps = [_column_constant_step(process, _closed_weighting(process, mu, xt, t) if weighted else mu, xt, s, t,
                                       decoding) for mu, weighted in laws]
        return (None if x0 is None else _column_constant_step(process, one_hot_columns(x0.to(xt.device), m).T, xt, s,
                                                              t)), steps
    need_r = not decoding.neutral(m) or not all(weighted for _, weighted in laws)
    where, r, g = _per_token(process, xt, s, t, need_r, op)
    steps = [_generic_step(process, mu, weighted, where, r, g, s, decoding, op) for mu, weighted in laws]
    return (None if x0 is None else _generic_posterior(process, x0.to(xt.device), where, g, s, op)), steps


def _generic_step(process: ForwardProcess, mu: Tensor, weighted: bool, where: Tensor, r: Tensor | None, g: Tensor,
                  s: float, decoding: Decoding, op: OperatorSettings) -> Tensor:
    """The step ``g * P_{0->s}(mu / r)`` (or ``g * P_{0->s} rho / (rho . r)``) in chunks of positions.

    Without ``r`` (a likelihood-weighted step, neutral decoding) the step is ``g * P_{0->s} rho``
    normalised by its own mass ``sum_z g[z] (P_{0->s} rho)[z] = rho . r``: the same law, one operator
    pass fewer. Float32 products flush at most ``products * m * 1e-30`` of a column scaled to a largest
    entry of 1, so a mass below :data:`MASS_MARGIN` of ``max(g) max(rho)`` may be that flush's error:
    those columns are redone in float64."""
    n, m = mu.shape
    out = torch.empty(n, m, dtype=torch.float64, device=mu.device)
    chunk = max(1, CHUNK_FLOATS // m)
    for a in range(0, n, chunk):
        idx = slice(a, min(n, a + chunk))
        mm = mu[idx].to(torch.float64).T
        if r is None:
            ratio = mm
        elif weighted:  # an origin that cannot reach x_t adds g . P_{0->s} e_y = r[y] = 0 to the step itself
            rr = r[:, where[idx]]
            if not decoding.neutral(m):  # the filters act on mu = rho r / Z (r exact here): mu / r = rho / Z on
                kept = decoding.filter((mm * rr).T).T  # what they keep, and a temperature reshapes mu itself
                mm = mm * (kept > 0) if decoding.temperature == 1 else \
                    torch.where(rr > 0, kept / rr.clamp_min(1e-300), torch.zeros_like(mm))
            mass = (mm * rr).sum(0, keepdim=True)  # rho . r = sum_z g[z] (P_{0->s} rho)[z]
            ratio = mm / torch.where(mass > 0, mass, 1.0)  # rho / Z
        else:
            rr = r[:, where[idx]]
            mm = mm * (rr > 0)
            mm = decoding.filter(mm.T).T
            total = mm.sum(0, keepdim=True)
            if not bool((total > 0).all()):
                raise _unreachable()
            ratio = torch.where(rr > 0, mm / total / rr.clamp_min(1e-300), torch.zeros_like(mm))
        w = _shared_transition(process, ratio, s, op) if s > 0 else ratio
        gg = g[:, where[idx]]
        step = gg * w
        # with r: sum_z g[z] w[z] = r . ratio = 1 exactly, and float32 products that lost a column's mass (a
        # ratio spanning more than float32's range) break the identity; without r: a mass too small to
        # outweigh the flush's error (docstring). Those columns are redone in float64 (and renormalised)
        lost = ((step.sum(0) - 1).abs() > GUARD if r is not None else
                step.sum(0) <= MASS_MARGIN * gg.amax(0) * ratio.amax(0)).nonzero().reshape(-1)
        if lost.numel() and s > 0 and op.mixed:
            exact = process.transition(ratio[:, lost], 0.0, s, settings=op.exact())
            step[:, lost] = gg[:, lost] * exact
        if not bool((step.sum(0) > 0).all()):
            raise _unreachable()
        out[idx] = step.T
    return _normalised(out)


def _shared_transition(process: ForwardProcess, v: Tensor, s: float, op: OperatorSettings) -> Tensor:
    """``P_{0->s} v`` for ``v [m, n]``, each distinct column once (the Bayes-unigram baseline's ``rho`` is the
    same at every position): columns grouped by a projection, the groups checked entry by entry."""
    n = v.shape[1]
    _, which = torch.unique(torch.linspace(1.0, 2.0, v.shape[0], dtype=v.dtype, device=v.device) @ v,
                            return_inverse=True)
    count = int(which.max()) + 1 if n else 0
    if count == n:
        return process.transition(v, 0.0, s, settings=op)
    first = torch.full((count,), n, device=v.device).scatter_reduce_(0, which, torch.arange(n, device=v.device),
                                                                     "amin")
    if not bool((v == v[:, first[which]]).all()):
        return process.transition(v, 0.0, s, settings=op)
    return process.transition(v[:, first], 0.0, s, settings=op)[:, which]


def _generic_posterior(process: ForwardProcess, x0: Tensor, where: Tensor, g: Tensor, s: float,
                       op: OperatorSettings) -> Tensor:
    """``q(x_s = z | x_t, x0) = g[z] (P_{0->s} e_{x0})[z] / r[x0]``, one operator column per distinct ``x0``;
    ``r[x0]`` is the row's own sum, so it is normalised rather than divided by ``r``."""
    origins, which = torch.unique(x0, return_inverse=True)
    cols = one_hot_columns(origins, process.m)
    forward = process.transition(cols, 0.0, s, settings=op) if s > 0 else cols
    n = x0.numel()
    out = torch.empty(n, process.m, dtype=torch.float64, device=x0.device)
    chunk = max(1, CHUNK_FLOATS // process.m)
    for a in range(0, n, chunk):
        idx = slice(a, min(n, a + chunk))
        out[idx] = (g[:, where[idx]] * forward[:, which[idx]]).T
    if bool((out.sum(-1) <= 0).any()):
        raise ValueError("x_t cannot be reached from x0: the true posterior is undefined")
    return _normalised(out)


def _normalised(out: Tensor) -> Tensor:
    """Rows clamped at 0 and renormalised: a step sums to 1 up to operator error, and the sampler's draw
    and the bound's scoring then use the same distribution even with loose operator settings."""
    out.clamp_min_(0.0)
    return out / out.sum(-1, keepdim=True)


def _closed_weighting(process: ForwardProcess, rho: Tensor, xt: Tensor, t: float) -> Tensor:
    """``mu = rho * q_t(x_t | .) / Z`` of the forward-likelihood parametrization for a column-constant
    kernel, ``q_t(x | y) = keep [x = y] + c[x]`` (``reverse_step_probs(weighted=True)``)."""
    keep, c = process.closed_transition(0.0, t)
    rows = torch.arange(xt.numel(), device=rho.device)
    mu = rho.to(torch.float64) * c[xt][:, None]
    mu[rows, xt] += keep * rho[rows, xt]
    total = mu.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise _unreachable()
    return mu / total


def _column_constant_step(process: ForwardProcess, mu: Tensor, xt: Tensor, s: float, t: float,
                          decoding: Decoding | None = None) -> Tensor:
    """The same step in closed form for ``F_t = pi_t 1^T`` (mask, uniform, hybrids), where
    ``P_{a->b} = k_ab I + c_ab 1^T``: ``r = k_0t e_x + c_0t[x] 1``, ``g = k_st e_x + c_st[x] 1``,
    ``w = k_0s rho + c_0s (1^T rho)`` with ``rho = mu / r``; ``O(m)`` per position."""
    ops = [process.closed_transition(a, b) for a, b in ((0.0, t), (s, t), (0.0, s))]
    # A state no jump can reach (c_0t[x] = 0, e.g. an unmasked token) has only itself as
    # a possible origin and keeps its value: those rows are one-hot, at no O(m) cost.
    stays = ops[0][1][xt] <= 0
    if (mu[stays, xt[stays]] <= 0).any():
        raise _unreachable()
    mu = mu if decoding is None else decoding.filter(mu)  # (a moving state can come from any clean token)
    if not stays.any():
        return _moving_rows(mu, xt, *ops)
    out = torch.zeros(mu.shape, dtype=torch.float64, device=mu.device)
    out[stays, xt[stays]] = 1.0
    moving = ~stays
    if moving.any():
        out[moving] = _moving_rows(mu[moving], xt[moving], *ops)
    return out


def _moving_rows(mu: Tensor, xt: Tensor, p0t: tuple[float, Tensor], pst: tuple[float, Tensor],
                 p0s: tuple[float, Tensor]) -> Tensor:
    """Rows of :func:`_column_constant_step` for states ``x`` that jumps reach (``c_0t[x] > 0``):
    every clean token can then produce ``x``, ``rho = mu / r`` is ``mu / c_0t[x]`` but at ``x``,
    and the step is ``g_x (k_0s rho + c_0s sum(rho))`` plus ``k_st w_x`` at ``x``: per-row
    scalars times ``mu`` and ``c_0s``."""
    (k0t, c0t), (kst, cst), (k0s, c0s) = p0t, pst, p0s
    rows = torch.arange(xt.numel(), device=mu.device)
    mu = mu.to(torch.float64)
    total = mu.sum(-1)
    if (total <= 0).any():
        raise _unreachable()
    mx, cx, gx = mu[rows, xt], c0t[xt], cst[xt]
    rho_x = mx / (total * (cx + k0t))
    rho_sum = (total - mx) / (total * cx) + rho_x
    out = torch.addcmul((gx * rho_sum)[:, None] * c0s[None, :], (gx * k0s / (total * cx))[:, None], mu)
    out[rows, xt] = (gx + kst) * (k0s * rho_x + c0s[xt] * rho_sum)
    out.clamp_min_(0.0)
    return out / out.sum(-1, keepdim=True)


def true_posterior(process: ForwardProcess, x0: Tensor, xt: Tensor, s: float, t: float, *,
                   operators: OperatorSettings | None = None) -> Tensor:
    """``q(x_s = . | x_t, x0)`` for positions ``x0, xt [n]``; returns ``[n, m]`` float64."""
    return posterior_and_steps(process, [], x0, xt, s, t, operators=operators)[0]


def forward_likelihood(process: ForwardProcess, xt: Tensor, t: Tensor, *,
                       operators: OperatorSettings | None = None) -> Tensor:
    """``q_t(x_t^i | y)`` for every clean token ``y``, per position: ``[B, L, m]`` float64 for
    ``xt [B, L]`` and times ``t [B]`` (the column ``r = P_{0->t}^T e_{x_t}`` of the reverse
    step, ``docs/math.md`` section 6). Exact: closed form for column-constant kernels
    (``keep [x = y] + c[x]``), the transition operators (``operators``) otherwise: for a split whose
    ``K`` does not depend on time (the semantic kernel at ``b = 0``) one Poisson series for every
    sequence's time (:func:`gdds.operators.transposed_from_zero`), each token's powers of ``K^T`` kept by the
    process within its ``power_cache`` (:func:`gdds.operators.tokens_from_zero`); else one sweep from the latest time
    down to 0, where the columns of a sequence join at its ``t`` and every column goes through
    ``P_{t_(i+1)->t_(i)}^T`` between consecutive times (``P_{0->t}^T = P_{0->s}^T P_{s->t}^T``), so
    the operators' set-up is paid once per batch, not once per sequence."""
    xt = xt.to(process.device)
    B, L = xt.shape
    out = torch.empty(B, L, process.m, dtype=torch.float64, device=xt.device)
    times = t.double().cpu().tolist()
    if process.column_constant:
        rows = torch.arange(L, device=xt.device)
        for b, tb in enumerate(times):
            keep, c = process.closed_transition(0.0, tb)
            out[b] = c[xt[b]][:, None].expand(L, process.m)
            out[b, rows, xt[b]] += keep
        return out
    split = process.kernel.teleport_split()
    if split is not None and split.homogeneous and (operators or DEFAULTS).method in ("auto", "series"):
        pairs = [torch.unique(xt[b], return_inverse=True) for b in range(B)]
        tokens = torch.cat([uniq for uniq, _ in pairs])
        when = torch.cat([torch.full((uniq.numel(),), tb, dtype=torch.float64) for (uniq, _), tb in zip(pairs, times)])
        powers = process.token_powers(split, operators or DEFAULTS)
        rows = (transposed_from_zero(split, process.schedule, one_hot_columns(tokens, process.m), when, operators)
                if powers is None else tokens_from_zero(split, process.schedule, tokens, when, powers, operators)).T
        first = 0
        for b, (uniq, where) in enumerate(pairs):
            out[b] = rows[first + where]
            first += uniq.numel()
        return out
    columns = torch.zeros(process.m, 0, dtype=torch.float64, device=xt.device)
    parts, later = [], None
    for b in sorted(range(B), key=lambda i: -times[i]):
        if later is not None and times[b] < later:
            columns = process.transition(columns, times[b], later, transpose=True, settings=operators)
        uniq, where = torch.unique(xt[b], return_inverse=True)
        parts.append((b, columns.shape[1] + where))
        columns = torch.cat([columns, one_hot_columns(uniq, process.m)], dim=1)
        later = times[b]
    if later > 0:
        columns = process.transition(columns, 0.0, later, transpose=True, settings=operators)
    for b, index in parts:
        out[b] = columns.T[index]
    return out
