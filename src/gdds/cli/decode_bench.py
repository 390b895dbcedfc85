"""``gdds decode-bench``: each sampler's speed and price side by side (``docs/decoding.md``). The
numbers come from :mod:`gdds.engine.evaluation.decoding`; this module parses the command, writes
``decoding.json`` (the engine's record with its provenance), ``decoding.md`` (one table per run) and
``decoding.png`` (quality against tokens/s, one curve per setting family), all atomically."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..engine.config import ConfigError
from ..engine.evaluation.decoding import (
    BenchSettings,
    DecodeBench,
    RunBench,
    SettingResult,
    decode_bench,
    decoding_preset_names,
    read_decoding_preset,
)
from ..engine.evaluation.decoding_settings import settings_of
from ..engine.model_folder import open_model
from ..engine.provenance import provenance
from ..files import write_text_atomically
from ..samplers import SAMPLERS
from .compare_report import judge_label, provenance_line
from .evaluation import add_device_option, add_judge_convention, device_of, output_folder, unit_interval
from .render import new_figure, save_png
from .training import apply_preset

FILES = ("decoding.json", "decoding.md", "decoding.png")


def add_decode_bench(subparsers: argparse._SubParsersAction) -> None:
    defaults = BenchSettings()
    p = subparsers.add_parser(
        "decode-bench", help="each sampler's tokens/s, calls/token, quality at equal entropy and bound",
        description="For every run and sampler setting: tokens/s and network calls per token, generative perplexity "
                    "under each judge at the common entropy of the nucleus sweeps (± bootstrap SE), and the bound "
                    "of the chains nll_bound scores paired against the exact chain's. Writes OUT/decoding.json, "
                    "OUT/decoding.md and OUT/decoding.png (docs/decoding.md).")
    p.add_argument("runs", nargs="*", type=Path, default=[], metavar="RUN",
                   help="run or model folders (or the preset's runs)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--preset", default=None, metavar="NAME_OR_YAML",
                   help=f"a preset: these options in a file ({', '.join(decoding_preset_names())}); its settings "
                        "(sampler, steps, options, name) replace --samplers and --steps; options given on the "
                        "command line win")
    p.add_argument("--samplers", nargs="+", default=["exact", "renoise"], choices=list(SAMPLERS),
                   help="samplers to measure with their default options (default exact renoise)")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 64], help="step counts of every sampler")
    p.add_argument("--fitted-grid-profile", type=int, default=None, metavar="K",
                   help="also measure each sampler of --samplers that takes grid= on the grid fitted to the run's own "
                        "K-step profile of the bound (validation blocks disjoint from the bound's)")
    p.add_argument("--profile-sequences", type=int, default=defaults.profile_sequences,
                   help="validation blocks of a fitted grid's profile (none of them a block of the bounds)")
    p.add_argument("--num-samples", type=int, default=defaults.num_samples)
    p.add_argument("--top-p", type=unit_interval("each nucleus top-p"), nargs="+", default=list(defaults.top_p),
                   metavar="P", help="the nucleus sweep (must hold 1, the timed call)")
    p.add_argument("--judge", nargs="*", default=[], metavar="JUDGE",
                   help="judges of generative perplexity: an AR run folder, smollm2, hf:NAME (HF cache only), a path")
    add_judge_convention(p, defaults.judge_convention)
    p.add_argument("--sequences", type=int, default=defaults.sequences, help="validation blocks of each bound")
    p.add_argument("--all-terms", action="store_true", help="every term of each bound (T network calls per block)")
    p.add_argument("--reference-steps", type=int, default=None,
                   help="T of the exact chain every bound is paired with (default the most steps of an exact setting)")
    p.add_argument("--resamples", type=int, default=defaults.resamples, help="bootstrap resamples of the SE")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--length", type=int, default=None, help="sample length (default the training length)")
    add_device_option(p)
    p.set_defaults(run=run_decode_bench, parser=p, settings=None)


def run_decode_bench(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        if args.preset is not None:
            apply_preset(args, parser, read_decoding_preset, "decode-bench preset")
        settings = settings_of(args.settings or _command_line_settings(args))
        bench = BenchSettings(num_samples=args.num_samples, top_p=tuple(args.top_p), judges=tuple(args.judge),
                              sequences=args.sequences, all_terms=args.all_terms, reference_steps=args.reference_steps,
                              profile_sequences=args.profile_sequences, resamples=args.resamples, seed=args.seed,
                              length=args.length, judge_convention=args.judge_convention)
    except (ConfigError, ValueError, KeyError) as exc:
        parser.error(str(exc))
    if not args.runs:
        parser.error("give at least one run folder (or a preset with runs)")
    out = output_folder(args, args.out)
    device = str(device_of(args))
    paths = [Path(r) for r in args.runs]
    names = [p.name for p in paths] if len({p.name for p in paths}) == len(paths) else [str(p) for p in paths]
    runs = {name: open_model(path, device=device) for name, path in zip(names, paths, strict=True)}
    result = decode_bench(runs, settings, bench,
                          log=lambda message: print(f"gdds decode-bench: {message}", file=sys.stderr, flush=True),
                          provenance=provenance(args.command_line, cuda_used=device.startswith("cuda")))
    written = write_bench(result, out)
    print(bench_markdown(result))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _command_line_settings(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--samplers`` at every ``--steps``, and with ``--fitted-grid-profile`` those that take ``grid`` again on
    the fitted grid."""
    entries = [{"sampler": s, "steps": list(args.steps)} for s in args.samplers]
    if args.fitted_grid_profile is not None:
        entries += [{**e, "fitted_grid": args.fitted_grid_profile} for e in entries
                    if "grid" in SAMPLERS.get(e["sampler"]).options]
    return entries


def _pm(value: float | None, se: float | None, digits: int) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _at(swept: bool, at_common: bool) -> str:
    """Where a perplexity is read, when not at the common entropy: a sampler or setting without a sweep, or
    the top-p 1 point of a sweep when the run's sweeps reach no common entropy."""
    return "" if at_common else " (top-p 1)" if swept else " (no sweep)"


def _bound_cells(r: SettingResult) -> list[str]:
    if r.bound is None:
        return [r.bound_reason or "—", "—"]
    diff = r.difference
    return [_pm(r.bound.nats_per_token, r.bound.standard_error, 3),
            "—" if diff is None else _pm(diff.nats_per_token, diff.standard_error, 3)]


def run_markdown(run: RunBench, judges: list[str]) -> list[str]:
    """One run's table: a row per setting."""
    at = "—" if run.common_entropy is None else f"{run.common_entropy:.3f}"
    heads = [f"gen. ppl ({judge_label(j)}) at H = {at}" for j in judges]
    lines = [f"### {run.run} ({run.method}; `{run.checkpoint}`, {run.weights} weights)", "",
             "| setting | tokens/s | calls/token | entropy | " + " | ".join(heads) + (" | " if heads else "")
             + f"bound (nats/token) | bound - {run.reference or 'reference'} |",
             "|---|---:|---:|---:|" + "---:|" * len(heads) + "---|---:|"]
    for r in run.results:
        calls = "—" if r.calls_per_token is None else f"{r.calls_per_token:.3f}"
        quality = [_pm(q.perplexity, q.standard_error, 2) + _at(r.swept, q.swept) for q in r.quality]
        cells = [r.setting.label, f"{r.tokens_per_s:.0f}", calls, f"{r.entropy:.3f}", *quality, *_bound_cells(r)]
        lines.append("| " + " | ".join(cells) + " |")
    skipped: dict[tuple[str, str], list[int]] = {}
    for setting, why in run.skipped:
        skipped.setdefault((setting.name, why), []).append(setting.steps)
    if skipped:
        lines += ["", "Skipped on this run (the sampler does not apply to its process):"]
        lines += [f"- {name}, T = {', '.join(map(str, steps))}: {why}" for (name, why), steps in skipped.items()]
    for p in run.profiles:
        lines += ["", f"Fitted grids: fitted to the {p.steps}-step profile of the bound (all terms) on "
                      f"{len(p.rows)} validation blocks none of which is a block of the bounds; times in the JSON."]
    paired = [r for r in run.results if r.vs_uniform is not None]
    if paired:
        lines += ["Bound on the fitted grid minus the bound on the uniform grid of as many steps (paired on blocks; "
                  "negative: fitting helped): " + "; ".join(
                      f"T = {r.setting.steps}: {_pm(r.vs_uniform.nats_per_token, r.vs_uniform.standard_error, 3)}"
                      for r in paired) + "."]
    return lines


LEGEND = (
    "tokens/s: sequences x length over the wall-clock seconds of one generate call of the model's own law (top-p 1), "
    "after an untimed warm-up call (an estimate: it depends on the machine and its load). calls/token: network calls "
    "of that call over the sequence length (one call denoises the whole batch), measured: the threshold sampler "
    "stops before its cap T once nothing is masked; — for a sampler that takes no denoiser. entropy: unigram "
    "entropy (nats) of those samples (exact for them). gen. ppl: the judge's perplexity "
    "of the samples at the common entropy H (the highest every swept setting's nucleus sweep reaches; linear in "
    "log-perplexity between the two sweep points around it), ± a bootstrap standard error over samples; (no sweep): "
    "a sampler that takes no decoding (or a setting with its own top-p), at its own entropy; (top-p 1): the sweeps "
    "of the run reach no common entropy (H = —), each setting is read at its own top-p 1 point. bound: the "
    "T-step NLL upper bound of the setting's "
    "chain (± Monte-Carlo SE) on the same validation blocks and draws as gdds eval; bound - reference: paired on "
    "blocks with the exact chain's, ± the paired SE. Settings without a bound say why.")


def bench_markdown(result: DecodeBench) -> str:
    """``decoding.md``: a table per run, the legend, the bootstrap and the provenance."""
    s = result.settings
    lines = ["# Decoding: each sampler's speed and price", ""]
    for run in result.runs:
        lines += [*run_markdown(run, result.judges), ""]
    judges = "; ".join(f"{judge_label(j)} = `{Path(j).name}`" for j in result.judges) or "none"
    lines += [LEGEND, "",
              f"{s.num_samples} samples per sweep point (top-p {', '.join(f'{p:g}' for p in s.top_p)}), "
              f"{s.resamples} bootstrap resamples (seed {s.seed}); bounds on {s.sequences} validation blocks"
              + (", all terms" if s.all_terms else ", one drawn term each") + f". Judges: {judges}."]
    if result.provenance:
        lines += ["", provenance_line(result.provenance)]
    return "\n".join(lines) + "\n"


def bench_figure(result: DecodeBench) -> Any:
    """Per run, the first judge's generative perplexity at the common entropy (± bootstrap SE) against tokens/s
    (both axes log: a sampler that falls apart, e.g. a low threshold, does not flatten the rest), one curve per
    setting family (:attr:`Setting.curve`: a sampler with its options over its step
    counts, the threshold sampler over its thresholds at one cap); a point not at the common entropy is hollow."""
    judge = result.judges[0] if result.judges else None
    fig = new_figure(6.5 * max(1, len(result.runs)), 5.0)
    for i, run in enumerate(result.runs):
        ax = fig.add_subplot(1, max(1, len(result.runs)), 1 + i)
        for curve in dict.fromkeys(r.setting.curve for r in run.results):
            rows = sorted((r for r in run.results if r.setting.curve == curve and r.quality
                           and r.quality[0].perplexity is not None), key=lambda r: r.tokens_per_s)
            if not rows:
                continue
            swept = rows[0].quality[0].swept
            ax.errorbar([r.tokens_per_s for r in rows], [r.quality[0].perplexity for r in rows],
                        yerr=[r.quality[0].standard_error or 0.0 for r in rows], marker="o", markersize=4,
                        capsize=2, mfc=None if swept else "none", label=curve + _at(rows[0].swept, swept))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(run.run, fontsize=9)
        ax.set_xlabel("tokens/s (log)")
        ax.set_ylabel("generative perplexity at equal entropy (log)"
                      + ("" if judge is None else f" ({judge_label(judge)})"))
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def write_bench(result: DecodeBench, out: Path) -> list[Path]:
    """``decoding.json``, ``decoding.md`` and ``decoding.png`` in ``out``, each written atomically."""
    out = Path(out)
    return [write_text_atomically(out / FILES[0], json.dumps(result.to_dict(), indent=1)),
            write_text_atomically(out / FILES[1], bench_markdown(result)),
            save_png(bench_figure(result), out / FILES[2])]
