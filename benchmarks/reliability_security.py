"""Part 4 of the reliability replay (``benchmarks/reliability.py``): the crafted inputs, made as a hostile author
would, and their rows. A run checkpoint whose ``state.pt`` is a pickle (its manifest made to match), model
folders that name files outside themselves (pickles, an object array, a relative path, private files; their
recorded hashes made to match), a model folder declaring an unbounded network, and two judge folders (a
pickled ``pytorch_model.bin``, an ``auto_map`` to a local ``evil.py``). A pickle or a judge's code that runs
makes a marker file, which the rows check is absent. The damaged model folders of the inputs table (``mf/``)
are made here too, from the same copies of the base model."""
from __future__ import annotations

import json
import os
import pickle
import resource
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reliability_setup import Replay
from replay import Case, Check, missing, sha256


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


def security_cases(rp: Replay) -> list[Case]:
    """Part 4's crafted inputs: a pickle where a checkpoint's ``state.pt`` is, model folders that name files
    outside themselves (their hashes made to match), an unbounded network, hostile judge folders."""
    root, sec, outside = rp.root, rp.root / "sec", rp.root / "outside"
    evil = sec / "evil_run"

    def judge(what: str, name: str, expect: str) -> Case:
        return Case("security", what, phase="python",
                    spec=f"from gdds.engine.evaluation.judge import Judge; Judge.load({str(sec / name)!r})",
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
