"""Jump kernels ``F_t`` (column-stochastic; column x = law of a jump from x)."""
from ..data.embeddings import minilm_embeddings
from .base import Kernel, check_column_stochastic
from .dense import Dense
from .knn import cached_knn_graph, default_cache_dir, knn_graph
from .mask import Mask, Uniform
from .mixture import Hybrid, Mixture
from .semantic_knn import SemanticKNN, TemperedKNN, log_affinity
from .sparse import Sparse

__all__ = [
    "Kernel", "check_column_stochastic", "Dense", "Sparse", "Mask", "Uniform", "Hybrid", "Mixture",
    "SemanticKNN", "TemperedKNN", "log_affinity", "minilm_embeddings", "knn_graph", "cached_knn_graph",
    "default_cache_dir",
]
