"""Exact k-nearest-neighbour graphs of token embeddings, built in row chunks and
cached on disk (``docs/math.md`` section 3, "Semantic kNN kernel").

Memory is ``O(m k)`` for the result plus one ``[chunk, m]`` distance block; no
``m x m`` matrix is ever held. The cache goes through :mod:`gdds.files`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .. import files
from .base import exclusion_mask

METRICS = ("gaussian", "cosine")
_CANDIDATE_SLACK = 8  # extra candidates re-ranked with exact distances
_BLOCK_FLOATS = 2**25  # floats per working block (128 MiB in float32)


def _prepare(embeddings: Tensor, metric: str) -> Tensor:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    E = torch.as_tensor(embeddings)
    if E.dim() != 2 or E.shape[0] < 2:
        raise ValueError(f"embeddings must be a [m, d] tensor with m >= 2; got shape {tuple(E.shape)}")
    E = E.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(E).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if metric == "cosine":
        norms = E.norm(dim=1, keepdim=True)
        if (norms == 0).any():
            raise ValueError("cosine metric: some embeddings are all-zero vectors")
        E = E / norms
    return E


def knn_graph(
    embeddings: Tensor,
    k: int,
    metric: str = "gaussian",
    progress: bool = True,
    exclude: Sequence[int] | Tensor | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Exact kNN graph, self excluded: ``(neighbours [m, k] long, distances [m, k] float32)``,
    computed on ``device`` (a GPU builds the 50k-token graph in seconds) and returned on the CPU.

    Tokens in ``exclude`` are never anyone's neighbour (they still get neighbours).

    Distances are squared Euclidean (``gaussian``) or cosine distances
    ``1 - cos`` (``cosine``), sorted ascending per row, ties broken by token id.
    Candidates come from one matrix product per row chunk; the best ``k + 8`` are
    re-ranked with distances computed directly from the differences.
    """
    E = _prepare(embeddings, metric).to(device)
    m, d = E.shape
    banned = exclusion_mask(m, exclude)
    banned = None if banned is None else banned.to(device)
    allowed = m - (0 if banned is None else int(banned.sum()))
    if not 1 <= k < allowed:
        raise ValueError(f"k must be in [1, m - 1] = [1, {allowed - 1}] (excluded ids do not count), got {k}")
    cand = min(allowed - 1, k + _CANDIDATE_SLACK)
    rows = max(1, min(_BLOCK_FLOATS // m, _BLOCK_FLOATS // (cand * d)))
    sq = (E * E).sum(dim=1)
    nbr = torch.empty(m, k, dtype=torch.long)
    dist = torch.empty(m, k, dtype=torch.float32)
    from tqdm.auto import tqdm

    bar = tqdm(total=m, desc="kNN graph", unit="tok", delay=1.0, disable=not progress)
    for start in range(0, m, rows):
        stop = min(m, start + rows)
        block = E[start:stop]
        D = torch.addmm(sq[start:stop, None] + sq[None, :], block, E.T, alpha=-2.0)
        own = torch.arange(start, stop, device=E.device)
        D[own - start, own] = float("inf")
        if banned is not None:
            D[:, banned] = float("inf")
        cidx = D.topk(cand, dim=1, largest=False).indices.sort(dim=1).values
        exact = (block[:, None, :] - E[cidx]).square_().sum(dim=-1)
        if metric == "cosine":
            exact = exact * 0.5
        order = exact.sort(dim=1, stable=True).indices[:, :k]
        nbr[start:stop] = cidx.gather(1, order).cpu()
        dist[start:stop] = exact.gather(1, order).cpu()
        bar.update(stop - start)
    bar.close()
    return nbr, dist


def graph_key(embeddings: Tensor, k: int, metric: str, exclude: Sequence[int] | Tensor | None = None) -> str:
    """Cache key: a hash of the embedding values and shape and the graph settings."""
    E = _prepare(embeddings, "gaussian")
    banned = exclusion_mask(E.shape[0], exclude)
    h = hashlib.sha256()
    h.update(f"gdds-knn-v1|shape={tuple(E.shape)}|k={k}|metric={metric}|".encode())
    if banned is not None:
        h.update(b"exclude|" + banned.nonzero().reshape(-1).numpy().tobytes())
    h.update(E.numpy().tobytes())
    return h.hexdigest()[:40]


def cached_knn_graph(
    embeddings: Tensor,
    k: int,
    metric: str = "gaussian",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    exclude: Sequence[int] | Tensor | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """:func:`knn_graph` (built on ``device``), loaded from ``cache_dir`` when present, else built and
    saved there atomically (temporary file + rename). An unreadable cache file is
    an error (delete it to rebuild), never silently replaced; a cache folder that cannot be written
    (read-only, full) is a warning, and the graph is returned all the same."""
    folder = Path(cache_dir) if cache_dir is not None else files.cache_dir()
    path = folder / f"knn-{graph_key(embeddings, k, metric, exclude)}.pt"
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
            return data["neighbours"].long(), data["distances"]
        except Exception as exc:
            raise RuntimeError(f"kNN cache file {path} is unreadable ({exc}); delete it to rebuild") from exc
    nbr, dist = knn_graph(embeddings, k, metric, progress, exclude, device)
    data = {"neighbours": nbr.to(torch.int32), "distances": dist}
    files.write_cache(path, lambda fh: torch.save(data, fh), "kNN graph")
    return nbr, dist
