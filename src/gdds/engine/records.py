"""What a training run records: each validation (:class:`Validation`) and the result of
:func:`gdds.engine.train.train` (:class:`TrainResult`); where records go is :mod:`gdds.engine.logs`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
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
