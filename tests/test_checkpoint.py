"""Checkpoint folders: atomic, verified, `last` always intact."""
import json
import os

import pytest
import torch

from gdds.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_module,
    load_tensors,
    module_tensors,
    save_checkpoint,
    save_tensors,
    verify_checkpoint,
)


def writers(value: float):
    return {
        "model.safetensors": lambda p: save_tensors(p, {"w": torch.full((3,), value)}),
        "run.json": lambda p: p.write_text(json.dumps({"value": value})),
    }


def test_save_verify_and_last(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, writers(float(step)), keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000020", "step-00000030"]
    last = latest_checkpoint(tmp_path)
    assert last.name == "step-00000030"
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()
    assert load_tensors(last / "model.safetensors")["w"][0].item() == 30.0
    assert verify_checkpoint(last)["step"] == 30


def test_truncated_or_missing_files_are_detected(tmp_path):
    folder = save_checkpoint(tmp_path, 5, writers(1.0))
    target = folder / "model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[:-4])
    with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
        latest_checkpoint(tmp_path)
    target.unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        verify_checkpoint(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        verify_checkpoint(folder)


def test_nothing_to_resume(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints/ folder"):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        latest_checkpoint(tmp_path)


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, writers(1.0))

    def boom(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {**writers(2.0), "state.pt": boom})
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    # A stale temporary folder (a run killed mid-checkpoint) is ignored and removed on resume.
    stale = tmp_path / "checkpoints" / ".tmp-step-00000002-dead"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "step-00000001" and stale.exists()
    assert latest_checkpoint(tmp_path, clean=True).name == "step-00000001" and not stale.exists()
    assert os.path.islink(tmp_path / "checkpoints" / "last")


def test_tied_weights_are_stored_once_and_reloaded():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    a, b = Tied(), Tied()
    tensors = module_tensors(a)
    assert list(tensors) == ["embed.weight"]
    load_module(b, tensors, "test weights")
    assert torch.equal(b.head.weight, a.embed.weight) and b.head.weight is b.embed.weight
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_module(b, {"embed.weight": torch.zeros(4, 3)}, "test weights")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_module(b, {**tensors, "extra": torch.zeros(1)}, "test weights")
