"""The jump-kernel interface (``docs/math.md`` section 3; paper section 3.2, Eq. 7).

A kernel is the column-stochastic matrix ``F_t`` in ``Q_t = beta(t) (F_t - I)``:
column ``x`` is the law of the destination of a jump from ``x`` at time ``t``.
The interface is deliberately small (after SEDD's ``graph_lib``):

- ``jump(x, t)``: one jump for each current token ``x[i]`` at time ``t[i]``;
- ``apply(v, t)`` / ``apply_T(v, t)``: ``F_t v`` and ``F_t^T v`` for a batch of
  vectors ``v`` of shape ``[m, n]`` (float64, never a dense ``m x m`` matrix for
  large ``m``);
- ``stationary(t)``: the limiting distribution of the frozen kernel ``F_t``;
- ``arrivals(x, t)``: the rows ``F_t[x, .]`` (where a jump that lands on ``x`` came from),
  as a constant plus sparse entries.

Kernels whose columns are all equal (``F_t = pi_t 1^T``: mask, uniform, their
hybrids) set ``column_constant`` and implement ``pi(t)``; the process uses it for
closed-form noising and marginals; :func:`require_column_constant` is the one guard for
code that needs that form.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..categorical import one_hot_columns

DENSE_LIMIT = 4096  # largest vocabulary for which a dense m x m matrix may be built
FLUSH = 1e-30  # float32 products drop smaller entries: subnormal arithmetic is 100x slower (operators.Products)


def check_column_stochastic(F: Tensor, tol: float = 1e-6, what: str = "kernel") -> None:
    """Raise ``ValueError`` unless ``F`` (``[m, m]`` or ``[n, m, m]``) is column-stochastic."""
    if F.dim() not in (2, 3) or F.shape[-1] != F.shape[-2]:
        raise ValueError(f"{what} must be a square [m, m] matrix (or a batch [n, m, m]); got shape {tuple(F.shape)}")
    if torch.isnan(F).any():
        raise ValueError(f"{what} has NaN entries")
    if (F < 0).any():
        bad = (F < 0).nonzero()[0].tolist()
        raise ValueError(f"{what} has negative entries (first at index {bad}: {F[tuple(bad)].item():.3g})")
    sums = F.sum(dim=-2)
    err = (sums - 1).abs()
    if (err > tol).any():
        col = int(err.reshape(-1).argmax()) % F.shape[-1]
        raise ValueError(
            f"{what} columns must sum to 1 (column x is the law of the jump from x); "
            f"column {col} sums to {sums.reshape(-1)[err.reshape(-1).argmax()].item():.9g}"
        )


def require_column_constant(kernel: Kernel, needs: str, instead: str) -> None:
    """Raise ``ValueError`` unless ``kernel`` is column-constant (mask, uniform, their hybrids):
    ``needs`` says what requires the closed form, ``instead`` what to use for other kernels."""
    if not kernel.column_constant:
        raise ValueError(f"{needs} needs a column-constant kernel (mask, uniform, hybrid: q_t(.|x0) in closed "
                         f"form); got {kernel!r}: {instead}")


def check_vectors(v: Tensor, m: int, float32: bool = False) -> Tensor:
    """Validate a batch of vectors ``[m, n]`` and return it as float64 (float32 vectors stay float32 when
    ``float32``: a kernel with :attr:`Kernel.float32_apply`)."""
    if v.dim() != 2 or v.shape[0] != m:
        raise ValueError(f"vectors must have shape [m, n] with m = {m}; got {tuple(v.shape)}")
    return v if float32 and v.dtype == torch.float32 else v.to(torch.float64)


def exclusion_mask(m: int, exclude: Sequence[int] | Tensor | None) -> Tensor | None:
    """Boolean ``[m]`` mask of the token ids in ``exclude`` (``None`` when empty)."""
    if exclude is None:
        return None
    ids = torch.as_tensor(exclude, dtype=torch.long).reshape(-1)
    if ids.numel() == 0:
        return None
    if ids.min() < 0 or ids.max() >= m:
        raise ValueError(f"excluded token ids must lie in [0, {m}); got values in [{ids.min()}, {ids.max()}]")
    mask = torch.zeros(m, dtype=torch.bool)
    mask[ids] = True
    return mask


@dataclass
class Arrivals:
    """The rows ``F_t[x_i, .]`` for tokens ``x [n]``: ``F_t[x_i, y] = base[i] + sum of prob[e]
    over the entries e with pos[e] = i and src[e] = y`` (float64 ``base [n]``, ``prob [E]``)."""

    base: Tensor
    pos: Tensor
    src: Tensor
    prob: Tensor

    @staticmethod
    def concat(parts: Sequence[Arrivals], weights: Sequence[Tensor]) -> Arrivals:
        """``sum_c weights[c] * parts[c]`` with per-position weights ``[n]``."""
        return Arrivals(sum(w * p.base for w, p in zip(weights, parts)),
                        torch.cat([p.pos for p in parts]), torch.cat([p.src for p in parts]),
                        torch.cat([w[p.pos] * p.prob for w, p in zip(weights, parts)]))


@dataclass
class TeleportSplit:
    """A kernel written as ``F_t = (1 - w(t)) K_t + w(t) pi_t 1^T`` with teleport weight
    ``w``: ``inner`` is ``K``, ``weight`` maps times ``[n]`` (float64) to ``w [n]``,
    ``column(t)`` is ``pi_t`` (``[m]`` float64), ``column_varies`` whether ``pi_t`` depends on time."""

    inner: Kernel
    weight: Callable[[Tensor], Tensor]
    column: Callable[[float], Tensor]
    column_varies: bool = True

    @property
    def homogeneous(self) -> bool:
        """Whether ``K`` and ``pi`` do not depend on time (only ``w`` does): then every transition is one
        exact Poisson series in ``K`` (:func:`gdds.operators.transposed_from_zero`)."""
        return not (self.inner.time_dependent or self.column_varies)


class Kernel:
    """Base class of jump kernels. See the module docstring for the contract."""

    m: int
    time_dependent: bool = False
    column_constant: bool = False
    absorbing: bool = False  # every jump lands on one token that never leaves (the mask)
    float32_apply: bool = False  # apply / apply_T answer float32 vectors in float32 (mixed-precision operators)

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """One jump from each token of ``x`` (``[n]`` long) at times ``t`` (``[n]`` float64).

        ``t`` may be ``None`` for time-homogeneous kernels.
        """
        raise NotImplementedError

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        """``F_t v`` for ``v`` of shape ``[m, n]`` (pushes distributions one jump forward)."""
        raise NotImplementedError

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        """``F_t^T v`` for ``v`` of shape ``[m, n]`` (expectation of ``v`` after one jump)."""
        raise NotImplementedError

    def pi(self, t: float = 0.0) -> Tensor:
        """The common column ``pi_t`` of a column-constant kernel (``[m]`` float64)."""
        raise TypeError(f"{type(self).__name__} is not column-constant; it has no single column pi_t")

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        """``F_t[x_i, y]`` for every ``y``, for tokens ``x [n]`` at times ``t [n]`` (float64).
        Column-constant kernels: the constant ``pi_t[x]``; others, by default, dense rows
        ``F_t^T e_x`` (``O(n m)``: kernels with sparse columns override this)."""
        base = torch.zeros(x.numel(), dtype=torch.float64, device=x.device)
        pos, src, prob = [], [], []
        for tv in torch.unique(t).tolist():
            idx = (t == tv).nonzero().reshape(-1)
            if self.column_constant:
                base[idx] = self.pi(tv).to(x.device)[x[idx]]
                continue
            rows = self.apply_T(one_hot_columns(x[idx], self.m), tv).T  # [n_t, m]: row i is F_t[x_i, .]
            pos.append(idx.repeat_interleave(self.m))
            src.append(torch.arange(self.m, device=x.device).repeat(idx.numel()))
            prob.append(rows.reshape(-1))
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return Arrivals(base, torch.cat(pos) if pos else empty, torch.cat(src) if src else empty,
                        torch.cat(prob) if prob else empty.double())

    def stationary(self, t: float = 1.0, tol: float = 1e-12, max_iter: int = 100_000) -> Tensor:
        """Limiting distribution of the frozen kernel ``F_t``: the limit of the lazy chain
        ``v <- (v + F_t v) / 2`` started from the uniform law (unique when ``F_t`` is irreducible)."""
        if self.column_constant:
            return self.pi(t)
        v = torch.full((self.m, 1), 1.0 / self.m, dtype=torch.float64, device=self.device)
        for _ in range(max_iter):
            nxt = 0.5 * (v + self.apply(v, t))
            if (nxt - v).abs().sum() < tol:
                return nxt[:, 0]
            v = nxt
        raise RuntimeError(f"stationary distribution did not converge in {max_iter} iterations")

    def teleport_split(self) -> TeleportSplit | None:
        """``F_t = (1 - w(t)) K_t + w(t) pi_t 1^T`` with ``K_t`` not column-constant,
        when the kernel has that form (``None`` otherwise). The transition operators
        then move the rank-one part into closed form (see :mod:`gdds.operators`)."""
        return None

    def dense(self, t: float = 0.0) -> Tensor:
        """The matrix ``F_t`` itself (``[m, m]`` float64); only for ``m <= DENSE_LIMIT``."""
        self._check_dense_size()
        eye = torch.eye(self.m, dtype=torch.float64, device=self.device)
        return self.apply(eye, t)

    def _check_dense_size(self) -> None:
        if self.m > DENSE_LIMIT:
            raise ValueError(f"refusing to build a dense {self.m} x {self.m} kernel (limit {DENSE_LIMIT})")

    def _parts(self):
        for name, value in vars(self).items():
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, (Tensor, Kernel, SparseColumns)):
                    yield name, item

    @property
    def device(self) -> torch.device:
        """Where the kernel works: the device of its last :meth:`to`, else of its tensors (CPU for
        a kernel that holds none)."""
        if "_device" in vars(self):
            return vars(self)["_device"]
        for _, part in self._parts():
            return part.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Kernel:
        """Move the kernel's tensors to ``device`` (in place) and return it."""
        self._device = torch.device(device)
        for name, part in list(self._parts()):
            if isinstance(part, Tensor):
                if getattr(self, name) is not part:
                    raise TypeError(f"{type(self).__name__}.{name}: lists of tensors cannot be moved")
                setattr(self, name, part.to(device))
            else:
                part.to(device)
        return self


class SparseColumns:
    """Sparse storage of a kernel given as edges ``src -> dst`` with per-edge values.

    Builds the two CSR matrices needed by ``apply`` (rows = destinations) and
    ``apply_T`` (rows = sources) for any edge values, reusing the sorting work.
    """

    def __init__(self, src: Tensor, dst: Tensor, m: int):
        self.m = m
        self.src = src.long()
        self.dst = dst.long()
        self.by_src = torch.argsort(self.src * m + self.dst)
        self.by_dst = torch.argsort(self.dst * m + self.src)
        self.src_ptr = self._ptr(self.src)
        self.dst_ptr = self._ptr(self.dst)

    def _ptr(self, rows: Tensor) -> Tensor:
        counts = torch.bincount(rows, minlength=self.m)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def matrix(self, values: Tensor, transpose: bool = False, dtype: torch.dtype = torch.float64) -> Tensor:
        """``F`` (or ``F^T``) as a CSR tensor of ``dtype`` for edge values ``values``."""
        values = values.to(dtype)
        ptr, cols, order = (self.src_ptr, self.dst, self.by_src) if transpose else (self.dst_ptr, self.src, self.by_dst)
        # int32 indices when they fit: the CPU's sparse product converts int64 ones at every call (11% of it)
        index = torch.int32 if max(values.numel(), self.m + 1) < 2**31 else torch.int64
        with warnings.catch_warnings():  # "sparse CSR support is in beta" is noise here
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(ptr.to(index), cols[order].to(index), values[order], (self.m, self.m),
                                           check_invariants=False)

    def refill(self, matrix: Tensor, values: Tensor, transpose: bool = False) -> Tensor:
        """``matrix`` (made by :meth:`matrix` with the same ``transpose``) with its entries replaced, in
        place, by new edge values: no new structure, one gather."""
        torch.index_select(values.to(matrix.dtype), 0, self.by_src if transpose else self.by_dst,
                           out=matrix.values())
        return matrix

    def incoming(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The edges that land on each token of ``x [n]``: ``(pos [E], edge [E])``, the
        position in ``x`` and the edge's index in ``src``/``dst``."""
        starts, ends = self.dst_ptr[x], self.dst_ptr[x + 1]
        counts = ends - starts
        pos = torch.repeat_interleave(torch.arange(x.numel(), device=x.device), counts)
        first = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
        return pos, self.by_dst[first + torch.arange(pos.numel(), device=x.device)]

    def matrices(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """``(F, F^T)`` as float64 CSR tensors for edge values ``values``."""
        return self.matrix(values), self.matrix(values, transpose=True)

    @property
    def device(self) -> torch.device:
        return self.src.device

    def to(self, device: torch.device | str) -> SparseColumns:
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        return self
