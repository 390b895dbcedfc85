"""The denoiser network: a diffusion transformer (DiT) over discrete tokens.

SPEC section 1 asks for "a time-conditioned bidirectional transformer" that maps
``(x_t, t)`` to a distribution over the clean token at every position. This is the
DiT of Peebles & Xie (2023, "Scalable Diffusion Models with Transformers") in the
form MDLM (Sahoo et al., 2024) uses for text:

- token embedding ``embed`` (no learned positions), rotary position embeddings
  (Su et al., 2021) on queries and keys, bidirectional attention through
  ``torch.nn.functional.scaled_dot_product_attention`` (no mask);
  ``DiTConfig(causal=True)`` makes the attention causal instead (SDPA's ``is_causal``),
  which the autoregressive baseline :class:`gdds.models.causal.CausalLM` builds on;
- time conditioning: sinusoidal features of ``1000 t`` -> MLP -> ``c`` (width
  ``cond_width``); each block is pre-norm attention and MLP whose norms are
  modulated by ``shift, scale`` and whose residual branches are multiplied by a
  ``gate``, all six produced from ``silu(c)`` by one zero-initialised linear layer
  ("adaLN-Zero": every block starts as the identity on the residual stream);
- a final adaLN (``shift, scale``) and the output head ``head`` (optionally tied to
  ``embed.weight``). ``forward`` returns logits; ``log_probs`` returns float32
  log-probabilities and is the denoiser callable of SPEC section 3.

Layout per block: weight-only LayerNorm (no bias), ``qkv`` and ``proj`` without
bias, MLP ``width -> mlp_ratio * width -> width`` with biases and tanh-GELU, and
the modulation ``Linear(cond_width, 6 * width)`` with bias. The ``small`` preset
at vocabulary 50,257, untied, has 169,625,681 parameters (SPEC section 7: 169.6M).

Precision: run under ``torch.autocast`` (bf16) rather than casting the module.
LayerNorm runs in float32, the residual stream stays in the embedding's dtype
(float32 under autocast), rotary rotations are applied in float32, and SDPA does
its softmax with float32 accumulation. Logits come out in the autocast dtype;
``log_probs`` upcasts before the log-softmax.

Initialisation (``reset_parameters``): normal(0, 0.02) for every linear weight
and the embedding, zero biases, zero adaLN modulation (weights and biases), and a
zero head weight when untied, so a fresh model predicts the uniform distribution
for every input. A tied head shares the embedding's normal(0, 0.02) init.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_FEATURES = 256  # sinusoidal features of t fed to the time MLP (as in DiT and MDLM)
TIME_SCALE = 1000.0  # t in [0, 1] is scaled to [0, 1000]: angular frequencies span 1000 down to 0.1 per unit t
INIT_STD = 0.02

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(layers=4, width=192, heads=4, cond_width=64),  # CPU demos and tests
    "small": dict(layers=12, width=768, heads=12, cond_width=128),  # the paper's (and MDLM's) size
    "medium": dict(layers=24, width=1024, heads=16, cond_width=128),
}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class DiTConfig:
    """Hyper-parameters of :class:`DiT`. ``preset(name, vocab_size)`` builds the standard sizes."""

    vocab_size: int
    layers: int
    width: int
    heads: int
    cond_width: int = 128
    max_len: int = 1024
    dropout: float = 0.0
    tie_weights: bool = False
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    causal: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "layers", "width", "heads", "cond_width", "max_len", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"DiTConfig.{name} must be a positive integer; got {value!r}")
            setattr(self, name, int(value))
        for name in ("tie_weights", "causal"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DiTConfig.{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("dropout", "rope_base"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), numbers.Real):
                raise ValueError(f"DiTConfig.{name} must be a number; got {getattr(self, name)!r}")
            setattr(self, name, float(getattr(self, name)))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DiTConfig.dropout must lie in [0, 1); got {self.dropout}")
        if not self.rope_base > 1.0:
            raise ValueError(f"DiTConfig.rope_base must be greater than 1 (10000 is usual); got {self.rope_base}")
        if self.width % self.heads:
            options = [h for h in range(1, self.width + 1) if self.width % h == 0 and (self.width // h) % 2 == 0]
            near = sorted(options, key=lambda h: abs(h - self.heads))[:3]
            raise ValueError(
                f"DiTConfig.width ({self.width}) must be divisible by heads ({self.heads}); "
                f"try heads in {sorted(near)} or a width that is a multiple of {self.heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"the head dimension width / heads = {self.width} / {self.heads} = {self.head_dim} must be even "
                "for rotary embeddings; change width or heads"
            )

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (YAML/JSON friendly); inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DiTConfig":
        """Build from a mapping; unknown keys raise ``ValueError`` naming close matches."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            listed = "; ".join(f"{k!r}{_suggest(str(k), names)}" for k in unknown)
            raise ValueError(f"unknown DiTConfig field(s): {listed}. Valid fields: {', '.join(names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"DiTConfig is missing required field(s): {', '.join(missing)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> "DiTConfig":
        """A named size from ``PRESETS`` (``tiny``, ``small``, ``medium``) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown DiT preset {name!r}{_suggest(name, PRESETS)}; choose one of {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "vocab_size": vocab_size, **overrides})


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


class MLP(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.width
        self.fc = nn.Linear(config.width, hidden)
        self.proj = nn.Linear(hidden, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


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
    """The initialisation of the module docstring, for any model with ``blocks[i].modulation``,
    ``final_modulation``, ``head`` and ``config.tie_weights`` (the DiT, the two-stream network)."""
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


class DiT(nn.Module):
    """Time-conditioned bidirectional transformer: ``(x_t [B, L], t [B]) -> logits [B, L, vocab_size]``.

    Pass ``model.log_probs`` where a denoiser callable returning log-probabilities is expected.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"config must be a DiTConfig, got {type(config).__name__}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.width)
        self.time_embed = TimeEmbedding(config.cond_width)
        self.rotary = Rotary(config.head_dim, config.max_len, config.rope_base)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.final_norm = LayerNorm(config.width)
        self.final_modulation = nn.Linear(config.cond_width, 2 * config.width)
        self.head = nn.Linear(config.width, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as documented in the module docstring (adaLN-Zero, zero head when untied)."""
        init_adaln_zero(self)

    def _check_inputs(self, x_t: Tensor, t: Union[float, Tensor]) -> tuple[Tensor, Tensor]:
        if not isinstance(x_t, Tensor) or x_t.dtype.is_floating_point or x_t.dtype.is_complex or x_t.dtype == torch.bool:
            raise TypeError(f"x_t must be an integer tensor of token ids, got {getattr(x_t, 'dtype', type(x_t))}")
        if x_t.dim() != 2 or x_t.shape[1] == 0:
            raise ValueError(f"x_t must have shape [B, L] with L >= 1; got {tuple(x_t.shape)}")
        B, L = x_t.shape
        if L > self.config.max_len:
            raise ValueError(
                f"sequence length {L} exceeds max_len = {self.config.max_len}; "
                f"build the model with DiTConfig(max_len >= {L})"
            )
        t = torch.as_tensor(t, device=x_t.device)
        if not t.dtype.is_floating_point:
            t = t.float()
        if t.dim() == 0:
            t = t.expand(B)
        if t.shape != (B,):
            raise ValueError(f"t must be a scalar or have shape [B] = [{B}]; got {tuple(t.shape)}")
        bad_tokens = ((x_t < 0) | (x_t >= self.config.vocab_size)).any()
        bad_times = ~((t >= 0) & (t <= 1)).all()  # also catches NaN
        if torch.stack((bad_tokens, bad_times)).any():  # one host sync for both checks
            if bad_tokens:
                raise ValueError(
                    f"token ids must lie in [0, {self.config.vocab_size}); "
                    f"got values in [{x_t.min().item()}, {x_t.max().item()}]"
                )
            raise ValueError(
                f"t must lie in [0, 1] (0 = data, 1 = fully noised); got values in "
                f"[{t.min().item():.6g}, {t.max().item():.6g}]{' and NaN' if t.isnan().any() else ''}"
            )
        return x_t, t

    def forward(self, x_t: Tensor, t: Union[float, Tensor]) -> Tensor:
        """Logits ``[B, L, vocab_size]`` of the clean token given ``x_t`` (token ids) and times ``t`` in [0, 1]."""
        x_t, t = self._check_inputs(x_t, t)
        c = F.silu(self.time_embed(t))
        h = self.embed(x_t)
        for block in self.blocks:
            h = block(h, c, self.rotary)
        shift, scale = self.final_modulation(c)[:, None, :].chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(h), shift, scale))

    def log_probs(self, x_t: Tensor, t: Union[float, Tensor]) -> Tensor:
        """Float32 log-probabilities ``[B, L, vocab_size]``: the denoiser callable of SPEC section 3."""
        return torch.log_softmax(self(x_t, t).float(), dim=-1)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters; ``exclude_embeddings`` drops the input-embedding table
        (for a tied model this also removes the head weight, which is the same tensor)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embeddings else n

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward), SPEC section 7's convention:
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

    def extra_repr(self) -> str:
        return f"{self.num_parameters() / 1e6:.2f}M parameters"
