"""Transition operators ``P_{s->t}`` and ``P_{s->t}^T`` applied to batches of vectors
(``docs/math.md`` section 5; paper section 3.2, uniformization).

With ``Q_t = beta(t) (F_t - I)``, in integrated-rate time ``u = Lambda(t)`` the
generator is ``F - I``, so for a time-homogeneous kernel

    P_{s->t} v = sum_n Poisson(n; Lambda(t) - Lambda(s)) F^n v        (uniformization)

truncated where the Poisson tail is below ``tol``. For a probability vector the
L1 error is at most the tail mass; for ``P^T`` the sup-norm error is at most
``tail * max|v|``. Time-dependent kernels are frozen piecewise: ``[Lambda(s),
Lambda(t)]`` is cut into pieces no longer than ``step`` and ``F`` is frozen at
each piece's midpoint. That rule is symmetric, so its error expands in even
powers of ``step``; by default the result is Richardson-extrapolated,
``(4 P_{step/2} - P_step) / 3``, which makes it fourth order (both errors are
measured in the tests against an ODE solve of the time-ordered exponential).

Kernels with a rank-one teleport part, ``F_t = (1 - w(t)) K_t + w(t) pi_t 1^T``
(the semantic kernel, any mixture of one kernel with mask/uniform parts), are
split: the teleport enters in closed form and only ``K`` is frozen, for the
shorter clock ``int (1 - w) dLambda`` (about 1.0 instead of 6.9 for the paper's
semantic kernel on ``[0, 1]``). Measured against the ODE on a small semantic
kernel: about 1e-7 in L1 at the split default ``step = 0.5``, 1e-8 at 0.25, 1e-10 at 0.1; the
unsplit rule needed ``step = 0.1`` for 1e-8 and about ten times more kernel
applications.

Methods: ``"series"`` (above), ``"dense"`` (matrix exponential, or an adaptive
ODE solve for time-dependent kernels; small ``m``), ``"closed"`` (column-constant
kernels ``F_t = pi_t 1^T``: ``P v = e^{-D} v + c (1^T v)`` with
``c = int_{Ls}^{Lt} e^{-(Lt - u)} pi(Lambda^{-1}(u)) du`` by Gauss-Legendre
quadrature), ``"auto"`` (closed; else dense for ``m <= 512`` unless the kernel is time-dependent
with a teleport split, whose series is tested against the ODE above and costs a few sparse products
where the ODE costs hundreds of dense right-hand sides; else series).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln
from torch import Tensor

from .kernels.base import Kernel, TeleportSplit, check_vectors, require_column_constant
from .power_sums import Products, poisson_series, power_sum
from .schedules import Schedule, as_time
from .token_powers import TokenPowers

DENSE_AUTO_LIMIT = 512
DEFAULT_BLOCK: int | None = 64  # columns per pass of the series' products, a slab kept in cache (OperatorSettings)
DEFAULT_STEP, DEFAULT_SPLIT_STEP = 0.1, 0.5  # longest frozen piece in Lambda (module docstring)
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(32)
_G8_NODES, _G8_WEIGHTS = np.polynomial.legendre.leggauss(8)
_PANEL = 0.05  # longest Lambda-interval of one 8-node Gauss-Legendre panel for scalar integrals


METHODS = ("auto", "closed", "dense", "series")
PRECISIONS = ("mixed", "float64")


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """How :func:`transition` applies ``P_{s->t}`` (module docstring); the defaults are the accurate ones
    that the sampler and the bound use unless told otherwise.

    ``method``: one of :data:`METHODS`. ``tol``: the Poisson tail mass at which a series is truncated.
    ``step``: the longest frozen piece in Lambda of a time-dependent series (``None``: 0.1, or 0.5 for
    kernels with a teleport split). ``richardson``: extrapolate a time-dependent series from ``count``
    and ``2 count`` pieces (fourth order). ``precision``: ``"mixed"`` multiplies by the kernel in
    float32 where it allows (:attr:`~gdds.kernels.Kernel.float32_apply`) and sums in float64;
    ``"float64"`` is the reference (:meth:`exact`). ``block``: columns multiplied at a time (``None``:
    all), the same sums per column up to round-off; 64 by default, a slab of columns that stays in cache (2x
    faster per training step's forward likelihood at m = 12,590, the same at 50,257: ``docs/performance.md``)."""

    method: str = "auto"
    tol: float = 1e-12
    step: float | None = None
    richardson: bool = True
    precision: str = "mixed"
    block: int | None = DEFAULT_BLOCK

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"OperatorSettings.method must be one of {', '.join(map(repr, METHODS))}; "
                             f"got {self.method!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 < self.tol < 1:
            raise ValueError(f"OperatorSettings.tol is the Poisson tail mass left out: a number in (0, 1), such "
                             f"as 1e-12; got {self.tol!r}")
        if self.step is not None and (isinstance(self.step, bool) or not isinstance(self.step, (int, float))
                                      or not 0 < self.step < math.inf):
            raise ValueError(f"OperatorSettings.step is the longest frozen piece in Lambda: a positive number, or "
                             f"None for the default; got {self.step!r}")
        if not isinstance(self.richardson, bool):
            raise TypeError(f"OperatorSettings.richardson must be True or False; got {self.richardson!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"OperatorSettings.precision must be 'mixed' or 'float64'; got {self.precision!r}")
        if self.block is not None and (isinstance(self.block, bool) or not isinstance(self.block, int)
                                       or self.block < 1):
            raise ValueError(f"OperatorSettings.block is the columns multiplied at a time: a positive integer, or "
                             f"None for all; got {self.block!r}")

    def exact(self) -> OperatorSettings:
        """These settings with float64 products: the reference the mixed precision is measured against,
        and what a reverse step uses where a float32 product could lose a column's mass."""
        return dataclasses.replace(self, precision="float64")

    @property
    def mixed(self) -> bool:
        """Whether the series may multiply in float32 (for kernels that allow it)."""
        return self.precision == "mixed"


DEFAULTS = OperatorSettings()


def _series(kernel: Kernel, v: Tensor, delta: float, t: float, transpose: bool, tol: float,
            how: Products) -> tuple[Tensor, float]:
    weights, tail = poisson_series(delta, tol)
    return power_sum(kernel.apply_T if transpose else kernel.apply, v, weights, t, how), tail


def _frozen_series(
    kernel: Kernel, schedule: Schedule, v: Tensor, ls: float, lt: float, count: int, transpose: bool, tol: float,
    how: Products,
) -> tuple[Tensor, float]:
    """Series over ``count`` equal frozen pieces (one piece for a time-homogeneous kernel)."""
    pieces = _segments(schedule, ls, lt, count) if kernel.time_dependent else [(lt - ls, 0.0)]
    bound = 0.0
    for delta, tau in reversed(pieces) if transpose else pieces:
        v, tail = _series(kernel, v, delta, tau, transpose, tol, how)
        bound += tail
    return v, bound


def _segments(schedule: Schedule, ls: float, lt: float, count: int) -> list[tuple[float, float]]:
    """``(length in Lambda, frozen time)`` of ``count`` equal pieces of ``[ls, lt]``, in time order."""
    edges = torch.linspace(ls, lt, count + 1, dtype=torch.float64)
    mids = schedule.Lambda_inv((0.5 * (edges[1:] + edges[:-1])).clamp_max(schedule.Lambda_max))
    return [(float(edges[i + 1] - edges[i]), float(mids[i])) for i in range(count)]


def _panels(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-node Gauss-Legendre nodes and weights on ``[a, b]`` (arrays; nodes on a new last axis)."""
    half = 0.5 * (b - a)[..., None]
    return 0.5 * (a + b)[..., None] + half * _G8_NODES, half * _G8_WEIGHTS


def _teleport_weight(split: TeleportSplit, schedule: Schedule, u: np.ndarray) -> np.ndarray:
    t = schedule.Lambda_inv(torch.as_tensor(u.reshape(-1)).clamp(0, schedule.Lambda_max))
    return split.weight(t).reshape(u.shape).cpu().numpy()


def _piece_weights(split: TeleportSplit, schedule: Schedule, a: float, b: float, tol: float):
    """Scalars of one piece ``[a, b]`` (in Lambda) with ``K`` frozen: the Poisson weights
    of ``K`` over the piece's ``Lambda' = int (1 - w)``, the factor ``e^{-int w}``,
    the teleport weights ``W_n = int w(u) e^{-(b - u)} D'(u)^n / n! du`` with
    ``D'(u) = int_u^b (1 - w)``, and the Poisson tail (``w`` the teleport weight)."""
    e = np.linspace(a, b, max(1, math.ceil((b - a) / _PANEL)) + 1)
    u, gl = _panels(e[:-1], e[1:])
    teleport = _teleport_weight(split, schedule, u)
    stay = (gl * (1 - teleport)).sum(1)
    after = np.concatenate([np.cumsum(stay[::-1])[::-1][1:], [0.0]])
    u2, gl2 = _panels(u, np.broadcast_to(e[1:, None], u.shape))
    dprime = after[:, None] + (gl2 * (1 - _teleport_weight(split, schedule, u2))).sum(-1)
    total = float(stay.sum())
    poisson, tail = poisson_series(total, tol)
    n = np.arange(poisson.numel())
    powers = np.exp(n * np.log(np.maximum(dprime, 1e-300))[..., None] - gammaln(n + 1))
    W = ((gl * teleport * np.exp(-(b - u)))[..., None] * powers).sum((0, 1))
    return poisson, torch.as_tensor(W), math.exp(-((b - a) - total)), tail


def _split_series(
    split: TeleportSplit, schedule: Schedule, v: Tensor, ls: float, lt: float, count: int, transpose: bool, tol: float,
    how: Products,
) -> tuple[Tensor, float]:
    """``P v`` for ``F_t = (1 - w) K_t + w pi_t 1^T`` over ``count`` pieces with ``K`` frozen.

    By Duhamel's formula, and because ``P`` keeps column sums, ``P = R + c 1^T`` where
    ``R`` is the flow without teleports, ``e^{-int w}`` times the ``K``-chain run for
    ``Lambda' = int (1 - w)`` (short: ``w`` nears 1 as noise grows), and ``c`` is
    one column, the law after the last teleport. On each piece ``w`` and ``pi``
    enter through exact scalar integrals; only ``K`` is frozen at the midpoint, so
    the rule stays symmetric (even error expansion, as in :func:`_frozen_series`).
    """
    edges = np.linspace(ls, lt, count + 1)
    taus = schedule.Lambda_inv(torch.as_tensor(0.5 * (edges[1:] + edges[:-1])).clamp_max(schedule.Lambda_max))
    pieces = [(_piece_weights(split, schedule, a, b, tol), float(tau), b - a)
              for a, b, tau in zip(edges[:-1], edges[1:], taus)]
    bound = sum(scalars[3] * (1 + length) for scalars, _, length in pieces)
    rest = v.new_zeros(v.shape[0], 0) if transpose else v
    c = v.new_zeros(v.shape[0], 1)
    for (poisson, W, keep, _), tau, _ in pieces:
        n = rest.shape[1] + 1
        weights = torch.cat([poisson[:, None].expand(-1, n), W[:, None]], 1)
        cur = torch.cat([rest, c, split.column(tau).to(v)[:, None]], 1)
        out = power_sum(split.inner.apply, cur, weights, tau, how)
        rest, c = keep * out[:, :-2], keep * out[:, -2:-1] + out[:, -1:]
    if not transpose:
        return rest + c @ v.sum(0, keepdim=True), bound
    out = v
    for (poisson, _, keep, _), tau, _ in reversed(pieces):
        out = keep * power_sum(split.inner.apply_T, out, poisson, tau, how)
    return out + c.T @ v, bound


def transposed_from_zero(split: TeleportSplit, schedule: Schedule, v: Tensor, times: Tensor,
                         settings: OperatorSettings | None = None) -> Tensor:
    """``P_{0->t_j}^T v_j`` for every column ``j`` of ``v [m, n]`` at its own time ``times[j]``, for a
    :attr:`~gdds.kernels.base.TeleportSplit.homogeneous` split (the semantic kernel at ``b = 0``). Then
    ``P_{0->t}^T = e^{-W(t)} sum_n Poisson(n; Lambda'(t)) (K^T)^n + 1 c_t^T`` with
    ``c_t = sum_n W_n(t) K^n pi`` (:func:`_piece_weights` over the one piece ``[0, Lambda(t)]``, exact):
    the powers ``(K^T)^n v`` are shared by every time, each column only weighs them differently, so a
    batch of sequences at different times costs one series (the training step's forward likelihood).
    Of ``settings`` (:class:`OperatorSettings`) it reads ``tol``, ``precision`` and ``block``."""
    op = DEFAULTS if settings is None else settings
    v = check_vectors(v, split.inner.m)
    poisson, c, which = _from_zero(split, schedule, times, op, v.device)
    out = power_sum(split.inner.apply_T, v, poisson[:, which], 0.0, _products(split, op))
    return out + (c[:, which] * v).sum(0, keepdim=True)


def tokens_from_zero(split: TeleportSplit, schedule: Schedule, tokens: Tensor, times: Tensor, powers: TokenPowers,
                     settings: OperatorSettings | None = None) -> Tensor:
    """:func:`transposed_from_zero` of the one-hot columns of ``tokens [n]``, their powers of ``K^T``
    kept in ``powers`` (:class:`gdds.token_powers.TokenPowers`: computed once per token, then a weighted
    sum): the same columns ``[m, n]`` up to round-off."""
    op = DEFAULTS if settings is None else settings
    poisson, c, which = _from_zero(split, schedule, times, op, powers.device)
    tokens = tokens.to(powers.device)
    return powers.weighted(tokens, poisson[:, which]) + c[tokens, which][None, :]


def series_depth(split: TeleportSplit, schedule: Schedule, settings: OperatorSettings | None = None) -> int:
    """The last power of ``K`` that :func:`transposed_from_zero` weighs at ``t = 1`` (its deepest)."""
    op = DEFAULTS if settings is None else settings
    return _piece_weights(split, schedule, 0.0, float(schedule.Lambda(1.0)), op.tol)[0].numel() - 1


def _products(split: TeleportSplit, op: OperatorSettings) -> Products:
    return Products(op.mixed and split.inner.float32_apply, op.block)


def _from_zero(split: TeleportSplit, schedule: Schedule, times: Tensor, op: OperatorSettings,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For each column's time: the Poisson weights of ``K^T`` (``[N+1, d]`` for the ``d`` distinct times,
    with the factor ``e^{-W}``), the teleport columns ``c_t`` (``[m, d]``) and each column's time index."""
    if not split.homogeneous:
        raise ValueError("transposed_from_zero needs a teleport split whose K and pi do not depend on time")
    distinct, which = torch.unique(times.to(torch.float64).cpu(), return_inverse=True)
    pieces = [_piece_weights(split, schedule, 0.0, float(schedule.Lambda(float(t))), op.tol) for t in distinct]
    depth = max(max(p.numel(), w.numel()) for p, w, _, _ in pieces)
    poisson, teleport = torch.zeros(depth, len(pieces), dtype=torch.float64), torch.zeros(depth, len(pieces),
                                                                                         dtype=torch.float64)
    for i, (p, w, keep, _) in enumerate(pieces):
        poisson[:p.numel(), i], teleport[:w.numel(), i] = keep * p, w
    pi = split.column(0.0).to(device)[:, None].expand(-1, len(pieces))
    c = power_sum(split.inner.apply, pi, teleport.to(device), 0.0, _products(split, op))  # [m, distinct times]
    return poisson.to(device), c, which.to(device)


def _closed_column(kernel: Kernel, schedule: Schedule, ls: float, lt: float) -> Tensor:
    """``c = int_{ls}^{lt} e^{-(lt - u)} pi(Lambda^{-1}(u)) du`` (composite Gauss-Legendre)."""
    if not kernel.time_dependent:
        return -math.expm1(-(lt - ls)) * kernel.pi(0.0)
    pieces = max(1, math.ceil(lt - ls))
    edges = np.linspace(ls, lt, pieces + 1)
    total = torch.zeros(kernel.m, dtype=torch.float64, device=kernel.device)
    for a, b in itertools.pairwise(edges):
        us = 0.5 * (b - a) * _GL_NODES + 0.5 * (a + b)
        taus = schedule.Lambda_inv(torch.as_tensor(us).clamp(0, schedule.Lambda_max)).tolist()
        for u, w, tau in zip(us, _GL_WEIGHTS, taus):
            total += (0.5 * (b - a) * w * math.exp(-(lt - u))) * kernel.pi(tau)
    return total


def closed_form(kernel: Kernel, schedule: Schedule, s: float, t: float) -> tuple[float, Tensor]:
    """``P_{s->t} = keep I + c 1^T`` for a column-constant kernel: ``(keep, c [m])``."""
    require_column_constant(kernel, "the closed-form transition (method='closed')",
                            "use method='series' or 'dense'")
    ls, lt = float(schedule.Lambda(s)), float(schedule.Lambda(t))
    return math.exp(-(lt - ls)), _closed_column(kernel, schedule, ls, lt)


def _dense(kernel: Kernel, schedule: Schedule, v: Tensor, ls: float, lt: float, transpose: bool) -> Tensor:
    eye = torch.eye(kernel.m, dtype=torch.float64, device=v.device)
    if not kernel.time_dependent:
        P = torch.linalg.matrix_exp((lt - ls) * (kernel.dense(0.0).to(v.device) - eye))
        return (P.T if transpose else P) @ v
    from scipy.integrate import solve_ivp

    m, n = v.shape

    def rhs(u: float, y: np.ndarray) -> np.ndarray:
        tau = float(schedule.Lambda_inv(min(max(u, 0.0), schedule.Lambda_max)))
        G = kernel.dense(tau).cpu().numpy() - np.eye(m)
        Y = y.reshape(m, n)
        return (-(G.T @ Y) if transpose else G @ Y).reshape(-1)

    span = (lt, ls) if transpose else (ls, lt)
    sol = solve_ivp(rhs, span, v.cpu().numpy().reshape(-1), method="DOP853", rtol=1e-12, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"ODE solve of the time-ordered exponential failed: {sol.message}")
    return torch.as_tensor(sol.y[:, -1].reshape(m, n), dtype=torch.float64, device=v.device)


def transition(
    kernel: Kernel,
    schedule: Schedule,
    v: Tensor,
    s: float,
    t: float,
    transpose: bool = False,
    settings: OperatorSettings | None = None,
    *,
    return_bound: bool = False,
) -> Tensor | tuple[Tensor, float]:
    """``P_{s->t} v`` (or ``P_{s->t}^T v``) for ``v`` of shape ``[m, n]``, ``0 <= s <= t <= 1``, applied
    as ``settings`` say (:class:`OperatorSettings`; ``None``: the defaults).

    With ``return_bound=True`` also returns the truncation bound: the summed Poisson
    tail mass of the series (0 for the dense and closed methods, whose error is
    solver/quadrature round-off; it excludes the piecewise-freezing error, which the
    tests measure). A time-dependent series is
    Richardson-extrapolated from ``count`` and ``2 count`` pieces; for ``v >= 0`` an entry the
    extrapolation pushes below zero (both values tiny, e.g. 1e-50 through a far kNN neighbour's
    weight) keeps the finer value, so probabilities stay probabilities (a log of ``r`` or a KL
    never meets a negative number).

    With mixed precision all entries are non-negative, so the result keeps about float32's relative
    precision (``tests/math/test_operators_fast.py`` bounds its distance to the float64 path).
    """
    op = DEFAULTS if settings is None else settings
    s_, t_ = float(as_time(s, "s")), float(as_time(t, "t"))
    if s_ > t_:
        raise ValueError(f"transition needs s <= t; got s={s_}, t={t_}")
    v = check_vectors(v, kernel.m)
    ls, lt = float(schedule.Lambda(s_)), float(schedule.Lambda(t_))
    method = op.method
    if method == "auto":
        method = "closed" if kernel.column_constant else "dense" if kernel.m <= DENSE_AUTO_LIMIT and not (
            kernel.time_dependent and kernel.teleport_split() is not None) else "series"
    bound = 0.0
    if method == "closed":
        keep, c = closed_form(kernel, schedule, s_, t_)
        c = c.to(v.device).unsqueeze(1)
        out = keep * v + (c @ v.sum(0, keepdim=True) if not transpose else (c.T @ v).expand_as(v))
    elif method == "dense":
        out = _dense(kernel, schedule, v, ls, lt, transpose)
    else:
        split = kernel.teleport_split()
        if split is None:
            frozen, varying, products = _frozen_series, kernel.time_dependent, kernel.float32_apply
        else:
            frozen, varying, kernel = _split_series, not split.homogeneous, split
            products = kernel.inner.float32_apply
        how = Products(op.mixed and products, op.block)
        step = op.step if op.step is not None else DEFAULT_STEP if split is None else DEFAULT_SPLIT_STEP
        count = max(1, math.ceil((lt - ls) / step - 1e-12)) if varying else 1
        if varying and op.richardson:
            coarse, b1 = frozen(kernel, schedule, v, ls, lt, count, transpose, op.tol, how)
            fine, b2 = frozen(kernel, schedule, v, ls, lt, 2 * count, transpose, op.tol, how)
            out, bound = (4 * fine - coarse) / 3, (4 * b2 + b1) / 3
            if bool((v >= 0).all()):  # P v >= 0; the extrapolation can undershoot zero where both are tiny
                out = torch.where(out >= 0, out, fine)
        else:
            out, bound = frozen(kernel, schedule, v, ls, lt, count, transpose, op.tol, how)
    return (out, bound) if return_bound else out
