"""The layers of gdds's networks for ``transformers`` (imported by ``modeling_gdds.py`` beside it).

Written by ``gdds export`` into a model folder; self-contained (``torch`` only, no gdds). This is the one
copy of gdds's layers outside gdds (``gdds/models/layers.py``, ``dit.py``, ``block.py``, ``two_stream.py``):
parameter names are gdds's, so ``model.safetensors`` loads as it is, and ``tests/engine/test_hf_modeling.py``
holds the logits of every network built here equal to gdds's. Precision as in gdds: LayerNorm and the rotary
rotation in float32, the residual stream in the embedding's dtype.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

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


def rotary(positions, head_dim, base):
    """``cos, sin`` of the rotary angles at ``positions`` (``[N]``, or ``[B, N]`` given per sequence: then
    shaped ``[B, 1, N, head_dim / 2]`` to broadcast over heads)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.double()[..., None] * inv_freq
    cos, sin = angles.cos().float(), angles.sin().float()
    return (cos[:, None], sin[:, None]) if positions.dim() == 2 else (cos, sin)


def rotate(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class MLP(nn.Module):
    """``width -> mlp_ratio * width -> width`` with biases and tanh-GELU."""

    def __init__(self, a):
        super().__init__()
        self.fc = nn.Linear(a["width"], a["mlp_ratio"] * a["width"])
        self.proj = nn.Linear(a["mlp_ratio"] * a["width"], a["width"])

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class TimeEmbedding(nn.Module):
    """``t in [0, 1]`` -> sinusoidal features of ``1000 t`` -> MLP -> ``[N, cond_width]``."""

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
    """Multi-head attention with rotary queries and keys, under a boolean ``mask`` (``None``: bidirectional)."""

    def __init__(self, a):
        super().__init__()
        self.heads = a["heads"]
        self.qkv = nn.Linear(a["width"], 3 * a["width"], bias=False)
        self.proj = nn.Linear(a["width"], a["width"], bias=False)

    def forward(self, x, cos, sin, mask):
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, W))


class Block(nn.Module):
    """adaLN-Zero block: ``x + gate * f(modulate(norm(x), shift, scale))``, attention then MLP; the
    conditioning ``c`` is ``[B, 1, cond_width]`` (one time per sequence) or ``[B, L, cond_width]`` (per token)."""

    def __init__(self, a):
        super().__init__()
        self.norm1 = LayerNorm(a["width"])
        self.attn = SelfAttention(a)
        self.norm2 = LayerNorm(a["width"])
        self.mlp = MLP(a)
        self.modulation = nn.Linear(a["cond_width"], 6 * a["width"])

    def forward(self, x, c, cos, sin, mask=None):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin, mask)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class QueryBlock(nn.Module):
    """The two-stream network's block: each query (its own position and time) cross-attends to the pieces
    it is ``allowed`` to see, then an MLP, both modulated by the query's time."""

    def __init__(self, a):
        super().__init__()
        self.heads = a["heads"]
        self.norm1 = LayerNorm(a["width"])
        self.norm_content = LayerNorm(a["width"])
        self.q = nn.Linear(a["width"], a["width"], bias=False)
        self.kv = nn.Linear(a["width"], 2 * a["width"], bias=False)
        self.proj = nn.Linear(a["width"], a["width"], bias=False)
        self.norm2 = LayerNorm(a["width"])
        self.mlp = MLP(a)
        self.modulation = nn.Linear(a["cond_width"], 6 * a["width"])

    def forward(self, g, h, c, q_rot, k_rot, allowed):
        B, Q, W = g.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        q = self.q(modulate(self.norm1(g), shift1, scale1)).view(B, Q, self.heads, -1).transpose(1, 2)
        k, v = self.kv(self.norm_content(h)).view(B, h.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rotate(q, *q_rot), rotate(k, *k_rot), v, attn_mask=allowed[:, None])
        g = g + gate1 * self.proj(y.transpose(1, 2).reshape(B, Q, W))
        return g + gate2 * self.mlp(modulate(self.norm2(g), shift2, scale2))


def padded_vocab(a, vocab_size):
    """The rows of the output head: ``vocab_size`` rounded up to ``vocab_multiple``."""
    multiple = a.get("vocab_multiple", 1)
    return -(-vocab_size // multiple) * multiple


def add_trunk(module, a, vocab_size, block):
    """Give ``module`` what every gdds network has around its blocks, under gdds's names and in its order:
    ``embed``, ``time_embed``, ``blocks`` (``a["layers"]`` of ``block``), ``final_norm``,
    ``final_modulation``, ``head`` (tied to ``embed`` by the caller when ``a["tie_weights"]``)."""
    padded = padded_vocab(a, vocab_size)
    module.embed = nn.Embedding(padded if a["tie_weights"] else vocab_size, a["width"])
    module.time_embed = TimeEmbedding(a["cond_width"])
    module.blocks = nn.ModuleList(block(a) for _ in range(a["layers"]))
    module.final_norm = LayerNorm(a["width"])
    module.final_modulation = nn.Linear(a["cond_width"], 2 * a["width"])
    module.head = nn.Linear(a["width"], padded)


def output(module, h, c, vocab_size):
    """Logits ``[..., vocab_size]`` from the residual stream ``h`` and conditioning ``c``: final adaLN, head."""
    shift, scale = module.final_modulation(c).chunk(2, dim=-1)
    return module.head(modulate(module.final_norm(h), shift, scale))[..., :vocab_size]


def self_attention_stream(module, a, ids, c, positions, mask=None):
    """The residual stream of ``module``'s :class:`Block` s over tokens ``ids [B, N]`` at ``positions [N]``."""
    cos, sin = rotary(positions, a["width"] // a["heads"], float(a["rope_base"]))
    h = module.embed(ids)
    for block in module.blocks:
        h = block(h, c, cos, sin, mask)
    return h


def times(t, batch, device, shape=None):
    """``t`` (a number, ``[B]`` or ``shape``) as a float tensor of ``shape`` (default ``[B]``)."""
    shape = (batch,) if shape is None else shape
    t = torch.as_tensor(t, device=device)
    t = t if t.dtype.is_floating_point else t.float()
    t = t.expand(batch) if t.dim() == 0 else t
    t = t[:, None].expand(shape) if t.shape == (batch,) and len(shape) == 2 else t
    if t.shape != shape:
        raise ValueError(f"t must be a number, [B] = [{batch}] or {list(shape)}; got {list(t.shape)}")
    return t


def dit_logits(module, a, vocab_size, ids, t):
    """gdds's DiT (``gdds/models/dit.py``): ``(x_t [B, L], t) -> logits [B, L, vocab_size]``; causal attention
    when ``a["causal"]`` (the network inside gdds's autoregressive model)."""
    B, L = ids.shape
    c = F.silu(module.time_embed(times(t, B, ids.device)))[:, None]
    mask = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril() if a.get("causal") else None
    h = self_attention_stream(module, a, ids, c, torch.arange(L, device=ids.device), mask)
    return output(module, h, c, vocab_size)


class DiTNetwork(nn.Module):
    """gdds's DiT as a plain module (the ``net`` of the autoregressive model)."""

    def __init__(self, a, vocab_size):
        super().__init__()
        self.a, self.vocab_size = a, vocab_size
        add_trunk(self, a, vocab_size, Block)

    def forward(self, ids, t):
        return dit_logits(self, self.a, self.vocab_size, ids, t)


def block_mask(length, block_size, device):
    """Block diffusion's ``[2L, 2L]`` attention mask, noised tokens then clean: noised block ``k`` sees itself
    and the clean blocks ``< k``; clean block ``j`` sees the clean blocks ``<= j`` (``gdds/models/block.py``)."""
    blocks = torch.arange(length, device=device) // block_size
    same, before = blocks[:, None] == blocks[None, :], blocks[:, None] > blocks[None, :]
    noised = torch.cat((same, before), dim=1)
    clean = torch.cat((torch.zeros_like(same), same | before), dim=1)
    return torch.cat((noised, clean), dim=0)
