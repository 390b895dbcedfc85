"""The absorbing (mask) kernel, a column-constant classic.

Like the uniform kernel (:mod:`gdds.kernels.uniform`) it has ``F = pi 1^T`` with ``F^2 = F``,
so ``exp(Lambda (F - I)) = e^{-Lambda} I + (1 - e^{-Lambda}) F`` and ``q_t(.|x0) =
alpha(t) e_{x0} + (1 - alpha(t)) pi`` (``docs/math.md`` section 3; paper section 2.2).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Kernel, check_vectors


class Mask(Kernel):
    """Absorbing kernel: every jump lands on ``mask_id`` (``F(.|x) = delta_mask``)."""

    column_constant = True
    absorbing = True

    def __init__(self, m: int, mask_id: int):
        if m < 2:
            raise ValueError(f"vocabulary size m must be at least 2, got {m}")
        if not 0 <= mask_id < m:
            raise ValueError(f"mask_id must be a token id in [0, {m}), got {mask_id}")
        self.m = int(m)
        self.mask_id = int(mask_id)

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return torch.full_like(x, self.mask_id)

    def pi(self, t: float = 0.0) -> Tensor:
        p = torch.zeros(self.m, dtype=torch.float64, device=self.device)
        p[self.mask_id] = 1.0
        return p

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        out = torch.zeros_like(v)
        out[self.mask_id] = v.sum(dim=0)
        return out

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        return v[self.mask_id].expand_as(v).clone()

    def __repr__(self) -> str:
        return f"Mask(m={self.m}, mask_id={self.mask_id})"
