"""Networks: the denoiser ``(x_t [B, L], t [B]) -> logits [B, L, m]`` (SPEC section 1, 4)
and the autoregressive baseline on the same blocks."""
from .causal import CausalLM
from .dit import PRESETS, DiT, DiTConfig
from .two_stream import TwoStream

__all__ = ["CausalLM", "DiT", "DiTConfig", "PRESETS", "TwoStream"]
