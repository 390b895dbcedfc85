"""Model folders: a trained model that leaves its machine, in the layout of a Hugging Face Hub model
repository, and loaded back without the corpus it was trained on.

``export_model(run_dir, out_dir)`` writes::

    config.json            format, gdds version, the run's configuration, architecture, method,
                           process (schedule, kernel and all their parameters), vocabulary size and
                           special ids, the run identity a load must reproduce, where it came from
    model.safetensors      the weights (EMA by default)
    tokenizer.json         the base tokenizer for ``tokenizers`` / ``transformers``
    compact_vocab.json     when the model uses a compact vocabulary: model id -> tokenizer.json id
    gdds_tokenizer/        the tokenizer as gdds stores it (exact reload, identity checked)
    kernel.safetensors     the kernel's data that the configuration cannot rebuild (embeddings)
    unigram.safetensors    the training split's token counts (the no-training baseline of gdds eval)
    README.md              a model card: evaluation table, training data and compute, how to load

:func:`load_model_folder` rebuilds the process, the method and the network from these files alone.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ..data import CompactTokenizer, load_tokenizer
from ..kernels import KERNELS
from ..version import __version__
from . import checkpoint as ck
from .build import LoadedRun, Run, assemble, kernel_embeddings, load_run
from .config import Config, ConfigError
from .corpus import Data, build_data
from .distributed import resolve_device
from .legacy import as_saved
from .model_card import model_card

FORMAT = "gdds-model-v1"
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_JSON = "config.json", "model.safetensors", "tokenizer.json"
GDDS_TOKENIZER, COMPACT_FILE, CARD_FILE = "gdds_tokenizer", "compact_vocab.json", "README.md"
KERNEL_FILE, COUNTS_FILE = "kernel.safetensors", "unigram.safetensors"


def is_model_folder(path: Path | str) -> bool:
    """Whether ``path`` is a model folder written by :func:`export_model`."""
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / WEIGHTS_FILE).is_file()


def _config_record(loaded: LoadedRun, run_dir: Path) -> dict[str, Any]:
    run, tok = loaded.run, loaded.run.data.tokenizer
    return {
        "format": FORMAT, "gdds_version": __version__, "method": loaded.cfg.method,
        "architecture": run.model.config.to_dict(), "process": run.kernel_identity,
        "vocab_size": tok.vocab_size, "seq_len": loaded.cfg.data.seq_len,
        "special_ids": {"bos": tok.bos_id, "eos": tok.eos_id, "pad": tok.pad_id, "mask": tok.mask_id,
                        "unk": tok.unk_id},
        "weights": loaded.weights, "config": loaded.cfg.to_dict(), "identity": run.identity(),
        "source": {"run": str(run_dir), "checkpoint": loaded.checkpoint.name},
    }


def export_model(run_dir: Path | str, out_dir: Path | str, weights: str = "ema", overwrite: bool = False) -> Path:
    """Write the model folder of ``run_dir``'s latest checkpoint to ``out_dir`` (atomically: built
    next to it, then renamed; an existing ``out_dir`` is replaced only with ``overwrite``)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} exists; choose another folder or pass --overwrite")
    loaded = load_run(run_dir, weights=weights, device="cpu")
    run, tok, pc = loaded.run, loaded.run.data.tokenizer, loaded.cfg.process
    staging = out_dir.parent / f".{out_dir.name}.tmp-{secrets.token_hex(4)}"
    staging.mkdir(parents=True)
    try:
        base = tok.base if isinstance(tok, CompactTokenizer) else tok
        base.hf_tokenizer().save(str(staging / TOKENIZER_JSON))
        tok.save(staging / GDDS_TOKENIZER)
        if isinstance(tok, CompactTokenizer):
            tok.vocab.save(staging / COMPACT_FILE)
        ck.save_tensors(staging / WEIGHTS_FILE, ck.module_tensors(run.model))
        ck.save_tensors(staging / COUNTS_FILE, {"train_counts": run.data.unigram_counts()})
        if run.process is not None and KERNELS.get(pc.kernel).needs_embeddings:
            ck.save_tensors(staging / KERNEL_FILE, {"embeddings": kernel_embeddings(pc, run.data).contiguous()})
        (staging / CONFIG_FILE).write_text(json.dumps(_config_record(loaded, run_dir), indent=1))
        (staging / CARD_FILE).write_text(model_card(loaded, run_dir))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def load_model_folder(path: Path | str, device: str = "auto", with_data: bool = False) -> LoadedRun:
    """The model of a model folder, on ``device``, in eval mode. Without ``with_data`` nothing of the
    corpus is needed (sampling, scoring text); with it the configuration's corpus is built as for a
    run (``gdds eval``), and its tokenizer must be the folder's."""
    folder = Path(path)
    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{folder / CONFIG_FILE} is not a gdds model folder of format {FORMAT}")
    cfg = as_saved(Config.from_dict(meta["config"]), meta["identity"])
    tok = load_tokenizer(folder / GDDS_TOKENIZER)
    counts = ck.load_tensors(folder / COUNTS_FILE)["train_counts"].numpy()
    data = Data(tok, {}, {}, {"train": counts}, None, {"model_folder": str(folder)})
    if with_data:
        data = build_data(cfg.data)
        if data.tokenizer.identity() != tok.identity():
            raise ConfigError(f"data.corpus={cfg.data.corpus} gives another tokenizer than the model folder's; "
                              "evaluate the model on the corpus it was trained on")
    kernel_file = folder / KERNEL_FILE
    embeddings = ck.load_tensors(kernel_file)["embeddings"] if kernel_file.is_file() else None
    dev = resolve_device(device)
    run: Run = assemble(cfg, data, dev, progress=False, embeddings=embeddings)
    if not run.matches(meta["identity"]):
        raise ck.CheckpointError(f"{folder} rebuilds another set-up than it was exported with (tokenizer, "
                                 f"process or model differ; gdds {meta.get('gdds_version')} wrote it)")
    ck.load_module(run.model, ck.load_tensors(folder / WEIGHTS_FILE), f"{folder}/{WEIGHTS_FILE}")
    run.model.to(dev).eval()
    return LoadedRun(cfg, run, folder, meta["weights"], dev)


def open_model(path: Path | str, device: str = "auto", weights: str = "ema", with_data: bool = True) -> LoadedRun:
    """A run folder (:func:`gdds.engine.build.load_run`) or a model folder (:func:`load_model_folder`)."""
    if is_model_folder(path):
        return load_model_folder(path, device, with_data)
    return load_run(Path(path), weights=weights, device=device)
