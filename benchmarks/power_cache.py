"""Which tokens' powers a run keeps (``gdds.token_powers``, ``process.power_cache_gib``): the share of a
training batch's forward-likelihood columns that kept powers serve, and the seconds per batch, with the
budget spent on the first tokens met against on the training split's most frequent tokens
(``ForwardProcess.keep_frequent_powers``, what a run does).

The paper's kernel at ``b = 0`` on MiniLM's embeddings at WordPiece level (the ``wordpiece`` preset,
12,590 tokens), consecutive training batches of 16 x 128 tokens noised at stratified times as the training
steps draw them; both stores see the same batches and noise. ``--dry-run``: the character-level ``demo``
preset, a budget of 20 tokens' float64 powers, 3 batches (seconds).

    python benchmarks/power_cache.py [--batches 100] [--gib 2] [--out DIR] [--dry-run]

Writes ``DIR/power_cache.json`` (default ``results/bench``) atomically and prints a table.
"""
from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import gdds
from common import command_line, machine_info, timed, versions, write_json
from gdds import OperatorSettings
from gdds.engine.build import build_run
from gdds.engine.config import load_config
from gdds.engine.evaluation.compare import ENTRIES
from gdds.engine.steps import batch_indices
from gdds.objectives import snapshot_inputs
from gdds.operators import series_depth
from gdds.posterior import forward_likelihood

ORDERS = ("first met", "most frequent")


def columns(xt: torch.Tensor) -> torch.Tensor:
    """The tokens of the forward likelihood's columns: each sequence's distinct tokens."""
    return torch.cat([torch.unique(row) for row in xt])


def measure(run: Any, budget: int, batches: int, frequent: bool) -> dict[str, Any]:
    """Seconds per batch, and the share of its columns whose powers were kept before it, for one store."""
    cfg, base = run.cfg, run.process
    process = gdds.ForwardProcess(base.schedule, base.kernel, power_cache=budget)
    if frequent:
        process.keep_frequent_powers(run.data.unigram_counts())
    split = process.kernel.teleport_split()
    gen = torch.Generator().manual_seed(cfg.seed)
    seconds, kept_share = [], []
    for step in range(batches):
        x0 = run.train.batch(batch_indices(step, len(run.train), cfg.train.batch_size, cfg.seed))
        xt, t = snapshot_inputs(process, x0, cfg.process.t_min, gen)
        store = process.token_powers(split, OperatorSettings())
        kept_share.append(float((store.slot[columns(xt)] >= 0).double().mean()))  # kept before the call
        seconds.append(timed(lambda xt=xt, t=t: forward_likelihood(process, xt, t))[1])
    half = batches // 2
    return {"order": ORDERS[frequent], "capacity_tokens": store.capacity, "tokens_kept": store.kept,
            "kept_share_mean": statistics.fmean(kept_share),
            "kept_share_second_half": statistics.fmean(kept_share[half:]),
            "seconds_mean": statistics.fmean(seconds), "seconds_second_half": statistics.fmean(seconds[half:]),
            "kept_share": kept_share, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--gib", type=float, default=2.0, help="the power budget (process.power_cache_gib)")
    parser.add_argument("--dry-run", action="store_true", help="demo preset, a budget of 20 tokens, 3 batches")
    args = parser.parse_args(argv)
    preset, overrides = ("demo", []) if args.dry_run else ("wordpiece", ENTRIES["gdds-semantic-minilm"])
    cfg = load_config(preset, [*overrides, "train.batch_size=16", "train.progress=false", "train.device=cpu"])
    run = build_run(cfg, torch.device("cpu"), progress=False)
    depth = series_depth(run.process.kernel.teleport_split(), run.process.schedule)
    budget = 20 * depth * run.process.m * 8 if args.dry_run else int(args.gib * 2**30)  # 20 float64 tokens
    batches = 3 if args.dry_run else args.batches
    rows = [measure(run, budget, batches, frequent) for frequent in (False, True)]
    report = {
        "benchmark": "power_cache", "mode": "dry-run" if args.dry_run else "full",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line("benchmarks/power_cache.py", argv), "machine": machine_info(False),
        "versions": versions(),
        "settings": {"preset": preset, "overrides": overrides, "m": run.process.m, "depth": depth,
                     "budget_bytes": budget, "batch": [cfg.train.batch_size, cfg.data.seq_len], "batches": batches,
                     "kernel": run.kernel_identity.get("repr"), "threads": torch.get_num_threads()},
        "rows": rows,
    }
    write_json(report, args.out / "power_cache.json")
    print(f"m = {run.process.m}, budget {budget / 2**30:.2f} GiB ({rows[0]['capacity_tokens']} tokens), "
          f"{batches} batches of {cfg.train.batch_size} x {cfg.data.seq_len}")
    print("| order | columns served by kept powers (mean / second half) | s per batch (mean / second half) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['order']} | {r['kept_share_mean']:.1%} / {r['kept_share_second_half']:.1%} | "
              f"{r['seconds_mean']:.3f} / {r['seconds_second_half']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
