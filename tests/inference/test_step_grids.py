"""Explicit and fitted time grids (``gdds.step_grids``, ``grid=`` of ``gdds.sample`` and ``gdds.nll_bound``)
and the bound of a chain sampled with decoding filters (``nll_bound(decoding=)``)."""
import itertools
import math

import numpy as np
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.likelihood import bound_terms, paired_difference
from gdds.sampling import chain_grid, time_grid
from gdds.step_grids import fitted_grid
from helpers import assert_follows, context_free_chain_law

M = 6
MU = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08, 0.0], dtype=torch.float64)


def context_free(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return MU.log().expand(*xt.shape, -1).clone()


def uniform_process() -> gdds.ForwardProcess:
    return gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Uniform(M))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_fitted_grid_splits_the_piecewise_linear_cumulative_into_equal_shares():
    ends = [0.1, 0.3, 0.35, 0.7, 1.0]
    nats = [2.0, 0.0, 1.5, 0.0, 4.5]  # two intervals pay nothing
    grid = fitted_grid(ends, nats, 6)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == 7
    assert all(a > b for a, b in itertools.pairwise(grid))
    cumulative = np.interp(grid[::-1], [0.0, *ends], np.concatenate([[0.0], np.cumsum(nats)]))
    np.testing.assert_allclose(np.diff(cumulative), sum(nats) / 6, rtol=1e-12)
    assert not any(0.1 < t < 0.3 or 0.35 < t < 0.7 for t in grid)  # none inside an interval that pays nothing


def test_the_fitted_grid_of_a_flat_profile_is_uniform_and_bad_profiles_are_refused():
    assert fitted_grid([0.5, 1.0], [1.0, 1.0], 4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert fitted_grid([0.5, 1.0], [0.0, -1e-9], 3) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])  # pays nothing
    for ends, nats, steps in [([0.5, 0.9], [1, 1], 2), ([0.5, 0.5, 1.0], [1, 1, 1], 2), ([1.0], [1, 2], 2),
                              ([1.0], [math.nan], 2), ([1.0], [1.0], 0)]:
        with pytest.raises(ValueError):
            fitted_grid(ends, nats, steps)


def test_explicit_grids_are_checked():
    proc = uniform_process()
    for grid in ([1.0, 0.5, 0.5, 0.0], [0.9, 0.0], [1.0, 0.2], [1.0], [1.0, 0.7, 0.8, 0.0]):
        with pytest.raises(ValueError, match="strictly decreasing"):
            chain_grid(proc, None, grid=grid)
    with pytest.raises(ValueError, match="disagrees"):
        gdds.sample(proc, context_free, 2, 3, 5, grid=[1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="spacing"):
        gdds.nll_bound(proc, context_free, torch.zeros(2, 3, dtype=torch.long), spacing="lambda", grid=[1.0, 0.0])


@pytest.mark.parametrize("spacing", ["t", "lambda"])
def test_a_grid_given_explicitly_is_the_same_chain_and_bound_bit_for_bit(spacing):
    proc = uniform_process()
    grid = time_grid(proc, 5, spacing)
    assert torch.equal(gdds.sample(proc, context_free, 4, 3, 5, spacing=spacing, generator=seeded(0)),
                       gdds.sample(proc, context_free, 4, 3, grid=grid, generator=seeded(0)))
    x0 = torch.randint(0, M - 1, (6, 3), generator=seeded(1))
    assert torch.equal(gdds.nll_bound(proc, context_free, x0, 5, spacing=spacing, generator=seeded(2)),
                       gdds.nll_bound(proc, context_free, x0, grid=grid, generator=seeded(2)))
    assert torch.equal(bound_terms(proc, context_free, x0, 5, spacing=spacing, generator=seeded(3)),
                       bound_terms(proc, context_free, x0, grid=grid, generator=seeded(3)))


def test_the_sampler_on_an_uneven_grid_follows_that_chains_law():
    proc, grid = uniform_process(), [1.0, 0.9, 0.4, 0.05, 0.0]
    law = context_free_chain_law(proc, MU, None, grid=grid)
    assert_follows(gdds.sample(proc, context_free, 2000, 4, grid=grid, generator=seeded(4)), law)


def test_the_neutral_decoding_gives_the_plain_bound_bit_for_bit():
    proc = uniform_process()
    x0 = torch.randint(0, M - 1, (6, 3), generator=seeded(1))
    plain = gdds.nll_bound(proc, context_free, x0, 6, generator=seeded(5))
    assert torch.equal(plain, gdds.nll_bound(proc, context_free, x0, 6, decoding=gdds.Decoding(), generator=seeded(5)))
    assert torch.equal(plain, gdds.nll_bound(proc, context_free, x0, 6, decoding=gdds.Decoding(top_k=M, min_p=0.0),
                                             generator=seeded(5)))


def test_the_bound_of_a_filtered_chain_bounds_that_chains_nll_and_not_the_unfiltered_ones():
    """One position per token (the denoiser ignores context): the exact law of ``x_0`` of the chain with top-k
    on a grid is known (``helpers.context_free_chain_law``); the bound with ``decoding`` and all terms, averaged
    over draws, is at least its ``-log`` for every token (within 4 standard errors), infinite for a token top-k
    removes, and the unfiltered chain's bound is another number."""
    proc, grid, decoding = uniform_process(), [1.0, 0.6, 0.3, 0.1, 0.0], gdds.Decoding(top_k=3)
    law = context_free_chain_law(proc, MU, None, decoding, grid=grid)
    for y in range(M - 1):
        x0 = torch.full((400, 1), y)
        filtered = gdds.nll_bound(proc, context_free, x0, grid=grid, decoding=decoding, all_terms=True,
                                  generator=seeded(y))
        if law[y] == 0:
            assert bool(torch.isinf(filtered).all())
            continue
        se = float(filtered.std()) / math.sqrt(len(filtered))
        assert float(filtered.mean()) >= -math.log(float(law[y])) - 4 * se - 1e-9
        plain = gdds.nll_bound(proc, context_free, x0, grid=grid, all_terms=True, generator=seeded(y))
        assert abs(float(plain.mean()) - float(filtered.mean())) > 4 * se


C, L = 4, 3  # clean tokens 0..3 (4 is the mask); every sequence repeats one token


def copy_denoiser(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of sequences that repeat one uniform token, under the mask kernel: a token seen
    anywhere is every position's; none seen, each is uniform. The ``T``-step chain draws positions
    independently, so it pays when two positions unmask in the same step while none was seen: the bound
    depends on the grid."""
    seen = xt != C
    known = torch.full((xt.shape[0], C + 1), -math.inf, dtype=torch.float64)
    known[torch.arange(xt.shape[0]), torch.where(seen, xt, C).min(1).values.clamp_max(C - 1)] = 0.0
    blind = torch.tensor([0.0] * C + [-math.inf], dtype=torch.float64).expand_as(known)
    return torch.where(seen.any(1, keepdim=True), known, blind)[:, None, :].expand(-1, xt.shape[1], -1)


def test_a_grid_fitted_to_the_profile_gives_a_lower_paired_bound_than_the_uniform_grid():
    """Under ``Exponential(12)`` the mask kernel reveals nearly every token before ``t = 0.3``: the uniform
    4-step grid spends three of its steps where nothing is paid. The grid fitted to the 16-step profile
    (``bound_terms`` on 200 sequences, as ``gdds eval --profile-steps`` records it) lowers the bound on 600
    sequences (all terms, paired on the sequences) by more than 4 standard errors (about 0.55 nats per
    token, SE 0.03, with these seeds)."""
    proc = gdds.ForwardProcess(gdds.Exponential(12.0), K.Mask(C + 1, C))
    gen = seeded(0)
    x0 = torch.randint(0, C, (600, 1), generator=gen).expand(-1, L).contiguous()
    profile = bound_terms(proc, copy_denoiser, x0[:200], 16, generator=gen).mean(0)
    grid = fitted_grid(time_grid(proc, 16)[::-1][1:], profile[1:].tolist(), 4)
    fitted = gdds.nll_bound(proc, copy_denoiser, x0, grid=grid, all_terms=True, generator=gen)
    uniform = gdds.nll_bound(proc, copy_denoiser, x0, 4, all_terms=True, generator=gen)
    gain = paired_difference(uniform, fitted, torch.full((600,), L))
    assert gain.nats_per_token > 4 * gain.standard_error
    assert float(fitted.mean()) >= math.log(C) - 0.1  # still a bound on the data's NLL, log 4
