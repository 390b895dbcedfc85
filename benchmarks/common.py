"""Helpers shared by the benchmarks: timing, machine and version records, JSON output."""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

import gdds
from gdds.files import write_atomically

T = TypeVar("T")


def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are complete."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()`` and its wall-clock duration in seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cpu_model() -> str | None:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info(cuda_used: bool) -> dict[str, Any]:
    """Platform, CPU, thread count and (when used) the CUDA device name."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(affinity(0)) if affinity else None,
        "torch_num_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda_used else None,
    }


def versions() -> dict[str, str]:
    """Versions of Python and of the packages the figures depend on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gdds": gdds.__version__,
    }


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda fh: fh.write(text.encode()))


def number(value: float) -> str:
    """Thousands separators for large figures, three significant digits for small ones."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
