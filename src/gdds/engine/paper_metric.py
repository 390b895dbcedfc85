"""The paper's reported metric, reproduced and labelled (SPEC section 2): what the reference
implementation reports as validation perplexity for a GDDS model. It is **not a likelihood**:

- draw ``t ~ U(0, 1)`` per sequence (optionally snapped to a grid ``k / T``), noise
  ``x_t ~ q_t(. | x0)`` by uniformization and keep the jump mask ``J = (N_t > 0)``;
- carry ``J`` into the model's output: at positions that did not jump the output is replaced by a
  point mass on ``x_t`` (which equals ``x0`` there), so they cost nothing. The model will not have
  ``J`` at sampling time: this is forward-process information leaking into the figure;
- ``nats_per_token`` = the sum over jumped positions of ``-log p_theta(x0 | x_t)`` divided by the
  number of **all** (non-padding) positions, ``perplexity = exp(nats_per_token)``; the "denoising"
  figure divides the same sum by the number of jumped positions. No ELBO weight, no reverse-chain
  terms.

``gdds eval --paper-metric`` writes it to ``eval.json`` as ``valid.paper_metric``, printed beside
the valid bound of the same model.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data import Blocks
from .build import LoadedRun
from .reports import PAPER_METRIC, PaperMetric


def masked_ce(logits: torch.Tensor, x0: torch.Tensor, jumped: torch.Tensor) -> torch.Tensor:
    """``-log p(x0 | x_t)`` at the jumped positions, 0 elsewhere (the point mass on ``x_t = x0``)."""
    logp = torch.log_softmax(logits.double(), dim=-1).gather(-1, x0[..., None]).squeeze(-1)
    return torch.where(jumped, -logp, 0.0)


@torch.no_grad()
def paper_metric(loaded: LoadedRun, blocks: Blocks, rows: np.ndarray, generator: torch.Generator,
                 grid: int | None = None, batch: int = 8) -> PaperMetric:
    """The paper's figure on the blocks ``rows`` (``grid``: snap ``t`` to ``ceil(t T) / T``)."""
    process, denoiser = loaded.run.process, loaded.denoiser()
    if process is None:
        raise ValueError("the paper metric needs a forward process; an autoregressive model has none")
    total, tokens, jumped = 0.0, 0, 0
    for a in range(0, len(rows), batch):
        x0 = blocks.batch(rows[a:a + batch]).to(process.device)
        keep = blocks.mask(rows[a:a + batch])
        keep = torch.ones_like(x0, dtype=torch.bool) if keep is None else keep.to(process.device)
        t = torch.rand(x0.shape[0], dtype=torch.float64, device=process.device, generator=generator)
        if grid is not None:
            t = torch.ceil(t * grid).clamp(1, grid) / grid
        xt, info = process.sample(x0, t, return_info=True, generator=generator)
        hit = (info.jumps > 0) & keep
        total += float(masked_ce(denoiser(xt, t.float()), x0, hit).sum())
        tokens += int(keep.sum())
        jumped += int(hit.sum())
    nats = total / tokens
    return PaperMetric(PAPER_METRIC, nats, math.exp(nats), total / max(jumped, 1), tokens, jumped, len(rows), grid)
