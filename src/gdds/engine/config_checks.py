"""Checks of configuration values and of the text they come from: the error of a configuration that
cannot be used (:class:`ConfigError`, re-exported by :mod:`gdds.engine.config`), what a numeric key
may be (:class:`Range`, attached to a field by :func:`ranged`), the key of a bad schedule or kernel
argument (:func:`argument_error`) and the file and line of a YAML syntax error (:func:`parse_yaml`)."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# The longest block: the rotary tables and the attention of every layer grow with it (its square), so
# a longer one is a typo rather than a run (the paper's is 1024).
MAX_SEQ_LEN = 65_536
MAX_SEED = 2**32 - 1  # seeds feed torch, numpy and 1000 * seed + k (gdds.engine.evaluation.evaluate.estimator_seed)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what to change."""


def _number(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: from ``low`` to ``high`` (``None``: unbounded), each end
    included unless ``open_low`` / ``open_high``. NaN is never in a range, and infinity only in one
    whose ``high`` is ``math.inf`` (``train.grad_clip``: no clipping)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        if not (math.isfinite(value) or value == self.high == math.inf):
            return False
        above = self.low is None or value > self.low or (value == self.low and not self.open_low)
        return above and (self.high is None or value < self.high or (value == self.high and not self.open_high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'greater than' if self.open_low else 'at least'} {_number(self.low)}"
        return (f"in {'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.open_high else ']'}")


def ranged(default: Any, low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False) -> Any:
    """A numeric field whose values must lie in a :class:`Range` (checked by :func:`check_ranges`)."""
    return field(default=default, metadata={"range": Range(low, high, open_low, open_high)})


def check_ranges(config: Any, prefix: str = "") -> None:
    """:class:`ConfigError` naming the dotted key of the first value of the dataclass ``config`` (or of
    a dataclass it holds) outside its field's :class:`Range`; ``None`` is left to the field's type."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        elif "range" in f.metadata and value is not None and value not in f.metadata["range"]:
            raise ConfigError(f"{prefix}{f.name} must be {f.metadata['range']}; got {value}")


def argument_error(key: str, args: dict[str, Any], exc: ValueError) -> ConfigError | None:
    """``exc``, raised by a schedule or kernel built with ``args`` (the mapping of ``key``), as a
    :class:`ConfigError` naming ``key.<argument>`` when its message names one argument given in
    ``args`` (``key`` and ``args`` when it names several); ``None`` when it names none of them (the
    error is then not about ``key``)."""
    named = [name for name in args if re.search(rf"\b{re.escape(str(name))}\b", str(exc))]
    if not named:
        return None
    where = f"{key}.{named[0]}" if len(named) == 1 else f"{key} {args}"
    return ConfigError(f"{where}: {exc}")


def parse_yaml(text: str | bytes, where: str) -> Any:
    """``text`` read by ``yaml.safe_load``; text that is not YAML is a :class:`ConfigError` naming
    ``where`` (a file, an override) and the line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        def at(mark: Any) -> str:
            return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"

        context = getattr(exc, "context", None)
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{where}: invalid YAML{at(getattr(exc, 'problem_mark', None))}: {problem}"
                          + (f" ({context}{at(getattr(exc, 'context_mark', None))})" if context else "")) from exc
