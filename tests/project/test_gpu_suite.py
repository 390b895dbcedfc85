"""benchmarks/gpu_suite.sh --dry-run: the GPU suite's steps on the CPU at tiny sizes, so that the
script a GPU session runs once cannot rot in between."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_suite_runs_end_to_end_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    env.pop("GDDS_TEST_DEVICE", None)
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_suite.sh"), "--dry-run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    log = (tmp_path / "suite.log").read_text()
    assert done.returncode == 0, log
    report = json.loads((tmp_path / "gpu.json").read_text())
    sections = ["noising", "train", "determinism", "sampler_mask", "sampler_uniform", "sampler_semantic"]
    for name in sections:
        assert "error" not in report[name], report[name]
    assert report["dry_run"] and report["machine"]["cuda_device"] is None
    assert report["train"]["graph_breaks"] == 0 and report["train"]["graphs"] == 1  # the network compiles whole
    assert report["determinism"] == {**report["determinism"], "works": True, "equal": True}
    assert (tmp_path / "tests.xml").is_file() and "passed" in (tmp_path / "tests.log").read_text()


def test_the_full_run_names_only_test_files_that_exist():
    """The dry run runs one test file; the full run's list (run only in a GPU session) must follow the
    test files when they move."""
    named = re.findall(r"tests/[\w/]+\.py", (ROOT / "benchmarks" / "gpu_suite.sh").read_text())
    assert len(set(named)) > 10 and [p for p in named if not (ROOT / p).is_file()] == []
