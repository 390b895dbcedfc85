"""The rules of the reliability replay (benchmarks/replay.py) classify commands' results as their docstring
says, its process and open-watch machinery sees what it must, and the script (benchmarks/reliability.py and its
reliability_*.py modules) runs its child-process phases; the replay itself (minutes) is not run here."""
import os
import resource
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from replay import Case, OpenWatch, Process, Result, message, row, verdict

USAGE = "usage: gdds train [-h] (--config NAME_OR_YAML | --resume RUN_DIR)\n                  [--out RUN_DIR]\n"
BAR = "tokenising corpus/train: 100%|██████████| 4/4 [00:00<00:00, 573.52doc/s]\n"
SUFFIX = " (gdds --debug ... or GDDS_DEBUG=1 shows the traceback; report it if it looks like a bug in gdds)"


def test_the_message_is_the_error_line_after_usage_and_progress():
    err = f"{BAR}{USAGE}gdds train: error: train.lr must be greater than 0; got -1.0\n"
    assert message(err) == "gdds train: error: train.lr must be greater than 0; got -1.0"
    warned = f"{BAR}x.py:3: UserWarning: cannot write the kNN graph cache\n  files.write_cache(path)\n{BAR}"
    assert message(warned) == "x.py:3: UserWarning: cannot write the kNN graph cache"
    assert message(BAR) == BAR.strip() and message("") == ""


@pytest.mark.parametrize(("expect", "rc", "stderr", "names", "absent", "want"), [
    ("error", 2, USAGE + "gdds train: error: train.lr must be greater than 0; got -1.0", ["train.lr"], [], "clear"),
    ("error", 1, BAR + "gdds: error: $T/m/config.json holds a JSON list", ["CONFIG.JSON"], [], "clear"),
    ("error", 0, "", ["train.lr"], [], "accepted"),
    ("error", 1, "gdds: error: Invalid learning rate: -1.0", ["train.lr"], [], "unclear"),
    ("error", 1, "gdds: error: UnpicklingError: Weights only load failed" + SUFFIX, [], [], "unclear"),
    ("error", 1, "Traceback (most recent call last):\n  ...\nValueError: x", [], [], "unclear"),
    ("error", 1, "gdds: error: a\ngdds: error: b", [], [], "unclear"),
    ("error", -9, "", [], [], "unclear"),
    ("error", 1, "gdds: error: RUN is not a run folder", [], ["not a run folder"], "unclear"),
    ("works", 0, BAR, [], [], "works"),
    ("works", 1, "gdds: error: x", [], [], "failed"),
    ("killed", -9, "", [], [], "killed"),
    ("killed", 0, "", [], [], "failed"),
])
def test_verdicts(expect, rc, stderr, names, absent, want):
    got, why = verdict(expect, rc, stderr, names, absent)
    assert got == want, why
    assert bool(why) == (want in ("accepted", "unclear", "failed"))


def test_a_row_is_ok_only_with_a_good_verdict_and_every_check(tmp_path):
    case = Case("inputs", "x", ["train", "--config", str(tmp_path / "a.yaml")], names=("train.lr",))
    result = Result(2, "", "gdds train: error: train.lr must be greater than 0; got -1.0", 2.5, 300.0)
    assert row(case, result, tmp_path, [("holds", lambda r: None)])["ok"]
    failing = row(case, result, tmp_path, [("holds", lambda r: None), ("breaks", lambda r: 1 / 0)])
    assert not failing["ok"] and failing["checks"][1]["detail"].startswith("check failed: ZeroDivisionError")
    assert failing["command"] == "gdds train --config $T/a.yaml" and failing["verdict"] == "clear"
    assert not row(case, Result(0, "", "", 1.0, 300.0), tmp_path, [])["ok"]


def test_a_process_reports_its_status_output_peak_and_limits(tmp_path):
    code = "import sys; sys.stderr.write('gdds: error: x\\n'); open(sys.argv[1], 'wb').write(b'y' * 200_000)"
    done = Process([sys.executable, "-c", code, str(tmp_path / "big")], dict(os.environ),
                   limits={resource.RLIMIT_FSIZE: 100_000}).wait()
    assert done.rc == 1 and "File too large" in done.stderr and done.peak_rss_mib > 1 and done.seconds > 0
    slow = Process([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ), timeout=0.5).wait()
    assert slow.rc == -9 and slow.seconds < 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_the_open_watch_sees_an_open_by_another_process(tmp_path):
    watched, other = tmp_path / "secret.txt", tmp_path / "other.txt"
    watched.write_text("private")
    other.write_text("public")
    for path, seen in ((other, []), (watched, [str(watched)])):
        watch = OpenWatch([watched])
        Process(["cat", str(path)], dict(os.environ)).wait()
        assert watch.opened() == seen


def test_the_script_runs_a_phase_in_a_child_process():
    """The rows re-run ``benchmarks/reliability.py --phase``: its modules import together, and a Python call's
    exception ends in one line as the CLI shows it."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "reliability.py"
    done = Process(Case("inputs", "x", phase="python", spec="print(6 * 7)").argv(script), dict(os.environ)).wait()
    assert done.rc == 0 and done.stdout == "42\n", done.stderr
    failed = Process(Case("inputs", "x", phase="python", spec="1 / 0").argv(script), dict(os.environ)).wait()
    assert failed.rc == 1 and message(failed.stderr) == (
        "gdds: error: ZeroDivisionError: division by zero (report it if it looks like a bug in gdds)"), failed.stderr
