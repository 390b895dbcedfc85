"""Snapshot objective: time sampling and the cross-entropy against exact values."""
import math

import pytest
import torch
from scipy.stats import kstest

import gdds
from gdds import kernels as K
from gdds.objectives import sample_times, snapshot_cross_entropy, snapshot_loss


def test_sample_times_are_uniform_and_stratified():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_times(8, 0.1, g) for _ in range(4000)])
    assert draws.min() >= 0.1 and draws.max() < 1.0
    for j in (0, 5):  # every slot is marginally U[0.1, 1)
        assert kstest(((draws[:, j] - 0.1) / 0.9).numpy(), "uniform").statistic < 0.03
    gaps = torch.diff(torch.sort(draws, dim=1).values, dim=1)
    assert torch.allclose(gaps, torch.full_like(gaps, 0.9 / 8), atol=1e-5)  # one per stratum
    with pytest.raises(ValueError, match="at least one"):
        sample_times(0)


def test_cross_entropy_matches_manual_computation():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    x0 = torch.tensor([[0, 4, 2], [1, 1, 3]])
    ce = snapshot_cross_entropy(logits, x0)
    manual = -torch.log_softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
    assert torch.allclose(ce, manual, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        snapshot_cross_entropy(logits, x0[:, :2])


def test_snapshot_loss_of_the_exact_denoiser_for_masking():
    """I.i.d. tokens from a law p, mask kernel: the Bayes denoiser outputs p on masked
    positions and the token itself elsewhere, so E[CE] = H(p) E_t[1 - alpha(t)]."""
    m, mask = 6, 5
    p = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])
    sched = gdds.LogLinear(1e-3)
    proc = gdds.ForwardProcess(sched, K.Mask(m, mask))

    def bayes(xt, t):
        out = torch.full((*xt.shape, m), -1e9)
        out.scatter_(-1, xt[..., None], 0.0)
        masked = xt == mask
        out[masked] = torch.log(p.clamp_min(1e-30))
        return out

    g = torch.Generator().manual_seed(3)
    t_min = 0.2
    losses = []
    for _ in range(200):
        x0 = torch.multinomial(p, 64 * 32, replacement=True, generator=g).reshape(64, 32)
        losses.append(snapshot_loss(proc, bayes, x0, t_min=t_min, generator=g).item())
    entropy = -(p[:5] * p[:5].log()).sum().item()
    eps = 1e-3  # E_t[1 - alpha(t)] = (1 - eps) E[t] for the log-linear schedule
    expected = entropy * (1 - eps) * (1 + t_min) / 2
    mean = sum(losses) / len(losses)
    se = torch.tensor(losses).std().item() / math.sqrt(len(losses))
    assert abs(mean - expected) < 4 * se + 1e-3


def test_snapshot_loss_respects_mask():
    proc = gdds.ForwardProcess(gdds.LogLinear(), K.Uniform(4))
    x0 = torch.zeros(2, 3, dtype=torch.long)

    def zero_on_zero(xt, t):
        out = torch.full((*xt.shape, 4), -30.0)
        out[..., 0] = 0.0
        out[:, 2] = 0.0  # uniform prediction on the last position
        return out

    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert snapshot_loss(proc, zero_on_zero, x0, mask=mask).item() < 1e-6
    assert snapshot_loss(proc, zero_on_zero, x0).item() == pytest.approx(math.log(4) / 3, rel=1e-4)


def test_snapshot_loss_is_unbiased_for_a_dense_kernel():
    """A fixed table denoiser and a dense random kernel: the mean snapshot loss equals
    ``int_{t_min}^1 sum_x q_t(x | x0) (-log mu(x0 | x, t)) dt / (1 - t_min)`` by quadrature."""
    import numpy as np

    from helpers import random_stochastic

    m, x0_token, t_min = 5, 1, 0.1
    proc = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Dense(random_stochastic(m, 11)))
    table = torch.randn(m, m, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def denoiser(xt, t):
        return (table[xt] * (1 + t.double()[:, None, None])).float()

    u, w = np.polynomial.legendre.leggauss(32)
    exact = 0.0
    for t, wt in zip(t_min + (1 - t_min) * (u + 1) / 2, w / 2):
        q = proc.marginal(torch.tensor([[x0_token]]), float(t))[0, 0]
        logmu = torch.log_softmax(table * (1 + t), -1)[:, x0_token]
        exact += wt * float(-(q * logmu).sum())
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((256, 64), x0_token)
    losses = torch.tensor([snapshot_loss(proc, denoiser, x0, t_min=t_min, generator=g).item() for _ in range(40)])
    se = losses.std().item() / math.sqrt(len(losses))
    assert abs(losses.mean().item() - exact) < 4 * se + 1e-4 and se < 0.01 * exact, (losses.mean(), se, exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_equals_the_dense_one_in_value_and_gradient(monkeypatch, dtype, device):
    """cross_entropy_rows (float32 chunks, no float32 copy of the logits) against F.cross_entropy on
    a float64 copy: values and gradients agree to the logits' precision, over several chunks."""
    from gdds.objectives import logsumexp

    monkeypatch.setattr(logsumexp, "CHUNK_FLOATS", 3 * 37)  # 3 rows per chunk: 7 chunks for 20 rows
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(4, 5, 37, generator=g) * 4).to(device, dtype).requires_grad_()
    target = torch.randint(0, 37, (4, 5), generator=g).to(device)
    weight = torch.rand(4, 5, generator=g).to(device)
    loss = logsumexp.cross_entropy_rows(z, target)
    assert loss.dtype == torch.float32 and loss.shape == (4, 5)
    (loss * weight).sum().backward()
    ref_z = z.detach().double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_z.transpose(1, 2), target, reduction="none")
    (ref * weight.double()).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(loss.double(), ref, atol=tol, rtol=0)
    assert z.grad.dtype == dtype
    torch.testing.assert_close(z.grad.double(), ref_z.grad, atol=tol, rtol=0)
