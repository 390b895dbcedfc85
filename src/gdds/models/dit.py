"""The denoiser network: a diffusion transformer (DiT) over discrete tokens.

The paper's snapshot objective trains "a time-conditioned bidirectional transformer" that
maps ``(x_t, t)`` to a distribution over the clean token at every position (paper section
4.3). This is the DiT of Peebles & Xie (2023, "Scalable Diffusion Models with Transformers")
in the form MDLM (Sahoo et al., 2024) uses for text:

- token embedding (no learned positions), rotary position embeddings (Su et al., 2021) on
  queries and keys, bidirectional attention through
  ``torch.nn.functional.scaled_dot_product_attention`` (no mask);
  ``DiTConfig(causal=True)`` makes the attention causal instead (SDPA's ``is_causal``),
  which the autoregressive baseline :class:`gdds.models.causal.CausalLM` builds on;
- time conditioning: sinusoidal features of ``1000 t`` -> MLP -> ``c`` (width
  ``cond_width``); each block is pre-norm attention and MLP whose norms are
  modulated by ``shift, scale`` and whose residual branches are multiplied by a
  ``gate``, all six produced from ``silu(c)`` by one zero-initialised linear layer
  ("adaLN-Zero");
- a final adaLN and the output head (:class:`gdds.models.layers.Trunk`). ``forward``
  returns logits: the model itself is a denoiser for :func:`gdds.sample` and
  :func:`gdds.nll_bound`, which normalise what they are given.

Layout per block: weight-only LayerNorm (no bias), ``qkv`` and ``proj`` without
bias, MLP ``width -> mlp_ratio * width -> width`` with biases and tanh-GELU, and
the modulation ``Linear(cond_width, 6 * width)`` with bias. The ``small`` preset
at vocabulary 50,257, untied, has 169,625,681 parameters (the paper's 169.6M).
Precision and initialisation: :mod:`gdds.models.layers`. Logits come out in the autocast dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DiTConfig
from .layers import MLP, LayerNorm, Rotary, Trunk, modulate


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary queries and keys; bidirectional unless ``config.causal``."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.causal = config.causal
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)

    def forward(self, x: Tensor, rotary: Rotary) -> Tensor:
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotary(q), rotary(k)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )
        return self.proj(y.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    """adaLN-Zero transformer block: ``x + gate * f(modulate(norm(x), shift, scale))`` for attention, then MLP."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.norm1 = LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.norm2 = LayerNorm(config.width)
        self.mlp = MLP(config)
        self.modulation = nn.Linear(config.cond_width, 6 * config.width)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, c: Tensor, rotary: Rotary) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.drop(self.attn(modulate(self.norm1(x), shift1, scale1), rotary))
        x = x + gate2 * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))
        return x


class DiT(Trunk):
    """Time-conditioned bidirectional transformer: ``(x_t [B, L], t [B]) -> logits [B, L, vocab_size]``."""

    def __init__(self, config: DiTConfig):
        super().__init__(config, (Block(config) for _ in range(config.layers)))
        self.reset_parameters()

    def _check_inputs(self, xt: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(xt, Tensor) or xt.dtype.is_floating_point or xt.dtype.is_complex \
                or xt.dtype == torch.bool:
            raise TypeError(f"x_t must be an integer tensor of token ids, got {getattr(xt, 'dtype', type(xt))}")
        if xt.dim() != 2 or xt.shape[1] == 0:
            raise ValueError(f"x_t must have shape [B, L] with L >= 1; got {tuple(xt.shape)}")
        B, L = xt.shape
        if self.config.max_len < L:
            raise ValueError(
                f"sequence length {L} exceeds max_len = {self.config.max_len}; "
                f"build the model with DiTConfig(max_len >= {L})"
            )
        t = torch.as_tensor(t, device=xt.device)
        if not t.dtype.is_floating_point:
            t = t.float()
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must be a scalar or have shape [B] = [{B}]; got {tuple(t.shape)}")
        if torch.compiler.is_compiling():  # a compiled training step: the data pipeline made the inputs
            return xt, t
        bad_tokens = ((xt < 0) | (xt >= self.config.vocab_size)).any()
        bad_times = ~((t >= 0) & (t <= 1)).all()  # also catches NaN
        if torch.stack((bad_tokens, bad_times)).any():  # one host sync for both checks
            if bad_tokens:
                raise ValueError(
                    f"token ids must lie in [0, {self.config.vocab_size}); "
                    f"got values in [{xt.min().item()}, {xt.max().item()}]"
                )
            raise ValueError(
                f"t must lie in [0, 1] (0 = data, 1 = fully noised); got values in "
                f"[{t.min().item():.6g}, {t.max().item():.6g}]{' and NaN' if t.isnan().any() else ''}"
            )
        return xt, t

    def forward(self, xt: Tensor, t: float | Tensor) -> Tensor:
        """Logits ``[B, L, vocab_size]`` of the clean token given ``x_t`` (token ids) and times ``t`` in [0, 1]."""
        xt, t = self._check_inputs(xt, t)
        c = F.silu(self.time_embed(t))
        h = self.embed(xt)
        for block in self.blocks:
            h = self.block(block, h, c, self.rotary)
        return self.output(h, c[:, None, :])

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward), in the field's convention:
        ``6 N + 12 layers width seq_len`` with ``N`` the non-embedding parameters, the head
        counted (it is a matmul even when tied). The attention term is full (bidirectional),
        or halved to ``6 layers width seq_len`` when ``config.causal`` (half the score matrix).
        The adaLN and time-MLP parameters act once per sequence but are counted per token,
        as the convention does (under 6% of ``N`` for ``small``)."""
        n = self.num_parameters(exclude_embeddings=True)
        if self.config.tie_weights:
            n += self.head.weight.numel()
        attention = 12 * self.config.layers * self.config.width * seq_len
        return 6 * n + (attention // 2 if self.config.causal else attention)
