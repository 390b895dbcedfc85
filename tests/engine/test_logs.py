"""Run logs (gdds.engine.logs): every configuration key has a description in --help; train.log's
sinks (jsonl, tensorboard, wandb offline) receive the labelled records; a plain line per record
when the progress bar is off."""
import json
import os
import sys
import types

import pytest

from gdds.cli import main
from gdds.engine.config import ConfigError, all_keys, descriptions, load_config
from gdds.engine.logs import LOGGERS, Jsonl, plain_line
from gdds.engine.train import train
from helpers import MICRO_TRAIN, local_corpus


def test_every_key_has_a_description_in_the_help(capsys):
    about = descriptions()
    sections = {"data", "process", "model", "train"}
    assert {k for k in all_keys() if k not in sections} <= set(about)
    assert all(len(text) > 10 for text in about.values())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert about["train.noise_groups"] in out and "(one of: wrap, pad)" in out
    assert "model.preset = 'tiny'  (one of: tiny, small, medium)" in out  # the names of gdds.models.PRESETS


@pytest.fixture
def corpus(tmp_path):
    return local_corpus(tmp_path / "corpus", 5, 2000)


def test_wandb_gets_the_labelled_records_offline(tmp_path, corpus, monkeypatch, capsys):
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config("tiny", [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=4", "train.log_every=2",
                               "train.log=[jsonl, wandb]"])
    train(cfg, tmp_path / "run")
    init = calls[0][1]
    assert init["project"] == "gdds" and init["config"]["train"]["log"] == ["jsonl", "wandb"]
    assert os.environ["WANDB_MODE"] == "offline" and calls[-1] == ("finish",)
    logged = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logged if "train/snapshot CE (not a likelihood)" in c[2]] == [2, 4]
    assert not (tmp_path / "run" / "tensorboard").exists()  # not asked for
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    out = capsys.readouterr().out  # train.progress=false: one plain line per record
    assert plain_line(lines[0], 4) in out and "step 4/4: loss" in out


def test_wandb_missing_and_unknown_sinks_are_config_errors(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails
    cfg = load_config("tiny", [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=1", "train.log=[wandb]"])
    with pytest.raises(ConfigError, match="pip install wandb"):
        train(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=f"train.log has .'mlflow'.; its entries are {', '.join(LOGGERS.names())}$"):
        load_config("tiny", ["train.log=[jsonl, mlflow]"])
    monkeypatch.setitem(LOGGERS._entries, "mlflow", Jsonl)  # a sink registered is a valid train.log entry
    assert load_config("tiny", ["train.log=[jsonl, mlflow]"]).train.log == ["jsonl", "mlflow"]
