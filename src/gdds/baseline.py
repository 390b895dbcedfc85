"""Baselines that need no training, to stand beside every bound (``docs/math.md`` section 8).

For text whose tokens were i.i.d. with law ``pi``, the exact posterior of the clean token is

    mu(y | x_t, t) ∝ pi(y) q_t(x_t | y),

the **Bayes-unigram denoiser** (:func:`bayes_unigram`): it uses no context, only what the
forward process says about the token at hand (a token that did not move is copied, a
semantic neighbour points back to its origin). Its ``T``-step bound, computed on the same
blocks and draws as a trained model's, is the bar a model must clear to have learned anything
from context. :func:`unigram_nll` is the exact NLL of the unigram model itself.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .operators import OperatorSettings
from .process import ForwardProcess
from .sampling import LikelihoodWeighted


def unigram_law(counts: Tensor, smoothing: float = 1.0) -> Tensor:
    """``pi(y) ∝ counts[y] + smoothing`` (float64, ``[m]``): add-``smoothing`` estimate from
    token counts, positive everywhere so that every held-out token has a finite NLL."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or (counts < 0).any() or smoothing < 0 or float(counts.sum()) + smoothing <= 0:
        raise ValueError("counts must be a non-negative [m] vector and smoothing >= 0, not all zero")
    law = counts + smoothing
    return law / law.sum()


def unigram_nll(pi: Tensor, x0: Tensor, keep: Tensor | None = None) -> Tensor:
    """Exact ``-log prod_i pi(x0_i)`` per sequence of ``x0 [B, L]`` over the positions ``keep``
    (default all): ``[B]`` float64 nats."""
    nll = -pi.to(x0.device).log()[x0]
    return (nll if keep is None else torch.where(keep, nll, 0.0)).sum(-1)


def bayes_unigram(process: ForwardProcess, pi: Tensor, *, operators: OperatorSettings | None = None
                  ) -> LikelihoodWeighted:
    """The Bayes-unigram denoiser of ``process`` and the clean-token law ``pi [m]``: the forward-likelihood
    parametrization (:class:`gdds.sampling.LikelihoodWeighted`) of a network that says ``log pi`` everywhere,
    so ``mu ∝ pi(y) q_t(x_t | y)`` with the exact ``q_t`` (applied as ``operators`` say). Called, it gives
    those log-probs (unnormalised; ``-inf`` where ``x_t`` cannot come from ``y``); in the sampler and
    the bound the reverse step weights ``pi`` by the ``q_t(x_t | .)`` it computes anyway."""
    if pi.shape != (process.m,):
        raise ValueError(f"pi must have shape [m] = [{process.m}], got {tuple(pi.shape)}")
    log_pi = pi.to(torch.float64).log()

    def network(xt: Tensor, t: Tensor) -> Tensor:
        return log_pi.to(xt.device).expand(*xt.shape, process.m)

    return LikelihoodWeighted(process, network, operators=operators)
