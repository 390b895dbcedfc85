"""Hugging Face ``datasets`` as corpora, offline only (nothing may download at run
time). The standard benchmarks (``openwebtext``, ``lm1b``, ``text8``,
``wikitext``, ``ptb_text_only``) load by name when they are in the local ``datasets``
cache; any packaged builder (``text``, ``json``, ``csv``, ``parquet``) loads local files
given as ``data_files=``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_HF_HINT = "pip install gdds[hf]"


@contextlib.contextmanager
def _offline() -> Iterator[None]:
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


def _text_field(columns: list[str], string_columns: list[str], field: str | None, where: str) -> str:
    if field is not None:
        if field not in columns:
            raise ValueError(f"{where} has no column {field!r}; its columns are {columns}: pass field=")
        return field
    if "text" in columns:
        return "text"
    if len(string_columns) == 1:
        return string_columns[0]
    raise ValueError(f"{where} has no 'text' column and not exactly one string column ({columns}): pass field=")


def hf_documents(
    name: str, config: str | None = None, *, split: str = "train", field: str | None = None, **load_options: Any
) -> list[str]:
    """The rows of one split of a Hugging Face dataset, one document per row.

    ``field`` names the text column; by default ``text``, else the only string column
    (``ptb_text_only`` has ``sentence``). ``load_options`` go to ``datasets.load_dataset``
    (``data_files``, ``cache_dir``, ``sample_by`` of the ``text`` builder, ...). The Hub
    is never contacted: a dataset that is not in the local cache raises
    ``FileNotFoundError`` saying how to provide it.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"Hugging Face corpora need the package datasets: {_HF_HINT}") from err
    where = f"Hugging Face dataset {name!r}" + (f" (config {config!r})" if config else "")
    with _offline():
        try:
            table = datasets.load_dataset(name, config, split=split, **load_options)
        except ConnectionError as err:
            raise FileNotFoundError(
                f"{where} is not in the local datasets cache, and gdds never downloads at run time: "
                f"download it once with datasets.load_dataset({name!r}, {config!r}) where the Hub is reachable "
                "(same HF_HOME / cache_dir), or give local files: load_corpus('hf:text', data_files=[...])"
            ) from err
    columns = list(table.column_names)
    strings = [c for c, feature in table.features.items()
               if getattr(feature, "dtype", None) in ("string", "large_string")]
    return list(table[_text_field(columns, strings, field, where)])
