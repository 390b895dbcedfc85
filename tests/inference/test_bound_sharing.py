"""What the bound shares between denoisers and between calls (issue 23, part 2) changes no number:
denoisers bounded together equal the same denoisers bounded apart on the same draws, the remembered
prior terms equal fresh ones, and the true posterior from one operator column per distinct clean
token equals Bayes' rule on dense matrices."""
import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.baseline import bayes_unigram
from gdds.likelihood import bound_terms, nll_bound, prior_kl
from gdds.posterior import posterior_and_steps, true_posterior
from gdds.sampling import reference_prior
from helpers import kernel_zoo, tv

SCHED = gdds.LogLinear(1e-3)
ZOO = kernel_zoo(7)


def network(xt, t):
    return 2 * torch.randn(*xt.shape, 7, generator=torch.Generator().manual_seed(int(xt.sum()) % 997))


@pytest.mark.parametrize("name,kernel", ZOO, ids=[n for n, _ in ZOO])
def test_denoisers_bounded_together_equal_the_same_bounded_apart(name, kernel):
    process = gdds.ForwardProcess(SCHED, kernel)
    x0 = torch.randint(0, 6, (5, 6), generator=torch.Generator().manual_seed(1))
    pi = torch.softmax(torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), 0)
    dens = [network, bayes_unigram(process, pi)]
    for all_terms in (False, True):
        together = nll_bound(process, dens, x0, steps=5, all_terms=all_terms,
                             generator=torch.Generator().manual_seed(3))
        apart = torch.stack([nll_bound(process, d, x0, steps=5, all_terms=all_terms,
                                       generator=torch.Generator().manual_seed(3)) for d in dens])
        torch.testing.assert_close(together, apart, rtol=0, atol=1e-9)
    terms = bound_terms(process, dens, x0, steps=4, generator=torch.Generator().manual_seed(4))
    assert terms.shape == (2, 5, 5)
    torch.testing.assert_close(terms[1], bound_terms(process, dens[1], x0, steps=4,
                                                     generator=torch.Generator().manual_seed(4)), rtol=0, atol=1e-9)


def test_remembered_prior_terms_equal_fresh_ones():
    """prior_kl remembers KL(q_1(.|y) || p_1) per token y of a process; a second call on other tokens
    adds to it, and every value equals the KL computed from the marginal directly."""
    kernel = dict(ZOO)["semantic-knn"]
    process = gdds.ForwardProcess(SCHED, kernel)
    p1 = reference_prior(process)
    for seed in (5, 6):
        x0 = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(seed))
        q1 = process.marginal(x0, 1.0)
        direct = (q1 * (q1.log() - p1.log())).sum(-1).sum(-1)
        torch.testing.assert_close(prior_kl(process, x0), direct, rtol=0, atol=1e-12)
    other = torch.tensor([0.05, 0.15, 0.1, 0.2, 0.2, 0.2, 0.1], dtype=torch.float64)
    x0 = torch.randint(0, 7, (2, 4), generator=torch.Generator().manual_seed(7))
    q1, p1 = process.marginal(x0, 1.0), reference_prior(process, other)
    torch.testing.assert_close(prior_kl(process, x0, other), (q1 * (q1.log() - p1.log())).sum(-1).sum(-1),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,kernel", ZOO, ids=[n for n, _ in ZOO])
def test_the_true_posterior_is_bayes_rule(name, kernel):
    """q(x_s | x_t, x0) = q(x_t | x_s) q(x_s | x0) / q(x_t | x0) from dense transition matrices."""
    process = gdds.ForwardProcess(SCHED, kernel)
    eye = torch.eye(7, dtype=torch.float64)
    s, t = 0.3, 0.55
    P0s, Pst = (process.transition(eye, a, b, settings=OperatorSettings(method="dense")) for a, b in ((0.0, s), (s, t)))
    x0 = torch.randint(0, 6, (12,), generator=torch.Generator().manual_seed(8))
    xt = process.noise(x0[None], t, generator=torch.Generator().manual_seed(9))[0]
    joint = Pst[xt] * P0s[:, x0].T
    exact = joint / joint.sum(-1, keepdim=True)
    q = true_posterior(process, x0, xt, s, t)
    assert tv(q, exact) < 1e-6
    q2, steps = posterior_and_steps(process, [(torch.eye(7, dtype=torch.float64)[x0], False)], x0, xt, s, t)
    assert tv(q2, q) < 1e-12 and tv(steps[0], q) < 1e-9


def test_errors_name_what_to_fix():
    process = gdds.ForwardProcess(SCHED, K.Uniform(7))
    x0 = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one denoiser"):
        nll_bound(process, [], x0, steps=3)
