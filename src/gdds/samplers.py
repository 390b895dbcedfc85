"""The registry of samplers (``docs/sampling.md``): :data:`SAMPLERS`, the one list from which
:meth:`gdds.objectives.Method.generate`, ``gdds sample --sampler``, ``gdds decode-bench`` and the labels of
samples choose. Each entry (:class:`Sampler`) says what it draws from, whether it draws from the model's own
law, which kernel it needs, the options it takes, and whether :func:`gdds.nll_bound` scores the chain it
samples (:class:`BoundRule`). The samplers register themselves where they are defined: the exact chain, the
renoise and ancestral samplers in :mod:`gdds.sampling`, ``blocks`` in :mod:`gdds.block_sampling`, ``corrector``
in :mod:`gdds.corrector`, the mask kernel's in :mod:`gdds.unmasking`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .categorical import Decoding
from .kernels.base import Kernel
from .process import ForwardProcess
from .registry import Registry


class SamplerError(ValueError):
    """A sampler a method cannot use, or an option the sampler does not accept; the message lists
    what applies."""


DENOISER, NETWORK, CAUSAL = "denoiser", "network", "causal"
"""What a sampler draws from (:attr:`Sampler.source`): the model as a denoiser, a block-diffusion network
(with ``denoise=``), or a causal model itself."""

SUPPLIED = ("steps", "generator", "fixed")
"""What every sampler receives from :meth:`gdds.objectives.Method.generate` after its four positional
arguments ``(process, source, num, length)``; the rest of its keywords are its options (but ``denoise``,
which a sampler that takes the network receives too)."""

@dataclass(frozen=True)
class BoundRule:
    """Whether a sampler's chain is the one :func:`gdds.nll_bound` scores: ``reason`` why it is not
    (``None``: it is), the sampler's options handed to ``nll_bound`` as they are (``passed``), and those
    that leave the chain's law unchanged (``ignored``). Any other option, or a ``decoding`` that is not
    neutral and not passed, changes the chain to one the bound does not take."""

    reason: str | None = None
    passed: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    translate: Callable[[ForwardProcess, dict[str, Any]], dict[str, Any]] | None = None

    def keywords(self, process: ForwardProcess, options: Mapping[str, Any]) -> dict[str, Any] | str:
        """The keywords of :func:`gdds.nll_bound` that score the chain sampled under ``process`` with
        ``options`` (the ``passed`` ones, turned into the bound's by ``translate`` when the sampler's option
        is not the bound's: ReMDM's ``eta`` becomes a ``step_map``), or the reason there is no bound."""
        if self.reason is not None:
            return self.reason
        neutral = {"decoding"} if options.get("decoding", Decoding()) == Decoding() else set()
        changing = sorted(set(options) - set(self.passed) - set(self.ignored) - neutral)
        if changing:
            return f"no bound: the option {changing[0]} changes the chain, and nll_bound does not take it"
        passed = {k: options[k] for k in self.passed if k in options}
        return passed if self.translate is None else self.translate(process, passed)


@dataclass(frozen=True)
class Sampler:
    """An entry of :data:`SAMPLERS`: ``draw(process, source, num, length, steps=, generator=, fixed=,
    **options)``, where ``source`` is what :attr:`source` names: the model as a denoiser (:data:`DENOISER`),
    the block network itself (:data:`NETWORK`: a reverse chain per block, :mod:`gdds.block_sampling`,
    which also receives ``denoise=``, how the network's logits become the model's denoiser) or the causal
    model itself (:data:`CAUSAL`: no step count, no infilling);
    ``label`` names it in reports, ``exact`` says whether it draws from the model's own law (the
    chain the bound scores, or the exact conditionals); ``options`` are the keywords it accepts
    beyond those every sampler receives, read from ``draw``'s signature; ``kernel``, when set, is the
    kernel class (subclasses included) it needs: the mask-kernel samplers of :mod:`gdds.unmasking`;
    ``bound`` whether and how :func:`gdds.nll_bound` scores its chain (:class:`BoundRule`)."""

    label: str
    exact: bool
    draw: Callable[..., Tensor]
    bound: BoundRule
    source: str = DENOISER
    kernel: type[Kernel] | None = None
    options: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        params = list(inspect.signature(self.draw).parameters.values())[4:]
        supplied = SUPPLIED + (("denoise",) if self.source == NETWORK else ())
        named = tuple(p.name for p in params
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in supplied)
        object.__setattr__(self, "options", named)

    def check(self, options: Iterable[str]) -> None:
        """Refuse options ``draw`` does not accept: :class:`SamplerError` listing those it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise SamplerError(f"the {self.label} does not accept {', '.join(unknown)}; its options are "
                               f"{', '.join(self.options) or 'none'}")

    def applies(self, process: ForwardProcess | None) -> bool:
        """Whether it can draw under ``process`` (any, unless :attr:`kernel` names the kernel it needs)."""
        return self.kernel is None or (process is not None and isinstance(process.kernel, self.kernel))

    def require(self, process: ForwardProcess | None, instead: str = "") -> None:
        """Refuse a ``process`` it does not apply to (:meth:`applies`): :class:`SamplerError` naming the
        kernel it needs and the one given, then ``instead`` (what the caller can use)."""
        if not self.applies(process):
            given = "no forward process" if process is None else f"the {type(process.kernel).__name__} kernel"
            raise SamplerError(f"the {self.label} needs the {self.kernel.__name__} kernel "
                               f"(gdds.kernels.{self.kernel.__name__}), not {given}{instead}")


SAMPLERS: Registry[Sampler] = Registry("sampler")
