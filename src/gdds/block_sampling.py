"""Generation block by block (block diffusion, BD3-LM): autoregressive over blocks of ``b`` tokens, the
model's exact reverse chain inside each.

:func:`sample_blocks` draws block ``k`` with :func:`gdds.sampling.sample` (``length`` = the block's size)
on a denoiser that reads the clean blocks before it; the finished block joins that context. A block
network's clean tokens never see a noised one, so their keys and values are computed once and kept
(``cache=True``: one ``extend`` per block, one ``denoise`` of ``b`` tokens per step); ``cache=False``
recomputes the whole forward pass ``network(x_t, t, x0)`` at every step, with the same logits to float
tolerance and so the same samples for the same seed (``tests/inference/test_block_sampling.py``).

- **Prompts and infilling**: ``fixed`` (``-1`` = free) is clamped inside each block's chain; blocks
  that are wholly fixed (a prompt's leading blocks) go into the context without a chain. A block is
  drawn given the blocks before it only: a fixed token shapes the blocks *after* it, never an earlier
  one (infilling conditions on the past).
- **EOS**: with ``eos`` given, generation stops after the block in which every sequence has generated
  ``eos`` at a free position; the free positions after each sequence's first generated ``eos`` are set to
  ``eos`` (fixed positions keep their tokens), so the result is still ``[num, length]``.
- **Beyond the network's positions** (``length > network.config.max_len``): a sliding window. While the
  context and the current block fit in ``max_len`` positions, positions are absolute. After that the
  context is the last ``W = max_len // b - 1`` whole clean blocks, re-encoded at positions ``0..W b - 1``
  each time the window moves (every block), and the block takes the positions after them: positions are
  relative to the window and text before it is forgotten. With ``max_len < 2 b`` the window is empty and
  each such block is drawn without context.

This module is in the inference layer: it knows the network only through :class:`BlockNetwork`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .categorical import Decoding, Generators
from .operators import OperatorSettings
from .process import ForwardProcess
from .samplers import NETWORK, SAMPLERS, BoundRule, Sampler
from .sampling import Denoiser, _free, sample


class Positions(Protocol):
    """What :func:`sample_blocks` reads of a network's configuration: how many positions it has."""

    max_len: int


class BlockNetwork(Protocol):
    """A block-diffusion network (:class:`gdds.models.block.BlockDiT`): blocks of ``block_size``, a cache
    of clean tokens' keys and values (opaque here), and the full forward pass."""

    block_size: int
    config: Positions

    def __call__(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor: ...

    def denoise(self, xt: Tensor, t: Tensor, cache: Any) -> Tensor: ...

    def extend(self, cache: Any, block: Tensor) -> Any: ...

    def encode(self, x0: Tensor, start: int = 0) -> Any: ...


DenoiserOf = Callable[[Denoiser], Denoiser]
"""How a network's logits ``(x_t, t) -> logits`` become the model's denoiser (the method's parametrization,
:meth:`gdds.objectives.Method.parametrized`)."""


def _as_is(network: Denoiser) -> Denoiser:
    return network


class _Context:
    """The clean tokens a block is drawn given: ``x[:, start:a]`` of the sequence drawn so far, kept as a
    cache (``cached``) or recomputed by the full forward pass at every call."""

    def __init__(self, network: BlockNetwork, cached: bool):
        self.network, self.cached = network, cached
        b = network.block_size
        self.window = max(0, network.config.max_len // b - 1) * b  # tokens of context once the window slides
        self.start, self.end, self.cache = 0, 0, None

    def denoiser(self, x: Tensor, a: int, n: int) -> Denoiser:
        """The network as a denoiser of the block ``[a, a + n)`` of ``x`` given the context before it."""
        start = 0 if a + n <= self.network.config.max_len else a - self.window
        past = x[:, start:a]
        if not self.cached:
            def full(xt: Tensor, t: Tensor) -> Tensor:
                both = torch.cat((past, xt), dim=1)  # noised earlier blocks are never read: the clean ones stand in
                return self.network(both, t, both)[:, -n:]

            return full
        if start != self.start:  # the window moved: re-encode it at positions 0..
            self.start, self.end = start, a
            self.cache = self.network.encode(past) if a > start else None
        for end in range(self.end, a, self.network.block_size):  # the blocks since the last call join, one by one
            self.cache = self.network.extend(self.cache, x[:, end:end + self.network.block_size])
        self.end = a
        cache = self.cache
        return lambda xt, t: self.network.denoise(xt, t, cache)


@torch.no_grad()
def sample_blocks(
    process: ForwardProcess,
    network: BlockNetwork,
    num: int,
    length: int,
    steps: int = 64,
    *,
    generator: Generators = None,
    fixed: Tensor | None = None,
    denoise: DenoiserOf = _as_is,
    eos: int | None = None,
    cache: bool = True,
    spacing: str = "t",
    decoding: Decoding | None = None,
    gumbel: bool = False,
    reference: Tensor | None = None,
    device: torch.device | None = None,
    progress: bool | None = False,
    operators: OperatorSettings | None = None,
) -> Tensor:
    """``num`` sequences of ``length`` tokens (any length: module docstring) from a block network, block by
    block, each block by the exact reverse chain of :func:`gdds.sampling.sample` in ``steps`` steps.

    ``denoise`` turns the network's logits into the model's denoiser (the method's parametrization;
    default: they are ``mu``'s logits). ``fixed`` (``[num, length]``, ``-1`` = free): prompt and infill
    tokens, kept. ``eos``: stop once every sequence has generated it. ``cache``: keep the clean blocks'
    keys and values (``False``: the full forward pass at every step, same samples). ``spacing``, ``decoding``,
    ``gumbel``, ``reference``, ``device``, ``operators`` and ``generator`` (one, or one per row) are
    :func:`gdds.sampling.sample`'s, for every block (a row draws nothing in a block it has wholly fixed);
    ``progress``: a bar over the blocks on stderr (``None``: when stderr is a terminal)."""
    if num < 1 or length < 1:
        raise ValueError(f"num and length must be positive; got {num}, {length}")
    device = process.device if device is None else torch.device(device)
    free = _free(fixed, num, length, device)
    x = torch.where(free, 0, fixed.to(device)) if fixed is not None else torch.zeros(num, length, dtype=torch.long,
                                                                                      device=device)
    b, context = network.block_size, _Context(network, cache)
    done = torch.zeros(num, dtype=torch.bool, device=device)
    for a in tqdm(range(0, length, b), desc=SAMPLERS.get(BLOCK_SAMPLER).label, unit="block", leave=False,
                  disable=None if progress is None else not progress):
        n = min(b, length - a)
        if bool(free[:, a:a + n].any()):
            chain = denoise(context.denoiser(x, a, n))
            x[:, a:a + n] = sample(process, chain, num, n, steps, spacing=spacing, decoding=decoding,
                                   gumbel=gumbel, fixed=None if fixed is None else fixed[:, a:a + n],
                                   reference=reference, generator=generator, device=device, operators=operators)
        if eos is not None:
            done |= ((x[:, a:a + n] == eos) & free[:, a:a + n]).any(dim=1)
            if bool(done.all()):
                break
    if eos is not None:
        after = ((x == eos) & free).long().cumsum(dim=1) > 0
        x = torch.where(after & free, eos, x)
    return x


BLOCK_SAMPLER = "blocks"
"""The name of :func:`sample_blocks` in :data:`gdds.samplers.SAMPLERS`: a block-diffusion model's one sampler."""
SAMPLERS.register(BLOCK_SAMPLER, Sampler("exact block-by-block reverse chain", True, sample_blocks, BoundRule(
    "no bound here: block by block; gdds eval bounds it as a sum of block bounds"), source=NETWORK))
