"""Files: atomic writes and the cache folder, the one module of the library that touches the disk.

:func:`write_atomically` gives readers the old file or the complete new one, never a
half-written one (write to a temporary file next to the target, then rename).
:func:`cache_dir` is where caches live (kNN graphs, token arrays): ``$GDDS_CACHE_DIR`` when
set, else the user's cache folder. Nothing here imports another gdds module.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
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


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`write_atomically` for a UTF-8 text (reports, JSON)."""
    data = text.encode("utf-8")
    return write_atomically(path, lambda fh: fh.write(data))


def cache_dir(*parts: str) -> Path:
    """``$GDDS_CACHE_DIR`` if set, else the user's cache folder for ``gdds``; ``parts`` name a
    sub-folder (not created here)."""
    env = os.environ.get("GDDS_CACHE_DIR")
    if env:
        return Path(env).joinpath(*parts)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gdds")).joinpath(*parts)
