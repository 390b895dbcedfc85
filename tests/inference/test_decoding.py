"""The decoding filters (gdds.Decoding: temperature, top-k, top-p, min-p) on the reverse chain.

The neutral setting leaves every sampler's draws unchanged bit for bit (against samples the code drew
before the filters existed, same seeds); each filter keeps exactly the tokens it should of a known law, in
the documented order; the step filters mu after restricting it to the clean tokens that can have produced
x_t (top-k = 1 picks the most probable of those; a vanishing temperature tends to it); and a temperature T
gives the step a hand computation of a tiny mask or uniform process predicts with mu^(1/T). The
autoregressive sampler's conditionals: tests/models/test_causal.py."""
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.block_sampling import sample_blocks
from gdds.models import DiTConfig
from gdds.models.block import BlockDiT
from gdds.models.causal import CausalLM
from gdds.posterior import forward_likelihood, reverse_step_probs
from gdds.sampling import LikelihoodWeighted, sample, sample_ancestral, sample_renoise
from helpers import random_stochastic

M = 6
SCHED = gdds.LogLinear(1e-3)
LOGITS = torch.randn(M, generator=torch.Generator().manual_seed(3)).double()
KERNELS = {"mask": lambda: K.Mask(M, M - 1), "uniform": lambda: K.Uniform(M),
           "dense": lambda: K.Dense(random_stochastic(M, 1)),
           "sparse": lambda: K.Sparse(random_stochastic(M, 3, sparsity=0.6).to_sparse())}
NEUTRAL = [gdds.Decoding(), gdds.Decoding(temperature=1.0, top_k=M, top_p=1.0, min_p=0.0), gdds.Decoding(top_k=99)]


def den(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Logits of mu that depend on each token ``x_t`` and on the time."""
    return LOGITS + (0.37 * xt[..., None].double() * torch.arange(1, M + 1) + t[:, None, None].double()).sin()


# Samples the chain drew before gdds.Decoding existed (commit 3855fae: `sample(..., top_p=)`), seed 1, 6 x 5
# tokens in 6 steps: (kernel, likelihood-weighted, top_p) -> samples.
BEFORE = {
    ("mask", False, 1.0):
        [[3, 0, 2, 3, 0], [2, 0, 1, 4, 1], [3, 0, 0, 1, 0], [0, 3, 0, 0, 0], [0, 0, 1, 0, 2], [3, 3, 1, 3, 2]],
    ("uniform", True, 1.0):
        [[3, 0, 4, 2, 2], [0, 1, 3, 2, 0], [4, 1, 0, 2, 1], [0, 4, 2, 4, 0], [4, 0, 4, 0, 1], [1, 4, 0, 1, 1]],
    ("dense", False, 1.0):
        [[1, 0, 1, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [2, 1, 5, 0, 2], [4, 0, 0, 4, 3], [1, 1, 2, 2, 1]],
    ("sparse", True, 1.0):
        [[0, 0, 0, 0, 1], [1, 1, 0, 0, 0], [4, 1, 0, 2, 2], [2, 0, 3, 0, 0], [4, 2, 0, 1, 0], [4, 0, 1, 0, 1]],
    ("dense", True, 0.9):
        [[3, 2, 2, 2, 4], [1, 1, 2, 4, 0], [4, 1, 2, 1, 0], [0, 4, 0, 4, 0], [4, 0, 4, 0, 1], [1, 4, 1, 2, 0]],
    ("mask", False, 0.8):
        [[3, 0, 2, 2, 0], [3, 0, 0, 3, 0], [3, 0, 0, 0, 0], [0, 3, 0, 0, 0], [0, 0, 0, 0, 2], [2, 2, 0, 3, 2]],
}


def chain(kernel: str, weighted: bool, decoding: gdds.Decoding | None) -> torch.Tensor:
    proc = gdds.ForwardProcess(SCHED, KERNELS[kernel]())
    return sample(proc, LikelihoodWeighted(proc, den) if weighted else den, 6, 5, 6, decoding=decoding,
                  generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(BEFORE), ids=lambda c: "-".join(map(str, c)))
def test_the_neutral_setting_and_top_p_draw_what_the_chain_drew_before(case):
    kernel, weighted, top_p = case
    settings = [gdds.Decoding(top_p=top_p)] if top_p < 1 else [None, *NEUTRAL]
    for decoding in settings:
        assert chain(kernel, weighted, decoding).tolist() == BEFORE[case], decoding


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("weighted", [False, True])
def test_the_neutral_setting_leaves_every_sampler_unchanged_bit_for_bit(kernel, weighted):
    """Every neutral spelling draws the untouched chain's samples: the exact chain on every kind of kernel
    (closed form, generic, likelihood-weighted), block by block, and the autoregressive sampler."""
    plain = chain(kernel, weighted, None)
    assert all(torch.equal(chain(kernel, weighted, decoding), plain) for decoding in NEUTRAL)
    assert not torch.equal(chain(kernel, weighted, gdds.Decoding(temperature=0.5)), plain)  # the test can tell


def test_the_neutral_setting_leaves_the_block_and_ancestral_samplers_unchanged_bit_for_bit():
    torch.manual_seed(0)
    net = BlockDiT(DiTConfig(vocab_size=5, layers=1, width=16, heads=2, cond_width=8, max_len=16), 4).eval()
    lm = CausalLM(DiTConfig(vocab_size=M, max_len=8, causal=True, layers=1, width=16, heads=2, cond_width=8))
    with torch.no_grad():  # random weights everywhere (the zero-initialised head answers a uniform mu)
        for p in [*net.parameters(), *lm.parameters()]:
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    proc = gdds.ForwardProcess(SCHED, K.Mask(5, 4))

    def blocks(decoding):
        return sample_blocks(proc, net, 3, 10, 4, generator=torch.Generator().manual_seed(0), decoding=decoding)

    def ancestral(decoding):
        return sample_ancestral(None, lm, 5, 8, generator=torch.Generator().manual_seed(2), decoding=decoding)

    for draw in (blocks, ancestral):
        plain = draw(None)
        assert all(torch.equal(draw(decoding), plain) for decoding in NEUTRAL)
        assert not torch.equal(draw(gdds.Decoding(top_k=1)), plain)


@pytest.mark.parametrize("kernel", ["mask", "uniform"])
def test_the_renoise_sampler_filters_mu_before_drawing_x0(kernel):
    """Neutral settings draw its untouched samples; with top-k = 1 its last ``x0`` (noised to s = 0: the
    sample) is the most probable token of mu, here one law whatever ``x_t``."""
    proc = gdds.ForwardProcess(SCHED, KERNELS[kernel]())

    def renoise(denoiser, decoding):
        return sample_renoise(proc, denoiser, 4, 5, 3, generator=torch.Generator().manual_seed(0), decoding=decoding)

    plain = renoise(den, None)
    assert all(torch.equal(renoise(den, decoding), plain) for decoding in NEUTRAL)
    one_law = renoise(lambda xt, t: LOGITS.expand(*xt.shape, M), gdds.Decoding(top_k=1))
    assert (one_law == LOGITS.argmax()).all() and not (plain == LOGITS.argmax()).all()


MU = torch.tensor([[0.05, 0.4, 0.1, 0.25, 0.2]], dtype=torch.float64)


def kept(decoding: gdds.Decoding, mu: torch.Tensor = MU) -> set[int]:
    law = decoding.filter(mu)
    assert torch.allclose(law.sum(-1), torch.ones(1, dtype=torch.float64), atol=1e-15)
    return set(law[0].nonzero().reshape(-1).tolist())


def test_each_filter_keeps_exactly_its_set_of_a_known_law():
    """mu = (0.05, 0.4, 0.1, 0.25, 0.2): sorted 0.4, 0.25, 0.2, 0.1, 0.05 (tokens 1, 3, 4, 2, 0)."""
    assert kept(gdds.Decoding(top_k=1)) == {1} and kept(gdds.Decoding(top_k=3)) == {1, 3, 4}
    assert kept(gdds.Decoding(top_p=0.4)) == {1} and kept(gdds.Decoding(top_p=0.6)) == {1, 3}  # 0.4 < 0.6 <= 0.65
    assert kept(gdds.Decoding(top_p=0.7)) == {1, 3, 4} and kept(gdds.Decoding(top_p=0.9)) == {1, 2, 3, 4}
    assert kept(gdds.Decoding(min_p=0.45)) == {1, 3, 4} and kept(gdds.Decoding(min_p=0.55)) == {1, 3}  # x 0.4
    assert kept(gdds.Decoding(min_p=1.0)) == {1} and kept(gdds.Decoding(top_p=0.96)) == {0, 1, 2, 3, 4}  # 0.95 < 0.96
    torch.testing.assert_close(gdds.Decoding(top_k=2).filter(MU), torch.tensor([[0, 0.4, 0, 0.25, 0]]).double() / 0.65)
    for temperature in (0.5, 2.0):
        torch.testing.assert_close(gdds.Decoding(temperature=temperature).filter(MU),
                                   MU ** (1 / temperature) / (MU ** (1 / temperature)).sum(), rtol=1e-14, atol=0)
    # A zero (a token that cannot have produced x_t) stays zero, whatever the filter; a law need not sum to 1.
    restricted = torch.tensor([[0.0, 0.8, 0.0, 0.5, 0.0]], dtype=torch.float64)
    for decoding in (gdds.Decoding(top_k=4), gdds.Decoding(temperature=3.0), gdds.Decoding(min_p=0.01)):
        assert kept(decoding, restricted) == {1, 3}
    assert kept(gdds.Decoding(temperature=1e-4)) == {1}  # no underflow of the whole row at a tiny temperature


def test_the_filters_apply_in_the_documented_order():
    """Temperature, then top-k, then top-p, then min-p; each renormalises what it keeps."""
    # temperature first: mu^2 / Z = (.009, .582, .036, .227, .145), whose 0.55-nucleus is token 1 alone
    assert kept(gdds.Decoding(top_p=0.55)) == {1, 3} and kept(gdds.Decoding(temperature=0.5, top_p=0.55)) == {1}
    # top-k before top-p: the top 3 renormalised are (.47, .29, .24), whose 0.7-nucleus is {1, 3}
    assert kept(gdds.Decoding(top_k=3, top_p=0.7)) == {1, 3} and kept(gdds.Decoding(top_p=0.7)) == {1, 3, 4}
    # min-p last, relative to the largest probability: the intersection with the nucleus
    assert kept(gdds.Decoding(top_p=0.9, min_p=0.55)) == {1, 3}


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0.0, "temperature must be a positive finite number"),
    ("temperature", float("inf"), "temperature must be a positive finite number"),
    ("temperature", float("nan"), "temperature must be a positive finite number"),
    ("top_k", 0, "top_k must be a positive integer, or None"), ("top_k", 2.0, "top_k must be a positive integer"),
    ("top_k", True, "top_k must be a positive integer"), ("top_p", 0.0, r"top_p must lie in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must lie in \(0, 1\]"), ("min_p", -0.1, r"min_p must lie in \[0, 1\]"),
    ("min_p", float("nan"), r"min_p must lie in \[0, 1\]"),
])
def test_bad_settings_are_refused_saying_what_to_fix(field, value, message):
    with pytest.raises(ValueError, match=message):
        gdds.Decoding(**{field: value})
    with pytest.raises(AttributeError):  # frozen
        gdds.Decoding().top_p = 0.5


def allowed(proc: gdds.ForwardProcess, xt: torch.Tensor, t: float) -> torch.Tensor:
    """``[n, m]``: which clean tokens can have produced each ``x_t`` (``q_t(x_t | y) > 0``)."""
    return forward_likelihood(proc, xt[None], torch.tensor([t]))[0] > 0


STEP = dict(s=0.4, t=0.7)


SPLIT = {**KERNELS, "split": lambda: K.Dense(torch.block_diag(random_stochastic(3, 5), random_stochastic(3, 6)))}
"""With two closed halves of the vocabulary: a token of one half can only come from that half."""


@pytest.mark.parametrize("kernel", list(SPLIT))
@pytest.mark.parametrize("weighted", [False, True])
def test_the_step_filters_mu_after_restricting_it_to_the_tokens_that_can_have_produced_x_t(kernel, weighted):
    """For every filter, the step equals the untouched step of the filtered restricted law (the
    likelihood-weighted step reads weights rho, mu = rho q_t(x_t | .) / Z); top-k = 1 is the step of
    the one-hot law at the most probable allowed token, and a vanishing temperature tends to it."""
    proc = gdds.ForwardProcess(SCHED, SPLIT[kernel]())
    xt = torch.arange(M)
    rho = torch.softmax(den(xt[None], torch.tensor([STEP["t"]]))[0], -1)
    q = forward_likelihood(proc, xt[None], torch.tensor([STEP["t"]]))[0]
    mu = rho * (q if weighted else q > 0)  # the clean-token law, restricted to the tokens that can produce x_t
    mu = mu / mu.sum(-1, keepdim=True)
    if kernel in ("mask", "split"):  # the test must see a token whose best clean token cannot have produced it
        assert bool((rho.argmax(-1) != mu.argmax(-1)).any())

    tol = 1e-7 if weighted else 1e-10  # (the weighted step's q_t(x_t | .) and forward_likelihood's agree to ~1e-8)

    def step(law, decoding=None, weights=False):
        return reverse_step_probs(proc, law, xt, STEP["s"], STEP["t"], decoding, weights)

    for decoding in (gdds.Decoding(temperature=0.6), gdds.Decoding(temperature=1.7), gdds.Decoding(top_k=2),
                     gdds.Decoding(top_p=0.6), gdds.Decoding(min_p=0.3),
                     gdds.Decoding(temperature=0.8, top_k=3, top_p=0.9, min_p=0.1)):
        torch.testing.assert_close(step(rho, decoding, weighted), step(decoding.filter(mu)), atol=tol, rtol=0,
                                   msg=str(decoding))
    greedy = torch.nn.functional.one_hot(mu.argmax(-1), M).double()
    torch.testing.assert_close(step(rho, gdds.Decoding(top_k=1), weighted), step(greedy), atol=tol, rtol=0)
    torch.testing.assert_close(step(rho, gdds.Decoding(temperature=1e-3), weighted), step(greedy), atol=tol, rtol=0)


@pytest.mark.parametrize("kernel", ["mask", "uniform"])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_a_temperature_gives_the_step_of_mu_to_the_power_one_over_t(kernel, temperature):
    """Three tokens; by hand, ``P_{a->b} = (k_b / k_a) I + (1 - k_b / k_a) pi 1^T`` (``pi`` the mask
    token or uniform, ``k`` the keep probability) and ``p(x_s = z | x_t = x) = sum_y mu_T(y)
    P_{s->t}[x, z] P_{0->s}[z, y] / P_{0->t}[x, y]`` with ``mu_T = mu^(1/T) / Z`` over the tokens ``y`` that
    can have produced ``x``."""
    m, (s, t) = 3, (0.3, 0.6)
    proc = gdds.ForwardProcess(SCHED, K.Mask(m, m - 1) if kernel == "mask" else K.Uniform(m))
    pi = torch.eye(m, dtype=torch.float64)[m - 1] if kernel == "mask" else torch.full((m,), 1 / m, dtype=torch.float64)
    keep = {u: proc.closed_transition(0.0, u)[0] for u in (s, t)}

    def P(a, b):
        k = keep[b] / (keep[a] if a else 1.0)
        return k * torch.eye(m, dtype=torch.float64) + (1 - k) * pi[:, None].expand(m, m)

    mu = torch.tensor([0.7, 0.3, 0.0] if kernel == "mask" else [0.6, 0.3, 0.1], dtype=torch.float64)
    for x in range(m):
        reach = P(0.0, t)[x] > 0
        if not bool((mu * reach).any()):
            continue
        mu_T = torch.where(reach, mu, 0.0) ** (1 / temperature)
        mu_T = mu_T / mu_T.sum()
        hand = torch.stack([sum(mu_T[y] * P(s, t)[x, z] * P(0.0, s)[z, y] / P(0.0, t)[x, y]
                                for y in range(m) if reach[y]) for z in range(m)])
        ours = reverse_step_probs(proc, mu[None], torch.tensor([x]), s, t, gdds.Decoding(temperature=temperature))[0]
        torch.testing.assert_close(ours, hand, atol=1e-12, rtol=0)
        if kernel == "uniform" or x == m - 1:  # (an unmasked token stays: no temperature moves it)
            assert not torch.allclose(ours, reverse_step_probs(proc, mu[None], torch.tensor([x]), s, t)[0], atol=1e-3)


def test_the_chain_of_a_greedy_decoding_is_the_chain_of_the_argmax():
    """Whole chains: top-k = 1 and a tiny temperature draw the same samples as the one-hot denoiser of
    the argmax of mu among the allowed tokens (a mask process: every clean token can produce the mask)."""
    proc = gdds.ForwardProcess(SCHED, K.Mask(M, M - 1))

    def onehot(xt, t):
        logits = den(xt, t)
        logits[..., M - 1] = -torch.inf
        return torch.where(logits == logits.amax(-1, keepdim=True), 0.0, -torch.inf)

    def masked(xt, t):
        logits = den(xt, t)
        logits[..., M - 1] = -torch.inf
        return logits

    def draw(d, decoding=None):
        return sample(proc, d, 8, 6, 5, decoding=decoding, generator=torch.Generator().manual_seed(7))

    expected = draw(onehot)
    assert torch.equal(draw(masked, gdds.Decoding(top_k=1)), expected)
    assert torch.equal(draw(masked, gdds.Decoding(temperature=1e-4)), expected)
    assert not torch.equal(draw(masked), expected)

