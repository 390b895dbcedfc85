"""``gdds.power_sums.power_sum``: ``sum_n w_n F^n v`` against the plain loop, column by column, and the
products it saves when columns' series end at different depths (the training step's forward likelihood:
one series for a batch of sequences at different times, ``gdds.operators.transposed_from_zero``)."""
import pytest
import torch

from gdds.power_sums import Products, poisson_series, power_sum

M = 30


def _kernel() -> torch.Tensor:
    F = torch.rand(M, M, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return F / F.sum(0, keepdim=True)


def _plain(F: torch.Tensor, v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The reference: every power of every column, float64, weights per column."""
    out, cur = torch.zeros_like(v), v
    for n in range(weights.shape[0]):
        out += weights[n] * cur
        cur = F @ cur
    return out


@pytest.mark.parametrize("how", [Products(), Products(mixed=True), Products(block=3), Products(mixed=True, block=4)],
                         ids=["float64", "mixed", "float64-blocks", "mixed-blocks"])
def test_columns_whose_series_end_early_stop_their_products(how):
    """Columns at Poisson means from 0 to 4 (series of 1 to 19 terms) in shuffled order: each column
    equals the plain sum of its own series (1e-12 in float64, 1e-6 relative with float32 products), and the
    products multiply each column exactly as many times as its series has powers, no more."""
    F = _kernel()
    means = torch.tensor([2.0, 0.0, 4.0, 0.5, 1.0, 3.0, 0.1, 4.0, 2.5, 0.0])
    series = [poisson_series(float(mu))[0] for mu in means]
    depth = max(s.numel() for s in series)
    weights = torch.zeros(depth, means.numel(), dtype=torch.float64)
    for j, s in enumerate(series):
        weights[:s.numel(), j] = s
    v = torch.rand(M, means.numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    multiplied = []

    def step(x: torch.Tensor, t: float) -> torch.Tensor:
        multiplied.append(x.shape[1])
        return F.to(x.dtype) @ x

    out = power_sum(step, v, weights, 0.0, how)
    expected = _plain(F, v, weights)
    torch.testing.assert_close(out, expected, rtol=1e-6 if how.mixed else 1e-12, atol=0)
    assert sum(multiplied) == sum(s.numel() - 1 for s in series)  # a column of N + 1 weights: N products


def test_shared_weights_multiply_every_column_every_time():
    """One series for all columns (``weights [N + 1]``): the plain sum, every column through every power."""
    F = _kernel()
    weights, _ = poisson_series(1.5)
    v = torch.rand(M, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    multiplied = []

    def step(x: torch.Tensor, t: float) -> torch.Tensor:
        multiplied.append(x.shape[1])
        return F @ x

    torch.testing.assert_close(power_sum(step, v, weights, 0.0), _plain(F, v, weights[:, None].expand(-1, 5)),
                               rtol=1e-12, atol=0)
    assert multiplied == [5] * (weights.numel() - 1)


def test_the_fused_flush_of_non_negative_columns_drops_exactly_what_the_general_one_drops():
    """Non-negative float32 columns are flushed in one fused pass: the same entries as ``|x| < FLUSH``, the
    neighbours of FLUSH included; signed columns keep the general flush, and their sums stay right."""
    import numpy as np

    from gdds.power_sums import FLUSH, _flushed, flush_nonnegative

    at = np.float32(FLUSH)
    x = torch.rand(200, 3) * 1e-29
    x[:3, 0] = torch.tensor([float(at), float(np.nextafter(at, np.float32(0))), float(np.nextafter(at, np.float32(1)))])
    assert torch.equal(flush_nonnegative(x.clone()), _flushed(x.clone()))
    assert flush_nonnegative(x.clone())[:3, 0].tolist() == [float(at), 0.0, float(np.nextafter(at, np.float32(1)))]
    F = _kernel()
    weights, _ = poisson_series(2.0)
    v = torch.randn(M, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = power_sum(lambda u, t: F.to(u.dtype) @ u, v, weights, 0.0, Products(mixed=True))
    expected = _plain(F, v, weights[:, None].expand(-1, 4))
    assert float((out - expected).abs().max()) < 1e-6 * float(v.abs().max())
