"""The sampling benchmark runs in --quick mode and writes its JSON report."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sampling_benchmark_quick_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sampling.py"), "--quick", "--profile", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "sampling.json").read_text())
    assert report["mode"] == "quick" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    kernels = report["kernels"]
    assert set(kernels) == {"mask", "uniform", "semantic"}
    for res in kernels.values():
        for row in res["samplers"]:
            assert row["steps_per_s"] > 0 and 0 <= row["share_outside_denoiser"] <= 1
            assert len(row["per_step_of_median_run"]) == row["steps"]
        for row in res["bounds"]:
            assert row["s_per_sequence"] > 0
            assert all(v == v for v in row["estimate_nats_per_token"])  # not NaN
    names = {row["name"] for row in kernels["semantic"]["samplers"]}
    assert {"exact (cheap ops)", "exact (default ops)", "renoise"} <= names
    assert any("DiT" in row["name"] for row in kernels["mask"]["samplers"])
    assert any(row["name"] == "masked_continuous_bound" for row in kernels["mask"]["bounds"])
    accuracy = kernels["semantic"]["operator_accuracy"]
    assert accuracy["l1_max"] < 1e-3  # one reverse step with the cheap operators against the default ones
    assert all(abs(mass - 1) < 1e-9 for mass in accuracy["step_mass_default"] + accuracy["step_mass_cheap"])
    assert kernels["semantic"]["profile"]["top_by_tottime"]
    assert "steps/s" in proc.stdout and "s/sequence" in proc.stdout
