"""Token embeddings from a user file: ``.npy``, ``.npz``, ``.pt``/``.pth``,
``.safetensors``, or word2vec/GloVe text aligned with a vocabulary.

Overview of all embedding sources: :mod:`gdds.data.embeddings`.
"""
from __future__ import annotations

import gzip
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .filler import filler_rows, filler_scale

PathLike = str | Path
Vocab = Sequence[str] | Mapping[str, int]

_TENSOR_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")
_TEXT_SUFFIXES = (".txt", ".vec", ".txt.gz", ".vec.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_TENSOR_SUFFIXES + _TEXT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _as_matrix(value, source: str) -> Tensor:
    """``value`` as a finite float32 ``[m, d]`` CPU tensor, or a ValueError naming ``source``."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{source}: expected a numeric array, got dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise ValueError(f"{source}: expected a tensor, got {type(value).__name__}")
    if value.is_complex():
        raise ValueError(f"{source}: expected real values, got dtype {value.dtype}")
    if value.dim() != 2:
        raise ValueError(f"{source}: embeddings must have rank 2 [m, d]; got shape {tuple(value.shape)}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{source}: embeddings are empty, shape {tuple(value.shape)}")
    value = value.detach().to("cpu", torch.float32).contiguous()
    bad = ~torch.isfinite(value)
    if bad.any():
        rows = bad.any(dim=1).nonzero().reshape(-1)
        raise ValueError(f"{source}: {int(bad.sum())} NaN or infinite values, in {rows.numel()} rows "
                         f"(first: {rows[:5].tolist()})")
    return value


def _describe(entries: Mapping[str, object]) -> str:
    parts = []
    for name, value in list(entries.items())[:20]:
        shape = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        parts.append(f"{name} {shape}")
    more = len(entries) - 20
    return ", ".join(parts) + (f", ... ({more} more)" if more > 0 else "")


def _pick(entries: Mapping[str, object], key: str | None, source: str) -> tuple[str, object]:
    """The entry ``key`` of a file holding several arrays (the only one if ``key`` is None)."""
    if not entries:
        raise ValueError(f"{source}: the file holds no tensors")
    if key is None:
        if len(entries) == 1:
            return next(iter(entries.items()))
        raise ValueError(f"{source}: the file holds {len(entries)} tensors; pass key= to choose one of: "
                         f"{_describe(entries)}")
    if key not in entries:
        raise ValueError(f"{source}: unknown key {key!r}; available keys: {_describe(entries)}")
    return key, entries[key]


def _flatten(obj, prefix: str = "") -> dict[str, object]:
    """Nested dicts flattened to ``{"a.b": value}`` (a torch state dict stays as it is)."""
    out: dict[str, object] = {}
    for name, value in obj.items():
        full = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _vocab_list(vocab: Vocab) -> list[str]:
    if isinstance(vocab, Mapping):
        n = len(vocab)
        ids = np.fromiter(vocab.values(), dtype=np.int64, count=n)
        if n and (ids.min() < 0 or ids.max() >= n or np.unique(ids).size != n):
            raise ValueError(f"a vocab mapping must assign the ids 0..{n - 1} once each")
        tokens: list[str] = [""] * n
        for token, i in vocab.items():
            tokens[int(i)] = token
        return tokens
    if isinstance(vocab, (str, bytes)):
        raise ValueError("vocab must be a sequence of token strings (or a token -> id mapping), not a string")
    return [str(t) for t in vocab]


def _read_text(path: Path, vocab: Vocab, seed: int) -> Tensor:
    """word2vec / GloVe text: ``token v1 ... vd`` per line, optional header line ``m d``."""
    tokens = _vocab_list(vocab)
    if not tokens:
        raise ValueError("vocab is empty")
    where: dict[str, list[int]] = {}
    for i, token in enumerate(tokens):
        where.setdefault(token, []).append(i)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    rows: dict[int, np.ndarray] = {}
    dim = None
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                continue
            if dim is None:
                if lineno == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                    dim = int(fields[1])  # word2vec header "m d"
                    if dim < 1:
                        raise ValueError(f"{path}:1: header says dimension {dim}")
                    continue
                dim = len(fields) - 1
                if dim < 1:
                    raise ValueError(f"{path}:{lineno}: expected 'token v1 v2 ...', got {line.strip()[:80]!r}")
            if len(fields) < dim + 1:
                raise ValueError(f"{path}:{lineno}: expected a token and {dim} values, got {len(fields)} fields")
            token = " ".join(fields[:-dim])  # tokens may contain spaces (GloVe 840B)
            ids = where.get(token)
            if ids is None or ids[0] in rows:  # not in the vocabulary, or a repeat: first line wins
                continue
            try:
                vec = np.array(fields[-dim:], dtype=np.float32)
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: values are not numbers ({exc})") from exc
            if not np.isfinite(vec).all():
                raise ValueError(f"{path}:{lineno}: NaN or infinite values for token {token!r}")
            for i in ids:
                rows[i] = vec
    if dim is None:
        raise ValueError(f"{path}: the file holds no embeddings")
    if not rows:
        raise ValueError(f"{path}: none of the {len(tokens)} vocabulary tokens appears in the file "
                         f"(first tokens: {tokens[:5]}); is this the right vocabulary?")
    out = np.zeros((len(tokens), dim), dtype=np.float32)
    found = np.fromiter(rows.keys(), dtype=np.int64, count=len(rows))
    out[found] = np.stack([rows[int(i)] for i in found])
    missing = np.setdiff1d(np.arange(len(tokens)), found)
    if missing.size:
        out[missing] = filler_rows(missing, dim, filler_scale(out[found]), seed)
        examples = [tokens[i] for i in missing[:5]]
        warnings.warn(f"{path}: {missing.size} of {len(tokens)} vocabulary tokens are missing from the file "
                      f"(e.g. {examples}); they get small random vectors (seed={seed})", stacklevel=3)
    return torch.from_numpy(out)


def load_embedding_file(
    path: PathLike, key: str | None = None, vocab: Vocab | None = None, seed: int = 0
) -> Tensor:
    """Token embeddings ``[m, d]`` (float32) from a user file.

    - ``.npy``: one array; ``.npz``: ``key`` names the array when there are several;
    - ``.pt`` / ``.pth`` (loaded with ``weights_only=True``): a tensor, or a dict (nested dicts
      are flattened to dotted keys, entries that are not tensors are ignored) with ``key``
      required when it holds several tensors;
    - ``.safetensors``: ``key`` required when the file holds several tensors;
    - ``.txt`` / ``.vec`` (optionally ``.gz``): word2vec/GloVe text ``token v1 ... vd``, one
      token a line, optional header ``m d``. Needs ``vocab``: the token string of each id (a
      sequence, or a token -> id mapping); row ``i`` is the vector of ``vocab[i]`` (the first
      line wins for a repeated token). Tokens missing from the file get small deterministic
      random vectors (seeded by ``seed``) and a warning says how many.

    For tensor files ``vocab``, when given, only checks that the row count matches.
    Errors: ``FileNotFoundError`` for a missing file, ``ValueError`` for an unsupported
    suffix, an unknown or missing ``key`` (the message lists the keys), a rank other than 2,
    NaN/inf values, or a row count that does not match ``vocab``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no embedding file at {path}")
    suffix = _suffix(path)
    source = str(path)
    if suffix in _TEXT_SUFFIXES:
        if vocab is None:
            raise ValueError(f"{path}: text embeddings need vocab= (the token string of each id) to align "
                             "rows with token ids")
        if key is not None:
            raise ValueError(f"{path}: key= applies to tensor files, not to text embeddings")
        return _read_text(path, vocab, seed)
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"{path}: unknown key {key!r}: a .npy file holds a single array (no keys)")
        value = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            name, value = _pick({n: archive[n] for n in archive.files}, key, source)
        source = f"{path}[{name}]"
    elif suffix in (".pt", ".pth"):
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping):
            tensors = {n: v for n, v in _flatten(obj).items() if isinstance(v, Tensor)}  # skip metadata
            name, value = _pick(tensors, key, source)
            source = f"{path}[{name}]"
        elif key is not None:
            raise ValueError(f"{path}: unknown key {key!r}: the file holds a single {type(obj).__name__} (no keys)")
        else:
            value = obj
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            names = list(fh.keys())
            shapes = {n: fh.get_slice(n) for n in names}
            name, _ = _pick({n: _Shape(shapes[n].get_shape()) for n in names}, key, source)
            value = fh.get_tensor(name)
        source = f"{path}[{name}]"
    else:
        raise ValueError(f"{path}: unsupported embedding file suffix {suffix!r}; supported: "
                         f"{', '.join(_TENSOR_SUFFIXES + _TEXT_SUFFIXES)}")
    E = _as_matrix(value, source)
    if vocab is not None and E.shape[0] != len(vocab):
        raise ValueError(f"{source}: {E.shape[0]} rows but the vocabulary has {len(vocab)} tokens")
    return E


class _Shape:
    """Stand-in with a ``shape`` for listing safetensors keys without reading the tensors."""

    def __init__(self, shape):
        self.shape = tuple(shape)
