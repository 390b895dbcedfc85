"""Files: atomic writes and the cache folder, the one module of the library that touches the disk.

:func:`write_atomically` gives readers the old file or the complete new one, never a
half-written one (write to a temporary file next to the target, then rename);
:func:`replace_folder` does the same for a whole folder (a model folder).
:func:`write_cache` is the same for a cache file, whose failure is only a warning.
:class:`FileLock` makes one process the owner of a folder (a run, a token store) for as long as it
lives.
:func:`cache_dir` is where caches live (kNN graphs, token arrays): ``$GDDS_CACHE_DIR`` when
set, else the user's cache folder. :func:`check_writable` checks an output folder before a
command computes what goes in it. Nothing here imports another gdds module.
"""
from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

_TMP_SUFFIX = ".tmp"


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it to ``path``.

    Parent folders are created; permissions follow the umask; on any error the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def temporary_target(name: str) -> str | None:
    """The name of the file that :func:`write_atomically` was writing when it left the temporary file
    ``name`` behind (killed mid-write), else ``None``: how an owner of a folder recognises its leftovers."""
    if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
        return None
    target, _, token = name[1:-len(_TMP_SUFFIX)].rpartition(".")
    return target if target and len(token) == 12 and all(c in "0123456789abcdef" for c in token) else None


def write_text_atomically(path: str | Path, text: str) -> Path:
    """:func:`write_atomically` for a UTF-8 text (reports, JSON)."""
    data = text.encode("utf-8")
    return write_atomically(path, lambda fh: fh.write(data))


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 4 MiB pieces (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


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


# renameat2(2) flag that swaps two existing paths in one step (Linux 3.15+; ext4, xfs, btrfs, tmpfs).
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` atomically (``renameat2`` with ``RENAME_EXCHANGE``); ``False`` where
    the C library or the file system cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _siblings(target: Path, kind: str) -> list[Path]:
    """The hidden ``.NAME.<kind>-*`` folders that :func:`replace_folder` makes next to ``target``."""
    prefix = f".{target.name}.{kind}-"
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix)) if target.parent.is_dir() else []


def _remove(path: Path) -> None:
    """Delete a folder (or a file, or a link, which is not followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def interrupted_replace(target: str | Path) -> Path | None:
    """When ``target`` is missing because a :func:`replace_folder` was killed between its two renames
    (the fallback without ``renameat2``), the ``.NAME.old-*`` folder that holds ``target``'s previous,
    complete content; else ``None``."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        return None
    old = _siblings(target, "old")
    return old[-1] if old else None


def recover_folder(target: str | Path) -> None:
    """Clean what a killed :func:`replace_folder` of ``target`` left: a ``.NAME.old-*`` folder is renamed
    back when ``target`` is missing (it is the previous complete folder: see :func:`interrupted_replace`),
    then every ``.NAME.tmp-*`` (a half-built or swapped-out folder) and ``.NAME.old-*`` is deleted."""
    target = Path(target)
    old = interrupted_replace(target)
    if old is not None:
        if len(_siblings(target, "old")) > 1:
            raise FileExistsError(f"{target} is missing and several {target.parent}/.{target.name}.old-* folders "
                                  f"hold earlier versions of it; rename the one to keep to {target}")
        os.rename(old, target)
    for leftover in _siblings(target, "tmp") + _siblings(target, "old"):
        _remove(leftover)


def replace_folder(target: str | Path, build: Callable[[Path], object]) -> Path:
    """Make ``target`` the folder that ``build(staging)`` writes, so that at every instant ``target`` is
    either its previous complete content or the new complete one (``gdds export --overwrite``,
    ``Model.save_pretrained``; a kill at any point loses nothing).

    ``build`` fills a hidden ``.NAME.tmp-*`` folder next to ``target``; the two are then swapped in one
    step (``renameat2(RENAME_EXCHANGE)``) and the old content, now under the hidden name, is deleted.
    Where the swap is not supported, ``target`` is renamed aside to ``.NAME.old-*``, the new folder
    renamed in, and the old one deleted: a kill between the two renames leaves ``target`` missing and
    its previous content whole in ``.NAME.old-*``, which :func:`recover_folder` (run first here) puts
    back. Leftovers of earlier killed replaces are deleted first.
    """
    target = Path(target)
    recover_folder(target)
    staging = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        build(staging)
        if not target.exists():
            os.rename(staging, target)
        elif not _exchange(staging, target):
            old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
            os.rename(target, old)
            try:
                os.rename(staging, target)
            except OSError:
                os.rename(old, target)
                raise
            _remove(old)
    finally:
        if staging.exists() or staging.is_symlink():
            _remove(staging)
    return target


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
