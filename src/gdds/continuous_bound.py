"""Continuous-time bounds: the bound of the reverse CTMC that the ``T``-step chain of
:mod:`gdds.likelihood` tends to as ``T`` grows (:func:`continuous_bound`, column-constant kernels in
closed form), and MDLM's bound for the mask kernel (:func:`masked_continuous_bound`),
``int_0^1 (-alpha') / (1 - alpha) E[sum_{masked} -log mu(x0)] dt`` plus the prior term, estimated by
Monte-Carlo over ``t`` (``docs/math.md`` section 8). Both are sums over positions, so a block denoiser
(:class:`gdds.sampling.BlockDenoiser`) is scored with the clean blocks before each block as context.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .categorical import one_hot_columns
from .kernels.mask import Mask
from .operators import OperatorSettings
from .prior_term import on_process, prior_kl
from .process import ForwardProcess
from .sampling import Denoiser, with_context


@torch.no_grad()
def continuous_bound(
    process: ForwardProcess,
    denoiser: Denoiser,
    x0: Tensor,
    samples: int = 1,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
    keep: Tensor | None = None,
    operators: OperatorSettings | None = None,
) -> Tensor:
    """The continuous-time bound of the reverse CTMC that the ``T``-step chain tends
    to (``[B]`` nats, one unbiased estimate per sequence from ``samples`` draws of t):

        KL(q_1 || p_1) + int_0^1 E_{x_t} sum_{z != x_t} [R_theta - R + R log(R / R_theta)] dt,

    with forward rates ``beta F_t[x, z]`` of ``z -> x``, the true reverse rates
    ``R(x -> z) = beta F_t[x, z] q_t(z|x0) / q_t(x|x0)`` and the model's
    ``R_theta(x -> z) = beta F_t[x, z] (P_{0->t} (mu / r))[z]``. For the mask kernel
    this is MDLM's bound, for the uniform kernel UDLM's; both cost ``O(m)`` per
    position through the closed-form operators. ``keep``, ``operators``: as in :func:`nll_bound`."""
    x0, keep = on_process(process, x0, keep, generator)
    total = prior_kl(process, x0, reference, keep)
    m = process.m
    for _ in range(samples):
        ts = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x0.device).clamp(1e-9, 1.0)
        xt = process.noise(x0, ts, generator=generator)
        xt = xt if keep is None else torch.where(keep, xt, x0)
        mus = torch.softmax(with_context(denoiser, x0)(xt, ts.to(torch.float32)).to(xt.device, torch.float64), dim=-1)
        for b in range(x0.shape[0]):
            t = float(ts[b])
            x, y, mu = xt[b], x0[b], mus[b]
            ux, wx = torch.unique(x, return_inverse=True)
            uy, wy = torch.unique(y, return_inverse=True)
            ex, ey = one_hot_columns(ux, m), one_hot_columns(uy, m)
            a = process.kernel.apply_T(ex, t)[:, wx]  # F_t[x, z]
            q = process.transition(ey, 0.0, t)[:, wy]  # q_t(z | x0)
            r = process.transition(ex, 0.0, t, transpose=True, settings=operators)[:, wx]  # q_t(x | y)
            reach = r > 0
            mu_r = torch.where(reach, mu.T * reach / (mu.T * reach).sum(0, keepdim=True) / r.clamp_min(1e-300), 0.0)
            w = process.transition(mu_r, 0.0, t, settings=operators)
            rate = float(process.schedule.beta(t))
            pos = torch.arange(x.numel(), device=x.device)
            R = rate * a * q / q[x, pos]
            R_model = rate * a * w
            off = torch.ones_like(R, dtype=torch.bool)
            off[x, pos] = False
            terms = R_model - R + torch.where(R > 0, R * (R.clamp_min(1e-300).log() - R_model.log()), 0.0)
            if keep is not None:
                off = off & keep[b][None, :]
            total[b] += (terms * off).sum() / samples
    return total


@torch.no_grad()
def masked_continuous_bound(
    process: ForwardProcess,
    denoiser: Denoiser,
    x0: Tensor,
    samples: int = 1,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MDLM's continuous-time bound for the mask kernel (module docstring), one
    unbiased estimate per sequence (``[B]`` nats) from ``samples`` draws of ``t``."""
    if not isinstance(process.kernel, Mask):
        raise TypeError("masked_continuous_bound needs a ForwardProcess with a Mask kernel")
    mask_id = process.kernel.mask_id
    x0, _ = on_process(process, x0, None, generator)
    total = prior_kl(process, x0, reference)
    for _ in range(samples):
        t = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64, device=x0.device).clamp_min(1e-9)
        xt = process.noise(x0, t, generator=generator)
        logits = with_context(denoiser, x0)(xt, t.to(torch.float32)).to(xt.device, torch.float64)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, x0[..., None])[..., 0]
        masked = (xt == mask_id) & (x0 != mask_id)
        alpha, beta = process.schedule.alpha(t), process.schedule.beta(t)
        weight = beta * alpha / (1 - alpha)  # -alpha'(t) / (1 - alpha(t))
        total = total + weight * (-(logp * masked).sum(-1)) / samples
    return total

