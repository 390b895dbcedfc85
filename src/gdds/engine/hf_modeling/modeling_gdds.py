"""A gdds denoiser for ``transformers`` (``AutoModel.from_pretrained(folder, trust_remote_code=True)``).

Written by ``gdds export`` into a model folder; self-contained (``torch`` and ``transformers`` only, no
gdds). ``GddsModel(input_ids [B, L], t [B] or scalar) -> logits [B, L, vocab_size]``, equal to gdds's
``DiT`` (``gdds/models/dit.py`` and ``layers.py``) on the same input, weights from ``model.safetensors``.

What the logits mean. ``input_ids`` is ``x_t``, a sequence noised by the forward process to time
``t`` in [0, 1] (0 = data, 1 = fully noised); the logits are the network's output for the clean token
at every position. The process is ``config.process`` (``config.json["process"]``: the schedule, the
kernel and their parameters; ``special_ids["mask"]`` is the absorbing state of a mask kernel) and
``config.parametrization`` says how the logits become the model's prediction ``mu``:

- ``mean``: ``softmax(logits)`` is the predicted distribution of the clean token ``x_0``; the reverse
  step is the exact posterior of the forward process averaged over it;
- ``forward`` / ``forward-surrogate``: ``softmax(logits)`` is pushed through the forward process
  (the clean-token prediction noised to time ``t``), gdds's jump-states parametrization.

Sampling and the likelihood bound need the process itself: ``gdds.load(folder)`` gives them
(``model.sample``, ``model.nll_bound``). Token ids:
``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`` gives
``tokenizer.json``'s ids; ``model.model_ids(ids)`` turns them into the network's (the same ids, unless the
model has a compact vocabulary: then ``config.compact_full_ids[c]`` is the tokenizer id of model id ``c``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .configuration_gdds import GddsConfig

TIME_FEATURES, TIME_SCALE = 256, 1000.0


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class LayerNorm(nn.Module):
    """Learned gain, no bias, computed in float32."""

    def __init__(self, width):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return F.layer_norm(x.float(), (x.shape[-1],), self.weight.float()).to(x.dtype)


def rotary_tables(head_dim, length, base, device):
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    angles = torch.arange(length, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def rotate(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class MLP(nn.Module):
    """``width -> hidden -> width`` with biases and tanh-GELU."""

    def __init__(self, width, hidden):
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class TimeEmbedding(nn.Module):
    """``t in [0, 1]`` -> sinusoidal features of ``1000 t`` -> MLP -> ``[B, cond_width]``."""

    def __init__(self, cond_width):
        super().__init__()
        self.fc1 = nn.Linear(TIME_FEATURES, cond_width)
        self.fc2 = nn.Linear(cond_width, cond_width)

    def forward(self, t):
        half = TIME_FEATURES // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = TIME_SCALE * t.float()[:, None] * freqs.float()[None, :]
        features = torch.cat((angles.cos(), angles.sin()), dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(features)))


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention with rotary queries and keys."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x, cos, sin):
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    """adaLN-Zero block: ``x + gate * f(modulate(norm(x), shift, scale))``, attention then MLP."""

    def __init__(self, a):
        super().__init__()
        self.norm1 = LayerNorm(a["width"])
        self.attn = SelfAttention(a["width"], a["heads"])
        self.norm2 = LayerNorm(a["width"])
        self.mlp = MLP(a["width"], a["mlp_ratio"] * a["width"])
        self.modulation = nn.Linear(a["cond_width"], 6 * a["width"])

    def forward(self, x, c, cos, sin):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class GddsModel(PreTrainedModel):
    """gdds's bidirectional DiT denoiser: ``forward(input_ids [B, L], t) -> logits [B, L, vocab_size]``."""

    config_class = GddsConfig
    base_model_prefix = "gdds"
    _no_split_modules = ("Block",)

    def __init__(self, config):
        super().__init__(config)
        a = config.architecture
        if a.get("causal"):
            raise ValueError("this model folder holds a causal network; GddsModel is the bidirectional denoiser")
        self.vocab_size = a["vocab_size"]
        padded = -(-a["vocab_size"] // a.get("vocab_multiple", 1)) * a.get("vocab_multiple", 1)
        self.embed = nn.Embedding(padded if a["tie_weights"] else a["vocab_size"], a["width"])
        self.time_embed = TimeEmbedding(a["cond_width"])
        self.blocks = nn.ModuleList(Block(a) for _ in range(a["layers"]))
        self.final_norm = LayerNorm(a["width"])
        self.final_modulation = nn.Linear(a["cond_width"], 2 * a["width"])
        self.head = nn.Linear(a["width"], padded)
        if a["tie_weights"]:
            self._tied_weights_keys = {"head.weight": "embed.weight"}
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):
        return self.head

    def _init_weights(self, module):
        """Every weight comes from ``model.safetensors``; nothing is initialised."""

    def model_ids(self, tokenizer_ids):
        """The network's ids of ``AutoTokenizer`` ids (a compact vocabulary keeps only the ids seen in training)."""
        ids = torch.as_tensor(tokenizer_ids)
        full = self.config.compact_full_ids
        if full is None:
            return ids
        table = torch.full((max(full) + 1,), -1, dtype=torch.long, device=ids.device)
        table[torch.as_tensor(full, device=ids.device)] = torch.arange(len(full), device=ids.device)
        out = table[ids.clamp(0, len(table) - 1)].masked_fill((ids < 0) | (ids >= len(table)), -1)
        if (out < 0).any():
            raise ValueError("some token ids are not in the model's compact vocabulary (never seen in training)")
        return out

    def forward(self, input_ids, t, **kwargs):
        """Logits of the clean token given ``x_t = input_ids`` (token ids) and times ``t`` in [0, 1]."""
        a = self.config.architecture
        B, L = input_ids.shape
        if a["max_len"] < L:
            raise ValueError(f"sequence length {L} exceeds the network's max_len = {a['max_len']}")
        t = torch.as_tensor(t, device=input_ids.device)
        t = t if t.dtype.is_floating_point else t.float()
        t = t.expand(B) if t.dim() == 0 else t
        if t.shape != (B,):
            raise ValueError(f"t must be a scalar or have shape [B] = [{B}]; got {tuple(t.shape)}")
        c = F.silu(self.time_embed(t))
        cos, sin = rotary_tables(a["width"] // a["heads"], L, float(a["rope_base"]), input_ids.device)
        h = self.embed(input_ids)
        for block in self.blocks:
            h = block(h, c, cos, sin)
        shift, scale = self.final_modulation(c[:, None, :]).chunk(2, dim=-1)
        logits = self.head(modulate(self.final_norm(h), shift, scale))
        return logits[..., :self.vocab_size]
