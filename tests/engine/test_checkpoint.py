"""Checkpoint folders: atomic, verified, `last` always intact."""
import json
import os
import resource
from pathlib import Path

import pytest
import torch

from gdds.engine import checkpoint as ck
from gdds.engine.checkpoint import (
    CheckpointError,
    clean,
    latest_checkpoint,
    list_checkpoints,
    load_module,
    load_tensors,
    module_tensors,
    save_checkpoint,
    save_tensors,
    save_torch,
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
    (tmp_path / "data.json").write_text("{}")  # a run stopped before its first checkpoint
    with pytest.raises(CheckpointError, match=r"a run with no checkpoint yet .* `gdds train --config CONFIG --out"):
        latest_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(CheckpointError, match=f"no checkpoint yet .* --config {tmp_path}/config.yaml --out"):
        latest_checkpoint(tmp_path)


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 1, writers(1.0))

    def boom(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*step-00000002 \(No space left on "
                       r"device\); the previous checkpoint step-00000001 is intact: free disk space .*`gdds train "
                       "--resume"):
        save_checkpoint(tmp_path, 2, {**writers(2.0), "state.pt": boom})
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    # Leftovers of a killed run (a half-written checkpoint, a half-deleted one, a link) are ignored by
    # readers and removed by the run's next start.
    root = tmp_path / "checkpoints"
    for name in (".tmp-step-00000002-dead", ".trash-step-00000000-dead"):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"half")
    os.symlink("step-00000001", root / ".last-dead")
    assert latest_checkpoint(tmp_path).name == "step-00000001" and len(list(root.iterdir())) == 5
    clean(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["last", "step-00000001"]
    assert latest_checkpoint(tmp_path).name == "step-00000001"


def test_a_file_size_limit_during_a_checkpoint_is_a_clear_error(tmp_path):
    """torch.save reports a failed write as a RuntimeError; the checkpoint turns it into a
    CheckpointError that names the checkpoint, keeps the previous one and says what to do."""
    save_checkpoint(tmp_path, 1, writers(1.0))
    big = {**writers(2.0), "state.pt": lambda p: save_torch(p, {"optimizer": torch.zeros(100_000)})}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(CheckpointError, match=r"step-00000002 \(File too large\); the previous checkpoint "
                           "step-00000001 is intact"):
            save_checkpoint(tmp_path, 2, big)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last", "step-00000001"]
    assert latest_checkpoint(tmp_path).name == "step-00000001"


def _killed_midway(path, *args, **kwargs):
    """``shutil.rmtree`` of a process killed while it deletes ``path``: some of it is gone."""
    next(p for p in Path(path).iterdir() if p.is_file()).unlink()
    raise KeyboardInterrupt  # stands for SIGKILL: nothing after this runs


def _assert_every_step_folder_whole(run_dir):
    for folder in list_checkpoints(run_dir):
        verify_checkpoint(folder)


def test_pruning_renames_a_checkpoint_before_deleting_it(tmp_path, monkeypatch):
    """A run killed while it deletes an old checkpoint leaves a .trash-* folder, never a half-deleted
    step-* folder that someone could pick; the run's next start removes it."""
    for step in (1, 2):
        save_checkpoint(tmp_path, step, writers(float(step)), keep=2)
    monkeypatch.setattr(ck.shutil, "rmtree", _killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, writers(3.0), keep=2)
    monkeypatch.undo()
    _assert_every_step_folder_whole(tmp_path)
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert [p.name for p in root.glob(".trash-step-00000001-*")]
    clean(tmp_path)
    assert not list(root.glob(".trash-*"))


def test_a_checkpoint_of_the_same_step_is_replaced_whole(tmp_path, monkeypatch):
    """A run killed after renaming step-N into place but before moving ``last`` resumes from the one
    before and writes step-N again: the old folder is set aside, never deleted in place, so a kill
    during that delete leaves every step-* folder whole and ``last`` on the new one."""
    save_checkpoint(tmp_path, 1, writers(1.0))
    save_checkpoint(tmp_path, 2, writers(2.0))
    (tmp_path / "checkpoints" / "last").unlink()
    os.symlink("step-00000001", tmp_path / "checkpoints" / "last")
    monkeypatch.setattr(ck.shutil, "rmtree", _killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, writers(5.0))
    monkeypatch.undo()
    _assert_every_step_folder_whole(tmp_path)
    assert load_tensors(latest_checkpoint(tmp_path) / "model.safetensors")["w"][0].item() == 5.0


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
