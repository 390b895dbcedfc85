"""Exact forward noising: empirical laws of ForwardProcess.sample (drawn on the test device,
``helpers.DEVICE``) against marginals computed independently (scipy expm / an ODE solve in t),
jump statistics, paths."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from scipy.stats import chi2, kstest, poisson

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from helpers import DEVICE, empirical, mixing_weight, random_stochastic, time_dependent_dense, tv

DRAWS = 20_000
TIMES = (0.1, 0.5, 0.9)


def reference_homogeneous(F: np.ndarray, sched, t: float) -> np.ndarray:
    """P_{0->t} = expm(Lambda(t) (F - I)), independent of the library's series code."""
    return expm(float(sched.Lambda(t)) * (F - np.eye(F.shape[0])))


def reference_time_dependent(A: np.ndarray, B: np.ndarray, sched, t: float) -> np.ndarray:
    """P_{0->t} by an ODE solve of dP/dt = beta(t) (F_t - I) P in t itself (not Lambda)."""
    m = A.shape[0]

    def rhs(s, y):
        w = float(mixing_weight(torch.tensor(s)))
        F = (1 - w) * A + w * B
        return (float(sched.beta(min(s, 1.0))) * (F - np.eye(m)) @ y.reshape(m, m)).reshape(-1)

    sol = solve_ivp(rhs, (0.0, t), np.eye(m).reshape(-1), method="Radau", rtol=1e-11, atol=1e-13)
    return sol.y[:, -1].reshape(m, m)


def empirical_law(proc, m, t, seed=0, **kw):
    """Law of x_t from every x0 in 0..m-1: rows = x0 (DRAWS draws each), drawn on the test device
    (the process is moved there for the draw and back to the CPU after it)."""
    x0 = torch.arange(m).repeat(DRAWS, 1)  # on the CPU: noise() moves its inputs to the process
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    try:
        out = proc.to(DEVICE).noise(x0, torch.full((DRAWS,), t), generator=g, **kw)
    finally:
        proc.to("cpu")
    xt = out[0] if isinstance(out, tuple) else out
    assert xt.device.type == DEVICE.type
    return empirical(xt.cpu().T.contiguous(), m)


@pytest.mark.parametrize("m,seed", [(5, 0), (8, 1)])
@pytest.mark.parametrize("sched", [gdds.LogLinear(1e-3), gdds.Cosine(1e-3)], ids=repr)
def test_dense_homogeneous_law_matches_expm(m, seed, sched):
    F = random_stochastic(m, seed)
    proc = gdds.ForwardProcess(sched, K.Dense(F))
    for t in TIMES:
        ref = reference_homogeneous(F.numpy(), sched, t)
        assert tv(empirical_law(proc, m, t, seed), torch.from_numpy(ref).T) < 0.02
        marg = proc.marginal(torch.arange(m)[None], t)[0]
        assert np.abs(marg.numpy() - ref.T).max() < 1e-6
        series = proc.marginal(torch.arange(m)[None], t, settings=OperatorSettings(method="series"))[0]
        assert np.abs(series.numpy() - ref.T).max() < 1e-10


@pytest.mark.parametrize("m,seed", [(5, 20), (8, 30)])
def test_dense_time_dependent_law_matches_ode(m, seed):
    sched = gdds.LogLinear(1e-3)
    A, B, kernel = time_dependent_dense(m, seed)
    proc = gdds.ForwardProcess(sched, kernel)
    for t in TIMES:
        ref = reference_time_dependent(A, B, sched, t)
        assert tv(empirical_law(proc, m, t, seed), torch.from_numpy(ref).T) < 0.02
        marg = proc.marginal(torch.arange(m)[None], t)[0]
        assert np.abs(marg.numpy() - ref.T).max() < 1e-6


@pytest.mark.parametrize(
    "kernel",
    [K.Mask(6, 5), K.Uniform(6), K.Hybrid(6, 5, 0.3), K.Hybrid(6, 5, lambda t: 0.6 * mixing_weight(t))],
    ids=["mask", "uniform", "hybrid", "hybrid-t"],
)
def test_closed_form_equals_uniformization(kernel):
    """The closed-form sampler and the jump loop both reproduce the exact law, and the
    closed-form marginal equals the dense (expm / ODE) one."""
    sched = gdds.LogLinear(1e-3)
    proc = gdds.ForwardProcess(sched, kernel)
    x0 = torch.arange(6)[None]
    for t in TIMES:
        exact = proc.marginal(x0, t, settings=OperatorSettings(method="closed"))[0]
        assert torch.allclose(exact, proc.marginal(x0, t, settings=OperatorSettings(method="dense"))[0], atol=1e-8)
        for method in ("auto", "uniformization"):
            assert tv(empirical_law(proc, 6, t, method=method), exact) < 0.02


def test_mask_closed_form_values():
    sched = gdds.LogLinear(1e-3)
    proc = gdds.ForwardProcess(sched, K.Mask(4, 3))
    q = proc.marginal(torch.tensor([[0, 3]]), 0.5)[0]
    a = float(sched.alpha(0.5))
    assert torch.allclose(q[0], torch.tensor([a, 0, 0, 1 - a], dtype=torch.float64))
    assert torch.allclose(q[1], torch.tensor([0, 0, 0, 1.0], dtype=torch.float64))


def test_jump_counts_are_poisson_and_times_uniform_in_Lambda():
    sched = gdds.Cosine(1e-3)
    proc = gdds.ForwardProcess(sched, K.Dense(random_stochastic(5, 4)))
    t = 0.8
    x0 = torch.zeros(400, 100, dtype=torch.long)
    _, info = proc.noise(x0, t, return_info=True, generator=torch.Generator().manual_seed(5))
    lam = float(sched.Lambda(t))
    counts = torch.bincount(info.jumps.reshape(-1)).numpy()
    n = counts.sum()
    expected = poisson.pmf(np.arange(len(counts)), lam) * n
    keep = expected > 20
    stat = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stat < chi2.ppf(0.999, keep.sum() - 1)
    times = info.times.reshape(-1, info.times.shape[-1])
    valid = ~torch.isnan(times)
    assert torch.equal(valid.sum(1), info.jumps.reshape(-1))
    assert (times[valid] > 0).all() and (times[valid] <= t + 1e-12).all()
    gaps = torch.diff(torch.nan_to_num(times, nan=2.0), dim=1)
    assert (gaps >= 0).all()
    u = (sched.Lambda(times[valid]) / lam).numpy()
    assert kstest(u, "uniform").statistic < 0.01


def test_full_path_is_consistent_and_exact():
    sched = gdds.LogLinear(1e-3)
    m = 6
    kernel = time_dependent_dense(m, 40)[2]
    proc = gdds.ForwardProcess(sched, kernel)
    x0 = torch.arange(m).repeat(DRAWS, 1)
    t = 0.5
    xt, info = proc.noise(x0, torch.full((DRAWS,), t), full_path=True, generator=torch.Generator().manual_seed(7))
    assert (info.path_jumps >= info.jumps).all()
    valid = info.states >= 0
    assert torch.equal(valid.sum(-1), info.path_jumps)
    assert torch.equal((info.times <= t).sum(-1), info.jumps)
    # x_t is the state after the last jump at or before t (x0 when there is none).
    last = (info.jumps - 1).clamp_min(0).unsqueeze(-1)
    after = info.states.gather(-1, last).squeeze(-1) if info.states.shape[-1] else x0
    assert torch.equal(xt, torch.where(info.jumps > 0, after, x0))
    assert tv(empirical(xt.T.contiguous(), m), proc.marginal(torch.arange(m)[None], t)[0]) < 0.02
    # The path's state at t = 1 follows q_1.
    end = info.states.gather(-1, (info.path_jumps - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
    end = torch.where(info.path_jumps > 0, end, x0)
    assert tv(empirical(end.T.contiguous(), m), proc.marginal(torch.arange(m)[None], 1.0)[0]) < 0.02


def test_seeded_sampling_is_reproducible_and_t_zero_is_identity():
    proc = gdds.ForwardProcess(gdds.LogLinear(), K.Dense(random_stochastic(5, 9)))
    x0 = torch.randint(0, 5, (8, 16), generator=torch.Generator().manual_seed(0))
    t = torch.rand(8, generator=torch.Generator().manual_seed(1))
    a = proc.noise(x0, t, generator=torch.Generator().manual_seed(3))
    b = proc.noise(x0, t, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(proc.noise(x0, 0.0), x0)
    assert torch.equal(proc.noise(x0[:0], t[:0]), x0[:0])
    # `sample` is the name of the public contract: the same method, the same draws.
    assert gdds.ForwardProcess.sample is gdds.ForwardProcess.noise
    assert torch.equal(proc.sample(x0, t, generator=torch.Generator().manual_seed(3)), a)


def test_semantic_knn_law_at_moderate_vocabulary():
    """SIK noising (time-dependent, sparse) against the ODE marginal on m = 40."""
    sched = gdds.LogLinear(1e-3)
    emb = torch.randn(40, 4, generator=torch.Generator().manual_seed(2))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=6, bandwidth_k=3, eps=0.5, b=0.2), schedule=sched, cache=False,
                           progress=False)
    proc = gdds.ForwardProcess(sched, kernel)
    x0 = torch.tensor([[0, 7]]).repeat(DRAWS, 1)
    for t in (0.3, 0.9):
        xt = proc.noise(x0, torch.full((DRAWS,), t), generator=torch.Generator().manual_seed(11))
        exact = proc.marginal(x0[:1], t)[0]
        assert tv(empirical(xt.T.contiguous(), 40), exact) < 0.03
        assert math.isclose(float(exact.sum(-1)[0]), 1.0, abs_tol=1e-9)


def test_what_the_engine_asks_the_process_about_its_kernel():
    """``absorbing``, ``mask_id``, ``pi`` and ``arrivals`` answer for the kernel, so the engine and
    the objectives need not reach into ``process.kernel``."""
    sched = gdds.LogLinear(1e-3)
    mask = gdds.ForwardProcess(sched, K.Mask(6, 5))
    assert mask.absorbing and mask.mask_id == 5
    assert torch.equal(mask.pi(0.4), torch.eye(6, dtype=torch.float64)[5])
    for other in (K.Uniform(6, exclude=[5]), K.Hybrid(6, 5)):  # a hybrid holds the mask but is not absorbing
        process = gdds.ForwardProcess(sched, other)
        assert not process.absorbing and process.mask_id is None
    assert torch.allclose(gdds.ForwardProcess(sched, K.Uniform(6, exclude=[5])).pi(0.3),
                          torch.tensor([0.2] * 5 + [0.0], dtype=torch.float64))
    x, t = torch.tensor([0, 3]), torch.tensor([0.2, 0.7], dtype=torch.float64)
    arrivals = gdds.ForwardProcess(sched, K.Hybrid(6, 5, uniform_weight=0.5)).arrivals(x, t)
    assert torch.allclose(arrivals.base, torch.full((2,), 1 / 12, dtype=torch.float64))  # half the uniform's 1/6
