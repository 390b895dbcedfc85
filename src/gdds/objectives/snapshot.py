"""The snapshot objective of GDDS, written once (paper section 4.3, Algorithm 2;
``docs/math.md`` section 9).

GDDS trains the mean parametrization ``mu_theta(x_t, t)`` on snapshots: draw
``t ~ U[t_min, 1]`` (low-discrepancy across the batch), draw ``x_t ~ q_t(.|x0)``
exactly (uniformization), and minimise the cross-entropy of ``x0`` under
``mu_theta(x_t, t)`` over all positions. :func:`snapshot_inputs` draws ``(x_t, t)``,
:func:`snapshot_cross_entropy` scores the network's output; :func:`snapshot_loss` is the two
together for a notebook, and the training method :class:`gdds.objectives.methods.Snapshot`
uses the same two pieces around its data-parallel sharding.

This snapshot cross-entropy is **not** a bound on the negative log-likelihood
(it ignores the cost of the noise level and can fall below the data entropy);
report it as :data:`SNAPSHOT_LABEL`. Likelihood bounds live in :mod:`gdds.likelihood`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..process import ForwardProcess
from ..sampling import Denoiser
from .logsumexp import cross_entropy_rows

SNAPSHOT_LABEL = "snapshot CE (not a likelihood)"


def sample_times(
    n: int, t_min: float = 0.0, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Tensor:
    """``n`` times in ``[t_min, 1)``: one uniform offset ``u`` and the stratified grid
    ``t_i = t_min + (1 - t_min) * frac(u + i / n)``. Each ``t_i`` is exactly
    ``U[t_min, 1)``; together they cover the interval evenly (lower-variance batch
    averages than i.i.d. draws)."""
    if n < 1:
        raise ValueError(f"need at least one time, got n={n}")
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    grid = (u + torch.arange(n, device=device, dtype=torch.float64) / n) % 1.0
    return (t_min + (1.0 - t_min) * grid).to(torch.float32)


def snapshot_inputs(process: ForwardProcess, x0: Tensor, t_min: float = 1e-3,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The network's inputs ``(x_t [B, L], t [B])`` for a clean batch ``x0 [B, L]``: stratified
    times (:func:`sample_times`) and an exact draw of ``q_t(.|x0)``. Only these reach the
    network: no forward-process information it will not have when sampling."""
    x0 = x0.to(process.device)
    t = sample_times(x0.shape[0], t_min, generator, x0.device)
    return process.noise(x0, t, generator=generator), t


def block_inputs(process: ForwardProcess, x0: Tensor, block_size: int, t_min: float = 1e-3,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Block diffusion's inputs ``(x_t [B, L], t [B, n_blocks], x0 [B, L])`` (``docs/block.md``): the
    ``B * n_blocks`` blocks of ``block_size`` tokens as rows, each noised at its own time, the times
    stratified over all of them (:func:`sample_times`, each exactly ``U[t_min, 1)``) and dealt block-major, so
    the blocks of one sequence sit ``1 / n_blocks`` apart on the stratified grid rather than side by side.
    With one block per sequence the draws are :func:`snapshot_inputs`' (``t`` then ``[B, 1]``)."""
    x0 = x0.to(process.device)
    B, L = x0.shape
    if L % block_size:
        raise ValueError(f"block diffusion trains on whole blocks: the length {L} is not a multiple of the block "
                         f"size {block_size}")
    rows = x0.reshape(-1, block_size)
    t = sample_times(rows.shape[0], t_min, generator, x0.device).view(-1, B).T.reshape(B, -1)
    return process.noise(rows, t.reshape(-1), generator=generator).reshape(B, L), t, x0


def block_rows(logits: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-block times ``t [B, n_blocks]`` as rows of one block each with its own time: ``logits
    [B * n_blocks, b, m]``, ``xt`` and ``x0 [B * n_blocks, b]``, ``t [B * n_blocks]``, what the per-position
    losses take (one time per row). Times ``[B]`` (plain diffusion) leave everything as it is."""
    if t.dim() == 1:
        return logits, xt, t, x0
    rows = t.numel()
    return logits.reshape(rows, -1, logits.shape[-1]), xt.reshape(rows, -1), t.reshape(-1), x0.reshape(rows, -1)


def snapshot_cross_entropy(logits: Tensor, x0: Tensor) -> Tensor:
    """Per-position cross-entropy ``-log mu_theta(x0 | x_t, t)`` as ``[B, L]`` (float32, without a
    float32 copy of the logits: :mod:`gdds.objectives.logsumexp`)."""
    if logits.shape[:-1] != x0.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match x0 {tuple(x0.shape)} (expected [B, L, m])")
    return cross_entropy_rows(logits, x0)


def snapshot_loss(
    process: ForwardProcess,
    denoiser: Denoiser,
    x0: Tensor,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Mean snapshot cross-entropy of a batch ``x0 [B, L]`` (over positions where ``mask`` is
    true, if given): :func:`snapshot_inputs`, the denoiser, :func:`snapshot_cross_entropy`."""
    xt, t = snapshot_inputs(process, x0, t_min, generator)
    ce = snapshot_cross_entropy(denoiser(xt, t), x0)
    if mask is None:
        return ce.mean()
    return (ce * mask).sum() / mask.sum().clamp_min(1)
