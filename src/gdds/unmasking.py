"""Faster samplers of the mask (absorbing) kernel (issue 27; ``docs/sampling.md``): which masked positions
to reveal, and when, chosen otherwise than the model's reverse chain does.

Under the mask kernel a position is either its clean token or the mask, and the exact chain
(:func:`gdds.sample`) reveals each masked position between ``t`` and ``s`` with probability
``(alpha_s - alpha_t) / (1 - alpha_t)``, independently of the others, its token drawn from ``mu``. The
samplers here keep the draw of the token (``mu`` at the position, filtered by ``decoding=``; ``top_k=1``
takes the argmax) and change the choice of positions:

- :func:`sample_ordered` (``ordered``): ``steps`` steps; step ``t -> s`` reveals as many positions as the
  exact chain has revealed in expectation by ``s`` (``round(n alpha_s)`` of a row's ``n`` free positions in
  all, every one at ``s = 0``), those whose law scores highest (:data:`SCORES`: ``confidence``, the
  largest probability; ``margin``, the first minus the second; ``entropy``, minus the entropy), ties to
  the leftmost. A deterministic choice of positions: no finite likelihood bound applies to its samples.
- :func:`sample_threshold` (``threshold``, Fast-dLLM's parallel decoding): every masked position whose
  largest probability reaches ``threshold``, and at least the most confident one of each row, at every
  network call; at most ``steps`` calls (fewer once nothing is masked; the last reveals what is left).
  No finite bound either.
- :func:`sample_remdm` (``remdm``, ReMDM-cap of Wang et al. 2025, "Remasking discrete diffusion models with
  inference-time scaling"): the exact chain's step where a revealed token is masked again with probability
  ``sigma_t = min(eta, (1 - alpha_s) / alpha_t)`` (capped at 1) and a masked position is revealed with
  probability ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``: for the true ``mu`` the marginals
  ``q_s(. | x0)`` are kept, so later steps can correct earlier tokens. ``eta = 0`` is :func:`gdds.sample`'s
  chain draw for draw; otherwise it is another Markov chain than the one :func:`gdds.nll_bound` scores.

The ordered and threshold samplers start from the all-masked sequence and call the network at the time
whose ``alpha`` is a row's revealed fraction (the time the forward process leaves, in expectation, as many
masked): per row, so rows that differ in progress (threshold decoding, prompts) each get theirs.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .categorical import Decoding, Generators, inverse_cdf
from .kernels.mask import Mask
from .operators import OperatorSettings
from .posterior import CHUNK_FLOATS
from .process import ForwardProcess
from .registry import Registry
from .samplers import SAMPLERS, BoundRule, Sampler
from .sampling import Denoiser, StepMap, _chain, _clamped, _device, _free, _row_uniforms, clean_logits, time_grid

ETA = 0.02
"""ReMDM's default remasking cap (:func:`sample_remdm`, :func:`remasking_map`)."""

SCORES: Registry[Callable[[Tensor], Tensor]] = Registry("unmasking score")
"""How sure the model is at a position, from its clean-token law ``[n, m]`` (rows summing to 1): higher
is surer; :func:`sample_ordered` reveals the highest first."""
SCORES.register("confidence", lambda law: law.amax(-1))
SCORES.register("margin", lambda law: (lambda top: top[:, 0] - top[:, 1])(law.topk(2, dim=-1).values))
SCORES.register("entropy", lambda law: torch.xlogy(law, law).sum(-1))

T = TypeVar("T")


def _bar(steps: Iterable[T], name: str, progress: bool | None) -> Iterable[T]:
    """``steps`` with a bar on stderr labelled by the sampler ``name`` (``None``: when stderr is a terminal)."""
    return tqdm(list(steps), desc=SAMPLERS.get(name).label, unit="step", leave=False,
                disable=None if progress is None else not progress)


def _masked_sequences(process: ForwardProcess, name: str, num: int, length: int, fixed: Tensor | None,
                      generator: Generators, device: torch.device | None) -> tuple[Tensor, Tensor]:
    """The all-masked sequences ``[num, length]`` (fixed positions set) and where they are free; the
    sampler ``name`` refuses a process whose kernel is not the mask kernel."""
    SAMPLERS.get(name).require(process)
    if num < 1 or length < 1:
        raise ValueError(f"num and length must be positive; got {num}, {length}")
    device = _device(process, generator, device, num)
    free = _free(fixed, num, length, device)
    x = torch.full((num, length), process.mask_id, dtype=torch.long, device=device)
    return _clamped(x, fixed, free), free


def _implied_time(process: ForwardProcess, masked: Tensor, free: Tensor) -> Tensor:
    """Per row ``[B]``: the time ``t`` with ``alpha(t)`` = the revealed fraction of its free positions."""
    n = free.sum(1).double().clamp_min(1)
    revealed = 1 - masked.sum(1).double() / n
    rate = (-revealed.cpu().log()).clamp(max=process.schedule.Lambda_max)
    return process.schedule.Lambda_inv(rate).to(device=masked.device, dtype=torch.float32)


def _reveal(process: ForwardProcess, denoiser: Denoiser, x: Tensor, masked: Tensor, free: Tensor, score: str,
            decoding: Decoding | None, generator: Generators, rows: Tensor) -> tuple[Tensor, Tensor]:
    """One network call at the rows' implied times: at every ``masked`` position (of the ``free`` ones), the
    score of the model's clean-token law (``mu`` without the mask token, renormalised) and a token drawn
    from it, filtered by ``decoding``; ``[B, L]`` each (score ``-inf``, token the current one elsewhere). Only
    the ``rows [B]`` that reveal a position draw uniforms (as each would alone: :data:`gdds.categorical.Generators`)."""
    logits, _ = clean_logits(denoiser, x, _implied_time(process, masked, free))
    where = masked.reshape(-1).nonzero().reshape(-1)
    scores = torch.full((x.numel(),), -torch.inf, dtype=torch.float64, device=x.device)
    tokens = x.reshape(-1).clone()
    chunk = max(1, CHUNK_FLOATS // process.m)
    u = _row_uniforms(generator, masked & rows[:, None]).reshape(-1)  # a row's draws do not depend on the others
    for a in range(0, where.numel(), chunk):
        idx = where[a:a + chunk]
        law = torch.softmax(logits[idx].double(), dim=-1)
        law[:, process.mask_id] = 0.0  # a clean token is never the mask (a weighted denoiser's q_t is flat here)
        total = law.sum(-1, keepdim=True)
        if not bool((total > 0).all()):
            raise ValueError("the denoiser gives zero probability to every clean token at a masked position")
        law = law / total
        scores[idx] = SCORES.get(score)(law)
        tokens[idx] = inverse_cdf(law if decoding is None else decoding.filter(law), u=u[idx])
    return scores.reshape(x.shape), tokens.reshape(x.shape)


def _best(scores: Tensor, count: Tensor) -> Tensor:
    """Per row, the ``count [B]`` positions of highest score (ties to the leftmost): ``[B, L]`` bool."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1], device=scores.device)
                                            .expand_as(order).contiguous())
    return rank < count[:, None]


@torch.no_grad()
def sample_ordered(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int = 64,
    *,
    score: str = "confidence",
    spacing: str = "t",
    decoding: Decoding | None = None,
    generator: Generators = None,
    fixed: Tensor | None = None,
    device: torch.device | None = None,
    progress: bool | None = False,
) -> Tensor:
    """``num`` sequences of ``length`` tokens by ordered unmasking (module docstring): ``steps`` steps down
    :func:`gdds.sampling.time_grid` (``spacing``), each revealing the exact chain's expected count of the
    highest-``score`` masked positions (:data:`SCORES`) with tokens from ``mu`` (filtered by ``decoding``).
    A step that reveals nothing calls no network: at most ``steps`` calls. ``fixed`` clamps positions as in
    :func:`gdds.sample`; the mask kernel only."""
    SCORES.get(score)
    x, free = _masked_sequences(process, "ordered", num, length, fixed, generator, device)
    n = free.sum(1)
    for _, s in _bar(itertools.pairwise(time_grid(process, steps, spacing)), "ordered", progress):
        masked = free & (x == process.mask_id)
        target = n if s == 0 else torch.round(n * float(process.schedule.alpha(s))).long()
        count = (target - (n - masked.sum(1))).clamp_min(0)
        if not bool(count.any()):
            continue
        scores, tokens = _reveal(process, denoiser, x, masked, free, score, decoding, generator, count > 0)
        x = torch.where(_best(scores, count) & masked, tokens, x)
    return x


@torch.no_grad()
def sample_threshold(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int = 64,
    *,
    threshold: float = 0.9,
    decoding: Decoding | None = None,
    generator: Generators = None,
    fixed: Tensor | None = None,
    device: torch.device | None = None,
    progress: bool | None = False,
) -> Tensor:
    """``num`` sequences of ``length`` tokens by threshold decoding (module docstring): each of at most
    ``steps`` network calls reveals every masked position whose largest probability is at least
    ``threshold`` (in ``(0, 1]``), and each row's most confident one, with tokens from ``mu`` (filtered by
    ``decoding``); the last call reveals all that is left, and none is made once nothing is masked.
    ``fixed`` clamps positions as in :func:`gdds.sample`; the mask kernel only."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1]; got {threshold!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    x, free = _masked_sequences(process, "threshold", num, length, fixed, generator, device)
    for k in _bar(range(steps), "threshold", progress):
        masked = free & (x == process.mask_id)
        if not bool(masked.any()):
            break
        scores, tokens = _reveal(process, denoiser, x, masked, free, "confidence", decoding, generator,
                                 masked.any(1))
        chosen = masked if k == steps - 1 else (scores >= threshold) | _best(scores, masked.any(1).long())
        x = torch.where(chosen & masked, tokens, x)
    return x


def remasking(process: ForwardProcess, eta: float, s: float, t: float) -> tuple[float, float]:
    """ReMDM-cap's step ``t -> s``: ``sigma = min(eta, (1 - alpha_s) / alpha_t, 1)``, the probability that a
    revealed token is masked again, and ``extra = sigma alpha_t / (alpha_s - alpha_t)``, by how much
    (``1 + extra``) the exact chain's probability of revealing a masked position grows."""
    alpha_s, alpha_t = float(process.schedule.alpha(s)), float(process.schedule.alpha(t))
    sigma = min(eta, 1.0 if alpha_t <= 0 else min(1.0, (1 - alpha_s) / alpha_t))
    return sigma, sigma * alpha_t / (alpha_s - alpha_t) if sigma > 0 else 0.0


def _remasked(step: Tensor, xt: Tensor, mask_id: int, sigma: float, extra: float) -> Tensor:
    """The exact step's rows ``step [n, m]`` at ``xt [n]`` made ReMDM's: a revealed row ``(1 - sigma)
    step + sigma e_mask``; a masked row's clean tokens ``(1 + extra)`` times theirs, the mask the rest.
    Both unchanged bit for bit when ``sigma = 0``."""
    masked = xt == mask_id
    stay = step[:, mask_id]
    scale = torch.full_like(stay, 1 - sigma).masked_fill_(masked, 1 + extra)
    out = step * scale[:, None]
    out[:, mask_id] = torch.where(masked, stay - extra * (1 - stay), stay * (1 - sigma) + sigma).clamp_min(0.0)
    return out


@torch.no_grad()
def sample_remdm(
    process: ForwardProcess,
    denoiser: Denoiser,
    num: int,
    length: int,
    steps: int = 64,
    *,
    eta: float = ETA,
    spacing: str = "t",
    decoding: Decoding | None = None,
    generator: Generators = None,
    fixed: Tensor | None = None,
    device: torch.device | None = None,
    progress: bool | None = False,
    operators: OperatorSettings | None = None,
) -> Tensor:
    """``num`` sequences of ``length`` tokens from ReMDM-cap (module docstring) with remasking cap ``eta``
    (in ``[0, 1]``; ``0``: the exact chain, the same draws as :func:`gdds.sample` with the same seed and
    options): from :func:`gdds.sample`'s prior, ``steps`` steps down its grid (``spacing``), ``steps``
    network calls, the reverse step (``decoding``, ``operators``) of :func:`gdds.posterior.reverse_step_probs`
    remasked. ``fixed`` positions are never remasked; the mask kernel only."""
    SAMPLERS.get("remdm").require(process)
    return _chain(process, denoiser, num, length, time_grid(process, steps, spacing), "remdm", decoding=decoding,
                  gumbel=False, fixed=fixed, reference=None, reuse_unchanged=False, generator=generator,
                  device=device, progress=progress, operators=operators, step_map=remasking_map(process, eta))


def remasking_map(process: ForwardProcess, eta: float = ETA) -> StepMap:
    """ReMDM-cap's change of the exact chain's step (:data:`gdds.sampling.StepMap`): what :func:`sample_remdm`
    draws from and what ``gdds.nll_bound(..., step_map=...)`` scores (the ELBO of that chain: a valid bound on
    its NLL, higher than the exact chain's where remasking wastes mass the forward process never puts there).
    ``eta`` in ``[0, 1]``; ``0`` changes nothing."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0: the exact chain); got {eta!r}")

    def remasked(step: Tensor, xt: Tensor, s: float, t: float) -> Tensor:
        return _remasked(step, xt, process.mask_id, *remasking(process, eta, s, t))

    return remasked


def _remdm_bound(process: ForwardProcess, options: dict[str, Any]) -> dict[str, Any]:
    """``nll_bound``'s keywords for ReMDM's chain: its ``eta`` as the step map it samples with."""
    rest = {k: v for k, v in options.items() if k != "eta"}
    return {**rest, "step_map": remasking_map(process, options.get("eta", ETA))}


NO_FINITE_BOUND = BoundRule("no finite bound: a deterministic choice of the positions to reveal")
SAMPLERS.register("ordered", Sampler("ordered-unmasking sampler (no finite bound)", False, sample_ordered,
                                     NO_FINITE_BOUND, kernel=Mask))
SAMPLERS.register("threshold", Sampler("threshold parallel-decoding sampler (no finite bound)", False,
                                       sample_threshold, NO_FINITE_BOUND, kernel=Mask))
SAMPLERS.register("remdm", Sampler("ReMDM remasking sampler (its own bound: step_map)", False, sample_remdm, BoundRule(
    passed=("eta", "spacing", "decoding", "operators"), ignored=("progress", "device"), translate=_remdm_bound),
    kernel=Mask))
