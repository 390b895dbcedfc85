"""The settings of the sampling benchmark (``benchmarks/sampling.py``) and what it measures with:
the full and ``--quick`` sizes, the operator settings compared on the semantic kernel, the stand-in
and DiT denoisers, the kernels, and the ordinary tokens that clean data may hold."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

import gdds
from common import timed
from gdds import OperatorSettings
from gdds.kernels import Kernel, Mask, SemanticKNN, SemanticSettings, Uniform
from gdds.minilm import minilm_kernel
from gdds.models import DiT, DiTConfig

SEED = 0
SCHEDULE_EPS = 1e-3
LOGIT_SCALE = 2.0
KERNELS = ("mask", "uniform", "semantic")
DEFAULT_OPS = OperatorSettings()
CHEAP_OPS = OperatorSettings(step=1.0)


def given(settings: OperatorSettings) -> dict[str, Any]:
    """The operator settings that differ from the defaults, as the results record them."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if getattr(settings, f.name) != f.default}

OPS_LABELS = {
    "default": "series; teleport part in closed form, kNN part frozen on pieces of step=0.5 in Lambda, "
               "Richardson-extrapolated (4th order; ~1e-7 L1 against an ODE solve in the operator tests); "
               "Poisson tail tol=1e-12",
    "cheap": "series as the default with step=1.0 (~1e-5 L1 against the ODE); see operator_accuracy",
    "closed": "closed form (column-constant kernel, O(m) per position; exact up to round-off)",
}
ACCURACY_TIMES = (0.5, 0.75)  # (s, t) of the reverse step compared; spans the teleport sigmoid's midpoint 0.6
ACCURACY_POSITIONS = 4
PROFILE_TOP = 15


@dataclass(frozen=True)
class Sizes:
    """Batch, length, steps (sampler) or T (bound), and repetitions of one measurement."""

    B: int
    L: int
    steps: int
    repeats: int
    warmup: int


@dataclass(frozen=True)
class Setup:
    """Vocabulary and the sizes of every measurement."""

    vocab: str  # "minilm" (WordPiece + MiniLM embeddings, kNN built fresh) or "random" (standard normal)
    m: int
    mask_id: int
    d: int | None  # embedding width for "random"
    k: int
    closed_sampler: Sizes  # mask and uniform kernels, and the DiT row
    semantic_sampler: Sizes
    closed_bound: Sizes  # steps = T of nll_bound
    semantic_bound: Sizes
    dit_preset: str


FULL = Setup(
    "minilm", m=30_522, mask_id=103, d=None, k=64,  # [MASK] = 103
    closed_sampler=Sizes(B=4, L=64, steps=32, repeats=3, warmup=1),
    semantic_sampler=Sizes(B=1, L=16, steps=4, repeats=1, warmup=0),
    closed_bound=Sizes(B=4, L=64, steps=128, repeats=3, warmup=1),
    semantic_bound=Sizes(B=1, L=16, steps=128, repeats=1, warmup=0),
    dit_preset="tiny",
)
QUICK = Setup(
    "random", m=600, mask_id=599, d=16, k=16,
    closed_sampler=Sizes(B=2, L=16, steps=8, repeats=2, warmup=1),
    semantic_sampler=Sizes(B=1, L=8, steps=2, repeats=1, warmup=0),
    closed_bound=Sizes(B=2, L=16, steps=16, repeats=2, warmup=1),
    semantic_bound=Sizes(B=1, L=8, steps=16, repeats=1, warmup=0),
    dit_preset="tiny",
)


def stand_in(B: int, L: int, m: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Denoiser returning fixed random logits ``[B', L', m]`` (a slice of one ``[B, L, m]`` bank)."""
    bank = torch.randn(B, L, m, generator=torch.Generator().manual_seed(SEED + 1)) * LOGIT_SCALE

    def denoiser(x: Tensor, t: Tensor) -> Tensor:
        return bank[: x.shape[0], : x.shape[1]]

    return denoiser


def tiny_dit(m: int, L: int, preset: str) -> Callable[[Tensor, Tensor], Tensor]:
    """A freshly initialised DiT (eval mode) as a denoiser returning logits."""
    torch.manual_seed(SEED)
    model = DiT(DiTConfig.preset(preset, vocab_size=m, max_len=L)).eval()

    def denoiser(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t)

    denoiser.parameters = model.num_parameters()  # type: ignore[attr-defined]
    return denoiser


def build_kernel(name: str, setup: Setup, schedule: gdds.Schedule, cache_dir: str) -> tuple[Kernel, float]:
    """The kernel and its construction time (the semantic kNN graph is built cold in ``cache_dir``)."""
    if name == "mask":
        return timed(lambda: Mask(setup.m, setup.mask_id))
    if name == "uniform":
        return timed(lambda: Uniform(setup.m))
    if setup.vocab == "minilm":
        return timed(lambda: minilm_kernel(schedule=schedule, cache_dir=cache_dir, progress=False))
    emb = torch.randn(setup.m, setup.d, generator=torch.Generator().manual_seed(SEED))
    return timed(lambda: SemanticKNN(emb, SemanticSettings(k=setup.k), schedule=schedule, cache_dir=cache_dir,
                                     progress=False))


def ordinary_tokens(setup: Setup) -> Tensor:
    """Ids that clean data may hold: not the mask id, nor (WordPiece) a bracketed special token."""
    banned = {setup.mask_id}
    if setup.vocab == "minilm":
        from gdds.data import wordpiece_special_ids

        banned |= set(wordpiece_special_ids())
    keep = torch.ones(setup.m, dtype=torch.bool)
    keep[sorted(banned)] = False
    return keep.nonzero().reshape(-1)
