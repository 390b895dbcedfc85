"""A corpus as the token store reads it: named splits of documents in a fixed order, and a
fingerprint that is cheap to compute (file names, sizes, dates and a sampled hash of each file's
content, :func:`file_stats`; a package's version; a dataset's own fingerprint).

Three kinds of :class:`Corpus` (and :class:`HeldOutCorpus`, the held-out documents of any of them,
which a zero-shot evaluation stores):

- :class:`HashSplitCorpus`: our embedded corpora (Shakespeare, KJV, the Wikipedia sample), split
  90/5/5 by a hash of each document (:func:`gdds.data.corpora.splits.split_documents`), and local files or
  folders (:class:`gdds.data.corpora.local.LocalCorpus`: the same split, computed one file at a time);
- the named recipes of :mod:`gdds.data.corpora.recipes` (OpenWebText, LM1B, text8, WikiText-103, ...),
  each with the split the literature uses;
- ``hf:<name>[:<config>]``, any Hugging Face dataset with its own splits (:mod:`gdds.data.corpora.hf`).

:func:`resolve_corpus` turns ``data.corpus`` and ``data.corpus_args`` into one of them.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .splits import SPLITS, split_documents


class CorpusError(ValueError):
    """A corpus that cannot be read as configured; the message says what to fix."""


# Control characters, but not tab, newline, vertical tab, form feed and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
CONTROL_SHARE = 0.1  # a text with this share of control characters or more is binary data


def check_text(text: str, where: Path | str, at: int = 0) -> None:
    """Refuse text that is not text (:class:`CorpusError` naming ``where`` and what to do): any NUL
    character (binary data, or UTF-16 read as UTF-8: NUL never occurs in text), or control characters
    (other than whitespace) making up :data:`CONTROL_SHARE` of it or more. A few stray control
    characters are kept. ``at``: the position of ``text`` in the file, for the message."""
    nul = text.find("\x00")
    if nul >= 0:
        raise CorpusError(f"{where} holds NUL characters (the first at character {at + nul:,}): it is binary "
                          "data or not in the corpus's encoding (UTF-16?); remove it from the corpus (or narrow "
                          "corpus_args.glob) or convert it to text (corpus_args.encoding)")
    if _CONTROL.search(text) and len(_CONTROL.findall(text)) >= CONTROL_SHARE * len(text):
        raise CorpusError(f"{where} is mostly control characters, not text: remove it from the corpus (or narrow "
                          "corpus_args.glob) or fix the file")


class Corpus(ABC):
    """Named splits of documents. Every corpus a run trains on has ``train`` and ``valid`` (a
    :class:`HeldOutCorpus` has its one split only).

    ``documents(split, start)`` yields the split's documents from index ``start`` on, stripped
    of surrounding whitespace, blank ones left out, always in the same order. A split listed in
    ``streaming`` is read on the fly while training (never stored whole). ``packing`` is the
    packing the corpus is meant for (``"pad"`` for one sentence per document, as LM1B), a hint.
    """

    name: str
    streaming: frozenset[str] = frozenset()
    packing: str = "wrap"

    @abstractmethod
    def splits(self) -> tuple[str, ...]:
        """The split names this corpus has (``train`` first)."""

    @abstractmethod
    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        """The documents of ``split`` from index ``start`` on."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """A JSON record that changes when the data changes, computed without reading all the text."""

    def check(self) -> None:
        """Raise :class:`CorpusError` (or ``FileNotFoundError``/``ImportError``) naming the fix
        when the corpus cannot be read, before any long work starts. By default: that the
        first document of ``train`` can be read."""
        next(self.documents("train"), None)

    def size(self, split: str) -> int | None:
        """Number of documents of ``split`` when known without reading them (progress bars)."""
        return None

    def held_out(self) -> Iterator[str]:
        """The documents a zero-shot evaluation reads: the ``test`` split, else ``valid``."""
        return self.documents("test" if "test" in self.splits() else "valid")

    def _split(self, split: str) -> str:
        if split not in self.splits():
            raise CorpusError(f"corpus {self.name!r} has no {split!r} split; its splits are {list(self.splits())}")
        return split



HELD_OUT = "held_out"


class HeldOutCorpus(Corpus):
    """The held-out documents of ``corpus`` (:meth:`Corpus.held_out`, in that order) as the one split
    :data:`HELD_OUT`: what a zero-shot evaluation tokenises into a token store
    (:func:`gdds.data.tokens.prepare.open_store`, with the evaluated run's tokenizer given) and reads after.
    Only the held-out documents are read: a zero-shot set's training split may be absent or large."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus, self.name = corpus, f"{corpus.name} (held out)"

    def splits(self) -> tuple[str, ...]:
        return (HELD_OUT,)

    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        self._split(split)
        return itertools.islice(self.corpus.held_out(), start, None)

    def check(self) -> None:
        """The first held-out document can be read."""
        if next(self.documents(HELD_OUT), None) is None:
            raise CorpusError(f"corpus {self.corpus.name!r} has no held-out documents; check its test split")

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "held-out", "of": self.corpus.fingerprint()}

WHOLE_FILE_BYTES = 1 << 20  # files up to this size are hashed whole
SAMPLED_BLOCKS, BLOCK_BYTES = 16, 1 << 16  # larger ones: 16 blocks of 64 KiB, from the first byte to the last


def content_digest(path: Path, size: int) -> str:
    """sha256 of a file's content, reading at most 1 MiB: the whole file up to 1 MiB, else
    :data:`SAMPLED_BLOCKS` blocks of 64 KiB at evenly spaced offsets, the first at the start and the last
    ending at the end. An edit that keeps a file's size and date (``cp -p``, ``rsync -a``, ``touch -r``,
    two writes in one second) changes it whenever the file is small or the edit reaches a sampled block;
    ``gdds prepare --rebuild`` covers the rest."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= WHOLE_FILE_BYTES:
            h.update(fh.read())
        else:
            step = (size - BLOCK_BYTES) / (SAMPLED_BLOCKS - 1)
            for i in range(SAMPLED_BLOCKS):
                fh.seek(round(i * step))
                h.update(fh.read(BLOCK_BYTES))
    return h.hexdigest()


def file_stats(paths: list[Path], root: Path | None = None) -> list[list[Any]]:
    """``[name, size, mtime_ns, content digest]`` of each file (:func:`content_digest`): the
    fingerprint of local files."""
    out = []
    for p in paths:
        st = p.stat()
        name = str(p.relative_to(root)) if root else str(p.resolve())
        out.append([name, st.st_size, st.st_mtime_ns, content_digest(p, st.st_size)])
    return out


def package_fingerprint(*packages: str) -> dict[str, str | None]:
    """Installed version of each package (``None`` when missing)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class HashSplitCorpus(Corpus):
    """Documents loaded whole (``load()``), split by :func:`split_documents` (``valid``/``test``
    fractions, ``seed``). For corpora small enough to hold in memory while preparing."""

    def __init__(self, name: str, load: Callable[[], list[str]], fingerprint: Callable[[], dict[str, Any]],
                 valid: float = 0.05, test: float = 0.05, seed: int = 0) -> None:
        self.name, self._load, self._fingerprint = name, load, fingerprint
        self.valid, self.test, self.seed = valid, test, seed
        self._parts: dict[str, list[str]] | None = None

    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def _all(self) -> dict[str, list[str]]:
        if self._parts is None:
            docs = [d.strip() for d in self._load() if d.strip()]
            if not docs:
                raise CorpusError(f"corpus {self.name!r} has no text; check the files")
            if len(set(docs)) < 3:
                raise CorpusError(f"corpus {self.name!r} has {len(set(docs))} distinct document(s), too few for a "
                                  "train/valid/test split: split the text into documents (e.g. corpus_args.split="
                                  "paragraph for a local file) or give more text")
            split = split_documents(docs, self.valid, self.test, self.seed)
            self._parts = {name: [docs[i] for i in split[name]] for name in SPLITS}
        return self._parts

    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        yield from self._all()[self._split(split)][start:]

    def size(self, split: str) -> int | None:
        return len(self._parts[split]) if self._parts is not None else None

    def held_out(self) -> Iterator[str]:
        """Every document, in the order loaded: a corpus without a standard split that a run did not
        train on is held out whole."""
        return iter([d.strip() for d in self._load() if d.strip()])

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "hash-split", "name": self.name, "data": self._fingerprint(),
                "split": [self.valid, self.test, self.seed]}


def local_fingerprint(path: Path, glob: str) -> Callable[[], dict[str, Any]]:
    """The fingerprint of a local file or folder: :func:`file_stats` of its files, by relative name."""
    def fingerprint() -> dict[str, Any]:
        files = sorted(p for p in path.glob(glob) if p.is_file()) if path.is_dir() else [path]
        return {"path": str(path.resolve()), "glob": glob, "files": file_stats(files, path if path.is_dir() else None)}
    return fingerprint


def digest(record: Any) -> str:
    """sha256 of a JSON-able record, in a canonical form."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
