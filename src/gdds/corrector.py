"""A predictor-corrector sampler for **any** kernel: the forward-backward corrector.

After each reverse step ``t -> s`` of the model's chain (:func:`gdds.sample`, the predictor), the
corrector repeats ``corrector_steps`` times: renoise ``x_s`` forward to ``s' = s + delta (t - s)`` with the
process's own exact transition ``P_{s->s'}`` (:func:`forward_draw`), then take the model's reverse step
``s' -> s`` (:func:`gdds.posterior.reverse_step_probs`). It needs nothing but the forward process and the
model's ``mu``, so it works with every kernel (mask, uniform, semantic, time-dependent), as Campbell et
al.'s predictor-corrector does (their corrector uses the detailed-balance rates of the reverse CTMC;
this one uses a forward and a reverse step of finite size, which needs no rates).

Why it is sound: if ``x_s`` follows the marginal ``q_s`` and the denoiser is exact, the forward move
gives ``x_{s'} ~ q_{s'}`` and the exact reverse step brings it back to ``q_s``: each corrector move leaves
the marginal at ``s`` invariant. With a learned denoiser it pulls ``x_s`` towards what the model believes
at ``s``, the errors of the earlier steps forgotten in part. It costs ``steps * (1 + corrector_steps)``
network calls per sequence. The chain with corrector moves is no longer the chain
:func:`gdds.nll_bound` scores and the bound has no term for the moves: **no bound** applies to its samples
(``exact=False`` in :data:`gdds.samplers.SAMPLERS`). With ``corrector_steps=0`` it is the plain chain, the
same draws for the same seed.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .categorical import Decoding, Generators, inverse_cdf, one_hot_columns, uniforms
from .operators import OperatorSettings
from .posterior import CHUNK_FLOATS
from .process import ForwardProcess
from .samplers import SAMPLERS, BoundRule, Sampler
from .sampling import Denoiser, _device, chain_grid, clean_logits, prior_draw, reverse_draw


def forward_draw(process: ForwardProcess, x: Tensor, s: float, t: float, generator: Generators = None,
                 operators: OperatorSettings | None = None) -> Tensor:
    """``x_t ~ P_{s->t}(. | x_s)`` for every token of ``x = x_s`` (any shape, any kernel; ``0 <= s <= t <= 1``):
    the columns of the exact transition operator (:meth:`gdds.ForwardProcess.transition`, applied as
    ``operators`` say) of the distinct tokens of each chunk of positions, drawn by float64 inverse CDF (of
    :func:`gdds.categorical.uniforms`: with one generator per row of ``x``, row ``i`` from generator ``i``)."""
    flat = x.reshape(-1)
    u = uniforms(generator, x.shape[0], tuple(x.shape[1:]), x.device).reshape(-1)
    out = torch.empty_like(flat)
    chunk = max(1, CHUNK_FLOATS // process.m)
    for a in range(0, flat.numel(), chunk):
        tokens, where = torch.unique(flat[a:a + chunk].to(process.device), return_inverse=True)
        cols = process.transition(one_hot_columns(tokens, process.m), s, t, settings=operators)
        out[a:a + chunk] = inverse_cdf(cols.T.clamp_min(0.0)[where].to(x.device), u=u[a:a + chunk])
    return out.reshape(x.shape)


@torch.no_grad()
def sample_corrector(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int | None = None,
    *,
    corrector_steps: int = 1,
    corrector_delta: float = 0.5,
    spacing: str = "t",
    grid: Sequence[float] | None = None,
    decoding: Decoding | None = None,
    gumbel: bool = False,
    fixed: Tensor | None = None,
    reference: Tensor | None = None,
    generator: Generators = None,
    device: torch.device | None = None,
    operators: OperatorSettings | None = None,
) -> Tensor:
    """``num`` sequences of ``length`` tokens from the model's reverse chain with ``corrector_steps``
    forward-backward corrector moves after every step (module docstring): each renoises to
    ``s' = s + corrector_delta * (t - s)`` (``corrector_delta`` in ``(0, 1]``: a fraction of the step; 1
    renoises back to the step's start) and steps back to ``s``. Fixed positions stay fixed through the moves.
    ``steps``, ``spacing``, ``grid``, ``decoding``, ``gumbel``, ``fixed``, ``reference``, ``generator``,
    ``device`` and ``operators`` are :func:`gdds.sample`'s; ``decoding`` filters ``mu`` in the corrector's
    reverse steps too. No likelihood bound applies to the samples unless ``corrector_steps == 0``."""
    if corrector_steps < 0 or not 0.0 < corrector_delta <= 1.0:
        raise ValueError(f"corrector_steps must be >= 0 and corrector_delta in (0, 1]; got {corrector_steps}, "
                         f"{corrector_delta}")
    device = _device(process, generator, device, num)
    x, free = prior_draw(process, num, length, fixed, reference, generator, device)
    chain = Chain(free, decoding, gumbel, generator, operators)
    for t, s in itertools.pairwise(chain_grid(process, steps, spacing, grid)):
        x = model_step(process, denoiser, x, t, s, chain)
        for _ in range(corrector_steps):
            x = corrector_move(process, denoiser, x, s, s + corrector_delta * (t - s), chain)
    return x


@dataclass(frozen=True)
class Chain:
    """How the chain's steps are taken: where it is free (``[num, length]`` bool), the decoding filters, the
    draw (float64 inverse CDF, or Gumbel-max with ``gumbel``), the generator and the operators."""

    free: Tensor
    decoding: Decoding | None = None
    gumbel: bool = False
    generator: Generators = None
    operators: OperatorSettings | None = None


def model_step(process: ForwardProcess, denoiser: Denoiser, x: Tensor, t: float, s: float, chain: Chain) -> Tensor:
    """The model's reverse step ``x_t -> x_s`` (one denoiser call) at the chain's free positions."""
    logits, weighted = clean_logits(denoiser, x, torch.full((x.shape[0],), t, device=x.device))
    return reverse_draw(process, logits, weighted, x, chain.free, s, t, chain.decoding, chain.gumbel, chain.generator,
                        chain.operators)


def corrector_move(process: ForwardProcess, denoiser: Denoiser, x: Tensor, s: float, up: float, chain: Chain
                   ) -> Tensor:
    """One corrector move at ``s``: the free positions of ``x = x_s`` renoised to ``up > s`` by the exact forward
    transition (:func:`forward_draw`), then the model's step back to ``s`` (:func:`model_step`). With an exact
    denoiser it keeps the law of ``x_s`` when that law is the marginal ``q_s``."""
    x = torch.where(chain.free, forward_draw(process, x, s, up, chain.generator, chain.operators), x)
    return model_step(process, denoiser, x, up, s, chain)


SAMPLERS.register("corrector", Sampler("APPROXIMATE forward-backward corrector (no bound)", False, sample_corrector,
                                       BoundRule("no bound: the bound has no term for the corrector's moves")))
