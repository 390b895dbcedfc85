"""Sparse kernels: a user-supplied sparse column-stochastic matrix (CSR/COO),
e.g. the edit neighbourhood of a graph or a molecule."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Arrivals, Kernel, SparseColumns, check_vectors


def _edges(F) -> tuple[Tensor, Tensor, Tensor, int]:
    """``(dst, src, value, m)`` from a torch sparse tensor or a scipy sparse matrix."""
    if isinstance(F, Tensor):
        if not F.is_sparse and F.layout == torch.strided:
            raise ValueError("Sparse expects a sparse tensor or scipy matrix; use Dense for a dense tensor")
        coo = F.to_sparse_coo().coalesce()
        (dst, src), val = coo.indices(), coo.values()
        shape = tuple(coo.shape)
    else:
        try:
            coo = F.tocoo()
        except AttributeError as exc:
            raise ValueError(f"Sparse expects a torch sparse tensor or a scipy sparse matrix, "
                             f"got {type(F).__name__}") from exc
        dst, src = torch.as_tensor(coo.row).long(), torch.as_tensor(coo.col).long()
        val = torch.as_tensor(coo.data)
        shape = tuple(coo.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"a kernel must be square [m, m]; got shape {shape}")
    return dst.long(), src.long(), val.to(torch.float64), shape[0]


class Sparse(Kernel):
    """Time-homogeneous kernel from a sparse column-stochastic ``[m, m]`` matrix
    (entry ``[y, x]`` = probability that a jump from ``x`` lands on ``y``).

    Explicit zeros are dropped. Memory is ``O(nnz)``; sampling is one
    ``searchsorted`` over the per-source cumulative probabilities.
    """

    def __init__(self, F, tol: float = 1e-6):
        dst, src, val, m = _edges(F)
        if torch.isnan(val).any():
            raise ValueError("Sparse kernel has NaN entries")
        if (val < 0).any():
            raise ValueError(f"Sparse kernel has negative entries (min {val.min().item():.3g})")
        keep = val > 0
        dst, src, val = dst[keep], src[keep], val[keep]
        sums = torch.zeros(m, dtype=torch.float64).index_add_(0, src, val)
        bad = (sums - 1).abs() > tol
        if bad.any():
            col = int(bad.nonzero()[0])
            raise ValueError(
                f"Sparse kernel columns must sum to 1 (column x is the law of the jump from x); "
                f"column {col} sums to {sums[col].item():.9g}"
            )
        self.m = m
        self.edges = SparseColumns(src, dst, m)
        self.values = val / sums[src]
        self.F, self.FT = self.edges.matrices(self.values)
        order = self.edges.by_src
        self.dst_by_src = self.edges.dst[order]
        self.cum = self.values[order].cumsum(0)
        self.cum_start = torch.cat([self.cum.new_zeros(1), self.cum])[self.edges.src_ptr[:-1]]

    def jump(self, x: Tensor, t: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=generator)
        pos = torch.searchsorted(self.cum, self.cum_start[x] + u, right=True)
        ptr = self.edges.src_ptr
        pos = torch.minimum(torch.maximum(pos, ptr[x]), ptr[x + 1] - 1)
        return self.dst_by_src[pos]

    def arrivals(self, x: Tensor, t: Tensor) -> Arrivals:
        pos, edge = self.edges.incoming(x)
        return Arrivals(torch.zeros(x.numel(), dtype=torch.float64, device=x.device), pos, self.edges.src[edge],
                        self.values[edge])

    def apply(self, v: Tensor, t: float = 0.0) -> Tensor:
        return self.F @ check_vectors(v, self.m)

    def apply_T(self, v: Tensor, t: float = 0.0) -> Tensor:
        return self.FT @ check_vectors(v, self.m)

    def __repr__(self) -> str:
        return f"Sparse(m={self.m}, nnz={self.values.numel()})"
