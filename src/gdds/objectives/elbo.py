"""The continuous-time ELBO of column-constant processes as a training loss:
masked diffusion (MDLM), uniform diffusion (UDLM) and mask/uniform hybrids (GIDD)
in one formula (``docs/math.md`` section 9).

For ``F_t = pi_t 1^T`` the transition is ``P_{0->t} = k I + c 1^T`` with
``k = alpha(t)`` and ``c = c_{0t}`` (:meth:`gdds.ForwardProcess.closed_transition`). The
reverse CTMC of the mean parametrization jumps from ``x`` to ``z`` at rate
``R_theta = beta pi_t[x] w[z]`` with ``w = P_{0->t}(mu / r)``, ``r = P_{0->t}^T e_x``;
the true reverse rate is ``R = beta pi_t[x] q[z] / q[x]`` with ``q = q_t(.|x0)``.
The negative ELBO is ``KL(q_1 || p_1) + int_0^1 E_{x_t} I(x_t, t) dt`` with

    I = sum_{z != x} R_theta - R + R log(R / R_theta)
      = beta pi[x] [ (S - w[x]) - (1 - q[x]) / q[x]
                     + sum_{z != x} q[z] (log q[z] - log q[x] - log w[z]) / q[x] ],

where, when some jump reaches ``x`` (``c[x] > 0``), every clean token can produce
``x``: ``rho = mu / c[x]`` except ``rho[x] = mu[x] / (k + c[x])``, ``S = sum rho`` and
``w = k rho + c S``. When ``c[x] = 0`` (an unmasked token) no jump reaches ``x``
and ``I = 0``. Everything is ``O(m)`` per position and differentiable in the
logits. For the mask kernel ``I`` is MDLM's ``beta alpha / (1 - alpha) * (-log mu(x0))``
at masked positions (when ``mu`` puts no mass on the mask); for the uniform kernel
it is UDLM's integrand (tested against a dense computation of the rates).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..process import ForwardProcess

ELBO_NEEDS, ELBO_INSTEAD = "the closed-form ELBO", "train it with the snapshot objective (method gdds)"


def per_time(process: ForwardProcess, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``k [B]``, ``c [B, m]``, ``pi [B, m]`` and ``beta [B]`` (float64) at the times ``t [B]``."""
    sched = process.schedule
    if not process.kernel.time_dependent:  # pi is constant: P_{0->t} = e^{-Lambda} I + (1 - e^{-Lambda}) pi 1^T
        lam = (sched.Lambda(t.double().cpu()) - float(sched.Lambda(0.0))).to(t.device)
        pi = process.pi(0.0).to(t.device)
        return (torch.exp(-lam), -torch.expm1(-lam)[:, None] * pi, pi.expand(len(lam), -1),
                sched.beta(t.double().cpu()).to(t.device))
    ks, cs, pis = [], [], []
    for tb in t.double().cpu().tolist():
        k, c = process.closed_transition(0.0, tb)
        ks.append(k)
        cs.append(c)
        pis.append(process.pi(tb))
    device = t.device
    return (torch.tensor(ks, dtype=torch.float64, device=device), torch.stack(cs).to(device),
            torch.stack(pis).to(device), sched.beta(t.double().cpu()).to(device))


SPARSE_COLUMNS = 16  # at most this many tokens reachable by a jump (the mask: one): the sparse path of _log_w


def reachable_columns(c: Tensor) -> Tensor | None:
    """The tokens some jump can reach (``c [B, m] > 0`` in some row) when there are at most
    ``SPARSE_COLUMNS`` of them (the mask: one), else ``None``: sums against ``c`` then need
    only those columns of a ``[B, L, m]`` tensor."""
    cols = (c > 0).any(0).nonzero().flatten()
    return cols if cols.numel() <= SPARSE_COLUMNS else None


def _log_w(head: Tensor, logc: Tensor, log_s: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """``log w = logaddexp(head, log c + log S)`` as ``[B, L, m]`` and ``sum_z c[z] log w[z]``
    as ``[B, L]``. When only a few tokens are reachable the ``logaddexp`` runs on those
    columns only: elsewhere ``log w = head``."""
    cols = reachable_columns(c)
    if cols is None:
        logw = torch.logaddexp(head, logc[:, None, :] + log_s)
        # the floor only makes 0 * log 0 = 0 where c = 0
        return logw, (c.float()[:, None, :] * logw.clamp_min(-1e30)).sum(-1)
    part = torch.logaddexp(head[..., cols], logc[:, None, cols] + log_s)
    return head.index_copy(-1, cols, part), (c[:, cols].float()[:, None, :] * part.clamp_min(-1e30)).sum(-1)


def elbo_integrand(process: ForwardProcess, logits: Tensor, xt: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    """``I(x_t, t)`` of the module docstring per position: ``[B, L]``, differentiable in
    ``logits [B, L, m]``; ``xt, x0 [B, L]``, ``t [B]`` in ``(0, 1]``. Column-constant kernels only."""
    process.require_column_constant(ELBO_NEEDS, ELBO_INSTEAD)
    if logits.shape[:-1] != xt.shape or xt.shape != x0.shape or t.shape != xt.shape[:1]:
        raise ValueError(f"need logits [B, L, m], xt and x0 [B, L], t [B]; got {tuple(logits.shape)}, "
                         f"{tuple(xt.shape)}, {tuple(x0.shape)}, {tuple(t.shape)}")
    if ((t <= 0) | (t > 1)).any():
        raise ValueError("the ELBO integrand needs times in (0, 1]")
    k, c, pi, beta = per_time(process, t)            # float64: k, beta [B]; c, pi [B, m]
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, L, m] float32
    k, beta = k[:, None], beta[:, None]
    cx = c.gather(1, xt)                      # c[x]        [B, L]
    rate = beta * pi.gather(1, xt)            # beta pi[x]
    jumps = cx > 0
    cx = torch.where(jumps, cx, torch.ones_like(cx))
    mx = logp.gather(-1, xt[..., None])[..., 0].double().exp()
    rho_x = mx / (k + cx)
    S = (1 - mx) / cx + rho_x
    w_x = k * rho_x + cx * S                  # w at z = x
    # log w[z] = log((k / c[x]) mu[z] + c[z] S) in log space (no floor: the gradient never vanishes);
    # its z = x entry is wrong but only enters sums from which the z = x term is removed.
    logc = torch.where(c > 0, c.log(), -torch.inf).float()
    logw, c_logw = _log_w((k / cx).log().float()[..., None] + logp, logc, S.log().float()[..., None], c)
    c0, k0 = c.gather(1, x0), k.expand_as(cx)
    q_x = c.gather(1, xt) + k * (xt == x0)
    sum_qlogq = torch.xlogy(c, c).sum(1, keepdim=True) - torch.xlogy(c0, c0) + torch.xlogy(c0 + k0, c0 + k0)
    sum_qlogw = c_logw.double() + k * logw.gather(-1, x0[..., None])[..., 0].double()  # q = c + k e_{x0}
    own_logw = logw.gather(-1, xt[..., None])[..., 0].double()
    q_x = q_x.clamp_min(1e-300)
    cross = (sum_qlogq - torch.xlogy(q_x, q_x)) - (sum_qlogw - q_x * own_logw)  # sum_{z != x} q log(q / w)
    inner = (S - w_x) - (1 - q_x) / q_x + (cross - (1 - q_x) * q_x.log()) / q_x
    return torch.where(jumps, rate * inner, torch.zeros_like(inner)).float()
