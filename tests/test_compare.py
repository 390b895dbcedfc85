"""`gdds compare`: every method trained on one footing and evaluated the same way; finished
runs are reused, not retrained."""
import json

import pytest

from gdds.cli import main
from gdds.engine.compare import ENTRIES, entry_config
from helpers import MICRO_TRAIN

SHARED = [*MICRO_TRAIN, "train.max_steps=6", "train.eval_every=6"]


def test_methods_share_everything_but_the_method():
    cfgs = {name: entry_config("tiny", name, SHARED).to_dict() for name in ENTRIES}
    for cfg in cfgs.values():
        for section in ("data", "model", "train"):
            assert cfg[section] == cfgs["ar"][section]
    assert {cfg["method"] for cfg in cfgs.values()} == {"gdds", "elbo", "jump", "campbell", "ar"}
    with pytest.raises(ValueError, match="unknown method"):
        entry_config("tiny", "bert")


def test_compare_cli_trains_evaluates_and_reuses(tmp_path, capsys):
    args = ["compare", "--out", str(tmp_path), "--base", "tiny", "--methods", "mdlm", "ar", "--steps", "4",
            "--sequences", "2", "--sample-steps", "2", "--num-samples", "2", "--judge", "ar", "--corpus",
            "shakespeare", *SHARED]
    assert main(args) == 0
    result = json.loads((tmp_path / "compare.json").read_text())
    assert result["overrides"][-1] == "data.corpus=shakespeare"
    assert list(result["rows"]) == ["mdlm", "ar"] and result["judge"] == str(tmp_path / "ar")
    mdlm, ar = (result["rows"][n]["report"] for n in ("mdlm", "ar"))
    assert mdlm["valid"]["bound"]["steps"] == 4 and "nll" in ar["valid"]
    assert "continuous_bound" not in ar["valid"]
    # Six training steps: MDLM is still near its uniform start, so its bounds (T-step and continuous)
    # lie above the unigram model's exact NLL, and the model is behind its no-training baseline.
    unigram = mdlm["valid"]["unigram"]["nats_per_token"]
    assert mdlm["valid"]["continuous_bound"]["nats_per_token"] > unigram
    assert mdlm["valid"]["paired_difference"]["nats_per_token"] > 0
    assert ar["valid"]["baseline"] == ar["valid"]["unigram"]
    assert all("generative_perplexity" in r["samples"][-1] for r in (mdlm, ar))
    table = (tmp_path / "compare.md").read_text()
    assert "| mdlm | method=elbo process.kernel=mask |" in table and "(exact)" in table
    assert (tmp_path / "compare.png").stat().st_size > 0
    capsys.readouterr()
    assert main(args) == 0  # a second call reuses the finished runs and their evaluations
    err = capsys.readouterr().err
    assert err.count("not retrained") == 2 and err.count("not repeated") == 2
    again = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert all(again[n]["report"] == result["rows"][n]["report"] for n in again)
    assert main([*args[:-len(SHARED)], "--num-samples", "3", *SHARED]) == 0  # other settings: evaluated again
    assert "not repeated" not in capsys.readouterr().err


def test_a_signal_stops_the_whole_comparison(tmp_path):
    """SIGTERM during the first method's training saves its checkpoint and ends the comparison
    (exit 130) instead of going on to the next method; the same command then resumes it."""
    import subprocess
    import sys

    from test_train import STOPPER

    args = ["compare", "--out", str(tmp_path), "--base", "tiny", "--methods", "mdlm", "ar", "--steps", "2",
            "--sequences", "2", "--sample-steps", "2", "--num-samples", "1",
            *[a for a in SHARED if not a.startswith("train.max_steps")], "train.max_steps=8"]
    proc = subprocess.run([sys.executable, "-c", STOPPER, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 130, proc.stderr
    assert "stopped at step 5" in proc.stderr and not (tmp_path / "ar").exists()
    assert main(args) == 0
    assert json.loads((tmp_path / "compare.json").read_text())["rows"]["mdlm"]["report"]["valid"]["bound"]


def test_an_override_after_zero_shot_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--out", str(tmp_path), "--base", "tiny", "--zero-shot", "kjv", "train.progress=false"])
    assert "looks like an override" in capsys.readouterr().err and not any(tmp_path.iterdir())
