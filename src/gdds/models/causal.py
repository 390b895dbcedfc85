"""An autoregressive (AR) baseline built from the DiT's transformer blocks.

The likelihood factorises left to right,
``-log p(x) = sum_i -log p(x_i | x_<i)``, and :class:`CausalLM` models each factor
with the same network as the diffusion denoiser (:class:`gdds.models.dit.DiT`) run
with causal attention (``DiTConfig(causal=True)``), so the two model families differ
only in the mask and the objective.

- Start token: the inner ``DiT`` has ``vocab_size = V + 1``; id ``V`` is a learned
  start token prepended to every input, so the network reads
  ``[start, x_0, ..., x_{L-2}]`` and position ``i`` predicts ``x_i`` from ``x_<i``
  (the first token is scored too). The start token's output logit is sliced away:
  every prediction is a distribution over exactly ``V`` classes. The shifted input
  has length ``L``, so sequences of up to ``config.max_len`` tokens are accepted.
- No time input: the inner DiT is always called with ``t = 0``. Its time embedding of
  0 is then a learned constant vector ``c``, so adaLN becomes a learned per-layer
  shift/scale/gate (the time-MLP parameters are kept, and counted, for parity).
- ``nll`` is exact: log-softmax in float64, summed per sequence in nats.
  ``generate`` is exact ancestral sampling (float64 inverse-CDF draws), re-running
  the model on the whole prefix at every step (no KV cache).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..categorical import Decoding, Generators, inverse_cdf, per_row, row_generators
from .config import DiTConfig
from .dit import DiT


class CausalLM(nn.Module):
    """Left-to-right language model ``x [B, L] -> logits [B, L, V]`` on the DiT backbone.

    ``config`` is the user-facing :class:`DiTConfig` (vocabulary ``V``, ``causal=True``);
    the wrapped network ``net`` has one extra embedding row for the start token.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"config must be a DiTConfig, got {type(config).__name__}")
        if not config.causal:
            raise ValueError(
                "CausalLM needs a causal DiTConfig: pass DiTConfig(..., causal=True) "
                "or build it with CausalLM.preset(name, vocab_size)"
            )
        self.config = config
        self.start_id = config.vocab_size
        self.net = DiT(dataclasses.replace(config, vocab_size=config.vocab_size + 1))

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> CausalLM:
        """A named DiT size (``tiny``, ``small``, ``medium``) with ``causal=True`` and optional overrides."""
        return cls(DiTConfig.preset(name, vocab_size, **{"causal": True, **overrides}))

    def _check_tokens(self, x: Tensor, name: str, min_len: int = 1, padding: bool = False) -> None:
        """Refuse anything but a ``[B, L]`` integer tensor of ids (``-1`` too with ``padding``) that fits."""
        if not isinstance(x, Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor of token ids, got {getattr(x, 'dtype', type(x))}")
        if x.dim() != 2 or x.shape[1] < min_len:
            raise ValueError(f"{name} must have shape [B, L] with L >= {min_len}; got {tuple(x.shape)}")
        if x.shape[1] > self.config.max_len:
            raise ValueError(
                f"{name} has length {x.shape[1]} > max_len = {self.config.max_len}; "
                f"build the model with DiTConfig(max_len >= {x.shape[1]})"
            )
        if x.numel() and ((x < -int(padding)) | (x >= self.config.vocab_size)).any():
            raise ValueError(
                f"token ids in {name} must lie in [{-int(padding)}, {self.config.vocab_size}); "
                f"got values in [{x.min().item()}, {x.max().item()}]"
            )

    def _next_token_logits(self, prefix: Tensor) -> Tensor:
        """Logits ``[B, P + 1, V]`` of ``x_i`` given ``prefix[:, :i]`` for ``i = 0 .. P`` (no checks)."""
        start = prefix.new_full((prefix.shape[0], 1), self.start_id)
        return self.net(torch.cat((start, prefix), dim=1), 0.0)[..., : self.config.vocab_size]

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, L, V]``; ``logits[:, i]`` predicts ``x[:, i]`` from ``x[:, :i]``."""
        self._check_tokens(x, "x")
        return self._next_token_logits(x[:, :-1])

    def nll(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Exact negative log-likelihood ``-log p(x)`` in nats per sequence, float64 ``[B]``;
        with ``keep`` (``[B, L]`` bool) only the kept positions' factors are summed."""
        log_p = torch.log_softmax(self(x).double(), dim=-1)
        nll = -log_p.gather(-1, x[..., None].long()).squeeze(-1)
        return (nll if keep is None else torch.where(keep, nll, 0.0)).sum(dim=-1)

    @torch.no_grad()
    def generate(
        self,
        num: int,
        length: int,
        generator: Generators = None,
        prompt: Tensor | None = None,
        decoding: Decoding | None = None,
    ) -> Tensor:
        """Ancestral samples ``[num, length]`` (long), continuing ``prompt [num, P]`` if given: row ``i``'s
        prompt is its ids before its first ``-1`` (prompts of different lengths, right-padded with ``-1``).

        Each token is drawn from the model's exact conditional (float64 inverse CDF), filtered by
        ``decoding`` (:class:`gdds.Decoding`: temperature, top-k, top-p, min-p; unless neutral, no longer
        the model's law); only the rows past their prompt draw, from ``generator`` or, with one generator per
        row (:data:`gdds.categorical.Generators`), each from its own. The model runs in eval mode (no dropout)
        and is restored to its previous mode afterwards.
        """
        for name, value in (("num", num), ("length", length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if length > self.config.max_len:
            raise ValueError(
                f"length {length} exceeds max_len = {self.config.max_len}; "
                f"build the model with DiTConfig(max_len >= {length})"
            )
        device = self.net.embed.weight.device
        if per_row(generator) and len(generator) != num:
            raise ValueError(f"{len(generator)} generators for {num} sequences: give one per sequence, or one")
        prompt = torch.zeros(num, 0, dtype=torch.long) if prompt is None else prompt
        self._check_tokens(prompt, "prompt", min_len=0, padding=True)
        given = (prompt >= 0).cumprod(dim=1).bool()  # within each row's prompt
        if prompt.shape[0] != num or prompt.shape[1] > length or bool((prompt[~given] >= 0).any()):
            raise ValueError(
                f"prompt must have shape [num, P] = [{num}, P] with P <= length = {length}, each row's ids "
                f"before its -1 padding; got {prompt.tolist() if prompt.numel() < 64 else tuple(prompt.shape)}"
            )
        prompt, given = prompt.to(device=device, dtype=torch.long), given.to(device)
        x = prompt[:, :int(given.sum(dim=1).min())]  # the prefix every row has
        was_training = self.training
        self.eval()
        try:
            while x.shape[1] < length:
                i = x.shape[1]
                nxt = prompt[:, i].clone() if i < prompt.shape[1] else x.new_zeros(num)
                draw = ~given[:, i] if i < prompt.shape[1] else torch.ones(num, dtype=torch.bool, device=device)
                probs = torch.softmax(self._next_token_logits(x[draw])[:, -1].double(), dim=-1)
                probs = probs if decoding is None else decoding.filter(probs)
                nxt[draw] = inverse_cdf(probs, row_generators(generator, draw.cpu()))
                x = torch.cat((x, nxt[:, None]), dim=1)
        finally:
            self.train(was_training)
        return x

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters of the wrapped DiT (its embedding table has ``V + 1`` rows)."""
        return self.net.num_parameters(exclude_embeddings=exclude_embeddings)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token of the wrapped causal DiT (attention term halved)."""
        return self.net.flops_per_token(seq_len)

    def extra_repr(self) -> str:
        return f"vocab_size={self.config.vocab_size}, start_id={self.start_id}"
