"""The paper's reported metric, reproduced and labelled (SPEC section 2): what the reference
implementation (github.com/ozekri/gdds) reports as validation perplexity. It is **not a likelihood**.
The reference computes it differently per algorithm; gdds reproduces two:

- **GDDS** (``method: gdds``, any kernel; the reference's ``algorithms/gdds.py``, ``nll`` and
  ``nll_per_token``): noise ``x_t ~ q_t(. | x0)`` by uniformization and keep the jump mask
  ``J = (N_t > 0)``; carry ``J`` into the model's output: at positions that did not jump the output
  is replaced by a point mass on ``x_t`` (which equals ``x0`` there), so they cost nothing. The
  model will not have ``J`` at sampling time: this is forward-process information leaking into the
  figure. ``nats_per_token`` = the sum over jumped positions of ``-log p_theta(x0 | x_t)`` divided
  by the number of **all** (non-padding) positions, ``perplexity = exp(nats_per_token)``; the
  "denoising" figure divides the same sum by the number of jumped positions. No ELBO weight, no
  reverse-chain terms.
- **MDLM** (``method: elbo`` on the mask kernel; the reference's ``algorithms/mdlm.py``,
  ``_metric_loss_unweighted`` = ``nll_per_token(low_var=False)``): MDLM's ELBO-weighted loss,
  ``-alpha'(t) / (1 - alpha(t))`` times the cross-entropy of ``x0`` at the masked positions (the
  model's output with the mask token excluded, unmasked positions copied), summed and divided by
  all positions; the "denoising" figure is the unweighted cross-entropy per masked position
  (``low_var=True``). It is a one-draw estimate of MDLM's continuous-time bound (``docs/math.md``
  section 8) without its prior term and without ``t < 1e-3``: close to a bound, not one.

For the other methods the reference computes other figures (or has no such algorithm): none is
reported, and :class:`NoReferenceFigure` says why.

Time is drawn as the reference draws it for every algorithm: ``t ~ U(1e-3, 1)`` per sequence
(``algorithms/base.py``, ``_sample_t``: ``t = (1 - eps) u + eps`` with ``training.sampling_eps:
1e-3`` in ``configs/config.yaml``), optionally snapped to a grid of ``T`` steps (``ceil(t T) / T``,
the reference's ``floor(t T) / T + 1 / T``). A block-diffusion model (``docs/block.md``) draws one time
per block, as it trains, and reads the clean blocks before each block. ``gdds eval --paper-metric`` writes it to
``eval.json`` as ``valid.paper_metric``, printed beside the valid bound of the same model.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ...data import Blocks
from ...objectives.snapshot import block_rows
from ...sampling import Denoiser
from ..build import LoadedRun
from .reports import MDLM_PAPER_METRIC, PAPER_METRIC, PaperMetric

REFERENCE_T_MIN = 1e-3  # the reference's training.sampling_eps: its metric's t ~ U(1e-3, 1)


class NoReferenceFigure(ValueError):
    """The reference implementation computes no figure for this model that gdds reproduces."""


def reference_figure(loaded: LoadedRun) -> str:
    """Which of the reference's validation figures applies to ``loaded``: ``gdds`` or ``mdlm``
    (module docstring); :class:`NoReferenceFigure` otherwise."""
    process, method = loaded.run.process, loaded.method.name
    if process is None:
        raise NoReferenceFigure("no forward process (an autoregressive model): no paper metric")
    if method == "gdds":
        return "gdds"
    if method == "elbo" and process.mask_id is not None:
        return "mdlm"
    raise NoReferenceFigure(f"the reference's validation figure for method {method} on this process is not "
                            "reproduced (gdds reproduces its GDDS figure and its MDLM one)")


def masked_ce(logits: torch.Tensor, x0: torch.Tensor, jumped: torch.Tensor) -> torch.Tensor:
    """``-log p(x0 | x_t)`` at the jumped positions, 0 elsewhere (the point mass on ``x_t = x0``)."""
    logp = torch.log_softmax(logits.double(), dim=-1).gather(-1, x0[..., None]).squeeze(-1)
    return torch.where(jumped, -logp, 0.0)


def reference_times(n: int, generator: torch.Generator, device: torch.device, grid: int | None = None
                    ) -> torch.Tensor:
    """``n`` times ``t ~ U(1e-3, 1)`` as the reference draws them (``grid``: snapped to ``ceil(t T) / T``)."""
    t = REFERENCE_T_MIN + (1 - REFERENCE_T_MIN) * torch.rand(n, dtype=torch.float64, device=device,
                                                             generator=generator)
    return t if grid is None else torch.ceil(t * grid).clamp(1, grid) / grid


def _noised_and_scored(loaded: LoadedRun, denoiser: Denoiser, x0: torch.Tensor, generator: torch.Generator,
                       grid: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's times (one per sequence; a block model's one per block, ``[B * n_blocks]``
    in row order), the jump counts ``[B, L]`` and the logits of ``mu`` ``[B, L, m]``. A block model's
    ``mu`` is its parametrization of the network's output block by block, each at its own time
    (:meth:`gdds.objectives.Method.mu_logits`, as in training)."""
    process, b = loaded.run.process, loaded.method.block_size
    B, L = x0.shape
    if b is None:
        t = reference_times(B, generator, process.device, grid)
        xt, info = process.sample(x0, t, return_info=True, generator=generator)
        return t, info.jumps, denoiser(xt, t.float())
    t = reference_times(B * (L // b), generator, process.device, grid)
    xt, info = process.sample(x0.reshape(-1, b), t, return_info=True, generator=generator)
    xt, times = xt.reshape(B, L), t.float().view(B, -1)
    logits, rows_xt, rows_t, _ = block_rows(loaded.run.model(xt, times, x0), xt, times, x0)
    return t, info.jumps.reshape(B, L), loaded.method.mu_logits(logits, rows_xt, rows_t).reshape(B, L, -1)


@torch.no_grad()
def paper_metric(loaded: LoadedRun, blocks: Blocks, rows: np.ndarray, generator: torch.Generator,
                 grid: int | None = None, batch: int = 8) -> PaperMetric:
    """The reference's figure for ``loaded`` (:func:`reference_figure`) on the blocks ``rows``
    (``grid``: snap ``t`` to ``ceil(t T) / T``)."""
    figure = reference_figure(loaded)
    process, denoiser = loaded.run.process, loaded.denoiser()
    total, plain, tokens, jumped = 0.0, 0.0, 0, 0
    for a in range(0, len(rows), batch):
        x0 = blocks.batch(rows[a:a + batch]).to(process.device)
        keep = blocks.mask(rows[a:a + batch])
        keep = torch.ones_like(x0, dtype=torch.bool) if keep is None else keep.to(process.device)
        t, jumps, logits = _noised_and_scored(loaded, denoiser, x0, generator, grid)
        hit = (jumps > 0) & keep
        weight = torch.ones_like(t)
        if figure == "mdlm":  # MDLM's output excludes the mask token; its loss weight is -alpha'/(1 - alpha)
            logits = logits.double().index_fill(-1, torch.tensor([process.mask_id], device=logits.device),
                                                -math.inf)
            alpha = process.schedule.alpha(t)
            weight = process.schedule.beta(t) * alpha / (1 - alpha)
        cost = masked_ce(logits, x0, hit)
        weight = weight.view(x0.shape[0], -1)  # per sequence [B, 1], or per block [B, n_blocks]
        total += float((weight.repeat_interleave(x0.shape[1] // weight.shape[1], dim=1) * cost).sum())
        plain += float(cost.sum())
        tokens += int(keep.sum())
        jumped += int(hit.sum())
    nats = total / tokens
    label = PAPER_METRIC if figure == "gdds" else MDLM_PAPER_METRIC
    return PaperMetric(label, nats, math.exp(nats), plain / max(jumped, 1), tokens, jumped, len(rows), grid)
