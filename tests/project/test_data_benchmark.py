"""The data benchmark runs in --dry-run mode (two tiny synthetic corpora, every phase) and writes its JSON report."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_data_benchmark_dry_run(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data.py"), "--dry-run", "--out", str(tmp_path),
         "--work", str(work)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "data.json").read_text())
    assert report["benchmark"] == "data" and report["mode"] == "dry-run" and report["targets_asserted"] is False
    assert report["machine"]["cpu_count"] and report["machine"]["ram_mib"] > 0
    assert all(report["versions"][k] for k in ("python", "torch", "numpy", "tokenizers", "tiktoken", "gdds"))
    settings = report["settings"]
    assert settings["data"]["tokenizer"] == "gpt2" and settings["data"]["seq_len"] == 1024
    assert settings["batch_size"] == 32 and settings["workers"] >= 1

    results = report["results"]
    sizes = [r["size_gb"] for r in results]
    assert sizes == settings["sizes_gb"] == sorted(sizes) and len(sizes) == 2
    for r in results:
        corpus, prepare, start, batches = r["corpus"], r["prepare"], r["run_start"], r["batches"]
        files = sorted((work / f"corpus-{r['size_gb']:g}GB").glob("*.txt"))
        assert corpus["files"] == len(files) >= 3 and corpus["bytes"] == sum(f.stat().st_size for f in files)
        assert abs(corpus["bytes"] / (r["size_gb"] * 1e9) - 1) < 0.02
        assert prepare["tokens"] > 0 and prepare["tokens_per_s"] > 0 and prepare["text_mb_per_s"] > 0
        assert prepare["tokens"] == sum(s["tokens"] for s in prepare["splits"].values())
        assert set(prepare["splits"]) == {"train", "valid", "test"}
        assert sum(s["docs"] for s in prepare["splits"].values()) == corpus["files"]  # one document per file
        assert prepare["corpus_files_opened"] == corpus["files"]  # the audit hook sees the text being read
        assert start["tokens"] == prepare["tokens"]  # the run start maps the store prepare built
        assert start["corpus_files_opened"] == corpus["files"]  # ... and opens each file once, for its hash
        for phase in (prepare, start, batches):
            assert phase["peak_rss_mib"] > 0
        assert prepare["peak_rss_mib"] >= prepare["rss_before_mib"] and start["wall_s"] > 0
        assert batches["batch_size"] == 32 and batches["seq_len"] == 1024 and batches["train_blocks"] >= 32
        assert batches["steps"] > 0 and batches["tokens_per_s"] > 0 and batches["with_indices"]["tokens_per_s"] > 0
        assert batches["tokens_per_s"] == pytest.approx(32 * 1024 * batches["steps"] / batches["seconds"])
    small, large = results
    assert abs(large["corpus"]["bytes"] / small["corpus"]["bytes"] - 10) < 1  # 10x the text, within 10%
    assert report["ratios"]["corpus_bytes"] == large["corpus"]["bytes"] / small["corpus"]["bytes"]
    assert large["prepare"]["tokens"] > 5 * small["prepare"]["tokens"]
    assert len(report["targets"]) == 4 and all(isinstance(t["pass"], bool) for t in report["targets"])
    assert "prep peak MiB" in proc.stdout and "[dry run: not asserted]" in proc.stdout
