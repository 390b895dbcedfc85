"""Summaries of per-sequence bound estimates: nats per token with a Monte-Carlo standard error
(:func:`summarize`, a ratio of sums and its delta-method error) and the paired difference of two
estimates on the same sequences and draws (:func:`paired_difference`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class BoundSummary:
    """Per-token summary of per-sequence bound estimates (an upper bound on the NLL)."""

    nats_per_token: float
    standard_error: float
    tokens: int
    steps: int | None

    @property
    def perplexity(self) -> float:
        """``exp(bound)``: an upper bound on the model's perplexity."""
        return math.exp(self.nats_per_token)

    def bits_per_character(self, characters: int) -> float:
        """The bound in bits per character of text that holds ``characters`` characters (the
        tokens' count without BOS, EOS or padding for a character-level tokenizer)."""
        return self.nats_per_token * self.tokens / characters / math.log(2)


def summarize(estimates: Tensor, tokens_per_sequence: Tensor, steps: int | None = None) -> BoundSummary:
    """Nats/token (ratio of sums) and its Monte-Carlo standard error (delta method)."""
    est = estimates.double().cpu()
    n = tokens_per_sequence.double().cpu()
    if est.numel() < 2:
        raise ValueError("need at least two sequences for a standard error")
    ratio = float(est.sum() / n.sum())
    resid = est - ratio * n
    se = float(resid.std(unbiased=True) * math.sqrt(est.numel()) / n.sum())
    return BoundSummary(ratio, se, int(n.sum()), steps)


def paired_difference(a: Tensor, b: Tensor, tokens_per_sequence: Tensor) -> BoundSummary:
    """``A - B`` in nats/token from two per-sequence estimates on the same sequences (e.g. two
    denoisers' :func:`nll_bound` with the same draws, or two models' bounds on the same blocks), with
    the standard error of the per-sequence differences: what sequences and draws share cancels.
    Unbiased for the difference of the two expectations; the standard error is the delta-method one of
    :func:`summarize` (tested on a pair of denoisers with a known difference,
    ``tests/inference/test_paired_difference.py``)."""
    if a.shape != b.shape or a.shape != tokens_per_sequence.shape:
        raise ValueError(f"paired estimates need one value per sequence each; got shapes {tuple(a.shape)}, "
                         f"{tuple(b.shape)} and tokens {tuple(tokens_per_sequence.shape)}")
    return summarize(a.double().cpu() - b.double().cpu(), tokens_per_sequence)
