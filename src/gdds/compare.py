"""``gdds compare``: every method on one footing, measured the same way (issue 5).

Each method is a set of configuration overrides on one base preset, so every run
uses the same data, tokenizer, backbone size, optimizer, number of steps and
tokens. Each trained run is then evaluated by :func:`gdds.evaluate.evaluate` with
the same settings: the ``T``-step NLL bound of the sampled chain (an autoregressive
model's exact NLL), the snapshot CE where it applies (labelled), samples with
their unigram entropy, generative perplexity under one judge, and zero-shot
bounds. ``--judge ar`` uses the comparison's own autoregressive run as the judge.

A run folder that already holds a finished run is evaluated, not retrained, and an
interrupted one is resumed, so a long comparison can be continued.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import checkpoint as ck
from .atomic import write_atomically
from .config import Config, load_config

METHODS: dict[str, list[str]] = {
    "gdds-semantic": ["method=gdds", "process.kernel=semantic"],
    "gdds-mask": ["method=gdds", "process.kernel=mask"],
    "gdds-uniform": ["method=gdds", "process.kernel=uniform"],
    "mdlm": ["method=elbo", "process.kernel=mask"],
    "udlm": ["method=elbo", "process.kernel=uniform"],
    "gidd": ["method=elbo", "process.kernel=hybrid", "process.kernel_args={uniform_weight: 0.2}"],
    "jump-mask": ["method=jump", "process.kernel=mask"],
    "campbell-mask": ["method=campbell", "process.kernel=mask"],
    "ar": ["method=ar"],
}


class Interrupted(RuntimeError):
    """Training was stopped by a signal (its checkpoint is saved); the comparison stops too."""


def method_config(base: str, name: str, overrides: Sequence[str] = ()) -> Config:
    """The configuration of method ``name`` on preset ``base`` with shared ``overrides``."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return load_config(base, [*overrides, *METHODS[name]])


def _trained(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> float:
    """Train (or resume, or skip a finished run); seconds spent training now."""
    from .train import train

    done = ck.list_checkpoints(run_dir)
    if done and ck.read_json(ck.latest_checkpoint(run_dir) / "manifest.json")["step"] >= cfg.train.max_steps:
        log(f"{run_dir.name}: finished run found, not retrained")
        return 0.0
    log(f"{run_dir.name}: training {cfg.train.max_steps} steps")
    tic = time.perf_counter()
    result = train(cfg, run_dir, resume=bool(done))
    if "stopped_at" in result:
        raise Interrupted(f"{run_dir.name}: stopped at step {result['stopped_at']} (checkpoint saved); "
                          "run the same command again to resume the comparison")
    return time.perf_counter() - tic


def _throughput(run_dir: Path) -> float:
    """Median training throughput (tokens/s) over the run's logged steps."""
    rates = [r["tokens_per_s"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
             if r.get("kind") == "train" and "tokens_per_s" in r]
    return float(statistics.median(rates)) if rates else float("nan")


def _evaluated(run_dir: Path, settings: dict[str, Any], steps: int, log: Callable[[str], None],
               evaluate_run: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The evaluation report of ``run_dir``, reused from ``compare_eval.json`` when it was
    made with the same ``settings`` on the same finished run, else computed and saved."""
    cache = run_dir / "compare_eval.json"
    key = {**settings, "step": steps}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            log(f"{run_dir.name}: evaluation with these settings found, not repeated")
            return saved["report"]
    log(f"{run_dir.name}: evaluating")
    report = evaluate_run(run_dir)
    text = json.dumps({"key": key, "report": report}, indent=1)
    write_atomically(cache, lambda fh: fh.write(text.encode()))
    return report


def compare(out: Path, methods: Sequence[str], base: str = "demo", overrides: Sequence[str] = (),
            bound_steps: int = 128, sequences: int = 16, sample_steps: Sequence[int] = (32,),
            num_samples: int = 4, judge: Optional[str] = None, zero_shot: Sequence[str] = (),
            seed: int = 0, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Train and evaluate ``methods``; write ``compare.json``, ``compare.md`` and ``compare.png`` into ``out``."""
    from .evaluate import CONTINUOUS_SAMPLES, evaluate, load_run

    out = Path(out)
    configs = {name: method_config(base, name, overrides) for name in methods}
    train_s = {name: _trained(cfg, out / name, log) for name, cfg in configs.items()}
    if judge == "ar":
        if "ar" not in configs:
            raise ValueError("--judge ar needs the ar method in the comparison")
        judge = str(out / "ar")
    settings = {"bound_steps": bound_steps, "sequences": sequences, "sample_steps": list(sample_steps),
                "num_samples": num_samples, "judge": judge, "zero_shot": list(zero_shot), "seed": seed,
                "continuous_samples": CONTINUOUS_SAMPLES}
    rows = {}
    for name in methods:
        report = _evaluated(out / name, settings, configs[name].train.max_steps, log,
                            lambda run_dir: evaluate(load_run(run_dir), bound_steps, sequences, sample_steps,
                                                     num_samples, judge, zero_shot, seed, log=log))
        rows[name] = {"report": report, "train_seconds_this_call": train_s[name],
                      "train_tokens_per_s": _throughput(out / name),
                      "tokens": configs[name].train.max_steps * configs[name].train.batch_size
                      * configs[name].data.seq_len}
    result = {"base": base, "overrides": list(overrides), "methods": {n: METHODS[n] for n in methods},
              "bound_steps": bound_steps, "sequences": sequences, "judge": judge, "rows": rows}
    text = json.dumps(result, indent=1)
    write_atomically(out / "compare.json", lambda fh: fh.write(text.encode()))
    write_atomically(out / "compare.md", lambda fh: fh.write(markdown(result).encode()))
    write_atomically(out / "compare.png", lambda fh: figure(result).savefig(fh, format="png", dpi=120))
    return result


def figure(result: dict[str, Any]) -> Any:
    """Bound per method (± standard error); generative perplexity against unigram entropy
    of the samples when a judge was used."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reports = {name: row["report"] for name, row in result["rows"].items()}
    judged = all("generative_perplexity" in r["samples"][-1] for r in reports.values())
    fig = Figure(figsize=(10 if judged else 5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if judged else 1, 1)
    names = list(reports)
    heads = [r["valid"].get("bound") or r["valid"]["nll"] for r in reports.values()]
    ax.bar(names, [h["nats_per_token"] for h in heads], yerr=[h["standard_error"] for h in heads], capsize=3)
    ax.set_ylabel(f"valid NLL bound, T = {result['bound_steps']} (nats/token; ar: exact)")
    ax.tick_params(axis="x", labelrotation=45)
    if judged:
        ax2 = fig.add_subplot(1, 2, 2)
        for name, r in reports.items():
            sample = r["samples"][-1]
            ax2.scatter(sample["unigram_entropy"], sample["generative_perplexity"]["perplexity"])
            ax2.annotate(name, (sample["unigram_entropy"], sample["generative_perplexity"]["perplexity"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax2.set_xlabel("unigram entropy of samples (nats)")
        ax2.set_ylabel(f"generative perplexity ({result['judge']})")
    fig.tight_layout()
    return fig


def _headline(report: dict[str, Any]) -> str:
    v = report["valid"]
    if "nll" in v:
        return f"{v['nll']['nats_per_token']:.3f} ± {v['nll']['standard_error']:.3f} (exact)"
    return f"{v['bound']['nats_per_token']:.3f} ± {v['bound']['standard_error']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """One row per method: bound (exact NLL for ar), snapshot CE, samples, judge, zero-shot."""
    zero = sorted({z for r in result["rows"].values() for z in r["report"]["zero_shot"]})
    head = ["method", "overrides", "parameters", "train tokens/s", f"valid NLL bound, T = {result['bound_steps']} (nats/token)",
            "continuous-time bound (nats/token)", "snapshot CE (not a likelihood)", "sample unigram entropy", "gen. perplexity",
            *[f"zero-shot {z}" for z in zero]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result["rows"].items():
        rep = row["report"]
        snap = rep["valid"].get("snapshot_ce")
        cont = rep["valid"].get("continuous_bound")
        sample = rep["samples"][-1]
        gp = sample.get("generative_perplexity")
        cells = [name, " ".join(result["methods"][name]), f"{rep['parameters'] / 1e6:.2f}M",
                 f"{row['train_tokens_per_s']:.0f}", _headline(rep),
                 f"{cont['nats_per_token']:.3f} ± {cont['standard_error']:.3f}" if cont else "—",
                 f"{snap['nats_per_token']:.3f}" if snap else "—", f"{sample['unigram_entropy']:.3f}",
                 f"{gp['perplexity']:.1f}" if gp else "—",
                 *[f"{rep['zero_shot'][z]['nats_per_token']:.3f}" if z in rep["zero_shot"] else "—" for z in zero]]
        lines.append("| " + " | ".join(cells) + " |")
    judge = f"; judge: {result['judge']}" if result["judge"] else ""
    lines += ["", f"Base preset `{result['base']}` with overrides {result['overrides'] or 'none'}; "
              f"{result['sequences']} validation blocks per bound{judge}. Bounds are upper bounds on the NLL of "
              "the sampled chain (± Monte-Carlo standard error); the continuous-time bound (column-constant kernels) bounds "
              "the NLL of the reverse CTMC that chain tends to as T grows; the autoregressive row is an exact NLL."]
    return "\n".join(lines) + "\n"
