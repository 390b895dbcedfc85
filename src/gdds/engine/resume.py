"""What a resumed run may change, and the check that it changes nothing else.

A run continues the same run only with the settings it was trained with: the seed, the data, the
process, the network and the optimisation stay; the intervals, the device, the precision and the
step count (:data:`RESUMABLE_KEYS`) may change. ``gdds train --resume`` builds its configuration
from the stored one (:func:`resume_config`); a library call ``train(cfg, run, resume=True)`` and
``gdds compare`` bring a configuration of their own, checked against the stored one with
:func:`changed_settings` before any compute.
"""
from __future__ import annotations

from pathlib import Path

from . import checkpoint as ck
from .build import leaf_differences
from .config import Config, ConfigError, apply_overrides, load_config
from .legacy import as_saved

RESUMABLE_KEYS = {"train.max_steps", "train.ckpt_every", "train.eval_every", "train.eval_batches",
                  "train.log_every", "train.log", "train.keep_checkpoints", "train.progress", "train.device",
                  "train.precision", "train.compile", "train.checkpointing", "process.power_cache_gib"}


def stored_config(run_dir: Path) -> Config:
    """The configuration of the run's latest checkpoint, with the settings its identity implies where a
    default has changed since (:func:`gdds.engine.legacy.as_saved`)."""
    folder = ck.latest_checkpoint(Path(run_dir))
    return as_saved(load_config(str(folder / "config.yaml")), ck.read_json(folder / "run.json"))


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The configuration stored in the run's latest checkpoint, with the overrides that
    a resumed run may change (``train.max_steps``, intervals, device, precision)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"{key} cannot change when resuming (it would not continue the same run); "
                              f"resumable keys: {', '.join(sorted(RESUMABLE_KEYS))}")
    return Config.from_dict(apply_overrides(stored_config(run_dir).to_dict(), overrides))


def changed_settings(cfg: Config, run_dir: Path) -> list[str]:
    """``"key: the run has A, asked for B"`` for every setting where ``cfg`` differs from the run's
    stored configuration, those of :data:`RESUMABLE_KEYS` excepted (empty: ``cfg`` continues the run)."""
    return changed_from(stored_config(run_dir).to_dict(), cfg)


def changed_from(stored: dict, cfg: Config) -> list[str]:
    """:func:`changed_settings` against a stored configuration given as a dictionary."""
    return [f"{key}: the run has {a!r}, asked for {b!r}" for key, a, b in leaf_differences(stored, cfg.to_dict())
            if not any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)]


def check_resumable(cfg: Config, run_dir: Path) -> None:
    """A :class:`ConfigError` naming the differing settings when ``cfg`` would not continue the run."""
    changed = changed_settings(cfg, run_dir)
    if changed:
        raise ConfigError(f"{run_dir} was trained with other settings ({'; '.join(changed)}); resuming would "
                          f"not continue the same run: resume it with its own settings (gdds train --resume "
                          f"{run_dir}, changing only {', '.join(sorted(RESUMABLE_KEYS))}) or train into a new "
                          "--out folder")
