"""Replay of the bad inputs and faults of the attack on gdds (issue 24), each with a verdict.

The attack's report (``reliability-inputs.md`` in the project's shared folder: its inputs table, the faults of
its Part 3 and the crafted inputs of its Part 4) lists what it tried, with the command and what gdds did.
Issue 24 is done when the same inputs and faults, rerun, show no "accepted", no unclear error and nothing
lost. This script reruns every input of that table (each input of a grouped row on its own), the crafted
run, model and judge folders of Part 4, and the cheap faults of Part 3, on tiny stand-ins for the attack's
runs, so that it takes minutes on 2 CPU cores:

- a corpus of 6 Shakespeare works cut to 3,000 characters each, and ``tiny.yaml``: character tokens, the
  semantic kernel on co-occurrence embeddings (as the ``demo`` preset), a 2-layer width-64 DiT, 32-token
  blocks, 4 steps. The attack's ``--config demo`` rows use this file instead: a bad value is refused before
  the preset matters, and an input that is wrongly accepted trains for seconds, not minutes;
- a run of it (``base/run``) exported as a model folder (``base/model``; ``base/model-raw`` with the raw
  weights), and another model (other corpus, width 32) whose files stand in for "another model's";
- for the long-line rows, one line of 8 MB (the attack used 30 MB); its peak RSS above that of a
  ``gdds prepare`` of the small corpus, per character, is reported;
- the faults: SIGKILL inside a training step, then ``--resume`` (log.jsonl must hold each step once and the
  weights equal an uninterrupted run's); SIGKILL half-way through the first checkpoint's ``state.pt``; a
  torn last line of log.jsonl; a second ``gdds train`` and a ``--resume`` while a run is paused inside a
  step; ``--out`` into a user's folder and into a model folder; ``gdds export --overwrite`` and
  ``save_pretrained(overwrite=True)`` killed at each of their steps (as ``tests/test_model_folder_integrity.py``
  does: the k-th rename, unlink, rmdir or folder swap raises, in one process); output and cache folders that
  cannot be written (under a regular file: chmod does not stop root); an edit keeping a file's size and
  mtime; a file-size limit during a checkpoint and an export.

Each row runs one command in a fresh process (``python -m gdds ARGS``, shown as ``gdds ARGS``; a Python call of
the table as ``python -c``, its exception shown as the CLI would; a fault through a hook of ``--phase gdds``)
and records its exit status, message, wall time and peak RSS; the verdict rules and the checks are those of
``benchmarks/replay.py`` (its docstring). The checks here: nothing lost (a user's files, each step once in
log.jsonl, weights equal to an uninterrupted run, the previous checkpoint intact, no half-written leftovers),
nothing computed before a refusal (no store built, no step logged, no weights opened), nothing outside a
model folder opened (Linux inotify on the outside file: it sees an open by any code, Rust's included), no
code run from a pickle or a judge folder (its marker file absent).

Everything is written under one temporary folder, removed at the end unless ``--keep``; GDDS_CACHE_DIR is one
folder in it for the whole replay (so the corpus is tokenised once) except where a row needs its own. Run from
the repository root with gdds importable (e.g. ``PYTHONPATH=src``)::

    python benchmarks/reliability.py [--out FILE.json] [--markdown FILE.md] [--jobs N] [--keep]

Without ``--out`` the JSON report (machine, versions, settings, summary, rows) is printed on stdout. The exit
status is 1 when a row is not as it should be (an error accepted or unclear, a failure, a failed check).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import machine_info, versions
from gdds.files import write_text_atomically
from replay import (
    Case,
    Check,
    Process,
    Result,
    Runner,
    checkpoint_problem,
    contents,
    each_step_once,
    missing,
    no_leftovers,
    same_weights,
    sha256,
)

SCRIPT = Path(__file__).resolve()
HUGE_LINE_BYTES = 8_000_000
TORN = '{"kind": "train", "loss": 1.2, "ste'  # a record cut by a kill mid-write, as the attack appended
TINY_YAML = """\
seed: 0
data: {{corpus: {corpus}, tokenizer: char, compact_vocab: true, seq_len: 32}}
process: {{kernel: semantic, embeddings: cooccurrence, embedding_dim: 8, kernel_args: {{k: 8}}}}
model: {{preset: tiny, layers: 2, width: 64, heads: 2, cond_width: 32}}
train: {{max_steps: 4, batch_size: 8, lr: 0.003, warmup_steps: 1, ckpt_every: 2, eval_every: 2, eval_batches: 1,
        log_every: 1, progress: false, log: [jsonl], device: cpu}}
"""
KILL = ["train.max_steps=8", "train.ckpt_every=3"]  # the kill-and-resume runs and their reference
EVALS = [2, 4, 6, 8]  # their validation steps
UNREAD = "refused before the weights are read"


class Replay(Runner):
    """The runner of this replay: its ``tiny.yaml``, and the peak RSS figures of the long-line rows."""

    def __init__(self, root: Path, jobs: int) -> None:
        super().__init__(root, jobs, SCRIPT)
        self.yaml = root / "tiny.yaml"
        self.baseline_rss: float | None = None
        self.long_line: dict[int, float] = {}  # peak RSS (MiB) of prepare by characters of the line


def rehash(folder: Path) -> None:
    """Make a crafted model folder's recorded hashes match its files (as a hostile author would)."""
    meta = json.loads((folder / "config.json").read_text())
    meta["files"] = {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256(folder / n)}
                     for n in meta["files"] if (folder / n).is_file()}
    (folder / "config.json").write_text(json.dumps(meta, indent=1))


class Payload:
    """Pickles as a call of ``os.system("touch MARKER")``: a loader that runs pickles would make MARKER."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def no_code_ran(marker: Path) -> tuple[str, Check]:
    return "no code ran (no marker file)", missing(marker, "the pickle's command ran")


# ------------------------------------------------------------------------------------------- fixtures
def write_inputs(root: Path) -> None:
    """The corpora, ``tiny.yaml`` and the bad corpus folders and YAML files (no gdds call)."""
    from gdds.data import shakespeare_documents

    docs = shakespeare_documents()
    for name, works, chars in (("corpus", docs[:6], 3000), ("corpus2", docs[6:12], 2000)):
        (root / name).mkdir()
        for i, doc in enumerate(works):
            (root / name / f"w{i:02d}.txt").write_text(doc[:chars])
    (root / "tiny.yaml").write_text(TINY_YAML.format(corpus=root / "corpus"))
    bad = root / "bad"
    text = {"tiny/hi.txt": b"hi", "nul/zeros.txt": b"\0" * 4096, "mixed_nul/nul.txt": b"\0" * 4096,
            "nodotxt/README.md": docs[0][:2000].encode(), "nodotxt/notes.TXT": docs[1][:2000].encode(),
            "latin1/latin.txt": ("caf\xe9 na\xefve " * 200).encode("latin-1"), "emptyfile/empty.txt": b"",
            "syn.yaml": b"train:\n  lr: [0.1\n", "list.yaml": b"- 1\n- 2\n"}
    for name, data in text.items():
        (bad / name).parent.mkdir(parents=True, exist_ok=True)
        (bad / name).write_bytes(data)
    for folder in ("mixed_nul", "latin1"):
        for doc in (root / "corpus").iterdir():
            shutil.copy(doc, bad / folder)
    line = " ".join(" ".join(d.split()) for d in docs)
    line = (line * (HUGE_LINE_BYTES // len(line) + 1))[:HUGE_LINE_BYTES]
    for folder, chars in (("halfline", HUGE_LINE_BYTES // 2), ("hugeline", HUGE_LINE_BYTES)):
        (bad / folder).mkdir()
        (bad / folder / "one.txt").write_text(line[:chars])
    (root / "exists").mkdir()
    (root / "file").write_text("a regular file: nothing can be created under it\n")
    (root / "work").mkdir()


def setup_phase(spec: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) The base run and its model folders, the other model, the two judge folders."""
    from gdds.engine.config import load_config
    from gdds.engine.model_folder import export_model
    from gdds.engine.train import train

    root = Path(spec["root"])
    yaml = str(root / "tiny.yaml")
    train(load_config(yaml, []), root / "base" / "run")
    export_model(root / "base" / "run", root / "base" / "model")
    export_model(root / "base" / "run", root / "base" / "model-raw", weights="raw")
    train(load_config(yaml, [f"data.corpus={root / 'corpus2'}", "model.width=32", "train.max_steps=2"]),
          root / "other" / "run")
    export_model(root / "other" / "run", root / "other" / "model")
    judge_folders(root / "sec")
    return 0


def judge_folders(sec: Path) -> None:
    """A tiny GPT-2 judge folder whose ``pytorch_model.bin`` is a pickle, and one whose ``config.json``
    maps the model class to a local ``evil.py`` (both make a marker file if their code runs)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<|endoftext|>": 1, "the": 2, "and": 3}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=4, n_positions=16, n_embd=8, n_layer=1,
                                                                 n_head=1))
    for name in ("evil_judge", "remote_judge"):
        model.save_pretrained(sec / name)
        fast.save_pretrained(sec / name)
    for weights in (sec / "evil_judge").glob("*.safetensors"):
        weights.unlink()
    (sec / "evil_judge" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(sec / "PWNED-evil_judge")))
    config = json.loads((sec / "remote_judge" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (sec / "remote_judge" / "config.json").write_text(json.dumps(config))
    (sec / "remote_judge" / "evil.py").write_text(f"import pathlib\npathlib.Path({str(sec / 'PWNED-remote_judge')!r})"
                                                  ".touch()\n")


def crafted_folders(root: Path) -> None:
    """Damaged model folders (``mf/``), a run whose ``state.pt`` is a pickle and hostile model folders that
    name files outside themselves (``sec/``; their recorded hashes made to match), from the set-up's."""
    import numpy as np

    model, other, mf, sec, outside = (root / "base" / "model", root / "other" / "model", root / "mf", root / "sec",
                                      root / "outside")
    outside.mkdir()

    def copy(name: str, where: Path = mf) -> Path:
        return Path(shutil.copytree(model, where / name))

    def rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
        path.write_bytes(change(path.read_bytes()))

    (copy("missing") / "model.safetensors").unlink()
    rewrite(copy("corrupt") / "model.safetensors", lambda b: b[:len(b) // 2])
    rewrite(copy("garbage") / "model.safetensors", lambda b: np.random.default_rng(0).bytes(len(b)))
    rewrite(copy("empty") / "model.safetensors", lambda b: b"")
    shutil.copy(other / "model.safetensors", copy("other_weights"))
    rewrite(copy("trunc_cfg") / "config.json", lambda b: b[:len(b) // 2])
    rewrite(copy("cfg_list") / "config.json", lambda b: b"[]")
    shutil.copy(other / "tokenizer.json", copy("other_tok"))
    shutil.rmtree(copy("other_gdds_tok") / "gdds_tokenizer")
    shutil.copytree(other / "gdds_tokenizer", mf / "other_gdds_tok" / "gdds_tokenizer")

    def edit(folder: Path, change: Callable[[dict[str, Any]], object]) -> None:
        meta = json.loads((folder / "config.json").read_text())
        change(meta)
        (folder / "config.json").write_text(json.dumps(meta, indent=1))

    huge = {"layers": 96, "width": 16384, "heads": 128}  # the network is built from the run's config.model
    edit(copy("huge"), lambda m: (m["config"]["model"].update(huge), m["architecture"].update(huge)))
    run = Path(shutil.copytree(root / "base" / "run", sec / "evil_run", symlinks=True))
    last = (run / "checkpoints" / "last").resolve()
    (last / "state.pt").write_bytes(pickle.dumps(Payload(sec / "PWNED-evil_run")))
    manifest = json.loads((last / "manifest.json").read_text())
    manifest["files"]["state.pt"] = {"bytes": (last / "state.pt").stat().st_size, "sha256": sha256(last / "state.pt")}
    (last / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (outside / "emb.pt").write_bytes(pickle.dumps(Payload(sec / "PWNED-mf_emb_pt")))
    np.save(outside / "emb-obj.npy", np.array([Payload(sec / "PWNED-mf_emb_npy")], dtype=object), allow_pickle=True)
    np.save(outside / "emb-rel.npy", np.ones((68, 8), dtype=np.float32))  # plain numbers (never to be read)
    embeddings = {"mf_emb_pt": str(outside / "emb.pt"), "mf_emb_npy": str(outside / "emb-obj.npy"),
                  "mf_emb_rel": "../outside/emb-rel.npy"}  # relative to the commands' folder $T/work
    for name, path in embeddings.items():
        folder = copy(name, sec)
        (folder / "kernel.safetensors").unlink()
        edit(folder, lambda m, p=path: m["config"]["process"].update(embeddings=p))
        rehash(folder)
    for name in ("secret-abs.txt", "secret-rel.txt"):
        (outside / name).write_text("a private file\n")
    shutil.copy(other / "tokenizer.json", outside / "other-tokenizer.json")
    base = Path("gdds_tokenizer") / "base" / "gdds_tokenizer.json"
    files = {"mf_tok_abs": str(outside / "secret-abs.txt"), "mf_tok_json": str(outside / "other-tokenizer.json"),
             "mf_tok_rel": os.path.relpath(outside / "secret-rel.txt", sec / "mf_tok_rel" / base.parent)}
    for name, path in files.items():
        folder = copy(name, sec)
        (folder / base).write_text(json.dumps({"kind": "bpe", "file": path}))
        rehash(folder)


# --------------------------------------------------------------------------------------------- the rows
def input_cases(rp: Replay) -> list[Case]:
    """Every input of the attack's inputs table, in its order (Python calls as ``python -c``)."""
    import torch

    root, yaml = rp.root, str(rp.yaml)
    model, run, evaluated = root / "base" / "model", root / "base" / "run", root / "evalout"

    def train(what: str, *args: str, names: Sequence[str] = (), config: str = yaml, **kw: Any) -> Case:
        return Case("inputs", what, ["train", "--config", config, "--out", rp.out(), *args], names=tuple(names), **kw)

    def keyed(what: str, override: str) -> Case:  # the key is the override's
        return train(what, override, names=[override.split("=")[0]])

    def corpus(what: str, folder: str, names: Sequence[str] = ()) -> Case:
        return train(what, f"data.corpus={root / 'bad' / folder}", names=names)

    def sample(what: str, *args: str, names: Sequence[str] = (), **kw: Any) -> Case:
        return Case("inputs", what, ["sample", str(model), *args], names=tuple(names), **kw)

    def call(what: str, code: str, names: Sequence[str], absent: Sequence[str] = ()) -> Case:
        return Case("inputs", what, phase="python", spec=f"import gdds; model = gdds.load({str(model)!r}); {code}",
                    names=tuple(names), absent=tuple(absent))

    fresh_cache = root / "cache-seq_len"
    cuda = torch.cuda.is_available()
    return [
        keyed("negative batch size", "train.batch_size=-4"),
        keyed("seq_len 0", "data.seq_len=0"),
        keyed("unknown kernel", "process.kernel=foo"),
        keyed("lr as a string", "train.lr=abc"),
        train("typo in a key", "train.max_step=5", names=["train.max_steps"]),
        keyed("unknown section", "optim.lr=1"),
        train("override without `=`", "train.lr", names=["train.lr"]),
        # the attack found this row clear ("yes, with suggestions"); heads=7 is named as DiTConfig's heads
        train("heads 7 / width 0 / layers 0 / dropout 2: model.heads=7", "model.heads=7", names=["heads"]),
        *(keyed(f"heads 7 / width 0 / layers 0 / dropout 2: {o}", o)
          for o in ("model.width=0", "model.layers=0", "model.dropout=2")),
        keyed("`max_steps=1e30`", "train.max_steps=1e30"),
        keyed("`t_min=-0.1`", "process.t_min=-0.1"),
        keyed("`keep_checkpoints=0`", "train.keep_checkpoints=0"),
        train(f"CUDA without a GPU{' (this machine has one: it must work)' if cuda else ''}", "--device", "cuda",
              names=[] if cuda else ["cuda"], expect="works" if cuda else "error"),
        train("YAML missing", config=str(root / "bad" / "missing.yaml"), names=["missing.yaml"]),
        train("YAML a list", config=str(root / "bad" / "list.yaml"), names=["list.yaml"]),
        train("unknown preset", config="nosuchpreset", names=["nosuchpreset"]),
        keyed("negative lr", "train.lr=-1"),
        keyed("lr NaN", "train.lr=nan"),
        keyed("beta1 1.5", "train.beta1=1.5"),
        keyed("valid_fraction 1.5", "data.valid_fraction=1.5"),
        train("fractions sum > 1", "data.valid_fraction=0.6", "data.test_fraction=0.6", names=["data.", "_fraction"]),
        train("BPE vocab 10", "data.tokenizer=bpe", "data.bpe_vocab_size=10", names=["data.bpe_vocab_size"]),
        train("schedule eps 2", "process.schedule_args={eps: 2}", names=["process.schedule_args"]),
        train("kNN k 0", "process.kernel_args={k: 0}", names=["process.kernel_args"]),
        train("kNN k -3", "process.kernel_args={k: -3}", names=["process.kernel_args"]),
        train("unknown kernel argument", "process.kernel_args={foo: 1}", names=["foo"]),
        keyed("embedding_dim 0", "process.embedding_dim=0"),
        keyed("seed -1", "seed=-1"),
        train("YAML syntax error", config=str(root / "bad" / "syn.yaml"), names=["syn.yaml"]),
        eval_batches_case(rp),
        keyed("`grad_clip=-1`", "train.grad_clip=-1"),
        keyed("`weight_decay=-1`", "train.weight_decay=-1"),
        keyed("`min_lr=-0.01`", "train.min_lr=-0.01"),
        keyed("`warmup_steps=-5`", "train.warmup_steps=-5"),
        corpus("corpus: one tiny file", "tiny"),
        corpus("corpus: all-NUL file", "nul"),
        corpus("corpus: NUL file among others", "mixed_nul", names=["nul.txt"]),
        corpus("folder without `.txt` (has `README.md`, `notes.TXT`)", "nodotxt"),
        corpus("non-UTF-8 file", "latin1", names=["latin.txt", "encoding"]),
        corpus("empty file", "emptyfile"),
        corpus("missing path", "doesnotexist", names=["doesnotexist"]),
        corpus(f"huge single line ({HUGE_LINE_BYTES / 1e6:g} MB; the attack's: 30 MB)", "hugeline", names=["split"]),
        *long_line_cases(rp),
        train("seq_len 10⁸", "data.seq_len=100000000", names=["data.seq_len"], env={"GDDS_CACHE_DIR": str(fresh_cache)},
              checks=[("refused before tokenising (no store built)",
                       lambda _: any(fresh_cache.glob("stores/*")) and f"{fresh_cache}/stores holds a store")]),
        *(Case("inputs", what, ["sample", str(root / "mf" / name)], names=names) for what, name, names in [
            ("model folder: no `model.safetensors`", "missing", ("model.safetensors",)),
            ("model folder: half of `model.safetensors`", "corrupt", ("model.safetensors",)),
            ("model folder: random bytes as weights", "garbage", ("model.safetensors",)),
            ("model folder: empty weights", "empty", ("model.safetensors",)),
            ("weights of another model", "other_weights", ("model.safetensors",)),
            ("truncated `config.json`", "trunc_cfg", ("config.json",)),
            ("`config.json` = `[]`", "cfg_list", ("config.json",)),
            ("`tokenizer.json` of another model", "other_tok", ("tokenizer.json",)),
            ("`gdds_tokenizer/` of another model", "other_gdds_tok", ("gdds_tokenizer",))]),
        Case("inputs", "eval: run folder, no checkpoint", ["eval", str(root / "runs" / "nockpt")],
             names=("no checkpoint",), absent=("not a run folder",), before=lambda: no_checkpoint(rp, "nockpt")),
        Case("inputs", "eval: empty `checkpoints/`", ["eval", str(root / "runs" / "emptyckpt")],
             names=("no checkpoint",), absent=("to resume from",), before=lambda: no_checkpoint(rp, "emptyckpt")),
        Case("inputs", "eval: truncated EMA file", ["eval", str(root / "runs" / "corrupt")],
             names=("ema.safetensors",), before=lambda: truncated_ema(rp)),
        Case("inputs", "re-export a model folder", ["export", str(model), str(root / "reexport")], expect="works",
             checks=[("the copy equals the model folder",
                      lambda _: contents(root / "reexport") != contents(model) and "files differ")]),
        sample("`gdds sample --steps 0`", "--steps", "0", names=["--steps"]),
        sample("`gdds sample --num -1`", "--num", "-1", names=["--num"]),
        sample("`gdds sample --length 100000`", "--length", "100000", names=["--length"]),
        # the attack: "partly", advice for library users that build a network, not for a loaded model
        call("`model.sample(length=100000)`", "model.sample(length=100000)", ["length"], absent=["DiTConfig"]),
        *(call(f"`model.sample({a})`", f"model.sample({a})", [a.split("=")[0]])
          for a in ("num=0", "num=-1", "steps=0", "length=0")),
        *(sample(f"`gdds sample --top-p {p}`", "--top-p", p, names=["--top-p"], watch=(model / "model.safetensors",),
                 watch_check=UNREAD, parallel=False, how="inotify on the model's weights")
          for p in ("0", "-1")),
        sample("`gdds sample --top-p 2`", "--top-p", "2", names=["--top-p"]),
        sample("prompt not in the vocabulary", "--prompt", "日本語 ☃", names=["日"]),
        call("`nll_bound` of out-of-vocabulary text", "print(model.nll_bound('日本語日本語'))", ["日"]),
        sample("prompt longer than the model", "--prompt", "a" * 500),
        sample("`--num 100000000`", "--num", "100000000", names=["--num"]),
        sample("`--steps 100000000`", "--steps", "100000000", names=["--steps"]),
        sample("`--out` is a folder", "--out", str(root / "exists"), names=["--out"]),
        Case("inputs", "`gdds eval --steps 0`", ["eval", str(run), "--steps", "0"]),  # the attack: clear, no name
        Case("inputs", "`gdds eval --sequences 0`", ["eval", str(run), "--sequences", "0"]),
        Case("inputs", "`gdds eval --sequences 100000`",
             ["eval", str(run), "--sequences", "100000", "--steps", "4", "--profile-steps", "0", "--sample-steps", "4",
              "--num-samples", "1", "--out", str(evaluated / "all")], expect="works",
             checks=[("does not claim 100000 sequences are bounded",
                      lambda r: "bounding 100000 " in r.stdout + r.stderr and "prints 'bounding 100000 ...'")]),
        Case("inputs", "`gdds eval --sample-length 100000`",
             ["eval", str(run), "--sample-length", "100000", "--out", str(evaluated / "long")],
             names=("--sample-length",), checks=[("refused before the bound (no output)",
                                                   missing(evaluated / "long", "the evaluation ran"))]),
        call("`nll_bound([])`", "model.nll_bound([])", ["text"]),
        Case("inputs", "`--resume` with a changed `train.lr`", ["train", "--resume", str(root / "runs" / "lr"),
                                                                  "train.lr=0.01"], names=("train.lr",),
             before=lambda: shutil.copytree(run, root / "runs" / "lr", symlinks=True)),
    ]


def eval_batches_case(rp: Replay) -> Case:
    out = Path(rp.out())
    return Case("inputs", "`eval_batches=0`", ["train", "--config", str(rp.yaml), "--out", str(out),
                                              "train.eval_batches=0"], names=("train.eval_batches",),
                checks=[("nothing lost: refused before training",
                         lambda _: (out / "log.jsonl").exists() and "log.jsonl written: training started")])


def long_line_cases(rp: Replay) -> list[Case]:
    """``gdds prepare`` of one line with ``split: chars`` (the ``tiny.yaml`` settings: character tokens,
    co-occurrence embeddings), half the long line then all of it: both work. The peak RSS of each is recorded
    in ``rp.long_line``; the check is on the memory each extra character costs, (peak at 8 MB - peak at 4 MB)
    / 4 MB, which a tokenizer that streams keeps to a few bytes: at most 8 (the bound tests/test_store.py holds
    the tokenizer to; the attack's 30 MB line grew the peak by about 49 bytes per character)."""
    def record(chars: int) -> Check:
        def check(result: Result) -> str | None:
            rp.long_line[chars] = result.peak_rss_mib
            if len(rp.long_line) < 2:
                return None
            (small, low), (large, high) = sorted(rp.long_line.items())
            marginal = (high - low) * (1 << 20) / (large - small)
            return f"{marginal:.1f} bytes per extra character" if marginal > 8 else None
        return check

    return [Case("inputs", f"same, `split: chars` (one {chars / 1e6:g} MB line): peak memory",
                 ["prepare", str(rp.yaml), f"data.corpus={rp.root / 'bad' / folder / 'one.txt'}",
                  "data.corpus_args={split: chars}"], expect="works", parallel=False,
                 checks=[(label, record(chars))])
            for folder, chars, label in (("halfline", HUGE_LINE_BYTES // 2, "peak RSS recorded for the next row"),
                                         ("hugeline", HUGE_LINE_BYTES, "peak RSS per extra character (4 MB to 8 MB) "
                                                                       "at most 8 bytes"))]


def no_checkpoint(rp: Replay, name: str) -> None:
    """A copy of the base run without any checkpoint (``nockpt``) or with an empty ``checkpoints/``."""
    run = Path(shutil.copytree(rp.root / "base" / "run", rp.root / "runs" / name, symlinks=True))
    shutil.rmtree(run / "checkpoints")
    if name == "emptyckpt":
        (run / "checkpoints").mkdir()


def truncated_ema(rp: Replay) -> None:
    run = Path(shutil.copytree(rp.root / "base" / "run", rp.root / "runs" / "corrupt", symlinks=True))
    ema = run / "checkpoints" / "last" / "ema.safetensors"
    ema.write_bytes(ema.read_bytes()[:1000])


def security_cases(rp: Replay) -> list[Case]:
    """Part 4's crafted inputs: a pickle where a checkpoint's ``state.pt`` is, model folders that name files
    outside themselves (their hashes made to match), an unbounded network, hostile judge folders."""
    root, sec, outside = rp.root, rp.root / "sec", rp.root / "outside"
    evil = sec / "evil_run"

    def judge(what: str, name: str, expect: str) -> Case:
        return Case("security", what, phase="python",
                    spec=f"from gdds.engine.judge import Judge; Judge.load({str(sec / name)!r})",
                    expect=expect, checks=[no_code_ran(sec / f"PWNED-{name}")])

    def outside_file(what: str, name: str, path: Path, names: tuple[str, ...]) -> Case:
        return Case("security", what, ["sample", str(sec / name), "--num", "1", "--steps", "4"], names=names,
                    watch=(path,), cwd=root / "work", parallel=False, checks=[no_code_ran(sec / f"PWNED-{name}")])

    return [
        Case("security", "run checkpoint whose `state.pt` is a pickle (matching `manifest.json`)",
             ["train", "--resume", str(evil)], checks=[no_code_ran(sec / "PWNED-evil_run")]),
        Case("security", "same run: `gdds sample`", ["sample", str(evil), "--num", "1", "--steps", "4"],
             expect="works", checks=[no_code_ran(sec / "PWNED-evil_run")]),
        Case("security", "same run: `gdds export`", ["export", str(evil), str(sec / "evil_export")], expect="works",
             checks=[no_code_ran(sec / "PWNED-evil_run"),
                     ("the export carries no state.pt", lambda _: any((sec / "evil_export").rglob("state.pt"))
                      and "state.pt exported")]),
        outside_file("model folder: `process.embeddings` = an outside `.pt` pickle, `kernel.safetensors` deleted",
                     "mf_emb_pt", outside / "emb.pt", ("kernel.safetensors",)),
        outside_file("same with an object-array `.npy`", "mf_emb_npy", outside / "emb-obj.npy",
                     ("kernel.safetensors",)),
        outside_file("same with a relative `../` path", "mf_emb_rel", outside / "emb-rel.npy",
                     ("kernel.safetensors",)),
        outside_file("`gdds_tokenizer/base/gdds_tokenizer.json` naming an absolute outside file", "mf_tok_abs",
                     outside / "secret-abs.txt", ("gdds_tokenizer.json",)),
        outside_file("same, a `../` path out of the folder", "mf_tok_rel", outside / "secret-rel.txt",
                     ("gdds_tokenizer.json",)),
        outside_file("same, another model's `tokenizer.json` outside the folder", "mf_tok_json",
                     outside / "other-tokenizer.json", ("gdds_tokenizer.json",)),
        Case("security", "`config.json` declaring 96 layers of width 16,384 (R7)",
             ["sample", str(root / "mf" / "huge")],
             names=("model.safetensors",), limits={resource.RLIMIT_AS: 8 << 30},
             how="address space limited to 8 GiB: a network built before the check fails to allocate",
             checks=[("refused before building the network (peak RSS under 2 GiB)",
                      lambda r: r.peak_rss_mib > 2048 and f"peak RSS {r.peak_rss_mib:.0f} MiB")]),
        judge("HF judge folder with a pickled `pytorch_model.bin` (`Judge.load`)", "evil_judge", "error"),
        judge("HF judge folder with `auto_map` to a local `evil.py` (`Judge.load`)", "remote_judge", "works"),
    ]


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
                 "from gdds.engine.compare import _throughput; "
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
                    "completes (as tests/test_model_folder_integrity.py); after each, MODEL is loaded",
                checks=[("a whole, loadable old or new folder after every kill", overwrite_problems)])


def overwrite_problems(result: Result) -> str | None:
    lines = result.stdout.strip().splitlines()
    if not lines:
        return "no summary"
    summary = json.loads(lines[-1])
    return "; ".join(summary["problems"]) or None


# ------------------------------------------------------------------------------- phases (child processes)
class Killed(BaseException):
    """The process died here: nothing after it reaches the disk, and no cleanup runs."""


@contextlib.contextmanager
def killed_at(k: int) -> Iterator[None]:
    """From the ``k``-th rename, replace, unlink, rmdir or folder swap on, each such call raises :class:`Killed`
    before acting (as ``tests/test_model_folder_integrity.py`` does)."""
    from gdds import files

    count = [0]
    saved = [(m, n, getattr(m, n)) for m, n in [(os, "rename"), (os, "replace"), (os, "unlink"), (os, "rmdir"),
                                                 (files, "_exchange")]]

    def dying(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] >= k:
                raise Killed
            return fn(*args, **kwargs)
        return call

    for module, name, fn in saved:
        setattr(module, name, dying(fn))
    try:
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def overwrite_phase(spec: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) ``gdds export RUN MODEL --overwrite`` (or ``save_pretrained``) over the raw-weights
    model folder, killed at its k-th step for k = 1, 2, ... until it completes: after each kill MODEL must be
    the old folder or the new one, whole and loadable (a kill between the fallback's two renames: put back
    by the next export); what a kill left must go at the next overwrite. Prints a JSON summary."""
    import gdds
    from gdds import files
    from gdds.cli import main
    from gdds.engine.config import ConfigError
    from gdds.engine.model_folder import export_model

    root = Path(spec["root"])
    run, old, new = root / "base" / "run", root / "base" / "model-raw", root / "base" / "model"
    work = root / "f" / re.sub(r"\W+", "-", f"{spec['how']}-{spec['swap']}")
    work.mkdir(parents=True)
    target = work / "model"
    exchange = files._exchange(Path(shutil.copytree(old, work / "a")), Path(shutil.copytree(new, work / "b")))
    if spec["swap"] == "two renames":
        files._exchange = lambda a, b: False
    source = gdds.load(new) if spec["how"].startswith("save") else None
    before, after = contents(old), contents(new)
    outcomes: Counter[str] = Counter()
    problems: list[str] = []

    def hidden() -> list[str]:
        return sorted(p.name for p in work.iterdir() if p.name.startswith(".model."))

    def attempt(k: int, fresh: bool = True) -> bool:
        if fresh:
            for name in ["model", *hidden()]:
                shutil.rmtree(work / name, ignore_errors=True)
            shutil.copytree(old, target)
        with killed_at(k):
            try:
                if source is None and main(["export", str(run), str(target), "--overwrite"]) != 0:
                    problems.append(f"kill point {k}: the export failed")
                elif source is not None:
                    source.save_pretrained(target, overwrite=True)
                return True
            except Killed:
                return False

    left: dict[int, list[str]] = {}
    for k in range(1, 1000):
        finished = attempt(k)
        left[k] = hidden()
        if not target.exists():
            try:
                export_model(run, target)  # the next export puts the old folder back first, then refuses
            except ConfigError:
                outcomes["put back by the next export"] += 1
        now = contents(target) if target.exists() else None
        if now not in (before, after):
            problems.append(f"kill point {k}: {target.name} is neither the old folder nor the new one")
        else:
            try:
                gdds.load(target)
                outcomes["new" if now == after else "old"] += 1
            except Exception as exc:
                problems.append(f"kill point {k}: does not load: {type(exc).__name__}: {exc}")
        if finished:
            break
    if dirty := [k for k in left if left[k]]:  # what a kill left (a half-deleted old folder) goes next time
        attempt(dirty[-1])
        attempt(10**9, fresh=False)
        if hidden():
            problems.append(f"the next overwrite left {hidden()}")
    print(json.dumps({"kill_points": len(left), "outcomes": outcomes, "renameat2_exchange": exchange,
                      "leftovers_seen": len(dirty), "problems": problems}))
    print(f"{len(left)} kill points, then MODEL was: {dict(outcomes)}; {len(dirty)} kills left hidden folders; "
          f"{len(problems)} problems; renameat2 exchange on this file system: {exchange}", file=sys.stderr)
    return 1 if problems else 0


def gdds_phase(hooks: dict[str, Any], argv: list[str]) -> int:
    """(In a child process.) ``gdds ARGV`` with fault hooks: ``kill_step`` (SIGKILL inside that training step,
    before its records and checkpoint), ``pause_step`` (write the file ``ready`` there and wait for the file
    ``release``), ``kill_save`` (SIGKILL after half of the k-th ``torch.save`` into a checkpoint is written)."""
    import torch

    from gdds.cli import main
    from gdds.engine.train import Trainer

    step, save, saves = Trainer.train_step, torch.save, [0]

    def train_step(self: Trainer) -> dict[str, float]:
        if self.step + 1 == hooks.get("kill_step"):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.step + 1 == hooks.get("pause_step"):
            Path(hooks["ready"]).write_text(str(os.getpid()))
            deadline = time.monotonic() + 600
            while not Path(hooks["release"]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return step(self)

    def half_save(obj: Any, fh: Any, *args: Any, **kwargs: Any) -> None:
        if ".tmp-step-" in str(getattr(fh, "name", "")):
            saves[0] += 1
            if saves[0] == hooks.get("kill_save"):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                fh.write(buffer.getvalue()[:buffer.tell() // 2])
                fh.flush()
                os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
        save(obj, fh, *args, **kwargs)

    Trainer.train_step = train_step
    torch.save = half_save
    return main(argv)


def python_phase(code: str, argv: list[str]) -> int:
    """(In a child process.) Run the Python call ``code``; an exception ends in one line as the CLI shows it
    (``gdds.cli.main``: the types of ``EXPECTED`` as their message, others with their type and the "report
    it if it looks like a bug" suffix) and exit status 1."""
    from gdds.cli.main import EXPECTED

    try:
        exec(code, {"__name__": "replayed"})
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, EXPECTED):
            text = f"{type(exc).__name__}: {text} (report it if it looks like a bug in gdds)"
        print(f"gdds: error: {text}", file=sys.stderr)
        return 1
    return 0


PHASES: dict[str, Callable[[Any, list[str]], int]] = {
    "gdds": gdds_phase, "python": python_phase, "overwrite": overwrite_phase, "setup": setup_phase}


# ----------------------------------------------------------------------------------------------- report
def replay(root: Path, jobs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Make the inputs under ``root`` and replay every row; the rows and the settings used."""
    rp = Replay(root, jobs)
    write_inputs(root)
    baseline = rp.execute(Case("set-up", "baseline: `gdds prepare` of the small corpus (the long line's peak RSS is "
                                         "measured above it)", ["prepare", str(rp.yaml)], expect="works"))
    rp.baseline_rss = baseline["peak_rss_mib"]
    setup = Process([sys.executable, str(SCRIPT), "--phase", "setup", "--spec", json.dumps({"root": str(root)})],
                    rp.env, timeout=600).wait()
    if setup.rc != 0:
        raise RuntimeError(f"the set-up failed (exit status {setup.rc}):\n{setup.stderr[-4000:]}")
    crafted_folders(root)
    rows = [baseline, *rp.run_all([*input_cases(rp), *fault_cases(rp), *security_cases(rp)])]
    settings = {"tiny_yaml": rp.yaml.read_text().replace(str(root), "$T"), "jobs": jobs,
                "huge_line_bytes": HUGE_LINE_BYTES, "setup_seconds": round(setup.seconds, 1),
                "long_line": long_line_memory(rp)}
    return rows, settings


def long_line_memory(rp: Replay) -> dict[str, float | None]:
    """Peak RSS of ``gdds prepare`` on the long lines: above the baseline per character, and per extra character."""
    peaks = sorted(rp.long_line.items())
    out: dict[str, float | None] = {"baseline_peak_rss_mib": rp.baseline_rss}
    for chars, peak in peaks:
        out[f"peak_rss_mib_{chars}"] = peak
        out[f"bytes_per_char_above_baseline_{chars}"] = (peak - (rp.baseline_rss or 0)) * (1 << 20) / chars
    if len(peaks) == 2:
        out["bytes_per_extra_char"] = (peaks[1][1] - peaks[0][1]) * (1 << 20) / (peaks[1][0] - peaks[0][0])
    return out


def cell(text: object, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    """The rows as a markdown table, after a summary and the verdict rules."""
    rows, summary = report["rows"], report["summary"]
    lines = [
        "# Replay of the attack's bad inputs and faults (issue 24)", "",
        f"`{' '.join(report['command'])}` on {report['created_utc']}: gdds {report['versions']['gdds']} "
        f"(commit {report['commit']}), {report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; "
        f"{summary['seconds']:.0f} s in all.", "",
        f"{len(rows)} rows: " + ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items())
        + f"; {summary['not_ok']} not as they should be"
        + (f" (#{', #'.join(str(i) for i, r in enumerate(rows, 1) if not r['ok'])})" if summary["not_ok"] else "")
        + f"; {summary['failed_checks']} failed checks.", "",
        "Verdicts: **clear** = an error was due, exit status not 0, one `gdds: error:` line without the "
        "\"report it if it looks like a bug\" suffix, no traceback, naming what the row requires; **unclear** = "
        "an error, but not so; **accepted** = exit status 0 where an error was due; **works** = exit status 0 "
        "where success is right; **failed** = otherwise; **killed** = a fault the harness made. Checks: nothing "
        "lost, nothing computed before a refusal, nothing outside a folder opened, no code run from a pickle.", "",
        "| # | input | command | rc | message | s | verdict | checks |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        checks = "; ".join(("ok: " if c["ok"] else "**FAILED**: ") + c["name"] + (f" ({c['detail']})" if c["detail"]
                                                                                   else "") for c in r["checks"])
        verdict_text = r["verdict"] if r["ok"] or not r["why"] else f"**{r['verdict']}**: {r['why']}"
        how = f" ({r['how']})" if r["how"] else ""
        lines.append(f"| {i} | {cell(r['section'] + ': ' + r['input'])} | `{cell(r['command'], 300)}` {cell(how)} | "
                     f"{r['rc']} | {cell(r['message'])} | {r['seconds']:.1f} | {cell(verdict_text)} | {cell(checks)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay the attack's bad inputs and faults (issue 24).")
    parser.add_argument("--out", type=Path, help="JSON report (default: printed on stdout)")
    parser.add_argument("--markdown", type=Path, help="the rows as a markdown table")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at once where rows are independent")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return PHASES[args.phase](json.loads(args.spec), args.rest)
    from gdds.engine.provenance import git_commit

    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="gdds-reliability-"))
    try:
        rows, settings = replay(root, max(1, args.jobs))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = {"seconds": round(time.perf_counter() - start, 1), "rows": len(rows),
               "verdicts": dict(Counter(r["verdict"] for r in rows)), "not_ok": sum(not r["ok"] for r in rows),
               "failed_checks": sum(not c["ok"] for r in rows for c in r["checks"])}
    report = {"benchmark": "reliability", "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": [Path(sys.executable).name, *sys.argv], "commit": git_commit(),
              "source": "reliability-inputs.md (the attack on a7bf748: inputs table, Part 3 faults, Part 4)",
              "machine": machine_info(cuda_used=False),
              "versions": {**versions(), **{p: version(p) for p in ("transformers", "tokenizers", "safetensors")}},
              "settings": settings, "summary": summary, "rows": rows}
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        write_text_atomically(args.out, text)
    else:
        sys.stdout.write(text)
    if args.markdown:
        write_text_atomically(args.markdown, markdown(report))
    print(f"{len(rows)} rows, {summary['verdicts']}, {summary['not_ok']} not ok, {summary['seconds']:.0f} s",
          file=sys.stderr)
    return 1 if summary["not_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
