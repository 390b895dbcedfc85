"""The timed measurements of the sampling benchmark (``benchmarks/sampling.py``): one sampler call
split into time inside and outside the denoiser, one bound estimate per sequence, the prior term
alone, the accuracy of the cheap operator settings, and a profile of the semantic sampler."""
from __future__ import annotations

import cProfile
import math
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

import gdds
from common import timed
from gdds import likelihood
from gdds.posterior import reverse_step_probs
from gdds.samplers import SAMPLERS
from gdds.sampling import sample
from sampling_setup import (
    ACCURACY_POSITIONS,
    ACCURACY_TIMES,
    CHEAP_OPS,
    DEFAULT_OPS,
    LOGIT_SCALE,
    OPS_LABELS,
    PROFILE_TOP,
    SEED,
    Sizes,
    given,
)


class Recorder:
    """Wraps a denoiser; logs the first ``t`` and the wall-clock interval of each call."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn
        self.calls: list[tuple[float, float, float]] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.fn(x, t)
        end = time.perf_counter()
        self.calls.append((float(t.reshape(-1)[0]) if t.numel() else math.nan, start, end))
        return out

    def inside(self) -> float:
        return sum(end - start for _, start, end in self.calls)


def sampler_run(call: Callable[[Recorder], Tensor], denoiser: Callable, steps: int) -> dict[str, Any]:
    """One timed sampler call: wall time, time inside the denoiser, set-up time, per-step times."""
    rec = Recorder(denoiser)
    cpu = time.process_time()
    start = time.perf_counter()
    out = call(rec)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    if len(rec.calls) != steps:
        raise RuntimeError(f"expected {steps} denoiser calls, got {len(rec.calls)}")
    if out.dtype != torch.long:
        raise RuntimeError(f"sampler returned {out.dtype}, expected token ids")
    starts = [s for _, s, _ in rec.calls]
    return {
        "wall_s": end - start,
        "cpu_s": cpu,
        "denoiser_s": rec.inside(),
        "setup_s": starts[0] - start,
        "per_step": [{"t": t, "s": b - a} for (t, _, _), a, b in zip(rec.calls, starts, starts[1:] + [end])],
    }


def measure_sampler(
    name: str, proc: gdds.ForwardProcess, denoiser: Callable, sizes: Sizes, ops: str, exact: bool
) -> dict[str, Any]:
    """steps/s and the share of wall time outside the denoiser, over ``repeats`` calls (median wall)."""
    op = CHEAP_OPS if ops == "cheap" else DEFAULT_OPS
    entry = SAMPLERS.get("exact" if exact else "renoise")

    def call(rec: Recorder, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        settings = {"operators": op} if exact else {}
        return entry.draw(proc, rec, sizes.B, sizes.L, steps=sizes.steps, generator=gen, **settings)

    for i in range(sizes.warmup):
        sampler_run(lambda rec, i=i: call(rec, SEED + 100 + i), denoiser, sizes.steps)
    runs = [sampler_run(lambda rec, i=i: call(rec, SEED + i), denoiser, sizes.steps) for i in range(sizes.repeats)]
    walls = [r["wall_s"] for r in runs]
    median = statistics.median(walls)
    mid = min(runs, key=lambda r: abs(r["wall_s"] - median))
    total_wall, total_inside = sum(walls), sum(r["denoiser_s"] for r in runs)
    setup = statistics.median(r["setup_s"] for r in runs)
    row = {
        "name": name,
        "sampler": f"gdds.sampling.{entry.draw.__name__} ({entry.label})",
        "ops": ops if exact else "n/a (forward noising only)",
        "ops_settings": given(op) if exact else None,
        "accuracy": OPS_LABELS[ops] if exact else "approximate sampler (forgets x_t); no likelihood attaches",
        **asdict(sizes),
        "wall_s_median": median,
        "wall_s_all": walls,
        "cpu_s_all": [r["cpu_s"] for r in runs],
        "steps_per_s": sizes.steps / median,
        "steps_per_s_excluding_setup": sizes.steps / max(median - setup, 1e-12),
        "tokens_per_s": sizes.B * sizes.L / median,
        "setup_s_median": setup,
        "denoiser_s_total": total_inside,
        "share_outside_denoiser": 1 - total_inside / total_wall,
        "per_step_of_median_run": mid["per_step"],
    }
    return row


def measure_bound(
    name: str, estimator: str, fn: Callable[[Callable, Tensor, torch.Generator], Tensor],
    denoiser: Callable, x0: Tensor, sizes: Sizes, ops: str, note: str = "",
) -> dict[str, Any]:
    """Seconds per sequence of one bound estimate (``[B]`` estimates per call), median over repeats."""

    cpu: list[float] = []

    def once(seed: int) -> tuple[float, Recorder, Tensor]:
        rec = Recorder(denoiser)
        gen = torch.Generator().manual_seed(seed)
        start = time.process_time()
        est, wall = timed(lambda: fn(rec, x0, gen))
        cpu.append(time.process_time() - start)
        return wall, rec, est

    for i in range(sizes.warmup):
        once(SEED + 100 + i)
    runs = [once(SEED + i) for i in range(sizes.repeats)]
    walls = [w for w, _, _ in runs]
    median = statistics.median(walls)
    B = x0.shape[0]
    return {
        "name": name,
        "estimator": estimator,
        "ops": ops,
        "accuracy": OPS_LABELS[ops],
        "note": note,
        "B": B, "L": x0.shape[1], "T": sizes.steps if "nll_bound" in estimator else None,
        "repeats": sizes.repeats, "warmup": sizes.warmup,
        "wall_s_median": median,
        "wall_s_all": walls,
        "cpu_s_all": cpu[sizes.warmup:],
        "s_per_sequence": median / B,
        "share_outside_denoiser": 1 - sum(r.inside() for _, r, _ in runs) / sum(walls),
        "denoiser_calls_t": [[t for t, _, _ in r.calls] for _, r, _ in runs],
        "estimate_nats_per_token": [float(e.sum()) / x0.numel() for _, _, e in runs],
    }


def measure_prior_kl(name: str, proc: gdds.ForwardProcess, x0: Tensor) -> dict[str, Any]:
    """The exact prior term ``KL(q_1(.|x0) || p_1)`` alone (part of every nll_bound call)."""
    cpu = time.process_time()
    value, wall = timed(lambda: likelihood.prior_kl(proc, x0))
    cpu = time.process_time() - cpu
    return {
        "name": name, "estimator": "gdds.likelihood.prior_kl (prior term of nll_bound, always default operators)",
        "ops": "default", "B": x0.shape[0], "L": x0.shape[1], "wall_s": wall, "cpu_s": cpu,
        "s_per_sequence": wall / x0.shape[0],
        "nats_per_token": float(value.sum()) / x0.numel(),
    }


def operator_accuracy(proc: gdds.ForwardProcess, m: int, allowed: Tensor) -> dict[str, Any]:
    """L1 distance between one reverse step under the cheap and the default operator settings."""
    gen = torch.Generator().manual_seed(SEED + 2)
    n = ACCURACY_POSITIONS
    xt = allowed[torch.randint(0, allowed.numel(), (n,), generator=gen)]
    mu = torch.softmax(torch.randn(n, m, generator=gen, dtype=torch.float64) * LOGIT_SCALE, dim=-1)
    s, t = ACCURACY_TIMES
    ref, ref_s = timed(lambda: reverse_step_probs(proc, mu, xt, s, t, operators=DEFAULT_OPS))
    cheap, cheap_s = timed(lambda: reverse_step_probs(proc, mu, xt, s, t, operators=CHEAP_OPS))
    l1 = (cheap - ref).abs().sum(-1)
    return {
        "what": "L1 distance between p_theta(x_s | x_t) computed with the cheap and the default operator "
                f"settings, {n} positions (random x_t, random mu), one reverse step s -> t",
        "s": s, "t": t, "positions": n,
        "l1_max": float(l1.max()), "l1_mean": float(l1.mean()),
        "step_mass_default": [float(ref.sum(-1).min()), float(ref.sum(-1).max())],
        "step_mass_cheap": [float(cheap.sum(-1).min()), float(cheap.sum(-1).max())],
        "step_mass_note": "[min, max] over positions of sum_z p_theta(z | x_t); exact operators give 1",
        "wall_s_default": ref_s, "wall_s_cheap": cheap_s,
    }


def profile_semantic(proc: gdds.ForwardProcess, denoiser: Callable, sizes: Sizes) -> dict[str, Any]:
    """cProfile of one exact sampler call on the semantic kernel with the cheap settings."""
    prof = cProfile.Profile()
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    prof.enable()
    sample(proc, denoiser, num=sizes.B, length=sizes.L, steps=sizes.steps, generator=gen, operators=CHEAP_OPS)
    prof.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof)

    def where(key: tuple[str, int, str]) -> str:
        path, line, func = key
        for marker in ("src/gdds/", "site-packages/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{path}:{line}({func})" if line else func

    rows = [
        {"function": where(key), "ncalls": nc, "tottime_s": tt, "cumtime_s": ct}
        for key, (_, nc, tt, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
    ]
    return {
        "what": f"cProfile of one gdds.sampling.sample call, semantic kernel, ops={given(CHEAP_OPS)}, "
                f"B={sizes.B} L={sizes.L} S={sizes.steps}",
        "wall_s": wall,
        "top_by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:PROFILE_TOP],
        "top_by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:PROFILE_TOP],
    }
