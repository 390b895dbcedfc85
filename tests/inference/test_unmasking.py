"""The mask kernel's faster samplers (``gdds.unmasking``): at their neutral settings, with the exact Bayes
denoiser of i.i.d. data (any order of revealing keeps independent positions independent), they sample the
data law; the order they reveal in is the one their score says; they make at most ``steps`` network calls;
ReMDM at ``eta = 0`` is the exact chain draw for draw, and at ``eta > 0`` keeps the forward marginals."""
import itertools

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.baseline import bayes_unigram
from gdds.samplers import SAMPLERS, SamplerError
from gdds.sampling import time_grid
from gdds.unmasking import SCORES, remasking, remasking_map
from helpers import assert_follows

M, MASK = 6, 5
PI = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08, 0.0], dtype=torch.float64)  # the data law; the mask is never clean
# Four positions whose laws rank differently by each score: confidence 0.9 > 0.5 > 0.45 > 0.34; margin
# 0.8 > 0.3125 > 0.01 > 0; entropy 0.33 < 0.69 < 1.10 < 1.23 (nats).
LAWS = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0], [0.45, 0.1375, 0.1375, 0.1375, 0.1375, 0.0],
                     [0.9, 0.1, 0.0, 0.0, 0.0, 0.0], [0.34, 0.33, 0.33, 0.0, 0.0, 0.0]], dtype=torch.float64)
ORDER = {"confidence": [2, 0, 1, 3], "margin": [2, 1, 3, 0], "entropy": [2, 0, 3, 1]}


def mask_process(eps: float = 1e-3) -> gdds.ForwardProcess:
    return gdds.ForwardProcess(gdds.LogLinear(eps), K.Mask(M, MASK))


def context_free(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``log PI`` at every position: the Bayes denoiser of i.i.d. ``PI`` data under the mask kernel."""
    return PI.log().expand(*xt.shape, M).clone()


class Recorder:
    """A denoiser answering ``LAWS[i]`` at position ``i`` of every row, recording its inputs."""

    def __init__(self):
        self.inputs, self.times = [], []

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append(xt.clone())
        self.times.append(t.clone())
        return LAWS.log().expand(xt.shape[0], -1, -1).clone()

    def revealed_order(self, final: torch.Tensor) -> list[list[int]]:
        """Per call, the positions of row 0 that it revealed (masked at that call, not at the next)."""
        after = [*self.inputs[1:], final]
        return [((x[0] == MASK) & (y[0] != MASK)).nonzero().reshape(-1).tolist() for x, y in zip(self.inputs, after)]


def draw(name: str, denoiser, num: int, length: int, steps: int, seed: int = 0, **options) -> torch.Tensor:
    return SAMPLERS.get(name).draw(mask_process(), denoiser, num, length, steps=steps,
                                   generator=torch.Generator().manual_seed(seed), **options)


NEUTRAL = [("ordered", {"score": score}) for score in SCORES.names()] + \
    [("threshold", {"threshold": value}) for value in (0.05, 0.3, 0.9)] + [("remdm", {"eta": value})
                                                                          for value in (0.05, 0.5, 1.0)]


@pytest.mark.parametrize("weighted", [False, True], ids=["mu", "bayes_unigram"])
@pytest.mark.parametrize(("name", "options"), NEUTRAL, ids=[f"{n}-{o}" for n, o in NEUTRAL])
def test_with_the_bayes_denoiser_of_iid_data_every_sampler_draws_the_data_law(name, options, weighted):
    """8,000 tokens (fixed seed) against ``PI``: total variation below 0.03 (about 0.01 expected from
    sampling alone) and a chi-square test at 0.1% (``helpers.assert_follows``). ReMDM starts from
    ``gdds.sample``'s prior, which puts ``eps = 1e-3`` on clean tokens: a shift of 1e-3 at most."""
    denoiser = bayes_unigram(mask_process(), PI) if weighted else context_free
    x = draw(name, denoiser, 2000, 4, 6, **options)
    assert_follows(x, PI)


@pytest.mark.parametrize("score", SCORES.names())
def test_ordered_unmasking_reveals_in_the_order_of_its_score(score):
    """Four positions, four steps: one revealed per step (``round(4 alpha_s)`` = 1, 2, 3, 4 in all), the
    highest-scoring masked position each time; each score gives another order, so a wrong score or a
    reversed order fails. Every call is at the time whose ``alpha`` is the revealed fraction."""
    net = Recorder()
    x = draw("ordered", net, 3, 4, 4, score=score)
    assert net.revealed_order(x) == [[i] for i in ORDER[score]]
    alpha = mask_process().schedule.alpha(torch.stack(net.times)[:, 0].double())
    assert torch.allclose(alpha, torch.tensor([0.0, 0.25, 0.5, 0.75], dtype=torch.float64).clamp_min(1e-3), atol=1e-6)
    assert (x != MASK).all() and all(bool((LAWS[i, x[:, i]] > 0).all()) for i in range(4))


def test_ordered_unmasking_calls_the_network_at_most_steps_times_and_breaks_ties_to_the_left():
    net = Recorder()
    x = draw("ordered", net, 2, 4, 2)  # steps 1 -> 0.5 -> 0: two positions, then two
    assert net.revealed_order(x) == [[0, 2], [1, 3]]
    for steps in (1, 3, 100):  # a step that reveals nothing calls nothing
        net = Recorder()
        assert (draw("ordered", net, 2, 4, steps) != MASK).all() and len(net.inputs) == min(steps, 4)
    ties = Recorder()
    ties_x = SAMPLERS.get("ordered").draw(mask_process(), lambda xt, t: ties(xt, t)[:, [0, 0, 0, 0]], 1, 4, steps=4,
                                          generator=torch.Generator().manual_seed(0))
    assert ties.revealed_order(ties_x) == [[0], [1], [2], [3]]


def test_threshold_decoding_reveals_every_confident_position_and_at_least_one():
    net = Recorder()
    x = draw("threshold", net, 2, 4, 10, threshold=0.47)  # 0.9 and 0.5 pass, then the most confident, twice
    assert net.revealed_order(x) == [[0, 2], [1], [3]] and (x != MASK).all()
    net = Recorder()
    x = draw("threshold", net, 2, 4, 10, threshold=0.95)  # none passes: one per call, the most confident
    assert net.revealed_order(x) == [[2], [0], [1], [3]]
    net = Recorder()
    x = draw("threshold", net, 2, 4, 2, threshold=0.95)  # the last call reveals the rest
    assert net.revealed_order(x) == [[2], [0, 1, 3]] and (x != MASK).all()
    with pytest.raises(ValueError, match="threshold must lie in"):
        draw("threshold", net, 2, 4, 2, threshold=0.0)


def test_remdm_at_eta_zero_is_the_exact_chain_draw_for_draw():
    proc = mask_process()
    fixed = torch.full((40, 9), -1)
    fixed[:, [0, 4]] = torch.tensor([3, 1])
    for denoiser, decoding in ((context_free, None), (bayes_unigram(proc, PI), gdds.Decoding(top_p=0.8,
                                                                                              temperature=0.7))):
        exact = gdds.sample(proc, denoiser, 40, 9, 7, decoding=decoding, fixed=fixed,
                            generator=torch.Generator().manual_seed(5))
        remdm = SAMPLERS.get("remdm").draw(proc, denoiser, 40, 9, steps=7, eta=0.0, decoding=decoding, fixed=fixed,
                                           generator=torch.Generator().manual_seed(5))
        assert torch.equal(exact, remdm)
    assert not torch.equal(exact, SAMPLERS.get("remdm").draw(proc, denoiser, 40, 9, steps=7, eta=0.5, fixed=fixed,
                                                             decoding=decoding,
                                                             generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("eta", [0.2, 1.0])
def test_remdm_remasks_and_keeps_the_forward_marginals(eta):
    """With the exact denoiser, the masked fraction that the network sees at ``t`` is ``1 - alpha_t``
    (the forward marginal; ReMDM's step keeps it, as the exact chain does), while tokens revealed earlier
    are masked again: 8,000 positions, 5 standard errors. Without the larger reveal probability that
    compensates for remasking, the masked fraction would stay above the forward one."""
    proc, seen = mask_process(), []

    def denoiser(xt, t):
        seen.append(xt.clone())
        return context_free(xt, t)

    steps = 6
    x = SAMPLERS.get("remdm").draw(proc, denoiser, 2000, 4, steps=steps, eta=eta,
                                   generator=torch.Generator().manual_seed(1))
    assert (x != MASK).all() and len(seen) == steps
    for xt, t in zip(seen, time_grid(proc, steps)):
        expected = 1 - float(proc.schedule.alpha(t))
        assert abs(float((xt == MASK).double().mean()) - expected) < 5 * (0.25 / xt.numel()) ** 0.5 + 1e-3
    remasked = sum(int(((a != MASK) & (b == MASK)).sum()) for a, b in itertools.pairwise(seen))
    assert remasked > 100
    alpha = proc.schedule.alpha
    for s, t in ((0.5, 0.75), (0.25, 0.5)):  # (1 - alpha_s) / alpha_t is about 2, then 0.5: the cap binds or not
        sigma, extra = remasking(proc, eta, s, t)
        assert sigma == pytest.approx(min(eta, float((1 - alpha(s)) / alpha(t)), 1.0))
        assert extra == pytest.approx(sigma * float(alpha(t) / (alpha(s) - alpha(t))))


def test_the_mask_kernel_samplers_refuse_other_kernels_and_bad_knobs():
    uniform = gdds.ForwardProcess(gdds.LogLinear(), K.Uniform(M))
    for name in ("ordered", "threshold", "remdm"):
        with pytest.raises(SamplerError, match="needs the Mask kernel .gdds.kernels.Mask., not the Uniform kernel"):
            SAMPLERS.get(name).draw(uniform, context_free, 2, 3, steps=2)
    with pytest.raises(ValueError, match="unknown unmasking score 'random'"):
        draw("ordered", context_free, 2, 3, 2, score="random")
    with pytest.raises(ValueError, match="eta must lie in"):
        draw("remdm", context_free, 2, 3, 2, eta=1.5)


def test_the_bound_of_remdms_chain_is_valid_and_pays_for_remasking():
    """``nll_bound(step_map=remasking_map(eta))`` scores ReMDM's chain: at ``eta = 0`` it is the plain bound bit
    for bit (tight here: ``-log PI(y)``, the Bayes denoiser's chain samples ``PI`` exactly); at ``eta = 0.3`` the
    chain still samples ``PI`` (test above), so a valid bound of each token stays above ``-log PI(y)``, and it
    is higher than the exact chain's: the mass remasking moves off the forward path is paid (paired over the same
    tokens, by more than 4 standard errors)."""
    proc, steps = mask_process(), 8
    x0 = torch.arange(MASK).repeat_interleave(400).reshape(-1, 4)  # 500 rows of one token each, 4 positions

    def bound(**kw) -> torch.Tensor:
        return gdds.nll_bound(proc, context_free, x0, steps, all_terms=True,
                              generator=torch.Generator().manual_seed(3), **kw) / 4

    plain, remasked = bound(), bound(step_map=remasking_map(proc, 0.3))
    assert torch.equal(plain, bound(step_map=remasking_map(proc, 0.0)))
    tokens = x0[:, 0]
    for y in range(MASK):
        rows, nll = tokens == y, -PI[y].log().item()
        for est in (plain, remasked):
            mean, se = float(est[rows].mean()), float(est[rows].std()) / rows.sum().sqrt().item()
            assert mean >= nll - 4 * se, (y, mean, se)
            assert est is remasked or abs(mean - nll) < 4 * se + 0.01  # tight for the exact chain
    gap = remasked - plain
    assert float(gap.mean()) > 4 * float(gap.std()) / gap.numel() ** 0.5
