"""Generation. For now one **approximate** sampler; the exact posterior samplers of
SPEC section 1 ("Mean parametrization") arrive with the evaluation issue.

``sample_renoise`` predicts a clean sequence from ``x_t`` and re-noises it to the
next time ``s`` with the forward process: ``x0_hat ~ mu_theta(. | x_t, t)``,
``x_s ~ q_s(. | x0_hat)``. This is not the model's reverse chain
``p_theta(x_s | x_t)`` (it forgets ``x_t`` between steps), so no likelihood may be
attributed to its samples; it is labelled approximate wherever it is used.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .process import ForwardProcess

Denoiser = Callable[[Tensor, Tensor], Tensor]


def categorical(logits: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Exact draw from ``softmax(logits)`` along the last dim (Gumbel-max on float32 logits)."""
    e = torch.empty(logits.shape, dtype=torch.float32, device=logits.device).exponential_(generator=generator)
    return (logits.float() - e.log()).argmax(dim=-1)


@torch.no_grad()
def sample_renoise(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int = 64,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    """APPROXIMATE sampler (module docstring): ``num`` sequences of ``length`` tokens
    from the kernel's limiting law at ``t = 1`` down a uniform grid of ``steps``."""
    if num < 1 or length < 1 or steps < 1:
        raise ValueError(f"num, length and steps must be positive; got {num}, {length}, {steps}")
    prior = process.kernel.stationary(1.0).to(torch.float32)
    x = torch.multinomial(prior.to(device), num * length, replacement=True, generator=generator)
    x = x.reshape(num, length)
    grid = torch.linspace(1.0, 0.0, steps + 1)
    for k in range(steps):
        t, s = float(grid[k]), float(grid[k + 1])
        x0_hat = categorical(denoiser(x, torch.full((num,), t, device=x.device)), generator)
        x = process.sample(x0_hat, s, generator=generator) if s > 0 else x0_hat
    return x
