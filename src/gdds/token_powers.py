"""The powers ``(K^T)^n e_x`` of single tokens, kept across calls: for a time-homogeneous ``K`` (the
semantic kernel at ``b = 0``) every row ``P_{0->t}^T e_x`` of the forward likelihood is the same
vectors weighed by Poisson weights of ``t`` (:func:`gdds.operators.transposed_from_zero`), so a token
seen once costs only a weighted sum afterwards (``docs/performance.md``, "Token powers").

A :class:`TokenPowers` computes a token's powers ``n = 1..depth`` with the products of
:func:`gdds.power_sums.power_sum` (float32 and flushed in ``mixed``, else float64) and keeps them while
its memory budget lasts; tokens beyond it, and weights deeper than ``depth``, go through
:func:`~gdds.power_sums.power_sum` itself. Either way :meth:`TokenPowers.weighted` is
``power_sum(K^T, e_x, weights)`` with the same products summed in the same order (tested to round-off in
``tests/test_token_powers.py``). Tokens are kept when first seen and never evicted; given the tokens'
frequencies (``counts``, e.g. a training split's unigram counts) only the ``capacity`` most frequent are
ever kept, else the first ``capacity`` seen. Either way the kept set, and so the work, depends only on the
calls made (and the counts).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .categorical import one_hot_columns
from .power_sums import Products, flush_nonnegative, power_sum

SLAB = 64  # tokens per allocation of kept powers (and per pass of products when they are computed)


class TokenPowers:
    """``(K^T)^n e_x`` for ``n = 1..depth`` of the tokens seen so far, within ``budget`` bytes.

    ``apply_T`` is ``K^T`` on ``[m, n]`` columns; ``how`` says the products (only ``mixed`` matters:
    the columns of a token are computed in slabs of :data:`SLAB`); ``counts [m]``: how often each token
    occurs, so that the budget goes to the most frequent (ties to the lower id); ``None``: to the first seen."""

    def __init__(self, apply_T: Callable[[Tensor, float], Tensor], m: int, depth: int, how: Products,
                 budget: int, device: torch.device, counts: Tensor | None = None):
        if depth < 0 or budget < 0:
            raise ValueError(f"TokenPowers needs a depth and a budget >= 0; got {depth} and {budget}")
        self.apply_T, self.m, self.depth, self.how, self.device = apply_T, m, depth, how, device
        self.dtype = torch.float32 if how.mixed else torch.float64
        per_token = max(1, depth * m * self.dtype.itemsize)
        self.capacity = min(m, budget // per_token)
        # token -> where its powers are kept (-1: not kept), on the process's device so no call copies it
        self.slot = torch.full((m,), -1, dtype=torch.long, device=device)
        self.slabs: list[Tensor] = []  # [SLAB, depth, m] each
        self.kept = 0
        self.admitted = torch.ones(m, dtype=torch.bool, device=device)  # tokens whose powers may be kept
        if counts is not None:
            order = torch.argsort(check_counts(counts, m), descending=True, stable=True)
            self.admitted[order[self.capacity:].to(device)] = False

    @property
    def nbytes(self) -> int:
        """Memory held by the kept powers."""
        return sum(s.numel() * s.element_size() for s in self.slabs)

    def weighted(self, tokens: Tensor, weights: Tensor) -> Tensor:
        """``sum_n weights[n, j] (K^T)^n e_{tokens[j]}`` as float64 columns ``[m, n]`` (``weights [N+1, n]``
        float64): what :func:`gdds.power_sums.power_sum` gives for the one-hot columns of ``tokens``."""
        tokens = tokens.to(self.device, torch.long)
        weights = weights.to(self.device, torch.float64)
        out = torch.zeros(self.m, tokens.numel(), dtype=torch.float64, device=self.device)
        if tokens.numel() == 0:
            return out
        deep = weights[self.depth + 1:].ne(0).any(0) if weights.shape[0] > self.depth + 1 else \
            torch.zeros(tokens.numel(), dtype=torch.bool, device=self.device)
        self._keep(torch.unique(tokens[~deep]))
        slots = self.slot[tokens]
        kept = (slots >= 0) & ~deep
        for j in kept.logical_not().nonzero().reshape(-1).split(SLAB):
            out[:, j] = power_sum(self.apply_T, one_hot_columns(tokens[j], self.m), weights[:, j], 0.0,
                                  Products(self.how.mixed))
        j = kept.nonzero().reshape(-1)
        if j.numel():
            out[:, j] = self._sum(slots[j], weights[:self.depth + 1, j]).T
            out[tokens[j], j] += weights[0, j]
        return out

    def _sum(self, slots: Tensor, weights: Tensor) -> Tensor:
        """``sum_{n >= 1} weights[n, j] powers[slots[j], n]`` as ``[n, m]`` float64, term by term in ``n``
        (the order of :func:`gdds.power_sums.power_sum`)."""
        total = torch.zeros(slots.numel(), self.m, dtype=torch.float64, device=self.device)
        reach = int(weights.ne(0).any(1).nonzero().max()) if weights.ne(0).any() else 0
        for slab in torch.unique(slots // SLAB).tolist():
            rows = (slots // SLAB == slab).nonzero().reshape(-1)
            index = slots[rows] % SLAB
            part = torch.zeros(rows.numel(), self.m, dtype=torch.float64, device=self.device)
            for n in range(1, reach + 1):
                part.addcmul_(self.slabs[slab][index, n - 1], weights[n, rows, None])
            total.index_copy_(0, rows, part)
        return total

    def _keep(self, tokens: Tensor) -> None:
        """Compute and keep the powers of the ``tokens`` not kept yet, while the budget lasts, a slab's
        free rows at a time."""
        new = tokens[(self.slot[tokens] < 0) & self.admitted[tokens]][:self.capacity - self.kept]
        while new.numel():
            slab, first = divmod(self.kept, SLAB)
            if slab == len(self.slabs):
                self.slabs.append(torch.empty(SLAB, self.depth, self.m, dtype=self.dtype, device=self.device))
            batch, new = new[:SLAB - first], new[SLAB - first:]
            cur = one_hot_columns(batch, self.m).to(self.dtype)
            for n in range(self.depth):
                cur = self.apply_T(cur, 0.0)
                if self.how.mixed:
                    cur = flush_nonnegative(cur)
                self.slabs[slab][first:first + batch.numel(), n] = cur.T
            self.slot[batch] = torch.arange(self.kept, self.kept + batch.numel(), device=self.device)
            self.kept += batch.numel()


def check_counts(counts: Tensor, m: int) -> Tensor:
    """``counts`` as a CPU float64 ``[m]`` tensor of finite, non-negative token frequencies; else ValueError."""
    counts = torch.as_tensor(counts).detach().to("cpu", torch.float64)
    if counts.shape != (m,) or not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError(f"token counts must be {m} finite numbers >= 0 (one per token of the kernel); got shape "
                         f"{tuple(counts.shape)}")
    return counts
