"""How the network's output becomes the clean-token law ``mu`` (``docs/math.md`` section 6):
:data:`PARAMETRIZATIONS` lists them.

- ``mean``: ``mu = softmax(f_theta(x_t, t))``, the network says everything.
- ``forward``: ``log mu(y | x_t, t) = f_theta(x_t, t)[y] + log q_t(x_t | y) - log Z`` with the **exact**
  forward likelihood ``q_t``. What the forward process already knows (a token that did not move is its
  own origin, a neighbour points back to its source) holds by construction, and the network learns only
  what the context adds. At low noise ``mu(x_t | x_t) -> 1`` for any ``f``, so the copy errors that the
  bound of a non-absorbing process charges at every position and every step (roughly
  ``(1 - mu(x | x)) / t``) are gone. ``q_t`` is in closed form for column-constant kernels
  (``keep [x = y] + c[x]``); for the others it is the row ``P_{0->t}^T e_{x_t}`` of the transition
  operators (:func:`gdds.posterior.forward_likelihood`: the Poisson tail is below 1e-12 and the
  freezing of a time-dependent kernel is measured at about 1e-7 in L1 against an ODE solve,
  ``tests/objectives/test_forward_likelihood.py``). In sampling and the bound the denoiser is
  :class:`gdds.sampling.LikelihoodWeighted`: the reverse step weights the network's law by the
  ``q_t(x_t | .)`` it computes anyway, so the chain is this model at no extra cost.
- ``forward-surrogate`` (labelled an approximation; cheap at large vocabularies on a CPU, where the
  exact rows cost one operator pass per sequence: ``benchmarks/operators.py``): the same with the
  **one-jump surrogate**

      q~_t(x | y) = alpha_t [x = y] + (1 - alpha_t) ((1 - delta) F_t[x, y] + delta / m),   delta = 1e-3,

  built from the sparse rows ``F_t[x, .]`` (:meth:`gdds.kernels.Kernel.arrivals`). It is not
  ``q_t``: it misses the origins two jumps or more away (with the paper's nearly deterministic kNN
  step they are common) and gives every other origin the floor ``delta / m`` (where the true
  ``q_t`` may be 1e-150). On the decisive comparison's process a denoiser without context pays
  about 0.12 nats/token more under it than under the exact ``q_t`` (``docs/results/decisive.md``).
  Any ``mu`` is a model, so its bound stays valid; the same parametrized ``mu`` is trained, sampled
  and scored.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..posterior import forward_likelihood
from ..process import ForwardProcess
from ..registry import Registry
from ..sampling import BlockDenoiser, Denoiser, LikelihoodWeighted
from .logsumexp import logsumexp_rows
from .snapshot import snapshot_cross_entropy

SURROGATE_FLOOR = 1e-3  # delta of the module docstring


@dataclass
class Bonus:
    """``log q_t(x_i | y)`` up to a constant per position ``i``, as sparse additions to the
    logits: ``value[e]`` at ``(row[e], col[e])`` (distinct pairs, float64), and the rows where
    no jump reaches ``x_i`` (``unreachable``: ``mu`` is the point mass on ``x_i`` there)."""

    row: Tensor
    col: Tensor
    value: Tensor
    unreachable: Tensor | None = None


def _column_constant(process: ForwardProcess, x: Tensor, t: Tensor, m: int) -> Bonus:
    """Exact: ``log q_t(x | y) = log c[x] + log1p(keep / c[x]) [y = x]``; where no jump reaches
    ``x`` (``c[x] = 0``, e.g. an unmasked token), ``mu`` is the point mass on ``x``."""
    keep, c = torch.empty_like(t), torch.empty_like(t)
    for tv in torch.unique(t).tolist():
        idx = t == tv
        k, col = process.closed_transition(0.0, tv)
        keep[idx], c[idx] = k, col.to(x.device)[x[idx]]
    unreachable = c <= 0
    value = torch.where(unreachable, torch.zeros_like(c), torch.log1p(keep / c.clamp_min(1e-300)))
    return Bonus(torch.arange(x.numel(), device=x.device), x, value, unreachable if unreachable.any() else None)


def _one_jump(process: ForwardProcess, x: Tensor, t: Tensor, m: int) -> Bonus:
    """The one-jump surrogate of the module docstring: ``log q~`` up to a per-position constant
    is ``log1p(extra[y] / C)``, with ``C`` the part every origin shares and ``extra`` the
    arrivals from sparse neighbours and the no-jump term at ``y = x``."""
    alpha = process.schedule.alpha(t)
    arrivals = process.arrivals(x, t)
    shared = (1 - alpha) * ((1 - SURROGATE_FLOOR) * arrivals.base + SURROGATE_FLOOR / m)
    rows = torch.arange(x.numel(), device=x.device)
    keys = torch.cat([arrivals.pos * m + arrivals.src, rows * m + x])
    extra = torch.cat([(1 - alpha[arrivals.pos]) * (1 - SURROGATE_FLOOR) * arrivals.prob, alpha])
    uniq, where = torch.unique(keys, return_inverse=True)
    summed = torch.zeros(uniq.numel(), dtype=torch.float64, device=x.device).index_add_(0, where, extra)
    return Bonus(uniq // m, uniq % m, torch.log1p(summed / shared[uniq // m]))


def forward_bonus(process: ForwardProcess, xt: Tensor, t: Tensor, m: int) -> Bonus:
    """The :class:`Bonus` of positions ``xt [B, L]`` at times ``t [B]`` (rows in ``B * L`` order): exact
    for column-constant kernels, the one-jump surrogate for the others (``forward-surrogate``)."""
    times = t.to(torch.float64).repeat_interleave(xt.shape[1])
    return (_column_constant if process.column_constant else _one_jump)(process, xt.reshape(-1), times, m)


def _exact_log_likelihood(process: ForwardProcess, xt: Tensor, t: Tensor) -> Tensor:
    """``log q_t(x_t | .)`` as float32 ``[B, L, m]`` (``-inf`` where no path leads from ``y`` to ``x_t``)."""
    return forward_likelihood(process, xt, t).log().float().to(xt.device)


def forward_logits(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    """``f + log q_t(x_t | .)`` (up to a constant per position) for logits ``[B, L, m]``, states
    ``xt [B, L]`` and times ``t [B]``: float32 logits of the forward-likelihood parametrization
    with the exact ``q_t`` (module docstring), differentiable in ``logits``."""
    if not process.column_constant:
        return logits.float() + _exact_log_likelihood(process, xt, t)
    return surrogate_logits(process, logits, xt, t)


def surrogate_logits(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    """:func:`forward_logits` with :func:`forward_bonus`: the one-jump surrogate of ``q_t`` for kernels
    that are not column-constant (``forward-surrogate``), exact for the others."""
    B, L, m = logits.shape
    bonus = forward_bonus(process, xt, t, m)
    flat = logits.float().reshape(B * L, m)
    out = flat.index_put((bonus.row, bonus.col), flat[bonus.row, bonus.col] + bonus.value.to(flat.dtype))
    if bonus.unreachable is not None:
        rows = bonus.unreachable.nonzero().reshape(-1)
        out = torch.where(bonus.unreachable[:, None], torch.full_like(out, -torch.inf), out)
        out = out.index_put((rows, xt.reshape(-1)[rows]), torch.zeros(rows.numel(), dtype=out.dtype, device=out.device))
    return out.reshape(B, L, m)


def forward_cross_entropy(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """``-log mu(x0 | x_t, t)`` per position (``[B, L]``) under the forward parametrization with the
    exact ``q_t``: in closed form for column-constant kernels (:func:`surrogate_cross_entropy` is then
    exact), else ``logsumexp(f + log q_t(x_t | .)) - f[x0] - log q_t(x_t | x0)`` with the rows of
    :func:`gdds.posterior.forward_likelihood`."""
    if process.column_constant:
        return surrogate_cross_entropy(process, logits, xt, t, x0)
    z = logits.float() + _exact_log_likelihood(process, xt, t)
    return torch.logsumexp(z, dim=-1) - z.gather(-1, x0[..., None]).squeeze(-1)


def surrogate_cross_entropy(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """``-log mu(x0 | x_t, t)`` per position (``[B, L]``) under :func:`surrogate_logits`,
    without materialising the parametrized logits: with ``p = softmax(f)`` and the sparse
    bonus ``b``, ``log Z = logsumexp(f) + log(1 + sum_e p_e (e^{b_e} - 1))``, so only the
    ``logsumexp`` touches all ``m`` entries (as a plain cross-entropy does; in float32 chunks,
    :mod:`gdds.objectives.logsumexp`)."""
    B, L, m = logits.shape
    bonus = forward_bonus(process, xt, t, m)
    flat = logits.reshape(B * L, m)
    lse = logsumexp_rows(flat)
    log_p = (flat[bonus.row, bonus.col].float() - lse[bonus.row]).double()
    boost = torch.zeros(B * L, dtype=torch.float64, device=flat.device).index_add(
        0, bonus.row, log_p.exp() * torch.expm1(bonus.value))
    target = x0.reshape(-1)
    hit = torch.zeros(B * L, dtype=torch.float64, device=flat.device).index_add(
        0, bonus.row, torch.where(bonus.col == target[bonus.row], bonus.value, 0.0))
    loss = (lse.double() + torch.log1p(boost) - flat.gather(1, target[:, None])[:, 0].double() - hit).float()
    if bonus.unreachable is not None:  # mu is the point mass on x_t: no loss if x0 is it, else infinite
        point = torch.where(target == xt.reshape(-1), 0.0, torch.inf).to(loss.dtype)
        loss = torch.where(bonus.unreachable, point, loss)
    return loss.reshape(B, L)


@dataclass(frozen=True)
class Parametrization:
    """How logits become ``mu``: ``logits(process, f, x_t, t)`` gives the logits of ``mu``,
    ``cross_entropy(process, f, x_t, t, x0)`` the per-position ``-log mu(x0)`` (training) and
    ``denoiser(process, network)`` the network as a denoiser for :func:`gdds.sample` and
    :func:`gdds.nll_bound`."""

    logits: Callable[[ForwardProcess, Tensor, Tensor, Tensor], Tensor]
    cross_entropy: Callable[[ForwardProcess, Tensor, Tensor, Tensor, Tensor], Tensor]
    denoiser: Callable[[ForwardProcess, Denoiser], Denoiser]


def _mean_logits(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    return logits


def _mean_cross_entropy(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    return snapshot_cross_entropy(logits, x0)


def _surrogate_denoiser(process: ForwardProcess, network: Denoiser) -> Denoiser:
    """``network`` under the one-jump surrogate; a block network stays one (its context passed through)."""
    if isinstance(network, BlockDenoiser):
        return BlockDenoiser(lambda xt, t, x0: surrogate_logits(process, network(xt, t, x0), xt, t),
                             network.block_size)
    return lambda xt, t: surrogate_logits(process, network(xt, t), xt, t)


PARAMETRIZATIONS: Registry[Parametrization] = Registry("parametrization")
PARAMETRIZATIONS.register("mean", Parametrization(_mean_logits, _mean_cross_entropy, lambda process, network: network))
PARAMETRIZATIONS.register("forward", Parametrization(forward_logits, forward_cross_entropy, LikelihoodWeighted))
PARAMETRIZATIONS.register("forward-surrogate", Parametrization(surrogate_logits, surrogate_cross_entropy,
                                                               _surrogate_denoiser))
AUTO = "auto"  # forward where the method's output is mu and the kernel is not absorbing, else mean
