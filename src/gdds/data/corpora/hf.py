"""Hugging Face datasets as :class:`~gdds.data.corpora.sources.Corpus` objects: :class:`HFSource` (the rows of a
dataset of the local ``datasets`` cache, or of local files read by a packaged builder, never the Hub)
and :class:`HFCorpus` (our splits as row ranges of its splits, with a detokeniser), used by the
recipes of :mod:`gdds.data.corpora.recipes` and by ``hf:<name>[:<config>]``. Every load runs with the Hub
switched off (:func:`offline`): nothing is downloaded at run time.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .detokenizers import DETOKENIZER_VERSION, DETOKENIZERS, group_articles
from .sources import Corpus, CorpusError, file_stats, package_fingerprint

_EXTENSIONS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst")
_BATCH = 1024
Part = tuple[str, int, "int | None"]  # (the dataset's split, first row, end row) with slice semantics


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hub access switched off for ``datasets`` and ``huggingface_hub`` (both read their
    offline flag at call time), restored afterwards."""
    import datasets.config
    import huggingface_hub.constants

    saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             huggingface_hub.constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved[:2]
        huggingface_hub.constants.HF_HUB_OFFLINE = saved[2]


def _data_files(data_files: Any, primary: str) -> dict[str, list[str]]:
    """``data_files`` as ``{split: [absolute paths]}`` (a path or a list goes to ``primary``), globs
    expanded; a missing file raises ``FileNotFoundError`` naming it."""
    spec = data_files if isinstance(data_files, dict) else {primary: data_files}
    out: dict[str, list[str]] = {}
    for split, paths in spec.items():
        found: list[str] = []
        for pattern in [paths] if isinstance(paths, str) else list(paths):
            matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
            if not matches or not all(Path(m).is_file() for m in matches):
                raise FileNotFoundError(f"no data file {pattern!r} (corpus_args.data_files, split {split!r}; "
                                        "for a folder, give a glob such as 'folder/*.parquet')")
            found += [str(Path(m).resolve()) for m in matches]
        out[str(split)] = found
    return out


def _infer_builder(files: dict[str, list[str]]) -> str:
    kinds = set()
    for path in itertools.chain.from_iterable(files.values()):
        name = path[: -len(suffix)] if (suffix := next((s for s in _COMPRESSION if path.endswith(s)), "")) else path
        kinds.add(_EXTENSIONS.get(Path(name).suffix.lower()))
    if len(kinds) != 1 or None in kinds:
        choices = sorted(set(_EXTENSIONS.values()))
        raise CorpusError(f"cannot tell the format of the data files from their extensions "
                          f"({sorted(map(str, kinds))}): pass corpus_args.builder, one of {choices}")
    return kinds.pop()


class HFSource:
    """The rows of a Hugging Face dataset from the local cache, or of local files read by a packaged
    builder (``files``). Loads through :func:`offline`: nothing is ever downloaded."""

    def __init__(self, dataset: str, config: str | None = None, data_files: Any = None, builder: str | None = None,
                 cache_dir: str | None = None, options: dict[str, Any] | None = None, streaming: bool = False,
                 primary: str = "train") -> None:
        self.dataset, self.config, self.cache_dir, self.streaming = dataset, config, cache_dir, streaming
        self.options = dict(options or {})
        self.files = _data_files(data_files, primary) if data_files is not None else None
        self.builder = (builder or _infer_builder(self.files)) if self.files else None
        if self.files:
            listed = sorted(itertools.chain.from_iterable(self.files.values()))
            self.where = f"the {self.builder} files {listed[0]}" + (f" ... ({len(listed)} files)" if listed[1:] else "")
        else:
            self.where = f"Hugging Face dataset {dataset!r}" + (f" (config {config!r})" if config else "")
        self._loaded: dict[str | None, Any] = {}

    def _missing(self) -> str:
        how = ("download its files once where the Hub is reachable (huggingface_hub.snapshot_download("
               f"{self.dataset!r}, repo_type='dataset', allow_patterns=[the files of config {self.config!r}])) "
               "and pass their paths (a glob works) as corpus_args.data_files" if self.streaming else
               f"run datasets.load_dataset({self.dataset!r}, {self.config!r}) once where the Hub is reachable, with "
               f"the same HF_HOME" + (f" and cache_dir={self.cache_dir!r}" if self.cache_dir else "") +
               ", or pass local files as corpus_args.data_files (with corpus_args.builder)")
        return f"{self.where} is not in the local datasets cache, and gdds never downloads: {how}"

    def load(self, split: str | None) -> Any:
        """One split (a ``Dataset``, or an ``IterableDataset`` when streaming); ``None``: all of them."""
        if split not in self._loaded:
            try:
                import datasets
            except ImportError as err:
                raise ImportError("Hugging Face corpora need the package datasets: pip install gdds[hf]") from err
            path, config = (self.builder, None) if self.files else (self.dataset, self.config)
            extra = {"data_files": self.files} if self.files else {}
            with offline():
                try:
                    self._loaded[split] = datasets.load_dataset(path, config, split=split, cache_dir=self.cache_dir,
                                                                streaming=self.streaming, **extra, **self.options)
                except ConnectionError as err:
                    raise FileNotFoundError(self._missing()) from err
                except ValueError as err:
                    if "Unknown split" not in str(err):
                        raise
                    raise CorpusError(f"{self.where} has no split {split!r} ({err}): map our splits to its own "
                                      "with corpus_args.split_names") from err
        return self._loaded[split]

    def loaded(self, split: str) -> bool:
        """Whether ``split`` is loaded already."""
        return split in self._loaded

    def splits(self) -> list[str]:
        """The dataset's own split names."""
        return list(self.files) if self.files else list(self.load(None))

    def fingerprint(self, splits: list[str]) -> dict[str, Any]:
        """Files' names, sizes and dates, or the cached dataset's own fingerprint and cache files."""
        record: dict[str, Any] = {"dataset": self.dataset, "config": self.config, "builder": self.builder,
                                  "options": self.options, "versions": package_fingerprint("datasets")}
        if self.files:
            record["files"] = {split: file_stats([Path(p) for p in paths]) for split, paths in self.files.items()}
        elif not self.streaming:
            tables = {s: self.load(s) for s in splits}
            record["splits"] = {s: [ds._fingerprint, file_stats([Path(f["filename"]) for f in ds.cache_files])]
                                for s, ds in tables.items()}
        return record


def text_column(ds: Any, field: str | None, where: str) -> str:
    """The text column of ``ds`` (``field``, else ``text``, else its only string column)."""
    features = ds.features
    if features is None:  # a streamed dataset whose files carry no schema: the first batch has one
        first = next(iter(ds.with_format("arrow").iter(batch_size=1)), None)
        features = {} if first is None else {name: first.schema.field(name).type for name in first.column_names}
    columns = list(features)
    strings = [n for n, f in features.items() if str(getattr(f, "dtype", f)) in ("string", "large_string")]
    if field is not None:
        if field not in columns:
            raise CorpusError(f"{where} has no column {field!r}; its columns are {columns} (corpus_args.field)")
        return field
    if "text" in columns:
        return "text"
    if len(strings) == 1:
        return strings[0]
    raise CorpusError(f"{where} has no 'text' column and not exactly one string column ({columns}): "
                      "name it with corpus_args.field")


def texts(ds: Any, field: str, skip: int = 0) -> Iterator[list[str]]:
    """Batches of the non-blank texts of column ``field``, the first ``skip`` of them left out. Whole
    batches are skipped in Arrow, without making Python strings (Arrow's trim matches ``str.strip``)."""
    import pyarrow.compute as pc

    for table in ds.select_columns([field]).with_format("arrow").iter(batch_size=_BATCH):
        column = table.column(field)
        keep = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0), False)
        count = pc.sum(keep).as_py() or 0
        if count <= skip:
            skip -= count
            continue
        yield column.filter(keep).to_pylist()[skip:]
        skip = 0


def _rows(ds: Any, lo: int, hi: int | None) -> Any:
    """Rows ``lo:hi`` of a dataset (negative bounds count from the end; streamed ones take no negative)."""
    if not hasattr(ds, "__len__"):
        ds = ds.skip(lo) if lo else ds
        return ds.take(hi - lo) if hi is not None else ds
    start, stop, _ = slice(lo, hi).indices(len(ds))
    return ds if (start, stop) == (0, len(ds)) else ds.select(range(start, stop))


class HFCorpus(Corpus):
    """Our splits as row ranges of a Hugging Face dataset's splits (``parts``: split -> (its split,
    first row, end row)), one document per non-blank row (``articles``: WikiText lines grouped into
    articles), each passed through the detokeniser ``detokenize`` (a name of ``DETOKENIZERS``, called
    with the keywords ``detokenize_options``). ``rule`` says the split in words, for errors."""

    def __init__(self, name: str, source: HFSource, parts: dict[str, Part] | Callable[[], dict[str, Part]],
                 field: str | None = None, detokenize: str | None = None, articles: bool = False,
                 streaming: frozenset[str] = frozenset(), rule: str = "",
                 detokenize_options: dict[str, Any] | None = None) -> None:
        self.name, self.source, self._parts, self.field, self.articles = name, source, parts, field, articles
        self.detokenize, self.streaming, self.rule = detokenize, streaming, rule
        self.detokenize_options = dict(detokenize_options or {})
        try:
            self._clean: Callable[[str], str] = (
                functools.partial(DETOKENIZERS.get(detokenize), **self.detokenize_options) if detokenize else str)
        except ValueError as err:
            raise CorpusError(f"{err} (corpus_args.detokenize)") from None
        self._fields: dict[str, str] = {}

    @functools.cached_property
    def parts(self) -> dict[str, Part]:
        """Our split -> (the dataset's split, first row, end row)."""
        return self._parts() if callable(self._parts) else self._parts

    def splits(self) -> tuple[str, ...]:
        return tuple(self.parts)

    def _column(self, split: str) -> str:
        if split not in self._fields:
            self._fields[split] = text_column(self.source.load(split), self.field, self.source.where)
        return self._fields[split]

    def documents(self, split: str, start: int = 0) -> Iterator[str]:
        theirs, lo, hi = self.parts[self._split(split)]
        rows, column = _rows(self.source.load(theirs), lo, hi), self._column(theirs)
        if self.articles:
            lines = itertools.chain.from_iterable(
                table.column(column).to_pylist() for table in
                rows.select_columns([column]).with_format("arrow").iter(batch_size=_BATCH))
            docs = (doc for doc in (self._clean(a).strip() for a in group_articles(t or "" for t in lines)) if doc)
            yield from itertools.islice(docs, start, None)
            return
        for batch in texts(rows, column, start):
            yield from (self._clean(text).strip() for text in batch)

    def size(self, split: str) -> int | None:
        """Rows of the split's range (a cached, non-streamed dataset only)."""
        theirs, lo, hi = self.parts[split]
        if self.articles or self.source.streaming or not self.source.loaded(theirs):
            return None
        return len(_rows(self.source.load(theirs), lo, hi))

    def check(self) -> None:
        """The data is reachable, has enough rows for the split, and every split has a document."""
        for ours, (theirs, lo, hi) in self.parts.items():
            ds, need = self.source.load(theirs), max(abs(lo), abs(hi or 0)) + 1
            if lo or hi is not None:
                have = len(ds) if hasattr(ds, "__len__") else sum(t.num_rows for t in ds.take(need).with_format(
                    "arrow").iter(batch_size=_BATCH))
                if have < need:
                    raise CorpusError(f"corpus {self.name!r}: {self.source.where} has {have} rows in {theirs!r}, too "
                                      f"few for its split ({self.rule}), which needs at least {need}: lower "
                                      "corpus_args.valid_docs or give more data")
            first = self.documents(ours)
            found = next(first, None)
            first.close()
            if found is None:
                raise CorpusError(f"corpus {self.name!r}: split {ours!r} ({self.source.where}, {theirs!r}) has no "
                                  "text; check the data files or corpus_args.field")

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name, "parts": {ours: list(part) for ours, part in self.parts.items()},
                "field": self.field, "articles": self.articles,
                "detokenize": [self.detokenize, self.detokenize_options, DETOKENIZER_VERSION],
                "source": self.source.fingerprint(sorted({theirs for theirs, _, _ in self.parts.values()}))}
