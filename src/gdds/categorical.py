"""Categorical draws and one-hot columns, shared by the kernels, the sampler and the models.

Draws are exact (``docs/math.md`` section 7): :func:`inverse_cdf` accumulates the CDF in
float64, :func:`gumbel_max` adds Gumbel noise to float32 logits; neither lowers the
effective temperature at large vocabularies as float32 inverse-CDF sampling would.
"""
from __future__ import annotations

import torch
from torch import Tensor


def inverse_cdf(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw along the last dim of non-negative weights ``probs`` (normalised here) by
    inverse CDF; the CDF is accumulated in float64."""
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    u = torch.rand(probs.shape[:-1] + (1,), dtype=torch.float64, device=probs.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
    return idx.squeeze(-1).clamp_max(probs.shape[-1] - 1)


def gumbel_max(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw from ``softmax(logits)`` along the last dim (Gumbel-max on float32 logits)."""
    e = torch.empty(logits.shape, dtype=torch.float32, device=logits.device).exponential_(generator=generator)
    return (logits.float() - e.log()).argmax(dim=-1)


def one_hot_columns(tokens: Tensor, m: int) -> Tensor:
    """``[m, n]`` float64 matrix whose column ``i`` is ``e_{tokens[i]}``."""
    v = torch.zeros(m, tokens.numel(), dtype=torch.float64, device=tokens.device)
    v[tokens, torch.arange(tokens.numel(), device=tokens.device)] = 1.0
    return v


def nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens with mass >= ``top_p`` per row, renormalised (rows need not
    sum to 1: a law restricted to a subset is renormalised too)."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_p * keep)
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-300)
