"""Path-wise objectives of the jump-states parametrization (gdds.pathwise) and the
two-stream network: the closed-form loss against dense reverse rates and MDLM, both
estimators unbiased against an exact quadrature of the path-wise loss (JS), the
Campbell layout, and the two-stream network's path pass equal to its snapshot pass."""
import numpy as np
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.models import DiTConfig, TwoStream
from gdds.objectives import sample_times
from gdds.objectives.pathwise import END, campbell_batch, campbell_loss, jump_denoiser, jump_log_probs, jump_state_loss
from helpers import random_stochastic

SCHED = gdds.LogLinear(1e-3)
M, T_MIN = 6, 0.02
COLUMN_CONSTANT = {
    "mask": lambda: K.Mask(M, 5),
    "uniform": lambda: K.Uniform(M),
    "hybrid": lambda: K.Hybrid(M, 5, 0.3),
}
G = torch.Generator().manual_seed(0)
TABLE_A, TABLE_B = torch.randn(M, M, generator=G, dtype=torch.float64), torch.randn(M, M, generator=G,
                                                                                        dtype=torch.float64)


def table_logits(current, t):
    """A fixed jump-kernel model: logits ``A[x] (1 + t) + B[x]`` for current token ``x`` at time ``t``
    (broadcast over ``current``'s shape, ``t`` of the same shape)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (TABLE_A[current] * (1 + t[..., None]) + TABLE_B[current]).float()


def exact_pathwise(process, x0, t_min=T_MIN, nodes=48):
    """``int_{t_min}^1 sum_z q_t(z|x0) sum_{x != z} beta F_t[x, z] (-log J(z | x, t)) dt`` (JS, Campbell form)
    by Gauss-Legendre quadrature on the exact marginal."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    ts = t_min + (1 - t_min) * (u + 1) / 2
    total = 0.0
    for t, wt in zip(ts, w * (1 - t_min) / 2):
        q = process.marginal(torch.tensor([[x0]]), float(t))[0, 0]                 # [m]
        F = process.kernel.dense(float(t)).double()                                  # F[x, z]: z -> x
        beta = float(process.schedule.beta(torch.tensor([t], dtype=torch.float64))[0])
        x = torch.arange(M)
        logj = jump_log_probs(table_logits(x, torch.full((M,), t)), x).double()   # logj[x, z]
        nll = torch.where(torch.isinf(logj), torch.zeros_like(logj), -logj)
        off = 1 - torch.eye(M, dtype=torch.float64)
        total += wt * beta * float((q[None, :] * F * off * nll).sum())
    return total


@pytest.mark.parametrize("name", COLUMN_CONSTANT)
def test_jump_state_loss_equals_dense_reverse_rates(name):
    process = gdds.ForwardProcess(SCHED, COLUMN_CONSTANT[name]())
    g = torch.Generator().manual_seed(1)
    B, L = 64, 3
    x0 = torch.randint(0, M - 1, (B, L), generator=g)
    t = sample_times(B, T_MIN, g)
    xt = process.noise(x0, t, generator=g)
    logits = torch.randn(B, L, M, generator=g)
    got = jump_state_loss(process, logits, xt, x0, t).double()
    q = process.marginal(x0, t)                                                     # [B, L, m]
    for b in range(B):
        F = process.kernel.dense(float(t[b])).double()
        beta = float(SCHED.beta(t[b:b + 1].double())[0])
        for i in range(L):
            x = int(xt[b, i])
            rates = beta * F[x, :] * q[b, i] / q[b, i, x]                             # R(x -> z | x0)
            rates[x] = 0.0
            logj = jump_log_probs(logits[b, i], torch.tensor(x)).double()
            want = float((rates * torch.where(rates > 0, -logj, torch.zeros_like(logj))).sum())
            assert got[b, i] == pytest.approx(want, rel=1e-4, abs=1e-4)


def test_jump_state_loss_is_mdlm_for_the_mask():
    process = gdds.ForwardProcess(SCHED, K.Mask(M, 5))
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, 5, (32, 4), generator=g)
    t = sample_times(32, T_MIN, g)
    xt = process.noise(x0, t, generator=g)
    logits = torch.randn(32, 4, M, generator=g)
    alpha = torch.exp(-SCHED.Lambda(t.double()))
    weight = SCHED.beta(t.double()) * alpha / (1 - alpha)
    ce = -torch.log_softmax(logits[..., :5].double(), -1).gather(-1, x0[..., None])[..., 0]
    want = torch.where(xt == 5, weight[:, None] * ce, torch.zeros_like(ce))
    torch.testing.assert_close(jump_state_loss(process, logits, xt, x0, t).double(), want, rtol=1e-4, atol=1e-5)


def _mc(values):
    values = values.double()
    return float(values.mean()), float(values.std() / values.numel() ** 0.5)


@pytest.mark.parametrize("name", ["uniform", "hybrid"])
def test_jump_state_estimator_is_unbiased(name):
    process = gdds.ForwardProcess(SCHED, COLUMN_CONSTANT[name]())
    exact = exact_pathwise(process, 2)
    g = torch.Generator().manual_seed(3)
    n, L = 20000, 16   # heavy-tailed: the weight beta / q_t(x|x0) is large where x != x0 at small t
    x0 = torch.full((n, L), 2)
    t = sample_times(n, T_MIN, g)
    xt = process.noise(x0, t, generator=g)
    loss = jump_state_loss(process, table_logits(xt, t[:, None].expand(n, L)), xt, x0, t) * (1 - T_MIN)
    mean, se = _mc(loss.mean(1))
    assert abs(mean - exact) < 4 * se and se < 0.05 * exact, (mean, se, exact)


@pytest.mark.parametrize("kernel", ["dense", "mask", "uniform"])
def test_campbell_estimator_is_unbiased(kernel):
    """Any kernel: a dense random (not column-constant) one included."""
    make = {"dense": lambda: K.Dense(random_stochastic(M, 7)), **COLUMN_CONSTANT}[kernel]
    process = gdds.ForwardProcess(SCHED, make())
    exact = exact_pathwise(process, 2)
    g = torch.Generator().manual_seed(4)
    n, L = 2000, 16
    x0 = torch.full((n, L), 2)
    batch = campbell_batch(process, x0, T_MIN, g)
    logits = table_logits(batch.q_current, batch.q_time)   # the model sees only the post-jump token and time
    mean, se = _mc(campbell_loss(logits, batch, L).mean(1))
    assert abs(mean - exact) < 4 * se and se < 0.03 * exact, (mean, se, exact)


def state_at(batch, b, time, L):
    """The sequence held by the pieces of row ``b`` at ``time``."""
    active = (batch.start[b] <= time) & (time < batch.end[b])
    out = torch.full((L,), -1)
    out[batch.positions[b][active]] = batch.tokens[b][active]
    assert active.sum() == L  # exactly one piece per position
    return out


def test_campbell_layout_tiles_each_path():
    process = gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(M, 8)))
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, M, (3, 5), generator=g)
    batch = campbell_batch(process, x0, 0.0, g)
    for b in range(3):
        assert torch.equal(state_at(batch, b, 0.0, 5), x0[b]) and (state_at(batch, b, 1.0, 5) >= 0).all()
        for q in torch.nonzero(batch.q_valid[b])[:, 0]:
            tau, i = batch.q_time[b, q], batch.q_pos[b, q]
            after = state_at(batch, b, tau, 5)
            before = state_at(batch, b, torch.nextafter(tau, torch.zeros_like(tau)), 5)
            assert after[i] == batch.q_current[b, q] != batch.q_target[b, q] == before[i]
            assert torch.equal(torch.cat((after[:i], after[i + 1:])), torch.cat((before[:i], before[i + 1:])))
        real = batch.start[b] < END
        assert int(batch.q_valid[b].sum()) == int(real.sum()) - 5  # one query per jump


def test_mask_paths_have_one_jump_per_masked_position():
    process = gdds.ForwardProcess(SCHED, K.Mask(M, 5))
    x0 = torch.randint(0, 5, (4, 8), generator=torch.Generator().manual_seed(6))
    batch = campbell_batch(process, x0, 0.0, torch.Generator().manual_seed(7))
    valid = batch.q_valid
    assert (batch.q_current[valid] == 5).all()
    assert torch.equal(batch.q_target[valid], x0.gather(1, batch.q_pos)[valid])
    counts = torch.zeros_like(x0).scatter_add(1, batch.q_pos, valid.long())
    assert counts.max() <= 1


def test_two_stream_path_pass_is_its_snapshot_pass():
    """Each query's logits depend only on the sequence at its time: the path pass and the
    snapshot pass on ``X_tau`` agree, so training and generation use the same model."""
    torch.manual_seed(0)
    model = TwoStream(DiTConfig(vocab_size=M, layers=2, width=32, heads=2, cond_width=16, max_len=16))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)   # leave the zero init, which would make every output equal
    process = gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(M, 9)))
    g = torch.Generator().manual_seed(8)
    x0 = torch.randint(0, M, (2, 6), generator=g)
    batch = campbell_batch(process, x0, 0.0, g)
    with torch.no_grad():
        path = model(*batch.model_inputs())
        for b in range(2):
            for q in torch.nonzero(batch.q_valid[b])[:, 0][:8]:
                snap = state_at(batch, b, batch.q_time[b, q], 6)
                want = model.snapshot(snap[None], batch.q_time[b, q].float()[None])[0, batch.q_pos[b, q]]
                torch.testing.assert_close(path[b, q], want, rtol=1e-4, atol=1e-4)


def test_jump_denoiser_reads_the_mask_kernel_and_refuses_others():
    process = gdds.ForwardProcess(SCHED, K.Mask(M, 5))
    xt = torch.tensor([[5, 1, 5]])
    logits = torch.randn(1, 3, M, generator=torch.Generator().manual_seed(9))
    out = jump_denoiser(process, lambda x, t: logits)(xt, torch.tensor([0.5]))
    torch.testing.assert_close(out[0, 0].exp(), torch.softmax(logits[0, 0].masked_fill(torch.arange(M) == 5, -1e9), -1))
    assert out[0, 1, 1] == 0 and torch.isinf(out[0, 1, torch.arange(M) != 1]).all()
    with pytest.raises(ValueError, match="exit rates"):
        jump_denoiser(gdds.ForwardProcess(SCHED, K.Uniform(M)), lambda x, t: logits)
