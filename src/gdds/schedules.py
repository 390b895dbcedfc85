"""Mixing-rate schedules (``docs/math.md`` section 2; paper section 3.2).

A schedule gives the mixing rate ``alpha(t)`` (decreasing, ``alpha(0) = 1``), the
integrated exit rate ``Lambda(t) = -log alpha(t)``, the exit rate
``beta(t) = Lambda'(t)`` and the exact inverse ``Lambda^{-1}``. The forward rate
matrix is ``Q_t = beta(t) (F_t - I)``, so a token survives to ``t`` without a jump
with probability ``alpha(t) = exp(-Lambda(t))``.

Every built-in schedule has a closed-form inverse. A user schedule that only
defines ``Lambda`` and ``beta`` inherits a safeguarded Newton/bisection inverse
accurate to 1e-12 in ``t`` (never a lookup grid, which biases jump times).
:data:`SCHEDULES` is the registry of the built-ins by configuration name.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .registry import Registry

TimeLike = float | Tensor


def as_time(t: TimeLike, name: str = "t") -> Tensor:
    """Return ``t`` as a float64 tensor after checking it lies in ``[0, 1]``."""
    tt = torch.as_tensor(t, dtype=torch.float64)
    if bool(((tt < 0) | (tt > 1) | torch.isnan(tt)).any()):  # one host synchronisation on a GPU
        if torch.isnan(tt).any():
            raise ValueError(f"{name} contains NaN; times must lie in [0, 1]")
        raise ValueError(
            f"{name} must lie in [0, 1] (0 = data, 1 = fully noised); got values in "
            f"[{tt.min().item():.6g}, {tt.max().item():.6g}]"
        )
    return tt


class Schedule:
    """Base class. Subclasses implement ``Lambda`` and ``beta`` on float64 tensors.

    All public methods accept floats or tensors, validate the range and return
    float64 tensors of the input's shape.
    """

    def Lambda(self, t: TimeLike) -> Tensor:
        """Integrated exit rate ``Lambda(t) = -log alpha(t)``."""
        return self._Lambda(as_time(t))

    def beta(self, t: TimeLike) -> Tensor:
        """Exit rate ``beta(t) = Lambda'(t)``."""
        return self._beta(as_time(t))

    def alpha(self, t: TimeLike) -> Tensor:
        """Mixing rate ``alpha(t) = exp(-Lambda(t))``: probability of no jump by ``t``."""
        return torch.exp(-self.Lambda(t))

    @property
    def Lambda_max(self) -> float:
        """``Lambda(1)``, the largest integrated rate the schedule reaches."""
        return float(self._Lambda(torch.ones((), dtype=torch.float64)))

    def Lambda_inv(self, u: TimeLike) -> Tensor:
        """Exact inverse: the ``t`` in ``[0, 1]`` with ``Lambda(t) = u``."""
        uu = torch.as_tensor(u, dtype=torch.float64)
        top = self.Lambda_max
        if torch.isnan(uu).any() or (uu.numel() and (uu.min() < 0 or uu.max() > top * (1 + 1e-12))):
            raise ValueError(
                f"Lambda_inv expects integrated rates in [0, Lambda(1)] = [0, {top:.6g}]"
            )
        return self._Lambda_inv(uu.clamp(0.0, top)).clamp(0.0, 1.0)

    def _Lambda(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _beta(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        """Safeguarded Newton iteration on ``Lambda(t) = u`` keeping a bisection bracket."""
        lo = torch.zeros_like(u)
        hi = torch.ones_like(u)
        t = torch.full_like(u, 0.5)
        for _ in range(100):
            f = self._Lambda(t) - u
            lo = torch.where(f <= 0, t, lo)
            hi = torch.where(f >= 0, t, hi)
            newton = t - f / self._beta(t).clamp_min(1e-300)
            t_new = torch.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
            if t_new.numel() == 0 or torch.max(torch.abs(t_new - t)) <= 1e-14:
                return t_new
            t = t_new
        return t

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class _EndsAtEps(Schedule):
    """A schedule whose mixing rate ends at ``alpha(1) = eps``, ``0 < eps < 1``."""

    def __init__(self, eps: float = 1e-3):
        if not 0 < eps < 1:
            raise ValueError(f"{type(self).__name__} eps must be in (0, 1), got {eps}")
        self.eps = float(eps)


class LogLinear(_EndsAtEps):
    """``alpha(t) = 1 - (1 - eps) t`` (MDLM's log-linear noise); ``alpha(1) = eps``."""

    def _Lambda(self, t: Tensor) -> Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def _beta(self, t: Tensor) -> Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        return -torch.expm1(-u) / (1 - self.eps)


class Linear(Schedule):
    """Exit rate linear in time: ``beta(t) = b0 + (b1 - b0) t``, so
    ``Lambda(t) = b0 t + (b1 - b0) t^2 / 2`` (the DDPM-style linear schedule)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 13.0):
        if beta_min < 0 or beta_max < 0 or beta_min + beta_max == 0:
            raise ValueError("Linear needs beta_min, beta_max >= 0, not both zero")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def _Lambda(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        a = 0.5 * (self.beta_max - self.beta_min)
        b = self.beta_min
        if a == 0:
            return u / b
        # Stable root of a t^2 + b t - u = 0 with t >= 0.
        return 2 * u / (b + torch.sqrt(b * b + 4 * a * u))


class Cosine(_EndsAtEps):
    """``alpha(t) = eps + (1 - eps) cos(pi t / 2)``; ``alpha(1) = eps``."""

    def _Lambda(self, t: Tensor) -> Tensor:
        # 1 - cos(x) = 2 sin^2(x / 2), kept exact near t = 0.
        return -torch.log1p(-(1 - self.eps) * 2 * torch.sin(0.25 * math.pi * t) ** 2)

    def _beta(self, t: Tensor) -> Tensor:
        c = torch.cos(0.5 * math.pi * t)
        s = torch.sin(0.5 * math.pi * t)
        return (1 - self.eps) * 0.5 * math.pi * s / (self.eps + (1 - self.eps) * c)

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        half_gap = (-torch.expm1(-u) / (2 * (1 - self.eps))).clamp(0.0, 1.0)
        return torch.arcsin(torch.sqrt(half_gap)) * 4 / math.pi


class Exponential(Schedule):
    """``alpha(t) = exp(-c t)``: constant exit rate ``c``."""

    def __init__(self, c: float = 7.0):
        if c <= 0:
            raise ValueError(f"Exponential rate c must be positive, got {c}")
        self.c = float(c)

    def _Lambda(self, t: Tensor) -> Tensor:
        return self.c * t

    def _beta(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.c)

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        return u / self.c


class Geometric(Schedule):
    """SEDD's geometric noise shifted to start at zero:
    ``Lambda(t) = s_min^(1-t) s_max^t - s_min``."""

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError("Geometric needs 0 < sigma_min < sigma_max")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def _Lambda(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t - self.sigma_min

    def _beta(self, t: Tensor) -> Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t * math.log(self.sigma_max / self.sigma_min)

    def _Lambda_inv(self, u: Tensor) -> Tensor:
        return torch.log1p(u / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")
SCHEDULES.register("loglinear", LogLinear)
SCHEDULES.register("linear", Linear)
SCHEDULES.register("cosine", Cosine)
SCHEDULES.register("exponential", Exponential)
SCHEDULES.register("geometric", Geometric)
