"""Jump kernels ``F_t`` (column-stochastic; column ``x`` is the law of a jump from ``x``;
``docs/math.md`` section 3). :data:`KERNELS` is the registry of the kernels a configuration
can name; the others (dense, sparse, mixtures) are built from matrices in code."""
from .absorbing import Absorbing
from .base import Kernel, TeleportSplit, check_column_stochastic, require_column_constant
from .dense import Dense
from .knn import cached_knn_graph, knn_graph
from .mask import Mask
from .mixture import Hybrid, Mixture
from .registry import KERNELS, KernelRecipe, Vocabulary
from .semantic_knn import SemanticKNN, SemanticSettings, TemperedKNN, log_affinity
from .sparse import Sparse
from .uniform import Uniform

__all__ = [
    "KERNELS",
    "Absorbing",
    "Dense",
    "Hybrid",
    "Kernel",
    "KernelRecipe",
    "Mask",
    "Mixture",
    "SemanticKNN",
    "SemanticSettings",
    "Sparse",
    "TeleportSplit",
    "TemperedKNN",
    "Uniform",
    "Vocabulary",
    "cached_knn_graph",
    "check_column_stochastic",
    "knn_graph",
    "log_affinity",
    "require_column_constant",
]
