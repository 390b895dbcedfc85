"""Who may write a run folder, and when: one process trains a run at a time, and a new run never
writes over files that are not a run's own.

The training process (rank 0 of a multi-process run) holds :class:`gdds.files.FileLock` on
``RUN_DIR/.lock`` for the run's whole life; the kernel lets go of it when the process dies, so a
killed run never blocks the next one. A second ``gdds train`` on the folder stops before any compute
with :class:`RunBusy`. A new run (``--config ... --out RUN_DIR``) starts only in a missing or empty
folder, or in a run stopped before its first checkpoint, recognised by its lock file and nothing but
a run's own files (:data:`RUN_FILES`); a model folder, a folder of other files and a run with
checkpoints (continue it with ``--resume``) are refused with a :class:`ConfigError` that says what to
do. Whoever owns the folder removes what a killed process left (:func:`gdds.engine.checkpoint.clean`).
"""
from __future__ import annotations

from pathlib import Path

from ..files import FileLock, LockHeld, temporary_target
from . import checkpoint as ck
from .config import ConfigError
from .distributed import DistInfo, gather_objects

LOCK = ".lock"
RUN_FILES = frozenset({LOCK, "config.yaml", "data.json", "log.jsonl", "checkpoints", "tensorboard", "wandb"})
_WRITTEN = frozenset({"config.yaml", "data.json", "log.jsonl"})  # the run's files written atomically


class RunBusy(OSError):
    """Another live process trains the run folder (an ``OSError``: the CLI prints it as one line)."""


def _own_file(name: str) -> bool:
    return name in RUN_FILES or temporary_target(name) in _WRITTEN


def check_new_run(run_dir: Path) -> None:
    """Refuse ``run_dir`` for a new run unless it is missing, empty, a run (refused later, under the
    lock, by :func:`own`) or a run stopped before its first checkpoint; nothing is written here."""
    if not run_dir.exists() or ck.list_checkpoints(run_dir):
        return
    fix = "choose a new or empty --out folder"
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder; {fix}")
    names = sorted(p.name for p in run_dir.iterdir())
    if {"config.json", "model.safetensors"} <= set(names):
        raise ConfigError(f"--out {run_dir} is a model folder (config.json + model.safetensors); {fix}")
    foreign = [n for n in names if not _own_file(n)]
    if foreign or (names and LOCK not in names):
        shown = ", ".join((foreign or names)[:5]) + (", ..." if len(foreign or names) > 5 else "")
        raise ConfigError(f"--out {run_dir} is not empty and is not a gdds run (it holds {shown}); {fix}, "
                          f"so that no file of yours is overwritten")


def own(run_dir: Path, resume: bool) -> FileLock:
    """Take ``run_dir`` for this process: its lock, then (a new run) the checks of
    :func:`check_new_run` and that it holds no checkpoint; then remove what a killed process left."""
    run_dir = Path(run_dir)
    if resume and not ck.list_checkpoints(run_dir):
        ck.latest_checkpoint(run_dir)  # raises the error that says what the folder is and what to do
    if not resume:
        check_new_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(run_dir / LOCK)
    except LockHeld as held:
        owner = f"pid {held.pid} on {held.host}" if held.pid else "another process"
        raise RunBusy(f"{run_dir} is being trained by {owner}; wait for it to finish, or stop it (a stopped "
                      f"run continues with `gdds train --resume {run_dir}`)") from None
    try:
        if not resume and ck.list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already holds a run with checkpoints; resume it with "
                              f"`gdds train --resume {run_dir}` or choose a new --out folder")
        for stale in run_dir.iterdir():
            if temporary_target(stale.name) in _WRITTEN:
                stale.unlink()
        ck.clean(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def claim(run_dir: Path, resume: bool, dist: DistInfo) -> FileLock | None:
    """:func:`own` in the main process; every process raises its refusal (so that none waits for a
    main process that has stopped). The lock to release when the run ends (``None`` elsewhere)."""
    lock, failure = None, None
    if dist.main:
        try:
            lock = own(run_dir, resume)
        except (ConfigError, ck.CheckpointError, OSError) as exc:
            failure = exc
    failure = gather_objects(failure, dist)[0]
    if failure is not None:
        raise failure
    return lock
