"""Training end to end: the loss falls, resume is bitwise exact (also after SIGKILL
mid-checkpoint), DDP matches one process, bad checkpoints give clear errors."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gdds.cli import main
from gdds.data import shakespeare_documents
from gdds.engine.checkpoint import CheckpointError, load_tensors
from gdds.engine.checkpoint import load_torch as ck_load
from gdds.engine.config import ConfigError, load_config
from gdds.engine.resume import resume_config
from gdds.engine.train import train
from helpers import MICRO_TRAIN

MICRO = MICRO_TRAIN


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small local corpus: the first 4,000 characters of 12 works."""
    folder = tmp_path_factory.mktemp("corpus")
    for i, doc in enumerate(shakespeare_documents()[:12]):
        (folder / f"work{i:02d}.txt").write_text(doc[:4000])
    return str(folder)


def micro(corpus, *extra):
    return load_config("tiny", [*MICRO, f"data.corpus={corpus}", *extra])


def weights(run_dir: Path, name="model.safetensors"):
    return load_tensors(Path(run_dir) / "checkpoints" / "last" / name)


def assert_same(a: dict, b: dict, exact=True, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


def test_loss_falls_on_the_embedded_corpus(tmp_path):
    cfg = load_config("tiny", [*MICRO, "data.corpus=shakespeare", "train.max_steps=60", "train.eval_every=60",
                               "train.eval_batches=4"])
    result = train(cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "train"]
    assert all(r["metric"] == "snapshot CE (not a likelihood)" for r in log)  # every record says what it is
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 3.9  # ~log(vocab) at initialisation
    assert last < first - 0.6
    assert result.valid.label == "snapshot CE (not a likelihood)"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))  # tensorboard is a dev dependency
    assert result.valid.value < first - 0.4


def test_resume_is_bitwise_identical(tmp_path, corpus):
    # A constant LR after warmup: the cosine schedule is defined by train.max_steps, so a run
    # planned for 6 steps and extended to 12 follows a different schedule (the SIGKILL test
    # below covers cosine: the killed run was planned for its full length).
    extra = ["model.dropout=0.1", "train.grad_accum=2", "train.ckpt_every=3", "train.lr_schedule=constant"]
    straight = micro(corpus, "train.max_steps=12", *extra)
    train(straight, tmp_path / "straight")
    train(micro(corpus, "train.max_steps=6", *extra), tmp_path / "split")
    assert main(["train", "--resume", str(tmp_path / "split"), "train.max_steps=12"]) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same(weights(tmp_path / "straight", name), weights(tmp_path / "split", name))
    a = torch.load(tmp_path / "straight/checkpoints/last/state.pt", weights_only=True)
    b = torch.load(tmp_path / "split/checkpoints/last/state.pt", weights_only=True)
    assert a["step"] == b["step"] == 12 and torch.equal(a["noise_rng"], b["noise_rng"])


KILLER = """
import os, signal, sys
import gdds.engine.checkpoint as ck
calls = {"n": 0}
original = ck.save_torch
def save_then_die(path, obj):
    calls["n"] += 1
    if calls["n"] == 2:  # second checkpoint: die after some of its files are written
        os.kill(os.getpid(), signal.SIGKILL)
    original(path, obj)
ck.save_torch = save_then_die
from gdds.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_checkpoint_resumes_from_previous(tmp_path, corpus):
    args = [*MICRO, f"data.corpus={corpus}", "train.ckpt_every=3", "train.max_steps=9"]
    proc = subprocess.run([sys.executable, "-c", KILLER, "train", "--config", "tiny", "--out",
                           str(tmp_path / "killed"), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    root = tmp_path / "killed" / "checkpoints"
    assert os.readlink(root / "last") == "step-00000003"
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-step-00000006")]
    assert main(["train", "--resume", str(tmp_path / "killed")]) == 0
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    train(load_config("tiny", args), tmp_path / "straight")
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "killed"))


STOPPER = """
import os, signal, sys
from gdds.engine.train import Trainer
original = Trainer.train_step
def step_then_signal(self):
    out = original(self)
    if self.step == 5:
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. a cluster preempting the job
    return out
Trainer.train_step = step_then_signal
from gdds.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_cleanly_and_resume_matches_cosine_run(tmp_path, corpus):
    """A run planned for 10 steps (cosine LR) stopped by SIGTERM after step 5 saves a
    checkpoint there; resuming it ends bitwise equal to the uninterrupted run."""
    args = [*MICRO, f"data.corpus={corpus}", "train.max_steps=10", "train.ckpt_every=100", "model.dropout=0.1"]
    proc = subprocess.run([sys.executable, "-c", STOPPER, "train", "--config", "tiny", "--out",
                           str(tmp_path / "stopped"), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 130, proc.stderr
    assert "stopped by a signal at step 5" in proc.stdout
    assert os.readlink(tmp_path / "stopped" / "checkpoints" / "last") == "step-00000005"
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    train(load_config("tiny", args), tmp_path / "straight")
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same(weights(tmp_path / "straight", name), weights(tmp_path / "stopped", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tmp_path, corpus):
    """Two gloo processes with gradient accumulation (2 micro-batches per step) give the weights of
    one process (atol 1e-5): the same global batches, the same noise, the same mean loss."""
    args = [*MICRO, f"data.corpus={corpus}", "train.max_steps=6", "train.ckpt_every=6", "train.grad_accum=2"]
    _torchrun(["--config", "tiny", "--out", str(tmp_path / "ddp"), *args])
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert {r["processes"] for r in log if r["kind"] == "train"} == {2}
    train(load_config("tiny", args), tmp_path / "single")
    # Same noise, same global batch: equal up to float reduction order.
    assert_same(weights(tmp_path / "single"), weights(tmp_path / "ddp"), exact=False, atol=1e-5)


def _torchrun(train_args: list[str], nproc: int = 2) -> None:
    """``gdds train`` in ``nproc`` gloo processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "gdds", "train", *train_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fsdp_matches_one_process_and_resumes_on_another_process_count(tmp_path, corpus):
    """FSDP2 over two gloo processes with gradient accumulation, each process noising only its
    noise group, gives the weights of one process (atol 1e-5); its sharded optimizer state
    (torch.distributed.checkpoint) resumes in one process and continues as an uninterrupted
    one-process run (constant LR, so that stopping at step 3 changes no schedule)."""
    args = [*MICRO, f"data.corpus={corpus}", "train.ckpt_every=3", "train.grad_accum=2", "train.strategy=fsdp",
            "train.lr_schedule=constant", "train.keep_checkpoints=4", "train.noise_groups=2"]
    _torchrun(["--config", "tiny", "--out", str(tmp_path / "fsdp"), *args, "train.max_steps=6"])
    folder = tmp_path / "fsdp" / "checkpoints" / "last"
    assert (folder / "optimizer" / ".metadata").is_file() and ck_load(folder / "state.pt")["optimizer"] is None
    train(load_config("tiny", [*args, "train.max_steps=6"]), tmp_path / "single")
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same(weights(tmp_path / "single", name), weights(tmp_path / "fsdp", name), exact=False, atol=1e-5)
    _torchrun(["--config", "tiny", "--out", str(tmp_path / "grown"), *args, "train.max_steps=3"])
    train(resume_config(tmp_path / "grown", ["train.max_steps=6"]), tmp_path / "grown", resume=True)
    assert_same(weights(tmp_path / "single"), weights(tmp_path / "grown"), exact=False, atol=1e-5)


def test_the_commands_start_without_fsdp_modules():
    """FSDP2's modules (about 0.4 s to import, public only from torch 2.6) are imported by the code that
    shards alone, so ``gdds`` and the training module start without them (torch's own optimizers may load
    them later, inside a run)."""
    code = ("import sys, gdds.cli, gdds.engine.train, gdds.engine.steps, gdds.engine.parallel; "
            "print(sorted(m for m in sys.modules if m.startswith(('torch.distributed.fsdp', "
            "'torch.distributed.tensor', 'torch.distributed.checkpoint'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_run_keeps_the_powers_of_its_most_frequent_tokens(corpus):
    """The process of a run spends its power budget on the training split's most frequent tokens."""
    from gdds.engine.build import build_run
    run = build_run(micro(corpus), torch.device("cpu"), progress=False)
    counts = run.data.unigram_counts()
    assert counts.shape == (run.process.m,) and int(counts.sum()) > 0
    assert torch.equal(run.process.power_counts, counts.double())


def test_fsdp_without_fsdp2_is_refused_by_key(monkeypatch):
    """On a torch older than 2.6 (no public ``fully_shard``) ``train.strategy=fsdp`` is a ConfigError
    that names the key and the fix, not an ImportError from inside the run."""
    import types

    from gdds.engine.distributed import DistInfo
    from gdds.engine.parallel import STRATEGIES
    monkeypatch.setitem(sys.modules, "torch.distributed.fsdp", types.ModuleType("torch.distributed.fsdp"))
    with pytest.raises(ConfigError, match=r"train\.strategy=fsdp needs .*torch>=2\.6.*train\.strategy=ddp"):
        STRATEGIES.get("fsdp")(DistInfo(), bf16=False)


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_bad_checkpoints_give_clear_errors_and_keep_good_state(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    cfg = micro(corpus, "train.max_steps=3", "train.ckpt_every=3")
    train(cfg, run)
    digest = _tree_digest(run / "checkpoints")
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "tiny", "--out", str(run), *MICRO, f"data.corpus={corpus}"])
    assert exit_info.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert _tree_digest(run / "checkpoints") == digest
    with pytest.raises(SystemExit):
        main(["train", "--resume", str(run), "train.lr=0.1"])
    assert "train.lr cannot change when resuming" in capsys.readouterr().err
    other = micro(corpus, "train.max_steps=6", "model.width=96", "train.log_every=3")
    with pytest.raises(ConfigError, match="trained with other settings") as refused:  # before any compute
        train(other, run, resume=True)
    assert "(model.width: the run has 64, asked for 96);" in str(refused.value)  # log_every may change
    from gdds.engine.build import build_run
    from gdds.engine.distributed import DistInfo
    from gdds.engine.train import Trainer
    from helpers import DEVICE

    trainer = Trainer(other, run, build_run(other, DEVICE, progress=False), DistInfo(), DEVICE)
    with pytest.raises(CheckpointError, match=r"different run set-up: model.width: stored \d+, rebuilt 96$"):
        trainer.load(run / "checkpoints" / "last")
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert "is not a run folder" in capsys.readouterr().err
    target = run / "checkpoints" / "last" / "model.safetensors"
    target.write_bytes(target.read_bytes()[:-10])
    assert main(["train", "--resume", str(run), "train.max_steps=6"]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err


def test_activation_checkpointing_and_the_gpu_settings_leave_the_step_unchanged(tmp_path, corpus):
    """train.checkpointing recomputes activations (every block of the network), train.compile is
    off on the CPU unless asked for: a step gives the same loss and gradient norm either way."""
    from gdds.engine.build import build_run
    from gdds.engine.distributed import DistInfo
    from gdds.engine.train import Trainer, compiled
    from gdds.models.layers import Trunk
    from helpers import DEVICE

    records = []
    for checkpointing in ("false", "true"):
        cfg = micro(corpus, f"train.checkpointing={checkpointing}", "train.max_steps=1")
        trainer = Trainer(cfg, tmp_path / checkpointing, build_run(cfg, DEVICE, progress=False), DistInfo(), DEVICE)
        assert {m.checkpointing for m in trainer.model.modules() if isinstance(m, Trunk)} == {checkpointing == "true"}
        records.append(trainer.train_step())
    assert records[0]["loss"] == pytest.approx(records[1]["loss"], rel=1e-6)
    assert records[0]["grad_norm"] == pytest.approx(records[1]["grad_norm"], rel=1e-4)
    assert compiled(None, torch.device("cuda")) and not compiled(None, torch.device("cpu"))
    assert compiled(True, torch.device("cpu")) and not compiled(False, torch.device("cuda"))


@pytest.mark.parametrize("method", [[], ["method=campbell"]], ids=["gdds", "campbell"])
def test_noise_groups_make_each_process_draw_only_its_part(tmp_path, corpus, method):
    """With train.noise_groups, each group of a micro-batch draws from its own seed, so the loss
    of the whole micro-batch in one process equals the sum of what two processes compute each on
    their own groups (checked by giving one trainer the place of rank 0 and then rank 1 of 2),
    also for path batches of different widths (the Campbell method pads them)."""
    from gdds.engine.build import build_run
    from gdds.engine.distributed import DistInfo
    from gdds.engine.train import Trainer
    from helpers import DEVICE

    cfg = micro(corpus, "train.noise_groups=4", "process.kernel=mask", *method)
    trainer = Trainer(cfg, tmp_path, build_run(cfg, DEVICE, progress=False), DistInfo(), DEVICE)
    rows = np.arange(8)
    with torch.no_grad():
        whole, count = trainer._micro_loss(trainer.run.train, rows, trainer.noise, micro=0)
        parts = []
        for rank in (0, 1):
            trainer.dist = DistInfo(rank=rank, world=2)
            parts.append(trainer._micro_loss(trainer.run.train, rows, trainer.noise, micro=0))
    assert sum(n for _, n in parts) == count
    assert float(sum(s for s, _ in parts)) == pytest.approx(float(whole), rel=1e-5)
    with pytest.raises(ConfigError, match="noise_groups=3 must divide the micro-batch"):
        Trainer(micro(corpus, "train.noise_groups=3"), tmp_path, trainer.run, DistInfo(), DEVICE)
