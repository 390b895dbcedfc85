"""Where a run's records go (``train.log``; :data:`LOGGERS` is the one list): ``jsonl``
(``RUN_DIR/log.jsonl``, the run's own record), ``tensorboard`` (scalars under ``RUN_DIR/tensorboard``
when ``tensorboard`` is installed; skipped otherwise), ``wandb`` (Weights & Biases when installed and
asked for; offline unless ``WANDB_MODE`` says otherwise, files under ``RUN_DIR/wandb``). Each record
is a dict with ``kind`` (``train`` or ``eval``), ``step`` and numbers; a loss is named by the label
the record carries (e.g. ``snapshot CE (not a likelihood)``), never as a bare "loss". A run that
starts again (resumed, or restarted before its first checkpoint) drops the records it will redo;
:func:`read_log` reads ``log.jsonl``.

A sink is built from the run folder, the run's configuration as a plain dict and the step the run
starts at. This module does not import :mod:`gdds.engine.config`, which checks ``train.log``
against :data:`LOGGERS`."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..files import write_text_atomically
from ..registry import Registry
from .config_checks import ConfigError

LOG_FILE = "log.jsonl"


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``record`` named ``<kind>/<name>``, a loss by its label."""
    out = {}
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            is_loss = key == "loss" or key.startswith(("valid_", "test_"))
            out[f"{record['kind']}/{record.get('metric', key) if is_loss else key}"] = float(value)
    return out


def _parsed(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _text(run_dir: Path) -> str:
    path = Path(run_dir) / LOG_FILE
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/log.jsonl`` in order, skipping a line that does not parse (the torn
    last line of a run killed mid-write, in a log that the run's next start has not repaired yet)."""
    return [record for record in map(_parsed, _text(run_dir).splitlines()) if record is not None]


def _later(record: dict[str, Any], step: int) -> bool:
    return isinstance(record.get("step"), int) and record["step"] > step


class Jsonl:
    """One JSON object per line in ``RUN_DIR/log.jsonl``. A run that starts at ``step`` (0, or the
    checkpoint it resumes from) first cuts the log to the records up to that step, dropping what the
    resume redoes and a torn last line, so that each step is logged once, in order; each record is then
    appended in one write of its whole line."""

    def __init__(self, run_dir: Path, settings: dict[str, Any], step: int) -> None:
        path, text = Path(run_dir) / LOG_FILE, _text(run_dir)
        lines = text.splitlines()
        kept = [line for line in lines if (record := _parsed(line)) is not None and not _later(record, step)]
        if len(kept) < len(lines) or (text and not text.endswith("\n")):
            write_text_atomically(path, "".join(line + "\n" for line in kept))
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record) + "\n").encode()
        while data:  # one write of the whole line (a regular file takes it whole unless the disk is full)
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        os.close(self.fd)


class TensorBoard:
    """Scalars under ``RUN_DIR/tensorboard``; events after ``step`` (the start of this run) that an
    earlier, killed run wrote are purged, as in ``log.jsonl``."""

    def __init__(self, run_dir: Path, settings: dict[str, Any], step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.board = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step + 1)

    def write(self, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.board.add_scalar(name, value, record["step"])
        self.board.flush()

    def close(self) -> None:
        self.board.close()


class Wandb:
    """A Weights & Biases run named after the run folder (resumed with it), offline by default."""

    def __init__(self, run_dir: Path, settings: dict[str, Any], step: int) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ConfigError("train.log has wandb, which is not installed: pip install wandb, or leave it out "
                              "of train.log") from err
        os.environ.setdefault("WANDB_MODE", "offline")
        self.run = wandb.init(project="gdds", name=run_dir.name, id=f"gdds-{run_dir.resolve().name}",
                              dir=str(run_dir), config=settings, resume="allow")

    def write(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


Sink = Jsonl | TensorBoard | Wandb
LOGGERS: Registry[Callable[[Path, dict[str, Any], int], Sink]] = Registry("logger")
LOGGERS.register("jsonl", Jsonl)
LOGGERS.register("tensorboard", TensorBoard)
LOGGERS.register("wandb", Wandb)
OPTIONAL = {"tensorboard"}  # skipped when not installed (the default asks for it)


def plain_line(record: dict[str, Any], max_steps: int) -> str:
    """A record as one line of text, for logs without a progress bar (``train.progress=false``)."""
    label = record.get("metric", "loss")
    if record["kind"] == "train":
        return (f"step {record['step']}/{max_steps}: loss {record['loss']:.4f} ({label}), "
                f"{record['tokens_per_s']:,.0f} tokens/s, lr {record['lr']:.2e}")
    values = ", ".join(f"{k.split('_')[0]} {v:.4f}" for k, v in record.items() if k.startswith(("valid_", "test_")))
    return f"step {record['step']}: {values} ({label})"


class RunLog:
    """The sinks ``names`` (``train.log``) of the run in ``run_dir`` whose configuration is ``settings``
    and that starts at ``step``, and a plain line per record on stdout when ``plain_steps`` (the run's
    ``max_steps``, for the line) is given: the progress bar is off."""

    def __init__(self, run_dir: Path, names: Sequence[str], settings: dict[str, Any], step: int,
                 plain_steps: int | None = None) -> None:
        self.plain = plain_steps
        self.sinks: list[Sink] = []
        for name in names:
            try:
                self.sinks.append(LOGGERS.get(name)(Path(run_dir), settings, step))
            except ImportError:
                if name not in OPTIONAL:
                    raise

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)
        if self.plain is not None:
            print(plain_line(record, self.plain), flush=True)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
