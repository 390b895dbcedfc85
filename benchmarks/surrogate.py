"""What the one-jump surrogate of ``q_t`` costs a model, on a comparison's own process (issue 23).

The forward-likelihood parametrization (``docs/math.md`` section 6) is exact with ``q_t`` from the
transition operators; ``forward-surrogate`` replaces ``q_t`` by a one-jump approximation. Both are
valid models, so the difference of their bounds is what the approximation costs. Measured here on
the denoiser without context (the Bayes-unigram one: ``mu ∝ pi(y) q(x_t | y)``, ``pi`` the training
split's add-one unigram law), so that no training noise enters: the ``T``-step bound with all terms on
the same validation blocks and draws, paired per block, for both parametrizations of every
``--kernels`` entry of ``gdds compare`` (default: the decisive comparison's structured kernels on
its ``demo`` base).

Run from the repository root::

    python benchmarks/surrogate.py [--out DIR] [--sequences 32] [--steps 128] [--kernels gdds-semantic ...]

Results go to ``DIR/surrogate.json`` (default ``results/bench``); a table is printed.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from common import machine_info, versions, write_json
from gdds.baseline import bayes_unigram, unigram_law, unigram_nll
from gdds.engine.build import build_run
from gdds.engine.config import load_config
from gdds.engine.evaluation.compare import ENTRIES
from gdds.engine.evaluation.evaluate import eval_rows
from gdds.likelihood import nll_bound, paired_difference, summarize
from gdds.objectives.parametrization import PARAMETRIZATIONS

DECISIVE = ("gdds-semantic", "gdds-semantic-mid0.8", "gdds-semantic-absorb")


def measure(entry: str, base: str, sequences: int, steps: int, seed: int) -> dict[str, Any]:
    run = build_run(load_config(base, ENTRIES[entry]), torch.device("cpu"), progress=False)
    process, valid = run.process, run.valid
    pi = unigram_law(run.data.unigram_counts())
    rows = eval_rows(valid, sequences, seed)
    x0, keep = valid.batch(rows), valid.mask(rows)
    tokens = keep.sum(1) if keep is not None else torch.full((len(rows),), x0.shape[1])
    exact_denoiser = bayes_unigram(process, pi)
    surrogate = PARAMETRIZATIONS.get("forward-surrogate").denoiser(process, exact_denoiser.network)
    out: dict[str, Any] = {"entry": entry, "m": process.m, "kernel": repr(process.kernel)}
    bounds = {}
    for name, denoiser in (("exact", exact_denoiser), ("surrogate", surrogate)):
        start = time.perf_counter()
        bounds[name] = nll_bound(process, denoiser, x0, steps=steps, all_terms=True, keep=keep,
                                 generator=torch.Generator().manual_seed(seed))
        out[f"{name}_seconds"] = time.perf_counter() - start
        s = summarize(bounds[name], tokens, steps)
        out[f"{name}_bound"] = {"nats_per_token": s.nats_per_token, "standard_error": s.standard_error}
    d = paired_difference(bounds["surrogate"], bounds["exact"], tokens)
    out["surrogate_minus_exact"] = {"nats_per_token": d.nats_per_token, "standard_error": d.standard_error}
    out["unigram_nll"] = summarize(unigram_nll(pi, x0, keep), tokens).nats_per_token
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--base", default="demo")
    parser.add_argument("--kernels", nargs="+", default=list(DECISIVE), choices=sorted(ENTRIES))
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = [measure(entry, args.base, args.sequences, args.steps, args.seed) for entry in args.kernels]
    print(f"{'entry':<24} {'exact':>14} {'surrogate':>14} {'surrogate - exact':>20} {'unigram':>8}")
    for r in results:
        e, s, d = r["exact_bound"], r["surrogate_bound"], r["surrogate_minus_exact"]
        print(f"{r['entry']:<24} {e['nats_per_token']:>8.3f} ±{e['standard_error']:.3f} "
              f"{s['nats_per_token']:>8.3f} ±{s['standard_error']:.3f} "
              f"{d['nats_per_token']:>+12.3f} ±{d['standard_error']:.3f} {r['unigram_nll']:>8.3f}")
    settings = {**vars(args), "out": str(args.out)}
    write_json({"machine": machine_info(cuda_used=False), "versions": versions(), "settings": settings,
                "results": results}, args.out / "surrogate.json")


if __name__ == "__main__":
    main()
