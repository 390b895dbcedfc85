"""The ``gdds`` command line. One function per subcommand adds its parser
(``_add_<name>``) and one runs it (``_run_<name>``); :func:`main` dispatches.

Usage errors (bad values, unknown names) exit with status 2 and a message, never
a traceback; a missing optional package or an unwritable output folder exits with
status 1 and a message saying what to do.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__


def _unit_time(text: str) -> float:
    """argparse type: a time in ``(0, 1]``."""
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < t <= 1:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"times must lie in (0, 1] (0 = data, 1 = fully noised); got {text}")
    return t


def _add_noise(subparsers: argparse._SubParsersAction) -> None:
    from .noise_demo import DEFAULT_TIMES, KERNELS

    p = subparsers.add_parser(
        "noise",
        help="show a sentence noised at several times under several kernels",
        description="Tokenize a sentence with the WordPiece vocabulary (30,522 tokens) and show exact samples "
        "of the forward process q_t(.|x0) at each time under the mask, uniform and semantic (MiniLM kNN) "
        "kernels; print the table and save it as text and as a PNG figure.",
    )
    p.add_argument("sentence", nargs="?", default=None,
                   help="the sentence to noise (default: a line of Shakespeare chosen by --seed)")
    p.add_argument("--t", dest="times", type=_unit_time, nargs="+", default=list(DEFAULT_TIMES), metavar="T",
                   help="times in (0, 1] (default: 0.1 0.2 ... 0.9)")
    p.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS), metavar="NAME",
                   help=f"kernels to show, from {{{', '.join(KERNELS)}}} (default: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (and choice of the default line); default 0")
    p.add_argument("--out", type=Path, default=Path("results/noise"),
                   help="folder for noise.txt and noise.png (default: results/noise)")
    p.add_argument("--no-figure", action="store_true", help="do not draw noise.png")
    p.set_defaults(run=_run_noise, parser=p)


def _run_noise(args: argparse.Namespace) -> int:
    from .noise_demo import noise_demo, render_text, save_figure, save_text

    parser: argparse.ArgumentParser = args.parser
    if args.sentence is not None and not args.sentence.strip():
        parser.error("the sentence is empty; give some text, or leave it out for a line of Shakespeare")
    if len(set(args.kernels)) != len(args.kernels) or len(set(args.times)) != len(args.times):
        parser.error("--t and --kernels values must not repeat")
    try:
        demo = noise_demo(args.sentence, times=args.times, kernels=args.kernels, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    ansi = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(render_text(demo, ansi=ansi))
    try:
        saved = [save_text(demo, args.out / "noise.txt")]
        if not args.no_figure:
            saved.append(save_figure(demo, args.out / "noise.png"))
    except OSError as exc:
        print(f"gdds noise: error: cannot write to {args.out}: {exc}", file=sys.stderr)
        return 1
    print("saved " + " and ".join(str(p) for p in saved))
    return 0


def _config_help() -> str:
    from .config import Config, all_keys

    defaults = Config().to_dict()
    lines = ["configuration keys (override with dotted.key=value; defaults before any preset):"]
    for key in all_keys():
        node: object = defaults
        for part in key.split("."):
            node = node[part]  # type: ignore[index]
        lines.append(f"  {key} = {node!r}")
    return "\n".join(lines)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from .config import preset_names

    p = subparsers.add_parser(
        "train",
        help="train a denoiser with the snapshot objective",
        description="Train a GDDS denoiser. Start a run with --config (a preset: "
        f"{', '.join(preset_names())}; or a YAML file) and --out, or continue one with --resume. "
        "Multi-process: torchrun --nproc_per_node N -m gdds train ...",
        epilog=_config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", metavar="NAME_OR_YAML", help="preset name or YAML file for a new run")
    group.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="folder of a new run (required with --config)")
    p.add_argument("--samples", type=int, default=0, metavar="N",
                   help="after training, print N sequences (diffusion: from the APPROXIMATE renoise sampler; "
                        "ar: exact ancestral samples)")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="configuration overrides")
    p.set_defaults(run=_run_train, parser=p)


def _run_train(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .train import resume_config, train

    parser: argparse.ArgumentParser = args.parser
    if args.config is not None and args.out is None:
        parser.error("--config needs --out RUN_DIR (the folder for checkpoints and logs)")
    if args.resume is not None and args.out is not None:
        parser.error("--resume continues in its own folder; leave out --out")
    if args.samples < 0:
        parser.error("--samples must be >= 0")
    try:
        if args.resume is not None:
            cfg, run_dir = resume_config(args.resume, args.overrides), args.resume
        else:
            cfg, run_dir = load_config(args.config, args.overrides), args.out
        result = train(cfg, run_dir, resume=args.resume is not None, samples=args.samples)
    except ConfigError as exc:
        parser.error(str(exc))
    print(_summary(result))
    if "stopped_at" in result:
        print(f"stopped by a signal at step {result['stopped_at']}; checkpoint saved. "
              f"Continue with: gdds train --resume {run_dir}")
        return 130
    return 0


def _summary(result: dict) -> str:
    lines = []
    label = result.get("valid", {}).get("metric", "the method's loss")
    if "train" in result:
        lines.append(f"step {result['train']['step']}: training loss {result['train']['loss']:.4f} ({label})")
    if "valid" in result:
        v = result["valid"]
        value = next(val for key, val in v.items() if key.startswith("valid_"))
        lines.append(f"validation {v['metric']}: {value:.4f} nats/token ({v['weights']} weights, {v['tokens']} tokens)")
    for i, text in enumerate(result.get("samples", [])):
        shown = text if len(text) <= 300 else text[:300] + " …"
        lines.append(f"sample {i + 1} ({result['sampler']}): {shown}")
    if "checkpoint" in result:
        lines.append(f"checkpoint: {result['checkpoint']}")
    return "\n".join(lines)


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="generate text from a trained run with the model's reverse chain",
                              description="Sample from the latest checkpoint of RUN_DIR (EMA weights) with the exact "
                              "reverse chain p_theta(x_s | x_t) that `gdds eval` scores; --approximate uses the "
                              "renoise sampler instead (no likelihood applies to its samples).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--num", type=int, default=4, help="number of sequences (default 4)")
    p.add_argument("--steps", type=int, default=64, help="reverse steps T (default 64)")
    p.add_argument("--spacing", choices=("t", "lambda"), default="t", help="time grid uniform in t or in Lambda")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus filtering of mu (changes the model)")
    p.add_argument("--gumbel", action="store_true", help="Gumbel-max on float32 instead of float64 inverse CDF")
    p.add_argument("--prompt", default=None, help="text fixed at the start of every sequence")
    p.add_argument("--approximate", action="store_true", help="use the APPROXIMATE renoise sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the samples to this JSON file")
    p.set_defaults(run=_run_sample, parser=p)


def _run_sample(args: argparse.Namespace) -> int:
    import json

    import torch

    from .atomic import write_atomically
    from .evaluate import generate, load_run
    from .sampling import sample_renoise

    parser: argparse.ArgumentParser = args.parser
    if args.num < 1 or args.steps < 1:
        parser.error("--num and --steps must be at least 1")
    lr = load_run(args.run_dir)
    length = lr.cfg.data.seq_len
    prompt = lr.run.data.tokenizer.encode(args.prompt) if args.prompt else []
    if len(prompt) >= length:
        parser.error(f"the prompt has {len(prompt)} tokens; the model's length is {length}")
    if lr.cfg.method == "ar":
        if args.approximate or args.top_p < 1 or args.gumbel:
            parser.error("an autoregressive run samples exactly; --approximate, --top-p and --gumbel do not apply")
        given = torch.tensor([prompt] * args.num, dtype=torch.long, device=lr.device) if prompt else None
        ids, texts = generate(lr, args.num, args.steps, args.seed, prompt=given)
        label = "exact ancestral sampler (autoregressive)"
    elif args.approximate:
        gen = torch.Generator().manual_seed(args.seed)
        ids = sample_renoise(lr.run.process, lr.denoiser(), args.num, length, args.steps, gen)
        texts = [lr.run.data.tokenizer.decode(r.tolist()) for r in ids]
        label = "APPROXIMATE renoise sampler"
    else:
        fixed = None
        if prompt:
            fixed = torch.full((args.num, length), -1, dtype=torch.long)
            fixed[:, :len(prompt)] = torch.tensor(prompt)
        ids, texts = generate(lr, args.num, args.steps, args.seed, spacing=args.spacing, top_p=args.top_p,
                              gumbel=args.gumbel, fixed=fixed)
        label = f"exact reverse chain, {args.steps} steps ({args.spacing} grid)"
    print(f"{len(texts)} samples from {lr.checkpoint} ({lr.weights} weights), {label}:")
    for i, text in enumerate(texts):
        print(f"[{i + 1}] {text}")
    if args.out is not None:
        data = json.dumps({"sampler": label, "checkpoint": str(lr.checkpoint), "texts": texts}, indent=1)
        write_atomically(args.out, lambda fh: fh.write(data.encode()))
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="honest evaluation of a trained run (bound, samples, judge, zero-shot)",
                              description="Evaluate the latest checkpoint of RUN_DIR: the T-step NLL upper bound "
                              "with its standard error, the snapshot CE (not a likelihood), samples at several "
                              "step counts with their unigram entropy and (with --judge) generative perplexity, and "
                              "zero-shot bounds on other corpora. Writes eval.json, eval.md and a figure.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--steps", type=int, default=64, help="T of the bound (default 64)")
    p.add_argument("--sequences", type=int, default=32, help="validation blocks to bound (default 32)")
    p.add_argument("--sample-steps", type=int, nargs="+", default=[16, 64], help="step counts to sample with")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--sample-length", type=int, default=None, help="tokens per sample (default: the training length)")
    p.add_argument("--judge", default=None, help="judge LM: 'smollm2' (offline), a local path or a cached HF name")
    p.add_argument("--zero-shot", nargs="*", default=[], metavar="CORPUS", help="e.g. kjv wikipedia")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/eval)")
    p.set_defaults(run=_run_eval, parser=p)


def _check_corpora(parser: argparse.ArgumentParser, corpora: Sequence[str]) -> None:
    """Refuse a ``--zero-shot`` name that is an override swallowed by the option's list."""
    for name in corpora:
        if "=" in name:
            parser.error(f"--zero-shot got {name!r}, which looks like an override: put overrides before "
                         "--zero-shot or end the list with --")


def _run_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate, load_run, markdown, write_report

    parser: argparse.ArgumentParser = args.parser
    if args.steps < 1 or args.sequences < 2 or min(args.sample_steps) < 1 or args.num_samples < 1:
        parser.error("--steps, --sample-steps and --num-samples must be >= 1 and --sequences >= 2")
    if args.sample_length is not None and args.sample_length < 1:
        parser.error("--sample-length must be >= 1")
    _check_corpora(parser, args.zero_shot)
    lr = load_run(args.run_dir)
    report = evaluate(lr, args.steps, args.sequences, args.sample_steps, args.num_samples, args.judge,
                      args.zero_shot, args.seed, args.sample_length,
                      log=lambda message: print(f"gdds eval: {message}", file=sys.stderr, flush=True))
    paths = write_report(report, args.out or args.run_dir / "eval")
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    from .compare import METHODS

    p = subparsers.add_parser("compare", help="train every method on one footing and evaluate them the same way",
                              description="Train each method (same data, backbone, optimizer, steps and tokens: "
                              "one base preset plus the method's overrides) into OUT/<method>, evaluate each with "
                              "the same bound, samples, judge and zero-shot corpora, and write OUT/compare.json "
                              "and OUT/compare.md. Finished runs are reused, interrupted ones resumed. Methods: "
                              + "; ".join(f"{k} = {' '.join(v)}" for k, v in METHODS.items()))
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--base", default="demo", help="preset or YAML every method starts from (default demo)")
    p.add_argument("--corpus", default=None, help="train every method on this corpus (data.corpus; default: "
                   "the base preset's, the embedded Shakespeare for demo)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--steps", type=int, default=128, help="T of the bound (default 128)")
    p.add_argument("--sequences", type=int, default=16, help="validation blocks per bound (default 16)")
    p.add_argument("--sample-steps", type=int, nargs="+", default=[32])
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--judge", default=None, help="'ar' (this comparison's AR run), 'smollm2', a path or a cached name")
    p.add_argument("--zero-shot", nargs="*", default=[], metavar="CORPUS",
                   help="e.g. kjv wikipedia (end the list with -- before overrides)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="overrides shared by every method")
    p.set_defaults(run=_run_compare, parser=p)


def _run_compare(args: argparse.Namespace) -> int:
    from .compare import Interrupted, compare, markdown
    from .config import ConfigError

    parser: argparse.ArgumentParser = args.parser
    if args.steps < 1 or args.sequences < 2 or min(args.sample_steps) < 1 or args.num_samples < 1:
        parser.error("--steps, --sample-steps and --num-samples must be >= 1 and --sequences >= 2")
    _check_corpora(parser, args.zero_shot)
    try:
        overrides = [*args.overrides, *([f"data.corpus={args.corpus}"] if args.corpus else [])]
        result = compare(args.out, args.methods, args.base, overrides, args.steps, args.sequences,
                         args.sample_steps, args.num_samples, args.judge, args.zero_shot, args.seed,
                         log=lambda message: print(f"gdds compare: {message}", file=sys.stderr, flush=True))
    except (ConfigError, ValueError) as exc:
        parser.error(str(exc))
    except Interrupted as exc:
        print(f"gdds compare: {exc}", file=sys.stderr)
        return 130
    print(markdown(result))
    print(f"wrote {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0


def _add_nll_gap(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nll-gap", help="the snapshot vs path-wise NLL gap, IPG + CG, exactly on a small problem",
                              description="Exact NLL-gap decomposition (gdds.nll_gap) on pairs of tokens that are "
                              "equal with probability 0.8, for several predictor pairs; prints a markdown table.")
    p.add_argument("--kernels", nargs="+", default=["mask", "uniform", "ring"], choices=["mask", "uniform", "ring"])
    p.add_argument("--times", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0], help="the path's time grid")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the terms as JSON")
    p.set_defaults(run=_run_nll_gap, parser=p)


def _run_nll_gap(args: argparse.Namespace) -> int:
    import json

    from .atomic import write_atomically
    from .nll_gap import decompose, example_problem, markdown, predictor_pairs

    rows = {}
    for kernel in args.kernels:
        try:
            problem = example_problem(kernel, args.times)
        except ValueError as exc:
            args.parser.error(str(exc))
        for pair, (snap, path) in predictor_pairs(problem).items():
            rows[f"{kernel}: {pair}"] = decompose(problem, snap, path).to_dict()
    print(markdown(rows, args.times))
    if args.json is not None:
        text = json.dumps({"times": args.times, "rows": rows}, indent=1)
        write_atomically(args.json, lambda fh: fh.write(text.encode()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``gdds`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gdds", description="Generalized discrete diffusion from snapshots (GDDS)."
    )
    parser.add_argument("--version", action="version", version=f"gdds {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_noise(subparsers)
    _add_train(subparsers)
    _add_sample(subparsers)
    _add_eval(subparsers)
    _add_compare(subparsers)
    _add_nll_gap(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``gdds`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError

    try:
        return args.run(args)
    except (ImportError, CheckpointError, ConfigError) as exc:
        print(f"gdds: error: {exc}", file=sys.stderr)
        return 1
