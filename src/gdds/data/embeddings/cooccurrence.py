"""Corpus co-occurrence embeddings, for any tokenizer: counts -> PPMI -> truncated SVD.

Works for any tokenizer; tokens without an embedding get filler rows
(:func:`gdds.data.embeddings.filler.filler_rows`). Overview of all embedding sources: :mod:`gdds.data.embeddings`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .filler import filler_rows, filler_scale

_DENSE_SVD_MAX = 1500  # active tokens up to which the "auto" solver uses a dense SVD
_CHUNK_TOKENS = 1 << 18  # cooccurrence_counts: tokens whose pairs are built at a time


def _documents(
    tokens: np.ndarray | Tensor | Sequence[np.ndarray], vocab_size: int, offsets: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(ids [n], offsets [n_docs + 1])``; ids in their own integer dtype (never copied: a
    co-occurrence budget of 50M tokens is 200-400 MB of ids)."""
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
    tokens: np.ndarray | Sequence[np.ndarray],
    vocab_size: int,
    window: int = 5,
    offsets: np.ndarray | None = None,
    weighting: str = "harmonic",
    chunk: int = _CHUNK_TOKENS,
):
    """Symmetric co-occurrence counts as a ``scipy.sparse.csr_matrix`` ``[vocab_size, vocab_size]``
    (float64).

    Every pair of tokens at distance ``d`` in ``1..window`` inside the same document adds
    ``1/d`` (``weighting="harmonic"``, as in GloVe) or ``1`` (``"flat"``) to both
    ``C[a, b]`` and ``C[b, a]``; a token repeated at distance ``d`` adds ``2/d`` (or 2) to
    its diagonal entry. Pairs never straddle a document boundary.

    Documents are a list of 1-D id arrays (or the rows of a 2-D array), or one concatenated
    1-D array with ``offsets [n_docs + 1]`` (document ``j`` is ``tokens[offsets[j]:offsets[j+1]]``;
    without ``offsets`` the array is one document). The work is vectorised over the pairs whose
    first token lies in one ``chunk`` of tokens at a time (a sparse build per chunk, no Python loop
    over tokens), so memory beyond the ids and the counts stays about ``chunk * window * 50`` bytes
    (~60 MB) whatever the number of tokens. Each chunk counts its pairs per distance as integers (exact,
    so the chunks' counts merge in any order: as a binary counter does, each copied ``O(log chunks)``
    times); the float counts are then formed as one pass over all tokens forms them (:func:`_repeated_sum`
    per distance, the distances added in order ``1..window``, then ``C + C.T``), bit for bit whatever
    the ``chunk``: the embeddings, and the ``embeddings_sha256`` of the runs trained on them, do not
    depend on how the tokens were cut.
    """
    import scipy.sparse as sp

    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if weighting not in ("harmonic", "flat"):
        raise ValueError(f"weighting must be 'harmonic' or 'flat', got {weighting!r}")
    ids, offsets = _documents(tokens, vocab_size, offsets)
    shape = (vocab_size, vocab_size)
    # Integer counts of every (distance, first, second) triple: row (d - 1) * vocab_size + first.
    stacked = (window * vocab_size, vocab_size)
    count_type = np.int32 if ids.size < np.iinfo(np.int32).max else np.int64  # a count <= the tokens
    sums: list[tuple[int, sp.csr_matrix]] = []  # (chunks summed, their counts), fewer chunks last
    for start in range(0, ids.size, chunk):
        # Tokens start .. end - 1: the chunk's first tokens and the window after them. A pair (i, i + d)
        # is inside one document exactly when token i + d sits at position >= d of its document.
        end = min(start + chunk + window, ids.size)
        where = np.arange(start, end, dtype=np.int64)
        pos = where - offsets[np.searchsorted(offsets, where, side="right") - 1]
        part = ids[start:end]
        first = min(chunk, ids.size - start)  # pairs whose first token is one of these
        rows, cols = [], []
        for d in range(1, window + 1):
            n = min(first, part.size - d)
            if n <= 0:
                break
            inside = pos[d:d + n] >= d
            rows.append(part[:n][inside] + np.int64((d - 1) * vocab_size))
            cols.append(part[d:d + n][inside])
        if rows:
            r = np.concatenate(rows)
            counted = (1, sp.csr_matrix((np.ones(r.size, dtype=count_type), (r, np.concatenate(cols))),
                                        shape=stacked))
            while sums and sums[-1][0] == counted[0]:
                n, earlier = sums.pop()
                counted = (2 * n, earlier + counted[1])
            sums.append(counted)
    counts = sum((m for _, m in sums), sp.csr_matrix(stacked, dtype=count_type)).tocsr()
    C = sp.csr_matrix(shape, dtype=np.float64)
    for d in range(1, window + 1):
        k = counts[(d - 1) * vocab_size:d * vocab_size].tocsr()
        k.sum_duplicates()
        if k.nnz:
            w = 1.0 / d if weighting == "harmonic" else 1.0
            C = C + sp.csr_matrix((_repeated_sum(k.data, w), k.indices, k.indptr), shape=shape)
    C = (C + C.T).tocsr()
    C.sum_duplicates()
    return C


def _repeated_sum(counts: np.ndarray, w: float, block: int = 1 << 20) -> np.ndarray:
    """For each ``k`` in ``counts``, ``w`` added ``k`` times one after another in float64 (``((w + w) + w) + ...``),
    as summing the duplicates of one sparse build does: the float value of the co-occurrence counts
    (built once per distance over all tokens up to 57e42e9) that the trained runs' embeddings hold.
    Not ``k * w``: for ``w = 1/3`` or ``1/5`` the two differ in the last bits. One sequential
    ``cumsum`` up to the largest ``k``, ``block`` terms at a time."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.empty(counts.shape, dtype=np.float64)
    if counts.size == 0:
        return out
    order = np.argsort(counts, kind="stable")
    wanted = counts[order]
    acc, done, i = 0.0, 0, 0
    while i < wanted.size:
        top = min(int(wanted[-1]), done + block)
        run = np.cumsum(np.concatenate([[acc], np.full(top - done, w)]))  # run[j]: done + j terms
        j = int(np.searchsorted(wanted, top, side="right"))
        out[order[i:j]] = run[wanted[i:j] - done]
        acc, done, i = float(run[-1]), top, j
    return out


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
    tokens: np.ndarray | Sequence[np.ndarray],
    vocab_size: int,
    dim: int = 64,
    window: int = 5,
    offsets: np.ndarray | None = None,
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
    :func:`filler_rows`; seeded by ``seed``), with norm about 1% of the median norm of the
    real rows: finite and distinct, as the semantic kernel's kNN graph needs, and far from
    the real rows under the Gaussian metric.

    Memory is ``O(n_tokens + nnz(C))`` plus the pairs of one chunk of tokens (:func:`cooccurrence_counts`);
    5M WordPiece tokens of Shakespeare take a few seconds.
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
    out[missing] = filler_rows(missing, dim, filler_scale(out[has_row]), seed)
    return torch.from_numpy(out)
