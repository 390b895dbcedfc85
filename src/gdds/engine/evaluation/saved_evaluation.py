"""A compared run's saved evaluation, ``<run>/compare_eval.json`` (``docs/comparing.md``): the report,
the key it was made under (the evaluation settings and :func:`gdds.version.code_fingerprint`) and what
was evaluated (the run's final step and configuration).

A run folder whose ``checkpoints/`` are gone but whose saved evaluation is there is an **archived run**:
``gdds compare`` counts it as trained and evaluated, as long as it asks for the same training settings
and the same evaluation by the same code; anything else would need the weights, and is refused. So a
comparison that outlives one machine keeps a few kilobytes per run (``compare_eval.json``, the log and
the configuration), not the 100 MB of its checkpoints."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...files import write_text_atomically
from .. import checkpoint as ck
from ..config import Config, ConfigError
from ..resume import changed_from, stored_config

FILE = "compare_eval.json"


def read_saved(run_dir: Path) -> dict[str, Any] | None:
    """The saved evaluation of ``run_dir`` (``None``: none)."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_saved(run_dir: Path, key: dict[str, Any], report: dict[str, Any]) -> None:
    """Save ``report`` under ``key`` with the final step and configuration of the run it evaluates."""
    folder = ck.latest_checkpoint(Path(run_dir))
    trained = {"step": ck.read_json(folder / "manifest.json")["step"], "config": stored_config(run_dir).to_dict()}
    write_text_atomically(Path(run_dir) / FILE, json.dumps({"key": key, "trained": trained, "report": report},
                                                          indent=1))


def archived(cfg: Config, run_dir: Path) -> bool:
    """Whether ``run_dir`` is an archived run (no checkpoints, a saved evaluation that records its
    training) finished for ``cfg``: a :class:`ConfigError` when it was trained with other settings."""
    saved = read_saved(run_dir)
    if ck.list_checkpoints(Path(run_dir)) or saved is None or "trained" not in saved:
        return False
    changed = changed_from(saved["trained"]["config"], cfg)
    if changed:
        raise ConfigError(f"{run_dir} is an archived run (its evaluation, no checkpoints) trained with other "
                          f"settings than this comparison asks for ({'; '.join(changed)}): move it away (or choose "
                          "another --out) to train it again")
    return saved["trained"]["step"] >= cfg.train.max_steps


def refuse_archived(run_dir: Path, made_by: str | None, code: str) -> None:
    """A :class:`ConfigError` when ``run_dir`` has no checkpoints, so its evaluation cannot be made again."""
    if not ck.list_checkpoints(Path(run_dir)):
        raise ConfigError(f"{run_dir} is an archived run (its evaluation, no checkpoints): its saved evaluation was "
                          f"made with other settings or code (fingerprint {made_by or 'unknown'}, now {code}) and "
                          "cannot be made again without the weights; compare with the settings and code it was "
                          "made with, or move the folder away to train it again")
