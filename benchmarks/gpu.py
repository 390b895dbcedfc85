"""The GPU benchmarks of ``benchmarks/gpu_suite.sh``, each figure beside its reference and target.

Sections (each runs on its own; an error is recorded in its entry and the others still run):

- ``noising``: semantic kNN noising (random embeddings, m = 50,257, d = 768, k = 64, B = 64,
  L = 1,024, log-linear) with ``ForwardProcess.noise``, against a plain per-jump loop measured in
  the same run (every position draws at every jump index, masked: the paper's reference
  algorithm) and the reference figure 4.9M tokens/s; closed-form uniform noising of the same
  shape against 909M tokens/s. Target: 100M tokens/s (semantic).
- ``train``: the ``small`` preset (12 layers, width 768, V = 50,257, B = 32, L = 1,024, bf16,
  ``train.compile=true``): tokens/s, model TFLOP/s (``DiT.flops_per_token``), peak memory, and the
  graph breaks of the compiled forward (``torch._dynamo.explain``), against the reference 168k
  tokens/s and 41.7 GiB. Target: 350k tokens/s at no more memory.
- ``sampler_mask``, ``sampler_uniform``, ``sampler_semantic``: an exact reverse step at
  m = 50,257, B = 16, L = 1,024 with a freshly initialised ``small`` DiT: time outside the
  network over time inside it (mask and uniform: at most 1; semantic: at most 3), and one
  ``T = 128`` bound estimate per sequence.
- ``decoding``: the decoding table's speed columns on a GPU: tokens/s and network calls per token of every
  registered sampler that draws from a denoiser (``gdds.samplers.SAMPLERS``; those of the mask kernel
  included) under the mask kernel at m = 50,257, with a freshly initialised ``small`` DiT under bf16
  autocast, B = 4, L = 1,024, 64 steps, after a warm-up call of 2 steps; measured as ``gdds decode-bench``
  measures them (its call counter; one call denoises the batch). The block sampler is
  ``benchmarks/block_generation.py``'s; the others are listed with the reason they are not timed here.
- ``determinism``: two training steps of the micro configuration with
  ``train.deterministic=true`` run twice: equal losses, or the clear error it gives.

``--dry-run`` runs every section on the CPU at tiny sizes (no target judged): the test suite runs
it so the script cannot rot between GPU sessions. Writes ``OUT/gpu.json`` atomically.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import gdds
from common import machine_info, synchronize, timed, versions, write_json
from gdds.kernels import SemanticKNN, SemanticSettings, Uniform, cached_knn_graph
from gdds.samplers import DENOISER, SAMPLERS, Sampler

REFERENCE = {"semantic_per_jump_tokens_per_s": 4.9e6, "uniform_closed_tokens_per_s": 909e6,
             "train_small_tokens_per_s": 168e3, "train_small_peak_gib": 41.7}
TARGET = {"semantic_tokens_per_s": 100e6, "train_small_tokens_per_s": 350e3, "sampler_overhead_closed": 1.0,
          "sampler_overhead_semantic": 3.0}


@dataclass(frozen=True)
class Sizes:
    m: int
    d: int
    k: int
    noise_B: int
    noise_L: int
    train_overrides: tuple[str, ...]
    sample_B: int
    sample_L: int
    bound_steps: int
    repeats: int
    decode_B: int
    decode_L: int
    decode_steps: int


FULL = Sizes(m=50_257, d=768, k=64, noise_B=64, noise_L=1024,
             train_overrides=("data.seq_len=1024", "train.batch_size=32", "train.precision=bf16",
                              "train.compile=true"),
             sample_B=16, sample_L=1024, bound_steps=128, repeats=5, decode_B=4, decode_L=1024, decode_steps=64)
DRY = Sizes(m=600, d=16, k=8, noise_B=2, noise_L=32,  # m > 512: the operators of full size, not the dense path
            train_overrides=("data.tokenizer=char", "data.compact_vocab=false", "data.seq_len=32",
                             "model.preset=tiny", "model.layers=2", "model.width=64", "model.heads=2",
                             "model.cond_width=32", "train.batch_size=4", "process.embedding_dim=8",
                             "train.compile=false"),
            sample_B=1, sample_L=8, bound_steps=2, repeats=2, decode_B=1, decode_L=8, decode_steps=2)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` (GPU work included) over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device.type)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        synchronize(device.type)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def semantic_process(sizes: Sizes, device: torch.device) -> gdds.ForwardProcess:
    """The paper's kernel on random embeddings, its kNN graph built on ``device``."""
    schedule = gdds.LogLinear(1e-3)
    emb = torch.randn(sizes.m, sizes.d, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="gdds-gpu-knn-") as cache:
        cached_knn_graph(emb, sizes.k, cache_dir=cache, progress=False, device=device)
        kernel = SemanticKNN(emb, SemanticSettings(k=sizes.k), schedule=schedule, cache_dir=cache, progress=False)
    return gdds.ForwardProcess(schedule, kernel).to(device)


def per_jump_loop(process: gdds.ForwardProcess, x0: torch.Tensor, t: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """The reference algorithm written plainly: Poisson jump counts, then for every jump index all
    positions draw a jump (at the order statistics of their jump times) and keep it if they have
    that many jumps."""
    sched = process.schedule
    Lam = sched._Lambda(t.double()).repeat_interleave(x0.shape[1])
    counts = torch.poisson(Lam, generator=generator)
    cur, frac = x0.reshape(-1).clone(), torch.zeros_like(Lam)
    for k in range(int(counts.max())):
        remaining = (counts - k).clamp_min(1.0)
        w = torch.rand(Lam.shape, dtype=torch.float64, device=Lam.device, generator=generator)
        frac = 1 - (1 - frac) * w.pow(1 / remaining)
        tau = sched._Lambda_inv((frac * Lam).clamp_max(sched.Lambda_max))
        cur = torch.where(counts > k, process.kernel.jump(cur, tau, generator), cur)
    return cur.reshape(x0.shape)


def host_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """How many times ``fn()`` waits on the GPU (torch's sync debug mode; ``None`` off CUDA)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def noising(sizes: Sizes, device: torch.device, dry: bool) -> dict[str, Any]:
    process = semantic_process(sizes, device)
    uniform = gdds.ForwardProcess(gdds.LogLinear(1e-3), Uniform(sizes.m)).to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    x0 = torch.randint(0, sizes.m, (sizes.noise_B, sizes.noise_L), device=device, generator=gen)
    tokens = x0.numel()

    def times() -> torch.Tensor:
        return torch.rand(sizes.noise_B, device=device, generator=gen)

    ours = tokens / median_seconds(lambda: process.noise(x0, times(), generator=gen), device, sizes.repeats)
    loop = tokens / median_seconds(lambda: per_jump_loop(process, x0, times(), gen), device, sizes.repeats)
    closed = tokens / median_seconds(lambda: uniform.noise(x0, times(), generator=gen), device, sizes.repeats)
    t = times()
    syncs = host_syncs(lambda: process.noise(x0, t, generator=gen), device)
    return {"settings": {"m": sizes.m, "d": sizes.d, "k": sizes.k, "B": sizes.noise_B, "L": sizes.noise_L},
            "semantic_tokens_per_s": ours, "per_jump_loop_tokens_per_s": loop,
            "speedup_vs_per_jump_loop_same_run": ours / loop,
            "speedup_vs_reference_figure": ours / REFERENCE["semantic_per_jump_tokens_per_s"],
            "uniform_closed_tokens_per_s": closed,
            "uniform_vs_reference_figure": closed / REFERENCE["uniform_closed_tokens_per_s"],
            "host_syncs_per_semantic_call": syncs,
            "target_met": None if dry else ours >= TARGET["semantic_tokens_per_s"]}


def train(sizes: Sizes, device: torch.device, dry: bool) -> dict[str, Any]:
    from gdds.engine.build import build_run
    from gdds.engine.config import load_config
    from gdds.engine.distributed import DistInfo
    from gdds.engine.train import Trainer

    preset = "tiny" if dry else "small"
    cfg = load_config(preset, [*sizes.train_overrides, "train.progress=false", f"train.device={device.type}"])
    with tempfile.TemporaryDirectory(prefix="gdds-gpu-train-") as run_dir:
        trainer = Trainer(cfg, Path(run_dir), build_run(cfg, device, progress=False), DistInfo(), device)
        model = trainer.model
        xt = torch.zeros(2, cfg.data.seq_len, dtype=torch.long, device=device)
        explain = torch._dynamo.explain(model)(xt, torch.full((2,), 0.5, device=device))
        torch._dynamo.reset()
        tic = time.perf_counter()
        trainer.train_step()  # compiles
        first_step_s = time.perf_counter() - tic
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step_s = median_seconds(trainer.train_step, device, sizes.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    tokens_per_s = cfg.train.batch_size * cfg.data.seq_len / step_s
    flops = model.flops_per_token(cfg.data.seq_len) * tokens_per_s
    return {"settings": {"preset": preset, "overrides": list(sizes.train_overrides)},
            "parameters": model.num_parameters(), "first_step_s": first_step_s, "step_s": step_s,
            "tokens_per_s": tokens_per_s, "model_tflop_per_s": flops / 1e12,
            "vs_reference": tokens_per_s / REFERENCE["train_small_tokens_per_s"],
            "peak_memory_gib": peak, "reference_peak_gib": REFERENCE["train_small_peak_gib"],
            "graph_breaks": explain.graph_break_count, "graphs": explain.graph_count,
            "target_met": None if dry else (tokens_per_s >= TARGET["train_small_tokens_per_s"]
                                            and peak <= REFERENCE["train_small_peak_gib"])}


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fresh_dit(sizes: Sizes, length: int, device: torch.device, dry: bool) -> torch.nn.Module:
    """A freshly initialised DiT (``small``; ``tiny`` in a dry run) at ``sizes.m`` tokens, in eval mode."""
    from gdds.models import DiT, DiTConfig

    return DiT(DiTConfig.preset("tiny" if dry else "small", sizes.m, max_len=length)).to(device).eval()


def autocast_denoiser(net: torch.nn.Module, device: torch.device) -> Denoiser:
    """``net`` as a denoiser ``(x_t, t) -> float32 logits``, under bf16 autocast on a GPU (as a loaded run's)."""

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return net(x, t.float()).float()

    return call


class Timed:
    """A denoiser that records the wall time spent inside it (waiting for the GPU before and after each call)."""

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net, self.device, self.inside = autocast_denoiser(net, device), device, 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out, seconds = timed(lambda: self.net(x, t), self.device.type)
        self.inside += seconds
        return out


def sampler(kernel: str) -> Callable[[Sizes, torch.device, bool], dict[str, Any]]:
    """The section of one kernel: an exact sampler step and a bound estimate with a freshly
    initialised DiT (``small``; ``tiny`` in a dry run) as the denoiser."""

    def section(sizes: Sizes, device: torch.device, dry: bool) -> dict[str, Any]:
        from gdds.kernels import Mask

        net = fresh_dit(sizes, sizes.sample_L, device, dry)
        schedule = gdds.LogLinear(1e-3)
        process = {"mask": lambda: gdds.ForwardProcess(schedule, Mask(sizes.m, sizes.m - 1)).to(device),
                   "uniform": lambda: gdds.ForwardProcess(schedule, Uniform(sizes.m)).to(device),
                   "semantic": lambda: semantic_process(sizes, device)}[kernel]()
        den, gen, steps = Timed(net, device), torch.Generator(device=device).manual_seed(2), 2
        tic = time.perf_counter()
        gdds.sample(process, den, sizes.sample_B, sizes.sample_L, steps=steps, generator=gen)
        synchronize(device.type)
        total = time.perf_counter() - tic
        x0 = torch.randint(0, sizes.m - 1, (sizes.sample_B, sizes.sample_L), device=device, generator=gen)
        tic = time.perf_counter()
        gdds.nll_bound(process, Timed(net, device), x0, steps=sizes.bound_steps, generator=gen)
        synchronize(device.type)
        overhead = (total - den.inside) / den.inside
        limit = TARGET["sampler_overhead_semantic" if kernel == "semantic" else "sampler_overhead_closed"]
        return {"settings": {"m": sizes.m, "B": sizes.sample_B, "L": sizes.sample_L,
                             "bound_steps": sizes.bound_steps, "network": "tiny" if dry else "small"},
                "step_s": total / steps, "network_s_per_step": den.inside / steps,
                "overhead_over_network": overhead, "target": limit,
                "target_met": None if dry else overhead <= limit,
                "bound_s_per_sequence": (time.perf_counter() - tic) / sizes.sample_B}

    return section


def time_sampler(entry: Sampler, process: gdds.ForwardProcess, denoiser: Denoiser, sizes: Sizes,
                 device: torch.device) -> dict[str, Any]:
    """One registered sampler's tokens/s and network calls per token (``gdds decode-bench``'s measures), timed
    after a warm-up call of 2 steps."""
    from gdds.engine.evaluation.decoding import CallCounter

    B, L, counter = sizes.decode_B, sizes.decode_L, CallCounter()

    def draw(steps: int, den: Denoiser) -> torch.Tensor:
        gen = torch.Generator(device=device).manual_seed(3)
        return entry.draw(process, den, B, L, steps=steps, generator=gen)

    draw(2, denoiser)  # warm-up: kernels, allocator
    _, seconds = timed(lambda: draw(sizes.decode_steps, counter.wrap(denoiser)), device.type)
    return {"label": entry.label, "exact": entry.exact, "seconds": seconds, "tokens_per_s": B * L / seconds,
            "network_calls": counter.calls, "network_calls_per_token": counter.calls / L}


def decoding(sizes: Sizes, device: torch.device, dry: bool) -> dict[str, Any]:
    from gdds.kernels import Mask

    denoiser = autocast_denoiser(fresh_dit(sizes, sizes.decode_L, device, dry), device)
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), Mask(sizes.m, sizes.m - 1)).to(device)
    rows, skipped = {}, {}
    for name, entry in SAMPLERS.items():
        if entry.source == DENOISER and entry.applies(process):
            rows[name] = time_sampler(entry, process, denoiser, sizes, device)
        else:
            skipped[name] = ("benchmarks/block_generation.py" if name == "blocks" else
                             f"draws from a {entry.source} model, not a DiT denoiser" if entry.source != DENOISER
                             else "does not apply to the mask kernel")
    return {"settings": {"m": sizes.m, "kernel": "mask", "B": sizes.decode_B, "L": sizes.decode_L,
                         "steps": sizes.decode_steps, "network": "tiny" if dry else "small",
                         "precision": "fp32" if dry else "bf16 autocast"},
            "samplers": rows, "skipped": skipped}


def determinism(sizes: Sizes, device: torch.device, dry: bool) -> dict[str, Any]:
    from gdds.engine.config import ConfigError, load_config
    from gdds.engine.train import train as train_run

    overrides = [*DRY.train_overrides, "train.max_steps=2", "train.progress=false", "train.deterministic=true",
                 f"train.device={device.type}", "process.kernel=mask"]
    losses = []
    try:
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="gdds-gpu-det-") as run_dir:
                losses.append(train_run(load_config("tiny", overrides), Path(run_dir)).train["loss"])
    except ConfigError as exc:
        return {"works": False, "message": str(exc)}
    return {"works": True, "losses": losses, "equal": losses[0] == losses[1]}


SECTIONS = {"noising": noising, "train": train, "determinism": determinism, "sampler_mask": sampler("mask"),
            "sampler_uniform": sampler("uniform"), "sampler_semantic": sampler("semantic"), "decoding": decoding}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, no target judged")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --dry-run on a CPU")
    sizes = DRY if args.dry_run else FULL
    report: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              "machine": machine_info(device.type == "cuda"), "versions": versions(),
                              "dry_run": args.dry_run, "sizes": asdict(sizes), "reference": REFERENCE,
                              "target": TARGET}
    failed = 0
    for name in args.sections:
        tic = time.perf_counter()
        try:
            report[name] = SECTIONS[name](sizes, device, args.dry_run)
        except Exception as exc:  # record it and go on: one broken section must not hide the others
            failed += 1
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        report[name]["seconds"] = time.perf_counter() - tic
        print(f"{name}: {report[name]}", flush=True)
        write_json(report, args.out / "gpu.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
