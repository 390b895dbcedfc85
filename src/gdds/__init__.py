"""gdds: generalized discrete diffusion from snapshots.

The library a researcher imports: schedules, jump kernels, exact forward noising by
uniformization (:class:`ForwardProcess`), exact transition operators, the model's reverse
chain (:func:`sample`) and its honest likelihood bound (:func:`nll_bound`). Importing it
loads none of the application layers (data, models, objectives, engine, command line);
``ARCHITECTURE.md`` maps them and ``docs/math.md`` states the math.
"""
from . import kernels
from .likelihood import nll_bound
from .process import ForwardProcess, NoisingInfo
from .sampling import sample
from .schedules import SCHEDULES, Cosine, Exponential, Geometric, Linear, LogLinear, Schedule

__version__ = "0.1.0"

__all__ = [
    "SCHEDULES",
    "Cosine",
    "Exponential",
    "ForwardProcess",
    "Geometric",
    "Linear",
    "LogLinear",
    "NoisingInfo",
    "Schedule",
    "__version__",
    "kernels",
    "nll_bound",
    "sample",
]
