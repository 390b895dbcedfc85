"""Denoiser networks: ``(x_t [B, L], t [B]) -> logits [B, L, m]`` (SPEC section 1, 4)."""
from .dit import PRESETS, DiT, DiTConfig

__all__ = ["DiT", "DiTConfig", "PRESETS"]
