"""Training throughput benchmark (the snapshot objective and every compared method).

For each preset measured (CPU: ``tiny`` and ``demo``; CUDA when available:
``small`` with the 50,257-token GPT-2 vocabulary, B = 32, L = 1024, bf16):

- training tokens/s of full optimizer steps (noising, forward, backward, AdamW,
  EMA), median over repeats after warm-up steps;
- the share of step time spent in noising: the same global batch noised alone
  (``snapshot_inputs``: stratified times and ``ForwardProcess.noise`` on that batch shape),
  divided by the step time. Target on CPU: at most 5%.

Run from the repository root::

    python benchmarks/train.py [--out DIR] [--steps N] [--repeats N] [--device cpu|cuda|auto]
    python benchmarks/train.py --methods gdds-mask mdlm jump-mask campbell-mask ar   # per method, demo preset

Writes ``DIR/train.json`` (default ``results/bench``) atomically and prints a table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from common import command_line, machine_info, synchronize, timed, versions, write_json
from gdds.engine.build import build_run
from gdds.engine.config import load_config
from gdds.engine.distributed import DistInfo
from gdds.engine.evaluation.compare import ENTRIES
from gdds.engine.steps import batch_indices
from gdds.engine.train import Trainer
from gdds.objectives import snapshot_inputs

NOISE_SHARE_TARGET = 0.05
CPU_PRESETS = {"tiny": [], "demo": []}
CUDA_PRESETS = {"small": ["data.seq_len=1024", "train.batch_size=32", "train.precision=bf16"]}


def measure(preset: str, overrides: list[str], device: torch.device, steps: int, repeats: int) -> dict[str, Any]:
    """Step time and noising time of ``preset`` on ``device``."""
    cfg = load_config(preset, [*overrides, "train.progress=false", f"train.device={device.type}"])
    with tempfile.TemporaryDirectory(prefix="gdds-bench-train-") as run_dir:
        trainer = Trainer(cfg, Path(run_dir), build_run(cfg, device, progress=False), DistInfo(), device)
        for _ in range(2):
            trainer.train_step()

        def run_steps() -> None:
            for _ in range(steps):
                trainer.train_step()
            synchronize(device.type)

        step_s = [timed(run_steps)[1] / steps for _ in range(repeats)]
        rows = batch_indices(0, len(trainer.run.train), cfg.train.batch_size, cfg.seed)
        x0 = trainer.run.train.batch(rows).to(device)
        gen = torch.Generator(device=device).manual_seed(0)

        def noise_steps() -> None:
            for _ in range(steps):
                snapshot_inputs(trainer.run.process, x0, cfg.process.t_min, gen)
            synchronize(device.type)

        has_process = trainer.run.process is not None
        noise_s = [timed(noise_steps)[1] / steps for _ in range(repeats)] if has_process else [float("nan")]
    step, noise = statistics.median(step_s), statistics.median(noise_s)
    tokens = cfg.train.batch_size * cfg.data.seq_len
    model = trainer.model
    return {
        "preset": preset,
        "method": cfg.method,
        "settings": {"overrides": overrides, "batch_size": cfg.train.batch_size, "seq_len": cfg.data.seq_len,
                     "vocab_size": model.config.vocab_size, "model": model.config.to_dict(),
                     "parameters": model.num_parameters(), "kernel": trainer.run.kernel_identity.get("repr"),
                     "precision": "bf16" if trainer.autocast["enabled"] else "fp32", "steps_per_repeat": steps,
                     "repeats": repeats, "device": str(device)},
        "step_s_median": step,
        "tokens_per_s_median": tokens / step,
        "tokens_per_s_best": tokens / min(step_s),
        "noising_s_median": noise,
        "noising_share": noise / step,
        "noising_share_target": f"<= {NOISE_SHARE_TARGET}",
        "noising_share_pass": noise / step <= NOISE_SHARE_TARGET if device.type == "cpu" and has_process else None,
        "model_tflops": (model.flops_per_token(cfg.data.seq_len) * tokens / step / 1e12
                         if hasattr(model, "flops_per_token") else None),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Training throughput benchmark (writes DIR/train.json).")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--presets", nargs="*", default=None, help="CPU presets to measure (default: tiny demo)")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(ENTRIES), metavar="METHOD",
                        help="instead: the methods of `gdds compare` on --base (writes train_methods.json)")
    parser.add_argument("--base", default="demo", help="the preset of --methods (default demo)")
    parser.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="configuration overrides for every measured run (e.g. model.parametrization=mean)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    cpu = {} if args.device == "cuda" else {p: CPU_PRESETS.get(p, []) for p in (args.presets or CPU_PRESETS)}
    cuda = CUDA_PRESETS if args.device != "cpu" and torch.cuda.is_available() else {}
    if args.methods:
        cpu, cuda = {}, {}
        device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
        results = [{"name": name, **measure(args.base, [*args.overrides, *ENTRIES[name]], device, args.steps,
                                            args.repeats)} for name in args.methods]
    else:
        results = [measure(p, [*o, *args.overrides], torch.device("cpu"), args.steps, args.repeats)
                   for p, o in cpu.items()]
        results += [measure(p, [*o, *args.overrides], torch.device("cuda"), args.steps, args.repeats)
                    for p, o in cuda.items()]
    report = {
        "benchmark": "train",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(__file__, argv),
        "machine": machine_info(cuda_used=bool(cuda)),
        "versions": versions(),
        "results": results,
        "cuda_skipped_reason": None if cuda else "CUDA is not available (or --device cpu)",
    }
    path = args.out / ("train_methods.json" if args.methods else "train.json")
    write_json(report, path)
    print(f"{'run':<14} {'device':<6} {'vocab':>6} {'params':>11} {'tokens/s':>10} {'step (ms)':>10} "
          f"{'noising share':>14}")
    for r in results:
        s = r["settings"]
        print(f"{r.get('name', r['preset']):<14} {s['device']:<6} {s['vocab_size']:>6} {s['parameters']:>11,} "
              f"{r['tokens_per_s_median']:>10,.0f} {1e3 * r['step_s_median']:>10.1f} {r['noising_share']:>13.2%}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
