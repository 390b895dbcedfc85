"""The benchmark scripts run end to end in their quick settings and write their JSON report (machine,
versions, settings) with figures consistent with each other and with the table they print.

Each script's ``main(argv)`` runs in this process: a new interpreter would spend most of the test
importing torch and gdds again. The data benchmark's phases still run in child processes, as in a full
run (each measures its own peak RSS). ``benchmarks/gpu_suite.sh`` is run as a script in test_gpu_suite.py.
"""
import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as the module ``benchmark_<name>`` (the scripts import their sibling
    modules, e.g. ``common``, by name, so ``benchmarks/`` goes on the path)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(name: str, *argv: str) -> tuple[Any, str]:
    """``main(argv)`` of ``benchmarks/<name>.py`` in this process: its return value and what it printed.
    torch's thread count is restored after it (``sampling.py --quick`` sets one thread)."""
    threads, out = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            value = benchmark(name).main(list(argv))
    finally:
        torch.set_num_threads(threads)
    return value, out.getvalue()


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """One ``benchmarks/data.py --dry-run`` (two tiny synthetic corpora, every phase), shared by the
    tests of its report: its work folder, report and printed table."""
    out = tmp_path_factory.mktemp("data-benchmark")
    work = out / "work"
    status, printed = run("data", "--dry-run", "--out", str(out), "--work", str(work))
    assert status == 0
    return work, json.loads((out / "data.json").read_text()), printed


def test_the_data_benchmark_records_its_machine_versions_and_settings(data_run):
    work, report, _ = data_run
    assert report["benchmark"] == "data" and report["mode"] == "dry-run" and report["targets_asserted"] is False
    assert report["command"][1:] == [str(BENCHMARKS / "data.py"), "--dry-run", "--out", str(work.parent),
                                     "--work", str(work)]
    assert report["machine"]["cpu_count"] and report["machine"]["ram_mib"] > 0
    assert all(report["versions"][k] for k in ("python", "torch", "numpy", "tokenizers", "tiktoken", "gdds"))
    settings = report["settings"]
    assert settings["data"]["tokenizer"] == "gpt2" and settings["data"]["seq_len"] == 1024
    assert settings["batch_size"] == 32 and settings["workers"] >= 1
    sizes = [r["size_gb"] for r in report["results"]]
    assert sizes == settings["sizes_gb"] == sorted(sizes) and len(sizes) == 2
    assert len(report["targets"]) == 4 and all(isinstance(t["pass"], bool) for t in report["targets"])


def test_the_data_benchmark_phases_agree_with_the_corpus_and_with_each_other(data_run):
    work, report, _ = data_run
    for r in report["results"]:
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


def test_the_data_benchmark_scales_its_corpus_and_prints_its_figures(data_run):
    _, report, printed = data_run
    small, large = report["results"]
    assert abs(large["corpus"]["bytes"] / small["corpus"]["bytes"] - 10) < 1  # 10x the text, within 10%
    assert report["ratios"]["corpus_bytes"] == large["corpus"]["bytes"] / small["corpus"]["bytes"]
    assert large["prepare"]["tokens"] > 5 * small["prepare"]["tokens"]
    assert "prep peak MiB" in printed and printed.count("[dry run: not asserted]") == len(report["targets"])
    for r in report["results"]:
        assert f" {r['prepare']['tokens']:,} " in printed and f" {r['corpus']['files']} " in printed


def test_the_sampling_benchmark_quick_mode(tmp_path):
    _, printed = run("sampling", "--quick", "--profile", "--out", str(tmp_path))
    report = json.loads((tmp_path / "sampling.json").read_text())
    assert report["mode"] == "quick" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    assert report["machine"]["torch_num_threads"] == 1 and report["settings"]["m"] == 600
    kernels = report["kernels"]
    assert set(kernels) == {"mask", "uniform", "semantic"}
    for res in kernels.values():
        for row in res["samplers"]:
            assert row["steps_per_s"] > 0 and 0 <= row["share_outside_denoiser"] <= 1
            assert row["steps_per_s"] == pytest.approx(row["steps"] / row["wall_s_median"])
            assert len(row["per_step_of_median_run"]) == row["steps"]
        for row in res["bounds"]:
            assert row["s_per_sequence"] == pytest.approx(row["wall_s_median"] / row["B"]) and row["s_per_sequence"] > 0
            assert all(v == v for v in row["estimate_nats_per_token"])  # not NaN
    names = {row["name"] for row in kernels["semantic"]["samplers"]}
    assert {"exact (cheap ops)", "exact (default ops)", "renoise"} <= names
    assert any("DiT" in row["name"] for row in kernels["mask"]["samplers"])
    assert any(row["name"] == "masked_continuous_bound" for row in kernels["mask"]["bounds"])
    accuracy = kernels["semantic"]["operator_accuracy"]
    assert accuracy["l1_max"] < 1e-3  # one reverse step with the cheap operators against the default ones
    assert all(abs(mass - 1) < 1e-9 for mass in accuracy["step_mass_default"] + accuracy["step_mass_cheap"])
    assert kernels["semantic"]["profile"]["top_by_tottime"]
    assert "steps/s" in printed and "s/sequence" in printed
    assert f"{kernels['uniform']['samplers'][0]['steps_per_s']:>9.3g}" in printed


def test_the_noising_benchmark_quick_mode(tmp_path):
    _, printed = run("noising", "--quick", "--device", "cpu", "--out", str(tmp_path))
    report = json.loads((tmp_path / "noising.json").read_text())
    assert report["mode"] == "quick" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    noising = report["cpu"]["noising"]
    assert set(noising) == {"semantic_knn", "mask_closed_form", "uniform_closed_form", "mask_uniformization"}
    assert all(row["tokens_per_s_median"] > 0 for row in noising.values())
    assert report["cuda"] is None and "tokens/s" in printed


def test_the_training_benchmark_per_method(tmp_path):
    """`benchmarks/train.py --methods`: one row per method of `gdds compare` on the demo preset (the
    two-stream network and the autoregressive model included), here with a smaller network."""
    small = ["model.layers=1", "model.width=32", "model.heads=2", "model.cond_width=16", "data.seq_len=32",
             "train.batch_size=4"]
    run("train", "--methods", "campbell-mask", "ar", "--steps", "1", "--repeats", "1", "--device", "cpu",
        "--out", str(tmp_path), "--overrides", *small)
    rows = json.loads((tmp_path / "train_methods.json").read_text())["results"]
    assert [r["name"] for r in rows] == ["campbell-mask", "ar"] and [r["method"] for r in rows] == ["campbell", "ar"]
    assert all(r["tokens_per_s_median"] > 0 for r in rows) and rows[1]["noising_share_pass"] is None
    for r in rows:
        assert r["preset"] == "demo" and r["settings"]["overrides"][:len(small)] == small
        assert r["tokens_per_s_median"] == pytest.approx(4 * 32 / r["step_s_median"])


def test_the_block_generation_benchmark_quick_mode(tmp_path):
    """`benchmarks/block_generation.py --quick`: tokens/s with and without the KV cache per block size, the
    two paths' samples the same."""
    _, printed = run("block_generation", "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "block_generation.json").read_text())
    assert report["mode"] == "quick" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    rows, settings = report["results"], report["settings"]
    assert [r["block_size"] for r in rows] == settings["block_sizes"] == [4, 16]
    for r in rows:
        assert r["same_samples"] and r["cached_tokens_per_s"] > 0
        assert r["cached_tokens_per_s"] == pytest.approx(settings["num"] * settings["length"] / r["cached_s"])
        assert r["speedup"] == pytest.approx(r["cached_tokens_per_s"] / r["uncached_tokens_per_s"])
    assert "tokens, 2 steps per block" in printed


def test_the_operators_benchmark_says_where_the_step_and_the_term_spend_their_time(tmp_path):
    """`benchmarks/operators.py --profile`: the step's operator applications timed alone (g per distinct x_t,
    w per position; r, which only the mean parametrization needs) and the operators of the step and the term
    by own time, largest first."""
    _, printed = run("operators", "--dry-run", "--b", "0", "--profile", "--out", str(tmp_path))
    report = json.loads((tmp_path / "operators.json").read_text())
    assert report["settings"]["profile"] is True
    (row,) = report["rows"]
    parts = row["profile"]["step_parts"]
    assert parts["positions"] == row["B"] * row["L"] and 0 < parts["distinct_xt"] <= parts["positions"]
    assert min(parts["g_s"], parts["r_s"], parts["w_s"]) > 0
    for what in ("step", "term"):
        prof = row["profile"][what]
        own = [op["self_s"] for op in prof["ops"]]
        assert own == sorted(own, reverse=True) and own[0] > 0 and prof["wall_s"] > 0
        assert 0 < sum(op["share"] for op in prof["ops"]) <= 1.05  # own times within the wall clock
        assert all(op["calls"] >= 1 for op in prof["ops"])
    assert '"step_parts"' in printed


def test_the_operators_benchmark_full_mode_rows_run_at_a_small_vocabulary(tmp_path):
    """The rows only the full run measures, at m = 600: the all-terms bound of a model and its baseline and a
    whole 128-step exact sample, each timed and scaled as reported."""
    module = benchmark("operators")
    terms = module.measure_all_terms(600, 0.0, 1, tmp_path, "cpu")
    assert terms["T"] == 128 and terms["hours_for_32_blocks"] == pytest.approx(terms["seconds"] * 32 / 3600)
    drawn = module.measure_sample(600, 0.0, 2, tmp_path, "cpu")
    assert drawn["T"] == 128 and drawn["seconds"] > 0
    assert drawn["seconds_per_sequence"] == pytest.approx(drawn["seconds"] / 2)


def test_the_operators_benchmark_times_the_training_step_with_and_without_kept_powers(tmp_path):
    """The training row at m = 600: the exact forward CE multiplying every time, then with each token's powers
    kept (first call and again; at b = 0 only, where they apply), beside the surrogate."""
    module = benchmark("operators")
    kept = module.measure_training(module.Size(600, 0, 0, 2), 0.0, tmp_path, "cpu")
    assert 0 < kept["tokens_kept"] <= 2 * 128
    assert min(kept["exact_s_per_step"], kept["exact_kept_first_s_per_step"], kept["exact_kept_again_s_per_step"]) > 0
    assert module.measure_training(module.Size(600, 0, 0, 2), 0.2, tmp_path, "cpu")["tokens_kept"] is None


def test_the_power_cache_benchmark_compares_the_two_orders_on_the_same_batches(tmp_path):
    """`benchmarks/power_cache.py --dry-run`: the first-met and most-frequent stores, one budget, the same
    batches; the first batch finds nothing kept, the first-met store fills its budget; the printed table is
    the report's."""
    _, printed = run("power_cache", "--dry-run", "--out", str(tmp_path))
    report = json.loads((tmp_path / "power_cache.json").read_text())
    assert report["mode"] == "dry-run" and report["versions"]["torch"] and report["machine"]["cpu_count"]
    first, frequent = report["rows"]
    assert (first["order"], frequent["order"]) == ("first met", "most frequent")
    assert first["capacity_tokens"] == frequent["capacity_tokens"] > 0 and report["settings"]["batches"] == 3
    for row in (first, frequent):
        assert row["kept_share"][0] == 0.0 and len(row["seconds"]) == 3 and min(row["seconds"]) > 0
        assert 0 < row["tokens_kept"] <= row["capacity_tokens"]
        assert f"| {row['order']} | {row['kept_share_mean']:.1%}" in printed
    assert first["tokens_kept"] == first["capacity_tokens"]  # the demo's batches fill a 20-token budget
