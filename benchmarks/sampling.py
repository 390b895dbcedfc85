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
atomically; a summary table is printed to stdout. The sizes, operator settings,
denoisers and kernels are in ``sampling_setup.py``; the timed measurements in
``sampling_measures.py``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import gdds
from common import command_line, machine_info, versions, write_json
from gdds import likelihood
from sampling_measures import measure_bound, measure_prior_kl, measure_sampler, operator_accuracy, profile_semantic
from sampling_setup import (
    CHEAP_OPS,
    DEFAULT_OPS,
    FULL,
    KERNELS,
    LOGIT_SCALE,
    OPS_LABELS,
    QUICK,
    SCHEDULE_EPS,
    SEED,
    Setup,
    build_kernel,
    given,
    ordinary_tokens,
    stand_in,
    tiny_dit,
)


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
            lambda rec, x, g, op=op: likelihood.nll_bound(proc, rec, x, steps=bsizes.steps, generator=g,
                                                          operators=op),
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
        "command": command_line(__file__, argv),
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
