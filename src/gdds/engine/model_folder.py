"""Model folders: a trained model that leaves its machine, in the layout of a Hugging Face Hub model
repository, and loaded back without the corpus it was trained on.

``export_model(run_dir, out_dir)`` writes::

    config.json            format, gdds version, the run's configuration, architecture, method,
                           process (schedule, kernel and all their parameters), vocabulary size and
                           special ids, the run identity a load must reproduce, where it came from
    model.safetensors      the weights (EMA by default)
    tokenizer.json         the base tokenizer for ``tokenizers`` / ``transformers`` (no special tokens added)
    tokenizer_config.json  what ``transformers.AutoTokenizer`` needs to read tokenizer.json
    configuration_gdds.py  ``transformers`` code (``auto_map`` in config.json): ``AutoModel.from_pretrained(
    layers_gdds.py         folder, trust_remote_code=True)`` is the network, whichever gdds trained
    modeling_gdds.py       (gdds.engine.hf_files)
    compact_vocab.json     when the model uses a compact vocabulary: model id -> tokenizer.json id
    gdds_tokenizer/        the tokenizer as gdds stores it (exact reload, identity checked)
    kernel.safetensors     the kernel's data that the configuration cannot rebuild (embeddings)
    unigram.safetensors    the training split's token counts (the no-training baseline of gdds eval)
    README.md              a model card: evaluation table, training data and compute, how to load

``config.json`` also records the size and SHA-256 of the other files. The folder is replaced
atomically (:func:`gdds.files.replace_folder`: a kill leaves the old folder or the new one, whole).
:func:`load_model_folder` checks the files first (:mod:`gdds.engine.model_files`: hashes, nothing read
from outside the folder, the weights' shapes against the declared network before allocating it), then
rebuilds the process, the method and the network from these files alone.
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..data import CompactTokenizer, TextTokenizer, load_tokenizer
from ..files import interrupted_replace, recover_folder, replace_folder
from ..kernels import KERNELS
from ..objectives import METHODS, Method
from ..version import __version__
from . import checkpoint as ck
from .build import LoadedRun, Run, assemble, build_model, kernel_embeddings, load_run
from .config import Config, ConfigError
from .corpus import Data, build_data
from .distributed import resolve_device
from .hf_files import folder_tokenizer, transformers_files
from .legacy import as_saved
from .model_card import model_card
from .model_files import (
    AGAIN,
    CARD_FILE,
    COMPACT_FILE,
    CONFIG_FILE,
    COUNTS_FILE,
    FORMAT,
    GDDS_TOKENIZER,
    KERNEL_FILE,
    TOKENIZER_JSON,
    WEIGHTS_FILE,
    ModelFolderError,
    check_network_fits,
    file_records,
    own_file,
    read_config,
    read_tensors,
    verify_files,
)


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


def _write(loaded: LoadedRun, run_dir: Path, folder: Path) -> None:
    """Write the model folder of ``loaded`` into the empty ``folder`` (``config.json`` last, with the hashes
    of the others)."""
    run, tok, pc = loaded.run, loaded.run.data.tokenizer, loaded.cfg.process
    folder_tokenizer(tok).save(str(folder / TOKENIZER_JSON))
    tok.save(folder / GDDS_TOKENIZER)
    if isinstance(tok, CompactTokenizer):
        tok.vocab.save(folder / COMPACT_FILE)
    ck.save_tensors(folder / WEIGHTS_FILE, ck.module_tensors(run.model))
    ck.save_tensors(folder / COUNTS_FILE, {"train_counts": run.data.unigram_counts()})
    if run.process is not None and KERNELS.get(pc.kernel).needs_embeddings:
        ck.save_tensors(folder / KERNEL_FILE, {"embeddings": kernel_embeddings(pc, run.data).contiguous()})
    hf = transformers_files(loaded, folder)
    (folder / CARD_FILE).write_text(model_card(loaded, run_dir))
    record = {**_config_record(loaded, run_dir), **hf, "files": file_records(folder)}
    (folder / CONFIG_FILE).write_text(json.dumps(record, indent=1))


def export_model(run_dir: Path | str, out_dir: Path | str, weights: str = "ema", overwrite: bool = False) -> Path:
    """Write the model folder of ``run_dir``'s latest checkpoint to ``out_dir``; when ``run_dir`` is itself a
    model folder, a verified copy of it. An existing ``out_dir`` is replaced only with ``overwrite``, and
    atomically (:func:`gdds.files.replace_folder`, which also cleans what a killed export left)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    recover_folder(out_dir)
    source_is_model = is_model_folder(run_dir)
    if source_is_model and out_dir.exists() and out_dir.resolve() == run_dir.resolve():
        raise ConfigError(f"{out_dir} is the model folder being exported; choose another folder")
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} exists; choose another folder or pass --overwrite")
    if source_is_model:
        return _copy_model_folder(run_dir, out_dir, weights)
    loaded = load_run(run_dir, weights=weights, device="cpu")
    return replace_folder(out_dir, functools.partial(_write, loaded, run_dir))


def _copy_model_folder(source: Path, out_dir: Path, weights: str) -> Path:
    """``source``, a model folder, copied to ``out_dir`` once its files are verified."""
    meta = read_config(source)
    verify_files(source, meta)
    if weights == "raw" and meta["weights"] != "raw":
        raise ConfigError(f"{source} is a model folder holding {meta['weights']} weights only; for the raw "
                          "weights export the run folder it came from with --weights raw")
    return replace_folder(out_dir, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True))


def _tokenizer(folder: Path, meta: dict[str, Any]) -> TextTokenizer:
    """The folder's tokenizer, which must be the one the model was trained with."""
    path = own_file(folder, GDDS_TOKENIZER)
    try:
        tok = load_tokenizer(path)
    except KeyError as exc:
        raise ModelFolderError(f"{path}: a saved tokenizer lacks the field {exc}; {AGAIN}") from exc
    except ValueError as exc:
        raise ModelFolderError(f"{exc}; {AGAIN}") from exc
    if tok.identity() != meta["identity"].get("tokenizer"):
        raise ModelFolderError(f"{path} is not the tokenizer this model was trained with (config.json records "
                               f"another); {AGAIN}")
    return tok


def _tensor(folder: Path, name: str, key: str) -> torch.Tensor:
    """The tensor ``key`` of the folder's file ``name``."""
    path = own_file(folder, name)
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing; {AGAIN}")
    tensors = read_tensors(path)
    if key not in tensors:
        raise ModelFolderError(f"{path} holds no tensor {key!r}; {AGAIN}")
    return tensors[key]


def _check_weights(folder: Path, cfg: Config, vocab_size: int, method: type[Method]) -> None:
    """Refuse weights that are not the network ``config.json`` declares, before it is allocated."""
    try:
        with torch.device("meta"):  # the declared network, without memory
            network = build_model(cfg.model, vocab_size, cfg.data.seq_len, method)
    except ConfigError as exc:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: {exc}; {AGAIN}") from exc
    check_network_fits(own_file(folder, WEIGHTS_FILE), network)


def load_model_folder(path: Path | str, device: str = "auto", with_data: bool = False) -> LoadedRun:
    """The model of a model folder, on ``device``, in eval mode. Without ``with_data`` nothing of the
    corpus is needed (sampling, scoring text); with it the configuration's corpus is built as for a
    run (``gdds eval``), and its tokenizer must be the folder's. Nothing outside the folder is read:
    a kernel's embeddings come from ``kernel.safetensors``, never from ``process.embeddings``."""
    folder = Path(path)
    meta = read_config(folder)
    verify_files(folder, meta)
    try:
        cfg = as_saved(Config.from_dict(meta["config"]), meta["identity"])
    except ConfigError as exc:
        raise ModelFolderError(f"{folder / CONFIG_FILE}: {exc}; {AGAIN}") from exc
    tok = _tokenizer(folder, meta)
    method = METHODS.get(cfg.method)
    _check_weights(folder, cfg, tok.vocab_size, method)
    counts = _tensor(folder, COUNTS_FILE, "train_counts").numpy()
    data = Data(tok, {}, {}, {"train": counts}, None, {"model_folder": str(folder)})
    if with_data:
        data = build_data(cfg.data)
        if data.tokenizer.identity() != tok.identity():
            raise ConfigError(f"data.corpus={cfg.data.corpus} gives another tokenizer than the model folder's; "
                              "evaluate the model on the corpus it was trained on")
    embeddings = None
    if method.noised and KERNELS.get(cfg.process.kernel).needs_embeddings:
        if not (folder / KERNEL_FILE).is_file():
            raise ModelFolderError(f"{folder / KERNEL_FILE} is missing: the {cfg.process.kernel} kernel's embeddings "
                                   f"are read from it and nowhere else (never from process.embeddings); {AGAIN}")
        embeddings = _tensor(folder, KERNEL_FILE, "embeddings")
    dev = resolve_device(device)
    run: Run = assemble(cfg, data, dev, progress=False, embeddings=embeddings)
    mismatch = run.mismatch(meta["identity"])
    if mismatch:
        raise ModelFolderError(f"{folder} rebuilds another set-up than it was exported with (gdds "
                               f"{meta.get('gdds_version')} wrote it): {mismatch}")
    ck.load_module(run.model, read_tensors(folder / WEIGHTS_FILE), f"{folder}/{WEIGHTS_FILE}")
    run.model.to(dev).eval()
    return LoadedRun(cfg, run, folder, meta["weights"], dev)


def open_model(path: Path | str, device: str = "auto", weights: str = "ema", with_data: bool = True) -> LoadedRun:
    """A run folder (:func:`gdds.engine.build.load_run`) or a model folder (:func:`load_model_folder`)."""
    old = interrupted_replace(path)
    if old is not None:
        raise ModelFolderError(f"{path} is missing: replacing it (gdds export --overwrite or save_pretrained) was "
                               f"killed, and its previous content is whole in {old}; rename it back (mv {old} "
                               f"{path}) or run the export again")
    if is_model_folder(path):
        return load_model_folder(path, device, with_data)
    if (Path(path) / CONFIG_FILE).is_file():
        raise ModelFolderError(f"{Path(path) / WEIGHTS_FILE} is missing: {path} has a {CONFIG_FILE} but no weights, an "
                               f"incomplete model folder; {AGAIN}")
    return load_run(Path(path), weights=weights, device=device)
