"""The prior term of every bound on ``-log p(x0)``: ``KL(q_1(.|x0) || p_1)`` summed over positions,
computed once per clean token and process and remembered (:func:`prior_kl`), with the pieces the
discrete-time bound (:mod:`gdds.likelihood`) and the continuous-time bound
(:mod:`gdds.continuous_bound`) share: the KL of two laws per row, sums over the positions that
count, and the move of a batch onto the process's device (:mod:`gdds.devices`).
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from .categorical import one_hot_columns
from .devices import check_generator
from .process import ForwardProcess
from .sampling import reference_prior


def kl_rows(q: Tensor, p: Tensor) -> Tensor:
    """``KL(q || p)`` per row (nats); ``inf`` where ``p`` misses mass of ``q``."""
    terms = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - p.clamp_min(0).log()), torch.zeros_like(q))
    return terms.sum(-1).clamp_min(0.0)



def scored(values: Tensor, keep: Tensor | None) -> Tensor:
    """Per-position values ``[B, L]`` summed over the positions that count: ``[B]``."""
    return (values if keep is None else torch.where(keep, values, 0.0)).sum(-1)



def on_process(process: ForwardProcess, x0: Tensor, keep: Tensor | None,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
    """``x0`` and ``keep`` on the process's device, where ``generator`` must be too
    (:mod:`gdds.devices`)."""
    check_generator(generator, process.device)
    return x0.to(process.device), None if keep is None else keep.to(process.device)



def prior_kl(process: ForwardProcess, x0: Tensor, reference: Tensor | None = None,
             keep: Tensor | None = None) -> Tensor:
    """``KL(q_1(.|x0) || p_1)`` summed over positions (where ``keep``): ``[B]`` nats (exact). The term of
    each clean token is computed once per process (for the default ``p_1``) and remembered: it needs
    ``P_{0->1} e_y``, the longest operator of the bound."""
    x0, keep = on_process(process, x0, keep)
    return scored(_prior_terms(process, x0.unique(), reference)[x0], keep)


_PRIOR_TERMS: weakref.WeakKeyDictionary[ForwardProcess, Tensor] = weakref.WeakKeyDictionary()


def _prior_terms(process: ForwardProcess, tokens: Tensor, reference: Tensor | None) -> Tensor:
    """``[m]`` float64 on the process's device: ``KL(q_1(.|y) || p_1)`` at least for every ``y`` of
    ``tokens`` (the others NaN, or remembered from earlier calls when ``reference`` is the default)."""
    p1 = reference_prior(process, reference).to(tokens.device)
    known = _PRIOR_TERMS.get(process) if reference is None else None
    if known is None:
        known = torch.full((process.m,), math.nan, dtype=torch.float64, device=tokens.device)
    known = known.to(tokens.device)
    new = tokens[torch.isnan(known[tokens])]
    if new.numel():
        q1 = process.transition(one_hot_columns(new, process.m), 0.0, 1.0).T
        known[new] = kl_rows(q1, p1.expand_as(q1))
    if reference is None:
        _PRIOR_TERMS[process] = known
    return known

