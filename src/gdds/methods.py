"""Training methods on one footing: what the network sees, and what its loss means.

Every method trains the same backbone with the same data, optimizer and loop
(:mod:`gdds.train`); a method only says how a clean batch ``x0`` becomes the
network's inputs and how the per-token cross-entropy against ``x0`` is labelled:

- ``gdds`` (:class:`Snapshot`): ``t ~ U[t_min, 1]`` stratified over the batch,
  ``x_t ~ q_t(.|x0)`` by exact uniformization, inputs ``(x_t, t)``; the loss is the
  snapshot cross-entropy of SPEC section 1, **not a likelihood**.
- ``elbo`` (:class:`ContinuousELBO`): the same inputs, trained on the integrand
  of the continuous-time ELBO (:mod:`gdds.elbo`) for column-constant kernels: MDLM
  with ``process.kernel: mask``, UDLM with ``uniform``, GIDD-style with ``hybrid``.
  The loss leaves out the prior term and ``t < t_min``: a training loss, not a bound.
- ``jump`` (:class:`JumpState`): the same inputs; the network output is read as
  the reverse jump kernel ``J_theta(z | x_t)`` and trained on the path-wise loss of
  the jump-states parametrization (:mod:`gdds.pathwise`), column-constant kernels.
- ``campbell`` (:class:`Campbell`): one uniformization path per sequence, every jump
  a query of the two-stream network (:mod:`gdds.models.two_stream`); the loss is the
  Campbell estimate of the same path-wise loss, any kernel.
- ``ar`` (:class:`Autoregressive`): inputs ``x0`` itself, read causally by
  :class:`gdds.models.causal.CausalLM`; the loss is the exact negative
  log-likelihood per token, ``-log p(x_i | x_<i)``.

Jump-state models (``jump``, ``campbell``) generate only for the mask kernel, where
the true reverse exit rates are known (:func:`denoiser`).

The network's inputs are drawn for the whole (global) micro-batch, so training does
not depend on the number of processes (see :mod:`gdds.train`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .elbo import elbo_integrand
from .objectives import sample_times, snapshot_cross_entropy
from .pathwise import PathBatch, campbell_batch, campbell_loss, jump_denoiser, jump_state_loss
from .process import ForwardProcess

SNAPSHOT_LABEL = "snapshot CE (not a likelihood)"
AR_LABEL = "exact NLL (autoregressive)"
ELBO_LABEL = "continuous-time ELBO integrand, t in [t_min, 1], no prior term (a training loss, not a bound)"
JUMP_LABEL = "path-wise jump-state loss, t in [t_min, 1], theta-free terms left out (a training loss, not a bound)"
CAMPBELL_LABEL = ("Campbell estimate of the path-wise jump-state loss, jumps at t >= t_min, theta-free terms left "
                  "out (a training loss, not a bound)")


class Method:
    """How a clean batch becomes network inputs; ``metric`` names the validation number
    (``valid_<metric>``) and ``label`` says what it is."""

    name: str
    metric: str
    label: str

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        """The network's positional arguments for the clean batch ``x0 [B, L]``."""
        raise NotImplementedError

    def model_args(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        """The part of ``inputs`` the network is called with (by default all of it)."""
        return inputs

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        """Per-position loss ``[B, L]``; by default the cross-entropy of ``x0``."""
        return snapshot_cross_entropy(logits, x0)


class Noised(Method):
    """A method that trains on the forward process ``process`` at times ``t >= t_min``."""

    def __init__(self, process: ForwardProcess, t_min: float):
        self.process = process
        self.t_min = t_min


class Snapshot(Noised):
    name, metric, label = "gdds", "snapshot_ce", SNAPSHOT_LABEL

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        t = sample_times(x0.shape[0], self.t_min, generator, x0.device)
        return self.process.sample(x0, t, generator=generator), t


class ClosedFormLoss(Snapshot):
    """Snapshot inputs ``(x_t, t)`` and a per-position loss ``loss(process, logits, x_t, x0, t)``
    that needs ``q_t(.|x0)`` in closed form, so a column-constant kernel; ``t >= 1e-6``."""

    loss: Callable[[ForwardProcess, Tensor, Tensor, Tensor, Tensor], Tensor]
    other_kernels: str  # what to use for a kernel that is not column-constant

    def __init__(self, process: ForwardProcess, t_min: float):
        if not process.kernel.column_constant:
            raise ValueError(f"method {self.name} needs q_t(.|x0) in closed form (a column-constant kernel: mask, "
                             f"uniform, hybrid); got {process.kernel!r}: {self.other_kernels}")
        super().__init__(process, max(t_min, 1e-6))

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        xt, t = inputs
        return type(self).loss(self.process, logits, xt, x0, t)


class ContinuousELBO(ClosedFormLoss):
    name, metric, label = "elbo", "elbo_integrand", ELBO_LABEL
    loss, other_kernels = elbo_integrand, "train it with the snapshot objective (method gdds)"


class JumpState(ClosedFormLoss):
    name, metric, label = "jump", "jump_state_loss", JUMP_LABEL
    loss, other_kernels = jump_state_loss, "use method campbell"


class Campbell(Noised):
    name, metric, label = "campbell", "campbell_loss", CAMPBELL_LABEL

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        return campbell_batch(self.process, x0, self.t_min, generator).astuple()

    def model_args(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        return PathBatch(*inputs).model_inputs()

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        return campbell_loss(logits, PathBatch(*inputs), x0.shape[1])


def denoiser(method: str, model: torch.nn.Module, process: ForwardProcess) -> Callable[[Tensor, Tensor], Tensor]:
    """The trained network of ``method`` as a denoiser ``(x_t, t) -> logits or log-probs`` of
    the clean token; jump-state models through :func:`gdds.pathwise.jump_denoiser`
    (ValueError unless the kernel is the mask)."""
    logits = model.snapshot if method == "campbell" else model
    if method in ("jump", "campbell"):
        return jump_denoiser(process, logits)
    return logits


class Autoregressive(Method):
    name, metric, label = "ar", "nll", AR_LABEL

    def inputs(self, x0: Tensor, generator: Optional[torch.Generator]) -> tuple[Tensor, ...]:
        return (x0,)

