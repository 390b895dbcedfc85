"""A kernel with one state made absorbing: ``F'_t`` is ``F_t`` with column ``s`` replaced by
``e_s`` (a token at ``s`` stays at ``s``; every other column is unchanged).

This is what the semantic-then-absorb kernel needs (:class:`gdds.kernels.SemanticKNN` with
``teleport_to="mask"``): ``F_t = (1 - w(t)) K'_t + w(t) delta_mask 1^T`` where ``K'`` is the kNN
kernel with the mask kept in place, so the mask is absorbing for the whole mixture and the
``t = 1`` law is (almost) a point mass on it, as in masked diffusion (``docs/math.md`` section 3).

In matrix form, ``F' = F (I - e_s e_s^T) + e_s e_s^T``, so
``F' v = F (v with v[s] = 0) + e_s v[s]`` and ``F'^T u = (F^T u with entry s set to u[s])``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Arrivals, Kernel, check_vectors


class Absorbing(Kernel):
    """``inner`` with ``state`` absorbing (module docstring)."""

    def __init__(self, inner: Kernel, state: int):
        if not 0 <= state < inner.m:
            raise ValueError(f"the absorbing state must be a token id in [0, {inner.m}), got {state}")
        self.inner = inner
        self.state = int(state)
        self.m = inner.m
        self.time_dependent = inner.time_dependent

    @property
    def float32_apply(self) -> bool:  # (the inner kernel's products decide)
        return self.inner.float32_apply

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return torch.where(x == self.state, x, self.inner.jump(x, t, generator))

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m, self.float32_apply)
        kept = v[self.state].clone()
        rest = v.clone()
        rest[self.state] = 0.0
        out = self.inner.apply(rest, t)
        out[self.state] += kept
        return out

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m, self.float32_apply)
        out = self.inner.apply_T(v, t)
        out[self.state] = v[self.state]
        return out

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        """The inner rows without their entry at ``state`` (column ``s`` is ``e_s`` now), plus 1 at
        ``(s, s)``."""
        inner = self.inner.arrivals(x, t)
        keep = inner.src != self.state
        at_state = (x == self.state).nonzero().reshape(-1)
        pos = [inner.pos[keep], torch.arange(x.numel(), device=x.device), at_state]
        src = torch.full((x.numel() + at_state.numel(),), self.state, dtype=torch.long, device=x.device)
        prob = [inner.prob[keep], -inner.base, torch.ones(at_state.numel(), dtype=torch.float64, device=x.device)]
        return Arrivals(inner.base, torch.cat(pos), torch.cat([inner.src[keep], src]), torch.cat(prob))

    def dense(self, t: float = 0.0) -> Tensor:
        F = self.inner.dense(t)
        F[:, self.state] = 0.0
        F[self.state, self.state] = 1.0
        return F

    def __repr__(self) -> str:
        return f"Absorbing({self.inner!r}, state={self.state})"
