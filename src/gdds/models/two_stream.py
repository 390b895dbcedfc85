"""A two-stream (content / query) network for the Campbell estimator (paper section
4.2, Appendix E), in the spirit of XLNet's two-stream attention.

The Campbell estimator (:mod:`gdds.objectives.pathwise`) predicts, for every jump of one
forward path, the pre-jump token from the whole sequence just after the jump. The
jumps happen at different times, so each needs its own context; one pass serves
them all:

- the **content stream** is the path itself, cut into *pieces*: token ``x`` held at
  position ``i`` on ``[start, end)``, embedded as ``embed(x)`` (rotary position
  ``i``). It is deliberately not contextual: a piece mixed with other pieces would
  carry information from other times, and a query could then see the past of the
  path (which the reverse chain does not have at generation time);
- the **query stream** holds one vector per jump (position ``i``, time ``tau``). It
  starts from one learned vector and goes through ``layers`` blocks of
  cross-attention to the pieces active at ``tau`` (``start <= tau < end``: exactly
  one per position, the sequence ``X_tau``) and an MLP, both modulated by ``tau``
  (adaLN-Zero, as in :class:`gdds.models.dit.DiT`).

So the logits of a query are a function of ``(X_tau, tau, i)`` only, and
:meth:`TwoStream.snapshot` (every position queried at one time, one piece per
position) is the same function used as a denoiser at generation time; a test
checks the two agree. The price of one pass is that tokens are never contextualised
with each other, only read by the queries; the paper reports that this kind of
network underperforms standard transformers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DiTConfig
from .layers import INIT_STD, MLP, LayerNorm, Rotary, Trunk, modulate


class QueryBlock(nn.Module):
    """``g + gate * CrossAttn(modulate(norm(g)), pieces)``, then ``g + gate * MLP(...)``;
    the modulation is per query (each query has its own time)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.heads = config.heads
        self.norm1 = LayerNorm(config.width)
        self.norm_content = LayerNorm(config.width)
        self.q = nn.Linear(config.width, config.width, bias=False)
        self.kv = nn.Linear(config.width, 2 * config.width, bias=False)
        self.proj = nn.Linear(config.width, config.width, bias=False)
        self.norm2 = LayerNorm(config.width)
        self.mlp = MLP(config)
        self.modulation = nn.Linear(config.cond_width, 6 * config.width)

    def forward(self, g: Tensor, h: Tensor, c: Tensor, q_pos: Tensor, k_pos: Tensor, allowed: Tensor,
                rotary: Rotary) -> Tensor:
        B, Q, W = g.shape
        P = h.shape[1]
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=-1)
        q = self.q(modulate(self.norm1(g), shift1, scale1)).view(B, Q, self.heads, -1).transpose(1, 2)
        k, v = self.kv(self.norm_content(h)).view(B, P, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(rotary.at(q, q_pos), rotary.at(k, k_pos), v, attn_mask=allowed[:, None])
        g = g + gate1 * self.proj(y.transpose(1, 2).reshape(B, Q, W))
        return g + gate2 * self.mlp(modulate(self.norm2(g), shift2, scale2))


class TwoStream(Trunk):
    """``(pieces, queries) -> logits [B, Q, vocab_size]`` of the jump destination
    (for the Campbell estimator, the pre-jump token); :meth:`snapshot` is the
    ``(x_t, t) -> logits [B, L, m]`` form used to generate."""

    def __init__(self, config: DiTConfig):
        super().__init__(config, (QueryBlock(config) for _ in range(config.layers)))
        self.query = nn.Parameter(torch.zeros(config.width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As the DiT (adaLN-Zero, zero head when untied: a fresh model predicts the uniform
        distribution), and a normal(0, 0.02) query vector."""
        super().reset_parameters()
        nn.init.normal_(self.query, std=INIT_STD)

    def forward(self, tokens: Tensor, positions: Tensor, start: Tensor, end: Tensor, q_pos: Tensor,
                q_time: Tensor) -> Tensor:
        """Pieces ``tokens, positions, start, end [B, P]``; queries ``q_pos, q_time [B, Q]``
        (see :class:`gdds.objectives.pathwise.PathBatch`). Every query must see one piece per position."""
        if int(positions.max()) >= self.config.max_len or int(q_pos.max()) >= self.config.max_len:
            raise ValueError(f"positions exceed max_len = {self.config.max_len}")
        B, Q = q_pos.shape
        allowed = (start[:, None, :] <= q_time[..., None]) & (q_time[..., None] < end[:, None, :])
        c = F.silu(self.time_embed(q_time.reshape(-1))).view(B, Q, -1)
        h = self.embed(tokens)
        g = self.query.to(h.dtype).expand(B, Q, -1)
        for block in self.blocks:
            g = self.block(block, g, h, c, q_pos, positions, allowed, self.rotary)
        return self.output(g, c)

    def snapshot(self, xt: Tensor, t: float | Tensor) -> Tensor:
        """Logits ``[B, L, m]`` for every position of ``x_t [B, L]`` at times ``t [B]``."""
        if xt.dim() != 2:
            raise ValueError(f"x_t must have shape [B, L]; got {tuple(xt.shape)}")
        B, L = xt.shape
        t = torch.as_tensor(t, device=xt.device, dtype=torch.float64).expand(B)
        pos = torch.arange(L, device=xt.device).expand(B, L)
        start = torch.zeros(B, L, dtype=torch.float64, device=xt.device)
        return self(xt, pos, start, start + 2.0, pos, t[:, None].expand(B, L))
