"""Files: atomic writes and the cache folder, the one module of the library that touches the disk.

:func:`write_atomically` gives readers the old file or the complete new one, never a
half-written one (write to a temporary file next to the target, then rename);
:func:`write_cache` is the same for a cache file, whose failure is only a warning.
:func:`cache_dir` is where caches live (kNN graphs, token arrays): ``$GDDS_CACHE_DIR`` when
set, else the user's cache folder. :func:`check_writable` checks an output folder before a
command computes what goes in it. Nothing here imports another gdds module.
"""
from __future__ import annotations

import errno
import os
import secrets
import tempfile
import warnings
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


def write_cache(path: str | Path, write: Callable[[BinaryIO], object], what: str) -> bool:
    """:func:`write_atomically` for a cache file (``what`` names it): a cache folder that cannot take
    it (read-only, full) is a warning, not an error, since the caller holds the value in memory and
    only loses the time it saves next run. Returns whether the file was written."""
    try:
        write_atomically(path, write)
    except OSError as exc:
        warnings.warn(f"could not cache the {what} in {Path(path).parent} ({exc.strerror or exc}); it is kept in "
                      "memory for this run only (set GDDS_CACHE_DIR to a writable folder to keep it)", stacklevel=2)
        return False
    return True


def check_writable(folder: str | Path) -> None:
    """Write and remove an empty file in ``folder``, or, when it does not exist yet, in its nearest
    existing parent (where it would be created; nothing is left behind): an output folder that cannot
    be written (read-only, under a file) fails here with its ``OSError``, before a command spends its
    compute on what would go in it."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    with tempfile.NamedTemporaryFile(dir=existing, prefix=".gdds-probe-"):
        pass


def cache_dir(*parts: str) -> Path:
    """``$GDDS_CACHE_DIR`` if set, else the user's cache folder for ``gdds``; ``parts`` name a
    sub-folder (not created here)."""
    env = os.environ.get("GDDS_CACHE_DIR")
    if env:
        return Path(env).joinpath(*parts)
    import platformdirs

    return Path(platformdirs.user_cache_dir("gdds")).joinpath(*parts)
