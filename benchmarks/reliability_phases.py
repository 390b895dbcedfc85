"""What runs in a child process of the reliability replay (``benchmarks/reliability.py --phase PHASE --spec
JSON -- ARGS``, :data:`PHASES`): the set-up of the base run and models, a Python call shown as the CLI would,
``gdds`` with the fault hooks (kill or pause inside a training step, kill inside a checkpoint's write), and the
overwrites killed at each step."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reliability_security import judge_folders
from reliability_setup import base_models
from replay import contents


def setup_phase(spec: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) The base run and its model folders, the other model, the two judge folders."""
    root = Path(spec["root"])
    base_models(root)
    judge_folders(root / "sec")
    return 0


class Killed(BaseException):
    """The process died here: nothing after it reaches the disk, and no cleanup runs."""


@contextlib.contextmanager
def killed_at(k: int) -> Iterator[None]:
    """From the ``k``-th rename, replace, unlink, rmdir or folder swap on, each such call raises :class:`Killed`
    before acting (as ``tests/engine/test_model_folder_integrity.py`` does)."""
    from gdds import files

    count = [0]
    saved = [(m, n, getattr(m, n)) for m, n in [(os, "rename"), (os, "replace"), (os, "unlink"), (os, "rmdir"),
                                                 (files, "_exchange")]]

    def dying(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] >= k:
                raise Killed
            return fn(*args, **kwargs)
        return call

    for module, name, fn in saved:
        setattr(module, name, dying(fn))
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def overwrite_phase(spec: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) ``gdds export RUN MODEL --overwrite`` (or ``save_pretrained``) over the raw-weights
    model folder, killed at its k-th step for k = 1, 2, ... until it completes: after each kill MODEL must be
    the old folder or the new one, whole and loadable (a kill between the fallback's two renames: put back
    by the next export); what a kill left must go at the next overwrite. Prints a JSON summary."""
    import gdds
    from gdds import files
    from gdds.cli import main
    from gdds.engine.config import ConfigError
    from gdds.engine.model_folder import export_model

    root = Path(spec["root"])
    run, old, new = root / "base" / "run", root / "base" / "model-raw", root / "base" / "model"
    work = root / "f" / re.sub(r"\W+", "-", f"{spec['how']}-{spec['swap']}")
    work.mkdir(parents=True)
    target = work / "model"
    exchange = files._exchange(Path(shutil.copytree(old, work / "a")), Path(shutil.copytree(new, work / "b")))
    if spec["swap"] == "two renames":
        files._exchange = lambda a, b: False
    source = gdds.load(new) if spec["how"].startswith("save") else None
    before, after = contents(old), contents(new)
    outcomes: Counter[str] = Counter()
    problems: list[str] = []

    def hidden() -> list[str]:
        return sorted(p.name for p in work.iterdir() if p.name.startswith(".model."))

    def attempt(k: int, fresh: bool = True) -> bool:
        if fresh:
            for name in ["model", *hidden()]:
                shutil.rmtree(work / name, ignore_errors=True)
            shutil.copytree(old, target)
        with killed_at(k):
            try:
                if source is None and main(["export", str(run), str(target), "--overwrite"]) != 0:
                    problems.append(f"kill point {k}: the export failed")
                elif source is not None:
                    source.save_pretrained(target, overwrite=True)
                return True
            except Killed:
                return False

    left: dict[int, list[str]] = {}
    for k in range(1, 1000):
        finished = attempt(k)
        left[k] = hidden()
        if not target.exists():
            try:
                export_model(run, target)  # the next export puts the old folder back first, then refuses
            except ConfigError:
                outcomes["put back by the next export"] += 1
        now = contents(target) if target.exists() else None
        if now not in (before, after):
            problems.append(f"kill point {k}: {target.name} is neither the old folder nor the new one")
        else:
            try:
                gdds.load(target)
                outcomes["new" if now == after else "old"] += 1
            except Exception as exc:
                problems.append(f"kill point {k}: does not load: {type(exc).__name__}: {exc}")
        if finished:
            break
    if dirty := [k for k in left if left[k]]:  # what a kill left (a half-deleted old folder) goes next time
        attempt(dirty[-1])
        attempt(10**9, fresh=False)
        if hidden():
            problems.append(f"the next overwrite left {hidden()}")
    print(json.dumps({"kill_points": len(left), "outcomes": outcomes, "renameat2_exchange": exchange,
                      "leftovers_seen": len(dirty), "problems": problems}))
    print(f"{len(left)} kill points, then MODEL was: {dict(outcomes)}; {len(dirty)} kills left hidden folders; "
          f"{len(problems)} problems; renameat2 exchange on this file system: {exchange}", file=sys.stderr)
    return 1 if problems else 0


def gdds_phase(hooks: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) ``gdds ARGV`` with fault hooks: ``kill_step`` (SIGKILL inside that training step,
    before its records and checkpoint), ``pause_step`` (write the file ``ready`` there and wait for the file
    ``release``), ``kill_save`` (SIGKILL after half of the k-th ``torch.save`` into a checkpoint is written)."""
    import torch

    from gdds.cli import main
    from gdds.engine.train import Trainer

    step, save, saves = Trainer.train_step, torch.save, [0]

    def train_step(self: Trainer) -> dict[str, float]:
        if self.step + 1 == hooks.get("kill_step"):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.step + 1 == hooks.get("pause_step"):
            Path(hooks["ready"]).write_text(str(os.getpid()))
            deadline = time.monotonic() + 600
            while not Path(hooks["release"]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return step(self)

    def half_save(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        if ".tmp-step-" in str(getattr(fh, "name", "")):
            saves[0] += 1
            if saves[0] == hooks.get("kill_save"):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                fh.write(buffer.getvalue()[:buffer.tell() // 2])
                fh.flush()
                os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        save(obj, fh, *args, **kwargs)

    Trainer.train_step = train_step
    torch.save = half_save
    return main(argv)


def python_phase(code: str, argv: list[str]) -> int:
    """(In a child process.) Run the Python call ``code``; an exception ends in one line as the CLI shows it
    (``gdds.cli.main``: the types of ``EXPECTED`` as their message, others with their type and the "report
    it if it looks like a bug" suffix) and exit status 1."""
    from gdds.cli.main import EXPECTED

    try:
        exec(code, {"__name__": "replayed"})
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, EXPECTED):
            text = f"{type(exc).__name__}: {text} (report it if it looks like a bug in gdds)"
        print(f"gdds: error: {text}", file=sys.stderr)
        return 1
    return 0


PHASES: dict[str, Callable[[Any, list[str]], int]] = {
    "gdds": gdds_phase, "python": python_phase, "overwrite": overwrite_phase, "setup": setup_phase}
