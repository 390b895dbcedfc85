"""Sampling a loaded run and decoding the samples: :func:`generate`, the one function that ``gdds sample``,
``gdds eval`` and the Python API (:func:`gdds.load`'s ``sample``) draw text through."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ...categorical import Generators
from ...samplers import DENOISER
from ..build import LoadedRun


def generate(loaded: LoadedRun, num: int, steps: int, seed: int = 0, length: int | None = None,
             prompt: Sequence[int] = (), sampler: str | None = None, *,
             prompts: Sequence[Sequence[int]] | None = None, **options: Any) -> tuple[Tensor, list[str]]:
    """``num`` sequences (``length`` tokens, default the training length) from ``sampler`` (default the
    method's: :meth:`gdds.objectives.Method.generate`, the one door) starting with ``prompt``, or row ``i``
    with ``prompts[i]``, and their decoded texts; a sampler that can show a bar over its steps shows it on
    a terminal. ``seed`` seeds one generator for the batch; with ``prompts``, row ``i`` has its own, seeded
    ``seed + i``, so that it is the one sample of ``prompt=prompts[i]`` with ``seed + i`` (up to the
    network's batch invariance). With the option ``eos`` (the block sampler's stop,
    :func:`gdds.block_sampling.sample_blocks`) each text ends before its first generated end-of-text token."""
    length = loaded.cfg.data.seq_len if length is None else length
    gen: Generators = torch.Generator(device=loaded.device).manual_seed(seed) if prompts is None else \
        [torch.Generator(device=loaded.device).manual_seed(seed + i) for i in range(len(prompts))]
    entry = loaded.method.sampler(sampler)
    if "progress" in entry.options:
        options = {"progress": None, **options}
    denoiser = loaded.denoiser() if entry.source == DENOISER else None  # the bound's function
    with loaded.precision(entry.source):
        ids = loaded.method.generate(loaded.run.model, num, length, steps, gen, prompt, sampler, denoiser,
                                     prompts=prompts, **options).cpu()
    tok = loaded.run.data.tokenizer
    eos = options.get("eos")
    starts = [len(prompt)] * num if prompts is None else [len(row) for row in prompts]
    return ids, [tok.decode(before_eos(row.tolist(), eos, start)) for row, start in zip(ids, starts, strict=True)]


def before_eos(ids: list[int], eos: int | None, start: int) -> list[int]:
    """``ids`` up to (not including) the first ``eos`` at or after ``start`` (all of them without one)."""
    return ids if eos is None or eos not in ids[start:] else ids[:ids.index(eos, start)]
