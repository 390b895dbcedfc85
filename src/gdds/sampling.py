"""Generation (``docs/math.md`` sections 6 and 7; paper section 4.3).

:func:`sample` runs the model's reverse chain ``p_theta(x_s | x_t)`` exactly as
the likelihood bound scores it (:mod:`gdds.posterior`), from the prior
``p_1 = P_{0->1} pi_ref`` down a time grid uniform in ``t`` or in ``Lambda``.
Categorical draws are exact: inverse CDF in float64 (default) or Gumbel-max on
float32 log-probabilities.

:func:`sample_renoise` is a fast **approximate** sampler: predict ``x0_hat ~ mu``
and re-noise it to ``s`` with the forward process. It is not the model's reverse
chain (it forgets ``x_t``), so no likelihood may be attributed to its samples.

:func:`sample_ancestral` draws from a causal language model's own conditionals, token by token
(exact; it is not a denoiser sampler). :data:`SAMPLERS` names them, with the block-by-block chain of a
block-diffusion network that :mod:`gdds.block_sampling` registers (``blocks``) and the forward-backward
corrector of :mod:`gdds.corrector` (``corrector``): the one list from which
:meth:`gdds.objectives.Method.generate`, ``gdds sample --sampler`` and the labels of samples choose.
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .categorical import Decoding, Generators, gumbel_max, inverse_cdf, per_row, row_generators, uniforms
from .devices import check_generator
from .operators import OperatorSettings
from .posterior import CHUNK_FLOATS, forward_likelihood, reverse_step_probs
from .process import ForwardProcess
from .samplers import CAUSAL, SAMPLERS, BoundRule, Sampler, SamplerError

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""A denoiser: ``(x_t [B, L] long, t [B]) -> logits or log-probabilities [B, L, m]`` of the clean token."""


class LikelihoodWeighted:
    """The forward-likelihood parametrization as a denoiser (``docs/math.md`` section 6): the clean-token
    law is ``mu(y | x_t, t) ∝ softmax(network(x_t, t))(y) q_t(x_t | y)`` with the **exact** forward
    likelihood. Called, it returns ``log mu`` (unnormalised; ``-inf`` where ``x_t`` cannot come from
    ``y``) through :func:`gdds.posterior.forward_likelihood`; :func:`sample` and
    :func:`gdds.nll_bound` instead read the network's weights (:func:`clean_law`) and let the reverse
    step weight them by the ``q_t(x_t | .)`` it computes anyway, so the chain sampled and bounded is
    this model, at no extra operator cost. ``operators``: how its forward likelihood is computed
    (:class:`gdds.OperatorSettings`, default the accurate ones)."""

    def __init__(self, process: ForwardProcess, network: Denoiser, *, operators: OperatorSettings | None = None):
        self.process, self.network, self.operators = process, network, operators

    def __call__(self, xt: Tensor, t: Tensor) -> Tensor:
        log_rho = torch.log_softmax(self.network(xt, t).to(self.process.device, torch.float64), dim=-1)
        return log_rho + forward_likelihood(self.process, xt, t, operators=self.operators).log()


@dataclass(frozen=True)
class BlockDenoiser:
    """A block-diffusion denoiser (:class:`gdds.models.BlockDiT`, ``docs/block.md``): ``fn(x_t, t, x0)``
    gives the logits of the clean tokens of every block of ``x_t [B, L]`` at times ``t [B]``, block ``k``
    reading the clean blocks ``< k`` of ``x0 [B, L]`` (the same sequences) and never the rest. The bound
    (:func:`gdds.nll_bound`) recognises it and passes the clean rows it scores (:func:`with_context`);
    the parametrizations' wrappers (:class:`LikelihoodWeighted`) keep it inside."""

    fn: Callable[[Tensor, Tensor, Tensor], Tensor]
    block_size: int

    def __call__(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return self.fn(xt, t, x0)

    def given(self, x0: Tensor) -> Denoiser:
        """The plain denoiser ``(x_t, t) -> logits`` of the sequences whose clean tokens are ``x0``."""
        return lambda xt, t: self.fn(xt, t, x0)


def map_network(denoiser: Denoiser, fn: Callable[[Denoiser], Denoiser]) -> Denoiser:
    """``fn`` applied to the network of ``denoiser``: inside a :class:`LikelihoodWeighted` (which stays
    around it, so the reverse step keeps weighting by ``q_t``), or to ``denoiser`` itself."""
    if isinstance(denoiser, LikelihoodWeighted):
        return LikelihoodWeighted(denoiser.process, fn(denoiser.network), operators=denoiser.operators)
    return fn(denoiser)


def with_context(denoiser: Denoiser, x0: Tensor) -> Denoiser:
    """``denoiser`` as a plain ``(x_t, t)`` denoiser of the sequences ``x0 [B, L]``: a
    :class:`BlockDenoiser` (also inside a :class:`LikelihoodWeighted`) reads their clean blocks; any
    other denoiser is returned as it is (it reads no context)."""
    return map_network(denoiser, lambda net: net.given(x0) if isinstance(net, BlockDenoiser) else net)


def clean_logits(denoiser: Denoiser, xt: Tensor, t: Tensor) -> tuple[Tensor, bool]:
    """What the reverse step reads from ``denoiser`` at ``(x_t [B, L], t [B])``: logits ``[B * L, m]``
    on ``xt``'s device, and whether their softmax is the weights of :class:`LikelihoodWeighted` (to be
    weighted by ``q_t(x_t | .)``: ``reverse_step_probs(weighted=True)``) or ``mu`` itself."""
    weighted = isinstance(denoiser, LikelihoodWeighted)
    logits = (denoiser.network if weighted else denoiser)(xt, t)
    return logits.to(xt.device).reshape(xt.numel(), -1), weighted


def time_grid(process: ForwardProcess, steps: int, spacing: str = "t") -> list[float]:
    """``steps + 1`` decreasing times from 1 to 0, uniform in ``t`` or in ``Lambda``."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    if spacing == "t":
        return u.tolist()
    if spacing == "lambda":
        return process.schedule.Lambda_inv(u * process.schedule.Lambda_max).tolist()
    raise ValueError(f"spacing must be 't' or 'lambda', got {spacing!r}")


def chain_grid(process: ForwardProcess, steps: int | None, spacing: str = "t", grid: Sequence[float] | None = None,
               default: int = 64) -> list[float]:
    """The decreasing times of a chain (and of the bound that scores it): ``grid`` itself, checked (strictly
    decreasing from 1 to 0, at least one step; ``steps``, if given, must be its number of steps and
    ``spacing`` must stay ``"t"``), or else :func:`time_grid` of ``steps`` (default ``default``) and
    ``spacing``. A fitted grid (:func:`gdds.step_grids.fitted_grid`) is passed this way."""
    if grid is None:
        return time_grid(process, default if steps is None else steps, spacing)
    times = [float(t) for t in grid]
    if len(times) < 2 or times[0] != 1.0 or times[-1] != 0.0 or any(a <= b for a, b in itertools.pairwise(times)):
        raise ValueError(f"grid must be strictly decreasing times from 1.0 to 0.0 (at least two); got {times}")
    if steps is not None and steps != len(times) - 1:
        raise ValueError(f"steps={steps} disagrees with the grid's {len(times) - 1} steps (give one of them)")
    if spacing != "t":
        raise ValueError(f"spacing={spacing!r} does not apply to an explicit grid")
    return times


_UNIFORM_PRIORS: weakref.WeakKeyDictionary[ForwardProcess, Tensor] = weakref.WeakKeyDictionary()


def reference_prior(process: ForwardProcess, reference: Tensor | None = None) -> Tensor:
    """``p_1 = P_{0->1} pi_ref`` (``[m]`` float64): the law of ``x_1`` when the clean
    token is drawn from ``reference`` (default: uniform over all ``m`` tokens, computed
    once per process)."""
    m = process.m
    if reference is None and process in _UNIFORM_PRIORS:
        return _UNIFORM_PRIORS[process]
    ref = torch.full((m,), 1.0 / m, dtype=torch.float64) if reference is None else reference.to(torch.float64).cpu()
    if ref.shape != (m,) or (ref < 0).any() or abs(float(ref.sum()) - 1) > 1e-6:
        raise ValueError(f"reference must be a probability vector of length {m}")
    prior = process.transition(ref[:, None].to(process.kernel.device), 0.0, 1.0)[:, 0].clamp_min(0.0).cpu()
    if reference is None:
        _UNIFORM_PRIORS[process] = prior
    return prior


def _device(process: ForwardProcess, generator: Generators, device: torch.device | str | None, num: int
            ) -> torch.device:
    """The sampler's device: ``device``, default the process's; the generator, or each of the ``num``
    generators of the rows, must be there."""
    device = process.device if device is None else torch.device(device)
    if per_row(generator) and len(generator) != num:
        raise ValueError(f"{len(generator)} generators for {num} sequences: give one generator per sequence, "
                         f"or a single one")
    for g in generator if per_row(generator) else [generator]:
        check_generator(g, device)
    return device


def _free(fixed: Tensor | None, num: int, length: int, device: torch.device) -> Tensor:
    """Where ``fixed`` (``[num, length]``, ``-1`` = free) leaves the sampler free (everywhere if ``None``)."""
    if fixed is None:
        return torch.ones(num, length, dtype=torch.bool, device=device)
    if fixed.shape != (num, length):
        raise ValueError(f"fixed must have shape [num, length] = [{num}, {length}], got {tuple(fixed.shape)}")
    return fixed.to(device) < 0


def _clamped(x: Tensor, fixed: Tensor | None, free: Tensor) -> Tensor:
    """``x`` with the fixed positions set to their tokens."""
    return x if fixed is None else torch.where(free, x, fixed.to(x.device))


StepMap = Callable[[Tensor, Tensor, float, float], Tensor]
"""A change of the reverse chain's step: ``(probs [n, m], x_t [n], s, t) -> probs [n, m]``, the law of ``x_s``
at ``n`` positions made another (ReMDM's remasking, :func:`gdds.unmasking.sample_remdm`)."""


def _row_uniforms(generator: Generators, free: Tensor) -> Tensor:
    """Float64 uniforms shaped as ``free [num, length]``, one per position, drawn only for the rows with a
    free position (zeros elsewhere): a row wholly fixed draws nothing, as it would alone, and with one
    generator per row each row's uniforms come from its own (:func:`gdds.categorical.uniforms`)."""
    active = free.any(dim=1)
    u = torch.zeros(free.shape, dtype=torch.float64, device=free.device)
    u[active] = uniforms(row_generators(generator, active), int(active.sum()), free.shape[1:], free.device)
    return u


def _prior(process: ForwardProcess, reference: Tensor | None, free: Tensor, generator: Generators) -> Tensor:
    """``x_1 [num, length]``: each position drawn from ``p_1`` (:func:`reference_prior`) by inverse CDF of
    :func:`_row_uniforms` (the fixed positions' draws are arbitrary: the caller clamps them)."""
    return inverse_cdf(reference_prior(process, reference).to(free.device), u=_row_uniforms(generator, free))


def prior_draw(process: ForwardProcess, num: int, length: int, fixed: Tensor | None, reference: Tensor | None,
               generator: Generators, device: torch.device) -> tuple[Tensor, Tensor]:
    """The chain's start ``x_1 ~ p_1`` (``[num, length]`` on ``device``, fixed positions clamped, one stream
    per row when ``generator`` is a list: :func:`_prior`) and where it is free (:func:`_free`)."""
    if num < 1 or length < 1:
        raise ValueError(f"num and length must be positive; got {num}, {length}")
    free = _free(fixed, num, length, device)
    return _clamped(_prior(process, reference, free, generator), fixed, free), free


def reverse_draw(process: ForwardProcess, logits: Tensor, weighted: bool, x: Tensor, free: Tensor, s: float,
                 t: float, decoding: Decoding | None, gumbel: bool, generator: Generators,
                 operators: OperatorSettings | None, step_map: StepMap | None = None) -> Tensor:
    """``x_s ~ p_theta(. | x_t)`` at the ``free`` positions of ``x = x_t [num, length]`` (the others keep their
    tokens) given what the denoiser answered there (:func:`clean_logits`), each step's law changed by
    ``step_map`` when given, in chunks of positions so that ``[num * length, m]`` float64 is never held:
    float64 inverse CDF of :func:`_row_uniforms` (one draw per row and step), or Gumbel-max on float32
    log-probabilities (``gumbel``; one generator only: its noise is drawn by chunk of positions)."""
    if gumbel and per_row(generator):
        raise SamplerError("gumbel=True draws its noise by chunk of positions, not by row: with one generator "
                           "per row use the inverse CDF (gumbel=False)")
    chunk = max(1, CHUNK_FLOATS // process.m)
    flat = x.reshape(-1)
    nxt = torch.empty_like(flat)
    u = None if gumbel else _row_uniforms(generator, free).reshape(-1)
    for a in range(0, flat.numel(), chunk):
        idx = slice(a, a + chunk)
        law = torch.softmax(logits[idx].double(), dim=-1)
        probs = reverse_step_probs(process, law, flat[idx], s, t, decoding, weighted, operators=operators).to(x.device)
        probs = probs if step_map is None else step_map(probs, flat[idx], s, t)
        nxt[idx] = gumbel_max(probs.clamp_min(1e-300).log().float(), generator) if u is None else \
            inverse_cdf(probs, u=u[idx])
    return torch.where(free, nxt.reshape(x.shape), x)


@torch.no_grad()
def sample(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int | None = None,
    *,
    spacing: str = "t",
    grid: Sequence[float] | None = None,
    decoding: Decoding | None = None,
    gumbel: bool = False,
    fixed: Tensor | None = None,
    reference: Tensor | None = None,
    reuse_unchanged: bool = False,
    generator: Generators = None,
    device: torch.device | None = None,
    progress: bool | None = False,
    operators: OperatorSettings | None = None,
) -> Tensor:
    """``num`` sequences of ``length`` tokens from the model's reverse chain.

    ``denoiser(x_t [B, L], t [B]) -> log-probs (or logits) [B, L, m]``. The time grid is ``steps``
    (default 64) steps uniform in ``t`` or ``Lambda`` (``spacing``), or ``grid``, explicit decreasing times
    from 1 to 0 (:func:`chain_grid`; e.g. :func:`gdds.step_grids.fitted_grid`): :func:`gdds.nll_bound` on
    the same grid scores exactly this chain. ``fixed``
    (``[num, length]`` long, ``-1`` = free) clamps positions to given tokens at every
    step (prefix prompts, infilling). ``decoding`` (:class:`gdds.Decoding`: temperature, top-k, top-p,
    min-p) filters ``mu`` among the clean tokens that can have produced ``x_t`` before each step
    (:func:`gdds.posterior.reverse_step_probs`; unless neutral, the result is no longer the model's chain).
    ``reuse_unchanged``
    reuses the denoiser's output while no token changed (as cached masked samplers
    do): exact for denoisers that ignore ``t``, an approximation otherwise. ``operators``
    (:class:`gdds.OperatorSettings`, e.g. a longer ``step`` for time-dependent kernels) is how the
    transition operators are applied and defines the chain, exactly as in :func:`gdds.nll_bound`. ``progress``: a bar
    over the steps on stderr (``None``: when stderr is a terminal). Positions
    are processed in chunks, so ``[num * length, m]`` float64 is never held. The chain runs on
    ``device`` (default: the process's, where ``generator`` must be too). ``generator``: one for the batch,
    or one per row (:data:`gdds.categorical.Generators`; then row ``i`` is what it would be alone with
    generator ``i``, up to the denoiser's batch invariance; not with ``gumbel``, whose noise is drawn by chunk
    of positions, nor with ``reuse_unchanged`` and a time-dependent denoiser, whose reuse is decided for the
    batch).
    """
    return _chain(process, denoiser, num, length, chain_grid(process, steps, spacing, grid), "exact", decoding=decoding,
                  gumbel=gumbel, fixed=fixed, reference=reference, reuse_unchanged=reuse_unchanged,
                  generator=generator, device=device, progress=progress, operators=operators)


def _chain(process: ForwardProcess, denoiser: Denoiser, num: int, length: int, grid: list[float], name: str, *,
           decoding: Decoding | None, gumbel: bool, fixed: Tensor | None, reference: Tensor | None,
           reuse_unchanged: bool, generator: Generators, device: torch.device | None, progress: bool | None,
           operators: OperatorSettings | None, step_map: StepMap | None = None) -> Tensor:
    """:func:`sample`'s reverse chain down ``grid`` (arguments as there), each step's law changed by
    ``step_map`` when given; ``name``: the entry of :data:`SAMPLERS` whose label the progress bar shows."""
    device = _device(process, generator, device, num)
    x, free = prior_draw(process, num, length, fixed, reference, generator, device)
    logits, seen, weighted = None, None, False
    for t, s in tqdm(list(itertools.pairwise(grid)), desc=SAMPLERS.get(name).label, unit="step", leave=False,
                     disable=None if progress is None else not progress):
        if not (reuse_unchanged and seen is not None and torch.equal(seen, x)):
            logits, weighted = clean_logits(denoiser, x, torch.full((num,), t, device=device))
            seen = x.clone()
        x = reverse_draw(process, logits, weighted, x, free, s, t, decoding, gumbel, generator, operators, step_map)
    return x


@torch.no_grad()
def sample_renoise(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int = 64,
    generator: Generators = None,
    device: torch.device | None = None,
    fixed: Tensor | None = None,
    decoding: Decoding | None = None,
) -> Tensor:
    """APPROXIMATE sampler (module docstring): ``num`` sequences of ``length`` tokens
    from the prior ``p_1`` down a uniform grid of ``steps`` (on ``device``, as :func:`sample`);
    ``fixed`` clamps positions and ``generator`` may be one per row, as in :func:`sample`; ``decoding``
    filters ``mu`` before each draw of ``x0_hat``."""
    if num < 1 or length < 1 or steps < 1:
        raise ValueError(f"num, length and steps must be positive; got {num}, {length}, {steps}")
    free = _free(fixed, num, length, _device(process, generator, device, num))
    x = _prior(process, None, free, generator)
    for t, s in itertools.pairwise(time_grid(process, steps)):
        x = _clamped(x, fixed, free)
        logits = denoiser(x, torch.full((num,), t, device=x.device)).to(x.device)
        mu = torch.softmax(logits.double(), dim=-1)
        x0_hat = inverse_cdf(mu if decoding is None else decoding.filter(mu), u=_row_uniforms(generator, free))
        x = _renoised(process, x0_hat, s, generator, free) if s > 0 else x0_hat
    return _clamped(x, fixed, free)


def _renoised(process: ForwardProcess, x0: Tensor, s: float, generator: Generators, free: Tensor) -> Tensor:
    """``x_s ~ q_s(. | x0)`` (:meth:`ForwardProcess.noise`): for the whole batch from one generator, or row by
    row from each row's own (rows with no free position are left as they are: they draw nothing)."""
    if not per_row(generator):
        return process.noise(x0, s, generator=generator)
    return torch.cat([process.noise(x0[i:i + 1], s, generator=g) if bool(free[i].any()) else x0[i:i + 1]
                      for i, g in enumerate(generator)])


class CausalModel(Protocol):
    """A left-to-right language model that draws from its own conditionals
    (:meth:`gdds.models.CausalLM.generate`)."""

    def generate(self, num: int, length: int, generator: Generators = None,
                 prompt: Tensor | None = None, decoding: Decoding | None = None) -> Tensor: ...


def sample_ancestral(process: ForwardProcess | None, model: CausalModel, num: int, length: int,
                     steps: int | None = None, generator: Generators = None,
                     fixed: Tensor | None = None, decoding: Decoding | None = None) -> Tensor:
    """Exact ancestral samples of a causal ``model``: one token at a time from its conditionals (filtered
    by ``decoding``, :class:`gdds.Decoding`, when it is not neutral), each row continuing the prefix that
    ``fixed`` clamps in it (rows may differ, in tokens and in length; ``generator`` may be one per row, as in
    :func:`sample`). ``process`` and ``steps`` do not apply (no forward process; one step per token): the
    signature is that of every entry of :data:`SAMPLERS`. A fixed position after a free one (infilling) is
    refused."""
    prompt = None
    if fixed is not None:
        free = _free(fixed, num, length, fixed.device)
        given = (~free).cumprod(dim=1).sum(dim=1)  # each row's prompt length
        if bool((~free & (torch.arange(length, device=free.device) >= given[:, None])).any()):
            raise SamplerError("the ancestral sampler continues a prompt; it cannot fill blanks")
        longest = int(given.max())
        prompt = fixed[:, :longest] if longest else None
    return model.generate(num, length, generator, prompt=prompt, decoding=decoding)


SAMPLERS.register("exact", Sampler("exact reverse chain", True, sample, BoundRule(
    passed=("spacing", "grid", "decoding", "operators", "reference"), ignored=("gumbel", "progress", "device"))))
SAMPLERS.register("renoise", Sampler("APPROXIMATE renoise sampler", False, sample_renoise, BoundRule(
    "no bound: it forgets x_t (predicts x0, then re-noises it), not a chain with a computable step law")))
SAMPLERS.register("ancestral", Sampler("exact ancestral sampler", True, sample_ancestral, BoundRule(
    "no bound: exact ancestral sampling; its exact NLL is gdds eval's figure"), source=CAUSAL))
