"""A text that is one document (text8, a single local file) read as a stream of characters and split
by character ranges, each range cut into documents at spaces so the token store can tokenise in
parallel (:class:`CharRangeCorpus`)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .hf import HFSource, text_column
from .sources import Corpus, CorpusError, check_text, file_stats

_PIECE = 1 << 20  # characters read at a time from a file


class CharRangeCorpus(Corpus):
    """A single-document text as ONE stream of characters split by ranges: fixed sizes, or
    ``fractions`` (valid, test) of its length (a local file with ``corpus_args.split: chars``).

    text8 (the first 10^8 bytes of an English Wikipedia dump, cleaned to ``a``-``z`` and single
    spaces) is split as D3PM (Austin et al. 2021), SEDD and MDLM do: the first 90,000,000
    characters are train, the next 5,000,000 valid, the last 5,000,000 test (``train_chars``,
    ``valid_chars``, ``test_chars``). Each range is cut into documents of about
    ``chunk_chars`` characters at a space, which is dropped (the documents joined by single spaces
    give back the range, stripped; no word is cut), so the store can tokenise them in parallel.
    Files: ``path``, the file ``text8`` unzipped from mattmahoney.net/dc/text8.zip, read in pieces
    of 1 MiB characters; or a Hugging Face dataset (``dataset`` / ``data_files``) whose ``train``
    rows, concatenated in order, are the text."""

    def __init__(self, path: Path | None, source: HFSource | None, field: str | None, encoding: str,
                 sizes: tuple[int, int, int] | None, chunk_chars: int, fractions: tuple[float, float] | None = None,
                 name: str = "text8") -> None:
        self.path, self.source, self.field, self.encoding = path, source, field, encoding
        self.sizes, self.fractions, self.chunk, self.name = sizes, fractions, chunk_chars, name
        self._total: int | None = None

    @classmethod
    def build(cls, o: dict[str, Any], valid: float, test: float, seed: int) -> CharRangeCorpus:
        """The corpus of ``corpus_args`` ``o`` (``path``, or the Hugging Face options)."""
        hub = o["dataset"] is not None or o["data_files"] is not None
        if (o["path"] is None) != hub:
            raise CorpusError("text8 reads corpus_args.path (the file text8 unzipped from "
                              "mattmahoney.net/dc/text8.zip) or a dataset (dataset / data_files): give one of them")
        sizes = (o["train_chars"], o["valid_chars"], o["test_chars"])
        if not all(isinstance(n, int) and n > 0 for n in (*sizes, o["chunk_chars"])):
            raise CorpusError(f"text8's train_chars, valid_chars, test_chars and chunk_chars must be positive "
                              f"integers; got {[*sizes, o['chunk_chars']]}")
        path = None if hub else Path(o["path"]).expanduser()
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"no text8 file at {str(path)!r} (corpus_args.path); unzip "
                                    "mattmahoney.net/dc/text8.zip")
        source = HFSource(o["dataset"] or "", o["config"], o["data_files"], o["builder"], o["cache_dir"],
                          o["load_options"]) if hub else None
        return cls(path, source, o["field"], o["encoding"], sizes, o["chunk_chars"])

    def splits(self) -> tuple[str, ...]:
        return ("train", "valid", "test")

    def _pieces(self) -> Iterator[str]:
        if self.source is not None:
            ds = self.source.load("train")
            column = text_column(ds, self.field, self.source.where)
            for table in ds.select_columns([column]).with_format("arrow").iter(batch_size=64):
                yield from (text for text in table.column(column).to_pylist() if text)
            return
        try:
            with open(str(self.path), encoding=self.encoding, newline="") as fh:
                at = 0
                while piece := fh.read(_PIECE):
                    check_text(piece, self.path, at)
                    at += len(piece)
                    yield piece
        except UnicodeDecodeError as err:
            raise CorpusError(f"{self.path} is not valid {self.encoding} text ({err}): pass corpus_args.encoding") \
                from err

    def _sizes(self) -> tuple[int, int, int]:
        """Characters of train, valid and test (counting the text once when split by fractions)."""
        if self._total is None:
            self._total = sum(len(piece) for piece in self._pieces())
        if self.fractions is None:
            assert self.sizes is not None
            return self.sizes
        n = self._total
        valid, test = (int(n * f) for f in self.fractions)
        if min(valid, test) < 1:
            raise CorpusError(f"{self.name} has {n:,} characters: too few for a character split with valid and "
                              f"test fractions {self.fractions}; give more text or larger fractions")
        return (n - valid - test, valid, test)

    def check(self) -> None:
        """The text is readable and at least ``train_chars + valid_chars + test_chars`` long."""
        sizes = self._sizes()
        assert self._total is not None
        if self._total < sum(sizes):
            where = self.path or (self.source and self.source.where)
            raise CorpusError(
                f"text8 ({where}) has {self._total:,} characters, fewer than train_chars + "
                f"valid_chars + test_chars = {' + '.join(f'{n:,}' for n in sizes)} = {sum(sizes):,}: use "
                "the whole text8 file (100,000,000 characters) or lower those corpus_args")

    def _range(self, a: int, b: int) -> Iterator[str]:
        """Characters ``a:b`` of the text, in pieces."""
        at = 0
        for piece in self._pieces():
            if at + len(piece) > a:
                yield piece[max(a - at, 0):b - at]
            at += len(piece)
            if at >= b:
                return

    def _chunks(self, a: int, b: int) -> Iterator[str]:
        """Characters ``a:b`` cut at the last space within ``chunk_chars`` (else the first space after)."""
        pending, at = "", 0
        for piece in self._range(a, b):
            pending, at = pending[at:] + piece, 0
            while len(pending) - at > self.chunk:
                cut = pending.rfind(" ", at + 1, at + self.chunk + 1)
                cut = cut if cut > at else pending.find(" ", at + self.chunk)
                if cut < 0:
                    break
                yield pending[at:cut]
                at = cut + 1
        yield pending[at:]

    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        self.check()
        sizes = self._sizes()
        index = self.splits().index(self._split(split))
        a = sum(sizes[:index])
        docs = (doc for doc in (chunk.strip() for chunk in self._chunks(a, a + sizes[index])) if doc)
        yield from itertools.islice(docs, start, None)

    def fingerprint(self) -> dict[str, Any]:
        data = file_stats([self.path]) if self.path else self.source and self.source.fingerprint(["train"])
        return {"kind": "chars", "name": self.name, "data": data, "chars": self.sizes and list(self.sizes),
                "fractions": self.fractions and list(self.fractions),
                "chunk_chars": self.chunk, "encoding": self.encoding, "field": self.field}
