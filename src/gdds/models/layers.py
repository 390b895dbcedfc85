"""Layers shared by every network of :mod:`gdds.models` (the DiT denoiser, the causal LM built
on it, the two-stream network): weight-only LayerNorm, rotary positions, the MLP, the time
embedding, adaLN modulation and its zero initialisation, and :class:`Trunk`, the parts every
network has around its blocks (token and time embeddings, rotary tables, final adaLN, head).

Precision: run under ``torch.autocast`` (bf16) rather than casting the module. LayerNorm
runs in float32, rotary rotations are applied in float32, and the residual stream stays in
the embedding's dtype.

Initialisation (:func:`init_adaln_zero`): normal(0, 0.02) for every linear weight and the
embedding, zero biases, zero adaLN modulation (weights and biases), and a zero head weight
when untied, so a fresh model predicts the uniform distribution for every input ("adaLN-Zero":
every block starts as the identity on the residual stream). A tied head shares the
embedding's normal(0, 0.02) init.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from .config import DiTConfig

TIME_FEATURES = 256  # sinusoidal features of t fed to the time MLP (as in DiT and MDLM)
TIME_SCALE = 1000.0  # t in [0, 1] is scaled to [0, 1000]: angular frequencies span 1000 down to 0.1 per unit t
INIT_STD = 0.02


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with per-sequence ``shift, scale`` of shape ``[B, 1, width]``."""
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain and no bias, computed in float32 and returned in the input dtype."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight.float()).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding (RoFormer) on the two halves of each head, tables up to ``max_len``."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # [max_len, head_dim / 2]
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Rotate ``x`` of shape ``[B, heads, L, head_dim]`` by its positions (float32 math)."""
        length = x.shape[-2]
        return self._rotate(x, self.cos[:length], self.sin[:length])

    def at(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x [B, heads, N, head_dim]`` by given ``positions [B, N]``."""
        return self._rotate(x, self.cos[positions][:, None], self.sin[positions][:, None])

    @staticmethod
    def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos, sin = cos.float(), sin.float()
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class MLP(nn.Module):
    """``width -> mlp_ratio * width -> width`` with biases and tanh-GELU."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.fc = nn.Linear(config.width, hidden)
        self.proj = nn.Linear(hidden, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class TimeEmbedding(nn.Module):
    """``t in [0, 1]`` -> sinusoidal features of ``1000 t`` (periods up to 10000) -> MLP -> ``[B, cond_width]``."""

    def __init__(self, cond_width: int):
        super().__init__()
        half = TIME_FEATURES // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / half), persistent=False)
        self.fc1 = nn.Linear(TIME_FEATURES, cond_width)
        self.fc2 = nn.Linear(cond_width, cond_width)

    def forward(self, t: Tensor) -> Tensor:
        angles = TIME_SCALE * t.float()[:, None] * self.freqs.float()[None, :]
        features = torch.cat((angles.cos(), angles.sin()), dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(features)))


def init_adaln_zero(model: nn.Module) -> None:
    """The initialisation of the module docstring, for a :class:`Trunk` whose blocks each have
    a ``modulation`` layer."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, LayerNorm):
            nn.init.ones_(module.weight)
    for modulation in [block.modulation for block in model.blocks] + [model.final_modulation]:
        nn.init.zeros_(modulation.weight)
        nn.init.zeros_(modulation.bias)
    if not model.config.tie_weights:
        nn.init.zeros_(model.head.weight)


class Trunk(nn.Module):
    """What every network has around its ``blocks``: ``embed`` (token embedding, no learned
    positions), ``time_embed``, ``rotary``, the final adaLN (``final_norm``,
    ``final_modulation``) and the output ``head`` (optionally tied to ``embed.weight``),
    initialised by :func:`init_adaln_zero`. Submodules are registered in that order, which
    fixes the order of the initial random draws."""

    def __init__(self, config: DiTConfig, blocks: Iterable[nn.Module]):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"config must be a DiTConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.padded_vocab if config.tie_weights else config.vocab_size, config.width)
        self.time_embed = TimeEmbedding(config.cond_width)
        self.rotary = Rotary(config.head_dim, config.max_len, config.rope_base)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = LayerNorm(config.width)
        self.final_modulation = nn.Linear(config.cond_width, 2 * config.width)
        self.head = nn.Linear(config.width, config.padded_vocab)
        self.checkpointing = False  # activation checkpointing of each block in training (train.checkpointing)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    def reset_parameters(self) -> None:
        """Initialise as :func:`init_adaln_zero` documents."""
        init_adaln_zero(self)

    def output(self, h: Tensor, c: Tensor) -> Tensor:
        """Logits from the residual stream ``h`` and the conditioning ``c`` (broadcastable to
        ``h``'s leading dims): final adaLN, then the head."""
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        logits = self.head(modulate(self.final_norm(h), shift, scale))
        return logits if self.config.padded_vocab == self.config.vocab_size else logits[..., :self.config.vocab_size]

    def block(self, block: nn.Module, *args: Any) -> Tensor:
        """``block(*args)``, its activations recomputed in the backward pass instead of kept when
        :attr:`checkpointing` is on (training only): less memory for one more forward pass."""
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters; ``exclude_embeddings`` drops the input-embedding table
        (for a tied model this also removes the head weight, which is the same tensor)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embeddings else n

    def extra_repr(self) -> str:
        return f"{self.num_parameters() / 1e6:.2f}M parameters"
