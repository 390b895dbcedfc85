"""The paper's reported metric (gdds.engine.evaluation.paper_metric), as the reference implementation computes it:
for GDDS the true jump mask carried into the output, unweighted CE over all positions and over jumped
ones; for MDLM its ELBO-weighted masked CE; t ~ U(1e-3, 1); labelled as not a likelihood, beside the
bound, and left out (with the reason) for the methods whose figure is not reproduced."""
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
from gdds.engine.evaluation.paper_metric import REFERENCE_T_MIN, NoReferenceFigure, masked_ce, paper_metric
from helpers import micro_run

M = 12


def blocks(n_tokens=4000, seed=0):
    ids = np.random.default_rng(seed).integers(0, M - 2, n_tokens)
    return PackedBlocks(TokenArray(ids, np.array([0, n_tokens]), "iid"), 32, None, None)


def fake(denoiser, kernel, method="gdds", eps=1e-3):
    process = gdds.ForwardProcess(gdds.LogLinear(eps), kernel)
    return SimpleNamespace(run=SimpleNamespace(process=process), denoiser=lambda: denoiser,
                           method=SimpleNamespace(name=method, block_size=None))


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


@pytest.mark.parametrize("method, label", [("gdds", "for GDDS"), ("elbo", "for MDLM")])
def test_gdds_eval_writes_it_beside_the_bound(tmp_path, method, label):
    """The figure in eval.json is the one the engine computes on the evaluation's blocks, with its own
    seeded generator and the grid asked for: recomputed here from the saved run, it is the same."""
    from gdds.engine.build import load_run
    from gdds.engine.evaluation.evaluate import estimator_generator, eval_rows

    micro_run(tmp_path, "process.kernel=mask", f"method={method}", "train.max_steps=2")
    assert main(["eval", str(tmp_path / "run"), "--steps", "4", "--sequences", "4", "--sample-steps", "2",
                 "--num-samples", "2", "--profile-steps", "0", "--paper-metric", "--paper-metric-grid", "8",
                 "--all-terms"]) == 0
    valid = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["valid"]
    loaded = load_run(tmp_path / "run")
    valid_blocks = loaded.run.valid
    again = paper_metric(loaded, valid_blocks, eval_rows(valid_blocks, 4, 0), estimator_generator(loaded, 0, "paper"),
                         8)
    assert valid["paper_metric"] == again.to_dict() and label in again.metric and "not" in again.metric
    assert again.grid == 8 and again.sequences == 4 and 0 < again.jumped < again.tokens
    assert valid["bound"]["metric"].endswith("all terms") and valid["baseline"]["metric"].endswith("all terms")
    assert label in (tmp_path / "run" / "eval" / "eval.md").read_text()


def test_time_is_drawn_as_the_reference_draws_it():
    """t ~ U(1e-3, 1) per sequence (the reference's _sample_t with sampling_eps = 1e-3), not U(0, 1):
    the first batch's times are 1e-3 + (1 - 1e-3) u for the generator's first uniforms u."""
    seen = []

    def spy(xt, t):
        seen.append(t.clone())
        return torch.zeros(*xt.shape, M)

    data = blocks(n_tokens=32 * 4000)
    paper_metric(fake(spy, K.Uniform(M)), data, np.arange(len(data)), torch.Generator().manual_seed(3), batch=500)
    u = torch.rand(500, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(seen[0], (1e-3 + (1 - 1e-3) * u).float())
    times = torch.cat(seen)
    assert len(times) == 4000 and float(times.min()) >= 1e-3 and float(times.max()) < 1


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
    """gdds eval --importance-terms draws the bound's term from the law of the baseline's terms on a
    pilot of 8 blocks and weights it by 1 / q_k, for the model and the baseline alike (the same
    draws): the saved per-sequence bounds are that estimator, recomputed here. The estimator keeps the
    expectation of the all-terms bound even for a law far from the terms' sizes (the last term drawn
    92% of the time): on the same blocks the difference averages to zero within 4 standard errors,
    while weighting the drawn term by T - 1 (as for a uniform draw) misses by many."""
    from gdds.baseline import bayes_unigram, unigram_law
    from gdds.engine.build import load_run
    from gdds.engine.evaluation.evaluate import estimator_generator, eval_rows
    from gdds.likelihood import bound_terms, nll_bound, summarize, term_probs

    micro_run(tmp_path, "process.kernel=mask", "process.schedule=cosine", "train.max_steps=2")
    assert main(["eval", str(tmp_path / "run"), "--steps", "6", "--sequences", "32", "--sample-steps", "2",
                 "--num-samples", "2", "--profile-steps", "0", "--importance-terms"]) == 0
    valid = json.loads((tmp_path / "run" / "eval" / "eval.json").read_text())["valid"]
    assert valid["bound"]["metric"].endswith("importance-sampled term")
    loaded = load_run(tmp_path / "run")
    data, process = loaded.run.valid, loaded.run.process
    rows = eval_rows(data, 32, 0)
    baseline = bayes_unigram(process, unigram_law(loaded.run.data.unigram_counts()))
    q = term_probs(bound_terms(process, baseline, data.batch(rows[:8]), 6, keep=data.mask(rows[:8]),
                               generator=estimator_generator(loaded, 0, "pilot")))
    assert float(q.max() / q.min()) > 2  # the cosine schedule's terms differ: not the uniform law
    for denoiser, saved in ((loaded.denoiser(), valid["bound"]), (baseline, valid["baseline"])):
        gen = estimator_generator(loaded, 0, "bound")
        est = torch.cat([nll_bound(process, denoiser, data.batch(rows[a:a + 8]), steps=6, generator=gen,
                                   keep=data.mask(rows[a:a + 8]), term_probs=q) for a in range(0, len(rows), 8)])
        assert est.tolist() == pytest.approx(saved["per_sequence"]["nats"], rel=1e-12)
    x0, keep, g = data.batch(rows), data.mask(rows), torch.Generator().manual_seed(0)
    skew = torch.tensor([0.02, 0.02, 0.02, 0.02, 0.92], dtype=torch.float64)
    every = nll_bound(process, baseline, x0, steps=6, all_terms=True, generator=g, keep=keep)
    drawn = torch.stack([nll_bound(process, baseline, x0, steps=6, generator=g, keep=keep, term_probs=skew)
                         for _ in range(4)]).mean(0)
    d = summarize(drawn - every, torch.full((len(rows),), x0.shape[1]) if keep is None else keep.sum(1))
    assert abs(d.nats_per_token) < 4 * d.standard_error + 1e-3, d


def test_mdlm_gets_its_elbo_weighted_figure_by_hand():
    """MDLM's figure: at the masked positions, -alpha'(t) / (1 - alpha(t)) = 1 / t (log-linear) times the
    cross-entropy with the mask token excluded from the output, over all positions; the denoising
    figure is the unweighted cross-entropy per masked position."""
    mask = M - 1
    xt = torch.tensor([[1, mask, mask, 4]])  # the block's x0 is [1, 2, 3, 4]
    logits = torch.zeros(1, 4, M)
    logits[0, 1, 2], logits[0, 2, 5], logits[0, :, mask] = 1.0, 2.0, 50.0  # the mask logit is ignored
    loaded = fake(lambda x, t: logits, K.Mask(M, mask), method="elbo")
    loaded.run.process.sample = lambda x, t, return_info, generator: (xt, SimpleNamespace(jumps=(xt == mask).long()))
    data = PackedBlocks(TokenArray(np.array([1, 2, 3, 4]), np.array([0, 4]), "hand"), 4, None, None)
    pm = paper_metric(loaded, data, np.arange(1), torch.Generator().manual_seed(0))
    t = REFERENCE_T_MIN + (1 - REFERENCE_T_MIN) * float(torch.rand(1, dtype=torch.float64,
                                                                    generator=torch.Generator().manual_seed(0)))
    # -log softmax over the M - 1 tokens that are not the mask, at x0 = 2 (logit 1) and x0 = 3 (logit 0; 5 has 2)
    costs = [math.log(M - 2 + math.e) - 1.0, math.log(M - 2 + math.e ** 2)]
    assert pm.jumped == 2 and pm.tokens == 4 and "for MDLM" in pm.metric
    assert pm.nats_per_token == pytest.approx(sum(costs) / t / 4, rel=1e-6)
    assert pm.denoising_nats_per_token == pytest.approx(sum(costs) / 2, rel=1e-6)


def test_mdlm_figure_is_unbiased_for_its_closed_form():
    """A denoiser uniform over the M - 1 clean tokens costs log(M - 1) per masked position; with the
    weight 1 / t and P(masked) = (1 - eps) t the figure's expectation is (1 - eps) log(M - 1) per
    token, whatever the range of t. 2,000 blocks of 32 tokens: its standard error is about 0.025
    (the weight's variance grows like log(1 / 1e-3)); tolerance 0.1."""
    eps = 0.05
    loaded = fake(lambda xt, t: torch.zeros(*xt.shape, M), K.Mask(M, M - 1), method="elbo", eps=eps)
    data = blocks(n_tokens=32 * 2000)
    pm = paper_metric(loaded, data, np.arange(len(data)), torch.Generator().manual_seed(0), batch=250)
    assert pm.nats_per_token == pytest.approx((1 - eps) * math.log(M - 1), abs=0.1)
    assert pm.denoising_nats_per_token == pytest.approx(math.log(M - 1), abs=1e-9)


@pytest.mark.parametrize("method, kernel", [("elbo", K.Uniform(M)), ("jump", K.Mask(M, M - 1)),
                                            ("campbell", K.Mask(M, M - 1))])
def test_methods_whose_reference_figure_is_not_reproduced_get_none_with_the_reason(method, kernel):
    from gdds.engine.evaluation.reports import EvalReport, Likelihood, NLLReport, PairedDifference

    loaded = fake(lambda xt, t: torch.zeros(*xt.shape, M), kernel, method=method)
    with pytest.raises(NoReferenceFigure, match=f"method {method} on this process is not reproduced"):
        paper_metric(loaded, blocks(), np.arange(4), torch.Generator().manual_seed(0))
    figure = NLLReport("bound", 1.0, 0.1, 10, 2)
    report = EvalReport("c", "ema", method, 1, Likelihood(figure, figure, figure, PairedDifference(0.0, 0.0, 2, "b")),
                        paper_metric_absent="the reason")
    saved = json.loads(json.dumps(report.to_dict()))
    assert saved["valid"]["paper_metric"] == {"not_computed": "the reason"}
    back = EvalReport.from_dict(saved)
    assert back.paper_metric is None and back.paper_metric_absent == "the reason"
