"""The forward noising process: exact samples of ``q_t(.|x0)`` by uniformization
(paper section 3.2, Algorithm 1 and its parallel form, Algorithm 3; ``docs/math.md``
section 4) and exact marginals and transition operators.

Per position: ``N ~ Poisson(Lambda(t))`` jumps at times ``T_k = Lambda^{-1}(U_(k))``,
``U_(1) < ... < U_(N)`` the order statistics of ``N`` uniforms on ``[0, Lambda(t)]``;
jump ``k`` moves the token with ``F_{T_k}``. All ``B*L`` positions are processed
at once: positions are sorted by ``N`` (descending), so the positions still
jumping at step ``k`` are a prefix and the only Python loop is over ``k``.

Column-constant kernels (mask, uniform, hybrids) use the same law in closed form:
only the last jump matters, so ``x_t = x0`` when ``E >= Lambda(t)`` (``E ~ Exp(1)``,
probability ``alpha(t)``) and otherwise ``x_t ~ pi`` at the last jump time
``Lambda^{-1}(Lambda(t) - E)``.

Noising has its own verb, :meth:`ForwardProcess.noise` (``sample`` is an alias kept for
the public contract); generation is :func:`gdds.sample`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .categorical import one_hot_columns
from .devices import check_generator
from .kernels.base import Arrivals, Kernel, TeleportSplit, require_column_constant
from .kernels.mask import Mask
from .operators import OperatorSettings, closed_form, series_depth, transition
from .power_sums import Products
from .schedules import Schedule, as_time
from .token_powers import TokenPowers, check_counts

DEFAULT_POWER_CACHE = 2 * 2**30  # bytes of kept token powers per process (ForwardProcess, gdds.token_powers)


@dataclass
class NoisingInfo:
    """What the uniformization sampler did, per position (shapes ``[B, L]`` / ``[B, L, K]``).

    ``jumps``: number of jumps in ``(0, t]``. ``times``: jump times in ``(0, t]``
    (or ``(0, 1]`` with ``full_path``), NaN-padded to ``K``. ``states``: the token
    after each jump, ``-1``-padded (``full_path=True`` only, else ``None``).
    ``path_jumps``: jumps in ``(0, 1]`` (``full_path`` only).
    """

    jumps: Tensor
    times: Tensor
    states: Tensor | None = None
    path_jumps: Tensor | None = None


class ForwardProcess:
    """``Q_t = beta(t) (F_t - I)`` from a schedule and a jump kernel."""

    def __init__(self, schedule: Schedule, kernel: Kernel, power_cache: int = DEFAULT_POWER_CACHE):
        """``power_cache``: bytes of memory that the forward likelihood of a time-homogeneous teleport
        split (the semantic kernel at ``b = 0``) may fill with the powers of ``K^T`` of the tokens it
        has met (:mod:`gdds.token_powers`; 0: none kept, every call multiplies again)."""
        if isinstance(power_cache, bool) or not isinstance(power_cache, int) or power_cache < 0:
            raise ValueError(f"power_cache is a number of bytes >= 0 (0: keep no powers); got {power_cache!r}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a gdds Schedule, got {type(schedule).__name__}")
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a gdds kernel, got {type(kernel).__name__}")
        bound = getattr(kernel, "schedule", None)
        if bound is not None and repr(bound) != repr(schedule):
            warnings.warn(
                f"the kernel is tempered with {bound!r} but the process uses {schedule!r}; "
                "pass the same schedule to both unless this is intended",
                stacklevel=2,
            )
        self.schedule = schedule
        self.kernel = kernel
        self.m = kernel.m
        self.power_cache = power_cache
        self.power_counts: Tensor | None = None  # token frequencies that decide which powers are kept
        self._powers: dict[Products, TokenPowers] = {}

    def to(self, device: str | torch.device) -> ForwardProcess:
        """Move the kernel's tensors to ``device`` (in place) and return the process."""
        self.kernel.to(device)
        self._powers.clear()
        return self

    def keep_frequent_powers(self, counts: Tensor) -> ForwardProcess:
        """Spend :attr:`power_cache` on the powers of the most frequent tokens by ``counts [m]``, each kept
        when first met, instead of on the first tokens met; returns the process. The forward likelihood asks
        for the rows of the noised tokens ``x_t``, mostly clean tokens for a kernel that jumps rarely, so a
        run passes its training split's unigram counts (``docs/performance.md``, "Kept token powers")."""
        self.power_counts = check_counts(counts, self.m)
        self._powers.clear()
        return self

    def token_powers(self, split: TeleportSplit, settings: OperatorSettings) -> TokenPowers | None:
        """The powers of ``K^T`` kept for single tokens under ``settings``' products (one store per
        precision, made on first use, as deep as the series at ``t = 1``), or ``None`` when
        :attr:`power_cache` is 0 or ``split`` is not homogeneous."""
        if self.power_cache == 0 or not split.homogeneous:
            return None
        how = Products(settings.mixed and split.inner.float32_apply)
        if how not in self._powers:
            self._powers[how] = TokenPowers(split.inner.apply_T, self.m, series_depth(split, self.schedule, settings),
                                            how, self.power_cache, self.device, self.power_counts)
        return self._powers[how]

    @property
    def device(self) -> torch.device:
        """Where the process works (its kernel's tensors): inputs are moved here, generators must be
        here (:mod:`gdds.devices`)."""
        return self.kernel.device

    @property
    def column_constant(self) -> bool:
        """Whether the kernel is ``F_t = pi_t 1^T`` (mask, uniform, hybrids): closed forms apply."""
        return self.kernel.column_constant

    @property
    def absorbing(self) -> bool:
        """Whether every jump lands on one token that never leaves (the mask kernel,
        :attr:`gdds.kernels.Kernel.absorbing`): only jumped positions need denoising."""
        return self.kernel.absorbing

    @property
    def mask_id(self) -> int | None:
        """The mask token of the mask kernel (:class:`gdds.kernels.Mask`), ``None`` under any other kernel."""
        return self.kernel.mask_id if isinstance(self.kernel, Mask) else None

    def pi(self, t: float) -> Tensor:
        """Where a jump at time ``t`` lands, whatever the token: the column ``pi_t`` of a
        column-constant kernel (``[m]`` float64; ``TypeError`` for other kernels)."""
        return self.kernel.pi(t)

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        """One jump's law from each token of ``x [n]`` at the times ``t [n]``
        (:meth:`gdds.kernels.Kernel.arrivals`: a shared part and sparse extra arrivals)."""
        return self.kernel.arrivals(x, t)

    def require_column_constant(self, needs: str, instead: str) -> None:
        """``ValueError`` unless the kernel is column-constant (see
        :func:`gdds.kernels.require_column_constant`)."""
        require_column_constant(self.kernel, needs, instead)

    def closed_transition(self, s: float, t: float) -> tuple[float, Tensor]:
        """``P_{s->t} = keep I + c 1^T`` of a column-constant kernel: ``(keep, c [m])`` on the
        kernel's device (:func:`gdds.operators.closed_form`)."""
        return closed_form(self.kernel, self.schedule, s, t)

    def _check(self, x0: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x0, Tensor) or x0.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"x0 must be an integer tensor of token ids, got {getattr(x0, 'dtype', type(x0))}")
        if x0.dim() != 2:
            raise ValueError(f"x0 must have shape [B, L]; got {tuple(x0.shape)}")
        if bool(((x0 < 0) | (x0 >= self.m)).any()):  # one host synchronisation on a GPU
            raise ValueError(
                f"token ids must lie in [0, {self.m}); got values in [{x0.min().item()}, {x0.max().item()}]"
            )
        x0 = x0.to(self.device)
        tt = as_time(t).to(x0.device)
        if tt.dim() == 0:
            tt = tt.expand(x0.shape[0])
        if tt.shape != (x0.shape[0],):
            raise ValueError(f"t must be a scalar or have shape [B] = [{x0.shape[0]}]; got {tuple(tt.shape)}")
        return x0.long(), tt

    def noise(
        self,
        x0: Tensor,
        t: float | Tensor,
        return_info: bool = False,
        full_path: bool = False,
        method: str = "auto",
        generator: torch.Generator | None = None,
    ) -> Tensor | tuple[Tensor, NoisingInfo]:
        """Exact sample ``x_t ~ q_t(.|x0)`` for ``x0 [B, L]`` and ``t`` scalar or ``[B]``.

        ``return_info`` adds a :class:`NoisingInfo`; ``full_path`` keeps simulating to
        ``t = 1`` and records every jump (for the Campbell estimator), ``x_t`` being
        the state at ``t``. ``method``: ``"auto"`` (closed form for column-constant
        kernels when no info is asked) or ``"uniformization"`` (always the jump loop).
        Pass a seeded ``generator`` for reproducible draws.
        """
        if method not in ("auto", "uniformization"):
            raise ValueError(f"method must be 'auto' or 'uniformization'; got {method!r}")
        x0, tt = self._check(x0, t)
        check_generator(generator, x0.device)
        B, L = x0.shape
        Lambda_t = self.schedule._Lambda(tt).repeat_interleave(L)
        if method == "auto" and self.kernel.column_constant and not (return_info or full_path):
            return self._closed_form(x0.reshape(-1), Lambda_t, generator).reshape(B, L)
        xt, info = self._uniformize(x0.reshape(-1), Lambda_t, return_info or full_path, full_path, generator)
        xt = xt.reshape(B, L)
        if not (return_info or full_path):
            return xt
        shaped = NoisingInfo(*(None if f is None else f.reshape(B, L, *f.shape[1:]) for f in info))
        return xt, shaped

    sample = noise  # the same method under the name of the public contract (README, quick start)

    def _closed_form(self, x0: Tensor, Lambda_t: Tensor, generator: torch.Generator | None) -> Tensor:
        back = torch.empty_like(Lambda_t).exponential_(generator=generator)
        jumped = back < Lambda_t
        times = None
        if self.kernel.time_dependent:
            times = self.schedule._Lambda_inv((Lambda_t - back).clamp_min(0.0))
        return torch.where(jumped, self.kernel.jump(x0, times, generator), x0)

    def _uniformize(
        self, x0: Tensor, Lambda_t: Tensor, record: bool, full_path: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, tuple]:
        horizon = torch.full_like(Lambda_t, self.schedule.Lambda_max) if full_path else Lambda_t
        counts = torch.poisson(horizon, generator=generator).long()
        order = torch.argsort(counts, descending=True, stable=True)
        n_sorted = counts[order]
        # Positions with at least k jumps, for every k: the loop's one host synchronisation.
        active = torch.bincount(counts, minlength=1).flip(0).cumsum(0).flip(0).tolist() if counts.numel() else [0]
        kmax = len(active) - 1
        cur = x0[order].clone()
        xt = cur.clone() if full_path else cur
        Lambda_sorted, horizon_sorted = Lambda_t[order], horizon[order]
        need_times = self.kernel.time_dependent or record
        device = Lambda_t.device
        frac = torch.zeros(active[1] if kmax else 0, dtype=torch.float64, device=device)
        times = torch.full((x0.numel(), kmax), float("nan"), dtype=torch.float64, device=device) if record else None
        states = torch.full((x0.numel(), kmax), -1, dtype=torch.long, device=device) if full_path else None
        jumps = torch.zeros_like(counts) if full_path else None
        for k in range(1, kmax + 1):
            c = active[k]
            tau = None
            if need_times:
                # Next order statistic of the remaining n - k + 1 uniforms on (frac, 1].
                remaining = (n_sorted[:c] - (k - 1)).to(torch.float64)
                w = torch.rand(c, dtype=torch.float64, device=device, generator=generator)
                frac = 1 - (1 - frac[:c]) * w.pow(1 / remaining)
                u = frac * horizon_sorted[:c]
                tau = self.schedule._Lambda_inv(u.clamp_max(self.schedule.Lambda_max))
            cur[:c] = self.kernel.jump(cur[:c], tau, generator)
            if full_path:
                states[:c, k - 1] = cur[:c]
                before_t = u <= Lambda_sorted[:c]
                xt[:c] = torch.where(before_t, cur[:c], xt[:c])
                jumps[:c] += before_t
            if record:
                times[:c, k - 1] = tau
        out = torch.empty_like(x0)
        out[order] = xt
        if not record:
            return out, ()
        inv = torch.empty_like(order)
        inv[order] = torch.arange(order.numel(), device=order.device)
        if full_path:
            return out, (jumps[inv], times[inv], states[inv], counts)
        return out, (counts, times[inv])

    def marginal(self, x0: Tensor, t: float | Tensor, settings: OperatorSettings | None = None) -> Tensor:
        """Exact ``q_t(.|x0)`` as ``[B, L, m]`` float64, the operators applied as ``settings`` say
        (:class:`gdds.OperatorSettings`; the default is exact up to solver round-off or the stated tail)."""
        x0, tt = self._check(x0, t)
        B, L = x0.shape
        out = torch.empty(B, L, self.m, dtype=torch.float64, device=x0.device)
        for b in range(B):
            tokens, where = torch.unique(x0[b], return_inverse=True)
            cols = self.transition(one_hot_columns(tokens, self.m), 0.0, float(tt[b]), settings=settings)
            out[b] = cols.T[where]
        return out

    def transition(self, v: Tensor, s: float, t: float, transpose: bool = False,
                   settings: OperatorSettings | None = None, *, return_bound: bool = False
                   ) -> Tensor | tuple[Tensor, float]:
        """``P_{s->t} v`` or ``P_{s->t}^T v`` for ``v [m, n]``; see :func:`gdds.operators.transition`."""
        return transition(self.kernel, self.schedule, v, s, t, transpose, settings, return_bound=return_bound)

    def __repr__(self) -> str:
        return f"ForwardProcess({self.schedule!r}, {self.kernel!r})"
