"""The files of a model folder (:mod:`gdds.engine.model_folder`), checked before anything is built
from them, each failure a :class:`ModelFolderError` that names the file and says what to do:

- ``config.json`` must be a JSON object of the model-folder format;
- ``config.json["files"]`` records the size and SHA-256 of every file the export wrote (but
  ``config.json`` itself and the ``README.md`` model card, which is the author's to edit), checked on
  every load: a ``tokenizer.json`` or ``gdds_tokenizer/`` of another model, a truncated weights file, a
  file added where gdds reads are refused. A folder exported before the hashes loads with a warning;
- every file gdds reads resolves inside the folder: a link out of it is refused (a Hugging Face cache
  snapshot's links into its own ``blobs/`` are inside);
- ``model.safetensors``' header (names, shapes, byte count) must be the network that ``config.json``
  declares, built on the ``meta`` device, so a damaged or hostile ``config.json`` cannot make the load
  allocate more than the weights file holds.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import sha256_file
from .checkpoint import CheckpointError, load_tensors

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_JSON = "config.json", "model.safetensors", "tokenizer.json"
GDDS_TOKENIZER, COMPACT_FILE, CARD_FILE = "gdds_tokenizer", "compact_vocab.json", "README.md"
KERNEL_FILE, COUNTS_FILE = "kernel.safetensors", "unigram.safetensors"
FORMAT = "gdds-model-v1"
AGAIN = "copy the model folder again, or export it again with gdds export RUN_DIR OUT_DIR --overwrite"
# Bytes per element of the safetensors dtypes.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
HEADER_LIMIT = 100 << 20  # the safetensors library's own limit on a header


class ModelFolderError(CheckpointError):
    """A model folder that is damaged, incomplete, edited after its export, or not self-contained."""


def read_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of ``folder``, an object of the model-folder format with the keys a load needs."""
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{path} is not valid JSON ({exc}): it is truncated or damaged; {AGAIN}") from exc
    if not isinstance(meta, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(meta).__name__}, not the object gdds export writes; "
                               f"{AGAIN}")
    if meta.get("format") != FORMAT:
        raise ModelFolderError(f"{path} is not a gdds model folder of format {FORMAT} (format "
                               f"{meta.get('format')!r}); {AGAIN}")
    missing = [key for key, kind in (("config", dict), ("identity", dict), ("weights", str))
               if not isinstance(meta.get(key), kind)]
    if missing:
        raise ModelFolderError(f"{path} lacks {missing}: it was edited or damaged; {AGAIN}")
    return meta


def _root(folder: Path) -> Path:
    """What files of ``folder`` may resolve into: the folder, or for a Hugging Face cache snapshot
    (``models--ORG--NAME/snapshots/REV``, files linked to ``../../blobs/``) the model's cache folder."""
    real = folder.resolve()
    if real.parent.name == "snapshots" and (real.parent.parent / "blobs").is_dir():
        return real.parent.parent
    return real


def own_file(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it stays inside the folder (no absolute name, no ``..``, no link
    that leads out): a model folder reads only its own files."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelFolderError(f"{folder / CONFIG_FILE} names the file {name!r}, outside the model folder; "
                               f"a model folder reads only its own files: {AGAIN}")
    path = folder / relative
    real = path.resolve()
    if not real.is_relative_to(_root(folder)):
        raise ModelFolderError(f"{path} is a link to {real}, outside the model folder; a model folder reads only "
                               "its own files: put the file itself in the folder")
    return path


def _read_paths(folder: Path) -> list[str]:
    """The names (relative to ``folder``) of what a load reads: the weights, counts and kernel files and
    everything under ``gdds_tokenizer/``."""
    names = [WEIGHTS_FILE, COUNTS_FILE, KERNEL_FILE, GDDS_TOKENIZER]
    names += [str(p.relative_to(folder)) for p in sorted((folder / GDDS_TOKENIZER).rglob("*"))]
    return [n for n in names if (folder / n).exists() or (folder / n).is_symlink()]


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file of ``folder`` but ``config.json`` and ``README.md`` (by relative name),
    for ``config.json["files"]``."""
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (CONFIG_FILE, CARD_FILE)}


def verify_files(folder: Path, meta: dict[str, Any]) -> None:
    """Check that what a load reads stays inside ``folder`` and, when ``meta`` records hashes, that every
    recorded file is the one exported and nothing gdds reads was added."""
    read = _read_paths(folder)
    for name in read:
        own_file(folder, name)
    records = meta.get("files")
    if records is None:
        warnings.warn(f"{folder} was exported by a gdds that recorded no file hashes: its files are not verified; "
                      "export it again to add them", stacklevel=3)
        return
    if not isinstance(records, dict):
        raise ModelFolderError(f"{folder / CONFIG_FILE}: \"files\" must map file names to sizes and hashes; {AGAIN}")
    for name, record in records.items():
        path = own_file(folder, name)
        if not path.is_file():
            raise ModelFolderError(f"{path} is missing from the model folder; {AGAIN}")
        size, digest = path.stat().st_size, sha256_file(path)
        if not isinstance(record, dict) or (size, digest) != (record.get("bytes"), record.get("sha256")):
            recorded = (f"{record.get('bytes')} bytes, sha256 {str(record.get('sha256'))[:12]}"
                        if isinstance(record, dict) else repr(record))
            raise ModelFolderError(f"{path} is not the file this model was exported with ({size:,} bytes, sha256 "
                                   f"{digest[:12]}; config.json records {recorded}): it was replaced, edited or "
                                   f"damaged; {AGAIN}")
    added = [n for n in read if (folder / n).is_file() and n not in records]
    if added:
        raise ModelFolderError(f"{folder / added[0]} is not among the files config.json records: it was added after "
                               f"the export; remove it, or {AGAIN}")


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensors that the safetensors file ``path`` holds, by name, from its header alone (8 bytes of
    length, then JSON), checked against the file's size: a truncated, empty or foreign file is refused
    before anything is allocated."""
    size = path.stat().st_size
    damaged = f"{path} is truncated or is not a safetensors file ({size:,} bytes)"
    with open(path, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little") if size >= 8 else 0
        if not 0 < length <= min(size - 8, HEADER_LIMIT):
            raise ModelFolderError(f"{damaged}; {AGAIN}")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"{damaged}: its header is not JSON ({exc}); {AGAIN}") from exc
    if not isinstance(header, dict):
        raise ModelFolderError(f"{damaged}: its header is not an object; {AGAIN}")
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = entry["data_offsets"]
            shape = tuple(int(n) for n in entry["shape"])
            fits = stop - start == math.prod(shape) * DTYPE_BYTES[entry["dtype"]] and 0 <= start <= stop
        except (KeyError, TypeError, ValueError):
            fits = False
        if not fits:
            raise ModelFolderError(f"{damaged}: its header entry {name!r} is malformed; {AGAIN}")
        shapes[name], end = shape, max(end, stop)
    if 8 + length + end != size:
        raise ModelFolderError(f"{damaged}: its header describes {8 + length + end:,} bytes; {AGAIN}")
    return shapes


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (its header checked first by :func:`tensor_shapes`)."""
    from safetensors import SafetensorError

    tensor_shapes(path)
    try:
        return load_tensors(path)
    except SafetensorError as exc:
        raise ModelFolderError(f"{path} is damaged ({exc}); {AGAIN}") from exc


def check_network_fits(path: Path, network: nn.Module) -> None:
    """Refuse weights ``path`` that are not ``network`` (built on the ``meta`` device from ``config.json``,
    so nothing is allocated): every parameter and persistent buffer with its shape. The tables it computes
    (positions) are bounded by the configuration's own check of ``data.seq_len`` (``engine/config.py``)."""
    held = tensor_shapes(path)
    state = network.state_dict(keep_vars=True)
    expected: dict[str, tuple[int, ...]] = {}
    seen: set[int] = set()
    for name, tensor in state.items():  # tied weights are stored once, under their first name
        if id(tensor) not in seen:
            seen.add(id(tensor))
            expected[name] = tuple(tensor.shape)
    missing = sorted(set(expected) - set(held))
    unexpected = sorted(set(held) - set(state))
    wrong = [(k, held[k], expected[k]) for k in expected if k in held and held[k] != expected[k]]
    config = path.parent / CONFIG_FILE
    if missing or unexpected or wrong:
        declared = sum(math.prod(s) for s in expected.values())
        raise ModelFolderError(
            f"{config} declares a network of {declared:,} numbers that {path.name} does not hold (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, (name, held, declared) {wrong[:3]}): config.json was "
            f"edited or belongs to another model; {AGAIN}")
