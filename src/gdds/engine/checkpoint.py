"""Training checkpoints: complete, verified, written atomically.

Layout of a run folder::

    RUN_DIR/checkpoints/step-00000500/   model.safetensors, ema.safetensors, state.pt,
                                         config.yaml, run.json, tokenizer/, manifest.json
    RUN_DIR/checkpoints/last -> step-00000500      (a symlink, replaced atomically)

A checkpoint is assembled in a hidden temporary folder and renamed into place
only when complete; ``manifest.json`` (written last) holds the size and SHA-256
of every file and is verified on load. A run killed mid-checkpoint therefore
leaves ``last`` pointing at the previous intact checkpoint; an old checkpoint is renamed
away before it is deleted; the next start of the run removes the leftovers (:func:`clean`).
:func:`checkpoint_embeddings` reads a model's token embedding back, for the semantic kernel.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from ..data.embeddings.files import PathLike, _as_matrix, _describe, _Shape
from ..files import sha256_file, write_atomically

MANIFEST = "manifest.json"
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # a full disk, a file-size limit, a quota
STEP_PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or does not match the run."""


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run (``step-*``), oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and not p.is_symlink())


def save_checkpoint(
    run_dir: Path, step: int, writers: dict[str, Callable[[Path], None]], keep: int = 2
) -> Path:
    """Write a checkpoint for ``step``: ``writers[name](path)`` writes file/folder ``name``.

    The folder is built under a temporary name, verified by its manifest, renamed
    into place, and ``last`` is repointed; then only the newest ``keep`` are kept. A folder
    that goes (an older checkpoint, or one of the same step that ``last`` never reached) is
    renamed to ``.trash-*`` before it is deleted, so no ``step-*`` folder is ever half-deleted.
    A write that fails (a full disk, a file-size limit) raises :class:`CheckpointError` and
    leaves the previous checkpoint as it was.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    replaced = None
    try:
        tmp.mkdir()
        for name, write in writers.items():
            write(tmp / name)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
        text = json.dumps({"step": step, "files": manifest}, indent=1)
        write_atomically(tmp / MANIFEST, lambda fh: fh.write(text.encode()))
        replaced = _set_aside(final) if final.exists() else None
        os.replace(tmp, final)
    except OSError as exc:
        previous = f"the previous checkpoint {(root / 'last').resolve().name} is intact" \
            if (root / "last").exists() else "no checkpoint was written before it"
        fix = "free disk space (or raise the file-size limit)" if exc.errno in _NO_ROOM else "fix that"
        raise CheckpointError(f"could not write checkpoint {final} ({exc.strerror or exc}); {previous}: {fix}, "
                              f"then continue with `gdds train --resume {Path(run_dir)}`") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    link = root / f".last-{uuid.uuid4().hex[:8]}"
    os.symlink(final.name, link)
    os.replace(link, root / "last")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(_set_aside(old))
    if replaced is not None:
        shutil.rmtree(replaced)
    return final


def _set_aside(folder: Path) -> Path:
    """Rename ``folder`` to a ``.trash-*`` name beside it (one atomic step), to be deleted."""
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    os.replace(folder, trash)
    return trash


def clean(run_dir: Path) -> None:
    """Remove what a killed process left in ``checkpoints/`` (a half-written ``.tmp-*`` checkpoint, a
    ``.trash-*`` folder half-deleted, a ``.last-*`` link): called by the process that owns the run
    (:func:`gdds.engine.run_folder.own`), never by a reader of a run that may be training."""
    root = checkpoint_root(run_dir)
    for stale in root.glob(".*") if root.is_dir() else ():
        if not stale.name.startswith((".tmp-", ".trash-", ".last-")):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """Check every file of ``folder`` against its manifest; return the manifest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {MANIFEST}: it is incomplete; delete it")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {folder}: {MANIFEST} is corrupt ({exc})") from exc
    for name, meta in manifest["files"].items():
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
        if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            raise CheckpointError(
                f"checkpoint {folder}: {name} is truncated or corrupt ({f.stat().st_size} bytes, "
                f"expected {meta['bytes']}); resume from an earlier checkpoint or delete this one"
            )
    return manifest


def latest_checkpoint(run_dir: Path) -> Path:
    """The verified checkpoint that ``last`` points to (else the newest ``step-*``)."""
    root = checkpoint_root(run_dir)
    started = any((Path(run_dir) / name).exists() for name in (".lock", "data.json"))
    if not root.is_dir() and not started:
        raise CheckpointError(f"{run_dir} is not a run folder (it has no checkpoints/ folder) nor a model folder "
                              "(no config.json + model.safetensors); check the path")
    last = root / "last"
    if not last.exists():
        found = list_checkpoints(run_dir)
        if not found:
            config = Path(run_dir) / "config.yaml"
            raise CheckpointError(
                f"{run_dir} is a run with no checkpoint yet (it stopped, or is still training, before its first "
                f"one; train.ckpt_every sets when that comes); to train it from the start, run `gdds train "
                f"--config {config if config.is_file() else 'CONFIG'} --out {run_dir}`")
        last = found[-1]
    folder = last.resolve()
    verify_checkpoint(folder)
    return folder


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors file of (contiguous, CPU) tensors, written atomically."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_atomically(path, lambda fh: fh.write(data))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict without aliases (tied weights are stored once)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in module.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor
    return out


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Load ``tensors`` into ``module``; only aliases of stored tensors may be absent."""
    expected = module_tensors(module)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(module.state_dict()))
    wrong = sorted(k for k in expected if k in tensors and tensors[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {[(k, tuple(tensors[k].shape), tuple(expected[k].shape)) for k in wrong[:5]]}"
        )
    module.load_state_dict(tensors, strict=False)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path``, atomically; a failed write (a full disk, a file-size limit) raises
    its ``OSError`` (torch reports it as a ``RuntimeError`` whose context is that error)."""

    def write(fh: BinaryIO) -> None:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from exc
            raise

    write_atomically(path, write)


def load_torch(path: Path) -> Any:
    """``torch.load`` of a file gdds wrote (``state.pt``) with ``weights_only``: a pickle that holds anything
    but tensors and plain containers is refused, never run, with a :class:`CheckpointError` naming it."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a state gdds saved: it holds Python objects that a weights-only load refuses (nothing "
            f"of it ran; {' '.join(str(exc).split())[:160]}...); copy the run again, or start it afresh with "
            "gdds train --config") from exc


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


_WEIGHT_FILES = ("model.safetensors", "ema.safetensors")


def _checkpoint_file(path: Path, ema: bool) -> Path:
    """The weights file to read: a ``.safetensors`` file as is (or its EMA sibling), else the
    file of a checkpoint folder (verified against its manifest) or of a run's latest checkpoint
    (:func:`latest_checkpoint`)."""
    name = "ema.safetensors" if ema else "model.safetensors"
    if path.is_file():
        if not ema or path.name == name:
            return path
        candidate = path.parent / name
        if not candidate.is_file():
            raise FileNotFoundError(f"ema=True but there are no EMA weights next to {path} (looked for {candidate})")
        return candidate
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if (path / MANIFEST).is_file() or any((path / f).exists() for f in _WEIGHT_FILES):
        folder = path  # a checkpoint folder
        verify_checkpoint(folder)
    elif checkpoint_root(path).is_dir():
        folder = latest_checkpoint(path)  # a run folder
    else:
        raise FileNotFoundError(f"no checkpoint under {path}: neither a checkpoint folder (with {MANIFEST}) "
                                f"nor a run folder (with {checkpoint_root(path).name}/)")
    file = folder / name
    if not file.is_file():
        what = "EMA weights" if ema else "model weights"
        raise FileNotFoundError(f"checkpoint {folder} has no {what} (looked for {file})")
    return file


def checkpoint_embeddings(path: PathLike, key: str = "embed.weight", ema: bool = False) -> Tensor:
    """The input token embedding ``[m, d]`` (float32) of one of our checkpoints.

    ``path`` is a ``.safetensors`` file (read as is), a checkpoint folder (verified with
    :func:`verify_checkpoint` first), or a run folder (its newest intact
    checkpoint, from :func:`latest_checkpoint`: ``checkpoints/last``, or the
    newest ``step-*`` folder when ``last`` is missing; verified too). A missing, truncated or
    corrupt checkpoint raises :class:`CheckpointError`. With ``ema=True`` the
    EMA weights ``ema.safetensors`` are read instead (``FileNotFoundError`` when absent, never
    a silent fallback). ``key`` is the parameter name, ``embed.weight`` for our models (an
    ``nn.Embedding`` called ``embed``); a unique name ending in ``"." + key`` (e.g.
    ``_orig_mod.embed.weight`` from a compiled model) is accepted too.
    """
    from safetensors import safe_open

    file = _checkpoint_file(Path(path), ema)
    with safe_open(str(file), framework="pt") as fh:
        names = list(fh.keys())
        name = key if key in names else None
        if name is None:
            ends = [n for n in names if n.endswith("." + key)]
            if len(ends) == 1:
                name = ends[0]
            else:
                listing = {n: _Shape(fh.get_slice(n).get_shape()) for n in names}
                problem = f"several names end in {key!r}" if ends else f"no parameter {key!r}"
                raise ValueError(f"{file}: {problem}; available keys: {_describe(listing)}")
        value = fh.get_tensor(name)
    return _as_matrix(value, f"{file}[{name}]")
