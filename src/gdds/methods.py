"""Training methods on one footing: what the network sees, and what its loss means.

Every method trains the same backbone with the same data, optimizer and loop
(:mod:`gdds.train`); a method only says how a clean batch ``x0`` becomes the
network's inputs and how the per-token cross-entropy against ``x0`` is labelled:

- ``gdds`` (:class:`Snapshot`): ``t ~ U[t_min, 1]`` stratified over the batch,
  ``x_t ~ q_t(.|x0)`` by exact uniformization, inputs ``(x_t, t)``; the loss is the
  snapshot cross-entropy of SPEC section 1, **not a likelihood**.
- ``ar`` (:class:`Autoregressive`): inputs ``x0`` itself, read causally by
  :class:`gdds.models.causal.CausalLM`; the loss is the exact negative
  log-likelihood per token, ``-log p(x_i | x_<i)``.

The network's inputs are drawn for the whole (global) micro-batch, so training does
not depend on the number of processes (see :mod:`gdds.train`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .objectives import sample_times
from .process import ForwardProcess

SNAPSHOT_LABEL = "snapshot CE (not a likelihood)"
AR_LABEL = "exact NLL (autoregressive)"
METHODS = ("gdds", "ar")


class Method:
    """How a clean batch becomes network inputs; ``metric`` names the validation number
    (``valid_<metric>``) and ``label`` says what it is."""

    name: str
    metric: str
    label: str

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        """The network's positional arguments for the clean batch ``x0 [B, L]``."""
        raise NotImplementedError


class Snapshot(Method):
    name, metric, label = "gdds", "snapshot_ce", SNAPSHOT_LABEL

    def __init__(self, process: ForwardProcess, t_min: float):
        self.process = process
        self.t_min = t_min

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        t = sample_times(x0.shape[0], self.t_min, generator, x0.device)
        return self.process.sample(x0, t, generator=generator), t


class Autoregressive(Method):
    name, metric, label = "ar", "nll", AR_LABEL

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        return (x0,)

