"""The fast operator path against the float64 reference (issue 23, part 2): float32 products of the kNN
part summed in float64 (``gdds.power_sums.Products``), column blocks, and the guard that redoes a step's
products in float64 when float32 lost a column's mass. Targets: every step within 1e-6 in total
variation of the float64 path, no bound moved by more than 1e-4 nats/token.

The semantic kernel multiplies in float32 only above ``DENSE_PRODUCTS`` tokens (sparse products); these
tests force it on small vocabularies with ``float32_apply = True``."""
import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.likelihood import nll_bound
from gdds.objectives.parametrization import surrogate_logits
from gdds.posterior import forward_likelihood, reverse_step_probs
from helpers import tv

SCHED = gdds.LogLinear(1e-3)
REFERENCE = OperatorSettings(precision="float64")


def semantic(m: int = 80, b: float = 0.2, absorb: bool = False, float32: bool = True) -> gdds.ForwardProcess:
    emb = torch.randn(m, 8, generator=torch.Generator().manual_seed(11))
    settings = K.SemanticSettings(k=16, bandwidth_k=7, b=b, teleport_to="mask" if absorb else "uniform")
    kernel = K.SemanticKNN(emb, settings, mask_id=m - 1 if absorb else None, exclude=[m - 1], schedule=SCHED,
                           cache=False, progress=False)
    kernel.knn.float32_apply = float32
    return gdds.ForwardProcess(SCHED, kernel)


@pytest.mark.parametrize("b", [0.2, 0.0])
@pytest.mark.parametrize("transpose", [False, True])
def test_float32_products_stay_within_1e_6_of_float64(b, transpose):
    """Probability vectors (forward) and one-hot rows (transposed) through P_{s->t}: relative error of
    every entry above 1e-20 below 1e-5, and L1 distance below 1e-6 (all entries are non-negative)."""
    process = semantic(b=b)
    g = torch.Generator().manual_seed(12)
    v = torch.rand(80, 12, generator=g, dtype=torch.float64) if not transpose else torch.eye(80, dtype=torch.float64)
    v = v / v.sum(0, keepdim=True) if not transpose else v[:, :12]
    for s, t in ((0.0, 0.1), (0.2, 0.6), (0.0, 1.0)):
        fast = process.transition(v, s, t, transpose=transpose)
        exact = process.transition(v, s, t, transpose=transpose, settings=REFERENCE)
        big = exact > 1e-20
        assert float(((fast - exact).abs() / exact.clamp_min(1e-300))[big].max()) < 1e-5
        assert float((fast - exact).abs().sum(0).max()) < 1e-6


def test_float32_products_scale_columns_beyond_float32_range():
    """A ratio mu / r can reach 1e160 (float32 ends at 3e38): each column is scaled to a largest entry of 1
    before its float32 products, so huge and tiny columns keep float32's relative precision."""
    process = semantic()
    v = torch.rand(80, 4, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    v = v * torch.tensor([1e160, 1.0, 1e-60, 1e-200], dtype=torch.float64)
    for transpose in (False, True):
        fast = process.transition(v, 0.1, 0.8, transpose=transpose)
        exact = process.transition(v, 0.1, 0.8, transpose=transpose, settings=REFERENCE)
        assert float(((fast - exact).abs() / exact).max()) < 1e-5


@pytest.mark.parametrize("precision", ["mixed", "float64"])
def test_column_blocks_change_no_column(precision):
    """Blocks of 7 columns against all 40 at once: the same sums, to round-off. Float32 products may round
    differently in slabs of other widths (bit-identical on an Intel Xeon, 3e-8 relative on an AMD EPYC):
    1e-6 relative with them, 1e-12 in float64."""
    process = semantic()
    v = torch.rand(80, 40, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    whole = process.transition(v, 0.1, 0.9, settings=OperatorSettings(precision=precision, block=None))
    blocked = process.transition(v, 0.1, 0.9, settings=OperatorSettings(precision=precision, block=7))
    torch.testing.assert_close(blocked, whole, rtol=1e-6 if precision == "mixed" else 1e-12, atol=0)


@pytest.mark.parametrize("weighted", [True, False])
def test_steps_and_bounds_stay_within_their_targets(weighted):
    """The reverse step of the mixed path within 1e-6 TV of the float64 one; the bound within 1e-4
    nats/token (all terms of a 16-step bound, 4 sequences)."""
    process = semantic()
    g = torch.Generator().manual_seed(14)
    x0 = torch.randint(0, 79, (4, 12), generator=g)
    law = torch.softmax(2 * torch.randn(48, 80, generator=g, dtype=torch.float64), -1)
    for s, t in ((0.3, 0.31), (0.6, 0.7), (1 - 1 / 128, 1.0)):
        xt = process.noise(x0, t, generator=g).reshape(-1)
        fast = reverse_step_probs(process, law, xt, s, t, weighted=weighted)
        assert tv(fast, reverse_step_probs(process, law, xt, s, t, weighted=weighted, operators=REFERENCE)) < 1e-6

    def network(xt, t):
        return 2 * torch.randn(*xt.shape, 80, generator=torch.Generator().manual_seed(int(xt.sum()) % 997))

    denoiser = gdds.sampling.LikelihoodWeighted(process, network) if weighted else network
    bounds = [nll_bound(process, denoiser, x0, steps=16, all_terms=True, generator=torch.Generator().manual_seed(15),
                        operators=op) for op in (None, REFERENCE)]
    assert float((bounds[0] - bounds[1]).abs().max()) / 12 < 1e-4


def test_the_guard_redoes_steps_whose_float32_products_lost_mass():
    """Semantic-then-absorb under the one-jump surrogate: mu / r spans more than float32's range (mu puts
    the floor on origins whose q_t is ~1e-25), so float32 products alone drop the origins that matter
    (TV 0.4-0.8 measured without the guard); the guard sees sum_z p(z) != 1 and redoes those columns."""
    process = semantic(60, absorb=True)
    x0 = torch.randint(0, 59, (4, 32), generator=torch.Generator().manual_seed(0))
    f = torch.randn(4, 32, 60, generator=torch.Generator().manual_seed(1))
    for t in (0.2, 0.4, 0.6):
        xt = process.noise(x0, t, generator=torch.Generator().manual_seed(2))
        mu = torch.softmax(surrogate_logits(process, f, xt, torch.full((4,), t)).double(), -1).reshape(-1, 60)
        fast, exact = (reverse_step_probs(process, mu, xt.reshape(-1), t - 1 / 128, t, operators=op)
                       for op in (None, REFERENCE))
        assert tv(fast, exact) < 1e-6


def test_the_guard_redoes_weighted_steps_whose_float32_products_flushed_their_mass():
    """A likelihood-weighted step is g * P_{0->s} rho normalised by its own mass (no r). A rho that puts its
    mass only on origins whose q_t(x_t | y) is below 1e-30 of the largest (semantic-then-absorb at t = 0.3:
    down to 3e-54) has float32 products flush all of it where g lives; the guard sees a mass below
    MASS_MARGIN of max(g) max(rho) and redoes those columns in float64 (with MASS_MARGIN = 0 this test
    fails)."""
    process = semantic(60, absorb=True, b=0.0)
    t = 0.3
    xt = torch.arange(59)
    r = forward_likelihood(process, xt[None], torch.tensor([t], dtype=torch.float64), operators=REFERENCE)[0]
    relative = r / r.amax(-1, keepdim=True)
    far = (relative > 0) & (relative < 1e-32)
    rows = far.any(-1).nonzero().reshape(-1)
    assert rows.numel() >= 8
    rho = far[rows].double() / far[rows].sum(-1, keepdim=True)
    fast, exact = (reverse_step_probs(process, rho, xt[rows], t - 1 / 128, t, weighted=True, operators=op)
                   for op in (None, REFERENCE))
    assert tv(fast, exact) < 1e-6


def test_precision_is_named_or_refused():
    with pytest.raises(ValueError, match="precision must be 'mixed' or 'float64'"):
        OperatorSettings(precision="half")
    assert not semantic(float32=False).kernel.knn.float32_apply
    assert K.SemanticKNN(torch.randn(2000, 4, generator=torch.Generator().manual_seed(3)), K.SemanticSettings(k=8),
                         cache=False, progress=False).knn.float32_apply  # above DENSE_PRODUCTS: sparse products


def test_rows_at_many_times_share_one_series():
    """transposed_from_zero (b = 0): P_{0->t_j}^T v_j for columns at different times from one Poisson
    series equals one transition per time (both exact); a split whose K or pi depends on time is
    refused, and a mixture whose teleport column moves with time is not homogeneous."""
    from gdds.operators import transition, transposed_from_zero

    process = semantic(b=0.0, float32=False)
    split = process.kernel.teleport_split()
    assert split.homogeneous and not semantic(b=0.2).kernel.teleport_split().homogeneous
    v = torch.rand(80, 6, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    times = torch.tensor([0.0, 0.05, 0.3, 0.3, 0.8, 1.0], dtype=torch.float64)
    together = transposed_from_zero(split, SCHED, v, times)
    for j, t in enumerate(times.tolist()):
        alone = transition(process.kernel, SCHED, v[:, j:j + 1], 0.0, t, transpose=True, settings=REFERENCE)
        torch.testing.assert_close(together[:, j:j + 1], alone, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="do not depend on time"):
        transposed_from_zero(semantic(b=0.2).kernel.teleport_split(), SCHED, v, times)
    knn = K.SemanticKNN(torch.randn(80, 8, generator=torch.Generator().manual_seed(11)), K.SemanticSettings(k=16),
                        cache=False, progress=False).knn
    moving = K.Mixture([knn, K.Mask(80, 79), K.Uniform(80)],
                       [0.5, lambda t: 0.5 * torch.as_tensor(t, dtype=torch.float64), lambda t: 0.5 - 0.5 * t])
    assert moving.teleport_split().column_varies and not moving.teleport_split().homogeneous
    # Its pi is frozen per piece and refined, as a moving K is (2.3e-6 in L1 measured; before issue 23 a
    # time-homogeneous K meant one piece, pi frozen at its midpoint: 0.072).
    eye = torch.eye(80, 3, dtype=torch.float64)
    for transpose in (False, True):
        exact = transition(moving, SCHED, eye, 0.0, 0.9, transpose=transpose, settings=OperatorSettings(method="dense"))
        assert float((transition(moving, SCHED, eye, 0.0, 0.9, transpose=transpose) - exact).abs().sum(0).max()) < 1e-5


def test_a_law_shared_by_positions_goes_through_the_operators_once():
    """The Bayes-unigram baseline gives every position the same rho: P_{0->s} rho is taken once per distinct
    column, and the step equals g * P_{0->s} rho normalised, computed per position. Two different rows
    whose projections collide (0.5 e_0 + 0.5 e_2 and e_1 against an evenly spaced probe) are told apart
    by the entry-by-entry check, which then takes every column."""
    process = semantic(b=0.0, float32=False)
    m, s, t = 80, 0.5, 0.55
    g = torch.Generator().manual_seed(17)
    pi = torch.softmax(torch.randn(m, generator=g, dtype=torch.float64), 0)
    xt = torch.randint(0, m - 1, (24,), generator=g)
    calls = []
    transition = process.transition

    def counted(v, a, b, **kw):
        if not kw.get("transpose", False) and a == 0.0:
            calls.append(v.shape[1])
        return transition(v, a, b, **kw)

    process.transition = counted
    a, b, c = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64), torch.flip(pi, [0])
    a[[0, 2]], b[1] = 0.5, 1.0
    for rows, columns in ((pi.expand(24, m).clone(), 1), (torch.stack([pi, c] * 12), 2),
                          (torch.stack([a, b] * 12), 24)):
        calls.clear()
        step = reverse_step_probs(process, rows, xt, s, t, weighted=True)
        assert calls == [columns]
        gcol = transition(torch.eye(m, dtype=torch.float64)[:, xt], s, t, transpose=True)
        each = gcol * transition(rows.T.contiguous(), 0.0, s)
        torch.testing.assert_close(step, (each / each.sum(0)).T, rtol=1e-12, atol=1e-15)
