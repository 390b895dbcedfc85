"""Atomic writes keep the old file on failure; the noising benchmark runs and writes JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gdds.files import write_atomically

ROOT = Path(__file__).resolve().parents[2]


def test_atomic_write_replaces_or_keeps(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    write_atomically(target, lambda fh: fh.write(b"first"))
    assert target.read_bytes() == b"first"

    def broken(fh):
        fh.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_noising_benchmark_quick_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "noising.py"), "--quick", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "noising.json").read_text())
    assert report["mode"] == "quick" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    noising = report["cpu"]["noising"]
    assert set(noising) == {"semantic_knn", "mask_closed_form", "uniform_closed_form", "mask_uniformization"}
    assert all(row["tokens_per_s_median"] > 0 for row in noising.values())
    assert report["cuda"] is None and "tokens/s" in proc.stdout


def test_training_benchmark_per_method(tmp_path):
    """`benchmarks/train.py --methods`: one row per method of `gdds compare` on the demo preset
    (the two-stream network and the autoregressive model included)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train.py"), "--methods", "campbell-mask", "ar", "--steps", "1",
         "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "train_methods.json").read_text())["results"]
    assert [r["name"] for r in rows] == ["campbell-mask", "ar"] and [r["method"] for r in rows] == ["campbell", "ar"]
    assert all(r["tokens_per_s_median"] > 0 for r in rows) and rows[1]["noising_share_pass"] is None


def test_a_killed_atomic_write_leaves_a_file_named_for_its_target(tmp_path, monkeypatch):
    """What write_atomically leaves when killed mid-write is recognised (temporary_target), so that an
    owner of the folder (a run's start) removes it; other names are not taken for one."""
    import gdds.files as files

    seen = []

    def die(fh):
        seen.append(Path(fh.name).name)
        raise KeyboardInterrupt  # stands in for a kill after the temporary file was opened

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(tmp_path / "data.json", die)
    assert files.temporary_target(seen[0]) == "data.json"
    for other in ("data.json", ".data.json.tmp", ".data.json.zz0123456789.tmp", ".tmp-step-1", "x.0123456789ab.tmp"):
        assert files.temporary_target(other) is None
