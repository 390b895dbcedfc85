"""A run folder has one owner and keeps only a run's own files (gdds.engine.run_folder): a second
`gdds train` on a folder being trained is refused before any compute, a killed run's lock does not
block, `--out` never writes into a folder of other files or a model folder, and `log.jsonl` holds
each step once after kills (gdds.engine.logs), its torn last line skipped by readers."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdds.cli import main
from gdds.engine import train as train_module
from gdds.engine.checkpoint import CheckpointError
from gdds.engine.config import ConfigError, load_config
from gdds.engine.evaluation.compare import _throughput
from gdds.engine.logs import Jsonl, read_log
from gdds.engine.run_folder import RunBusy
from gdds.engine.train import train
from gdds.files import FileLock
from helpers import MICRO_TRAIN, local_corpus

# `gdds train ARGS...` that stops inside step argv[2] (before its records and checkpoint): it writes
# the file argv[1] and waits there, or kills itself when argv[1] is "kill".
PAUSED = """
import os, signal, sys, time
from pathlib import Path
from gdds.engine.train import Trainer
original = Trainer.train_step
def step(self):
    if self.step + 1 == int(sys.argv[2]):
        if sys.argv[1] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        Path(sys.argv[1]).write_text("in the step")
        time.sleep(600)
    return original(self)
Trainer.train_step = step
from gdds.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    corpus = local_corpus(tmp_path_factory.mktemp("corpus"), 5, 2000)
    return [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=8", "train.eval_every=2"]


def _paused(marker: str, step: int, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PAUSED, marker, str(step), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _steps(run: Path, kind: str = "train") -> list[int]:
    return [r["step"] for r in read_log(run) if r["kind"] == kind]


def _no_compute(*args, **kwargs):
    raise AssertionError("a refused run must not build its data and model")


def test_a_second_process_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path, args, monkeypatch, capsys):
    """A run being trained (paused inside step 5; its checkpoint is step 3) refuses a second
    `gdds train --config ... --out` and a `--resume` at once, naming its pid and host; after a SIGKILL,
    and a torn line appended to its log, `--resume` continues and the log holds each step once."""
    run, ready = tmp_path / "run", tmp_path / "ready"
    first = _paused(str(ready), 5, ["train", "--config", "tiny", "--out", str(run), *args, "train.ckpt_every=3"])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        monkeypatch.setattr(train_module, "build_run", _no_compute)
        busy = f"{run} is being trained by pid {first.pid} on {socket.gethostname()}"
        assert main(["train", "--config", "tiny", "--out", str(run), *args]) == 1
        assert main(["train", "--resume", str(run)]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 2 and all(line.startswith(f"gdds: error: {busy}; wait for it") for line in err), err
        with pytest.raises(RunBusy, match=busy):
            train(load_config("tiny", args), run)
    finally:
        first.kill()
        first.wait()
    monkeypatch.undo()
    assert first.returncode == -signal.SIGKILL and _steps(run) == [1, 2, 3, 4]
    with open(run / "log.jsonl", "a") as fh:
        fh.write('{"kind": "train", "loss": 1.2, "ste')  # a record torn by a kill mid-write
    assert _steps(run) == [1, 2, 3, 4]  # readers skip the torn line
    assert main(["train", "--resume", str(run)]) == 0
    lines = (run / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if '"train"' in line] == list(range(1, 9))
    assert _steps(run, "eval") == [2, 4, 6, 8]
    assert _throughput(run) > 0


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_its_config(tmp_path, args, monkeypatch, capsys):
    """`--resume` on it says to start again with --config; that start is accepted, removes what the
    killed run left (a half-written checkpoint, a temporary file) and starts a fresh log."""
    run = tmp_path / "run"
    killed = _paused("kill", 4, ["train", "--config", "tiny", "--out", str(run), *args, "train.ckpt_every=6"])
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL and _steps(run) == [1, 2, 3]
    stale = run / "checkpoints" / ".tmp-step-00000006-dead"  # a kill inside the first checkpoint
    stale.mkdir(parents=True)
    (stale / "state.pt").write_bytes(b"half")
    (run / ".data.json.0123456789ab.tmp").write_text("{")
    fix = f"--config {run}/config.yaml --out {run}"
    assert main(["train", "--resume", str(run)]) == 1
    assert f"{run} is a run with no checkpoint yet" in capsys.readouterr().err
    with monkeypatch.context() as patch, pytest.raises(CheckpointError, match="no checkpoint yet"):
        patch.setattr(train_module, "build_run", _no_compute)  # the library call stops before any compute
        train(load_config("tiny", args), run, resume=True)
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint yet" in err and fix in err and "to resume from" not in err
    assert main(["train", *fix.split(), "train.ckpt_every=8"]) == 0
    assert _steps(run) == list(range(1, 9)) and _steps(run, "eval") == [2, 4, 6, 8]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last", "step-00000008"]
    assert not list(run.glob(".*.tmp"))


def test_out_never_writes_into_a_folder_that_is_not_a_run(tmp_path, args, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_run", _no_compute)
    cfg = load_config("tiny", args)
    mine = tmp_path / "userdir"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: precious settings\n")
    (mine / "data.json").write_text('{"mine": 1}')
    with pytest.raises(ConfigError, match=f"--out {mine} is not empty and is not a gdds run "
                       r"\(it holds config.yaml, data.json\); choose a new or empty --out folder"):
        train(cfg, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "data.json"]  # no lock left either
    assert (mine / "config.yaml").read_text() == "my: precious settings\n"
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (model / name).write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", "tiny", "--out", str(model), *args])
    assert exit_info.value.code == 2
    assert f"--out {model} is a model folder (config.json + model.safetensors)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train(cfg, tmp_path / "file")
    (mine / "config.yaml").unlink()
    (mine / "data.json").unlink()
    (mine / ".lock").write_text("host 1")  # the lock alone: a run stopped before it wrote anything
    with pytest.raises(AssertionError, match="must not build"):  # accepted: it goes on to build the run
        train(cfg, mine)


def test_the_log_drops_what_a_resume_redoes_and_a_torn_line(tmp_path, args):
    cfg = load_config("tiny", args)
    records = [{"kind": kind, "step": s, "tokens_per_s": 10.0 * s} for s in range(1, 7) for kind in ("train", "eval")]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"kind": "train", "loss": 1.2, "ste'
    (tmp_path / "log.jsonl").write_text(text)
    assert read_log(tmp_path) == records and _throughput(tmp_path) == 35.0  # the torn line is skipped
    log = Jsonl(tmp_path, cfg.to_dict(), 3)  # resuming from the checkpoint of step 3
    log.write({"kind": "train", "step": 4})
    log.close()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 1, 2, 2, 3, 3, 4]
    Jsonl(tmp_path, cfg.to_dict(), 0).close()  # a fresh start in the folder of a run stopped before its checkpoint
    assert (tmp_path / "log.jsonl").read_text() == ""
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_every_process_of_a_multi_process_run_stops_on_a_busy_folder(tmp_path, args):
    """Under torchrun only rank 0 takes the lock; its refusal reaches the other ranks, which stop too
    instead of waiting for it."""
    run = tmp_path / "run"
    run.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FileLock(run / ".lock"):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "gdds", "train", "--config",
                               "tiny", "--out", str(run), *args], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert done.stderr.count(f"{run} is being trained by pid {os.getpid()}") == 2, done.stderr[-3000:]
