"""How the network's output becomes the clean-token law ``mu`` (``docs/math.md`` section 6):
:data:`PARAMETRIZATIONS` lists them.

- ``mean``: ``mu = softmax(f_theta(x_t, t))``, the network says everything.
- ``forward``: ``log mu(y | x_t, t) = f_theta(x_t, t)[y] + log q_t(x_t | y) - log Z``. What the
  forward process already knows (a token that did not move is its own origin, a neighbour
  points back to its source) holds by construction, and the network learns only what the
  context adds. At low noise ``mu(x_t | x_t) -> 1`` for any ``f``, so the copy errors that the
  bound of a non-absorbing process charges at every position and every step (roughly
  ``(1 - mu(x | x)) / t``) are gone.

``q_t`` is exact for column-constant kernels (``keep [x = y] + c[x]``, closed form). For the
others it is the **one-jump surrogate**

    q~_t(x | y) = alpha_t [x = y] + (1 - alpha_t) ((1 - delta) F_t[x, y] + delta / m),   delta = 1e-3,

exact when at most one jump happened and for any number of jumps of a time-homogeneous
column-constant kernel; it is cheap (the rows ``F_t[x, .]`` of sparse kernels, via
:meth:`gdds.kernels.Kernel.arrivals`) and, thanks to ``delta``, never excludes an origin. Any
``mu`` is a valid model: the bound of :mod:`gdds.likelihood` stays a bound, and the same
parametrized ``mu`` is trained, sampled and scored.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..process import ForwardProcess
from ..registry import Registry

SURROGATE_FLOOR = 1e-3  # delta of the module docstring

Parametrization = Callable[[ForwardProcess, Tensor, Tensor, Tensor], Tensor]


def mean_logits(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    """The network's logits as they are."""
    return logits


def _column_constant(process: ForwardProcess, flat: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """Exact: ``log q_t(x | y) = log c[x] + log1p(keep / c[x]) [y = x]``; where no jump reaches
    ``x`` (``c[x] = 0``, e.g. an unmasked token), ``mu`` is the point mass on ``x``."""
    keep, c = torch.empty_like(t), torch.empty_like(t)
    for tv in torch.unique(t).tolist():
        idx = t == tv
        k, col = process.closed_transition(0.0, tv)
        keep[idx], c[idx] = k, col.to(x.device)[x[idx]]
    rows = torch.arange(x.numel(), device=x.device)
    unreachable = c <= 0
    bonus = torch.where(unreachable, torch.zeros_like(c), torch.log1p(keep / c.clamp_min(1e-300)))
    out = flat.index_put((rows, x), flat[rows, x] + bonus.to(flat.dtype))
    if unreachable.any():
        out = torch.where(unreachable[:, None], torch.full_like(out, -torch.inf), out)
        out = out.index_put((rows[unreachable], x[unreachable]), torch.zeros_like(c[unreachable], dtype=out.dtype))
    return out


def _one_jump(process: ForwardProcess, flat: Tensor, x: Tensor, t: Tensor) -> Tensor:
    """The one-jump surrogate of the module docstring: ``log q~`` up to a per-position constant
    is ``log1p(extra[y] / C)``, with ``C`` the part every origin shares and ``extra`` the
    arrivals from sparse neighbours and the no-jump term at ``y = x``."""
    n, m = flat.shape
    alpha = process.schedule.alpha(t)
    arrivals = process.kernel.arrivals(x, t)
    shared = (1 - alpha) * ((1 - SURROGATE_FLOOR) * arrivals.base + SURROGATE_FLOOR / m)
    rows = torch.arange(n, device=x.device)
    keys = torch.cat([arrivals.pos * m + arrivals.src, rows * m + x])
    extra = torch.cat([(1 - alpha[arrivals.pos]) * (1 - SURROGATE_FLOOR) * arrivals.prob, alpha])
    uniq, where = torch.unique(keys, return_inverse=True)
    summed = torch.zeros(uniq.numel(), dtype=torch.float64, device=x.device).index_add_(0, where, extra)
    bonus = torch.log1p(summed / shared[uniq // m])
    return flat.reshape(-1).index_add(0, uniq, bonus.to(flat.dtype)).reshape(n, m)


def forward_logits(process: ForwardProcess, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
    """``f + log q_t(x_t | .)`` (up to a constant per position) for logits ``[B, L, m]``, states
    ``xt [B, L]`` and times ``t [B]``: float32 logits of the forward-likelihood parametrization
    (module docstring), differentiable in ``logits``."""
    B, L, m = logits.shape
    x = xt.reshape(-1)
    times = t.to(torch.float64).repeat_interleave(L)
    flat = logits.float().reshape(B * L, m)
    add = _column_constant if process.column_constant else _one_jump
    return add(process, flat, x, times).reshape(B, L, m)


PARAMETRIZATIONS: Registry[Parametrization] = Registry("parametrization")
PARAMETRIZATIONS.register("mean", mean_logits)
PARAMETRIZATIONS.register("forward", forward_logits)
AUTO = "auto"  # forward where the method's output is mu and the kernel is not absorbing, else mean
