"""Runs saved before a default changed load as the models they were trained as (gdds.engine.legacy), and a run
that does not rebuild is refused with what differs. Former defaults: a
semantic run of the days when b = 0.2 was the default and `forward` meant the one-jump surrogate."""
import hashlib
import json

import pytest
import yaml

from gdds.engine.build import load_run
from gdds.engine.checkpoint import CheckpointError
from gdds.engine.legacy import as_saved, upgraded
from gdds.sampling import LikelihoodWeighted
from helpers import micro_run

SEMANTIC = ["process.kernel=semantic", "process.embeddings=cooccurrence", "process.embedding_dim=8",
            "train.max_steps=1"]


def rewrite(folder, name, text):
    """Replace a checkpoint file and its manifest entry (as the older version had written it)."""
    (folder / name).write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_a_run_saved_with_former_defaults_loads_as_trained(tmp_path):
    run = micro_run(tmp_path, *SEMANTIC, "process.kernel_args={b: 0.2}", "model.parametrization=forward-surrogate")
    folder = (run / "checkpoints" / "last").resolve()
    trained = load_run(run, device="cpu")
    # What the former version wrote: no b (its default was 0.2), "forward" for the surrogate.
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["process"]["kernel_args"] = {}
    config["model"]["parametrization"] = "forward"
    rewrite(folder, "config.yaml", yaml.safe_dump(config))
    identity = json.loads((folder / "run.json").read_text())
    identity["process"]["kernel_args"] = {}
    identity["parametrization"] = "forward"
    rewrite(folder, "run.json", json.dumps(identity))
    old = load_run(run, device="cpu")
    assert old.method.parametrization == "forward-surrogate" and old.run.process.kernel.knn.b == 0.2
    assert not isinstance(old.denoiser(), LikelihoodWeighted)
    assert repr(old.run.process.kernel) == repr(trained.run.process.kernel)
    assert upgraded(identity)["process"]["kernel_args"] == {"b": 0.2}
    # A run of today: the exact forward parametrization is marked, b = 0 is the default; nothing to upgrade.
    today = micro_run(tmp_path / "today", *SEMANTIC)
    loaded = load_run(today, device="cpu")
    saved = json.loads((today / "checkpoints" / "last" / "run.json").read_text())
    assert saved["forward_likelihood"] == "exact" and upgraded(saved) == saved
    assert loaded.run.process.kernel.knn.b == 0.0 and isinstance(loaded.denoiser(), LikelihoodWeighted)
    assert as_saved(loaded.cfg, saved).to_dict() == loaded.cfg.to_dict()


def test_a_run_that_does_not_rebuild_says_which_fields_differ(tmp_path):
    """A checkpoint whose embeddings (or network) this installation does not rebuild is refused with the
    differing fields, stored and rebuilt, not with the whole identity."""
    run = micro_run(tmp_path, *SEMANTIC)
    folder = (run / "checkpoints" / "last").resolve()
    identity = json.loads((folder / "run.json").read_text())
    rebuilt = identity["process"]["embeddings_sha256"]
    identity["process"]["embeddings_sha256"] = "0" * 64
    identity["model"]["layers"] += 1
    rewrite(folder, "run.json", json.dumps(identity))
    with pytest.raises(CheckpointError) as refused:
        load_run(run, device="cpu")
    message = str(refused.value)
    assert f"process.embeddings_sha256: stored '{'0' * 64}', rebuilt '{rebuilt}'" in message
    assert f"model.layers: stored {identity['model']['layers']}, rebuilt {identity['model']['layers'] - 1}" in message
    assert "embeddings are not the ones the run was trained on" in message
    assert "tokenizer" not in message  # only what differs
    identity["process"]["embeddings_sha256"] = rebuilt
    identity["model"]["layers"] -= 1
    rewrite(folder, "run.json", json.dumps(identity))
    assert load_run(run, device="cpu").run.differences(identity) == []
