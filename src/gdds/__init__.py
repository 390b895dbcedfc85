"""gdds: generalized discrete diffusion from snapshots.

Exact forward noising by uniformization for any jump kernel, exact transition
operators, and (in later modules) training, sampling and honest likelihood bounds.
"""
from . import kernels
from .process import ForwardProcess, NoisingInfo
from .schedules import Cosine, Exponential, Geometric, Linear, LogLinear, Schedule

__version__ = "0.1.0"

__all__ = [
    "kernels", "ForwardProcess", "NoisingInfo", "Schedule", "LogLinear", "Linear", "Cosine",
    "Exponential", "Geometric", "__version__",
]
