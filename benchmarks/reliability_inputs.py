"""The rows of the attack's inputs table in the reliability replay (``benchmarks/reliability.py``): every input
in the table's order, each input of a grouped row on its own (bad configuration values, corpus folders, model
folders, options of ``gdds sample`` / ``gdds eval``, Python calls of a loaded model), and the folders some of
them need, made just before they run."""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reliability_setup import HUGE_LINE_BYTES, UNREAD, Replay
from replay import Case, Check, Result, contents, missing


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
    / 4 MB, which a tokenizer that streams keeps to a few bytes: at most 8 (the bound tests/data/test_store.py holds
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
