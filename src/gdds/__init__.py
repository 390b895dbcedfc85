"""gdds: generalized discrete diffusion from snapshots.

Exact forward noising by uniformization for any jump kernel, exact transition
operators, the model's reverse chain (``sample``) and its honest likelihood bound
(``nll_bound``), and training (``gdds.train``).
"""
from . import kernels
from .likelihood import nll_bound
from .process import ForwardProcess, NoisingInfo
from .sampling import sample
from .schedules import Cosine, Exponential, Geometric, Linear, LogLinear, Schedule

__version__ = "0.1.0"

__all__ = [
    "kernels", "ForwardProcess", "NoisingInfo", "Schedule", "LogLinear", "Linear", "Cosine",
    "Exponential", "Geometric", "sample", "nll_bound", "__version__",
]
