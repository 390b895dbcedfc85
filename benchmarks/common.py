"""Helpers shared by the benchmarks: timing, machine and version records, JSON output."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

from gdds.engine.provenance import machine_info, versions  # noqa: F401 (re-exported to the benchmarks)
from gdds.files import write_atomically

T = TypeVar("T")


def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are complete."""
    if device == "cuda":
        torch.cuda.synchronize()


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda`` (default cpu) of the benchmarks that the GPU suite also runs on CUDA."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def checked_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``args.device``, or a usage error when it asks for CUDA on a machine without it."""
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return args.device


def timed(fn: Callable[[], T], device: str = "cpu") -> tuple[T, float]:
    """``fn()`` and its wall-clock duration in seconds; on ``device="cuda"`` the GPU work queued before
    the call is waited for first and the call's own work is included."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def op_profile(fn: Callable[[], Any], device: str = "cpu", top: int = 12) -> dict[str, Any]:
    """``fn()`` under torch's profiler: its wall-clock seconds and the ``top`` operators by their own time
    (CPU time, or GPU time on ``device="cuda"``), each with its calls and share of the wall clock."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    synchronize(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    wall = time.perf_counter() - start
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, key))[:top]
    return {"wall_s": wall, "sorted_by": key,
            "ops": [{"op": e.key, "self_s": getattr(e, key) / 1e6, "share": getattr(e, key) / 1e6 / wall,
                     "calls": e.count} for e in events]}


def command_line(script: str, argv: list[str] | None) -> list[str]:
    """The command a report records: this interpreter, ``script`` and ``argv``, the arguments its
    ``main(argv)`` was given (``sys.argv`` when run as a script; a test calls ``main`` in-process)."""
    return [sys.executable, *sys.argv] if argv is None else [sys.executable, script, *argv]


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda fh: fh.write(text.encode()))


def number(value: float) -> str:
    """Thousands separators for large figures, three significant digits for small ones."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
