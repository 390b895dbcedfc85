"""Part 3 of the reliability replay (``benchmarks/reliability.py``): the cheap faults, and their rows.

SIGKILL inside a training step, then ``--resume`` (log.jsonl must hold each step once and the weights equal an
uninterrupted run's); SIGKILL half-way through the first checkpoint's ``state.pt``; a torn last line of
log.jsonl; a second ``gdds train`` and a ``--resume`` while a run is paused inside a step; ``--out`` into a
user's folder and into a model folder; ``gdds export --overwrite`` and ``save_pretrained(overwrite=True)``
killed at each of their steps (as ``tests/engine/test_model_folder_integrity.py`` does: the k-th rename, unlink, rmdir
or folder swap raises, in one process); output and cache folders that cannot be written (under a regular file:
chmod does not stop root); an edit keeping a file's size and mtime; a file-size limit during a checkpoint and
an export. The kills, pauses and overwrites are hooks of the child processes (``benchmarks/reliability_phases.py``).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
from pathlib import Path
from typing import Any

from reliability_setup import UNREAD, Replay
from replay import (
    Case,
    Check,
    Result,
    checkpoint_problem,
    contents,
    each_step_once,
    no_leftovers,
    same_weights,
)

TORN = '{"kind": "train", "loss": 1.2, "ste'  # a record cut by a kill mid-write, as the attack appended
KILL = ["train.max_steps=8", "train.ckpt_every=3"]  # the kill-and-resume runs and their reference
EVALS = [2, 4, 6, 8]  # their validation steps


def fault_cases(rp: Replay) -> list[Case]:
    """Part 3's cheap faults, in an order where each uses what the ones before it left (run one by one)."""
    root, yaml, runs, file = rp.root, str(rp.yaml), rp.root / "f", rp.root / "file"
    ref, killed, first, limited, stale = runs / "ref", runs / "killed", runs / "first", runs / "limited", root / "stale"
    stale_env = {"GDDS_CACHE_DIR": str(root / "cache-stale")}

    def fault(what: str, args: list[str], expect: str = "works", **kw: Any) -> Case:
        return Case("faults", what, args, expect=expect, parallel=False, **kw)

    def hook(**hooks: Any) -> dict[str, Any]:
        return {"phase": "gdds", "spec": hooks}

    def resumed_whole(run: Path) -> list[tuple[str, Check]]:
        return [("nothing lost: each step once in log.jsonl", each_step_once(run, 8, EVALS)),
                ("weights equal the uninterrupted run's", same_weights(run, ref)), ("no leftovers", no_leftovers(run))]

    return [
        fault("reference: an uninterrupted run", ["train", "--config", yaml, "--out", str(ref), *KILL]),
        fault("kill (SIGKILL) mid-run", ["train", "--config", yaml, "--out", str(killed), *KILL], "killed",
              **hook(kill_step=5), how="SIGKILL inside step 5; the checkpoint of step 3 is on disk"),
        fault("then `--resume`, killed again", ["train", "--resume", str(killed)], "killed", **hook(kill_step=7),
              how="SIGKILL inside step 7; the checkpoint of step 6 is on disk"),
        fault("then a torn last line of `log.jsonl`, and `--resume` to the end", ["train", "--resume", str(killed)],
              before=lambda: torn_line(killed), how=f"{TORN!r} appended to log.jsonl", checks=resumed_whole(killed)),
        Case("faults", "torn last line: the log readers (`read_log`; `gdds compare`'s throughput)", expect="works",
             parallel=False, before=lambda: torn_line(Path(shutil.copytree(ref, runs / "torn", symlinks=True))),
             phase="python", spec=(
                 "from pathlib import Path; from gdds.engine.logs import read_log; "
                 "from gdds.engine.evaluation.compare import _throughput; "
                 f"run = Path({str(runs / 'torn')!r}); records = read_log(run); "
                 "assert [r['step'] for r in records if r['kind'] == 'train'] == list(range(1, 9)), records; "
                 "assert _throughput(run) > 0; print(len(records), 'records,', _throughput(run), 'tokens/s')")),
        fault("kill during the first checkpoint", ["train", "--config", yaml, "--out", str(first), *KILL], "killed",
              **hook(kill_save=1), how="SIGKILL after half of the first checkpoint's state.pt is written",
              checks=[("the kill hit the checkpoint (a .tmp-step-* folder is left)",
                       lambda _: not any(first.glob("checkpoints/.tmp-step-*")) and "no .tmp-step-* folder")]),
        fault("then `--resume`", ["train", "--resume", str(first)], "error", names=("no checkpoint yet", "--config")),
        fault("then start again with its `--config`",
              ["train", "--config", str(first / "config.yaml"), "--out", str(first)], checks=resumed_whole(first)),
        *concurrent_cases(rp, ref),
        fault("`--out` into a folder with the user's `config.yaml`/`data.json`",
              ["train", "--config", yaml, "--out", str(runs / "userdir"), "train.max_steps=2"], "error",
              names=("config.yaml",), before=lambda: user_folder(runs / "userdir"),
              checks=[("nothing lost: the user's files unchanged, nothing added", user_files(runs / "userdir"))]),
        fault("`--out` into a model folder",
              ["train", "--config", yaml, "--out", str(runs / "model-copy"), "train.max_steps=2"], "error",
              names=("model folder",), before=lambda: shutil.copytree(root / "base" / "model", runs / "model-copy"),
              checks=[("nothing lost: the model folder unchanged", same_files(runs / "model-copy", root / "base" /
                                                                              "model"))]),
        overwrite_case(rp, "export", "exchange"),
        overwrite_case(rp, "export", "two renames"),
        overwrite_case(rp, "save_pretrained", "exchange"),
        fault("read-only output folder: `gdds eval`", ["eval", str(root / "base" / "run"), "--out", str(file / "eval")],
              "error", names=("cannot write to",), watch=(last_checkpoint(root / "base" / "run") / "ema.safetensors",),
              watch_check=UNREAD, how="--out under a regular file; inotify on the weights"),
        fault("read-only output folder: `gdds noise`", ["noise", "--out", str(file / "noise")], "error",
              names=("cannot write to",), how="--out under a regular file"),
        fault("read-only folder: `gdds train --out`", ["train", "--config", yaml, "--out", str(file / "new")], "error",
              how="--out under a regular file"),
        fault("read-only folder: `gdds export`", ["export", str(root / "base" / "run"), str(file / "exported")],
              "error", how="OUT_DIR under a regular file"),
        fault("read-only, empty cache: `gdds sample` of a model folder",
              ["sample", str(root / "base" / "model"), "--num", "1", "--steps", "4"],
              env={"GDDS_CACHE_DIR": str(file / "cache")}, how="GDDS_CACHE_DIR under a regular file"),
        fault("stale store: prepare a corpus", ["prepare", yaml, f"data.corpus={stale}"], env=stale_env,
              before=lambda: shutil.copytree(root / "corpus", stale)),
        fault("then an edit keeping size and mtime, and prepare again", ["prepare", yaml, f"data.corpus={stale}"],
              env=stale_env, before=lambda: same_size_edit(stale / "w00.txt"),
              how="every 'e' of w00.txt replaced by '~', size and mtime (ns) restored",
              checks=[("a new store (two in the cache)", store_count(root / "cache-stale", 2))]),
        fault("file-size limit during a checkpoint", ["train", "--resume", str(limited), "train.max_steps=12"],
              "error", names=("checkpoint", "intact"), before=lambda: shutil.copytree(ref, limited, symlinks=True),
              limits={resource.RLIMIT_FSIZE: 800_000}, how="RLIMIT_FSIZE 800 kB: state.pt is larger",
              checks=[("nothing lost: last is still step 8 and verifies", last_is(limited, 8)),
                      ("no .tmp-* left", no_leftovers(limited))]),
        fault("then `--resume` without the limit", ["train", "--resume", str(limited), "train.max_steps=12"],
              checks=[("reached step 12", last_is(limited, 12))]),
        fault("file-size limit during an export", ["export", str(root / "base" / "run"), str(runs / "limited-model")],
              "error", limits={resource.RLIMIT_FSIZE: 100_000}, how="RLIMIT_FSIZE 100 kB",
              checks=[("no output and no staging left",
                       lambda _: sorted(p.name for p in runs.glob("*limited-model*")) or None)]),
    ]


def torn_line(run: Path) -> None:
    """Append a record cut mid-write to ``run``'s log.jsonl."""
    with open(run / "log.jsonl", "a") as fh:
        fh.write(TORN)


def user_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("my: precious settings\n")
    (folder / "data.json").write_text('{"mine": 1}')


def user_files(folder: Path) -> Check:
    def check(_: Result) -> str | None:
        names = sorted(p.name for p in folder.iterdir())
        if names != ["config.yaml", "data.json"] or (folder / "config.yaml").read_text() != "my: precious settings\n":
            return f"the folder now holds {names}; config.yaml: {(folder / 'config.yaml').read_text()[:40]!r}"
        return None
    return check


def same_files(folder: Path, original: Path) -> Check:
    return lambda _: contents(folder) != contents(original) and "its files changed"


def last_checkpoint(run: Path) -> Path:
    return (run / "checkpoints" / "last").resolve()


def last_is(run: Path, step: int) -> Check:
    """``last`` points at the checkpoint of ``step``, whose files match its manifest."""
    def check(_: Result) -> str | None:
        last = last_checkpoint(run)
        return f"last -> {last.name}" if last.name != f"step-{step:08d}" else checkpoint_problem(last)
    return check


def store_count(cache: Path, count: int) -> Check:
    def check(_: Result) -> str | None:
        stores = sorted(p.parent.name for p in cache.glob("stores/*/manifest.json"))
        return f"{len(stores)} stores: {stores}" if len(stores) != count else None
    return check


def same_size_edit(path: Path) -> None:
    stat = path.stat()
    path.write_bytes(path.read_bytes().replace(b"e", b"~"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def concurrent_cases(rp: Replay, ref: Path) -> list[Case]:
    """Two ``gdds train`` on one ``--out``: the first, started in the background, pauses inside step 4 (the
    checkpoint of step 3 on disk) while a second start and a ``--resume`` are tried, then is let go."""
    run, ready, release = rp.root / "f" / "two", rp.root / "f" / "two.ready", rp.root / "f" / "two.release"
    first = Case("faults", "two `gdds train` on one `--out` at once: the first",
                 ["train", "--config", str(rp.yaml), "--out", str(run), *KILL], expect="works", parallel=False,
                 phase="gdds", spec={"pause_step": 4, "ready": str(ready), "release": str(release)}, background=ready)
    busy = ("is being trained by pid",)
    return [
        first,
        Case("faults", "… while it runs, a second `gdds train --config` on it",
             ["train", "--config", str(rp.yaml), "--out", str(run), "seed=1", "train.lr=0.003"], names=busy,
             parallel=False),
        Case("faults", "… while it runs, a `gdds train --resume` of it", ["train", "--resume", str(run)], names=busy,
             parallel=False),
        Case("faults", first.input, first.args, expect="works", parallel=False, join=first, before=release.touch,
             how="paused inside step 4 while the two rows above ran",
             checks=[("nothing lost: each step once in log.jsonl", each_step_once(run, 8, EVALS)),
                     ("its config.yaml (seed 0)", lambda _: "seed: 0" not in (run / "config.yaml").read_text()
                      and "config.yaml is not the first run's"),
                     ("weights equal the uninterrupted run's", same_weights(run, ref))]),
    ]


def overwrite_case(rp: Replay, how: str, swap: str) -> Case:
    """``gdds export RUN MODEL --overwrite`` (``how="export"``) or ``save_pretrained(MODEL, overwrite=True)``
    killed at each step, with the folder swap ``swap`` (:func:`overwrite_phase`)."""
    shown = {"export": "gdds export $T/base/run MODEL --overwrite",
             "save_pretrained": "gdds.load('$T/base/model').save_pretrained(MODEL, overwrite=True)"}[how]
    label = {"export": "gdds export --overwrite", "save_pretrained": "save_pretrained(overwrite=True)"}[how]
    return Case("faults", f"`{label}` killed at each step ({swap})", expect="works",
                parallel=False, phase="overwrite", spec={"root": str(rp.root), "how": how, "swap": swap},
                display=f"{shown} (MODEL: the raw-weights model folder)",
                how="in one process the k-th rename/replace/unlink/rmdir/folder swap raises, k = 1, 2, ... until it "
                    "completes (as tests/engine/test_model_folder_integrity.py); after each, MODEL is loaded",
                checks=[("a whole, loadable old or new folder after every kill", overwrite_problems)])


def overwrite_problems(result: Result) -> str | None:
    lines = result.stdout.strip().splitlines()
    if not lines:
        return "no summary"
    summary = json.loads(lines[-1])
    return "; ".join(summary["problems"]) or None
