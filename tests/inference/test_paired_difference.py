"""The paired difference of two bounds (:func:`gdds.likelihood.paired_difference`, what ``gdds eval``
reports as model minus baseline and ``gdds compare`` as method minus reference) on a synthetic pair
of denoisers whose difference is known exactly: it is unbiased, and its standard error is the spread
of the estimate over independent repetitions (not smaller: the batch's stratified term draws can
only make it conservative).

Data: ``L = 3`` positions drawn i.i.d. from ``pi`` over 3 tokens. Denoiser A is the Bayes-unigram
denoiser (the best one that ignores context), B a context-free uniform guess. Both ignore context,
so the expected ``T``-step bound of each is ``L sum_y pi(y) b(y)`` with ``b(y)`` a finite sum over
the value of ``x_t`` at each step, computed here from the exact marginals and posteriors."""
import math

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.baseline import bayes_unigram
from gdds.likelihood import paired_difference, prior_kl
from gdds.posterior import reverse_step_probs, true_posterior
from gdds.sampling import time_grid
from helpers import random_stochastic

M, L, T, N, R = 4, 3, 6, 12, 200
PI = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)


def uniform_guess(xt, t):
    return torch.zeros(*xt.shape, M)


def exact_bound_per_token(process, denoiser) -> float:
    """``sum_y pi(y) b(y)`` by enumerating ``x_t`` at every step (module docstring)."""
    grid = time_grid(process, T)[::-1]
    ys = torch.arange(3)
    total = prior_kl(process, ys[:, None]).double()
    states = torch.arange(M)
    for k in range(1, T + 1):
        s, t = grid[k - 1], grid[k]
        mu = torch.softmax(denoiser(states[:, None], torch.full((M,), t)).double().reshape(M, M), -1)
        for y in ys.tolist():
            q_t = process.marginal(torch.tensor([[y]]), t).reshape(M)
            for z in states[q_t > 0].tolist():
                step = reverse_step_probs(process, mu[z:z + 1], torch.tensor([z]), s, t)[0]
                if k == 1:  # reconstruction: -log p(x0 | x_{t_1})
                    total[y] += q_t[z] * -math.log(float(step[y]))
                else:
                    q = true_posterior(process, torch.tensor([y]), torch.tensor([z]), s, t)[0]
                    kl = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - step.clamp_min(1e-300).log()), 0.0)
                    total[y] += q_t[z] * kl.sum()
    return float((PI[:3] * total).sum())


@pytest.mark.parametrize("kernel", [K.Mask(M, 3), K.Dense(random_stochastic(M, 4))], ids=["mask", "dense"])
def test_paired_difference_is_unbiased_with_a_correct_standard_error(kernel):
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), kernel)
    a, b = bayes_unigram(process, PI.clamp_min(1e-12) / PI.clamp_min(1e-12).sum()), uniform_guess
    known = exact_bound_per_token(process, a) - exact_bound_per_token(process, b)
    gen = torch.Generator().manual_seed(0)
    estimates, errors = [], []
    for r in range(R):
        x0 = torch.multinomial(PI.float(), N * L, replacement=True, generator=gen).reshape(N, L)
        ga, gb = (torch.Generator().manual_seed(1000 + r) for _ in range(2))  # the same draws for both
        d = paired_difference(gdds.nll_bound(process, a, x0, steps=T, generator=ga),
                              gdds.nll_bound(process, b, x0, steps=T, generator=gb), torch.full((N,), L))
        estimates.append(d.nats_per_token)
        errors.append(d.standard_error)
    est = torch.tensor(estimates, dtype=torch.float64)
    spread = float(est.std())
    assert known < -0.05  # a real difference: the Bayes-unigram denoiser is better
    assert abs(float(est.mean()) - known) < 4 * spread / math.sqrt(R), (float(est.mean()), known)
    ratio = float(torch.tensor(errors).pow(2).mean()) / spread**2  # reported variance / actual variance
    assert 0.8 < ratio < 2.0, ratio
