"""Honest likelihood: the discrete-time ELBO of the chain that is sampled
(``docs/math.md`` section 8).

For a grid ``0 = t_0 < t_1 < ... < t_T = 1`` the model is the ``T``-step reverse
chain of :mod:`gdds.posterior` started from ``p_1 = P_{0->1} pi_ref``, and

    -log p(x0) <= KL(q_1(.|x0) || p_1)
                  + sum_{k=2}^{T} E KL(q(x_{t_{k-1}} | x_{t_k}, x0) || p_theta(x_{t_{k-1}} | x_{t_k}))
                  + E[-log p_theta(x0 | x_{t_1})]

for any ``T``, grid and process. Every function works on the process's device (:mod:`gdds.devices`):
inputs are moved there, generators must be there. :func:`nll_bound` returns one unbiased Monte-Carlo
estimate per sequence (nats): the prior term exactly, one term ``k ~ U{2..T}`` weighted by ``T - 1``
(or all of them with ``all_terms=True``), and the reconstruction term, each with a fresh
``x_t ~ q_t(.|x0)``. The ``k`` of a batch are stratified (a random permutation of ``B`` strata of
``{2..T}`` with one shared uniform shift): each is uniform, so each estimate stays unbiased, and the
batch mean has a lower variance than with independent draws.

Block diffusion (:class:`gdds.sampling.BlockDenoiser`, ``docs/block.md``): ``-log p(x) = sum_k -log
p(x_k | x_<k)``, and each block's term is bounded by the ``T``-step bound of its own chain given the
clean blocks before it. The prior, the KL terms and the reconstruction are sums over positions, so the
bound of a sequence is the sum of its blocks' bounds when every block's chain is scored with the clean
blocks before it as context: the bound calls a block denoiser with the clean rows of the same sequences
(:func:`gdds.sampling.with_context`). All blocks of a sequence share the drawn term ``k`` and its time:
each block's part is an unbiased estimate of that block's bound, so their sum stays an unbiased
estimate of the sum. A plain denoiser reads no context and is called as before.

The continuous-time bounds live in :mod:`gdds.continuous_bound`, the prior term in
:mod:`gdds.prior_term`, the summaries (nats per token, standard errors, paired differences) in
:mod:`gdds.bound_summary`; this module re-exports their names.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .bound_summary import BoundSummary, paired_difference, summarize
from .categorical import Decoding
from .continuous_bound import continuous_bound, masked_continuous_bound
from .operators import DEFAULTS, OperatorSettings
from .posterior import CHUNK_FLOATS, posterior_and_steps, true_posterior
from .prior_term import kl_rows, on_process, prior_kl, scored
from .process import ForwardProcess
from .sampling import Denoiser, StepMap, chain_grid, clean_logits, with_context

StepRule = tuple[OperatorSettings | None, Decoding | None, StepMap | None]
"""What defines the model's reverse step besides its denoiser: the operators, the decoding filters and a change
of each step's law (:data:`gdds.sampling.StepMap`, e.g. ReMDM's remasking)."""

__all__ = ["BoundSummary", "bound_terms", "continuous_bound", "masked_continuous_bound", "nll_bound",
           "paired_difference", "prior_kl", "stratified_terms", "summarize", "term_probs"]


def _law(denoiser: Denoiser, xt: Tensor, t: float, x0: Tensor) -> tuple[Tensor, bool]:
    """What the reverse step reads from the denoiser per position, ``[B * L, m]`` float64 on ``xt``'s
    device (whatever device the denoiser answers on), and whether it is weights to be weighted by
    ``q_t(x_t | .)`` (:func:`gdds.sampling.clean_logits`). ``x0``: the clean tokens of the same rows,
    the context a block denoiser reads (:func:`gdds.sampling.with_context`)."""
    logits, weighted = clean_logits(with_context(denoiser, x0), xt,
                                    torch.full((xt.shape[0],), t, device=xt.device))
    return torch.softmax(logits.double(), dim=-1), weighted


def _posterior_and_steps(process: ForwardProcess, laws: list[tuple[Tensor, bool]], x0: Tensor, xt: Tensor, s: float,
                         t: float, chain: StepRule) -> tuple[Tensor, list[Tensor]]:
    """The true posterior ``q(x_s | x_t, x0)`` (accurate operators) and each model's step
    ``p_theta(x_s | x_t)`` (the chain's operators and decoding) for the denoisers' ``laws`` (:func:`_law`); one
    pass over the operators, shared by all, when the chain's operators are the default
    (:func:`gdds.posterior.posterior_and_steps`)."""
    op, decoding, _ = chain
    if op in (None, DEFAULTS):
        q, steps = posterior_and_steps(process, laws, x0, xt, s, t, decoding)
    else:
        q, steps = true_posterior(process, x0, xt, s, t), posterior_and_steps(process, laws, None, xt, s, t, decoding,
                                                                              operators=op)[1]
    return q, _mapped(steps, chain, xt, s, t)


def _mapped(steps: list[Tensor], chain: StepRule, xt: Tensor, s: float, t: float) -> list[Tensor]:
    """The model's steps ``[n, m]`` at ``xt [n]`` changed by the chain's step map (as :func:`gdds.sampling.sample`
    changes the law it draws from)."""
    step_map = chain[2]
    return steps if step_map is None else [step_map(p, xt, s, t) for p in steps]


def stratified_terms(batch: int, steps: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", probs: Tensor | None = None) -> Tensor:
    """Term indices ``k [batch]`` in ``{2..T}``: sequence ``b`` takes stratum ``perm[b]`` of
    ``batch`` equal strata, shifted by one shared uniform. Each ``k`` is uniform (or drawn from
    ``probs [T - 1]``, the law of ``k = 2..T``), so each estimate stays unbiased, and the batch
    covers the grid; an i.i.d. standard error of the batch mean is then conservative."""
    strata = (torch.randperm(batch, generator=generator, device=device)
              + torch.rand(1, generator=generator, device=device)) / batch
    if probs is None:
        return (2 + (strata * (steps - 1)).floor().long()).clamp_max(steps)
    cdf = torch.cumsum(probs.to(device=device, dtype=torch.float64), 0)
    return 2 + torch.searchsorted(cdf / cdf[-1], strata.double(), right=True).clamp_max(steps - 2)


def term_probs(pilot: Tensor, floor: float = 0.05) -> Tensor:
    """A law of the drawn term ``k = 2..T`` from a pilot of the terms (``[n, T + 1]`` as
    :func:`bound_terms` gives, or ``[T - 1]`` sizes): ``q_k`` proportional to the root mean square
    of term ``k`` (the variance-minimising choice for one drawn term), mixed with the uniform law
    (weight ``floor``) so that no term is left out. For ``nll_bound(..., term_probs=q)``."""
    sizes = pilot[:, 2:].double().pow(2).mean(0).sqrt() if pilot.dim() == 2 else pilot.double().abs()
    if sizes.numel() < 1 or not bool(torch.isfinite(sizes).all()):
        raise ValueError("the pilot must hold finite terms for k = 2..T")
    total = float(sizes.sum())
    q = sizes / total if total > 0 else torch.full_like(sizes, 1.0 / sizes.numel())
    return (1 - floor) * q + floor / sizes.numel()


@torch.no_grad()
def nll_bound(
    process: ForwardProcess,
    denoiser: Denoiser | Sequence[Denoiser],
    x0: Tensor,
    steps: int | None = None,
    *,
    spacing: str = "t",
    grid: Sequence[float] | None = None,
    decoding: Decoding | None = None,
    all_terms: bool = False,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
    keep: Tensor | None = None,
    term_probs: Tensor | None = None,
    operators: OperatorSettings | None = None,
    step_map: StepMap | None = None,
) -> Tensor:
    """One unbiased estimate per sequence of the ``steps``-step bound on ``-log p(x0)``:
    ``[B]`` float64 nats. Valid for any kernel and any ``steps`` (module docstring). Given a list of
    denoisers, ``[D, B]``: each is bounded on the same draws (term indices and ``x_t``), and what
    their reverse steps share (the true posterior, ``r``, ``g``) is computed once, so pairing a model
    with its no-training baseline costs less than two bounds.

    The one drawn term ``k`` is uniform on ``{2..T}`` and weighted by ``T - 1``, or, with
    ``term_probs`` (``[T - 1]`` positive, e.g. :func:`term_probs` of a pilot), drawn from that law
    and weighted by ``1 / q_k`` (importance sampling: the same expectation, less variance when
    ``q`` follows the sizes of the terms).

    The grid is ``steps`` (default 128) steps uniform in ``t`` or ``Lambda`` (``spacing``), or ``grid``,
    explicit decreasing times from 1 to 0 (:func:`gdds.sampling.chain_grid`): the bound on a grid scores
    exactly the chain :func:`gdds.sample` draws on that grid (a fitted one, :func:`gdds.step_grids.fitted_grid`,
    included). ``decoding`` (:class:`gdds.Decoding`) scores the chain sampled with those filters of ``mu``:
    a filtered model is **another model** than the one trained, and this is a valid bound on **its** NLL
    (not on the unfiltered model's); the neutral ``Decoding()`` gives the plain bound bit for bit. ``step_map``
    (:data:`gdds.sampling.StepMap`) scores the chain whose every step's law it changes, as a sampler built on
    the exact chain draws it (ReMDM's remasking, :func:`gdds.unmasking.remasking_map`): the discrete-time ELBO
    holds for any reverse Markov chain on the grid, so this is a valid bound on that chain's NLL.

    ``operators`` (:class:`gdds.OperatorSettings`) defines the model's reverse chain, exactly as in
    :func:`gdds.sampling.sample`; the true posterior always uses the accurate defaults. ``keep``
    (``[B, L]`` bool) marks the positions that count: the others (padding) are held at their clean
    token in every ``x_t`` (as fixed positions of the sampler) and add nothing, which bounds
    ``-log p`` of the kept tokens given the others."""
    dens, single = _denoisers(denoiser)
    times = chain_grid(process, steps, spacing, grid, default=128)[::-1]  # increasing: t_0 = 0, ..., t_T = 1
    steps = len(times) - 1
    if all_terms:
        return bound_terms(process, denoiser, x0, grid=times[::-1], decoding=decoding, reference=reference,
                           generator=generator, keep=keep, operators=operators, step_map=step_map).sum(-1)
    if term_probs is not None and (term_probs.shape != (max(steps - 1, 0),) or not bool((term_probs > 0).all())):
        raise ValueError(f"term_probs must be [steps - 1] = [{steps - 1}] positive probabilities (a zero would "
                         "leave a term out and bias the bound)")
    out = _in_groups(process, x0, keep, generator, lambda x, k: _sampled_bound(
        process, dens, x, k, times, reference, generator, (operators, decoding, step_map), term_probs))
    return out[0] if single else out


def _denoisers(denoiser: Denoiser | Sequence[Denoiser]) -> tuple[list[Denoiser], bool]:
    """The denoisers to bound together, and whether a single one was given (not in a list)."""
    if isinstance(denoiser, (list, tuple)):
        if not denoiser:
            raise ValueError("give at least one denoiser to bound")
        return list(denoiser), False
    return [denoiser], True



def _in_groups(process: ForwardProcess, x0: Tensor, keep: Tensor | None, generator: torch.Generator | None,
               fn: Any) -> Tensor:
    """``fn(x0, keep)`` over groups of sequences, on the process's device, so that ``[B * L, m]``
    float64 is never held for large batches."""
    x0, keep = on_process(process, x0, keep, generator)
    if x0.dim() != 2:
        raise ValueError(f"x0 must be [B, L] token ids, got shape {tuple(x0.shape)}")
    if keep is not None and keep.shape != x0.shape:
        raise ValueError(f"keep must have the shape of x0 {tuple(x0.shape)}, got {tuple(keep.shape)}")
    group = max(1, CHUNK_FLOATS // max(1, x0.shape[1] * process.m))
    return torch.cat([fn(x0[a:a + group], None if keep is None else keep[a:a + group])
                      for a in range(0, x0.shape[0], group)], dim=1)


def _noised(process: ForwardProcess, x: Tensor, keep: Tensor | None, t: float,
            generator: torch.Generator | None) -> Tensor:
    xt = process.noise(x, t, generator=generator)
    return xt if keep is None else torch.where(keep, xt, x)


def _term(process: ForwardProcess, dens: list[Denoiser], x: Tensor, keep: Tensor | None, s: float, t: float,
          generator: torch.Generator | None, chain: StepRule) -> Tensor:
    """``KL(q(x_s | x_t, x0) || p_theta(x_s | x_t))`` summed over positions, one fresh ``x_t`` shared by
    the denoisers ``dens``: ``[D, b]``."""
    xt = _noised(process, x, keep, t, generator)
    laws = [_law(d, xt, t, x) for d in dens]
    q, steps = _posterior_and_steps(process, laws, x.reshape(-1), xt.reshape(-1), s, t, chain)
    return torch.stack([scored(kl_rows(q, p).reshape(x.shape), keep) for p in steps])


def _reconstruction(process: ForwardProcess, dens: list[Denoiser], x0: Tensor, keep: Tensor | None, t1: float,
                    generator: torch.Generator | None, chain: StepRule) -> Tensor:
    """``-log p_theta(x0 | x_{t_1})`` summed over positions, one fresh ``x_{t_1}`` shared by the denoisers
    ``dens``: ``[D, B]``."""
    x1 = _noised(process, x0, keep, t1, generator)
    laws = [_law(d, x1, t1, x0) for d in dens]
    _, steps = posterior_and_steps(process, laws, None, x1.flatten(), 0.0, t1, chain[1], operators=chain[0])
    return torch.stack([scored(-p0.gather(1, x0.reshape(-1, 1)).clamp_min(0).log().reshape(x0.shape), keep)
                        for p0 in _mapped(steps, chain, x1.flatten(), 0.0, t1)])


def _sampled_bound(process: ForwardProcess, dens: list[Denoiser], x0: Tensor, keep: Tensor | None, grid: list[float],
                   reference: Tensor | None, generator: torch.Generator | None, chain: StepRule,
                   probs: Tensor | None = None) -> Tensor:
    """The bound with one drawn term on the increasing ``grid`` (``t_0 = 0, ..., t_T = 1``)."""
    steps = len(grid) - 1
    total = prior_kl(process, x0, reference, keep).expand(len(dens), -1).clone()
    if steps >= 2:  # one term per sequence, k ~ U{2..T} (or probs), weighted by 1 / P(k)
        ks = stratified_terms(x0.shape[0], steps, generator, x0.device, probs)
        q = None if probs is None else (probs / probs.sum()).double().tolist()
        for k in ks.unique().tolist():
            rows = ks == k
            weight = steps - 1 if q is None else 1.0 / q[k - 2]
            total[:, rows] += weight * _term(process, dens, x0[rows], None if keep is None else keep[rows],
                                             grid[k - 1], grid[k], generator, chain)
    return total + _reconstruction(process, dens, x0, keep, grid[1], generator, chain)


@torch.no_grad()
def bound_terms(
    process: ForwardProcess,
    denoiser: Denoiser | Sequence[Denoiser],
    x0: Tensor,
    steps: int | None = None,
    *,
    spacing: str = "t",
    grid: Sequence[float] | None = None,
    decoding: Decoding | None = None,
    reference: Tensor | None = None,
    generator: torch.Generator | None = None,
    keep: Tensor | None = None,
    operators: OperatorSettings | None = None,
    step_map: StepMap | None = None,
) -> Tensor:
    """Every term of the ``steps``-step bound, per sequence: ``[B, steps + 1]`` float64 nats,
    column 0 the prior KL, column ``k`` the term of the step ending at ``t_k`` (``k = 1``: the
    reconstruction ``-log p_theta(x0 | x_{t_1})``), each with a fresh ``x_t``. Their sum is an
    estimate of the bound with all terms; the columns show where a model pays. Given a list of
    denoisers, ``[D, B, steps + 1]`` on shared draws (as :func:`nll_bound`). ``grid``, ``decoding`` and
    ``step_map``: as in :func:`nll_bound`."""
    dens, single = _denoisers(denoiser)
    grid = chain_grid(process, steps, spacing, grid, default=128)[::-1]
    steps, chain = len(grid) - 1, (operators, decoding, step_map)

    def terms(x: Tensor, kept: Tensor | None) -> Tensor:
        out = torch.zeros(len(dens), x.shape[0], steps + 1, dtype=torch.float64, device=x.device)
        out[:, :, 0] = prior_kl(process, x, reference, kept)
        for k in range(2, steps + 1):
            out[:, :, k] = _term(process, dens, x, kept, grid[k - 1], grid[k], generator, chain)
        out[:, :, 1] = _reconstruction(process, dens, x, kept, grid[1], generator, chain)
        return out

    out = _in_groups(process, x0, keep, generator, terms)
    return out[0] if single else out


