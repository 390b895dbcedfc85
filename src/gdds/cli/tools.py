"""``gdds noise`` (see the forward process), ``gdds nll-gap`` (the exact NLL-gap table) and ``gdds export``
(a run as a model folder)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..engine.config import ConfigError
from ..engine.hf_files import PushError, push_folder
from ..engine.model_folder import export_model
from ..files import write_text_atomically
from ..kernels import KERNELS
from ..nll_gap import EXAMPLE_KERNELS, decompose, example_problem, predictor_pairs
from .evaluation import add_device_option, device_of, output_folder, unit_interval
from .noise_demo import DEFAULT_KERNELS, DEFAULT_TIMES, noise_demo, render_text, save_figure, save_text
from .render import nll_gap_markdown


def add_noise(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "noise",
        help="show a sentence noised at several times under several kernels",
        description="Tokenize a sentence with the WordPiece vocabulary (30,522 tokens) and show exact samples "
        "of the forward process q_t(.|x0) at each time under the mask, uniform and semantic (MiniLM kNN) "
        "kernels (or others: --kernels); print the table and save it as text and as a PNG figure.",
    )
    p.add_argument("sentence", nargs="?", default=None,
                   help="the sentence to noise (default: a line of Shakespeare chosen by --seed)")
    p.add_argument("--t", dest="times", type=unit_interval("times", "0 = data, 1 = fully noised"), nargs="+",
                   default=list(DEFAULT_TIMES), metavar="T",
                   help="times in (0, 1] (default: 0.1 0.2 ... 0.9)")
    p.add_argument("--kernels", nargs="+", choices=KERNELS.names(), default=list(DEFAULT_KERNELS), metavar="NAME",
                   help=f"kernels to show, from {{{', '.join(KERNELS.names())}}} (default: "
                        f"{' '.join(DEFAULT_KERNELS)})")
    p.add_argument("--seed", type=int, default=0, help="random seed (and choice of the default line); default 0")
    p.add_argument("--out", type=Path, default=Path("results/noise"),
                   help="folder for noise.txt and noise.png (default: results/noise)")
    p.add_argument("--no-figure", action="store_true", help="do not draw noise.png")
    add_device_option(p)
    p.set_defaults(run=run_noise, parser=p)


def run_noise(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.sentence is not None and not args.sentence.strip():
        parser.error("the sentence is empty; give some text, or leave it out for a line of Shakespeare")
    if len(set(args.kernels)) != len(args.kernels) or len(set(args.times)) != len(args.times):
        parser.error("--t and --kernels values must not repeat")
    output_folder(args, args.out)
    try:
        demo = noise_demo(args.sentence, times=args.times, kernels=args.kernels, seed=args.seed,
                          device=device_of(args))
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


def add_nll_gap(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nll-gap", help="the snapshot vs path-wise NLL gap, IPG + CG, exactly on a small problem",
                              description="Exact NLL-gap decomposition (gdds.nll_gap) on pairs of tokens that are "
                              "equal with probability 0.8, for several predictor pairs; prints a markdown table.")
    p.add_argument("--kernels", nargs="+", default=list(EXAMPLE_KERNELS), choices=list(EXAMPLE_KERNELS))
    p.add_argument("--times", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0], help="the path's time grid")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the terms as JSON")
    p.set_defaults(run=run_nll_gap, parser=p)


def run_nll_gap(args: argparse.Namespace) -> int:
    rows = {}
    for kernel in args.kernels:
        try:
            problem = example_problem(kernel, args.times)
        except ValueError as exc:
            args.parser.error(str(exc))
        for pair, (snap, path) in predictor_pairs(problem).items():
            rows[f"{kernel}: {pair}"] = decompose(problem, snap, path).to_dict()
    print(nll_gap_markdown(rows, args.times))
    if args.json is not None:
        write_text_atomically(args.json, json.dumps({"times": args.times, "rows": rows}, indent=1))
    return 0


def add_export(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="write a trained run as a self-contained model folder (Hugging Face Hub layout)",
        description="Write RUN_DIR's latest checkpoint as a model folder in OUT_DIR: config.json (with the SHA-256 "
        "of every other file), model.safetensors, tokenizer.json (for tokenizers / transformers), the kernel's "
        "embeddings, a README.md model card with the evaluation gdds eval wrote. It loads without the corpus: "
        "gdds.load(OUT_DIR), gdds sample OUT_DIR. RUN_DIR may also be a model folder: it is checked and copied.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, or a model folder to copy")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights (default ema)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it exists (atomically: a kill leaves the old folder or the new one)")
    p.add_argument("--push", metavar="REPO", default=None,
                   help="then upload OUT_DIR to the Hugging Face Hub repository REPO (private when created) with "
                   "huggingface_hub: needs a token (hf auth login or HF_TOKEN) and the network")
    p.set_defaults(run=run_export, parser=p)


def run_export(args: argparse.Namespace) -> int:
    try:
        folder = export_model(args.run_dir, args.out_dir, args.weights, args.overwrite)
    except ConfigError as exc:
        args.parser.error(str(exc))
    files = sorted(p.name for p in folder.iterdir())
    print(f"wrote {folder}: {', '.join(files)}")
    print(f"load it with gdds.load({str(folder)!r}) or gdds sample {folder}")
    if args.push is not None:
        try:
            print(f"pushed to {push_folder(folder, args.push)}")
        except PushError as exc:
            print(f"gdds export: {folder} is written but not pushed to {args.push}: {exc}", file=sys.stderr)
            return 1
    return 0
