"""The kernels a configuration can name (``process.kernel``), and how each is built on a
vocabulary. Dense, sparse and mixture kernels take matrices or functions and are built in
code, so they are not listed here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..registry import Registry
from ..schedules import Schedule
from .base import Kernel
from .mask import Mask
from .mixture import Hybrid
from .semantic_knn import DEFAULT_BANDWIDTH_K, DEFAULT_K, SemanticKNN, SemanticSettings
from .uniform import Uniform


@dataclass(frozen=True)
class Vocabulary:
    """What a kernel needs to know about the token ids: their number, the mask id and the
    special ids (never a jump destination of the uniform and semantic kernels)."""

    size: int
    mask_id: int
    special_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class KernelRecipe:
    """``build(vocabulary, schedule, embeddings, progress, **kernel_args)``; ``embeddings`` is
    ``None`` unless ``needs_embeddings``. ``description`` is shown in listings."""

    description: str
    build: Callable[..., Kernel]
    needs_embeddings: bool = False


def _mask(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, **args: Any) -> Kernel:
    return Mask(v.size, v.mask_id, **args)


def _uniform(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, **args: Any) -> Kernel:
    return Uniform(v.size, exclude=list(v.special_ids), **args)


def _hybrid(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, **args: Any) -> Kernel:
    return Hybrid(v.size, v.mask_id, **args)


def semantic_settings(vocabulary: Vocabulary, **kernel_args: Any) -> SemanticSettings:
    """The semantic kernel's settings from a configuration's ``kernel_args`` (fields of
    :class:`~gdds.kernels.SemanticSettings`, by keyword) on ``vocabulary``: in a vocabulary too small for
    the defaults (k = 64 neighbours, bandwidth from the 7th), k is every other candidate token and the
    bandwidth neighbour at most k (a k or bandwidth_k given is kept as given)."""
    candidates = vocabulary.size - len(set(vocabulary.special_ids) & set(range(vocabulary.size)))
    kernel_args.setdefault("k", min(DEFAULT_K, candidates - 1))
    kernel_args.setdefault("bandwidth_k", min(DEFAULT_BANDWIDTH_K, kernel_args["k"]))
    return SemanticSettings(**kernel_args)


def _semantic_knn(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, mask_id: int | None,
                  cache: bool = True, cache_dir: str | Path | None = None, **kernel_args: Any) -> Kernel:
    """:class:`SemanticKNN` on the vocabulary (its special ids excluded), the kNN graph cached unless
    ``cache`` is false (under ``cache_dir``: options of the cache, not of the kernel)."""
    return SemanticKNN(embeddings, semantic_settings(v, **kernel_args), mask_id=mask_id, schedule=schedule,
                       exclude=list(v.special_ids), cache=cache, cache_dir=cache_dir, progress=progress)


def _semantic(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, **args: Any) -> Kernel:
    """The paper's kernel."""
    return _semantic_knn(v, schedule, embeddings, progress, None, **args)


def _semantic_absorb(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool,
                     **args: Any) -> Kernel:
    """The semantic-then-absorb kernel: the paper's kernel whose teleport lands on the mask."""
    return _semantic_knn(v, schedule, embeddings, progress, v.mask_id, teleport_to="mask", **args)


KERNELS: Registry[KernelRecipe] = Registry("kernel")
KERNELS.register("semantic", KernelRecipe("kNN", _semantic, needs_embeddings=True))
KERNELS.register("semantic-absorb", KernelRecipe("kNN early, absorbing mask late", _semantic_absorb,
                                                 needs_embeddings=True))
KERNELS.register("mask", KernelRecipe("absorbing", _mask))
KERNELS.register("uniform", KernelRecipe("over non-special tokens", _uniform))
KERNELS.register("hybrid", KernelRecipe("mask/uniform mixture", _hybrid))
