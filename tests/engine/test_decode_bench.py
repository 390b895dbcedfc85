"""`gdds decode-bench`: each sampler's speed, calls, quality at equal entropy (with a bootstrap SE) and
bound (paired with the exact chain's), written as JSON, Markdown and a figure."""
import json

import numpy as np
import pytest
import torch

import gdds
from gdds.cli import main
from gdds.engine.evaluation.decoding import CallCounter, read_decoding_preset, settings_of
from gdds.engine.evaluation.decoding_quality import SweepPoint, bootstrap_quality, common_entropy
from gdds.engine.evaluation.entropy import log_interpolate
from gdds.samplers import SAMPLERS, BoundRule
from gdds.sampling import LikelihoodWeighted
from helpers import micro_run


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The CLI on a micro mask run with a micro AR judge: exact and renoise in 3 steps, the exact chain's
    bound paired with itself (reference T = 3)."""
    root = tmp_path_factory.mktemp("bench")
    model = micro_run(root / "model", "process.kernel=mask", "train.max_steps=2")
    judge = micro_run(root / "judge", "method=ar", "train.max_steps=2")
    out = root / "out"
    assert main(["decode-bench", str(model), "--out", str(out), "--samplers", "exact", "renoise", "--steps", "3",
                 "--num-samples", "4", "--top-p", "1", "0.5", "--judge", str(judge), "--sequences", "3",
                 "--resamples", "50", "--device", "cpu"]) == 0
    return out


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


def test_the_preset_reads_and_its_settings_parse():
    preset = read_decoding_preset("decoding-cpu")
    settings = settings_of(preset["settings"])
    assert {s.sampler for s in settings} == {"exact", "renoise"} and preset["reference_steps"] in {
        s.steps for s in settings if s.sampler == "exact" and not s.options}
    with pytest.raises(ValueError, match="sampler, steps"):
        settings_of([{"sampler": "exact"}])


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
