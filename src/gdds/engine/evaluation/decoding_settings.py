"""The settings ``gdds decode-bench`` measures (``docs/decoding.md``): a sampler of
:data:`gdds.samplers.SAMPLERS` with its options, a step count and, optionally, a grid fitted to the run's
own profile of the bound; their names (distinct for different options: a table row and a curve each) and
the curve each belongs to in the figure.

A setting is checked when it is made (the sampler exists and accepts its options, :meth:`Sampler.check`);
whether its sampler applies to a run's process is decided per run (:mod:`gdds.engine.evaluation.decoding`).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...categorical import Decoding
from ...samplers import SAMPLERS

NAMED_OPTIONS: dict[str, str] = {"score": "({})", "threshold": "{}", "eta": "eta {}", "corrector_steps": "{} step"}
"""The options that name a setting (with their sampler's default when not given), and how: ``ordered
(margin)``, ``threshold 0.9``, ``remdm eta 0.1``, ``corrector 1 step``. Other options are named
``key value`` (``key`` alone for ``True``)."""

ALONG_CURVE = ("threshold",)
"""Options that vary along one curve of the figure instead of naming it: the threshold sampler's steps are
a cap, and its thresholds at one cap trade speed for quality as step counts do for the other samplers."""


def _defaults(sampler: str) -> dict[str, Any]:
    params = inspect.signature(SAMPLERS.get(sampler).draw).parameters
    return {k: p.default for k, p in params.items() if k in NAMED_OPTIONS and p.default is not p.empty}


def _word(key: str, value: Any) -> str:
    if key in NAMED_OPTIONS:
        text = NAMED_OPTIONS[key].format(f"{value:g}" if isinstance(value, float) else value)
        return text + ("s" if key == "corrector_steps" and value != 1 else "")
    if value is True:
        return key
    return f"{key} {value!r}" if isinstance(value, Decoding) else f"{key} {value}"


def setting_name(sampler: str, options: Mapping[str, Any], fitted: int | None = None,
                 leave_out: Sequence[str] = ()) -> str:
    """The sampler's name, then its naming options (:data:`NAMED_OPTIONS`, their defaults filled in), its other
    options, and "(fitted grid)" for a fitted grid; ``leave_out``: options not named (a curve's varying ones)."""
    given = {**_defaults(sampler), **options}
    words = [_word(k, given[k]) for k in NAMED_OPTIONS if k in given and k not in leave_out]
    words += [_word(k, v) for k, v in options.items() if k not in NAMED_OPTIONS and k not in leave_out]
    words += ["(fitted grid)"] if fitted else []
    return " ".join([sampler, *words])


@dataclass(frozen=True)
class Setting:
    """One sampler setting: ``sampler`` (a name of :data:`gdds.samplers.SAMPLERS`) with ``options`` in
    ``steps`` steps (for ``threshold``, the most network calls); ``fitted``: sample (and bound) on the grid
    fitted to the run's own ``fitted``-step profile of the bound, resolved per run into ``grid=``;
    ``name`` labels its row and curve (default :func:`setting_name`), ``curve`` the curve it joins
    (default its name; for the options of :data:`ALONG_CURVE`, the name without them and the steps)."""

    sampler: str
    steps: int
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    fitted: int | None = None
    curve: str = ""

    def __post_init__(self) -> None:
        entry = SAMPLERS.get(self.sampler)
        entry.check(self.options)
        if self.steps < 1:
            raise ValueError(f"a setting needs at least 1 step; got {self.steps}")
        if self.fitted is not None:
            if "grid" in self.options or "spacing" in self.options:
                raise ValueError("a fitted grid replaces the setting's own grid and spacing")
            if self.fitted < 2:
                raise ValueError(f"a fitted grid needs a profile of at least 2 steps; got {self.fitted}")
            entry.check(["grid"])
        along = [k for k in ALONG_CURVE if k in self.options or k in _defaults(self.sampler)]
        if not self.curve:
            curve = f"{setting_name(self.sampler, self.options, self.fitted, along)}, T = {self.steps}" \
                if along and not self.name else self.name or setting_name(self.sampler, self.options, self.fitted)
            object.__setattr__(self, "curve", curve)
        object.__setattr__(self, "name", self.name or setting_name(self.sampler, self.options, self.fitted))

    @property
    def label(self) -> str:
        return f"{self.name}, T = {self.steps}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "curve": self.curve, "sampler": self.sampler, "steps": self.steps,
                "fitted_profile_steps": self.fitted,
                "options": {k: repr(v) if isinstance(v, Decoding) else v for k, v in self.options.items()}}


SETTING_KEYS = {"sampler", "steps", "options", "name", "fitted_grid", "curve"}


def settings_of(entries: Sequence[Mapping[str, Any]]) -> list[Setting]:
    """Settings from a preset's list of ``{sampler, steps: [..], options: {..}, fitted_grid: K, name, curve}``
    (one setting per step count; ``options.decoding`` may be a mapping of :class:`gdds.Decoding`'s fields),
    each checked (:class:`Setting`), their names distinct (:func:`check_names`)."""
    out = []
    for entry in entries:
        if set(entry) - SETTING_KEYS or "sampler" not in entry or "steps" not in entry:
            raise ValueError(f"a setting is {{{', '.join(sorted(SETTING_KEYS))}}} with sampler and steps; "
                             f"got {dict(entry)}")
        options = dict(entry.get("options") or {})
        if isinstance(options.get("decoding"), Mapping):
            options["decoding"] = Decoding(**options["decoding"])
        steps = entry["steps"] if isinstance(entry["steps"], list) else [entry["steps"]]
        fitted = entry.get("fitted_grid")
        out += [Setting(entry["sampler"], int(k), options, entry.get("name", ""),
                        None if fitted is None else int(fitted), entry.get("curve", "")) for k in steps]
    check_names(out)
    return out


def check_names(settings: Sequence[Setting]) -> None:
    """Refuse two settings of one name that differ in more than their steps (a row and a curve each need their
    own name), and two settings that are the same (name and steps)."""
    seen: dict[str, tuple[str, str, int | None]] = {}
    labels: set[str] = set()
    for s in settings:
        what = (s.sampler, repr(sorted(s.options.items())), s.fitted)
        if seen.setdefault(s.name, what) != what:
            raise ValueError(f"two settings are named {s.name!r} but differ in sampler, options or grid; "
                             "give each its own name")
        if s.label in labels:
            raise ValueError(f"the setting {s.label!r} is given twice")
        labels.add(s.label)
