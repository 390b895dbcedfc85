"""Categorical draws, one-hot columns and the decoding filters, shared by the kernels, the sampler and the
models.

Draws are exact (``docs/math.md`` section 7): :func:`inverse_cdf` accumulates the CDF in
float64, :func:`gumbel_max` adds Gumbel noise to float32 logits; neither lowers the
effective temperature at large vocabularies as float32 inverse-CDF sampling would.

Randomness comes from :data:`Generators`: one ``torch.Generator`` (or ``None``) for a whole batch, or one
generator per row, so that row ``i`` draws only from generator ``i`` (:func:`uniforms`) and its samples
do not depend on which other rows share the call (batched prompts, ``docs/sampling.md``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None
"""Where a sampler's randomness comes from: one generator for the whole batch (``None``: torch's global one),
or a sequence of generators, one per row (row ``i`` draws only from generator ``i``)."""


def per_row(generator: Generators) -> bool:
    """Whether ``generator`` is a sequence of generators, one per row."""
    return generator is not None and not isinstance(generator, torch.Generator)


def row_generators(generator: Generators, rows: Tensor) -> Generators:
    """The generators of the rows that ``rows`` (``[num]`` bool) selects: a single generator (or ``None``)
    serves every row and is returned as it is."""
    if not per_row(generator):
        return generator
    return [g for g, keep in zip(generator, rows.tolist(), strict=True) if keep]


def uniforms(generator: Generators, num: int, shape: tuple[int, ...] = (), device: torch.device | str = "cpu"
             ) -> Tensor:
    """``[num, *shape]`` float64 uniforms on ``device``: one draw of them all from a single generator, or row
    ``i`` drawn from ``generator[i]`` (``num`` generators: :class:`ValueError` otherwise). One row drawn from
    ``[g]`` equals that row drawn from ``g``."""
    if not per_row(generator):
        return torch.rand((num, *shape), dtype=torch.float64, device=device, generator=generator)
    if len(generator) != num:
        raise ValueError(f"{len(generator)} generators for {num} rows: give one generator per row, or a single one")
    return torch.stack([torch.rand(shape, dtype=torch.float64, device=device, generator=g) for g in generator]) \
        if num else torch.empty((0, *shape), dtype=torch.float64, device=device)


def inverse_cdf(probs: Tensor, generator: Generators = None, *, u: Tensor | None = None) -> Tensor:
    """One draw along the last dim of non-negative weights ``probs`` (normalised here) by
    inverse CDF; the CDF is accumulated in float64. The uniforms are ``u`` (shape ``probs.shape[:-1]``, or
    any shape when ``probs`` is one law ``[m]``: one draw per entry) or drawn by :func:`uniforms` (rows:
    ``probs``' first dimension)."""
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    if u is None:
        u = uniforms(generator, probs.shape[0], tuple(probs.shape[1:-1]), probs.device) if probs.dim() > 1 \
            else uniforms(generator, 1, (), probs.device)[0]
    if probs.dim() == 1:
        idx = torch.searchsorted(cdf, u * cdf[-1], right=True)
    else:
        idx = torch.searchsorted(cdf, (u * cdf[..., -1])[..., None], right=True).squeeze(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


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


@dataclass(frozen=True)
class Decoding:
    """How a sampler reshapes the model's clean-token law ``mu`` before drawing from it (``docs/sampling.md``):
    the reverse chain's ``mu`` among the clean tokens that can have produced ``x_t``, before the reverse step
    (:func:`gdds.posterior.reverse_step_probs`), and each conditional of an autoregressive model.

    The filters apply in this order, as Hugging Face's ``generate`` does: ``temperature`` (``mu^(1/T)``,
    renormalised), then ``top_k`` (the ``k`` most probable tokens; ties with the ``k``-th are kept), then
    ``top_p`` (the smallest set of the most probable tokens with mass ``>= top_p``: :func:`nucleus`), then
    ``min_p`` (the tokens with probability ``>= min_p`` times the largest). Each renormalises what it keeps
    and always keeps the most probable token. ``Decoding()`` (temperature 1, no top-k, top-p 1, min-p 0)
    changes nothing; any other setting samples a different model from the one a likelihood bound scores."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not 0 < self.temperature < math.inf:
            raise ValueError(f"temperature must be a positive finite number (1: the model's own law); "
                             f"got {self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer, or None to keep every token; got {self.top_k!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] (1: no nucleus); got {self.top_p!r}")
        if isinstance(self.min_p, bool) or not isinstance(self.min_p, (int, float)) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must lie in [0, 1] (0: no threshold); got {self.min_p!r}")

    def neutral(self, m: int) -> bool:
        """Whether the filters leave every law over ``m`` tokens as it is (then :meth:`filter` returns its
        argument itself, and a sampler draws exactly what it draws without them)."""
        return self.temperature == 1 and (self.top_k is None or self.top_k >= m) and self.top_p >= 1 \
            and self.min_p == 0

    def filter(self, probs: Tensor) -> Tensor:
        """The filtered law of each row of non-negative weights ``probs [..., m]`` (rows need not sum to 1;
        a zero stays zero), renormalised; ``probs`` itself when :meth:`neutral`."""
        m = probs.shape[-1]
        if self.neutral(m):
            return probs
        if self.temperature != 1:  # in log space from the largest weight, so a small T cannot underflow all
            log = probs.log()
            probs = ((log - log.amax(-1, keepdim=True)) / self.temperature).exp()
        if self.top_k is not None and self.top_k < m:
            probs = probs * (probs >= probs.topk(self.top_k, dim=-1).values[..., -1:])
        probs = nucleus(probs, self.top_p) if self.top_p < 1 else probs / probs.sum(-1, keepdim=True)
        if self.min_p > 0:
            probs = probs * (probs >= self.min_p * probs.amax(-1, keepdim=True))
            probs = probs / probs.sum(-1, keepdim=True)
        return probs
