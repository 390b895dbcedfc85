"""``gdds train`` (train or resume a run) and ``gdds compare`` (every method on one footing)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.config import SECTIONS, Config, ConfigError, all_keys, choices, descriptions, load_config, preset_names
from ..engine.evaluation.compare import (
    ENTRIES,
    STANDARD,
    Interrupted,
    compare,
    compare_preset_names,
    read_compare_preset,
)
from ..engine.evaluation.evaluate import EvalSettings
from ..engine.provenance import provenance
from ..engine.records import TrainResult
from ..engine.resume import resume_config
from ..engine.train import train
from .compare_report import compare_markdown, write_comparison
from .evaluation import JUDGE_HELP, add_device_option, add_eval_options, eval_settings


def _config_help() -> str:
    defaults, about = Config().to_dict(), descriptions()
    lines = ["configuration keys (override with dotted.key=value; defaults before any preset):"]
    for key in all_keys():
        node: object = defaults
        for part in key.split("."):
            node = node[part]  # type: ignore[index]
        section, _, name = key.rpartition(".")
        cls = SECTIONS[section] if section else Config
        allowed = choices(cls, name)
        limits = next(f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name)
        lines.append(f"  {key} = {node!r}" + (f"  (one of: {', '.join(map(str, allowed))})" if allowed else "")
                     + (f"  ({limits})" if limits else ""))
        lines.append(f"      {about[key]}")
    return "\n".join(lines)


def add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model with one of the training methods (default: the snapshot objective)",
        description="Train a model. Start a run with --config (a preset: "
        f"{', '.join(preset_names())}; or a YAML file) and --out, or continue one with --resume. "
        "Multi-process: torchrun --nproc_per_node N -m gdds train ...",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="NAME_OR_YAML", help="preset name or YAML file for a new run")
    group.add_argument("--resume", type=Path, metavar="RUN_DIR",
                       help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="folder of a new run (required with --config): "
                   "missing, empty, or a run stopped before its first checkpoint")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="after training, print N sequences (diffusion: from the APPROXIMATE renoise sampler; "
                        "ar: exact ancestral samples)")
    add_device_option(p)
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="configuration overrides")
    p.set_defaults(run=run_train, parser=p)


def run_train(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.config is not None and args.out is None:
        parser.error("--config needs --out RUN_DIR (the folder for checkpoints and logs)")
    if args.resume is not None and args.out is not None:
        parser.error("--resume continues in its own folder; leave out --out")
    if args.samples < 0:
        parser.error("--samples must be >= 0")
    overrides = [*args.overrides, *([f"train.device={args.device}"] if args.device != "auto" else [])]
    try:
        if args.resume is not None:
            cfg, run_dir = resume_config(args.resume, overrides), args.resume
        else:
            cfg, run_dir = load_config(args.config, overrides), args.out
        result = train(cfg, run_dir, resume=args.resume is not None, samples=args.samples)
    except ConfigError as exc:
        parser.error(str(exc))
    print(summary(result))
    if result.stopped_at is not None:
        print(f"stopped by a signal at step {result.stopped_at}; checkpoint saved. "
              f"Continue with: gdds train --resume {run_dir}")
        return 130
    return 0


def summary(result: TrainResult) -> str:
    """The lines ``gdds train`` prints at the end: last losses, samples, checkpoint."""
    lines = []
    v = result.valid
    label = v.label if v is not None else "the method's loss"
    if result.train is not None:
        lines.append(f"step {result.train['step']}: training loss {result.train['loss']:.4f} ({label})")
    if v is not None:
        lines.append(f"validation {v.label}: {v.value:.4f} nats/token ({v.weights} weights, {v.tokens} tokens)")
    for i, text in enumerate(result.samples):
        shown = text if len(text) <= 300 else text[:300] + " …"
        lines.append(f"sample {i + 1} ({result.sampler}): {shown}")
    if result.checkpoint is not None:
        lines.append(f"checkpoint: {result.checkpoint}")
    return "\n".join(lines)


def add_compare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="train every method on one footing and evaluate them the same way",
                              description="Train each method (same data, backbone, optimizer, steps and tokens: "
                              "one base preset plus the method's overrides) into OUT/<method>, evaluate each with "
                              "the same bound, samples, judge and zero-shot corpora, and write OUT/compare.json "
                              "and OUT/compare.md. Finished runs are reused, interrupted ones resumed. Methods: "
                              + "; ".join(f"{k} = {' '.join(v)}" for k, v in ENTRIES.items()))
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--base", default="demo", help="preset or YAML every method starts from (default demo)")
    p.add_argument("--corpus", default=None, help="train every method on this corpus (data.corpus; default: "
                   "the base preset's, the embedded Shakespeare for demo)")
    p.add_argument("--methods", nargs="+", choices=list(ENTRIES), default=list(STANDARD),
                   help=f"entries to train and evaluate (default: {' '.join(STANDARD)})")
    add_eval_options(p, EvalSettings(steps=128, sequences=16, sample_steps=(32,), num_samples=4))
    p.add_argument("--judge", default=None, help="'ar' (this comparison's AR run), or " + JUDGE_HELP)
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="train every method with each of these seeds (default: the base preset's seed); runs "
                        "OUT/<method> for the preset's seed, OUT/<method>-seed<k> for the others")
    p.add_argument("--seeded", nargs="+", default=None, metavar="METHOD",
                   help="only these methods get every seed of --seeds (the others the first one)")
    p.add_argument("--judged-seeds", type=int, nargs="+", default=None, metavar="SEED",
                   help="the seeds the verdicts use (default every seed of --seeds): leave out the seed a "
                        "variant was selected on, so it is judged on fresh seeds")
    p.add_argument("--select", nargs="+", default=(), metavar="METHOD",
                   help="candidates: the one whose bound is lowest against the reference's on the first seed is "
                        "then trained with every seed too (choose it on one seed, judge it on the others with "
                        "--judged-seeds)")
    p.add_argument("--pair", nargs="+", default=(), metavar="METHOD=COUNTERPART",
                   help="also pair METHOD's bound with COUNTERPART's, as with the reference (e.g. a block model "
                        "with its full-diffusion model: gdds-mask-b4=gdds-mask)")
    p.add_argument("--reference", default=None, metavar="METHOD",
                   help="pair every method's bound with this one's on the same blocks (default gdds-mask when "
                        "compared)")
    p.add_argument("--preset", default=None, metavar="NAME_OR_YAML",
                   help=f"a comparison preset: these options in a file ({', '.join(compare_preset_names())}); "
                        "options given on the command line win, its overrides come before yours")
    p.add_argument("--train-only", action="store_true", help="train (or resume) every run, evaluate nothing")
    add_device_option(p)
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="overrides shared by every method")
    p.set_defaults(run=run_compare, parser=p)


def apply_preset(args: argparse.Namespace, parser: argparse.ArgumentParser,
                 read: Callable[[str], dict[str, Any]] = read_compare_preset, what: str = "comparison preset") -> None:
    """Fill the options left at their defaults from ``--preset`` (``read``: :func:`read_compare_preset`,
    or ``gdds decode-bench``'s); the preset's ``overrides`` go before the command line's."""
    preset = read(args.preset)
    unknown = sorted(set(preset) - set(vars(args)) - {"overrides"} | ({"preset", "out"} & set(preset)))
    if unknown:
        raise ConfigError(f"{what} {args.preset}: unknown options {unknown}; it may set "
                          f"{', '.join(sorted(set(vars(args)) - {'run', 'parser', 'preset', 'out'}))}")
    for key, value in preset.items():
        if key == "overrides":
            args.overrides = [*value, *args.overrides]
        elif getattr(args, key) == parser.get_default(key):
            setattr(args, key, value)


def pair_options(given: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["a=b", ...]`` of ``--pair`` as ``{a: b}``; ``ConfigError`` for an item without ``=``."""
    bad = [item for item in given if item.count("=") != 1]
    if bad:
        raise ConfigError(f"--pair takes METHOD=COUNTERPART items; got {bad}")
    return dict(item.split("=") for item in given)


def run_compare(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        if args.preset is not None:
            apply_preset(args, parser)
        settings = eval_settings(args)
        overrides = [*args.overrides, *([f"data.corpus={args.corpus}"] if args.corpus else [])]
        result = compare(args.out, args.methods, settings, args.base, overrides, device=args.device,
                         log=lambda message: print(f"gdds compare: {message}", file=sys.stderr, flush=True),
                         seeds=args.seeds, reference=args.reference, seeded=args.seeded, train_only=args.train_only,
                         judged_seeds=args.judged_seeds, select=args.select, pairs=pair_options(args.pair),
                         provenance=provenance(args.command_line, cuda_used=args.device.startswith("cuda")))
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    except Interrupted as exc:
        print(f"gdds compare: {exc}", file=sys.stderr)
        return 130
    if result is None:
        print(f"gdds compare: every run in {args.out} is trained (--train-only: nothing evaluated)")
        return 0
    write_comparison(result, args.out)
    print(compare_markdown(result))
    print(f"wrote {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0
