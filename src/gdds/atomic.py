"""Atomic file writes: readers see the old file or the complete new one, never a
half-written one (write to a temporary file next to the target, then rename)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union


def write_atomically(path: Union[str, Path], write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``.

    Parent folders are created; permissions follow the umask; on any error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
