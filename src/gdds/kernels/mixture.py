"""Mixtures of kernels with time-varying weights, and the GIDD-like mask/uniform hybrid.

``F_t = sum_i w_i(t) F^(i)_t`` (``docs/math.md`` section 3); a jump first picks a
component with probability ``w_i(t)``, then jumps with that component.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..categorical import inverse_cdf
from .base import Arrivals, Kernel, TeleportSplit, check_vectors
from .mask import Mask
from .uniform import Uniform

Weight = float | Callable[[Tensor], Tensor]
_PROBE = torch.linspace(0, 1, 11, dtype=torch.float64)
GATHER_DEVICES = {"cpu"}  # device types on which a jump gathers each component's positions (Mixture.jump)


class Mixture(Kernel):
    """Mixture of kernels. ``weights`` are floats or callables mapping times ``[n]``
    (float64) to ``[n]``; at every time they must be non-negative and sum to 1."""

    def __init__(self, kernels: Sequence[Kernel], weights: Sequence[Weight]):
        kernels = list(kernels)
        if not kernels or len(kernels) != len(weights):
            raise ValueError(f"Mixture needs one weight per kernel; got {len(kernels)} kernels, {len(weights)} weights")
        sizes = {k.m for k in kernels}
        if len(sizes) != 1:
            raise ValueError(f"all mixture components must share the vocabulary size; got sizes {sorted(sizes)}")
        self.m = sizes.pop()
        self.kernels = kernels
        self.weight_fns = list(weights)
        self.time_dependent = any(callable(w) for w in weights) or any(k.time_dependent for k in kernels)
        self.column_constant = all(k.column_constant for k in kernels)
        W = self.weights(_PROBE)
        if torch.isnan(W).any() or (W < 0).any():
            raise ValueError("mixture weights must be non-negative and finite at every time in [0, 1]")
        if ((W.sum(dim=1) - 1).abs() > 1e-6).any():
            raise ValueError(f"mixture weights must sum to 1 at every time; sums at t=0..1: {W.sum(1).tolist()}")

    def weights(self, t: Tensor) -> Tensor:
        """Component weights ``[n, K]`` at times ``t`` (``[n]``)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        cols = [
            torch.as_tensor(w(t), dtype=torch.float64).reshape(-1).expand(t.numel()) if callable(w)
            else torch.full_like(t, float(w))
            for w in self.weight_fns
        ]
        return torch.stack(cols, dim=1)

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        if t is None:
            if self.time_dependent:
                raise ValueError("a time-dependent kernel needs the jump times t")
            W = self.weights(torch.zeros(1, dtype=torch.float64, device=x.device)).expand(x.numel(), -1)
        else:
            W = self.weights(t)
        choice = inverse_cdf(W, generator)
        if x.device.type not in GATHER_DEVICES:
            # No host synchronisation (traceable, capturable in a CUDA graph): every component jumps
            # from every position and the chosen one is kept; on the CPU, where gathering the
            # positions of each component costs no synchronisation, only the chosen ones jump.
            out = x
            for c, kernel in enumerate(self.kernels):
                out = torch.where(choice == c, kernel.jump(x, t, generator), out)
            return out
        out = torch.empty_like(x)
        for c, kernel in enumerate(self.kernels):
            idx = (choice == c).nonzero().squeeze(1)
            if idx.numel():
                out[idx] = kernel.jump(x[idx], None if t is None else t[idx], generator)
        return out

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        if self.column_constant:
            return super().arrivals(x, t)
        W = self.weights(t)
        return Arrivals.concat([k.arrivals(x, t) for k in self.kernels], [W[:, c] for c in range(len(self.kernels))])

    def _weighted(self, t: float, parts: Sequence[Tensor]) -> Tensor:
        w = self.weights(torch.tensor([float(t)], dtype=torch.float64))[0]
        return sum(wi * p for wi, p in zip(w.tolist(), parts))

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        return self._weighted(t, [k.apply(v, t) for k in self.kernels])

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m)
        return self._weighted(t, [k.apply_T(v, t) for k in self.kernels])

    def dense(self, t: float = 0.0) -> Tensor:
        return self._weighted(t, [k.dense(t) for k in self.kernels])

    def pi(self, t: float = 0.0) -> Tensor:
        if not self.column_constant:
            return super().pi(t)
        return self._weighted(t, [k.pi(t).to(self.device) for k in self.kernels])

    def teleport_split(self) -> TeleportSplit | None:
        """Exactly one component that is not column-constant is ``K``; the others
        together are the rank-one part ``w(t) pi_t 1^T`` (built once)."""
        if "_split" not in vars(self):
            self._split = self._teleport_split()
        return self._split

    def _teleport_split(self) -> TeleportSplit | None:
        constant = [i for i, k in enumerate(self.kernels) if k.column_constant]
        if not constant or len(constant) != len(self.kernels) - 1:
            return None
        (inner,) = [k for k in self.kernels if not k.column_constant]

        def weight(t: Tensor) -> Tensor:
            return self.weights(t)[:, constant].sum(1)

        def column(t: float) -> Tensor:
            w = self.weights(torch.tensor([float(t)], dtype=torch.float64))[0, constant]
            if w.sum() <= 0:  # no teleport at this time: any law will do, it is weighted by 0
                w = torch.ones_like(w)
            pis = [self.kernels[i].pi(t).to(self.device) for i in constant]
            return sum(wi * p for wi, p in zip((w / w.sum()).tolist(), pis))

        columns = torch.stack([column(float(t)) for t in _PROBE])
        return TeleportSplit(inner, weight, column, bool((columns - columns[0]).abs().max() > 1e-12))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kernels!r})"


class Hybrid(Mixture):
    """GIDD-like hybrid: a jump lands on the mask token with probability
    ``1 - u(t)`` and on a uniformly drawn token (over all ``m``) with probability
    ``u(t)``. ``uniform_weight`` is a constant in ``[0, 1]`` or a callable of time;
    e.g. ``lambda t: 0.2 * 4 * t * (1 - t)`` puts uniform noise mid-way only."""

    def __init__(self, m: int, mask_id: int, uniform_weight: Weight = 0.1):
        if callable(uniform_weight):
            fn = uniform_weight
            weights = [lambda t: 1 - torch.as_tensor(fn(t), dtype=torch.float64), fn]
        else:
            if not 0 <= uniform_weight <= 1:
                raise ValueError(f"uniform_weight must be in [0, 1], got {uniform_weight}")
            weights = [1 - float(uniform_weight), float(uniform_weight)]
        super().__init__([Mask(m, mask_id), Uniform(m)], weights)
