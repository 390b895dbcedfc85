"""gdds: generalized discrete diffusion from snapshots.

The library a researcher imports: schedules, jump kernels, exact forward noising by
uniformization (:class:`ForwardProcess`), exact transition operators, the model's reverse
chain (:func:`sample`) and its honest likelihood bound (:func:`nll_bound`). Importing it
loads none of the application layers (data, models, objectives, engine, command line);
``ARCHITECTURE.md`` maps them and ``docs/math.md`` states the math.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import kernels, step_grids, unmasking
from .block_sampling import sample_blocks
from .categorical import Decoding
from .corrector import sample_corrector
from .likelihood import nll_bound
from .operators import OperatorSettings
from .process import ForwardProcess, NoisingInfo
from .sampling import sample
from .schedules import SCHEDULES, Cosine, Exponential, Geometric, Linear, LogLinear, Schedule
from .version import __version__

if TYPE_CHECKING:
    from .engine.api import Model

__all__ = [
    "SCHEDULES",
    "Cosine",
    "Decoding",
    "Exponential",
    "ForwardProcess",
    "Geometric",
    "Linear",
    "LogLinear",
    "NoisingInfo",
    "OperatorSettings",
    "Schedule",
    "__version__",
    "kernels",
    "load",
    "nll_bound",
    "sample",
    "sample_blocks",
    "sample_corrector",
    "step_grids",
    "unmasking",
]


def load(path: str, device: str = "auto") -> Model:
    """A trained model, text in and text out: a model folder (``gdds export``), a run folder or a
    model in the local Hugging Face cache; see :class:`gdds.engine.api.Model` (``sample``,
    ``nll_bound``, ``tokenizer``, ``process``, ``denoiser``). The engine is imported on the first
    call, so ``import gdds`` stays light (ARCHITECTURE.md)."""
    from .engine.api import Model

    return Model.load(path, device)
