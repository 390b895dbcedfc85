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


def build_parser() -> argparse.ArgumentParser:
    """The ``gdds`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="gdds", description="Generalized discrete diffusion from snapshots (GDDS)."
    )
    parser.add_argument("--version", action="version", version=f"gdds {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_noise(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``gdds`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ImportError as exc:
        print(f"gdds: error: {exc}", file=sys.stderr)
        return 1
