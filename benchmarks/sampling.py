"""Sampler and likelihood-bound cost benchmark on the CPU (``docs/math.md`` sections 6 to 8).

What it measures, for the mask, uniform and semantic kNN (SIK) kernels at the
WordPiece vocabulary size m = 30,522 under ``LogLinear(1e-3)``:

- ``gdds.sampling.sample`` (the model's exact reverse chain, the one the bound
  scores): steps/s = ``S / wall time`` of a whole call, and the share of wall time
  spent **outside** the denoiser (the sampler's own cost). The wall time includes
  the call's set-up, mostly the prior ``p_1 = P_{0->1} pi_ref``, which is also
  reported alone (``setup_s``, the time before the first denoiser call) with
  per-step times and the ``t`` of each step;
- ``gdds.sampling.sample_renoise`` (APPROXIMATE: predict ``x0``, re-noise) for
  comparison, same figures;
- the cost of one bound estimate per sequence: ``gdds.likelihood.nll_bound`` (one
  term ``k ~ U{2..T}`` per sequence, plus the exact prior term and the
  reconstruction term), its prior term ``prior_kl`` alone, and the closed-form
  continuous-time bounds where they exist (``masked_continuous_bound`` for mask;
  ``continuous_bound`` for mask and uniform when the library has it).

The denoiser is a stand-in so that the sampler, not a network, is measured: it
returns precomputed random logits ``[B, L, m]`` (float32, N(0, 2^2)) and its calls
are timed separately ("inside the denoiser"). One extra row samples the mask
kernel with a real, freshly initialised ``tiny`` DiT to show a realistic split.

The semantic kernel's transition operators are time-dependent. Its rank-one
teleport part is handled in closed form and only the kNN part is frozen, on
pieces of ``step`` in ``Lambda`` with Richardson extrapolation (default
``step=0.5``, fourth order, about 1e-7 in L1 against an ODE solve). It is also
measured with cheaper operator settings (``OperatorSettings(step=1.0)``, about 1e-5);
``operator_accuracy`` gives the L1 distance of one cheap reverse step to the
default one. The semantic sizes are small (B=1, L=16, S=4) because its exact step
is expensive on a CPU at this ``m``; mask and uniform use closed-form O(m) steps
and larger sizes. ``x0`` for the bounds is uniform over ordinary tokens
(WordPiece specials and the mask id excluded).

``--quick`` is a smoke test (random-embedding SIK with m = 600 > 512, so that the
same series operators run as at full size rather than the dense ODE path; tiny
sizes; a few seconds). It runs on one torch thread unless ``--threads`` says
otherwise: on a loaded 2-core machine the many small operator calls slowed it
from ~10 s to ~4 min with two threads (oversubscription), one thread kept ~10 s.
``--profile`` adds a cProfile of one semantic exact sampler call with the cheap
settings (top entries by own and cumulative time).

Run from the repository root::

    python benchmarks/sampling.py [--out DIR] [--quick] [--kernels mask uniform semantic]
                                  [--profile] [--threads N]

Results go to ``DIR/sampling.json`` (default ``results/bench``), written
atomically; a summary table is printed to stdout.
"""
from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import gdds
from common import machine_info, timed, versions, write_json
from gdds import OperatorSettings, likelihood
from gdds.kernels import Kernel, Mask, SemanticKNN, SemanticSettings, Uniform
from gdds.minilm import minilm_kernel
from gdds.models import DiT, DiTConfig
from gdds.posterior import reverse_step_probs
from gdds.sampling import sample, sample_renoise

SEED = 0
SCHEDULE_EPS = 1e-3
LOGIT_SCALE = 2.0
KERNELS = ("mask", "uniform", "semantic")
DEFAULT_OPS = OperatorSettings()
CHEAP_OPS = OperatorSettings(step=1.0)


def given(settings: OperatorSettings) -> dict[str, Any]:
    """The operator settings that differ from the defaults, as the results record them."""
    return {f.name: getattr(settings, f.name) for f in fields(settings) if getattr(settings, f.name) != f.default}


OPS_LABELS = {
    "default": "series; teleport part in closed form, kNN part frozen on pieces of step=0.5 in Lambda, "
               "Richardson-extrapolated (4th order; ~1e-7 L1 against an ODE solve in the operator tests); "
               "Poisson tail tol=1e-12",
    "cheap": "series as the default with step=1.0 (~1e-5 L1 against the ODE); see operator_accuracy",
    "closed": "closed form (column-constant kernel, O(m) per position; exact up to round-off)",
}
ACCURACY_TIMES = (0.5, 0.75)  # (s, t) of the reverse step compared; spans the teleport sigmoid's midpoint 0.6
ACCURACY_POSITIONS = 4
PROFILE_TOP = 15


@dataclass(frozen=True)
class Sizes:
    """Batch, length, steps (sampler) or T (bound), and repetitions of one measurement."""

    B: int
    L: int
    steps: int
    repeats: int
    warmup: int


@dataclass(frozen=True)
class Setup:
    """Vocabulary and the sizes of every measurement."""

    vocab: str  # "minilm" (WordPiece + MiniLM embeddings, kNN built fresh) or "random" (standard normal)
    m: int
    mask_id: int
    d: int | None  # embedding width for "random"
    k: int
    closed_sampler: Sizes  # mask and uniform kernels, and the DiT row
    semantic_sampler: Sizes
    closed_bound: Sizes  # steps = T of nll_bound
    semantic_bound: Sizes
    dit_preset: str


FULL = Setup(
    "minilm", m=30_522, mask_id=103, d=None, k=64,  # [MASK] = 103
    closed_sampler=Sizes(B=4, L=64, steps=32, repeats=3, warmup=1),
    semantic_sampler=Sizes(B=1, L=16, steps=4, repeats=1, warmup=0),
    closed_bound=Sizes(B=4, L=64, steps=128, repeats=3, warmup=1),
    semantic_bound=Sizes(B=1, L=16, steps=128, repeats=1, warmup=0),
    dit_preset="tiny",
)
QUICK = Setup(
    "random", m=600, mask_id=599, d=16, k=16,
    closed_sampler=Sizes(B=2, L=16, steps=8, repeats=2, warmup=1),
    semantic_sampler=Sizes(B=1, L=8, steps=2, repeats=1, warmup=0),
    closed_bound=Sizes(B=2, L=16, steps=16, repeats=2, warmup=1),
    semantic_bound=Sizes(B=1, L=8, steps=16, repeats=1, warmup=0),
    dit_preset="tiny",
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


def stand_in(B: int, L: int, m: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Denoiser returning fixed random logits ``[B', L', m]`` (a slice of one ``[B, L, m]`` bank)."""
    bank = torch.randn(B, L, m, generator=torch.Generator().manual_seed(SEED + 1)) * LOGIT_SCALE

    def denoiser(x: Tensor, t: Tensor) -> Tensor:
        return bank[: x.shape[0], : x.shape[1]]

    return denoiser


def tiny_dit(m: int, L: int, preset: str) -> Callable[[Tensor, Tensor], Tensor]:
    """A freshly initialised DiT (eval mode) as a denoiser returning logits."""
    torch.manual_seed(SEED)
    model = DiT(DiTConfig.preset(preset, vocab_size=m, max_len=L)).eval()

    def denoiser(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t)

    denoiser.parameters = model.num_parameters()  # type: ignore[attr-defined]
    return denoiser


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

    def call(rec: Recorder, seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        if exact:
            return sample(proc, rec, num=sizes.B, length=sizes.L, steps=sizes.steps, generator=gen, operators=op)
        return sample_renoise(proc, rec, num=sizes.B, length=sizes.L, steps=sizes.steps, generator=gen)

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
        "sampler": "gdds.sampling.sample (exact reverse chain)" if exact
        else "gdds.sampling.sample_renoise (APPROXIMATE: not the model's chain)",
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


def build_kernel(name: str, setup: Setup, schedule: gdds.Schedule, cache_dir: str) -> tuple[Kernel, float]:
    """The kernel and its construction time (the semantic kNN graph is built cold in ``cache_dir``)."""
    if name == "mask":
        return timed(lambda: Mask(setup.m, setup.mask_id))
    if name == "uniform":
        return timed(lambda: Uniform(setup.m))
    if setup.vocab == "minilm":
        return timed(lambda: minilm_kernel(schedule=schedule, cache_dir=cache_dir, progress=False))
    emb = torch.randn(setup.m, setup.d, generator=torch.Generator().manual_seed(SEED))
    return timed(lambda: SemanticKNN(emb, SemanticSettings(k=setup.k), schedule=schedule, cache_dir=cache_dir,
                                     progress=False))


def ordinary_tokens(setup: Setup) -> Tensor:
    """Ids that clean data may hold: not the mask id, nor (WordPiece) a bracketed special token."""
    banned = {setup.mask_id}
    if setup.vocab == "minilm":
        from gdds.data.tokenizers.registry import wordpiece_special_ids

        banned |= set(wordpiece_special_ids())
    keep = torch.ones(setup.m, dtype=torch.bool)
    keep[sorted(banned)] = False
    return keep.nonzero().reshape(-1)


def run_kernel(name: str, setup: Setup, profile: bool) -> dict[str, Any]:
    """Every sampler and bound measurement for one kernel."""
    torch.manual_seed(SEED)
    schedule = gdds.LogLinear(SCHEDULE_EPS)
    with tempfile.TemporaryDirectory(prefix="gdds-bench-sampling-") as cache_dir:
        kernel, build_s = build_kernel(name, setup, schedule, cache_dir)
    proc = gdds.ForwardProcess(schedule, kernel)
    semantic = name == "semantic"
    if semantic:  # warm the kNN kernel's sparse structure (built on first use) outside the timings
        proc.transition(torch.ones(setup.m, 1, dtype=torch.float64) / setup.m, 0.0, 0.01)
    ssizes = setup.semantic_sampler if semantic else setup.closed_sampler
    bsizes = setup.semantic_bound if semantic else setup.closed_bound
    den = stand_in(max(ssizes.B, bsizes.B), max(ssizes.L, bsizes.L), setup.m)
    allowed = ordinary_tokens(setup)
    gen = torch.Generator().manual_seed(SEED + 3)
    x0 = allowed[torch.randint(0, allowed.numel(), (bsizes.B, bsizes.L), generator=gen)]

    samplers, bounds = [], []
    for ops in ("cheap", "default") if semantic else ("closed",):
        samplers.append(measure_sampler(f"exact ({ops} ops)", proc, den, ssizes, ops, exact=True))
        print(f"  [{name}] sampler exact ({ops}): {samplers[-1]['steps_per_s']:.3g} steps/s", flush=True)
    samplers.append(measure_sampler("renoise", proc, den, ssizes, "default", exact=False))
    result: dict[str, Any] = {"kernel": repr(kernel), "build_s": build_s}
    if name == "mask":
        dit = tiny_dit(setup.m, ssizes.L, setup.dit_preset)
        row = measure_sampler(f"exact, {setup.dit_preset} DiT denoiser", proc, dit, ssizes, "closed", exact=True)
        row["denoiser"] = f"gdds.models.DiT preset {setup.dit_preset!r} ({dit.parameters:,} parameters), fresh init"
        samplers.append(row)

    for ops in ("cheap", "default") if semantic else ("closed",):
        op = CHEAP_OPS if ops == "cheap" else DEFAULT_OPS
        note = ("model chain with the cheap settings; the true posterior and the prior use the defaults"
                if ops == "cheap" else "")
        bounds.append(measure_bound(
            f"nll_bound ({ops} ops)", f"gdds.likelihood.nll_bound(steps={bsizes.steps})",
            lambda rec, x, g, op=op: likelihood.nll_bound(proc, rec, x, steps=bsizes.steps, generator=g, operators=op),
            den, x0, bsizes, ops, note))
        print(f"  [{name}] nll_bound ({ops}): {bounds[-1]['s_per_sequence']:.3g} s/sequence", flush=True)
    if name == "mask":
        bounds.append(measure_bound(
            "masked_continuous_bound", "gdds.likelihood.masked_continuous_bound(samples=1)",
            lambda rec, x, g: likelihood.masked_continuous_bound(proc, rec, x, generator=g), den, x0, bsizes, "closed"))
    if not semantic and hasattr(likelihood, "continuous_bound"):
        bounds.append(measure_bound(
            "continuous_bound", "gdds.likelihood.continuous_bound(samples=1)",
            lambda rec, x, g: likelihood.continuous_bound(proc, rec, x, generator=g), den, x0, bsizes, "closed"))
    result["prior_kl"] = measure_prior_kl("prior_kl", proc, x0)
    result["samplers"] = samplers
    result["bounds"] = bounds
    if semantic:
        result["operator_accuracy"] = operator_accuracy(proc, setup.m, allowed)
        if profile:
            result["profile"] = profile_semantic(proc, den, ssizes)
    return result


def print_summary(report: dict[str, Any]) -> None:
    """Human-readable tables; units in the headers."""
    load = report["load_average_at_start"]
    if load:
        print(f"load average at start (runnable processes): {load['1min']:.2f} (1 min), {load['5min']:.2f} (5 min)")
    s = report["settings"]
    print(f"sampling benchmark ({report['mode']}): m={s['m']}, {s['schedule']}, "
          f"torch threads={report['machine']['torch_num_threads']}")
    print(f"  {'kernel':<9} {'sampler':<26} {'BxL':>7} {'S':>4} {'steps/s':>9} {'outside':>8} "
          f"{'setup (s)':>10} {'wall (s)':>9}")
    for kname, res in report["kernels"].items():
        for row in res["samplers"]:
            print(f"  {kname:<9} {row['name']:<26} {row['B']:>3}x{row['L']:<3} {row['steps']:>4} "
                  f"{row['steps_per_s']:>9.3g} {100 * row['share_outside_denoiser']:>7.1f}% "
                  f"{row['setup_s_median']:>10.3g} {row['wall_s_median']:>9.3g}")
    print(f"  {'kernel':<9} {'bound':<26} {'BxL':>7} {'T':>4} {'s/sequence':>11} {'outside':>8}")
    for kname, res in report["kernels"].items():
        for row in res["bounds"]:
            T = row["T"] if row["T"] is not None else "-"
            print(f"  {kname:<9} {row['name']:<26} {row['B']:>3}x{row['L']:<3} {T:>4} "
                  f"{row['s_per_sequence']:>11.3g} {100 * row['share_outside_denoiser']:>7.1f}%")
        p = res["prior_kl"]
        print(f"  {kname:<9} {'  of which prior_kl alone':<26} {p['B']:>3}x{p['L']:<3} {'-':>4} "
              f"{p['s_per_sequence']:>11.3g}")
    sem = report["kernels"].get("semantic")
    if sem:
        acc = sem["operator_accuracy"]
        print(f"  semantic cheap vs default ops, one reverse step {acc['s']} -> {acc['t']}: "
              f"L1 max {acc['l1_max']:.2e}, mean {acc['l1_mean']:.2e}, step mass cheap "
              f"[{acc['step_mass_cheap'][0]:.4f}, {acc['step_mass_cheap'][1]:.4f}] "
              f"(default {acc['wall_s_default']:.3g} s, cheap {acc['wall_s_cheap']:.3g} s)")
        if "profile" in sem:
            prof = sem["profile"]
            print(f"  profile: {prof['what']} ({prof['wall_s']:.3g} s); top by own time:")
            for row in prof["top_by_tottime"][:10]:
                print(f"    {row['tottime_s']:>8.2f} s own {row['cumtime_s']:>8.2f} s cum {row['ncalls']:>7} calls  "
                      f"{row['function']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Sampler and bound cost benchmark (writes DIR/sampling.json).")
    parser.add_argument("--out", type=Path, default=Path("results/bench"), help="output folder (default results/bench)")
    parser.add_argument("--quick", action="store_true", help="smoke test: m=600 random-embedding SIK, tiny sizes")
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS),
                        help="kernels to measure (default: all)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one semantic exact sampler call (cheap operator settings)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's default; 1 with --quick)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the selected kernels, write ``DIR/sampling.json`` and print the summary."""
    args = parse_args(argv)
    setup = QUICK if args.quick else FULL
    threads = args.threads if args.threads is not None else 1 if args.quick else None
    if threads is not None:
        torch.set_num_threads(threads)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    kernels = [k for k in KERNELS if k in args.kernels]
    results = {}
    for name in kernels:
        print(f"[{name}] measuring ...", flush=True)
        results[name] = run_kernel(name, setup, args.profile)
        results[name]["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "sampling",
        "mode": "quick" if args.quick else "full",
        "created_utc": created,
        "command": [sys.executable, *sys.argv],
        "machine": machine_info(cuda_used=False),
        "load_average_at_start": {"1min": load[0], "5min": load[1], "15min": load[2]} if load else None,
        "versions": versions(),
        "settings": {
            **asdict(setup), "schedule": repr(gdds.LogLinear(SCHEDULE_EPS)), "seed": SEED, "device": "cpu",
            "denoiser": f"stand-in: precomputed float32 logits N(0, {LOGIT_SCALE:g}^2) [B, L, m], "
                        "timed separately (inside the denoiser)",
            "cheap_ops": given(CHEAP_OPS), "ops_labels": OPS_LABELS,
            "steps_per_s": "S / median wall time of a whole sampler call (set-up included)",
            "share_outside_denoiser": "1 - (time inside denoiser calls) / (wall time), summed over repeats",
            "s_per_sequence": "median wall time of one estimator call / B",
            "cpu_s": "process CPU time (all threads) of the same calls: cpu/wall well below the thread "
                     "count, or a high load average, flags contention from other processes",
        },
        "kernels": results,
    }
    path = args.out / "sampling.json"
    write_json(report, path)
    print_summary(report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
