"""Files: atomic writes and the cache folder, the one module of the library that touches the disk.

:func:`write_atomically` gives readers the old file or the complete new one, never a
half-written one (write to a temporary file next to the target, then rename).
:class:`FileLock` makes one process the owner of a folder (a run, a token store) for as long as it
lives.
:func:`cache_dir` is where caches live (kNN graphs, token arrays): ``$GDDS_CACHE_DIR`` when
set, else the user's cache folder. Nothing here imports another gdds module.
"""
from __future__ import annotations

import os
import secrets
import socket
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


class LockHeld(OSError):
    """Another live process holds the lock at ``path``; ``host`` and ``pid`` are what it wrote
    (empty and 0 when it had not written them yet)."""

    def __init__(self, path: Path, host: str, pid: int) -> None:
        super().__init__(f"{path} is held by pid {pid} on {host}")
        self.path, self.host, self.pid = path, host, pid


class FileLock:
    """An exclusive ``flock`` on the file ``path`` (created if absent), held by this process until
    :meth:`release` or its death: the kernel lets go of a dead process's locks, so a killed owner
    never leaves a lock held (a pid written in a file can outlive its process or be reused).
    ``path`` holds ``host pid`` of the owner, for messages; a held lock raises :class:`LockHeld`."""

    def __init__(self, path: str | Path) -> None:
        import fcntl  # POSIX only: imported here so that the rest of the module loads everywhere

        self.path = Path(path)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockHeld(self.path, *lock_owner(self.path)) from None
            try:  # the previous owner may have removed the file after we opened it: lock the one at path
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
        self.fd: int | None = fd

    def release(self, remove: bool = False) -> None:
        """Let go of the lock (``remove``: delete the file first, for a lock that marks work under
        way); a second call does nothing."""
        if self.fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_owner(path: str | Path) -> tuple[str, int]:
    """``(host, pid)`` written in the lock file ``path`` (``("", 0)`` when unreadable or not yet written)."""
    try:
        host, _, pid = Path(path).read_text(encoding="utf-8").partition(" ")
    except (OSError, UnicodeDecodeError):
        return "", 0
    return host, int(pid) if pid.strip().isdigit() else 0
