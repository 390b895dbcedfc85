"""What a training run records: each validation (:class:`Validation`), the result of
:func:`gdds.engine.train.train` (:class:`TrainResult`), and the run's log (:class:`RunLog`:
``RUN_DIR/log.jsonl``, plus TensorBoard scalars when ``tensorboard`` is installed)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Validation:
    """One validation pass: the method's number (``metric``, e.g. ``snapshot_ce``) on a split,
    what it is (``label``), the weights used and the tokens scored."""

    split: str
    metric: str
    value: float
    label: str
    weights: str
    tokens: int

    def record(self, step: int) -> dict[str, Any]:
        """The JSONL log line: ``{"kind": "eval", "step", "<split>_<metric>": value, "metric": label, ...}``."""
        return {"kind": "eval", "step": step, f"{self.split}_{self.metric}": self.value, "metric": self.label,
                "weights": self.weights, "tokens": self.tokens}


@dataclass
class TrainResult:
    """What :func:`train` returns: the last training record logged (``loss``, ``lr``,
    ``grad_norm``, ``step``, ``tokens_per_s``, ...), the last validation, the checkpoint, and
    ``samples`` texts from ``sampler``; ``stopped_at`` is the step where a signal stopped the run."""

    train: dict[str, Any] | None = None
    valid: Validation | None = None
    checkpoint: str | None = None
    samples: list[str] = field(default_factory=list)
    sampler: str | None = None
    stopped_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunLog:
    """Appends records (one JSON object per line) to ``RUN_DIR/log.jsonl`` and their numbers
    to TensorBoard under ``RUN_DIR/tensorboard`` (kind ``train`` or ``eval``)."""

    def __init__(self, run_dir: Path):
        self.file = (Path(run_dir) / "log.jsonl").open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: the JSONL log is the record of the run
            self.board = None
        else:
            self.board = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """One record; its loss (``loss`` or ``<split>_<metric>``) is tagged in TensorBoard by the
        label the record carries (e.g. ``snapshot CE (not a likelihood)``)."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    is_loss = key == "loss" or key.startswith(("valid_", "test_"))
                    name = record.get("metric", key) if is_loss else key
                    self.board.add_scalar(f"{record['kind']}/{name}", value, record["step"])
            self.board.flush()

    def close(self) -> None:
        self.file.close()
        if self.board is not None:
            self.board.close()
