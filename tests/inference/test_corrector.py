"""The forward-backward corrector (``gdds.corrector``): exact forward moves, zero corrector steps = the plain
chain, the data law kept for every kind of kernel with the exact denoiser of i.i.d. data, a wrong start
corrected, and its knobs through ``Method.generate``."""
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.baseline import bayes_unigram
from gdds.corrector import Chain, corrector_move, forward_draw, sample_corrector
from gdds.objectives import METHODS
from helpers import DEVICE, assert_follows, empirical, kernel_zoo, tv

M = 7
PI = torch.tensor([0.3, 0.22, 0.16, 0.12, 0.1, 0.1, 0.0], dtype=torch.float64)  # token 6 (the mask) never clean
ZOO = dict(kernel_zoo(M))
KERNELS = {"mask": K.Mask(M, M - 1), "uniform": K.Uniform(M), "dense": ZOO["dense"], "dense-t": ZOO["dense-t"]}


def process(kernel: str, schedule: gdds.Schedule | None = None) -> gdds.ForwardProcess:
    return gdds.ForwardProcess(schedule or gdds.LogLinear(1e-3), KERNELS[kernel]).to(DEVICE)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


@pytest.mark.parametrize("kernel", ["uniform", "dense-t"])
def test_forward_draws_follow_the_transition_operator(kernel):
    proc = process(kernel)
    x = torch.tensor([0, 3], device=DEVICE).repeat_interleave(4000)
    out = forward_draw(proc, x, 0.2, 0.6, seeded(0)).cpu()
    cols = proc.transition(torch.eye(M, dtype=torch.float64, device=proc.device)[:, [0, 3]], 0.2, 0.6).cpu()
    for i in range(2):
        assert_follows(out[i * 4000:(i + 1) * 4000], cols[:, i])


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_corrector_move_keeps_the_marginal_at_its_time(kernel):
    """``x_s ~ q_s`` (i.i.d. tokens of law ``PI`` noised to ``s = 0.3``), three moves to ``0.6`` and back with
    the exact denoiser: 8,000 tokens still follow ``q_s = P_{0->s} PI``."""
    proc = process(kernel)
    x = proc.noise(torch.multinomial(PI, 8000, replacement=True, generator=torch.Generator().manual_seed(60))
                   .reshape(2000, 4).to(DEVICE), 0.3, generator=seeded(6))
    chain = Chain(torch.ones_like(x, dtype=torch.bool), generator=seeded(7))
    for _ in range(3):
        x = corrector_move(proc, bayes_unigram(proc, PI), x, 0.3, 0.6, chain)
    assert_follows(x, proc.transition(PI[:, None].to(proc.device), 0.0, 0.3)[:, 0].cpu())


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_corrector_steps_are_the_plain_chain_bit_for_bit(kernel):
    proc = process(kernel)
    den = bayes_unigram(proc, PI)
    fixed = torch.full((5, 6), -1)
    fixed[:, 1] = 2
    for options in ({}, {"decoding": gdds.Decoding(top_p=0.8)}, {"grid": [1.0, 0.5, 0.1, 0.0]}):
        steps = None if "grid" in options else 4
        plain = gdds.sample(proc, den, 5, 6, steps, fixed=fixed, generator=seeded(1), **options)
        assert torch.equal(plain, sample_corrector(proc, den, 5, 6, steps, corrector_steps=0, fixed=fixed,
                                                   generator=seeded(1), **options))
        assert not torch.equal(plain, sample_corrector(proc, den, 5, 6, steps, corrector_steps=1, fixed=fixed,
                                                       generator=seeded(1), **options))


@pytest.mark.parametrize("kernel", KERNELS)
def test_with_the_exact_denoiser_of_iid_data_the_corrector_samples_the_data_law(kernel):
    """The Bayes-unigram denoiser of ``PI`` is exact for i.i.d. tokens and the chain starts from ``q_1``
    (``reference=PI``): every step and every corrector move keeps the marginal, so 8,000 tokens follow ``PI``
    (``helpers.assert_follows``: total variation below 0.03, chi-square at 0.1%), for the mask, the uniform
    and two kernels that are not column-constant (one time-dependent), with 2 corrector moves per step."""
    proc = process(kernel)
    x = sample_corrector(proc, bayes_unigram(proc, PI), 2000, 4, 4, corrector_steps=2, corrector_delta=0.7,
                         reference=PI, generator=seeded(2))
    assert_follows(x, PI)


def test_the_corrector_forgets_a_wrong_start():
    """A chain started from the wrong prior (every token 0 at ``t = 1``) under a schedule that leaves half the
    tokens unmoved at ``t = 1``: the one-step plain chain keeps the error (total variation above 0.2), six
    corrector moves back to ``t = 1`` (each keeps ``PI`` and mixes) remove it."""
    proc = process("uniform", gdds.LogLinear(0.5))
    den, wrong = bayes_unigram(proc, PI), torch.eye(M, dtype=torch.float64)[0]
    plain = sample_corrector(proc, den, 2000, 4, 1, corrector_steps=0, reference=wrong, generator=seeded(3))
    assert tv(empirical(plain.cpu().reshape(1, -1), M)[0], PI) > 0.2
    corrected = sample_corrector(proc, den, 2000, 4, 1, corrector_steps=6, corrector_delta=1.0, reference=wrong,
                                 generator=seeded(3))
    assert_follows(corrected, PI)


def test_it_calls_the_network_steps_times_one_plus_corrector_steps():
    proc, calls = process("mask"), []
    net = bayes_unigram(proc, PI).network

    def counted(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t[0]))
        return net(xt, t)

    sample_corrector(proc, counted, 3, 4, 5, corrector_steps=2, corrector_delta=0.5, generator=seeded(4))
    assert len(calls) == 5 * 3
    assert calls[:3] == pytest.approx([1.0, 0.9, 0.9])  # the step 1 -> 0.8, then twice from 0.8 + 0.5 * 0.2


def test_bad_knobs_are_refused_and_the_method_offers_the_corrector():
    proc = process("mask")
    for knobs in ({"corrector_steps": -1}, {"corrector_delta": 0.0}, {"corrector_delta": 1.5}):
        with pytest.raises(ValueError, match="corrector"):
            sample_corrector(proc, bayes_unigram(proc, PI), 2, 3, 2, **knobs)
    method = METHODS.get("gdds")(proc)
    assert {"corrector_steps", "corrector_delta", "grid", "decoding"} <= set(method.sampler("corrector").options)
    assert not method.sampler("corrector").exact
    model = torch.nn.Identity()
    x = method.generate(model, 3, 5, 2, seeded(5), prompt=[1], sampler="corrector",
                        denoiser=bayes_unigram(proc, PI), corrector_steps=1)
    assert x.shape == (3, 5) and bool((x[:, 0] == 1).all())
