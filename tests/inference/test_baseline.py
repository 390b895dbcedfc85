"""The baseline that needs no training (gdds.baseline): the exact forward likelihood it uses, and
its bound on i.i.d. text equal to the exact NLL, also for the semantic kernel on the series /
teleport-split operator path."""
import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.baseline import bayes_unigram, unigram_law, unigram_nll
from gdds.likelihood import nll_bound, summarize
from gdds.posterior import forward_likelihood
from helpers import mixing_weight, random_stochastic, small_embeddings, time_dependent_dense

M = 8
SCHED = gdds.LogLinear(1e-3)
SERIES = OperatorSettings(method="series")


def semantic(m: int = M) -> K.SemanticKNN:
    """The paper's kernel at its sharp default eps = 0.01, with its time-dependent teleport."""
    return K.SemanticKNN(small_embeddings(m, d=3, seed=11), K.SemanticSettings(k=4, bandwidth_k=3, eps=0.01),
                         schedule=SCHED, cache=False, progress=False)


KERNELS = {
    "mask": lambda: K.Mask(M, M - 1),
    "uniform": lambda: K.Uniform(M),
    "hybrid-t": lambda: K.Hybrid(M, M - 1, lambda t: 0.5 * mixing_weight(t)),
    "dense": lambda: K.Dense(random_stochastic(M, 4)),
    "dense-t": lambda: time_dependent_dense(M, 6)[2],
    "semantic": semantic,
}


@pytest.mark.parametrize("name", KERNELS)
def test_forward_likelihood_is_the_exact_marginal(name):
    process = gdds.ForwardProcess(SCHED, KERNELS[name]())
    xt = torch.randint(0, M, (3, 5), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.05, 0.5, 0.97])
    q = forward_likelihood(process, xt, t)
    for b in range(3):
        dense = OperatorSettings(method="dense")
        marginal = process.marginal(torch.arange(M)[None], float(t[b]), dense)[0]  # [y, x]
        # (the semantic kernel's default operator is its teleport-split series: about 1e-7, docs/math.md)
        torch.testing.assert_close(q[b], marginal[:, xt[b]].T, atol=1e-6 if name == "semantic" else 1e-9, rtol=0)


def iid(pi: torch.Tensor, batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(pi, batch * length, replacement=True, generator=g).reshape(batch, length)


@pytest.mark.parametrize("name,op", [("mask", None), ("uniform", None), ("semantic", SERIES)])
def test_bayes_unigram_bound_equals_the_exact_nll_on_iid_text(name, op, device):
    """On i.i.d. text the Bayes-unigram denoiser is the exact denoiser, so its T-step bound
    (all terms, on the test device) equals the exact NLL up to the prior term's mismatch (p_1
    from a uniform reference; about 1e-3 nats): the paired difference per token is consistent
    with 0."""
    process = gdds.ForwardProcess(SCHED, KERNELS[name]()).to(device)
    g = torch.Generator().manual_seed(1)
    pi = torch.distributions.Dirichlet(torch.ones(M, dtype=torch.float64)).sample() if name != "mask" else None
    if pi is None:  # the mask token never occurs in clean text
        pi = torch.cat([torch.rand(M - 1, dtype=torch.float64, generator=g) + 0.2, torch.zeros(1, dtype=torch.float64)])
        pi = pi / pi.sum()
    x0 = iid(pi, 48, 6, seed=2)
    est = nll_bound(process, bayes_unigram(process, pi, operators=op), x0, steps=6, all_terms=True,
                    generator=torch.Generator(device=device).manual_seed(3), operators=op).cpu()
    exact = unigram_nll(pi, x0)
    diff = summarize(est - exact, torch.full((48,), 6))
    assert abs(diff.nats_per_token) < 3 * diff.standard_error + 0.01, diff
    assert diff.nats_per_token > -3 * diff.standard_error  # a valid bound does not go below the exact NLL


def test_unigram_law_is_smoothed_and_validated():
    pi = unigram_law(torch.tensor([3, 0, 1]))
    torch.testing.assert_close(pi, torch.tensor([4 / 7, 1 / 7, 2 / 7], dtype=torch.float64))
    assert unigram_nll(pi, torch.tensor([[0, 1]])).item() == pytest.approx(-torch.log(pi[0] * pi[1]).item())
    with pytest.raises(ValueError, match="non-negative"):
        unigram_law(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match=r"shape \[m\]"):
        bayes_unigram(gdds.ForwardProcess(SCHED, K.Uniform(3)), torch.ones(4) / 4)
