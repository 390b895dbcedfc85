"""The paper's semantic-informed kernel (SIK): jumps to semantic neighbours.

``F_t = (1 - w(t)) K_t + w(t) U`` where ``U`` is the uniform kernel over all ``m``
tokens (the "teleport", with weight ``w``, the paper's ``lambda(t)``) and ``K_t`` moves a
token ``i`` to one of its ``k`` nearest neighbours ``j`` in embedding space with
probability proportional to ``A_ij ** (alpha(t) ** b)`` (``docs/math.md`` section 3):

- affinity ``A_ij = exp(-D_ij / (eps s_i s_j))``, ``D`` the squared Euclidean
  (``gaussian``) or cosine (``cosine``) distance, ``s_i = sqrt(D_i,(r))`` the
  local bandwidth from the ``r``-th neighbour (``bandwidth_k=7``), or a fixed
  ``s_i = bandwidth``;
- optional degree normalisation ``A_ij / (deg_i deg_j) ** gamma``;
- tempering exponent ``alpha(t) ** b``: neighbour choice flattens as noise grows;
- teleport weight, a sigmoid normalised to run from ``lambda_min`` at ``t = 0`` to
  1 at ``t = 1``: ``w(t) = lambda_min + (1 - lambda_min) (S(t) - S(0)) /
  (S(1) - S(0))`` with ``S(t) = sigmoid(slope (t - midpoint))``.

At the paper's settings the neighbour choice is nearly deterministic (``eps = 0.01`` with a local
bandwidth: a median of about one effective neighbour, :meth:`TemperedKNN.effective_neighbours`)
and the sigmoid teleport destroys almost all information after ``t = 0.6``. Two settings spread
the information loss over ``t`` instead: ``teleport="schedule"`` ties the teleport weight to the
noise level, ``w(t) = lambda_min + (1 - lambda_min) (1 - alpha(t)) / (1 - alpha(1))``, and
``neighbours=N`` sets ``eps`` so that the median token has ``N`` effective neighbours
(:func:`calibrate_eps`).

The MiniLM instance on the WordPiece vocabulary is built by :func:`gdds.minilm.minilm_kernel`
(it needs the data layer's embeddings).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..categorical import inverse_cdf
from ..schedules import LogLinear, Schedule
from .absorbing import Absorbing
from .base import FLUSH, Arrivals, Kernel, SparseColumns, check_vectors
from .knn import METRICS, cached_knn_graph, knn_graph
from .mask import Mask
from .mixture import Mixture
from .uniform import Uniform

TELEPORTS = ("sigmoid", "schedule")  # the teleport weight's curve (module docstring)


DEFAULT_K = 64  # neighbours per token (the paper's)
DEFAULT_BANDWIDTH_K = 7  # the Gaussian bandwidth is the distance to this neighbour
DEFAULT_B = 0.0  # tempering: the reference's configuration (docs/library.md; 0.2 before issue 23)
DENSE_PRODUCTS = 1024  # up to this vocabulary the frozen kNN matrix is multiplied as a dense one
VALUES_BYTES = 2**28  # memory for the edge values of recent frozen times (TemperedKNN._edge_values)

class TemperedKNN(Kernel):
    """Jumps along a fixed kNN graph with log-affinities ``log_affinity [m, k]``,
    tempered by the exponent ``alpha(t) ** b`` of ``schedule``."""

    def __init__(self, neighbours: Tensor, log_affinity: Tensor, schedule: Schedule, b: float = DEFAULT_B):
        if neighbours.shape != log_affinity.shape or neighbours.dim() != 2:
            raise ValueError("neighbours and log_affinity must both be [m, k]")
        self.m, _k = neighbours.shape
        if neighbours.min() < 0 or neighbours.max() >= self.m:
            raise ValueError(f"neighbour ids must lie in [0, {self.m})")
        if torch.isnan(log_affinity).any():
            raise ValueError("log_affinity has NaN entries")
        self.neighbours = neighbours.long()
        self.log_affinity = log_affinity.to(torch.float32)
        self.schedule = schedule
        self.b = float(b)
        self.time_dependent = self.b != 0.0
        self.float32_apply = self.m > DENSE_PRODUCTS  # (float32 pays for sparse products only: operators.py)
        self._edges: SparseColumns | None = None  # built on first apply / apply_T
        self._cache: dict[tuple[bool, torch.dtype], tuple[float, Tensor]] = {}  # -> (frozen time, CSR matrix)
        self._values: dict[tuple[float, torch.dtype], Tensor] = {}  # recent edge values, oldest first
        self._dense: tuple[float, Tensor] | None = None  # (frozen time, dense matrix): ODE solvers ask often

    def exponent(self, t: Tensor) -> Tensor:
        """Tempering exponent ``alpha(t) ** b = exp(-b Lambda(t))``."""
        return torch.exp(-self.b * self.schedule._Lambda(t))

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        logits = self.log_affinity[x]
        if self.time_dependent:
            if t is None:
                raise ValueError("a time-dependent kernel needs the jump times t")
            logits = logits * self.exponent(t).to(logits.dtype).unsqueeze(1)
        # Rows of log_affinity have max 0, so the weights lie in (0, 1] and sum to >= 1.
        # Clamping at -80 keeps exp() out of (slow) subnormals; it moves each
        # probability by < 2e-35, far below float32 resolution of the row sum.
        choice = inverse_cdf(logits.clamp_min_(-80.0).exp_(), generator)
        return self.neighbours.view(-1)[x * self.neighbours.shape[1] + choice]

    def effective_neighbours(self, t: float = 0.0) -> Tensor:
        """``exp(entropy)`` of each token's neighbour distribution at ``t`` (``[m]``): 1 for a
        deterministic nearest-neighbour map, ``k`` for a uniform choice among the ``k``."""
        p = self.probs(t)
        return torch.exp(-(p * p.clamp_min(1e-300).log()).sum(1))

    def probs(self, t: float) -> Tensor:
        """Neighbour probabilities ``[m, k]`` (float64) of the frozen kernel at ``t``."""
        a = self.exponent(torch.tensor(float(t), dtype=torch.float64)) if self.time_dependent else 1.0
        return torch.softmax(self.log_affinity.to(torch.float64) * a, dim=1)

    def _graph(self) -> SparseColumns:
        """The edges ``y -> neighbours[y, j]`` (edge ``y k + j``), built once."""
        if self._edges is None:
            src = torch.arange(self.m, device=self.device).repeat_interleave(self.neighbours.shape[1])
            self._edges = SparseColumns(src, self.neighbours.reshape(-1), self.m)
        return self._edges

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        """The neighbours ``y`` that jump onto each ``x`` with their probabilities at ``t``. Each
        source's tempered softmax is normalised once per distinct (time, source) pair, ``O(k)``
        each."""
        pos, edge = self._graph().incoming(x)
        k = self.neighbours.shape[1]
        src = edge // k
        times, time_index = torch.unique(t.to(torch.float64), return_inverse=True)
        a = self.exponent(times) if self.time_dependent else torch.ones_like(times)
        pairs, pair = torch.unique(time_index[pos] * self.m + src, return_inverse=True)
        rows = self.log_affinity[pairs % self.m].to(torch.float64) * a[pairs // self.m][:, None]  # [U, k]
        log_norm = torch.logsumexp(rows, dim=1)[pair]
        logit = self.log_affinity.reshape(-1)[edge].to(torch.float64) * a[time_index[pos]]
        return Arrivals(torch.zeros(x.numel(), dtype=torch.float64, device=x.device), pos, src,
                        (logit - log_norm).exp())

    def dense(self, t: float = 0.0) -> Tensor:
        self._check_dense_size()
        key = float(t) if self.time_dependent else 0.0
        if self._dense is None or self._dense[0] != key:
            F = torch.zeros(self.m, self.m, dtype=torch.float64, device=self.device)
            F[self.neighbours, torch.arange(self.m, device=self.device)[:, None]] = self.probs(key)
            self._dense = (key, F)
        return self._dense[1].clone()

    def _matrix(self, t: float, transpose: bool, dtype: torch.dtype) -> Tensor:
        """The frozen ``F_t`` (or ``F_t^T``) in ``dtype``, as CSR (dense up to ``DENSE_PRODUCTS`` tokens);
        one is kept per direction and dtype, its entries refilled in place for a new time."""
        key = float(t) if self.time_dependent else 0.0
        cached = self._cache.get((transpose, dtype))
        if cached is None or cached[0] != key:
            values = self._edge_values(key, dtype)
            if self.m <= DENSE_PRODUCTS:  # a dense product is faster than a sparse one at this size
                F = self._graph().matrix(values, transpose, dtype).to_dense()
            elif cached is None:
                F = self._graph().matrix(values, transpose, dtype)
            else:
                F = self._graph().refill(cached[1], values, transpose)
            cached = self._cache[(transpose, dtype)] = (key, F)
        return cached[1]

    def _edge_values(self, key: float, dtype: torch.dtype) -> Tensor:
        """``probs(key)`` flattened, in ``dtype`` (float32: computed in float32, entries below ``FLUSH``
        set to 0, since subnormal arithmetic is 100x slower); the last few are remembered, so that the
        two directions of a frozen piece share them."""
        hit = self._values.pop((key, dtype), None)
        if hit is None:
            if dtype == torch.float64:
                hit = self.probs(key).reshape(-1)
            else:
                a = self.exponent(torch.tensor(key, dtype=torch.float64)) if self.time_dependent else 1.0
                hit = torch.softmax(self.log_affinity * float(a), dim=1).reshape(-1).to(dtype)
                hit = hit.masked_fill_(hit < FLUSH, 0.0)
        self._values[(key, dtype)] = hit
        while len(self._values) > max(2, VALUES_BYTES // max(1, hit.numel() * hit.element_size())):
            self._values.pop(next(iter(self._values)))
        return hit

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m, float32=True).contiguous()
        return self._matrix(t, False, v.dtype) @ v

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        v = check_vectors(v, self.m, float32=True).contiguous()
        return self._matrix(t, True, v.dtype) @ v

    def to(self, device: torch.device | str) -> TemperedKNN:
        self._cache, self._dense, self._values = {}, None, {}
        return super().to(device)


def log_affinity(
    neighbours: Tensor,
    distances: Tensor,
    eps: float = 0.01,
    bandwidth_k: int = 7,
    bandwidth: float | None = None,
    gamma: float = 0.0,
) -> Tensor:
    """``log A`` for a kNN graph (module docstring), shifted so each row's max is 0."""
    D = distances.to(torch.float64)
    if bandwidth is not None:
        if bandwidth <= 0:
            raise ValueError(f"a fixed bandwidth must be positive, got {bandwidth}")
        logA = -D / (eps * bandwidth**2)
    else:
        if not 1 <= bandwidth_k <= D.shape[1]:
            raise ValueError(f"bandwidth_k must be in [1, k] = [1, {D.shape[1]}], got {bandwidth_k}")
        s = D[:, bandwidth_k - 1].sqrt().clamp_min(1e-12)
        logA = -D / (eps * s[:, None] * s[neighbours])
    if gamma:
        log_deg = torch.logsumexp(logA, dim=1)
        logA = logA - gamma * (log_deg[:, None] + log_deg[neighbours])
    return (logA - logA.max(dim=1, keepdim=True).values).to(torch.float32)


def calibrate_eps(neighbours: Tensor, distances: Tensor, target: float, bandwidth_k: int = 7,
                  bandwidth: float | None = None, gamma: float = 0.0) -> float:
    """The ``eps`` of :func:`log_affinity` at which the median token has ``target`` effective
    neighbours (``exp`` of the entropy of its neighbour distribution), by bisection in
    ``log eps`` (the count grows with ``eps``)."""
    if not 1 < target < neighbours.shape[1]:
        raise ValueError(f"the target number of effective neighbours must lie in (1, k) = (1, {neighbours.shape[1]})")

    def median_count(log_eps: float) -> float:
        p = torch.softmax(log_affinity(neighbours, distances, math.exp(log_eps), bandwidth_k, bandwidth,
                                       gamma).double(), dim=1)
        return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum(1)).median())

    lo, hi = math.log(1e-6), math.log(1e6)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if median_count(mid) < target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _number(name: str, value: object, condition: bool, takes: str) -> None:
    """Refuse ``value`` of the setting ``name`` unless it is a real number (not a bool) and ``condition``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not condition:
        raise ValueError(f"{name} must be {takes}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SemanticSettings:
    """What defines the semantic kernel (module docstring), checked where it is made. Defaults are the
    settings of the paper's reference configuration (``configs/forward_process/sik_knn.yaml`` of its code;
    the paper's text states none of them): ``k=64`` neighbours, Gaussian ``metric``, local bandwidth from
    the ``bandwidth_k``-th = 7th neighbour (or a fixed ``bandwidth``), ``eps=0.01``, degree normalisation
    ``gamma=0``, no tempering (``b=0``: the kNN step does not depend on time, so the transition operators
    are one exact Poisson series; its code falls back to 0.2 where a configuration omits it, gdds' default
    before issue 23), teleport ``lambda_min=0.01``, ``slope`` 10, ``midpoint`` 0.6.

    ``teleport`` is ``"sigmoid"`` (the paper's) or ``"schedule"`` (tied to the noise level);
    ``neighbours``, when given, replaces ``eps`` by the value that gives the median token that many
    effective neighbours. ``teleport_to="mask"`` makes it the semantic-then-absorb kernel: the teleport
    lands on the mask, which never leaves (:class:`gdds.kernels.absorbing.Absorbing`), so neighbour jumps
    come early and masking at the end. A configuration's ``process.kernel_args`` are these fields."""

    k: int = DEFAULT_K
    metric: str = "gaussian"
    eps: float = 0.01
    bandwidth_k: int = DEFAULT_BANDWIDTH_K
    bandwidth: float | None = None
    gamma: float = 0.0
    b: float = DEFAULT_B
    lambda_min: float = 0.01
    slope: float = 10.0
    midpoint: float = 0.6
    teleport: str = "sigmoid"
    neighbours: float | None = None
    teleport_to: str = "uniform"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be in [1, m - 1] (neighbours per token, m the tokens a jump can reach), "
                             f"got {self.k!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        _number("eps", self.eps, self.eps > 0, "positive (the affinity's temperature)")
        if self.bandwidth is not None:
            _number("bandwidth", self.bandwidth, self.bandwidth > 0, "positive (a fixed bandwidth), or None")
        elif isinstance(self.bandwidth_k, bool) or not isinstance(self.bandwidth_k, int) \
                or not 1 <= self.bandwidth_k <= self.k:
            raise ValueError(f"bandwidth_k must be in [1, k] = [1, {self.k}], got {self.bandwidth_k!r}")
        for name in ("gamma", "b", "midpoint"):
            _number(name, getattr(self, name), math.isfinite(getattr(self, name)), "a finite number")
        _number("lambda_min", self.lambda_min, 0 <= self.lambda_min <= 1, "in [0, 1]")
        _number("slope", self.slope, math.isfinite(self.slope) and self.slope != 0, "a finite non-zero number")
        if self.teleport not in TELEPORTS:
            raise ValueError(f"teleport must be one of {', '.join(TELEPORTS)}, got {self.teleport!r}")
        if self.neighbours is not None:
            _number("neighbours", self.neighbours, 1 < self.neighbours < self.k,
                    f"in (1, k) = (1, {self.k}) (the median token's effective neighbours), or None")
        if self.teleport_to not in ("uniform", "mask"):
            raise ValueError(f"teleport_to must be 'uniform' or 'mask', got {self.teleport_to!r}")

    def record(self, eps: float, mask_id: int | None) -> dict[str, Any]:
        """The settings as a kernel built with them names them (its ``repr``, which a run's identity
        holds): ``eps`` as used (calibrated when ``neighbours`` is given), and the newer fields only
        where they differ from the paper's, so that a kernel keeps the identity it had before they existed."""
        out = dict(k=self.k, metric=self.metric, eps=eps, bandwidth_k=self.bandwidth_k, bandwidth=self.bandwidth,
                   gamma=self.gamma, b=self.b, lambda_min=self.lambda_min, slope=self.slope, midpoint=self.midpoint)
        if self.teleport != "sigmoid" or self.neighbours is not None:
            out.update(teleport=self.teleport, neighbours=self.neighbours)
        if self.teleport_to == "mask":
            out.update(teleport_to=self.teleport_to, mask_id=mask_id)
        return out


class SemanticKNN(Mixture):
    """The semantic-informed kernel with ``settings`` (:class:`SemanticSettings`, default the paper's)
    on ``embeddings [m, d]``. ``schedule`` provides ``alpha(t)`` for the tempering: pass the process's
    schedule (default ``LogLinear(1e-3)``). ``mask_id`` (an excluded id) is the mask the teleport lands
    on, given exactly when ``settings.teleport_to == "mask"``.

    The kNN graph is cached under ``cache_dir`` (default :func:`gdds.files.cache_dir`)
    keyed by a hash of the embeddings, ``k``, the metric and ``exclude``;
    ``cache=False`` always rebuilds. Token ids in ``exclude`` (e.g. special tokens)
    are never a jump destination, neither as a neighbour nor by teleport.
    """

    def __init__(
        self,
        embeddings: Tensor,
        settings: SemanticSettings | None = None,
        *,
        mask_id: int | None = None,
        schedule: Schedule | None = None,
        exclude: Sequence[int] | Tensor | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        progress: bool = True,
    ):
        s = SemanticSettings() if settings is None else settings
        if not isinstance(s, SemanticSettings):
            raise TypeError(f"settings must be a SemanticSettings, got {type(s).__name__}")
        if (s.teleport_to == "mask") != (mask_id is not None):
            raise ValueError(f"teleport_to={s.teleport_to!r} needs the mask_id exactly when it is 'mask' (the "
                             f"teleport's destination); got mask_id={mask_id!r}")
        if cache:
            nbr, dist = cached_knn_graph(embeddings, s.k, s.metric, cache_dir, progress, exclude)
        else:
            nbr, dist = knn_graph(embeddings, s.k, s.metric, progress, exclude)
        eps = s.eps if s.neighbours is None else calibrate_eps(nbr, dist, s.neighbours, s.bandwidth_k, s.bandwidth,
                                                                s.gamma)
        self.settings, self.eps, self.mask_id = s, eps, mask_id
        self.lambda_min, self.slope, self.midpoint = float(s.lambda_min), float(s.slope), float(s.midpoint)
        self.teleport_curve = s.teleport
        self.schedule = schedule if schedule is not None else LogLinear(1e-3)
        logA = log_affinity(nbr, dist, eps, s.bandwidth_k, s.bandwidth, s.gamma)
        self.knn = TemperedKNN(nbr, logA, self.schedule, s.b)
        uniform = Uniform(nbr.shape[0], exclude)
        self.n_excluded = 0 if uniform.support is None else uniform.m - uniform.support.numel()
        if mask_id is None:
            super().__init__([self.knn, uniform], [self._stay, self.teleport])
        else:
            if uniform.support is None or mask_id in uniform.support.tolist():
                raise ValueError(f"the mask {mask_id} must be among the excluded ids (never a neighbour)")
            super().__init__([Absorbing(self.knn, mask_id), Mask(nbr.shape[0], mask_id)], [self._stay, self.teleport])

    def teleport(self, t: Tensor) -> Tensor:
        """Teleport weight ``w(t)``: ``lambda_min`` at ``t=0``, exactly 1 at ``t=1``."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.teleport_curve == "schedule":
            # (unchecked Lambda: called on jump times inside the noising loop, where a check would
            # wait on a GPU; t is validated where it enters the process)
            noise = -torch.expm1(-self.schedule._Lambda(t)) / -math.expm1(-self.schedule.Lambda_max)
            return self.lambda_min + (1 - self.lambda_min) * noise
        s0 = 1 / (1 + math.exp(self.slope * self.midpoint))
        s1 = 1 / (1 + math.exp(-self.slope * (1 - self.midpoint)))
        s = torch.sigmoid(self.slope * (t - self.midpoint))
        return self.lambda_min + (1 - self.lambda_min) * (s - s0) / (s1 - s0)

    def _stay(self, t: Tensor) -> Tensor:
        return 1 - self.teleport(t)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.settings.record(self.eps, self.mask_id).items())
        return f"SemanticKNN(m={self.m}, {opts}, excluded={self.n_excluded}, schedule={self.schedule!r})"
