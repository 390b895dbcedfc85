"""Transition operators: the uniformization series against closed forms, the matrix
exponential and an ODE solve; the measured error of piecewise freezing."""
import itertools

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.operators import DEFAULT_SPLIT_STEP, OperatorSettings, poisson_series, transition
from helpers import mixing_weight, random_stochastic, time_dependent_dense

SCHED = gdds.LogLinear(1e-3)
DENSE, SERIES, CLOSED = (OperatorSettings(method=m) for m in ("dense", "series", "closed"))
FINE = OperatorSettings(method="series", step=0.1)


def vectors(m, n=4, seed=0):
    return torch.rand(m, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel", [K.Mask(50, 3), K.Uniform(50), K.Hybrid(50, 3, 0.25)], ids=repr)
@pytest.mark.parametrize("transpose", [False, True])
def test_series_equals_closed_form(kernel, transpose, device):
    """On the test device (the kernel is moved there and back)."""
    v = vectors(50).to(device)
    try:
        kernel.to(device)
        for s, t in [(0.0, 0.3), (0.2, 0.9), (0.0, 1.0), (0.5, 0.5)]:
            series, bound = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=SERIES,
                                       return_bound=True)
            closed = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=CLOSED)
            assert bound <= 1e-12 and series.device.type == closed.device.type == device.type
            assert (series - closed).abs().max() < 1e-10
    finally:
        kernel.to("cpu")


@pytest.mark.parametrize("transpose", [False, True])
def test_series_equals_expm_for_dense(transpose):
    kernel = K.Dense(random_stochastic(9, 2))
    v = vectors(9)
    for tol in (1e-6, 1e-12):
        series, bound = transition(kernel, SCHED, v, 0.1, 0.95, transpose=transpose,
                                   settings=OperatorSettings(method="series", tol=tol), return_bound=True)
        dense = transition(kernel, SCHED, v, 0.1, 0.95, transpose=transpose, settings=DENSE)
        # Stated bound: L1 error <= tail * |v|_1 for P v, sup error <= tail * max|v| for P^T v.
        err = (series - dense).abs()
        if transpose:
            assert err.max() <= bound * v.abs().max() + 1e-13
        else:
            assert (err.sum(0) <= bound * v.abs().sum(0) + 1e-13).all()
        assert bound <= tol


def test_time_dependent_closed_form_equals_ode():
    kernel = K.Hybrid(12, 0, lambda t: 0.8 * mixing_weight(t))
    v = vectors(12)
    for transpose in (False, True):
        closed = transition(kernel, SCHED, v, 0.1, 0.97, transpose=transpose, settings=CLOSED)
        ode = transition(kernel, SCHED, v, 0.1, 0.97, transpose=transpose, settings=DENSE)
        assert (closed - ode).abs().max() < 1e-9


def test_piecewise_freezing_error_orders():
    """Measured error of freezing F on a Lambda-grid of step h: ~h^2 for the plain rule
    (< 1e-3 at h = 0.05), ~h^4 with Richardson extrapolation (< 1e-6 at h = 0.1)."""
    _, _, kernel = time_dependent_dense(8, 5)
    v = vectors(8)
    exact = transition(kernel, SCHED, v, 0.0, 1.0, settings=DENSE)

    def err(h, richardson):
        approx = transition(kernel, SCHED, v, 0.0, 1.0,
                            settings=OperatorSettings(method="series", step=h, richardson=richardson))
        return (approx - exact).abs().max().item()

    plain = [err(h, False) for h in (0.2, 0.1, 0.05)]
    assert plain[2] < 1e-3
    for coarse, fine in itertools.pairwise(plain):
        assert 3.0 < coarse / fine < 5.0
    extrapolated = [err(h, True) for h in (0.4, 0.2, 0.1)]
    assert extrapolated[2] < 1e-6
    for coarse, fine in itertools.pairwise(extrapolated):
        assert coarse / fine > 10.0


def test_semantic_kernel_series_matches_ode():
    """The teleport split (only the kNN part frozen): < 2e-7 in L1 at the default
    step 0.5 and fourth order under Richardson (< 1e-9 at step 0.1)."""
    emb = torch.randn(120, 8, generator=torch.Generator().manual_seed(0))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=12, b=0.2), schedule=SCHED, cache=False, progress=False)
    assert kernel.teleport_split().inner is kernel.knn
    v = torch.eye(120, 3, dtype=torch.float64)
    for transpose in (False, True):
        for s, t in [(0.1, 0.95), (0.5, 1.0), (0.0, 1.0)]:  # up to t = 1, where Lambda changes fastest
            exact = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=DENSE)
            series = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=SERIES)
            fine = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=FINE)
            assert (series - exact).abs().sum(0).max() < 2e-7
            assert (fine - exact).abs().sum(0).max() < 1e-9


def test_without_tempering_the_series_is_one_exact_poisson_series():
    """b = 0 (the default, the reference's configuration): the kNN step does not depend on time, the
    series needs no frozen pieces and matches the ODE to its tolerance (< 1e-10 in L1) with the
    paper's eps, whatever the interval."""
    emb = torch.randn(120, 8, generator=torch.Generator().manual_seed(0))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=12), schedule=SCHED, cache=False, progress=False)
    assert not kernel.knn.time_dependent and kernel.knn.b == 0.0
    v = torch.eye(120, 3, dtype=torch.float64)
    for transpose in (False, True):
        for s, t in [(0.1, 0.95), (0.0, 1.0)]:
            exact = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=DENSE)
            series = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=SERIES)
            assert (series - exact).abs().sum(0).max() < 1e-10


def test_semantic_then_absorb_series_matches_ode_and_keeps_the_mask():
    """The semantic-then-absorb kernel (teleport onto an absorbing mask): its operators match the
    ODE like the paper's kernel, a masked token never leaves, and at t = 1 almost every token is
    masked (the prior is close to a point mass on the mask)."""
    m, mask = 60, 59
    emb = torch.randn(m, 6, generator=torch.Generator().manual_seed(1))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=10, b=0.2, teleport_to="mask"), schedule=SCHED, exclude=[mask],
                           mask_id=mask, cache=False, progress=False)
    split = kernel.teleport_split()
    assert split.column(0.5)[mask] == 1.0 and split.inner.time_dependent
    v = torch.eye(m, 3, dtype=torch.float64)
    for transpose in (False, True):
        for s, t in [(0.1, 0.95), (0.0, 1.0)]:
            exact = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=DENSE)
            series = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=SERIES)
            assert (series - exact).abs().sum(0).max() < 2e-7
    e_mask = torch.zeros(m, 1, dtype=torch.float64)
    e_mask[mask] = 1.0
    assert torch.allclose(transition(kernel, SCHED, e_mask, 0.0, 1.0), e_mask, atol=1e-12)
    at_one = transition(kernel, SCHED, torch.eye(m, m - 1, dtype=torch.float64), 0.0, 1.0)
    assert float(at_one[mask].min()) > 0.98
    with pytest.raises(ValueError, match="teleport_to"):
        K.SemanticKNN(emb, K.SemanticSettings(k=10, teleport_to="mask"), schedule=SCHED, cache=False, progress=False)
    with pytest.raises(ValueError, match="excluded"):
        K.SemanticKNN(emb, K.SemanticSettings(k=10, teleport_to="mask"), schedule=SCHED, mask_id=mask, cache=False,
                      progress=False)


def test_operators_keep_probabilities_non_negative():
    """A semantic-then-absorb kernel whose Gaussian weights reach 1e-50 (eps = 0.01, far kNN
    neighbours): the Richardson extrapolation ``(4 fine - coarse) / 3`` of the series undershoots
    zero there (-1e-47 at t = 0.6, checked here so the case is exercised), which made the log of
    ``r = P^T e_x`` nan and a bound term infinite. Applied to non-negative vectors the operators
    return, at those entries, the finer series' value: a positive probability within a factor 2 of
    the exact (ODE) one, so every entry the exact operator gives as positive stays positive (zeroing
    them would be non-negative too, and wrong); and they stay as close to the ODE as before."""
    m = 89
    emb = torch.randn(m, 4, generator=torch.Generator().manual_seed(0))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=17, eps=0.01, b=0.2, teleport_to="mask"), schedule=SCHED,
                           exclude=[m - 3, m - 2, m - 1], mask_id=m - 1, cache=False, progress=False)
    eye = torch.eye(m, dtype=torch.float64)
    undershoots = 0
    for transpose, t in itertools.product((False, True), (0.3, 0.6, 0.9)):
        series = transition(kernel, SCHED, eye, 0.0, t, transpose=transpose)
        dense = transition(kernel, SCHED, eye, 0.0, t, transpose=transpose, settings=DENSE)
        coarse, fine = (transition(kernel, SCHED, eye, 0.0, t, transpose, OperatorSettings(richardson=False, step=step))
                        for step in (DEFAULT_SPLIT_STEP, DEFAULT_SPLIT_STEP / 2))
        below = (4 * fine - coarse) / 3 < 0
        undershoots += int(below.sum())
        assert float(series.min()) >= 0.0 and torch.equal(series > 0, dense > 0)
        assert torch.equal(series[below], fine[below]) and bool((series[below] > 0).all())
        ratio = series[below] / dense[below]
        assert bool(((ratio > 0.5) & (ratio < 2)).all()), ratio
    assert undershoots > 0
    exact = transition(kernel, SCHED, eye[:, :4], 0.0, 0.6, settings=DENSE)
    assert (transition(kernel, SCHED, eye[:, :4], 0.0, 0.6) - exact).abs().sum(0).max() < 1e-6


@pytest.mark.parametrize("transpose", [False, True])
def test_teleport_split_is_exact_for_a_fixed_inner_kernel(transpose):
    """A time-homogeneous kernel mixed with time-varying uniform and mask parts: one
    piece, nothing frozen, so the split equals the ODE to quadrature accuracy."""
    m = 9
    inner = K.Sparse(random_stochastic(m, 3, sparsity=0.5).to_sparse())
    kernel = K.Mixture([inner, K.Uniform(m), K.Mask(m, 0)],
                       [lambda t: 1 - mixing_weight(t), lambda t: 0.6 * mixing_weight(t),
                        lambda t: 0.4 * mixing_weight(t)])
    split = kernel.teleport_split()
    assert split.inner is inner and not split.inner.time_dependent
    t = torch.tensor([0.3], dtype=torch.float64)
    assert torch.allclose(split.weight(t), mixing_weight(t))
    v = vectors(m)
    for s, t in [(0.0, 1.0), (0.2, 0.7)]:
        exact = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=DENSE)
        series, bound = transition(kernel, SCHED, v, s, t, transpose=transpose, settings=SERIES, return_bound=True)
        assert (series - exact).abs().max() < 1e-10 and bound < 1e-10


def test_teleport_split_of_a_time_dependent_inner_kernel_matches_ode():
    m = 8
    kernel = K.Mixture([time_dependent_dense(m, 5)[2], K.Uniform(m)], [lambda t: 1 - 0.9 * t, lambda t: 0.9 * t])
    v = vectors(m)
    for transpose in (False, True):
        exact = transition(kernel, SCHED, v, 0.0, 1.0, transpose=transpose, settings=DENSE)
        series = transition(kernel, SCHED, v, 0.0, 1.0, transpose=transpose, settings=FINE)
        assert (series - exact).abs().max() < 1e-7


def test_kernels_without_a_rank_one_part_are_not_split():
    assert K.Dense(random_stochastic(5, 0)).teleport_split() is None
    assert K.Hybrid(5, 0, 0.3).teleport_split() is None  # column-constant: closed form instead
    two = K.Mixture([K.Dense(random_stochastic(5, 0)), K.Dense(random_stochastic(5, 1)), K.Uniform(5)],
                    [0.3, 0.3, 0.4])
    assert two.teleport_split() is None


def test_adjoint_and_semigroup(device):
    _, _, kernel = time_dependent_dense(7, 8)
    kernel.to(device)
    u, v = vectors(7, 3, 1).to(device), vectors(7, 3, 2).to(device)
    P_v = transition(kernel, SCHED, v, 0.2, 0.8)
    PT_u = transition(kernel, SCHED, u, 0.2, 0.8, transpose=True)
    assert torch.allclose(u.T @ P_v, PT_u.T @ v, atol=1e-10)
    two_steps = transition(kernel, SCHED, transition(kernel, SCHED, v, 0.0, 0.4), 0.4, 0.9)
    assert torch.allclose(two_steps, transition(kernel, SCHED, v, 0.0, 0.9), atol=1e-9)


def test_probability_is_conserved_at_large_vocabulary(device):
    """Series path on a sparse semantic kernel (m = 3000, too large for dense), on the test device."""
    emb = torch.randn(3000, 8, generator=torch.Generator().manual_seed(0))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=16, b=0.2), schedule=SCHED, cache=False, progress=False)
    proc = gdds.ForwardProcess(SCHED, kernel).to(device)
    q, bound = proc.transition(torch.eye(3000, 5, dtype=torch.float64, device=device), 0.0, 0.7, return_bound=True)
    assert q.shape == (3000, 5) and (q >= -1e-15).all() and q.device.type == device.type
    assert torch.allclose(q.sum(0), torch.ones(5, dtype=torch.float64, device=device), atol=1e-9)
    assert 0 < bound < 1e-9
    x0 = torch.tensor([[0, 1, 2]])
    assert torch.allclose(proc.marginal(x0, 0.7)[0], q.T[:3], atol=1e-12)


def test_poisson_series():
    w, tail = poisson_series(3.0, 1e-12)
    assert tail <= 1e-12 and abs(w.sum().item() + tail - 1) < 1e-14
    w0, tail0 = poisson_series(0.0)
    assert w0.tolist() == [1.0] and tail0 == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        poisson_series(-1.0)
