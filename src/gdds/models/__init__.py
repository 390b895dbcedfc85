"""Networks: the denoiser ``(x_t [B, L], t [B]) -> logits [B, L, m]`` (:class:`DiT`) and its
block-diffusion form (:class:`BlockDiT`), the
autoregressive baseline on the same blocks (:class:`CausalLM`) and the two-stream network of
the Campbell estimator (:class:`TwoStream`), and the named sizes (:data:`PRESETS`). Models import
nothing from the rest of gdds but the leaf modules (:mod:`gdds.registry`) and :mod:`gdds.categorical`
(no kernels, no processes, no data)."""
from .block import BlockDiT
from .causal import CausalLM
from .config import PRESETS, DiTConfig
from .dit import DiT
from .two_stream import TwoStream

__all__ = ["PRESETS", "BlockDiT", "CausalLM", "DiT", "DiTConfig", "TwoStream"]
