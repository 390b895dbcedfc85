"""``gdds.token_powers.TokenPowers``: the kept powers ``(K^T)^n e_x`` of single tokens give what
``gdds.power_sums.power_sum`` gives for their one-hot columns (the same products summed in the same
order), within the memory budget; the forward likelihood that uses them equals the one that multiplies
every time, and both equal the float64 transition of each time alone."""
import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.categorical import one_hot_columns
from gdds.operators import series_depth, transition
from gdds.posterior import forward_likelihood
from gdds.power_sums import Products, poisson_series, power_sum
from gdds.token_powers import SLAB, TokenPowers

M = 80
SCHED = gdds.LogLinear(1e-3)


def semantic(float32: bool = True, power_cache: int = 2**30) -> gdds.ForwardProcess:
    emb = torch.randn(M, 8, generator=torch.Generator().manual_seed(11))
    kernel = K.SemanticKNN(emb, K.SemanticSettings(k=16, bandwidth_k=7, b=0.0), schedule=SCHED, cache=False,
                           progress=False)
    kernel.knn.float32_apply = float32
    return gdds.ForwardProcess(SCHED, kernel, power_cache=power_cache)


def _weights(means: list[float]) -> torch.Tensor:
    series = [poisson_series(mu)[0] for mu in means]
    weights = torch.zeros(max(s.numel() for s in series), len(means), dtype=torch.float64)
    for j, s in enumerate(series):
        weights[:s.numel(), j] = s
    return weights


@pytest.mark.parametrize("mixed", [True, False], ids=["float32-products", "float64"])
@pytest.mark.parametrize("capacity", [M, 5], ids=["all-kept", "budget-of-5"])
def test_kept_powers_sum_as_the_series_does(mixed, capacity):
    """Repeated tokens, series of 1 to 19 terms and one deeper than the kept depth (it goes through
    power_sum): every column equals power_sum's on the one-hot columns to round-off (1e-6 relative with
    float32 products, which round differently in slabs of other widths; 1e-13 in float64), over three calls
    (powers computed, then reused); a budget of 5 tokens keeps 5, no more."""
    process = semantic()
    apply_T = process.kernel.teleport_split().inner.apply_T
    depth = poisson_series(4.0)[0].numel() - 1  # as deep as the longest series but one
    per_token = depth * M * (4 if mixed else 8)
    powers = TokenPowers(apply_T, M, depth, Products(mixed), capacity * per_token, torch.device("cpu"))
    tokens = torch.tensor([3, 7, 3, 50, 0, 79, 7, 12, 33, 3])
    weights = _weights([2.0, 0.0, 4.0, 0.5, 1.0, 3.0, 0.1, 9.0, 2.5, 1.5])
    assert (weights[:, 7] != 0).sum() > depth + 1  # the deep column
    expected = power_sum(apply_T, one_hot_columns(tokens, M), weights, 0.0, Products(mixed))
    for _ in range(3):
        torch.testing.assert_close(powers.weighted(tokens, weights), expected, rtol=1e-6 if mixed else 1e-13,
                                   atol=1e-300)
    assert powers.kept == min(capacity, 6) and powers.nbytes <= max(capacity * per_token, SLAB * per_token)
    assert powers.weighted(tokens[:0], weights[:, :0]).shape == (M, 0)


@pytest.mark.parametrize("float32", [True, False], ids=["float32-products", "float64"])
def test_forward_likelihood_is_the_same_with_kept_powers(float32):
    """forward_likelihood of a batch at six times, with the kept powers (a budget of 30 tokens: the rest
    multiplied) and without: equal to round-off (1e-6 relative with float32 products, 1e-13 in float64),
    twice; both within 1e-6 relative of the float64 transition of each time alone. Moving the process to a
    device drops what was kept."""
    width = 4 if float32 else 8
    kept, plain = semantic(float32, power_cache=30 * 14 * M * width), semantic(float32, power_cache=0)
    split = kept.kernel.teleport_split()
    assert series_depth(split, SCHED) == 14 and plain.token_powers(split, OperatorSettings()) is None
    g = torch.Generator().manual_seed(5)
    xt = torch.randint(0, M, (6, 40), generator=g)
    t = torch.tensor([0.0, 0.05, 0.3, 0.3, 0.8, 1.0], dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(forward_likelihood(kept, xt, t), forward_likelihood(plain, xt, t),
                                   rtol=1e-6 if float32 else 1e-13, atol=1e-300)
    powers = kept.token_powers(split, OperatorSettings())
    assert powers.kept == 30 and powers.depth == 14 and powers.nbytes == SLAB * 14 * M * width
    for b in (0, 2, 5):
        alone = transition(kept.kernel, SCHED, one_hot_columns(xt[b], M), 0.0, float(t[b]), transpose=True,
                           settings=OperatorSettings(precision="float64")).T
        torch.testing.assert_close(forward_likelihood(kept, xt[b:b + 1], t[b:b + 1])[0], alone, rtol=1e-6, atol=1e-14)
    kept.to("cpu")
    assert kept.token_powers(split, OperatorSettings()).kept == 0


def test_a_power_cache_must_be_a_number_of_bytes():
    kernel = semantic().kernel
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="power_cache is a number of bytes"):
            gdds.ForwardProcess(SCHED, kernel, power_cache=bad)
    with pytest.raises(ValueError, match="depth and a budget"):
        TokenPowers(kernel.teleport_split().inner.apply_T, M, 3, Products(), -1, torch.device("cpu"))


def test_with_counts_the_budget_goes_to_the_most_frequent_tokens():
    """Given token counts, only the ``capacity`` most frequent tokens (ties to the lower id) are ever kept,
    each when first met, even when rarer ones are met first; the columns are the same either way (1e-6
    relative: float32 products); without counts the first met are kept. ``keep_frequent_powers`` applies
    to the stores made after it, and bad counts are refused."""
    counts = torch.zeros(M)
    counts[[40, 41, 42, 43, 44]] = torch.tensor([5.0, 9.0, 9.0, 1.0, 7.0])  # top 4: 41, 42, 44, 40
    rare_first = torch.tensor([1, 2, 3, 43, 40, 41, 1, 42, 44, 43])
    weights = _weights([1.0, 2.0, 0.5, 3.0, 1.5, 0.2, 2.5, 1.0, 4.0, 0.7])
    budget = 4 * 14 * M * 4  # four tokens' 14 float32 powers
    by_count, first_met = semantic(power_cache=budget), semantic(power_cache=budget)
    assert by_count.keep_frequent_powers(counts) is by_count
    stores = [p.token_powers(p.kernel.teleport_split(), OperatorSettings()) for p in (by_count, first_met)]
    assert [s.capacity for s in stores] == [4, 4]
    depth = stores[0].depth
    columns = [s.weighted(rare_first, weights[:depth + 1]) for s in stores]
    torch.testing.assert_close(columns[0], columns[1], rtol=1e-6, atol=1e-300)
    kept = [sorted(torch.nonzero(s.slot >= 0).reshape(-1).tolist()) for s in stores]
    assert kept == [[40, 41, 42, 44], [1, 2, 3, 40]]
    stores[0].weighted(torch.arange(M), torch.ones(2, M, dtype=torch.float64))  # every token met: no more kept
    assert stores[0].kept == 4
    for bad in (torch.ones(M - 1), -torch.ones(M), torch.full((M,), float("nan"))):
        with pytest.raises(ValueError, match=f"token counts must be {M} finite numbers >= 0"):
            by_count.keep_frequent_powers(bad)
