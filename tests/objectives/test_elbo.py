"""The continuous-time ELBO integrand of column-constant processes (gdds.elbo) against
dense reverse rates, MDLM's closed form, an exact quadrature of its expectation and the
generic continuous bound of gdds.likelihood.

The integrand's per-position terms are float64 and its [B, L, m] sums float32 (log w in log
space, so a confidently wrong prediction keeps its loss and gradient); terms of size ``beta(t) / q_t(x_t | x0)``
cancel where the true value is small (near ``t = 1``, where ``beta`` is large, and for accurate
denoisers), so comparisons allow an absolute ``1e-6 * beta / q_t(x_t | x0)`` (twice the largest
error measured: 4.5e-7 of that scale, for the denoiser that knows x0) on top of a relative ``1e-4``.
"""
import math

import numpy as np
import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.likelihood import continuous_bound, prior_kl
from gdds.objectives.elbo import elbo_integrand
from helpers import mixing_weight, random_stochastic

SCHED = gdds.LogLinear(1e-3)
M = 6
KERNELS = {
    "mask": lambda: K.Mask(M, 5),
    "uniform": lambda: K.Uniform(M),
    "uniform-excluding": lambda: K.Uniform(M, exclude=[1]),
    "hybrid": lambda: K.Hybrid(M, 5, 0.3),
    "hybrid-t": lambda: K.Hybrid(M, 5, lambda t: 0.5 * mixing_weight(t)),
}


def dense_P(process, t):
    """P_{0->t} as a dense matrix (column y = law of x_t from y), independent of the closed form."""
    dense = OperatorSettings(method="dense")
    return process.transition(torch.eye(process.m, dtype=torch.float64), 0.0, t, settings=dense)


def dense_P_batch(process, ts):
    """P_{0->t} = expm(Lambda(t) (F - I)) at the times ``ts [T]`` (time-homogeneous kernels): [T, m, m]."""
    F = process.kernel.dense(0.0).to(torch.float64)
    G = F - torch.eye(process.m, dtype=torch.float64)
    return torch.linalg.matrix_exp(process.schedule.Lambda(torch.as_tensor(ts, dtype=torch.float64))[:, None, None] * G)


def float32_scale(beta, q_x):
    """Absolute tolerance of the float32 integrand: 1e-6 of the size of its terms (module docstring)."""
    return 1e-6 * beta / q_x


def dense_integrand(P, F, beta, logits, xt, x0):
    """I per position (float64) from dense matrices, each position n with its own ``P [n, m, m]``
    (= P_{0->t}), ``F [n, m, m]`` (= F_t) and ``beta [n]``; ``logits [n, m]``, ``xt, x0 [n]``:
    ``sum_{z != x} R_theta - R + R log(R / R_theta)`` with forward rates ``beta F[x, z]`` of
    ``z -> x``, ``R_theta = beta F[x, z] (P (mu / r))[z]``, ``r = P[x, :]``, ``mu`` renormalised
    over ``r > 0``, and ``R = beta F[x, z] q[z] / q[x]``, ``q = P[:, x0]``."""
    n = torch.arange(xt.numel())
    r = P[n, xt]  # r[n, y] = q_t(x | y)
    reach = r > 0
    mu = torch.softmax(logits.double(), -1) * reach
    mu = mu / mu.sum(-1, keepdim=True)
    rho = torch.where(reach, mu / torch.where(reach, r, torch.ones_like(r)), 0.0)
    w = torch.einsum("nzy,ny->nz", P, rho)
    q = P[n, :, x0]  # q[n, z] = q_t(z | x0)
    a = beta[:, None] * F[n, xt]  # a[n, z]: rate of the forward jump z -> x
    R_model, R = a * w, a * q / q.gather(1, xt[:, None])
    terms = R_model - R + torch.where(R > 0, R * (R.clamp_min(1e-300).log() - R_model.log()), 0.0)
    off = torch.ones_like(terms, dtype=torch.bool).scatter(1, xt[:, None], False)
    return torch.where(off, terms, 0.0).sum(-1)


def dense_integrand_at(process, t, logits, xt, x0, P):
    """:func:`dense_integrand` for positions that share the time ``t`` and ``P = P_{0->t}``."""
    n = xt.numel()
    F = process.kernel.dense(t).to(torch.float64)
    beta = torch.full((n,), float(process.schedule.beta(t)), dtype=torch.float64)
    return dense_integrand(P.expand(n, -1, -1), F.expand(n, -1, -1), beta, logits, xt, x0)


def support_pairs(P):
    """Every pair (x0, x) with q_t(x | x0) > 0, as two index tensors."""
    x, y = (P > 0).nonzero(as_tuple=True)
    return y, x


@pytest.mark.parametrize("name", KERNELS)
def test_integrand_equals_the_dense_reverse_rates(name):
    proc = gdds.ForwardProcess(SCHED, KERNELS[name]())
    g = torch.Generator().manual_seed(0)
    for t in (0.05, 0.4, 0.9, 1.0):
        P = dense_P(proc, t)
        x0, xt = support_pairs(P)  # all reachable (x0, x_t): x_t == x0 and x_t != x0
        assert (xt == x0).any() and (xt != x0).any()
        logits = 2 * torch.randn(1, x0.numel(), M, generator=g)
        I = elbo_integrand(proc, logits, xt[None], x0[None], torch.tensor([t]))[0]
        ref = dense_integrand_at(proc, t, logits[0], xt, x0, P)
        tol = float32_scale(float(SCHED.beta(t)), P[xt, x0])
        err = (I.double() - ref).abs()
        assert (err <= 1e-4 * ref.abs() + tol).all(), (t, err.max().item())
        assert (-tol <= I).all()  # a sum of Bregman divergences, >= 0
        if name == "mask":
            unmasked = xt != 5
            assert unmasked.any() and (I[unmasked] == 0).all()
            assert (I[~unmasked] > 0).all()
        # The denoiser that knows x0 (mu = e_{x0}) has the true reverse rates: I = 0.
        onehot = torch.full((1, x0.numel(), M), -math.inf).scatter(-1, x0[None, :, None], 0.0)
        perfect = elbo_integrand(proc, onehot, xt[None], x0[None], torch.tensor([t]))[0]
        assert (perfect.abs() <= tol).all()
        assert dense_integrand_at(proc, t, onehot[0], xt, x0, P).abs().max() < 1e-9


def test_time_dependent_hybrid_uses_the_kernel_at_time_t():
    """Freezing the hybrid's weight at another time changes the integrand: the dense check
    above for hybrid-t is not passing by accident of a constant weight."""
    proc = gdds.ForwardProcess(SCHED, KERNELS["hybrid-t"]())
    frozen = gdds.ForwardProcess(SCHED, K.Hybrid(M, 5, 0.5 * float(mixing_weight(0.0))))
    logits = 2 * torch.randn(1, 4, M, generator=torch.Generator().manual_seed(1))
    xt, x0 = torch.tensor([[0, 5, 2, 3]]), torch.tensor([[0, 1, 4, 3]])
    a = elbo_integrand(proc, logits, xt, x0, torch.tensor([0.9]))
    b = elbo_integrand(frozen, logits, xt, x0, torch.tensor([0.9]))
    assert (a - b).abs().max() > 1e-2


@pytest.mark.parametrize("m, mask_id", [(6, 5), (9, 0)])
def test_mask_kernel_reduces_to_mdlm(m, mask_id):
    """With no mass on the mask token, I = beta alpha / (1 - alpha) * (-log mu(x0)) at masked
    positions and 0 at unmasked ones."""
    proc = gdds.ForwardProcess(SCHED, K.Mask(m, mask_id))
    g = torch.Generator().manual_seed(2)
    ts = torch.tensor([0.01, 0.3, 0.7, 1.0], dtype=torch.float64)
    B, L = ts.numel(), 16
    clean = torch.tensor([v for v in range(m) if v != mask_id])
    x0 = clean[torch.randint(0, m - 1, (B, L), generator=g)]
    masked = torch.rand(B, L, generator=g) < 0.6
    xt = torch.where(masked, mask_id, x0)
    logits = 3 * torch.randn(B, L, m, generator=g)
    logits[..., mask_id] = -math.inf
    I = elbo_integrand(proc, logits, xt, x0, ts)
    alpha, beta = SCHED.alpha(ts)[:, None], SCHED.beta(ts)[:, None]
    logp = torch.log_softmax(logits.double(), -1).gather(-1, x0[..., None])[..., 0]
    mdlm = torch.where(masked, beta * alpha / (1 - alpha) * -logp, 0.0)
    assert (I[~masked] == 0).all()
    err = (I.double() - mdlm).abs()
    assert (err <= 1e-5 * mdlm + float32_scale(beta, 1 - alpha)).all()


# --- the expectation over t and x_t: exact quadrature against Monte-Carlo -------------------

TMIN = 1e-6  # the Monte-Carlo times are U(0, 1] clamped to [TMIN, 1]


def smooth_denoiser(seed, sharpen):
    """logits = A[x_t] + t B[x_t] (fixed random tables), plus ``-log t`` on x_t's own logit when
    ``sharpen`` (then 1 - mu(x_t) = O(t)). A kernel with uniform noise needs it: a denoiser with
    1 - mu(x_t) bounded away from 0 as t -> 0 pays a reverse rate ~ (1 - mu(x_t)) / t at x_t = x0,
    and its bound int_0^1 E I dt is infinite."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(M, M, generator=g, dtype=torch.float64)
    B = torch.randn(M, M, generator=g, dtype=torch.float64)

    def den(xt, t):
        tt = t.double()[:, None, None]
        logits = A[xt] + tt * B[xt]
        if sharpen:
            logits = logits - tt.log() * torch.nn.functional.one_hot(xt, M)
        return logits

    return den


def gauss_panels(edges, n):
    """Composite n-node Gauss-Legendre nodes and weights on the panels between ``edges``."""
    x, w = np.polynomial.legendre.leggauss(n)
    a, b = np.asarray(edges[:-1])[:, None], np.asarray(edges[1:])[:, None]
    return (0.5 * (b - a) * x + 0.5 * (a + b)).ravel(), (0.5 * (b - a) * w).ravel()


def expected_integrand(proc, den, x0, ts):
    """g(t) = sum_l sum_x q_t(x | x0_l) I(x, t) at the times ``ts [T]`` (numpy), with I from dense
    matrices (float64)."""
    ts = torch.as_tensor(ts, dtype=torch.float64)
    T, L = ts.numel(), x0.numel()
    P = dense_P_batch(proc, ts)
    F = proc.kernel.dense(0.0).to(torch.float64)
    xt = torch.arange(M).repeat(L).expand(T, -1)  # every x for every position, at every time
    y = x0.repeat_interleave(M).expand(T, -1)
    logits = den(xt, ts)
    node = torch.arange(T)[:, None].expand(-1, L * M)
    q = P[node, xt, y]
    keep = q > 0
    n = node[keep]
    I = dense_integrand(P[n], F.expand(n.numel(), -1, -1), SCHED.beta(ts)[n], logits[keep], xt[keep], y[keep])
    return torch.zeros(T, dtype=torch.float64).index_add(0, n, q[keep] * I).numpy()


def exact_value(proc, den, x0, nodes):
    """(int_0^1 g, int_{TMIN}^1 g + TMIN g(TMIN)) by composite Gauss-Legendre quadrature on panels
    graded geometrically towards t = 0 (g may have a log singularity there)."""
    low = gauss_panels([0.0, 1e-12, 1e-10, 1e-8, TMIN], nodes)
    high = gauss_panels([TMIN, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 1.0], nodes)
    part = [float(w @ expected_integrand(proc, den, x0, t)) for t, w in (low, high)]
    return part[0] + part[1], part[1] + TMIN * float(expected_integrand(proc, den, x0, [TMIN])[0])


MC_CASES = {  # kernel, clean tokens of the L = 3 independent positions, sharpened denoiser
    "mask": (lambda: K.Mask(M, 5), [0, 2, 4], False),
    "uniform": (lambda: K.Uniform(M), [0, 2, 5], True),
    "hybrid": (lambda: K.Hybrid(M, 5, 0.3), [1, 3, 4], True),
}


@pytest.mark.parametrize("name", MC_CASES)
def test_integrand_is_unbiased_for_the_exact_bound(name):
    make, tokens, sharpen = MC_CASES[name]
    proc = gdds.ForwardProcess(SCHED, make())
    den = smooth_denoiser(7, sharpen)
    x0 = torch.tensor(tokens)
    V12, V12_clamped = exact_value(proc, den, x0, 12)
    V, V_clamped = exact_value(proc, den, x0, 24)
    assert abs(V - V12) < 1e-8 * V and abs(V_clamped - V12_clamped) < 1e-8 * V
    assert abs(V - V_clamped) < 1e-4 * V  # the clamp at TMIN moves the target by little

    g = torch.Generator().manual_seed(11)
    N = 20_000
    ts = torch.rand(N, dtype=torch.float64, generator=g).clamp_min(TMIN)
    x0s = x0.expand(N, -1)
    xt = proc.noise(x0s, ts, generator=g)
    est = elbo_integrand(proc, den(xt, ts).float(), xt, x0s, ts).double().sum(-1)
    mean, se = float(est.mean()), float(est.std() / math.sqrt(N))
    print(f"{name}: V = {V:.6f} (clamped {V_clamped:.6f}), MC {mean:.6f} +- {se:.6f}")
    assert abs(mean - V_clamped) < 4 * se
    assert se < 0.05 * V

    # continuous_bound estimates the same integral (plus the prior term) with the generic
    # dense-free operators; each of its draws is I summed over positions.
    seen = []

    def recording(xt, t):
        seen.append((xt.clone(), t.clone()))
        return den(xt, t)

    n = 1000
    x0b = x0.expand(n, -1).contiguous()
    cb = continuous_bound(proc, recording, x0b, samples=1, generator=torch.Generator().manual_seed(12))
    cb = cb - prior_kl(proc, x0b)
    (xt_cb, t_cb), = seen
    again = elbo_integrand(proc, den(xt_cb, t_cb).float(), xt_cb, x0b, t_cb).double().sum(-1)
    t64 = t_cb.double()
    q_x = dense_P_batch(proc, t64)[torch.arange(n)[:, None], xt_cb, x0b]
    err = (again - cb).abs()
    print(f"{name}: continuous_bound vs elbo_integrand per draw: max abs {float(err.max()):.2e}")
    assert (err <= 1e-4 * cb.abs() + float32_scale(SCHED.beta(t64)[:, None], q_x).sum(-1)).all()
    cb_se = float(cb.std() / math.sqrt(n))
    print(f"{name}: continuous_bound - prior_kl {float(cb.mean()):.6f} +- {cb_se:.6f}")
    assert abs(float(cb.mean()) - V) < 4 * cb_se


# --- gradients and errors -------------------------------------------------------------------

@pytest.mark.parametrize("name", KERNELS)
def test_integrand_is_differentiable(name):
    proc = gdds.ForwardProcess(SCHED, KERNELS[name]())
    g = torch.Generator().manual_seed(3)
    ts = torch.tensor([0.02, 0.5, 1.0])
    x0 = torch.randint(0, M, (3, 8), generator=g)
    xt = proc.noise(x0, ts, generator=g)
    logits = torch.randn(3, 8, M, generator=g, requires_grad=True)
    (grad,) = torch.autograd.grad(elbo_integrand(proc, logits, xt, x0, ts).sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # mu is invariant to shifting all logits of a position, so each gradient row sums to 0
    assert (grad.sum(-1).abs() <= 1e-5 * grad.abs().sum(-1) + 1e-6).all()
    if name == "mask":
        assert (grad[xt != 5] == 0).all()


@pytest.mark.parametrize("name", ["mask", "uniform"])
def test_gradient_steps_lower_the_averaged_integrand(name):
    """Adam on a per-x_t logit table of one position, on fixed draws of (t, x_t) with one clean
    token: the average integrand falls towards its optimum 0 (mu = e_{x0})."""
    proc = gdds.ForwardProcess(SCHED, KERNELS[name]())
    g = torch.Generator().manual_seed(4)
    N = 128
    ts = torch.rand(N, dtype=torch.float64, generator=g).clamp_min(1e-3)
    x0 = torch.full((N, 1), 2)
    xt = proc.noise(x0, ts, generator=g)
    table = torch.zeros(M, M, requires_grad=True)
    opt = torch.optim.Adam([table], lr=0.2)
    losses = []
    for _ in range(30):
        loss = elbo_integrand(proc, table[xt], xt, x0, ts).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"{name}: averaged integrand {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] < 0.05 * losses[0]


def test_errors():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, M, generator=g)
    xt = x0 = torch.zeros(2, 3, dtype=torch.long)
    t = torch.tensor([0.5, 0.7])
    dense = gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(M, 0)))
    with pytest.raises(ValueError, match="column-constant"):
        elbo_integrand(dense, logits, xt, x0, t)
    proc = gdds.ForwardProcess(SCHED, K.Uniform(M))
    with pytest.raises(ValueError, match="shape|need"):
        elbo_integrand(proc, logits[:, :2], xt, x0, t)
    with pytest.raises(ValueError, match="shape|need"):
        elbo_integrand(proc, logits, xt, x0[:, :2], t)
    with pytest.raises(ValueError, match="shape|need"):
        elbo_integrand(proc, logits, xt, x0, t[:1])
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            elbo_integrand(proc, logits, xt, x0, torch.tensor([0.5, bad]))


def test_confidently_wrong_prediction_keeps_its_loss_and_gradient():
    proc = gdds.ForwardProcess(SCHED, K.Mask(M, 5))
    t = torch.tensor([0.5])
    logits = torch.zeros(1, 1, M)
    logits[0, 0, 0], logits[0, 0, 5] = -80.0, -math.inf  # log mu(x0) = -80 - log 4
    logits.requires_grad_(True)
    I = elbo_integrand(proc, logits, torch.tensor([[5]]), torch.tensor([[0]]), t)
    (grad,) = torch.autograd.grad(I.sum(), logits)
    a, b = float(SCHED.alpha(0.5)), float(SCHED.beta(0.5))
    mdlm = b * a / (1 - a) * float(-torch.log_softmax(logits.detach().double(), -1)[0, 0, 0])
    assert float(I.detach()) == pytest.approx(mdlm, rel=1e-4)
    assert float(grad[0, 0, 0]) == pytest.approx(-b * a / (1 - a), rel=1e-4)


@pytest.mark.parametrize("kernel", [K.Mask(9, 8), K.Uniform(9), K.Hybrid(9, 8, uniform_weight=0.3),
                                    K.Hybrid(9, 8, uniform_weight=lambda t: 0.2 + 0.3 * t)])
def test_the_closed_forms_at_many_times_are_each_times_transition(kernel):
    """per_time (one call for a batch of times, vectorised when pi is constant) gives each time's
    closed-form transition P_{0->t} = k I + c 1^T, pi_t and beta(t), as one call per time does."""
    from gdds.objectives.elbo import per_time

    process = gdds.ForwardProcess(SCHED, kernel)
    t = 1e-3 + 0.999 * torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k, c, pi, beta = per_time(process, t)
    for i, ti in enumerate(t.tolist()):
        keep, column = process.closed_transition(0.0, ti)
        assert k[i].item() == pytest.approx(keep, abs=1e-14)
        torch.testing.assert_close(c[i], column.to(c.dtype), atol=1e-14, rtol=0)
        torch.testing.assert_close(pi[i], process.pi(ti).to(pi.dtype), atol=1e-14, rtol=0)
    torch.testing.assert_close(beta, process.schedule.beta(t), atol=1e-12, rtol=0)
