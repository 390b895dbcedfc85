"""Contract suite every jump kernel must pass (docs/math.md section 3); the draws and the device
move run on the test device (``helpers.DEVICE``)."""
import contextlib

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


@contextlib.contextmanager
def on(kernel, device):
    """``kernel`` moved to ``device`` for the block, back on the CPU after it (the zoo is shared)."""
    try:
        yield kernel.to(device)
    finally:
        kernel.to("cpu")


@pytest.mark.parametrize("kernel", KERNELS, ids=IDS)
def test_jumps_follow_the_columns(kernel, device):
    """Empirical jump law from every source token, at two times drawn in one call on the test
    device, matches column x of F_t within total variation 0.02 (20,000 draws each, fixed seed)."""
    g = torch.Generator(device=device).manual_seed(0)
    t1, t2 = 0.2, 0.9
    x = torch.arange(M, device=device).repeat_interleave(2 * DRAWS)
    t = torch.tensor([t1, t2], dtype=torch.float64, device=device).repeat(M * DRAWS)
    with on(kernel, device):
        y = kernel.jump(x, t, g)
    assert y.dtype == torch.long and y.shape == x.shape and y.device.type == device.type
    y = y.cpu().reshape(M, DRAWS, 2)
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
def test_to_device_keeps_results(kernel, device):
    """On the test device the operators and arrivals give the CPU's values, on that device."""
    v = torch.eye(M, dtype=torch.float64)
    x, t = torch.arange(M), torch.full((M,), 0.5, dtype=torch.float64)
    before, rows = kernel.apply(v, 0.5), kernel.arrivals(x, t)
    with on(kernel, device) as moved:
        assert moved is kernel and kernel.device.type == device.type
        after, after_T = kernel.apply(v.to(device), 0.5), kernel.apply_T(v.to(device), 0.5)
        moved_rows = kernel.arrivals(x.to(device), t.to(device))
    assert after.device.type == after_T.device.type == moved_rows.base.device.type == device.type
    torch.testing.assert_close(after.cpu(), before, atol=1e-12, rtol=0)
    torch.testing.assert_close(after_T.cpu(), before.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(moved_rows.prob.cpu(), rows.prob, atol=1e-12, rtol=0)


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


@pytest.mark.parametrize("kernel", [k for k in KERNELS if isinstance(k, K.Mixture)],
                         ids=[n for n, k in ZOO if isinstance(k, K.Mixture)])
def test_mixture_jumps_without_gathering_follow_the_columns(kernel, monkeypatch):
    """The GPU path of Mixture.jump (every component jumps, the chosen one is kept: no host
    synchronisation) forced on the CPU gives the same law: TV 0.02 from F_t's columns."""
    from gdds.kernels import mixture

    monkeypatch.setattr(mixture, "GATHER_DEVICES", set())
    g = torch.Generator().manual_seed(3)
    x = torch.arange(M).repeat_interleave(DRAWS)
    y = kernel.jump(x, torch.full((M * DRAWS,), 0.6, dtype=torch.float64), g).reshape(M, DRAWS)
    assert tv(empirical(y, M), kernel.dense(0.6).T) < 0.02
