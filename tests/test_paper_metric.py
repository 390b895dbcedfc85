"""The paper's reported metric (gdds.engine.paper_metric): the true jump mask carried into the output,
unweighted CE over all positions and over jumped ones; labelled as not a likelihood, beside the bound."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.cli import main
from gdds.data import PackedBlocks, TokenArray
from gdds.engine.paper_metric import masked_ce, paper_metric
from helpers import micro_run

M = 12


def blocks(n_tokens=4000, seed=0):
    ids = np.random.default_rng(seed).integers(0, M - 2, n_tokens)
    return PackedBlocks(TokenArray(ids, np.array([0, n_tokens]), "iid"), 32, None, None)


def fake(denoiser, kernel):
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), kernel)
    return SimpleNamespace(run=SimpleNamespace(process=process), denoiser=lambda: denoiser)


def test_a_uniform_output_costs_log_m_per_jumped_position_and_nothing_elsewhere():
    loaded = fake(lambda xt, t: torch.zeros(*xt.shape, M), K.Uniform(M))
    data = blocks()
    pm = paper_metric(loaded, data, np.arange(len(data)), torch.Generator().manual_seed(0))
    assert abs(pm.denoising_nats_per_token - math.log(M)) < 1e-9
    assert abs(pm.nats_per_token - math.log(M) * pm.jumped / pm.tokens) < 1e-9
    assert 0 < pm.jumped < pm.tokens and "not a likelihood" in pm.metric
    assert abs(pm.perplexity - math.exp(pm.nats_per_token)) < 1e-9


def test_the_grid_snaps_times_and_the_mask_hides_unjumped_positions():
    seen = []

    def spy(xt, t):
        seen.append(t.clone())
        return torch.zeros(*xt.shape, M)

    data = blocks()
    paper_metric(fake(spy, K.Mask(M, M - 1)), data, np.arange(len(data)), torch.Generator().manual_seed(1), grid=4)
    times = torch.cat(seen)
    assert set(times.tolist()) <= {0.25, 0.5, 0.75, 1.0} and len(set(times.tolist())) > 1
    x0 = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, M), -30.0)  # the model is sure of the wrong token everywhere
    cost = masked_ce(logits, x0, torch.tensor([[True, False, True]]))
    assert cost[0, 1] == 0 and cost[0, 0] > 1 and cost[0, 2] > 1


def test_gdds_eval_writes_it_beside_the_bound(tmp_path):
    micro_run(tmp_path, "process.kernel=mask", "train.max_steps=2")
    assert main(["eval", str(tmp_path / "run"), "--steps", "4", "--sequences", "4", "--sample-steps", "2",
                 "--num-samples", "2", "--profile-steps", "0", "--paper-metric", "--paper-metric-grid", "8",
                 "--all-terms"]) == 0
    valid = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["valid"]
    pm = valid["paper_metric"]
    assert "not a likelihood" in pm["metric"] and pm["grid"] == 8 and pm["sequences"] == 4
    assert pm["denoising_nats_per_token"] >= pm["nats_per_token"] > 0
    assert valid["bound"]["metric"].endswith("all terms") and valid["baseline"]["metric"].endswith("all terms")
    assert "paper metric" in (tmp_path / "run" / "eval" / "eval.md").read_text()


def test_the_paper_metric_equals_a_hand_computation(monkeypatch):
    xt = torch.tensor([[1, 5, 3, 0]])  # the block's x0 is [1, 2, 3, 4]
    jumps = torch.tensor([[0, 2, 1, 1]])  # position 2 jumped back onto its own token
    logits = torch.zeros(1, 4, M)
    logits[0, 1, 2], logits[0, 2, 3], logits[0, 3, 4] = 1.0, 2.0, math.log(3.0)
    loaded = fake(lambda x, t: logits, K.Uniform(M))
    monkeypatch.setattr(loaded.run.process, "sample",
                        lambda x, t, return_info, generator: (xt, SimpleNamespace(jumps=jumps)))
    data = PackedBlocks(TokenArray(np.array([1, 2, 3, 4]), np.array([0, 4]), "hand"), 4, None, None)
    pm = paper_metric(loaded, data, np.arange(1), torch.Generator().manual_seed(0))
    # -log softmax at the true token of each jumped position (positions 1, 2, 3); position 0 costs 0
    costs = [math.log(M - 1 + math.e) - 1.0, math.log(M - 1 + math.e ** 2) - 2.0, math.log(M - 1 + 3.0) - math.log(3.0)]
    assert pm.tokens == 4 and pm.jumped == 3
    assert abs(pm.nats_per_token - sum(costs) / 4) < 1e-6  # float32 logits
    assert abs(pm.denoising_nats_per_token - sum(costs) / 3) < 1e-6


def test_the_exact_t_term_bound_is_the_mean_of_the_sampled_one():
    from gdds.baseline import bayes_unigram
    from gdds.likelihood import nll_bound, summarize

    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Uniform(M))
    g = torch.Generator().manual_seed(0)
    pi = torch.rand(M, dtype=torch.float64, generator=g) + 0.2
    pi /= pi.sum()
    x0 = torch.multinomial(pi, 64 * 16, replacement=True, generator=g).reshape(64, 16)
    denoiser = bayes_unigram(process, (pi * 0.7 + 0.3 / M))  # a wrong law: the bound is not the NLL
    exact = summarize(nll_bound(process, denoiser, x0, steps=8, all_terms=True, generator=g), torch.full((64,), 16))
    draws = torch.stack([nll_bound(process, denoiser, x0, steps=8, generator=g) for _ in range(24)]).mean(0)
    sampled = summarize(draws, torch.full((64,), 16))
    diff = summarize(draws - nll_bound(process, denoiser, x0, steps=8, all_terms=True, generator=g),
                     torch.full((64,), 16))
    assert abs(diff.nats_per_token) < 3 * diff.standard_error + 1e-3, (exact, sampled, diff)
    single = summarize(nll_bound(process, denoiser, x0, steps=8, generator=g), torch.full((64,), 16))
    assert exact.standard_error < single.standard_error  # all terms: less variance than one drawn term


def test_importance_sampled_terms_keep_the_bound_and_cut_its_variance():
    from gdds.baseline import bayes_unigram
    from gdds.likelihood import bound_terms, nll_bound, stratified_terms, summarize, term_probs

    q = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    draws = torch.cat([stratified_terms(8, 5, torch.Generator().manual_seed(i), probs=q) for i in range(3000)])
    freq = torch.bincount(draws - 2, minlength=4).double() / draws.numel()
    assert float((freq - q).abs().sum()) / 2 < 0.01  # total variation to the asked law

    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(M, M - 1))
    g = torch.Generator().manual_seed(0)
    pi = torch.rand(M - 1, dtype=torch.float64, generator=g) + 0.1
    pi = torch.cat([pi / pi.sum(), torch.zeros(1, dtype=torch.float64)])
    x0 = torch.multinomial(pi, 256 * 12, replacement=True, generator=g).reshape(256, 12)
    wrong = torch.cat([torch.full((M - 1,), 1.0 / (M - 1), dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    denoiser = bayes_unigram(process, (0.5 * pi + 0.5 * wrong).clamp_min(1e-12))
    probs = term_probs(bound_terms(process, denoiser, x0[:32], steps=16, generator=g))
    tokens = torch.full((256,), 12)
    exact = torch.stack([nll_bound(process, denoiser, x0, steps=16, all_terms=True, generator=g)
                         for _ in range(2)]).mean(0)
    uniform = nll_bound(process, denoiser, x0, steps=16, generator=g)
    weighted = nll_bound(process, denoiser, x0, steps=16, generator=g, term_probs=probs)
    for est in (uniform, weighted):  # both unbiased for the all-terms bound
        d = summarize(est - exact, tokens)
        assert abs(d.nats_per_token) < 3 * d.standard_error + 1e-3, d
    assert summarize(weighted, tokens).standard_error < summarize(uniform, tokens).standard_error
    with pytest.raises(ValueError, match="term_probs"):
        nll_bound(process, denoiser, x0[:2], steps=16, term_probs=torch.ones(3))


def test_gdds_eval_importance_samples_the_drawn_term(tmp_path):
    micro_run(tmp_path, "process.kernel=mask", "train.max_steps=2")
    assert main(["eval", str(tmp_path / "run"), "--steps", "6", "--sequences", "8", "--sample-steps", "2",
                 "--num-samples", "2", "--profile-steps", "0", "--importance-terms"]) == 0
    valid = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["valid"]
    assert valid["bound"]["metric"].endswith("importance-sampled term")
    assert valid["bound"]["nats_per_token"] > 0 and valid["paired_difference"]["standard_error"] > 0
