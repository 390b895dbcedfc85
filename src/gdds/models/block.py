"""Block diffusion (BD3-LM: Arriola et al., ICLR 2025, "Block Diffusion: Interpolating Between
Autoregressive and Diffusion Language Models") as a network for any noising process.

A sequence of ``L`` tokens is cut into blocks of ``b`` (the last one may be shorter): the model is
autoregressive over blocks and a denoiser inside each, so ``-log p(x) = sum_k -log p(x_k | x_<k)``
and each block's term is bounded by the ``T``-step bound of its own reverse chain given the clean
blocks before it.

Training sees every block at once: the noised sequence and the clean sequence side by side
(``2L`` tokens, both at rotary positions ``0..L-1``) under one attention mask,

- noised block ``k`` sees its own noised tokens and the clean blocks ``< k``;
- clean block ``j`` sees the clean blocks ``<= j`` (block-causal), never a noised token;

and each noised block has its own time ``t_k`` (the conditioning of its tokens; clean tokens are
conditioned on ``t = 0``). With one block (``b >= L``) there is no clean copy and the network is
exactly :class:`gdds.models.dit.DiT` (same parameters, same outputs).

Because a clean block never sees a noised token, its keys and values depend only on the clean
blocks before it: they are computed once and cached (:class:`KVCache`), and generation runs each
reverse step on one block of ``b`` tokens attending to the cache, with the same logits as the full
forward pass (``tests/models/test_block.py``). The parameters are :class:`~gdds.models.dit.DiT`'s,
name for name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DiTConfig
from .dit import Block, DiT
from .layers import Rotary, Trunk, modulate

KV = tuple[Tensor, Tensor]


@dataclass
class KVCache:
    """Keys and values of the clean tokens at every layer (``[B, heads, n, head_dim]`` each) and the
    position the next token takes (``n`` plus the offset the cache started at)."""

    layers: list[KV]
    end: int

    @property
    def length(self) -> int:
        """How many clean tokens the cache holds."""
        return self.layers[0][0].shape[2] if self.layers else 0


class BlockLayer(Block):
    """A :class:`~gdds.models.dit.Block` with conditioning per token (``mod [B, N, 6 width]``), an
    attention mask and keys/values of earlier tokens (``past``); returns the new residual stream and
    this layer's keys and values of ``x``."""

    def forward(self, x: Tensor, mod: Tensor, rotary: Rotary, positions: Tensor, mask: Tensor | None = None,
                past: KV | None = None) -> tuple[Tensor, KV]:
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        attn = self.attn
        B, N, W = x.shape
        q, k, v = attn.qkv(modulate(self.norm1(x), shift1, scale1)).view(B, N, 3, attn.heads, W // attn.heads) \
            .permute(2, 0, 3, 1, 4)
        q, k = rotary.at(q, positions), rotary.at(k, positions)
        keys, values = (k, v) if past is None else (torch.cat((past[0], k), 2), torch.cat((past[1], v), 2))
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask,
                                           dropout_p=attn.dropout if self.training else 0.0)
        x = x + gate1 * self.drop(attn.proj(y.transpose(1, 2).reshape(B, N, W)))
        x = x + gate2 * self.drop(self.mlp(modulate(self.norm2(x), shift2, scale2)))
        return x, (k, v)


def block_mask(length: int, block_size: int, device: torch.device | str | None = None) -> Tensor:
    """The ``[2L, 2L]`` boolean attention mask of the module docstring (``True``: may attend), rows and
    columns ordered noised tokens then clean tokens."""
    blocks = torch.arange(length, device=device) // block_size
    same = blocks[:, None] == blocks[None, :]
    before = blocks[:, None] > blocks[None, :]
    noised = torch.cat((same, before), dim=1)
    clean = torch.cat((torch.zeros_like(same), same | before), dim=1)
    return torch.cat((noised, clean), dim=0)


class BlockDiT(DiT):
    """``(x_t [B, L], t [B] or [B, n_blocks], x0 [B, L]) -> logits [B, L, vocab_size]`` of the clean
    token at every noised position, block ``k`` given the clean blocks before it (module docstring)."""

    def __init__(self, config: DiTConfig, block_size: int):
        if config.causal:
            raise ValueError("a block-diffusion network attends within its blocks; build it with causal=False")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
        Trunk.__init__(self, config, (BlockLayer(config) for _ in range(config.layers)))
        self.block_size = block_size
        self.reset_parameters()  # DiT's order of draws: the same seed gives DiT's weights

    def n_blocks(self, length: int) -> int:
        """How many blocks ``length`` tokens make (the last may be shorter)."""
        return math.ceil(length / self.block_size)

    def _block_times(self, t: float | Tensor, B: int, nb: int, device: torch.device) -> Tensor:
        """``t`` as ``[B, n_blocks]`` float32: one time per sequence is every block's."""
        t = torch.as_tensor(t, device=device, dtype=torch.float32)
        t = t.expand(B) if t.dim() == 0 else t
        t = t[:, None].expand(B, nb) if t.shape == (B,) else t
        if t.shape != (B, nb):
            raise ValueError(f"t must be a scalar, [B] or [B, n_blocks] = [{B}, {nb}]; got {tuple(t.shape)}")
        if not torch.compiler.is_compiling() and not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError("t must lie in [0, 1] (0 = data, 1 = fully noised)")
        return t
    def forward(self, xt: Tensor, t: float | Tensor, x0: Tensor | None = None) -> Tensor:
        """Logits of the clean tokens of every noised block. ``x0`` (the clean sequence, needed with more
        than one block) is read only through the clean blocks before each noised block."""
        self._check_inputs(xt, 0.0)
        B, L = xt.shape
        nb = self.n_blocks(L)
        t = self._block_times(t, B, nb, xt.device)
        which = torch.arange(L, device=xt.device) // self.block_size
        if nb == 1:  # no clean copy: DiT's computation
            c = F.silu(self.time_embed(t[:, 0]))[:, None]  # [B, 1, cond]: one time per sequence
            positions, mask, h = torch.arange(L, device=xt.device)[None], None, self.embed(xt)
        else:
            if x0 is None or x0.shape != xt.shape:
                raise ValueError(f"with {nb} blocks the clean sequence x0 [B, L] = [{B}, {L}] is needed")
            self._check_inputs(x0, 0.0)
            conds = F.silu(self.time_embed(torch.cat((t.reshape(-1), t.new_zeros(1)))))  # [B * nb + 1, cond]
            c = torch.cat((conds[:-1].view(B, nb, -1)[:, which], conds[-1].expand(B, L, -1)), dim=1)  # [B, 2L, .]
            positions = torch.arange(L, device=xt.device).repeat(2)[None]
            mask = block_mask(L, self.block_size, xt.device)
            h = self.embed(torch.cat((xt, x0), dim=1))
        for layer in self.blocks:
            h = self.block(lambda h_, c_, layer=layer: layer(h_, layer.modulation(c_), self.rotary, positions,
                                                              mask)[0], h, c)
        return self.output(h[:, :L], c[:, :L])

    def _run(self, tokens: Tensor, t: Tensor, cache: KVCache | None) -> tuple[Tensor, list[KV]]:
        """``tokens [B, n]`` at the positions after ``cache``, conditioned on ``t [B]``, attending to the
        cache and to all of themselves: the residual stream and each layer's keys and values."""
        start = 0 if cache is None else cache.end
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)[None]
        c = F.silu(self.time_embed(t))[:, None]
        h, kvs = self.embed(tokens), []
        for i, layer in enumerate(self.blocks):
            h, kv = layer(h, layer.modulation(c), self.rotary, positions, None,
                          None if cache is None or not cache.layers else cache.layers[i])
            kvs.append(kv)
        return h, kvs

    @torch.no_grad()
    def extend(self, cache: KVCache | None, block: Tensor) -> KVCache:
        """The cache with the clean tokens ``block [B, n]`` (one block, or the last and shorter one)
        appended: they attend to the cache and to each other, as clean tokens of one block do."""
        self._check_inputs(block, 0.0)
        _, kvs = self._run(block, torch.zeros(block.shape[0], device=block.device), cache)
        if cache is not None and cache.layers:
            kvs = [(torch.cat((k0, k), 2), torch.cat((v0, v), 2)) for (k0, v0), (k, v) in zip(cache.layers, kvs)]
        return KVCache(kvs, (0 if cache is None else cache.end) + block.shape[1])

    def encode(self, x0: Tensor, start: int = 0) -> KVCache:
        """The cache of the clean tokens ``x0 [B, n]`` (whole blocks but perhaps the last) at positions
        ``start, start + 1, ...``, block by block."""
        cache = KVCache([], start)
        for a in range(0, x0.shape[1], self.block_size):
            cache = self.extend(cache, x0[:, a:a + self.block_size])
        return cache

    def denoise(self, xt: Tensor, t: float | Tensor, cache: KVCache | None) -> Tensor:
        """Logits ``[B, n, vocab_size]`` of the clean tokens of one noised block ``xt [B, n]`` at time ``t``,
        given the clean tokens in ``cache`` (``None``: the first block)."""
        xt, t = self._check_inputs(xt, t)
        if xt.shape[1] > self.block_size:
            raise ValueError(f"one block has at most {self.block_size} tokens; got {xt.shape[1]}")
        h, _ = self._run(xt, t, cache)
        return self.output(h, F.silu(self.time_embed(t))[:, None])
