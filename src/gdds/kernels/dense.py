"""Dense kernels: any small column-stochastic matrix, fixed or time-dependent."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..categorical import inverse_cdf
from .base import DENSE_LIMIT, Kernel, check_column_stochastic, check_vectors

KernelFn = Callable[[Tensor], Tensor]


class Dense(Kernel):
    """``F`` given as a dense ``[m, m]`` column-stochastic tensor, or as a callable
    ``F(t)`` mapping times ``[n]`` (float64) to a batch ``[n, m, m]`` of
    column-stochastic matrices (a time-dependent kernel).

    A callable is validated at 11 evenly spaced times in ``[0, 1]``.
    """

    def __init__(self, F: Tensor | KernelFn):
        if callable(F) and not isinstance(F, Tensor):
            self.fn: KernelFn | None = F
            probe = self._eval(torch.linspace(0, 1, 11, dtype=torch.float64))
            if probe.dim() != 3 or probe.shape[0] != 11:
                raise ValueError(f"a kernel callable must map times [n] to [n, m, m]; got {tuple(probe.shape)}")
            check_column_stochastic(probe, what="Dense kernel F(t)")
            self.m = probe.shape[-1]
            self.time_dependent = True
            self.F = None
        else:
            F = torch.as_tensor(F, dtype=torch.float64)
            check_column_stochastic(F, what="Dense kernel F")
            self.fn = None
            self.F = F / F.sum(dim=0, keepdim=True)
            self.m = F.shape[0]
        if self.m > DENSE_LIMIT:
            raise ValueError(f"Dense kernels are for small vocabularies (m <= {DENSE_LIMIT}); "
                             f"use Sparse for m = {self.m}")

    def _eval(self, t: Tensor) -> Tensor:
        """``F(t)`` on the kernel's device; the callable gets the times on the CPU."""
        return torch.as_tensor(self.fn(t.cpu()), dtype=torch.float64).to(self.device)

    def dense(self, t: float = 0.0) -> Tensor:
        if self.fn is None:
            return self.F
        return self._eval(torch.tensor([float(t)], dtype=torch.float64))[0]

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if self.fn is None:
            cols = self.F.T[x]
        else:
            if t is None:
                raise ValueError("a time-dependent kernel needs the jump times t")
            cols = self._eval(t).transpose(1, 2)[torch.arange(x.numel(), device=x.device), x]
        return inverse_cdf(cols, generator)

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        return self.dense(t) @ check_vectors(v, self.m)

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        return self.dense(t).T @ check_vectors(v, self.m)

    def __repr__(self) -> str:
        return f"Dense(m={self.m}, time_dependent={self.time_dependent})"
