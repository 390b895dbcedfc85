"""A local file or folder of text as a corpus, read one file at a time.

The split is the hash split of :func:`gdds.data.corpora.splits.split_documents` (90/5/5 by default, by a
hash of each document's content), computed in one pass that keeps each document's key only (a
float and a digest, about 170 bytes), never the text: preparing a corpus of any size holds one
file in memory at a time.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .sources import Corpus, CorpusError, check_text, local_fingerprint
from .splits import SPLITS, document_key, split_keys


def local_files(path: str | Path, glob: str = "**/*.txt") -> list[Path]:
    """The files of a local corpus: ``path`` itself, or the files of the folder ``path`` matching
    ``glob`` (recursive by default), sorted by path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no corpus file or folder at {path}; check the path")
    files = sorted(p for p in path.glob(glob) if p.is_file()) if path.is_dir() else [path]
    if not files:
        present = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        seen = f"it holds {', '.join(present[:5])}{' ...' if len(present) > 5 else ''}" if present else "it is empty"
        raise FileNotFoundError(
            f"the folder {path} has no file matching {glob!r} ({seen}; the pattern is case-sensitive); choose the "
            "files with corpus_args.glob, on the command line e.g. 'data.corpus_args={glob: \"**/*.md\"}'")
    return files


def file_documents(file: Path, split: str = "file", encoding: str = "utf-8") -> list[str]:
    """The documents of one file: the whole text (``split="file"``) or each block of lines separated
    by blank lines (``split="paragraph"``). A file that is not text (NUL or mostly control characters)
    is a :class:`~gdds.data.corpora.sources.CorpusError` (:func:`~gdds.data.corpora.sources.check_text`)."""
    if split not in ("file", "paragraph"):
        raise ValueError(f"split must be 'file' or 'paragraph'; got {split!r}")
    try:
        text = file.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not valid {encoding} text ({err}); pass encoding= to read it") from err
    check_text(text, file)
    return re.split(r"\n\s*\n", text) if split == "paragraph" else [text]


class LocalCorpus(Corpus):
    """The documents of ``path`` (a file, or the files of a folder matching ``glob``): one per file
    (``split="file"``) or per paragraph (``"paragraph"``), split by hash (``valid``, ``test``, ``seed``).
    (``split="chars"``, one file split by character ranges, is a :class:`~gdds.data.corpora.chars.CharRangeCorpus`.)"""

    def __init__(self, path: Path, split: str = "file", glob: str = "**/*.txt", encoding: str = "utf-8",
                 valid: float = 0.05, test: float = 0.05, seed: int = 0) -> None:
        if split not in ("file", "paragraph"):
            raise CorpusError(f"corpus_args.split must be 'file', 'paragraph' or 'chars'; got {split!r}")
        self.path, self.mode, self.glob, self.encoding = Path(path), split, glob, encoding
        self.name = str(path)
        self.valid, self.test, self.seed = valid, test, seed
        self._where: np.ndarray | None = None  # split index of each document

    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def _all(self) -> Iterator[str]:
        for file in local_files(self.path, self.glob):
            try:
                docs = file_documents(file, self.mode, self.encoding)
            except CorpusError:
                raise
            except ValueError as err:
                raise CorpusError(f"{err} (corpus_args.encoding)") from err
            for doc in docs:
                if doc.strip():
                    yield doc.strip()

    def _assignment(self) -> np.ndarray:
        if self._where is None:
            keys = [document_key(self.seed, doc) for doc in self._all()]
            if not keys:
                raise CorpusError(f"the corpus {self.path} has no text; check the files (corpus_args.glob)")
            if len({digest for _, digest in keys}) < 3:
                raise CorpusError(f"the corpus {self.path} has fewer than 3 distinct documents, too few for a "
                                  "train/valid/test split: give more files, or split it by paragraphs "
                                  "(corpus_args.split=paragraph) or by characters (corpus_args.split=chars)")
            where = np.zeros(len(keys), dtype=np.int8)
            for index, (name, members) in enumerate(split_keys(keys, self.valid, self.test).items()):
                assert name == SPLITS[index]
                where[members] = index
            self._where = where
        return self._where

    def check(self) -> None:
        self._assignment()

    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        wanted = SPLITS.index(self._split(split))
        where = self._assignment()
        seen = 0
        for i, doc in enumerate(self._all()):
            if where[i] == wanted:
                if seen >= start:
                    yield doc
                seen += 1

    def size(self, split: str) -> int | None:
        return int((self._assignment() == SPLITS.index(split)).sum())

    def held_out(self) -> Iterator[str]:
        """Every document, in file order (a corpus a run did not train on is held out whole)."""
        return self._all()

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "local", **local_fingerprint(self.path, self.glob)(), "mode": self.mode,
                "encoding": self.encoding, "split": [self.valid, self.test, self.seed]}
