"""Where a result was measured: the machine, the versions, the commit and the date (written into
``compare.json`` and every benchmark's JSON)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..version import __version__


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
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "gdds": __version__}


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the working tree holding this package (``+dirty`` when it has changes), or
    ``None`` outside a git checkout."""
    folder = Path(__file__).resolve().parent if where is None else where
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def provenance(command: str, cuda_used: bool) -> dict[str, Any]:
    """The command, commit, date, machine and versions of a result."""
    return {"command": command, "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(cuda_used), "versions": versions()}
