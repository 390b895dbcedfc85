"""Deterministic train / valid / test split by document, from a hash of the content."""
from __future__ import annotations

import hashlib
from collections import Counter

SPLITS = ("train", "valid", "test")


def _unit(seed: int, doc: str) -> tuple[float, str]:
    """A uniform number in [0, 1) from ``sha256(seed, doc)``, and the hex digest (tie-break)."""
    digest = hashlib.sha256(f"{seed}\0".encode() + doc.encode("utf-8", "surrogatepass")).hexdigest()
    return int(digest[:16], 16) / 2**64, digest


def _distance(u: float, interval: tuple[float, float]) -> float:
    low, high = interval
    return max(low - u, u - high, 0.0)


def document_key(seed: int, doc: str) -> tuple[float, str]:
    """The split key of one document: ``u`` uniform in [0, 1) from ``sha256(seed, doc)`` and the hex
    digest (identical documents share it; it breaks ties)."""
    return _unit(seed, doc)


def split_documents(docs: list[str], valid: float = 0.05, test: float = 0.05, seed: int = 0) -> dict[str, list[int]]:
    """Assign each document index to ``"train"``, ``"valid"`` or ``"test"``.

    A document goes to valid when ``u < valid``, to test when ``valid <= u < valid + test``
    and to train otherwise, with ``u`` uniform in [0, 1) from ``sha256(seed, content)``:
    the split does not depend on the order of ``docs``, and identical documents share a
    split. When at least 3 documents are distinct, no split with a positive fraction is
    left empty: an empty one takes the distinct document whose ``u`` is nearest to its
    interval from a split that keeps at least one. Returns sorted index lists.
    """
    return split_keys([document_key(seed, doc) for doc in docs], valid, test)


def split_keys(keys: list[tuple[float, str]], valid: float = 0.05, test: float = 0.05) -> dict[str, list[int]]:
    """:func:`split_documents` from each document's :func:`document_key` (so a corpus read one file
    at a time keeps only the keys, not the text)."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"need valid >= 0, test >= 0 and valid + test < 1; got valid={valid}, test={test}")
    intervals = {"valid": (0.0, valid), "test": (valid, valid + test), "train": (valid + test, 1.0)}
    distinct = {key[1]: key for key in keys}
    where = {digest: next(s for s in ("valid", "test", "train") if u < intervals[s][1] or s == "train")
             for digest, (u, _) in distinct.items()}
    if len(distinct) >= 3:
        for name, (low, high) in intervals.items():
            if high <= low or name in where.values():
                continue
            sizes = Counter(where.values())
            movable = [d for d in distinct if sizes[where[d]] >= 2]
            pick = min(movable, key=lambda d: (_distance(distinct[d][0], (low, high)), d))
            where[pick] = name
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, (_, digest) in enumerate(keys):
        out[where[digest]].append(i)
    return out
