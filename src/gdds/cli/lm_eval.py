"""``gdds lm-eval ARGS...``: lm-evaluation-harness's own command line with gdds's model registered.

lm-eval 0.4.x finds models only in its registry and has no plugin discovery, so ``lm_eval --model gdds``
alone cannot see gdds; this command imports :mod:`gdds.engine.evaluation.lm_eval_model` (which registers
``gdds``) and hands every argument, unchanged, to lm-eval's entry point (``lm_eval.__main__.cli_evaluate``).
"""
from __future__ import annotations

import argparse
import sys

LOWER_BOUND_NOTE = ("gdds lm-eval: with --model gdds, every likelihood above is a bound: log-likelihoods are LOWER "
                    "bounds, perplexities and bits per byte UPPER bounds (docs/lm-eval.md); per-request standard "
                    "errors: --model_args ...,se_file=PATH")


def add_lm_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "lm-eval", add_help=False,
        help="run lm-evaluation-harness with gdds models (--model gdds --model_args pretrained=FOLDER,...)",
        description="lm-eval's command line (every argument passes through; gdds lm-eval --help shows lm-eval's "
        "help) with the model 'gdds' registered: --model gdds --model_args pretrained=FOLDER,draws=8,steps=64 "
        "--tasks TASK [--include_path DIR]. Its likelihoods are bounds (docs/lm-eval.md).",
    )
    p.set_defaults(run=run_lm_eval, passes_through=True)  # main() gives it every argument it does not know


def run_lm_eval(args: argparse.Namespace) -> int:
    """Register ``gdds`` in lm-eval's registry, then run lm-eval's command line on the arguments."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError as err:
        raise ImportError("gdds lm-eval needs lm-eval: pip install 'gdds[lmeval]'") from err
    from ..engine.evaluation import lm_eval_model  # noqa: F401  (registers the model "gdds")

    argv = sys.argv
    sys.argv = ["lm-eval", *args.passed_through]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as stop:  # --help, or lm-eval's own usage errors
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    if "gdds" in args.passed_through:
        print(LOWER_BOUND_NOTE, file=sys.stderr)
    return 0
