"""The uniform kernel: a jump lands on a uniformly drawn token (column-constant, ``F = pi 1^T``;
``docs/math.md`` section 3; paper section 2.2)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Kernel, check_vectors, exclusion_mask


class Uniform(Kernel):
    """Uniform kernel over **all** ``m`` tokens, the current one included
    (``F = 1 1^T / m``); a jump to the same token is a jump that changes nothing.

    ``exclude`` removes token ids from the support (e.g. special tokens): jumps
    then land uniformly on the other ``m - |exclude|`` ids.
    """

    column_constant = True

    def __init__(self, m: int, exclude: Sequence[int] | Tensor | None = None):
        if m < 2:
            raise ValueError(f"vocabulary size m must be at least 2, got {m}")
        self.m = int(m)
        banned = exclusion_mask(self.m, exclude)
        self.support = None if banned is None else (~banned).nonzero().reshape(-1)
        if self.support is not None and self.support.numel() == 0:
            raise ValueError("Uniform(exclude=...) leaves no token to jump to")
        self.column = torch.full((self.m,), 1.0 / self.m, dtype=torch.float64)
        if self.support is not None:
            self.column = torch.zeros(self.m, dtype=torch.float64)
            self.column[self.support] = 1.0 / self.support.numel()

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if self.support is None:
            return torch.randint(0, self.m, x.shape, device=x.device, generator=generator)
        pick = torch.randint(0, self.support.numel(), x.shape, device=x.device, generator=generator)
        return self.support[pick]

    def pi(self, t: float = 0.0) -> Tensor:
        return self.column

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        return self.pi(t).unsqueeze(1).to(v.device) * v.sum(dim=0, keepdim=True)

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        return (self.pi(t).to(v.device) @ v).unsqueeze(0).expand_as(v).clone()

    def __repr__(self) -> str:
        excluded = 0 if self.support is None else self.m - self.support.numel()
        return f"Uniform(m={self.m})" if not excluded else f"Uniform(m={self.m}, excluded={excluded})"
