"""Training methods on one footing, and :data:`METHODS`, the one list of their names.

Every method trains with the same data, optimizer and loop (:mod:`gdds.engine.train`); a
:class:`Method` owns everything that differs: the network class, how a clean batch ``x0``
becomes the network's inputs, the per-token loss and its label, the model as a denoiser,
how it generates, and which evaluations apply (``docs/math.md`` section 9):

- ``gdds`` (:class:`Snapshot`): ``t ~ U[t_min, 1]`` stratified over the batch,
  ``x_t ~ q_t(.|x0)`` by exact uniformization, inputs ``(x_t, t)``; the loss is the
  snapshot cross-entropy (:mod:`gdds.objectives.snapshot`), **not a likelihood**.
- ``elbo`` (:class:`ContinuousELBO`): the same inputs, trained on the integrand
  of the continuous-time ELBO (:mod:`gdds.objectives.elbo`) for column-constant kernels:
  MDLM with ``process.kernel: mask``, UDLM with ``uniform``, GIDD-style with ``hybrid``.
  The loss leaves out the prior term and ``t < t_min``: a training loss, not a bound.
- ``jump`` (:class:`JumpState`): the same inputs; the network output is read as
  the reverse jump kernel ``J_theta(z | x_t)`` and trained on the path-wise loss of
  the jump-states parametrization (:mod:`gdds.objectives.pathwise`), column-constant kernels.
- ``campbell`` (:class:`Campbell`): one uniformization path per sequence, every jump
  a query of the two-stream network (:class:`gdds.models.TwoStream`); the loss is the
  Campbell estimate of the same path-wise loss, any kernel.
- ``ar`` (:class:`Autoregressive`): inputs ``x0`` itself, read causally by
  :class:`gdds.models.CausalLM`; the loss is the exact negative log-likelihood per token,
  ``-log p(x_i | x_<i)``.

Block diffusion (``model.block_size``, ``docs/block.md``) applies to the methods whose loss is per
position (``gdds``, ``elbo``): each block of ``b`` tokens is noised at its own time, the network
(:class:`gdds.models.BlockDiT`) reads ``(x_t, t [B, n_blocks], x0)``, and each position's loss takes its
block's time. ``jump``, ``campbell`` and ``ar`` refuse it.

Jump-state models (``jump``, ``campbell``) generate only for the mask kernel, where the
true reverse exit rates are known; elsewhere :meth:`Method.denoiser` raises
:class:`NotGenerative`. The network's inputs are drawn for the whole (global) micro-batch,
so training does not depend on the number of processes.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..block_sampling import BLOCK_SAMPLER
from ..categorical import Generators
from ..models import CausalLM, DiT, TwoStream
from ..process import ForwardProcess
from ..registry import Registry
from ..samplers import DENOISER, NETWORK, SAMPLERS, Sampler, SamplerError
from ..sampling import BlockDenoiser, Denoiser
from .elbo import ELBO_INSTEAD, ELBO_NEEDS, elbo_integrand
from .parametrization import AUTO, PARAMETRIZATIONS
from .pathwise import (
    JUMP_INSTEAD,
    JUMP_NEEDS,
    PathBatch,
    campbell_batch,
    campbell_loss,
    jump_denoiser,
    jump_state_loss,
)
from .snapshot import SNAPSHOT_LABEL, block_inputs, block_rows, snapshot_cross_entropy, snapshot_inputs

AR_LABEL = "exact NLL (autoregressive)"
ELBO_LABEL = "continuous-time ELBO integrand, t in [t_min, 1], no prior term (a training loss, not a bound)"
JUMP_LABEL = "path-wise jump-state loss, t in [t_min, 1], theta-free terms left out (a training loss, not a bound)"
CAMPBELL_LABEL = ("Campbell estimate of the path-wise jump-state loss, jumps at t >= t_min, theta-free terms left "
                  "out (a training loss, not a bound)")


class NotGenerative(ValueError):
    """A trained model that cannot be sampled or bounded (e.g. a jump-state model of a process
    whose reverse exit rates are unknown); the message says why."""


class Method:
    """A training method (module docstring). Class attributes: ``name`` (its registry name),
    ``metric`` (the validation number is ``valid_<metric>``) and ``label`` (what that number
    is), ``network`` and ``causal`` (the network class and whether its attention is causal),
    ``noised`` (trains on a forward process), ``exact_likelihood`` (reports an exact NLL, not
    a bound), ``samplers`` (the names in :data:`gdds.samplers.SAMPLERS` that :meth:`generate`
    may use, the default first) and ``preview_sampler`` (the one of the training loop's quick
    samples), ``parametrizations`` (how its output may become ``mu``:
    :data:`gdds.objectives.parametrization.PARAMETRIZATIONS`; the first is the default for an
    absorbing kernel, the last for the others), ``block_diffusion`` (whether it trains block diffusion
    when ``block_size`` is given). A block-diffusion model (``block_size`` set) samples
    block by block only: its ``samplers`` and ``preview_sampler`` are
    :data:`gdds.block_sampling.BLOCK_SAMPLER`'s."""

    name: ClassVar[str]
    metric: ClassVar[str]
    label: ClassVar[str]
    network: ClassVar[type[nn.Module]] = DiT
    causal: ClassVar[bool] = False
    noised: ClassVar[bool] = True
    exact_likelihood: ClassVar[bool] = False
    samplers: ClassVar[tuple[str, ...]] = ("exact", "renoise", "corrector", "ordered", "threshold", "remdm")
    preview_sampler: ClassVar[str] = "renoise"
    parametrizations: ClassVar[tuple[str, ...]] = ("mean",)
    block_diffusion: ClassVar[bool] = False

    def __init__(self, process: ForwardProcess | None, t_min: float = 1e-3, parametrization: str = AUTO,
                 block_size: int | None = None):
        if self.noised and process is None:
            raise ValueError(f"method {self.name} trains on a forward process; pass one")
        self.process = process
        self.t_min = t_min
        self.block_size = self.check_block_size(block_size)  # block diffusion (gdds.models.block) when set
        if block_size is not None:
            self.samplers, self.preview_sampler = (BLOCK_SAMPLER,), BLOCK_SAMPLER
        if parametrization == AUTO:
            absorbing = process is None or process.absorbing
            parametrization = self.parametrizations[0 if absorbing else -1]
        if parametrization not in self.parametrizations:
            raise ValueError(f"method {self.name} supports the parametrizations {', '.join(self.parametrizations)} "
                             f"(model.parametrization), not {parametrization!r}")
        self.parametrization = parametrization
        self._output = PARAMETRIZATIONS.get(parametrization)

    @classmethod
    def check_block_size(cls, block_size: int | None) -> int | None:
        """``block_size`` when the method can train block diffusion with it (or it is ``None``); else a
        ``ValueError`` that says what to change."""
        if block_size is not None and not cls.block_diffusion:
            raise ValueError(f"method {cls.name} does not train block diffusion (model.block_size={block_size}): "
                             "block diffusion needs a loss per position, as the methods gdds and elbo have; train "
                             "one of them, or set model.block_size to null")
        return block_size

    def mu_logits(self, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """The logits of ``mu`` from the network's output at ``(x_t, t)`` under the method's
        parametrization (the same in training, sampling and the bound)."""
        return self._output.logits(self.process, logits, xt, t)

    def inputs(self, x0: Tensor, generator: torch.Generator | None, keep: Tensor | None = None) -> tuple[Tensor, ...]:
        """The network's positional arguments for the clean batch ``x0 [B, L]``; positions where
        ``keep`` is False (padding) are not noised by the methods that noise snapshots."""
        raise NotImplementedError

    def model_args(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        """The part of ``inputs`` the network is called with (by default all of it)."""
        return inputs

    def concat_inputs(self, parts: Sequence[Sequence[Tensor]]) -> tuple[Tensor, ...]:
        """The inputs of several batches as one batch (noise groups drawn apart, trained together)."""
        return tuple(torch.cat(fields) for fields in zip(*parts))

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        """Per-position loss ``[B, L]``; by default the cross-entropy of ``x0``."""
        return snapshot_cross_entropy(logits, x0)

    def denoiser(self, model: nn.Module) -> Denoiser:
        """The trained network as a denoiser ``(x_t, t) -> logits or log-probs`` of the clean
        token, for :func:`gdds.sample` and :func:`gdds.nll_bound`; :class:`NotGenerative` when
        the model has none. A block model's is a :class:`gdds.sampling.BlockDenoiser` (it reads the clean
        blocks before each block), inside the parametrization's wrapper."""
        return self.parametrized(model if self.block_size is None else BlockDenoiser(model, self.block_size))

    def parametrized(self, network: Denoiser) -> Denoiser:
        """The logits ``network(x_t, t)`` as the model's denoiser, under the method's parametrization
        (the block sampler wraps each block's network call in it); :class:`NotGenerative` when the
        model has none."""
        return self._output.denoiser(self.process, network)

    @property
    def continuous_bound_applies(self) -> bool:
        """Whether the continuous-time bound is computed (a column-constant process: closed forms)."""
        return self.process is not None and self.process.column_constant

    @property
    def continuous_bound_finite(self) -> bool:
        """Whether that bound is finite: the reverse step reads ``mu`` only where a jump happened
        (an absorbing kernel), or ``mu`` copies by construction (the forward parametrization).
        Otherwise copy errors cost about ``(1 - mu(x | x)) / t``, whose integral diverges, and the
        ``T``-step bound grows with ``T`` (``docs/math.md`` section 6)."""
        return self.process is not None and (self.process.absorbing or self.parametrization == "forward")

    def sampler(self, name: str | None = None) -> Sampler:
        """The entry of :data:`gdds.samplers.SAMPLERS` named ``name`` (default: the method's first);
        :class:`gdds.samplers.SamplerError` listing the method's samplers when it cannot use it, or those that
        apply to its process when the sampler needs another kernel (:meth:`gdds.samplers.Sampler.require`)."""
        name = self.samplers[0] if name is None else name
        if name not in self.samplers:
            why = "" if self.block_size is None else (
                f" (a block-diffusion model, model.block_size={self.block_size}, is drawn block by block given the "
                "blocks before it; it defines no chain over the whole sequence at once)")
            raise SamplerError(f"method {self.name} samples with {', '.join(self.samplers)}; not {name!r}{why}")
        entry = SAMPLERS.get(name)
        entry.require(self.process, f"; method {self.name} samples this model with {', '.join(self.usable_samplers)}")
        return entry

    @property
    def usable_samplers(self) -> tuple[str, ...]:
        """The names of :attr:`samplers` that apply to the method's process (:meth:`gdds.samplers.Sampler.applies`:
        the mask-kernel samplers only under the mask kernel)."""
        return tuple(name for name in self.samplers if SAMPLERS.get(name).applies(self.process))

    def generate(self, model: nn.Module, num: int, length: int, steps: int, generator: Generators,
                 prompt: Sequence[int] = (), sampler: str | None = None, denoiser: Denoiser | None = None, *,
                 prompts: Sequence[Sequence[int]] | None = None, **options: Any) -> Tensor:
        """``num`` sequences of ``length`` tokens from the sampler named ``sampler`` (:meth:`sampler`;
        the default is the model's own law: its reverse chain in ``steps`` steps, or ancestral
        sampling), starting with the tokens ``prompt`` (``-1`` marks a free position: infilling, for
        the samplers that can), or row ``i`` with ``prompts[i]`` (``num`` of them, of any lengths: batched
        prompts; ``generator`` may then be one per row, :data:`gdds.categorical.Generators`, so that row ``i``
        is what it would be alone). ``options`` are the sampler's (:attr:`gdds.samplers.Sampler.options`;
        others raise :class:`gdds.samplers.SamplerError`); :class:`NotGenerative` for a model
        that cannot be sampled. ``denoiser``: the model as a denoiser, for a sampler that takes one
        (default :meth:`denoiser`; a loaded run passes its own, on its device and under the same
        autocast as its bound, so that samples and bound use one function; the block sampler takes the
        network itself and :meth:`parametrized`, and any length)."""
        entry = self.sampler(sampler)
        entry.check(options)
        fixed = prompt_rows(num, length, prompt, prompts)
        if entry.source == NETWORK:
            options = {"denoise": self.parametrized, **options}
        source = (self.denoiser(model) if denoiser is None else denoiser) if entry.source == DENOISER else model
        return entry.draw(self.process, source, num, length, steps=steps, generator=generator, fixed=fixed,
                          **options)


def prompt_rows(num: int, length: int, prompt: Sequence[int] = (),
                prompts: Sequence[Sequence[int]] | None = None) -> Tensor | None:
    """The ``fixed`` tensor of the samplers (``[num, length]``, ``-1`` = free): ``prompt`` at the start of
    every row, or ``prompts[i]`` at the start of row ``i``; ``None`` when nothing is fixed."""
    if prompts is not None and len(prompt):
        raise ValueError("give one prompt for every sequence or one prompt per sequence (prompts=), not both")
    if prompts is not None and len(prompts) != num:
        raise ValueError(f"{len(prompts)} prompts for {num} sequences: give one prompt per sequence")
    rows = [list(prompt)] * num if prompts is None else [list(row) for row in prompts]
    if not any(rows):
        return None
    fixed = torch.full((num, length), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"the prompt{'' if prompts is None else f' of sequence {i}'} has {len(row)} tokens; "
                             f"the length is {length}")
        fixed[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return fixed


class Snapshot(Method):
    """The snapshot objective of GDDS (paper section 4.3): any kernel."""

    name, metric, label = "gdds", "snapshot_ce", SNAPSHOT_LABEL
    parametrizations = ("mean", "forward-surrogate", "forward")
    block_diffusion = True

    def inputs(self, x0: Tensor, generator: torch.Generator | None, keep: Tensor | None = None) -> tuple[Tensor, ...]:
        """``(x_t, t [B])``; with a block size ``(x_t, t [B, n_blocks], x0)``, each block at its own time
        (:func:`gdds.objectives.snapshot.block_inputs`)."""
        if self.block_size is None:
            xt, t = snapshot_inputs(self.process, x0, self.t_min, generator)
            return (xt if keep is None else torch.where(keep, xt, x0)), t
        xt, t, x0 = block_inputs(self.process, x0, self.block_size, self.t_min, generator)
        return (xt if keep is None else torch.where(keep.to(x0.device), xt, x0)), t, x0

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        """The per-position loss, every position at its own block's time (one time per row:
        :func:`gdds.objectives.snapshot.block_rows`)."""
        rows = block_rows(logits, inputs[0], inputs[1], x0)
        return self.row_loss(*rows).reshape(x0.shape)

    def row_loss(self, logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """The per-position loss ``[N, n]`` of rows ``xt``, ``x0 [N, n]`` at times ``t [N]``."""
        return self._output.cross_entropy(self.process, logits, xt, t, x0)


class ClosedFormLoss(Snapshot):
    """Snapshot inputs ``(x_t, t)`` and a per-position loss ``loss(process, logits, x_t, x0, t)``
    that needs ``q_t(.|x0)`` in closed form, so a column-constant kernel; ``t >= 1e-6``."""

    loss: ClassVar[Callable[[ForwardProcess, Tensor, Tensor, Tensor, Tensor], Tensor]]
    needs: ClassVar[str]
    instead: ClassVar[str]  # what to use for a kernel that is not column-constant

    def __init__(self, process: ForwardProcess | None, t_min: float = 1e-3, parametrization: str = AUTO,
                 block_size: int | None = None):
        if process is not None:
            process.require_column_constant(f"method {self.name} ({self.needs})", self.instead)
        super().__init__(process, max(t_min, 1e-6), parametrization, block_size)

    def row_loss(self, logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return type(self).loss(self.process, self.mu_logits(logits, xt, t), xt, x0, t)


class ContinuousELBO(ClosedFormLoss):
    """The continuous-time ELBO integrand: MDLM, UDLM, GIDD-style (column-constant kernels)."""

    name, metric, label = "elbo", "elbo_integrand", ELBO_LABEL
    loss, needs, instead = elbo_integrand, ELBO_NEEDS, ELBO_INSTEAD


class JumpState(ClosedFormLoss):
    """The path-wise jump-state loss in closed form (column-constant kernels)."""

    name, metric, label = "jump", "jump_state_loss", JUMP_LABEL
    parametrizations = ("mean",)  # the output is a jump kernel, not mu
    block_diffusion = False
    loss, needs, instead = jump_state_loss, JUMP_NEEDS, JUMP_INSTEAD

    def parametrized(self, network: Denoiser) -> Denoiser:
        return _jump_denoiser(self.process, network)


class Campbell(Method):
    """The Campbell estimator of the path-wise loss with the two-stream network: any kernel."""

    name, metric, label = "campbell", "campbell_loss", CAMPBELL_LABEL
    network = TwoStream

    def inputs(self, x0: Tensor, generator: torch.Generator | None, keep: Tensor | None = None) -> tuple[Tensor, ...]:
        """One path per sequence; padding is noised like any position (only its loss is left out)."""
        return campbell_batch(self.process, x0, self.t_min, generator).astuple()

    def model_args(self, inputs: Sequence[Tensor]) -> Sequence[Tensor]:
        return PathBatch(*inputs).model_inputs()

    def concat_inputs(self, parts: Sequence[Sequence[Tensor]]) -> tuple[Tensor, ...]:
        """Path batches of different widths padded to the widest (padding is inert), then joined."""
        return PathBatch.concat([PathBatch(*p) for p in parts]).astuple()

    def token_loss(self, logits: Tensor, x0: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        return campbell_loss(logits, PathBatch(*inputs), x0.shape[1])

    def denoiser(self, model: nn.Module) -> Denoiser:
        return self.parametrized(model.snapshot)

    def parametrized(self, network: Denoiser) -> Denoiser:
        return _jump_denoiser(self.process, network)


def _jump_denoiser(process: ForwardProcess, logits: Denoiser) -> Denoiser:
    """:func:`gdds.objectives.pathwise.jump_denoiser`, its refusal as :class:`NotGenerative`."""
    try:
        return jump_denoiser(process, logits)
    except ValueError as exc:
        raise NotGenerative(str(exc)) from exc


class Autoregressive(Method):
    """Left-to-right language model on the same blocks: exact NLL, ancestral sampling."""

    name, metric, label = "ar", "nll", AR_LABEL
    network, causal, noised, exact_likelihood = CausalLM, True, False, True
    samplers, preview_sampler = ("ancestral",), "ancestral"

    def inputs(self, x0: Tensor, generator: torch.Generator | None, keep: Tensor | None = None) -> tuple[Tensor, ...]:
        return (x0,)

    def denoiser(self, model: nn.Module) -> Denoiser:
        raise NotGenerative("an autoregressive model is not a denoiser: it is scored exactly and sampled "
                            "ancestrally")


METHODS: Registry[type[Method]] = Registry("method")
METHODS.register(Snapshot.name, Snapshot)
METHODS.register(ContinuousELBO.name, ContinuousELBO)
METHODS.register(JumpState.name, JumpState)
METHODS.register(Campbell.name, Campbell)
METHODS.register(Autoregressive.name, Autoregressive)
