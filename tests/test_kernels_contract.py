"""Contract suite every jump kernel must pass (docs/math.md section 3)."""
import pytest
import torch

from gdds import kernels as K
from helpers import all_subclasses, empirical, kernel_zoo, tv

M = 7
ZOO = kernel_zoo(M)
IDS = [name for name, _ in ZOO]
KERNELS = [k for _, k in ZOO]
TIMES = (0.0, 0.3, 0.8, 1.0)
DRAWS = 20_000


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_dense_form_is_column_stochastic(kernel):
    for t in TIMES:
        F = kernel.dense(t)
        assert F.shape == (M, M)
        assert (F >= 0).all()
        assert torch.allclose(F.sum(0), torch.ones(M, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_apply_and_transpose_match_the_matrix(kernel):
    v = torch.randn(M, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t in TIMES:
        F = kernel.dense(t)
        assert torch.allclose(kernel.apply(v, t), F @ v, atol=1e-12)
        assert torch.allclose(kernel.apply_T(v, t), F.T @ v, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_jumps_follow_the_columns(kernel):
    """Empirical jump law from every source token, at two times drawn in one call,
    matches column x of F_t within total variation 0.02 (20,000 draws each, fixed seed)."""
    g = torch.Generator().manual_seed(0)
    t1, t2 = 0.2, 0.9
    x = torch.arange(M).repeat_interleave(2 * DRAWS)
    t = torch.tensor([t1, t2], dtype=torch.float64).repeat(M * DRAWS)
    y = kernel.jump(x, t, g)
    assert y.dtype == torch.long and y.shape == x.shape
    y = y.reshape(M, DRAWS, 2)
    for j, tj in enumerate((t1, t2)):
        law = empirical(y[:, :, j], M)
        assert tv(law, kernel.dense(tj).T) < 0.02


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_stationary_is_invariant(kernel):
    for t in (0.5, 1.0):
        pi = kernel.stationary(t)
        assert pi.shape == (M,) and (pi >= 0).all()
        assert pi.sum().item() == pytest.approx(1.0, abs=1e-10)
        assert torch.allclose(kernel.dense(t) @ pi, pi, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_column_constant_flag_is_truthful(kernel):
    F = kernel.dense(0.4)
    same = torch.allclose(F, F[:, :1].expand_as(F), atol=1e-12)
    assert same == kernel.column_constant
    if kernel.column_constant:
        assert torch.allclose(kernel.pi(0.4), F[:, 0], atol=1e-12)
    else:
        with pytest.raises(TypeError, match="not column-constant"):
            kernel.pi(0.4)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_time_dependence_flag_is_truthful(kernel):
    varies = not torch.allclose(kernel.dense(0.1), kernel.dense(0.9), atol=1e-12)
    assert varies == kernel.time_dependent


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_to_device_keeps_results(kernel):
    v = torch.eye(M, dtype=torch.float64)
    before = kernel.apply(v, 0.5)
    assert kernel.to("cpu") is kernel
    assert torch.equal(kernel.apply(v, 0.5), before)


def test_every_kernel_class_and_registry_entry_is_under_contract():
    library = {cls for cls in all_subclasses(K.Kernel) if cls.__module__.startswith("gdds.")}
    assert library <= {type(k) for k in KERNELS}, library - {type(k) for k in KERNELS}
    assert {f"registry-{name}" for name in K.KERNELS.names()} <= set(IDS)


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_arrivals_are_the_rows_of_the_matrix(kernel):
    """``arrivals(x, t)`` gives ``F_t[x, .]`` (where a jump onto ``x`` came from), per position."""
    g = torch.Generator().manual_seed(8)
    x = torch.randint(0, M, (12,), generator=g)
    t = torch.tensor(TIMES, dtype=torch.float64).repeat(3)
    a = kernel.arrivals(x, t)
    rows = torch.zeros(12, M, dtype=torch.float64) + a.base[:, None]
    rows.index_put_((a.pos, a.src), a.prob, accumulate=True)
    reference = torch.stack([kernel.dense(float(t[i]))[x[i]] for i in range(12)])
    torch.testing.assert_close(rows, reference, atol=1e-12, rtol=0)
