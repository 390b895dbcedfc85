"""The ``gdds`` command line: :func:`build_parser` registers one parser per command (each
module here adds its own: ``add_<name>`` builds the parser, ``run_<name>`` runs it) and
:func:`main` dispatches.

Usage errors (bad values, unknown names) exit with status 2 and a message, never a
traceback; a missing optional package, an unusable checkpoint or a model that cannot do
what was asked exits with status 1 and a message saying what to do. Any other error also ends in
one line (its type and message) with status 1; ``gdds --debug ...`` or ``GDDS_DEBUG=1`` shows the
traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ..engine.checkpoint import CheckpointError
from ..engine.config import ConfigError
from ..objectives import NotGenerative
from ..version import __version__
from .data import add_prepare
from .decode_bench import add_decode_bench
from .evaluation import add_eval, add_sample
from .lm_eval import add_lm_eval
from .tools import add_export, add_nll_gap, add_noise
from .training import add_compare, add_train

DEBUG_ENV = "GDDS_DEBUG"
# Errors whose message says what to fix (the others are shown with their type).
EXPECTED = (ImportError, CheckpointError, ConfigError, NotGenerative, OSError, ValueError, TimeoutError)
COMMANDS = (add_noise, add_prepare, add_train, add_sample, add_eval, add_export, add_compare, add_decode_bench,
            add_nll_gap, add_lm_eval)


def build_parser() -> argparse.ArgumentParser:
    """The ``gdds`` parser with every command of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(prog="gdds", description="Generalized discrete diffusion from snapshots (GDDS).")
    parser.add_argument("--version", action="version", version=f"gdds {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of an error (also {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """A warning as the command line prints it: ``gdds: warning: ...`` on one line (no source line)."""
    return f"gdds: warning: {' '.join(str(message).split())}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gdds`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_through", False):  # only gdds lm-eval hands arguments on
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.passed_through = extra
    args.command_line = " ".join(["gdds", *(sys.argv[1:] if argv is None else argv)])
    debug = args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    shown = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("gdds: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, EXPECTED):
            message = (f"{type(exc).__name__}: {message} (gdds --debug ... or {DEBUG_ENV}=1 shows the traceback; "
                       "report it if it looks like a bug in gdds)")
        print(f"gdds: error: {message}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = shown
