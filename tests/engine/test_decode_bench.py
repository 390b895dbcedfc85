"""`gdds decode-bench`: each sampler's speed, calls, quality at equal entropy (with a bootstrap SE) and
bound (paired with the exact chain's), written as JSON, Markdown and a figure."""
import json
from itertools import pairwise

import numpy as np
import pytest
import torch

import gdds
from gdds.cli import main
from gdds.engine.evaluation.decoding import CallCounter, read_decoding_preset
from gdds.engine.evaluation.decoding_quality import SweepPoint, bootstrap_quality, common_entropy
from gdds.engine.evaluation.decoding_settings import Setting, settings_of
from gdds.engine.evaluation.entropy import log_interpolate
from gdds.engine.evaluation.evaluate import eval_rows
from gdds.engine.model_folder import open_model
from gdds.samplers import SAMPLERS, BoundRule
from gdds.sampling import LikelihoodWeighted
from helpers import micro_run

MORE = """settings:
  - {sampler: exact, steps: 3, fitted_grid: 4}
  - {sampler: ordered, steps: 3, options: {score: margin}}
  - {sampler: threshold, steps: 6, options: {threshold: 1.0e-9}}
  - {sampler: remdm, steps: 3, options: {eta: 0.1}}
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The CLI on a micro mask run with a micro AR judge: exact and renoise in 3 steps, the exact chain's
    bound paired with itself (reference T = 3); then, from a preset, on the mask run and a uniform-kernel run:
    exact on a grid fitted to a 4-step profile, ordered, threshold and remdm (the last three skipped on the
    uniform run)."""
    root = tmp_path_factory.mktemp("bench")
    model = micro_run(root / "model", "process.kernel=mask", "train.max_steps=2")
    uniform = micro_run(root / "uniform", "process.kernel=uniform", "train.max_steps=2")
    judge = micro_run(root / "judge", "method=ar", "train.max_steps=2")
    common = ["--num-samples", "4", "--top-p", "1", "0.5", "--judge", str(judge), "--sequences", "3",
              "--resamples", "50", "--device", "cpu"]
    assert main(["decode-bench", str(model), "--out", str(root / "out"), "--samplers", "exact", "renoise",
                 "--steps", "3", *common]) == 0
    (root / "more.yaml").write_text(MORE)
    assert main(["decode-bench", str(model), str(uniform), "--out", str(root / "more"), "--preset",
                 str(root / "more.yaml"), "--reference-steps", "3", "--profile-sequences", "2", *common]) == 0
    return root / "out"


def test_writes_every_field(bench):
    result = json.loads((bench / "decoding.json").read_text())
    assert result["provenance"]["command"].startswith("gdds decode-bench") and "commit" in result["provenance"]
    assert result["bench_settings"]["resamples"] == 50 and len(result["judges"]) == 1
    (run,) = result["runs"]
    assert run["checkpoint"].endswith("checkpoints/step-00000002") and run["reference"] == "exact, T = 3"
    exact, renoise = run["settings"]
    for row in (exact, renoise):
        assert row["tokens_per_s"] > 0 and row["unigram_entropy"] > 0 and row["samples"] == 4
        (quality,) = row["quality"]
        assert quality["generative_perplexity"] > 1 and quality["standard_error"] > 0
        assert quality["bootstrap_resamples"] == 50
    for row in (exact, renoise):  # both take decoding=: both are swept
        assert [p["top_p"] for p in row["sweep"]] == [1.0, 0.5] and row["quality"][0]["at"].startswith("common")
    assert exact["bound"]["nats_per_token"] > 0 and exact["no_bound"] is None
    assert renoise["bound"] is None and renoise["no_bound"] == SAMPLERS.get("renoise").bound.reason
    markdown = (bench / "decoding.md").read_text()
    assert "| exact, T = 3 |" in markdown and SAMPLERS.get("renoise").bound.reason in markdown
    assert (bench / "decoding.png").read_bytes()[:4] == b"\x89PNG"


def test_the_exact_chain_makes_one_call_per_step_and_pairs_to_zero_with_itself(bench):
    exact, renoise = json.loads((bench / "decoding.json").read_text())["runs"][0]["settings"]
    assert exact["network_calls"] == 3 and exact["network_calls_per_token"] == 3 / exact["length"]
    assert renoise["network_calls"] == 3
    # the same chain, blocks and draws as the reference: the difference is 0 with standard error 0
    assert exact["bound_minus_reference"] == {"nats_per_token": 0.0, "standard_error": 0.0,
                                              "tokens": exact["bound"]["tokens"]}


def test_call_counter_counts_network_calls_of_any_denoiser():
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), gdds.kernels.Uniform(5))
    counter = CallCounter()
    wrapped = counter.wrap(LikelihoodWeighted(process, lambda xt, t: torch.zeros(*xt.shape, 5)))
    assert isinstance(wrapped, LikelihoodWeighted)  # the reverse step still weights it by q_t
    gdds.sample(process, wrapped, 2, 3, steps=7, generator=torch.Generator().manual_seed(0))
    assert counter.calls == 7


def test_each_sampler_says_whether_the_bound_scores_its_chain():
    """The registry's ``BoundRule`` of each sampler: the options that pass to ``nll_bound`` (ReMDM's ``eta`` as its
    step map), those that change nothing, and the reason for the others."""
    proc = gdds.ForwardProcess(gdds.LogLinear(1e-3), gdds.kernels.Mask(5, 4))
    exact = SAMPLERS.get("exact").bound
    assert exact.keywords(proc, {}) == {}
    assert exact.keywords(proc, {"spacing": "lambda", "gumbel": True}) == {"spacing": "lambda"}
    top = gdds.Decoding(top_p=0.9)
    assert exact.keywords(proc, {"decoding": top}) == {"decoding": top}  # the filtered chain's own bound
    assert "reuse_unchanged" in exact.keywords(proc, {"reuse_unchanged": True})
    assert SAMPLERS.get("renoise").bound.keywords(proc, {}).startswith("no bound")
    assert SAMPLERS.get("ordered").bound.keywords(proc, {"score": "margin"}).startswith("no finite bound")
    remdm = SAMPLERS.get("remdm").bound.keywords(proc, {"eta": 0.1, "spacing": "t"})
    assert set(remdm) == {"spacing", "step_map"} and callable(remdm["step_map"])
    assert all(isinstance(entry.bound, BoundRule) for _, entry in SAMPLERS.items())


def _point(rng, n, top_p=1.0, spread=1.0):
    ids = torch.as_tensor(rng.integers(0, 6, size=(n, 16)))
    nats = rng.normal(2.0, spread, size=(1, n)) * 16
    return SweepPoint(top_p, SweepPoint.of(top_p, ids, [([0.0] * n, [1] * n)]).counts, nats, np.full((1, n), 16))


def test_bootstrap_error_is_positive_and_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    small, large = ([_point(rng, n, 1.0), _point(rng, n, 0.8, 0.5)] for n in (8, 512))
    for sweep in (small, large):  # the raw point, and a point between the two entropies of a sweep
        sweep[1] = SweepPoint(0.8, sweep[1].counts[:, :4], sweep[1].nats, sweep[1].tokens)  # lower entropy
    target = 0.5 * (min(p.entropy() for p in large) + max(p.entropy() for p in large))
    assert common_entropy([small, large]) == min(max(p.entropy() for p in s) for s in (small, large))
    for target_of, sweep_of in ((None, lambda s: s[:1]), (target, lambda s: s)):
        q_small, q_large = (bootstrap_quality(sweep_of(s), target_of, 0, "judge", 200, 0) for s in (small, large))
        assert q_small.standard_error > 2 * q_large.standard_error > 0
        assert q_large.reached == 200 and q_large.perplexity is not None
    again = bootstrap_quality(small[:1], None, 0, "judge", 200, 0)  # a fixed seed: the same error
    assert again.standard_error == bootstrap_quality(small[:1], None, 0, "judge", 200, 0).standard_error


def test_a_mask_only_sampler_is_skipped_on_another_kernel_with_its_reason(bench):
    mask, uniform = json.loads((bench.parent / "more" / "decoding.json").read_text())["runs"]
    assert [r["name"] for r in mask["settings"]] == ["exact (fitted grid)", "ordered (margin)", "threshold 1e-09",
                                                     "remdm eta 0.1"] and not mask["skipped"]
    assert [r["name"] for r in uniform["settings"]] == ["exact (fitted grid)"]
    assert [r["sampler"] for r in uniform["skipped"]] == ["ordered", "threshold", "remdm"]
    for row in uniform["skipped"]:
        assert row["reason"].startswith(f"the {SAMPLERS.get(row['sampler']).label} needs the Mask kernel")
    markdown = (bench.parent / "more" / "decoding.md").read_text()
    assert f"- ordered (margin), T = 3: {uniform['skipped'][0]['reason']}" in markdown


def test_a_fitted_grid_is_fitted_on_other_blocks_and_its_bound_is_paired(bench):
    for run in json.loads((bench.parent / "more" / "decoding.json").read_text())["runs"]:
        fitted = run["settings"][0]
        grid = fitted["fitted_grid"]
        assert fitted["label"] == "exact (fitted grid), T = 3" and len(grid) == 4 and grid[0] == 1 and grid[-1] == 0
        assert all(a > b for a, b in pairwise(grid))
        (profile,) = run["fitted_profiles"]
        assert profile["steps"] == 4 and len(profile["nats_per_token"]) == 5 and len(profile["validation_blocks"]) == 2
        assert fitted["bound"]["nats_per_token"] > 0 and fitted["bound_minus_reference"]["standard_error"] > 0
        assert fitted["network_calls"] == 3
        vs = fitted["bound_minus_uniform_grid"]  # paired with the uniform 3-step chain on the same blocks
        assert vs["tokens"] == fitted["bound"]["tokens"] and vs["standard_error"] >= 0 and vs["nats_per_token"] != 0
        assert all(r["bound_minus_uniform_grid"] is None for r in run["settings"][1:])
    assert "minus the bound on the uniform grid of as many steps" in (bench.parent / "more" / "decoding.md").read_text()
    # the profile's blocks are none of the bound's: the bound's rows are eval_rows(valid, 3, seed 0)
    blocks = open_model(bench.parent / "model" / "run", device="cpu").run.valid
    assert not set(eval_rows(blocks, 3, 0).tolist()) & set(profile["validation_blocks"])


def test_remdm_has_a_bound_ordered_none_and_threshold_counts_its_calls(bench):
    _, ordered, threshold, remdm = json.loads((bench.parent / "more" / "decoding.json").read_text())["runs"][0][
        "settings"]
    assert remdm["bound"]["nats_per_token"] > 0 and remdm["no_bound"] is None
    assert ordered["bound"] is None and ordered["no_bound"].startswith("no finite bound")
    # a threshold every position reaches reveals everything in its first call: 1 call, not the cap of 6
    assert threshold["steps"] == 6 and threshold["network_calls"] == 1
    assert "| threshold 1e-09, T = 6 |" in (bench.parent / "more" / "decoding.md").read_text()
    assert threshold["curve"] == "threshold, T = 6" and ordered["curve"] == "ordered (margin)"


def test_settings_of_one_sampler_get_distinct_names():
    settings = settings_of(read_decoding_preset("decoding-cpu")["settings"])
    families = {(s.sampler, repr(sorted(s.options.items())), s.fitted): s.name for s in settings}
    assert len(set(families.values())) == len(families)
    assert {"ordered (confidence)", "ordered (margin)", "threshold 0.9", "remdm eta 0.1", "corrector 1 step",
            "exact (fitted grid)"} <= set(families.values())
    assert Setting("corrector", 4, {"corrector_steps": 2}).name == "corrector 2 steps"
    assert Setting("threshold", 8).name == "threshold 0.9"  # the sampler's default names it
    with pytest.raises(ValueError, match="give each its own name"):
        settings_of([{"sampler": "ordered", "steps": 4, "name": "o"},
                     {"sampler": "ordered", "steps": 8, "name": "o", "options": {"score": "margin"}}])


def test_the_preset_covers_every_sampler_of_the_decisive_runs_and_each_setting_validates():
    preset = read_decoding_preset("decoding-cpu")
    settings = settings_of(preset["settings"])  # each Setting checks its sampler and options (Sampler.check)
    method = gdds.objectives.METHODS.get("gdds")
    assert {s.sampler for s in settings} == set(method.samplers)
    assert preset["reference_steps"] in {s.steps for s in settings if s.sampler == "exact" and not s.options}
    assert {s.steps for s in settings if s.fitted} == {8, 16, 32} and {s.fitted for s in settings} == {None, 64}
    with pytest.raises(ValueError, match="sampler and steps"):
        settings_of([{"sampler": "exact"}])
    with pytest.raises(gdds.samplers.SamplerError, match="does not accept"):
        settings_of([{"sampler": "threshold", "steps": 8, "options": {"eta": 0.1}}])
    with pytest.raises(gdds.samplers.SamplerError, match="grid"):
        settings_of([{"sampler": "ordered", "steps": 8, "fitted_grid": 16}])


def test_log_interpolate_reads_between_points_and_extrapolates_only_when_asked():
    points = [(1.0, 10.0), (2.0, 1000.0)]
    assert log_interpolate(points, 1.5) == pytest.approx(100.0)  # linear in log-perplexity
    assert log_interpolate(points, 2.5) is None and log_interpolate(points[:1], 1.0) is None
    assert log_interpolate(points, 2.5, extrapolate=True) == pytest.approx(10_000.0)  # along the end segment
    assert log_interpolate(points, 0.5, extrapolate=True) == pytest.approx(1.0)


def test_a_preset_fills_the_runs_and_options_left_at_their_defaults(tmp_path):
    from gdds.cli.main import build_parser
    from gdds.cli.training import apply_preset

    preset = tmp_path / "bench.yaml"
    preset.write_text("runs: [a, b]\nnum_samples: 3\nseed: 5\nsettings: [{sampler: exact, steps: [2, 4]}]\n")
    args = build_parser().parse_args(["decode-bench", "--preset", str(preset), "--out", str(tmp_path), "--seed", "1"])
    apply_preset(args, args.parser, read_decoding_preset, "decode-bench preset")
    assert args.runs == ["a", "b"] and args.num_samples == 3 and args.seed == 1  # the command line wins
    assert [s.steps for s in settings_of(args.settings)] == [2, 4]


def test_the_judge_convention_reaches_every_judge_with_mdlms_truncation(bench, monkeypatch, tmp_path):
    """``--judge-convention mdlm`` loads every judge under MDLM's convention, texts cut at the sample length
    (the scoring itself: tests/engine/test_judge.py); the default is gdds's, without truncation."""
    from gdds.engine.evaluation import decoding
    from gdds.engine.evaluation.decoding import BenchSettings

    class Loaded(Exception):
        pass

    loads = []

    def record(spec, **options):
        loads.append((spec, options["convention"], options["truncate"]))
        raise Loaded

    monkeypatch.setattr(decoding.Judge, "load", record)
    model = bench.parent / "model" / "run"  # the mask run of the fixture
    common = ["decode-bench", str(model), "--samplers", "exact", "--steps", "2", "--judge", "hf:org/a",
              "--device", "cpu"]
    for extra, expected in ((["--judge-convention", "mdlm", "--length", "12"], ("hf:org/a", "mdlm", 12)),
                            (["--judge-convention", "mdlm"], ("hf:org/a", "mdlm", gdds.load(model).length)),
                            ([], ("hf:org/a", "gdds", None))):
        assert main([*common, *extra, "--out", str(tmp_path / str(len(loads)))]) == 1  # stopped at the load
        assert loads.pop() == expected
    with pytest.raises(ValueError, match="unknown judge convention"):
        BenchSettings(judge_convention="sedd")
