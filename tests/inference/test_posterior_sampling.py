"""Reverse steps, the sampler and the likelihood bound against exact computations."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.categorical import nucleus
from gdds.likelihood import continuous_bound, masked_continuous_bound, nll_bound, stratified_terms, summarize
from gdds.posterior import reverse_step_probs, true_posterior
from gdds.sampling import sample, time_grid
from helpers import (
    assert_follows,
    context_free_chain_law,
    empirical,
    mixing_weight,
    random_stochastic,
    time_dependent_dense,
    tv,
)

SCHED = gdds.LogLinear(1e-3)
DENSE, SERIES = OperatorSettings(method="dense"), OperatorSettings(method="series")
PI = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04], dtype=torch.float64)


def dense_P(process, a, b):
    """P_{a->b} as a dense matrix, from scipy's expm (homogeneous) or the dense ODE path."""
    if not process.kernel.time_dependent:
        F = process.kernel.dense(0.0).numpy()
        d = float(process.schedule.Lambda(b) - process.schedule.Lambda(a))
        return torch.from_numpy(expm(d * (F - np.eye(F.shape[0]))))
    return process.transition(torch.eye(process.m, dtype=torch.float64), a, b, settings=DENSE)


def bayes_step(process, mu, xt, s, t):
    """sum_y mu(y) q(z | x_t, y), from dense matrices and Bayes' rule."""
    P0s, Pst, P0t = dense_P(process, 0.0, s), dense_P(process, s, t), dense_P(process, 0.0, t)
    out = []
    for row, x in zip(mu, xt.tolist()):
        reach = P0t[x] > 0
        w = row * reach / (row * reach).sum()
        post = Pst[x][:, None] * P0s / torch.where(reach, P0t[x], torch.ones_like(P0t[x]))[None, :]
        out.append((post * w[None, :]).sum(1))
    return torch.stack(out)


KERNELS = {
    "dense": lambda: K.Dense(random_stochastic(6, 3)),
    "dense-t": lambda: time_dependent_dense(6, 4)[2],
    "mask": lambda: K.Mask(6, 5),
    "uniform": lambda: K.Uniform(6),
    "hybrid-t": lambda: K.Hybrid(6, 5, lambda t: 0.5 * mixing_weight(t)),
    "semantic": lambda: K.SemanticKNN(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)),
                                      K.SemanticSettings(k=3, b=0.2, bandwidth_k=2, eps=0.5), schedule=SCHED,
                                      cache=False, progress=False),
}


@pytest.mark.parametrize("name", KERNELS)
def test_reverse_step_is_the_bayes_posterior(name, device):
    """On the test device (inputs given on the CPU), against Bayes' rule on dense CPU matrices."""
    proc = gdds.ForwardProcess(SCHED, KERNELS[name]()).to(device)
    reference = gdds.ForwardProcess(SCHED, KERNELS[name]())
    g = torch.Generator().manual_seed(0)
    mu = torch.softmax(torch.randn(12, 6, generator=g, dtype=torch.float64) * 2, -1)
    xt = torch.randint(0, 6, (12,), generator=g)
    for s, t in [(0.3, 0.7), (0.0, 0.4), (0.8, 1.0)]:
        p = reverse_step_probs(proc, mu, xt, s, t)
        assert p.device.type == device.type
        p = p.cpu()
        assert torch.allclose(p.sum(-1), torch.ones(12, dtype=torch.float64), atol=1e-9)
        # (a time-dependent kernel with a teleport split takes the series by default: about 1e-7 in L1)
        assert torch.allclose(p, bayes_step(reference, mu, xt, s, t), atol=1e-6 if name == "semantic" else 1e-7)
        series = reverse_step_probs(proc, mu, xt, s, t, operators=SERIES).cpu()
        assert torch.allclose(series, p, atol=1e-6)


def test_mask_closed_form_values():
    proc = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    mu = PI.clone()[None].repeat(2, 1)
    s, t = 0.4, 0.7
    a_s, a_t = float(SCHED.alpha(s)), float(SCHED.alpha(t))
    p = reverse_step_probs(proc, mu, torch.tensor([5, 2]), s, t)
    expect = (1 - PI[5]) * (a_s - a_t) / (1 - a_t)
    assert p[0, :5].sum().item() == pytest.approx(float(expect), rel=1e-9)
    assert torch.allclose(p[0, :5] / p[0, :5].sum(), PI[:5] / PI[:5].sum())
    assert p[1].tolist() == pytest.approx([0, 0, 1, 0, 0, 0], abs=1e-12)  # unmasked tokens stay
    assert torch.allclose(true_posterior(proc, torch.tensor([2]), torch.tensor([2]), s, t)[0, 2],
                          torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("kernel", [K.Mask(6, 5), K.Uniform(6), K.Uniform(6, exclude=[1]),
                                    K.Hybrid(6, 5, lambda t: 0.5 * mixing_weight(t))], ids=repr)
def test_closed_form_step_equals_the_generic_operator_path(kernel):
    proc = gdds.ForwardProcess(SCHED, kernel)
    g = torch.Generator().manual_seed(4)
    mu = torch.softmax(torch.randn(20, 6, generator=g, dtype=torch.float64), -1)
    mu[:, 3] = 0.0  # a token the denoiser rules out
    mu = mu / mu.sum(-1, keepdim=True)
    xt = torch.tensor([5, 0, 1, 5, 2] * 4)
    for s, t in [(0.0, 0.3), (0.2, 0.9), (0.7, 1.0)]:
        closed = reverse_step_probs(proc, mu, xt, s, t)
        assert torch.allclose(closed, reverse_step_probs(proc, mu, xt, s, t, operators=SERIES), atol=1e-11)
        assert torch.allclose(closed.sum(-1), torch.ones(20, dtype=torch.float64))
        x0 = torch.where(xt == 5, 3, xt)
        q = true_posterior(proc, x0, xt, s, t)
        assert torch.allclose(q, true_posterior(proc, x0, xt, s, t, operators=SERIES), atol=1e-11)


def exact_denoiser(proc, pi):
    """Bayes denoiser for i.i.d. tokens with law ``pi``: mu(y | x_t) ∝ pi(y) P_{0->t}[x_t, y]
    (computed with ``proc`` on the CPU, whatever device ``x_t`` is on)."""
    def denoise(xt, t):
        xt, t = xt.cpu(), t.cpu()
        out = []
        for b in range(xt.shape[0]):
            P0t = proc.transition(torch.eye(proc.m, dtype=torch.float64), 0.0, float(t[b]))
            post = pi[None, :] * P0t[xt[b]]
            out.append((post / post.sum(-1, keepdim=True)).clamp_min(1e-300).log())
        return torch.stack(out)
    return denoise


@pytest.mark.parametrize("name", ["dense", "mask"])
def test_exact_denoiser_reproduces_the_law_and_the_entropy(name, device):
    """The sampler and the bound on the test device (the denoiser answers on the CPU)."""
    proc = gdds.ForwardProcess(SCHED, KERNELS[name]()).to(device)
    pi = PI if name != "mask" else torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)])
    den = exact_denoiser(gdds.ForwardProcess(SCHED, KERNELS[name]()), pi)
    g = torch.Generator(device=device).manual_seed(1)
    xs = sample(proc, den, num=2000, length=3, steps=6, reference=pi, generator=g)
    assert xs.device.type == device.type
    assert tv(empirical(xs.cpu().reshape(1, -1), 6)[0], pi) < 0.03
    x0 = torch.multinomial(pi, 600 * 3, replacement=True, generator=torch.Generator().manual_seed(2)).reshape(600, 3)
    est = nll_bound(proc, den, x0, steps=6, reference=pi, generator=g)
    summary = summarize(est, torch.full((600,), 3))
    entropy = float(-(pi[pi > 0] * pi[pi > 0].log()).sum())
    assert abs(summary.nats_per_token - entropy) < 4 * summary.standard_error + 1e-3


def copy_denoiser(proc, pi):
    """Exact posterior for pairs (y, y), y ~ pi, given both noisy positions."""
    def denoise(xt, t):
        out = []
        for b in range(xt.shape[0]):
            P0t = proc.transition(torch.eye(proc.m, dtype=torch.float64), 0.0, float(t[b]))
            post = pi * P0t[xt[b, 0]] * P0t[xt[b, 1]]
            out.append((post / post.sum()).clamp_min(1e-300).log().expand(2, -1))
        return torch.stack(out)
    return denoise


def test_bound_on_dependent_data_is_above_entropy_and_shrinks_with_steps():
    proc = gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(6, 7)))
    den = copy_denoiser(proc, PI)
    g = torch.Generator().manual_seed(2)
    y = torch.multinomial(PI, 400, replacement=True, generator=g)
    x0 = torch.stack([y, y], 1)
    entropy = float(-(PI * PI.log()).sum())  # of the pair
    means = []
    for steps in (1, 4, 16):
        est = nll_bound(proc, den, x0, steps=steps, all_terms=True, reference=PI, generator=g)
        s = summarize(est, torch.full((400,), 2))
        means.append(s.nats_per_token * 2)
        assert means[-1] > entropy - 3 * 2 * s.standard_error
    assert means[0] > means[1] > means[2]


def test_generic_mask_bound_is_unbiased_and_converges_to_the_continuous_bound():
    """Masked positions predicted with nu_t = (1 - t) nu_a + t nu_b. Then the T-step bound's
    expectation is prior + sum_k (alpha_{k-1} - alpha_k) CE(pi, nu_{t_k}) + (1 - alpha_1) CE(pi, nu_{t_1})
    and the continuous bound is prior + int (-alpha') CE(pi, nu_t) dt (MDLM)."""
    proc = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    pi = torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)])
    nu_a = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1, 0.0], dtype=torch.float64)
    nu_b = torch.tensor([0.05, 0.05, 0.1, 0.4, 0.4, 0.0], dtype=torch.float64)

    def nu(t):
        return (1 - t) * nu_a + t * nu_b

    def den(xt, t):
        out = torch.full((*xt.shape, 6), -1e30, dtype=torch.float64)
        out.scatter_(-1, xt[..., None], 0.0)
        for b in range(xt.shape[0]):
            out[b][xt[b] == 5] = nu(float(t[b])).clamp_min(1e-300).log()
        return out

    def ce(t):
        return float(-(pi[:5] * nu(t)[:5].log()).sum())

    alpha = lambda t: float(SCHED.alpha(t))  # noqa: E731
    prior = alpha(1.0) * float(-(pi[:5] * pi[:5].log()).sum())
    grid = np.linspace(0, 1, 20001)
    cont = prior + float(np.trapezoid([(1 - 1e-3) * ce(t) for t in grid], grid))
    g = torch.Generator().manual_seed(3)
    x0 = torch.multinomial(pi, 300 * 4, replacement=True, generator=g).reshape(300, 4)
    gaps = []
    for steps in (2, 8, 64):
        ts = np.linspace(0, 1, steps + 1)
        exact = prior + sum((alpha(ts[k - 1]) - alpha(ts[k])) * ce(ts[k]) for k in range(2, steps + 1))
        exact += (1 - alpha(ts[1])) * ce(ts[1])
        est = summarize(nll_bound(proc, den, x0, steps=steps, all_terms=steps <= 8, reference=pi, generator=g),
                        torch.full((300,), 4))
        assert abs(est.nats_per_token - exact) < 4 * est.standard_error + 1e-3
        gaps.append(exact - cont)
    assert gaps[0] > gaps[1] > gaps[2] > 0 and gaps[2] < 0.01 * cont
    mc = summarize(masked_continuous_bound(proc, den, x0, samples=8, reference=pi, generator=g), torch.full((300,), 4))
    assert abs(mc.nats_per_token - cont) < 4 * mc.standard_error + 1e-3


def test_time_grids_and_nucleus():
    proc = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    assert time_grid(proc, 4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    lam = time_grid(proc, 4, "lambda")
    assert lam[0] == pytest.approx(1.0) and lam[-1] == 0.0
    gaps = np.diff(SCHED.Lambda(torch.tensor(lam)).numpy())
    assert np.allclose(gaps, gaps[0])
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    assert torch.allclose(nucleus(p, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(nucleus(2 * p, 0.7), nucleus(p, 0.7))  # a restricted law is renormalised first


@pytest.mark.parametrize("top_p", [0.5, 0.95])
@pytest.mark.parametrize("kernel", [K.Mask(6, 5), K.Uniform(6), K.Dense(random_stochastic(6, 3, sparsity=0.5))],
                         ids=["mask", "uniform", "dense"])
def test_nucleus_sampling_keeps_to_the_clean_tokens_that_can_have_produced_x_t(kernel, top_p):
    """A narrow nucleus of a denoiser that puts most mass on token 0: under the mask kernel an
    unmasked token can only have come from itself, so the nucleus is taken among the reachable tokens
    (before, it kept only token 0 and the step failed: no mass on any reachable token). A step
    from x_t then keeps every unmasked token and draws the others from the nucleus. The denoiser
    ignores context, so every position follows the same chain: the law of x_0 is the prior
    ``P_{0->1} pi_ref`` pushed through the 8 nucleus steps (``reverse_step_probs`` for each state),
    and the 8,000 sampled tokens follow it (total variation below 0.03, about 0.01 expected from
    sampling alone, and a chi-square test at 0.1%; fixed seed). With ``top_p = 0.5`` the nucleus is
    token 0 wherever it is reachable; with 0.95 it is tokens 0 to 2."""
    proc = gdds.ForwardProcess(SCHED, kernel)
    logp = torch.tensor([0.9, 0.04, 0.03, 0.02, 0.01, 1e-9], dtype=torch.float64).log()

    def den(xt, t):
        return logp.expand(*xt.shape, -1).clone()

    decoding = gdds.Decoding(top_p=top_p)
    x = sample(proc, den, 2000, 4, steps=8, decoding=decoding, generator=torch.Generator().manual_seed(0))
    law = context_free_chain_law(proc, logp.exp(), 8, decoding)
    if isinstance(kernel, K.Mask) and top_p == 0.5:  # masked positions are filled from the nucleus {0}; the
        assert float(law[0]) > 1 - 2e-3 and float(law[5]) == 0  # others, unmasked at t = 1 (1e-3), stay
    assert_follows(x, law)


def test_reuse_of_unchanged_outputs_is_exact_for_time_free_denoisers(monkeypatch):
    """A t-independent denoiser: reusing its output when nothing changed gives the same
    draws with fewer calls (the masked sampler's cache)."""
    proc = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    calls = {"n": 0}
    logp = torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)]).clamp_min(1e-300).log()

    def den(xt, t):
        calls["n"] += 1
        return logp.expand(*xt.shape, -1).clone()

    a = sample(proc, den, 3, 2, steps=40, generator=torch.Generator().manual_seed(0))
    plain = calls["n"]
    b = sample(proc, den, 3, 2, steps=40, reuse_unchanged=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and calls["n"] - plain < plain / 2


def test_chunked_sampling_matches_unchunked(monkeypatch):
    proc = gdds.ForwardProcess(SCHED, K.Uniform(6))
    den = exact_denoiser(proc, PI)
    a = sample(proc, den, 4, 5, steps=3, generator=torch.Generator().manual_seed(1))
    import gdds.sampling as S

    monkeypatch.setattr(S, "CHUNK_FLOATS", 6 * 3)  # three positions per chunk
    b = sample(proc, den, 4, 5, steps=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == b.shape and torch.equal(a, b)


def test_stratified_terms_are_uniform_per_sequence_and_spread_over_the_batch():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([stratified_terms(3, 7, g) for _ in range(12000)])  # [n, 3], k in {2..7}
    for b in range(3):
        counts = torch.bincount(draws[:, b] - 2, minlength=6).double()
        chi2 = float(((counts - 2000) ** 2 / 2000).sum())
        assert chi2 < 20.5, chi2  # chi-square, 5 degrees of freedom, p = 0.001
    # Every batch puts one sequence in each third of the grid ({2,3}, {4,5}, {6,7}).
    thirds = torch.div(draws - 2, 2, rounding_mode="floor")
    assert (thirds.sort(1).values == torch.tensor([0, 1, 2])).all()


def test_bound_in_groups_of_sequences_equals_the_bound_per_group(monkeypatch):
    """Large batches are bounded in groups (memory); each group draws its noise in turn,
    so the result equals separate calls sharing one generator, with the default operators or others."""
    proc = gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(6, 7)))
    den = exact_denoiser(proc, PI)
    x0 = torch.multinomial(PI, 12, replacement=True, generator=torch.Generator().manual_seed(3)).reshape(4, 3)
    import gdds.likelihood as Lk

    for op in (None, SERIES):
        g = torch.Generator().manual_seed(5)
        parts = torch.cat([nll_bound(proc, den, x0[a:a + 2], steps=4, generator=g, operators=op) for a in (0, 2)])
        with monkeypatch.context() as mp:
            mp.setattr(Lk, "CHUNK_FLOATS", 2 * 3 * 6)  # two sequences of 3 positions at m = 6
            grouped = nll_bound(proc, den, x0, steps=4, generator=torch.Generator().manual_seed(5), operators=op)
        assert torch.allclose(parts, grouped, atol=1e-9)


def test_fixed_positions_and_errors():
    proc = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    den = exact_denoiser(proc, torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)]))
    fixed = torch.full((5, 4), -1)
    fixed[:, 0] = 2
    xs = sample(proc, den, 5, 4, steps=3, fixed=fixed, generator=torch.Generator().manual_seed(0))
    assert (xs[:, 0] == 2).all() and (xs != 5).all()
    with pytest.raises(ValueError, match="fixed must have shape"):
        sample(proc, den, 5, 4, fixed=torch.full((4, 4), -1))
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample(proc, den, 5, 4, steps=0)
    with pytest.raises(ValueError, match="zero probability"):
        reverse_step_probs(proc, torch.tensor([[0, 0, 0, 0, 0, 1.0]], dtype=torch.float64), torch.tensor([2]),
                           0.2, 0.5)
    with pytest.raises(ValueError, match="0 <= s < t <= 1"):
        reverse_step_probs(proc, PI[None], torch.tensor([1]), 0.5, 0.5)
    assert math.isfinite(summarize(torch.tensor([1.0, 2.0]), torch.tensor([2, 2])).perplexity)


def context_free_denoiser(nu_a, nu_b):
    """mu(. | x_t, t) = (1 - t) nu_a + t nu_b at every position, whatever x_t."""
    def den(xt, t):
        w = t.double()[:, None, None]
        return ((1 - w) * nu_a + w * nu_b).log().expand(*xt.shape, -1).clone()
    return den


def test_generic_continuous_bound_is_mdlm_for_mask_and_the_limit_for_uniform():
    g = torch.Generator().manual_seed(5)
    nu_a = torch.tensor([0.3, 0.2, 0.2, 0.1, 0.1, 0.1], dtype=torch.float64)
    nu_b = torch.tensor([0.1, 0.1, 0.1, 0.2, 0.2, 0.3], dtype=torch.float64)
    # Mask: the generic CTMC bound and MDLM's formula estimate the same number.
    mask = gdds.ForwardProcess(SCHED, K.Mask(6, 5))
    pi = torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)])
    den = context_free_denoiser(torch.cat([nu_a[:5] / nu_a[:5].sum(), nu_a[5:] * 0]),
                                torch.cat([nu_b[:5] / nu_b[:5].sum(), nu_b[5:] * 0]))
    x0 = torch.multinomial(pi, 300 * 4, replacement=True, generator=g).reshape(300, 4)
    tokens = torch.full((300,), 4)
    generic = summarize(continuous_bound(mask, den, x0, samples=4, reference=pi, generator=g), tokens)
    mdlm = summarize(masked_continuous_bound(mask, den, x0, samples=4, reference=pi, generator=g), tokens)
    se = math.hypot(generic.standard_error, mdlm.standard_error)
    assert abs(generic.nats_per_token - mdlm.nats_per_token) < 4 * se + 1e-3
    # Uniform: the T-step bound approaches the continuous-time (UDLM) bound as T grows. The
    # denoiser is the Bayes posterior under a prior nu_t that drifts with t: a model that is not
    # a consistent generative process, so the discretisation gap is real (and finite: it
    # predicts x_t at small t, unlike a context-free denoiser, whose continuous bound is infinite).
    uni = gdds.ForwardProcess(SCHED, K.Uniform(6))

    def bayes(xt, t):
        w = t.double()[:, None, None]
        alpha = SCHED.alpha(t.double().clamp(0, 1))[:, None, None]
        same = torch.nn.functional.one_hot(xt, 6).double()
        post = ((1 - w) * nu_a + w * nu_b) * (alpha * same + (1 - alpha) / 6)  # nu_t(y) q_t(x_t | y)
        return (post / post.sum(-1, keepdim=True)).log()

    x0 = torch.multinomial(PI, 400 * 4, replacement=True, generator=g).reshape(400, 4)
    tokens = torch.full((400,), 4)
    cont = summarize(continuous_bound(uni, bayes, x0, samples=24, reference=nu_b, generator=g), tokens)
    coarse, fine = (summarize(nll_bound(uni, bayes, x0, steps=steps, all_terms=True, reference=nu_b, generator=g),
                              tokens) for steps in (1, 128))
    assert coarse.nats_per_token - cont.nats_per_token > 4 * math.hypot(coarse.standard_error, cont.standard_error)
    assert abs(fine.nats_per_token - cont.nats_per_token) < 4 * math.hypot(fine.standard_error, cont.standard_error)


def test_the_sampler_shows_a_progress_bar_only_when_asked(capsys):
    proc = gdds.ForwardProcess(SCHED, KERNELS["mask"]())
    den = exact_denoiser(proc, torch.cat([PI[:5] / PI[:5].sum(), torch.zeros(1, dtype=torch.float64)]))
    sample(proc, den, num=2, length=3, steps=3, generator=torch.Generator().manual_seed(0))
    assert "exact reverse chain" not in capsys.readouterr().err
    sample(proc, den, num=2, length=3, steps=3, generator=torch.Generator().manual_seed(0), progress=True)
    assert "exact reverse chain" in capsys.readouterr().err
