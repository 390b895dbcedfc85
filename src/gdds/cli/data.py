"""``gdds prepare``: tokenise a configuration's corpus once into its token store (and compute its
co-occurrence embeddings when the kernel uses them), so that runs, ``gdds eval`` and ``gdds sample``
start from memory-mapped tokens without tokenising again (:mod:`gdds.engine.corpus`); ``--rebuild``
tokenises afresh a store that exists."""
from __future__ import annotations

import argparse
import sys
import time

from ..engine.config import ConfigError, load_config, preset_names
from ..engine.corpus import build_data, cooccurrence, store_of
from ..kernels import KERNELS


def add_prepare(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="tokenise a configuration's corpus once into its token store",
        description="Build the token store of CONFIG's data.* settings (a preset: "
        f"{', '.join(preset_names())}; or a YAML file; with dotted.key=value overrides): the corpus is read "
        "and tokenised once, in parallel, into memory-mapped shards under the cache folder ($GDDS_CACHE_DIR). "
        "A killed prepare resumes where it stopped; a run on a prepared corpus does not tokenise it again. "
        "The store is found by the files' names, sizes, dates and a hash of their content (whole up to 1 MiB, "
        "sampled above). Training prepares on first use too: this command does it ahead (e.g. before a "
        "multi-GPU job).")
    p.add_argument("config", metavar="CONFIG", help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="configuration overrides")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tokenising threads (default: the number of CPUs)")
    p.add_argument("--rebuild", action="store_true",
                   help="tokenise afresh even if the store exists (e.g. after an edit inside a large file that the "
                   "sampled hash missed); runs reading the old store are not disturbed")
    p.set_defaults(run=run_prepare, parser=p)


def run_prepare(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        cfg = load_config(args.config, args.overrides)
        start = time.perf_counter()
        store = store_of(cfg.data, progress=sys.stderr.isatty(), workers=args.workers, build=True,
                         rebuild=args.rebuild)
        seconds = time.perf_counter() - start
        lines = [f"token store: {store.folder} (corpus {cfg.data.corpus}, tokenizer {store.tokenizer.name}, "
                 f"{'rebuilt' if args.rebuild else 'ready'} in {seconds:.1f} s)",
                 f"{'split':<8}{'documents':>14}{'tokens':>16}{'shards':>8}"]
        for name in store.splits():
            entry = store.manifest["splits"][name]
            lines.append(f"{name:<8}{entry['docs']:>14,}{entry['tokens']:>16,}{len(entry['shards']):>8}")
        streaming = store.manifest["streaming"]
        if streaming:
            lines.append(f"read on the fly while training: {', '.join(streaming)}")
        pc = cfg.process
        if KERNELS.get(pc.kernel).needs_embeddings and pc.embeddings == "cooccurrence":
            start = time.perf_counter()
            emb = cooccurrence(pc, build_data(cfg.data))
            lines.append(f"co-occurrence embeddings {tuple(emb.shape)} from the first {pc.embedding_tokens:,} "
                         f"training tokens: cached ({time.perf_counter() - start:.1f} s)")
    except ConfigError as exc:
        parser.error(str(exc))
    print("\n".join(lines))
    return 0
