"""Methods are checked against their kernels (the contract every method passes is in
tests/objectives/test_method_contract.py)."""
import json

import pytest

from gdds.engine.config import ConfigError, load_config
from gdds.engine.train import train
from helpers import MICRO_TRAIN


def test_elbo_needs_a_column_constant_kernel(tmp_path):
    cfg = load_config("tiny", [*MICRO_TRAIN, "method=elbo", "process.kernel=semantic",
                               "process.embeddings=cooccurrence", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="column-constant"):
        train(cfg, tmp_path)


def test_jump_needs_a_closed_form_marginal(tmp_path):
    cfg = load_config("tiny", [*MICRO_TRAIN, "method=jump", "process.kernel=semantic",
                               "process.embeddings=cooccurrence", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="method campbell"):
        train(cfg, tmp_path)


def test_jump_state_models_generate_only_for_the_mask(tmp_path, capsys):
    """A Campbell run on a uniform process trains (any kernel) but refuses to be sampled or
    bounded with a clear error; on the mask process it is evaluated like any denoiser."""
    from gdds.cli import main

    short = [*MICRO_TRAIN, "train.max_steps=2", "train.eval_every=2"]
    train(load_config("tiny", [*short, "method=campbell", "process.kernel=uniform"]), tmp_path / "u")
    assert main(["eval", str(tmp_path / "u"), "--steps", "2", "--sequences", "2"]) == 1
    assert "exit rates" in capsys.readouterr().err
    train(load_config("tiny", [*short, "method=campbell", "process.kernel=mask"]), tmp_path / "m")
    assert main(["eval", str(tmp_path / "m"), "--steps", "4", "--sequences", "2", "--sample-steps", "2",
                 "--num-samples", "1"]) == 0
    report = json.loads((tmp_path / "m" / "eval" / "eval.json").read_text())
    # Two training steps leave the model near its uniform start: worse than the baseline
    # that needs no training (about log 100 against the unigram entropy of text).
    diff = report["valid"]["paired_difference"]
    assert diff["nats_per_token"] > 0.3
