"""The kernels a configuration can name (``process.kernel``), and how each is built on a
vocabulary. Dense, sparse and mixture kernels take matrices or functions and are built in
code, so they are not listed here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..registry import Registry
from ..schedules import Schedule
from .base import Kernel
from .mask import Mask
from .mixture import Hybrid
from .semantic_knn import DEFAULT_BANDWIDTH_K, DEFAULT_K, SemanticKNN
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


def _semantic(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool, **args: Any) -> Kernel:
    """The paper's kernel; in a vocabulary too small for its defaults (k = 64 neighbours, bandwidth
    from the 7th), k is every other candidate token and the bandwidth neighbour at most k (a k or
    bandwidth_k given in ``kernel_args`` is kept as given)."""
    candidates = v.size - len(set(v.special_ids) & set(range(v.size)))
    args.setdefault("k", min(DEFAULT_K, candidates - 1))
    args.setdefault("bandwidth_k", min(DEFAULT_BANDWIDTH_K, args["k"]))
    return SemanticKNN(embeddings, schedule=schedule, exclude=list(v.special_ids), progress=progress, **args)


def _semantic_absorb(v: Vocabulary, schedule: Schedule, embeddings: Tensor | None, progress: bool,
                     **args: Any) -> Kernel:
    """The semantic-then-absorb kernel: the paper's kernel whose teleport lands on the mask."""
    return _semantic(v, schedule, embeddings, progress, teleport_to="mask", mask_id=v.mask_id, **args)


KERNELS: Registry[KernelRecipe] = Registry("kernel")
KERNELS.register("semantic", KernelRecipe("kNN", _semantic, needs_embeddings=True))
KERNELS.register("semantic-absorb", KernelRecipe("kNN early, absorbing mask late", _semantic_absorb,
                                                 needs_embeddings=True))
KERNELS.register("mask", KernelRecipe("absorbing", _mask))
KERNELS.register("uniform", KernelRecipe("over non-special tokens", _uniform))
KERNELS.register("hybrid", KernelRecipe("mask/uniform mixture", _hybrid))
