"""Data-path benchmark of the token store, on a synthetic English-like corpus it writes itself.

For each size (GB of text; default 0.2 and 2.0) the benchmark writes a folder of plain-text files
(1 to 5 MB each, smaller below 0.2 GB; one document per file; sentences of 4 to 27 words drawn
with Zipf-like frequencies from a fixed word list, capitals, commas, end punctuation and
paragraphs; deterministic from ``--seed``; written file by file, so generating never holds more
than one file in memory). The
corpus is read as a local folder (``data.corpus=<folder>``, ``data.corpus_args={glob: "**/*.txt"}``,
hash split 90/5/5 by document) with GPT-2's BPE (``data.tokenizer=gpt2``; the rest of the ``tiny``
preset, with ``data.seq_len=1024`` and ``train.batch_size=32``). Each phase runs in its own process
with ``GDDS_CACHE_DIR`` a fresh folder per size, so its peak RSS (``VmHWM`` of ``/proc/self/status``;
Linux) is its own:

1. ``prepare``: ``gdds.engine.corpus.store_of`` builds the token store with ``--workers`` threads:
   wall time, text MB/s (bytes of text / wall), tokens, tokens/s, peak RSS;
2. ``run start``: ``gdds.engine.corpus.build_data`` on the built store (what a training run start
   does for data): wall time, peak RSS, and how many corpus files it opened (an audit hook on
   ``open``): each once, for the content hash of the store's key (at most 1 MiB of each file,
   ``gdds.data.corpora.sources.content_digest``); the text is not read as documents nor tokenised again;
3. ``batches``, in the run-start process: ``blocks.batch(rows)`` and ``blocks.mask(rows)`` of the
   train split with ``rows`` from ``gdds.engine.steps.batch_indices`` (B = 32, L = 1024), for about
   ``--batch-seconds``: tokens/s = B * L * steps / seconds; once with the rows of the first steps
   drawn beforehand (the target) and once drawn inside the loop, as a training step does.

Targets (from the issue), each reported with a pass/fail:

- the prepare peak RSS at the largest size within 1.3x of the smallest size's, and under 2 GiB;
- run start under 5 s at the largest size;
- batches at least 5M tokens/s (on 2 cores) at every size.

Run from the repository root::

    python benchmarks/data.py [--sizes 0.2 2.0] [--out DIR] [--work DIR | --keep] [--workers N]
    python benchmarks/data.py --dry-run   # 0.001 and 0.01 GB: seconds; the targets are reported, not asserted

Writes ``DIR/data.json`` (default ``results/bench``) atomically and prints a table; without
``--dry-run`` the exit status is 1 when a target fails. ``--work`` keeps the corpora and stores
there (a corpus whose ``corpus.json`` matches is reused); by default they go to a temporary folder
removed at the end unless ``--keep``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from common import command_line, machine_info, number, timed, versions
from gdds.data import Blocks
from gdds.engine.config import Config, load_config
from gdds.engine.corpus import build_data, store_of
from gdds.engine.steps import batch_indices
from gdds.files import write_text_atomically

DRY_SIZES, DRY_BATCH_SECONDS = [0.001, 0.01], 0.1  # --dry-run: every phase of a full run, in seconds
MIB = 1 << 20
PRESET = "tiny"
RSS_RATIO_TARGET, RSS_TARGET_MIB, START_TARGET_S, BATCH_TARGET = 1.3, 2048.0, 5.0, 5e6
CORPUS_FORMAT = "gdds-bench-corpus-v1"
# Common English words, the most frequent of the vocabulary (space-separated).
COMMON_WORDS = """the of and to a in is that it was for on as with he be at by his this had not are but from or have
an they which one you were her all she there would their we him been has when who will more no if out so said what up
its about into than them can only other new some could time these two may then do first any my now such like our over
man me even most made after also did many before must through back years where much your way well down should because
each just those people how too little state good very make world still own see men work long get here between both
life being under never day same another know while last might us great old year off come since against go came right
used take three house small found place part water city land told light night river"""
ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "br", "ch", "cl",
          "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sh", "sl", "sp", "st", "th", "tr", "wh"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ea", "ee", "ai", "oo", "ou"]
CODAS = ["", "", "", "", "n", "r", "s", "t", "l", "m", "d", "nd", "st", "ng", "ck", "rt"]


@dataclass(frozen=True)
class Vocabulary:
    """Words (common English ones first, then pronounceable made-up ones), their capitalised forms,
    the cumulative Zipf weights (``rank ** -1.07``) of drawing each and the mean characters per
    drawn word with its separator."""

    words: np.ndarray
    capitals: np.ndarray
    cdf: np.ndarray
    chars_per_word: float

    @classmethod
    def make(cls, seed: int, size: int = 20_000) -> Vocabulary:
        rng = np.random.default_rng([seed, 0])
        words = dict.fromkeys(COMMON_WORDS.split())
        n = 2 * size
        syllables = rng.choice([1, 2, 2, 3], size=n)
        parts = [rng.integers(0, len(table), size=(n, 3)) for table in (ONSETS, VOWELS, CODAS)]
        for i in range(n):
            if len(words) == size:
                break
            words.setdefault("".join(ONSETS[parts[0][i, k]] + VOWELS[parts[1][i, k]] + CODAS[parts[2][i, k]]
                                     for k in range(syllables[i])), None)
        array = np.array(list(words), dtype=object)
        weights = np.arange(1, len(array) + 1) ** -1.07
        weights /= weights.sum()
        chars = float(weights @ np.array([len(w) + 1 for w in array]))
        return cls(array, np.array([w.capitalize() for w in array], dtype=object), np.cumsum(weights), chars)

    def document(self, rng: np.random.Generator, size: int) -> str:
        """About ``size`` ASCII characters: paragraphs of 3 to 8 sentences, cut at the last space within ``size``."""
        n = int(1.25 * size / self.chars_per_word) + 256
        idx = np.minimum(np.searchsorted(self.cdf, rng.random(n), side="right"), len(self.words) - 1)
        tokens = self.words[idx]
        ends = np.cumsum(rng.integers(4, 28, size=n // 4))
        ends = ends[ends <= n]
        starts = np.concatenate([[0], ends[:-1]])
        tokens[starts] = self.capitals[idx[starts]]
        comma = rng.random(n) < 0.07
        comma[ends - 1] = False
        tokens[comma] = tokens[comma] + ","
        tokens[ends - 1] = tokens[ends - 1] + rng.choice(np.array([".", "?", "!"], dtype=object), size=ends.size,
                                                         p=[0.85, 0.1, 0.05])
        paragraphs = np.cumsum(rng.integers(3, 9, size=ends.size))
        bounds = np.concatenate([[0], ends[paragraphs[paragraphs <= ends.size] - 1]])
        text = "\n\n".join(" ".join(tokens[a:b].tolist()) for a, b in itertools.pairwise(bounds))
        return text if len(text) <= size else text[:text.rfind(" ", 0, size)]


def make_corpus(folder: Path, gb: float, seed: int) -> dict[str, Any]:
    """Write ``gb`` GB of text into ``folder`` as files of 1 to 5 MB (fewer bytes each below 0.2 GB, so
    that there are always about 65 files), file by file; reuse the folder when its ``corpus.json``
    says it holds the same corpus."""
    total = round(gb * 1e9)
    spec = {"format": CORPUS_FORMAT, "bytes_target": total, "seed": seed}
    record = folder / "corpus.json"
    if record.is_file() and (old := json.loads(record.read_text(encoding="utf-8")))["spec"] == spec:
        return {**old, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    vocab = Vocabulary.make(seed)
    low, high = min(1e6, total / 200), min(5e6, total / 40)
    files = written = 0
    while (size := min(int(np.random.default_rng([seed, files + 1]).uniform(low, high)), total - written)) >= low:
        text = vocab.document(np.random.default_rng([seed, files + 1, 1]), size)
        (folder / f"doc-{files:05d}.txt").write_text(text, encoding="ascii")
        files, written = files + 1, written + len(text)
    out = {"spec": spec, "files": files, "bytes": written, "generate_s": time.perf_counter() - start}
    write_text_atomically(record, json.dumps(out))
    return {**out, "reused": False}


def overrides(corpus: str) -> list[str]:
    """The overrides of the ``tiny`` preset for the corpus folder ``corpus``."""
    return [f"data.corpus={json.dumps(corpus)}", 'data.corpus_args={glob: "**/*.txt"}', "data.tokenizer=gpt2",
            "data.seq_len=1024", "train.batch_size=32"]


def memory_mib(field: str) -> float:
    """``field`` of ``/proc/self/status`` (``VmRSS``: now, ``VmHWM``: the peak) in MiB."""
    with open("/proc/self/status") as fh:
        line = next(line for line in fh if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def watch_opens(folder: str) -> set[str]:
    """The files under ``folder`` that this process opens from now on (an audit hook, for good)."""
    prefix = os.path.abspath(folder) + os.sep
    opened: set[str] = set()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path = os.path.abspath(os.fsdecode(args[0]))
            if path.startswith(prefix):
                opened.add(path)

    sys.addaudithook(hook)
    return opened


def throughput(step: Callable[[int], object], tokens_per_step: int, seconds: float) -> dict[str, float]:
    """Steps ``step(0), step(1), ...`` for ``seconds`` after 3 warm-up steps: their count and tokens/s."""
    for i in range(3):
        step(i)
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step(steps)
        steps += 1
    return {"steps": steps, "seconds": elapsed, "tokens_per_s": tokens_per_step * steps / elapsed}


def batch_rates(blocks: Blocks, cfg: Config, seconds: float) -> dict[str, Any]:
    """Tokens/s of ``blocks.batch`` + ``blocks.mask``, the rows of 64 steps drawn beforehand, and with
    the rows drawn in the loop (``batch_indices``) as a training step does."""
    size, n = cfg.train.batch_size, len(blocks)
    drawn = [batch_indices(i, n, size, cfg.seed) for i in range(64)]

    def fetch(rows: np.ndarray) -> None:
        blocks.batch(rows)
        blocks.mask(rows)

    tokens = size * blocks.seq_len
    return {"batch_size": size, "seq_len": blocks.seq_len, "train_blocks": n, "packing": cfg.data.packing,
            "mask": blocks.mask(drawn[0]) is not None,
            **throughput(lambda i: fetch(drawn[i % len(drawn)]), tokens, seconds),
            "with_indices": throughput(lambda i: fetch(batch_indices(i, n, size, cfg.seed)), tokens, seconds)}


def phase(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run phase ``name`` (``prepare``, or ``start``: run start then batches) in this process."""
    opened = watch_opens(spec["corpus"])
    cfg = load_config(PRESET, spec["overrides"])
    before = memory_mib("VmRSS")
    if name == "prepare":
        store, wall = timed(lambda: store_of(cfg.data, progress=False, workers=spec["workers"]))
        splits = {s: {"docs": e["docs"], "tokens": e["tokens"], "shards": len(e["shards"])}
                  for s, e in store.manifest["splits"].items()}
        tokens = sum(e["tokens"] for e in splits.values())
        return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall, "splits": splits,
                "store_mib": sum(p.stat().st_size for p in store.folder.rglob("*") if p.is_file()) / MIB,
                "rss_before_mib": before, "peak_rss_mib": memory_mib("VmHWM"), "corpus_files_opened": len(opened)}
    data, wall = timed(lambda: build_data(cfg.data))
    start = {"wall_s": wall, "tokens": sum(a.n_tokens for a in data.arrays.values()),
             "vocab_size": data.tokenizer.vocab_size, "rss_before_mib": before, "peak_rss_mib": memory_mib("VmHWM"),
             "corpus_files_opened": len(opened)}
    batches = batch_rates(data.split("train"), cfg, spec["batch_seconds"])
    return {"run_start": start, "batches": {**batches, "peak_rss_mib": memory_mib("VmHWM")}}


def run_phase(name: str, spec: dict[str, Any], cache: Path) -> dict[str, Any]:
    """Phase ``name`` in a fresh Python process with ``GDDS_CACHE_DIR=cache``; its JSON result."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--phase", name, "--spec", json.dumps(spec)],
                          env={**os.environ, "GDDS_CACHE_DIR": str(cache)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the {name} phase failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def measure(gb: float, work: Path, workers: int, seed: int, batch_seconds: float) -> dict[str, Any]:
    """Corpus, prepare, run start and batches at ``gb`` GB of text."""
    folder = work / f"corpus-{gb:g}GB"
    corpus = make_corpus(folder, gb, seed)
    cache = work / f"cache-{gb:g}GB"
    shutil.rmtree(cache, ignore_errors=True)
    path = str(folder.absolute())
    spec = {"corpus": path, "overrides": overrides(path), "workers": workers, "batch_seconds": batch_seconds}
    prepare = run_phase("prepare", spec, cache)
    prepare["text_mb_per_s"] = corpus["bytes"] / 1e6 / prepare["wall_s"]
    return {"size_gb": gb, "corpus": {k: corpus[k] for k in ("files", "bytes", "generate_s", "reused")},
            "prepare": prepare, **run_phase("start", spec, cache)}


def growth(phase_result: dict[str, Any]) -> float:
    """Peak RSS above the RSS after the imports, in MiB."""
    return phase_result["peak_rss_mib"] - phase_result["rss_before_mib"]


def ratios(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float | None]:
    """Largest size / smallest size of each figure."""
    def ratio(a: float, b: float) -> float | None:
        return b / a if a else None

    pairs = {"corpus_bytes": ("corpus", "bytes"), "tokens": ("prepare", "tokens"), "prepare_s": ("prepare", "wall_s"),
             "prepare_peak_rss": ("prepare", "peak_rss_mib"), "run_start_s": ("run_start", "wall_s"),
             "run_start_peak_rss": ("run_start", "peak_rss_mib"), "batch_tokens_per_s": ("batches", "tokens_per_s")}
    out = {name: ratio(small[a][b], large[a][b]) for name, (a, b) in pairs.items()}
    out["prepare_rss_growth"] = ratio(growth(small["prepare"]), growth(large["prepare"]))
    out["run_start_rss_growth"] = ratio(growth(small["run_start"]), growth(large["run_start"]))
    return out


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets on the smallest and largest sizes, with a pass/fail each."""
    small, large = results[0], results[-1]
    rows = [("prepare peak RSS, largest / smallest size", large["prepare"]["peak_rss_mib"]
             / small["prepare"]["peak_rss_mib"], "<=", RSS_RATIO_TARGET),
            ("prepare peak RSS (MiB), largest size", large["prepare"]["peak_rss_mib"], "<", RSS_TARGET_MIB),
            ("run start (s), largest size", large["run_start"]["wall_s"], "<", START_TARGET_S),
            ("batch tokens/s, slowest size", min(r["batches"]["tokens_per_s"] for r in results), ">=", BATCH_TARGET)]
    compare = {"<": float.__lt__, "<=": float.__le__, ">=": float.__ge__}
    return [{"name": name, "value": value, "target": f"{op} {limit:g}", "pass": compare[op](float(value), limit),
             "sizes_gb": [small["size_gb"], large["size_gb"]]} for name, value, op, limit in rows]


def ram_mib() -> float:
    """Total memory from ``/proc/meminfo``, in MiB."""
    with open("/proc/meminfo") as fh:
        return int(next(line for line in fh if line.startswith("MemTotal:")).split()[1]) / 1024


def print_summary(results: list[dict[str, Any]], checks: list[dict[str, Any]], asserted: bool) -> None:
    print(f"{'size GB':>8} {'files':>6} {'text MB':>8} {'tokens':>12} {'prep s':>7} {'MB/s':>6} {'prep peak MiB':>14} "
          f"{'start s':>8} {'start peak MiB':>15} {'batch tok/s':>12} {'step tok/s':>11}")
    for r in results:
        p, s, b = r["prepare"], r["run_start"], r["batches"]
        print(f"{r['size_gb']:>8g} {r['corpus']['files']:>6} {r['corpus']['bytes'] / 1e6:>8.1f} {p['tokens']:>12,} "
              f"{p['wall_s']:>7.2f} {p['text_mb_per_s']:>6.2f} {p['peak_rss_mib']:>8.0f} (+{growth(p):.0f}) "
              f"{s['wall_s']:>8.3f} {s['peak_rss_mib']:>7.0f} (+{growth(s):.0f}) {number(b['tokens_per_s']):>12} "
              f"{number(b['with_indices']['tokens_per_s']):>11}")
    for c in checks:
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['name']}: {number(c['value'])} (target {c['target']})"
              f"{'' if asserted else '  [dry run: not asserted]'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Token-store data-path benchmark (writes DIR/data.json).")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.2, 2.0], help="GB of text per measured corpus")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--work", type=Path, default=None, help="folder for the corpora and stores (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder used without --work")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenising threads of prepare")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    parser.add_argument("--batch-seconds", type=float, default=2.0, help="seconds of batches per measurement")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"sizes {DRY_SIZES} GB, {DRY_BATCH_SECONDS} s of batches")
    parser.add_argument("--phase", choices=("prepare", "start"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        print(json.dumps(phase(args.phase, json.loads(args.spec))))
        return 0
    sizes = DRY_SIZES if args.dry_run else sorted(set(args.sizes))
    if sizes[0] <= 0 or args.workers < 1 or args.batch_seconds <= 0:
        parser.error("--sizes, --workers and --batch-seconds must be positive")
    batch_seconds = DRY_BATCH_SECONDS if args.dry_run else args.batch_seconds
    work = args.work or Path(tempfile.mkdtemp(prefix="gdds-bench-data-"))
    try:
        results = [measure(gb, work, args.workers, args.seed, batch_seconds) for gb in sizes]
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(PRESET, overrides("<corpus folder>"))
    checks = targets(results)
    report = {
        "benchmark": "data",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(__file__, argv),
        "mode": "dry-run" if args.dry_run else "full",
        "machine": {**machine_info(cuda_used=False), "ram_mib": ram_mib()},
        "versions": {**versions(), "tokenizers": version("tokenizers"), "tiktoken": version("tiktoken")},
        "settings": {"sizes_gb": sizes, "workers": args.workers, "seed": args.seed, "batch_seconds": batch_seconds,
                     "preset": PRESET, "overrides": overrides("<corpus folder>"), "data": cfg.to_dict()["data"],
                     "batch_size": cfg.train.batch_size, "work": str(work) if args.work or args.keep else None},
        "results": results,
        "ratios": ratios(results[0], results[-1]),
        "targets": checks,
        "targets_asserted": not args.dry_run,
    }
    path = write_text_atomically(args.out / "data.json", json.dumps(report, indent=2) + "\n")
    print_summary(results, checks, not args.dry_run)
    print(f"wrote {path}")
    return 0 if args.dry_run or all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
