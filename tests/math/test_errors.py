"""Every invalid input raises a typed error whose message names the problem."""
import pytest
import scipy.sparse
import torch

import gdds
from gdds import kernels as K
from gdds.operators import OperatorSettings, transition
from helpers import random_stochastic

SCHED = gdds.LogLinear()


def bad_columns():
    F = random_stochastic(4, 0)
    F[0, 2] += 0.1
    return F


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: K.Dense(bad_columns()), "column 2 sums to"),
        (lambda: K.Dense(-random_stochastic(4, 0)), "negative"),
        (lambda: K.Dense(torch.full((3, 3), float("nan"))), "NaN"),
        (lambda: K.Dense(torch.ones(3, 4) / 3), "square"),
        (lambda: K.Dense(lambda t: torch.ones(t.numel(), 3, 3)), "sum to 1"),
        (lambda: K.Sparse(bad_columns().to_sparse()), "column 2 sums to"),
        (lambda: K.Sparse(scipy.sparse.csr_matrix(-random_stochastic(4, 0).numpy())), "negative"),
        (lambda: K.Sparse(torch.eye(3)), "sparse tensor or scipy"),
        (lambda: K.Sparse(torch.ones(2, 3).to_sparse()), "square"),
        (lambda: K.Mask(5, 5), "mask_id"),
        (lambda: K.Mask(1, 0), "at least 2"),
        (lambda: K.Uniform(1), "at least 2"),
        (lambda: K.Uniform(3, exclude=[0, 1, 2]), "no token"),
        (lambda: K.Uniform(3, exclude=[3]), "excluded token ids"),
        (lambda: K.SemanticKNN(torch.randn(10, 3), K.SemanticSettings(k=8), exclude=[0, 1], cache=False),
         "excluded ids do not count"),
        (lambda: K.Hybrid(5, 0, 1.5), r"\[0, 1\]"),
        (lambda: K.Mixture([K.Uniform(4), K.Mask(4, 0)], [0.5, 0.6]), "sum to 1"),
        (lambda: K.Mixture([K.Uniform(4), K.Mask(5, 0)], [0.5, 0.5]), "vocabulary size"),
        (lambda: K.Mixture([K.Uniform(4)], [0.5, 0.5]), "one weight per kernel"),
        (lambda: K.Mixture([K.Uniform(4), K.Mask(4, 0)], [1.5, -0.5]), "non-negative"),
        (lambda: K.SemanticKNN(torch.randn(10, 3), K.SemanticSettings(k=10), cache=False),
         r"k must be in \[1, m - 1\]"),
        (lambda: K.SemanticKNN(torch.full((10, 3), float("nan")), K.SemanticSettings(k=3, bandwidth_k=3),
                               cache=False), "NaN"),
        (lambda: K.SemanticKNN(torch.randn(10), K.SemanticSettings(k=3, bandwidth_k=3), cache=False), r"\[m, d\]"),
        (lambda: K.SemanticKNN(torch.randn(10, 3), K.SemanticSettings(k=3, metric="manhattan"), cache=False), "metric"),
        (lambda: K.SemanticKNN(torch.randn(10, 3), K.SemanticSettings(k=3, bandwidth_k=5), cache=False), "bandwidth_k"),
        (lambda: K.SemanticKNN(torch.randn(10, 3), K.SemanticSettings(k=3, eps=0.0), cache=False), "eps"),
        (lambda: K.SemanticKNN(torch.zeros(10, 3), K.SemanticSettings(k=3, bandwidth_k=3, metric="cosine"),
                               cache=False), "all-zero"),
    ],
)
def test_invalid_kernels(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.fixture
def proc():
    return gdds.ForwardProcess(SCHED, K.Dense(random_stochastic(5, 1)))


@pytest.mark.parametrize(
    "x0,t,err,match",
    [
        (torch.tensor([[0, 5]]), 0.5, ValueError, r"token ids must lie in \[0, 5\)"),
        (torch.tensor([[-1, 2]]), 0.5, ValueError, r"token ids must lie in \[0, 5\)"),
        (torch.tensor([[0, 1]]), 1.2, ValueError, r"\[0, 1\]"),
        (torch.tensor([[0, 1]]), torch.tensor([-0.1]), ValueError, r"\[0, 1\]"),
        (torch.tensor([[0, 1]]), torch.tensor([0.1, 0.2]), ValueError, r"shape \[B\]"),
        (torch.tensor([0, 1]), 0.5, ValueError, r"shape \[B, L\]"),
        (torch.tensor([[0.0, 1.0]]), 0.5, TypeError, "integer tensor"),
    ],
)
def test_invalid_process_inputs(proc, x0, t, err, match):
    with pytest.raises(err, match=match):
        proc.noise(x0, t)
    with pytest.raises(err, match=match):
        proc.marginal(x0, t)


def test_invalid_operator_inputs(proc):
    v = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="s <= t"):
        proc.transition(v, 0.6, 0.2)
    with pytest.raises(ValueError, match=r"shape \[m, n\]"):
        proc.transition(torch.rand(4, 2), 0.0, 0.5)
    with pytest.raises(ValueError, match="method"):
        proc.transition(v, 0.0, 0.5, settings=OperatorSettings(method="magic"))
    with pytest.raises(ValueError, match="column-constant"):
        transition(proc.kernel, SCHED, v, 0.0, 0.5, settings=OperatorSettings(method="closed"))
    with pytest.raises(ValueError, match="method"):
        proc.noise(torch.zeros(1, 2, dtype=torch.long), 0.5, method="magic")
    with pytest.raises(ValueError, match="refusing"):
        K.Uniform(5000).dense(0.0)


def test_process_type_checks_and_schedule_mismatch_warning():
    with pytest.raises(TypeError, match="Schedule"):
        gdds.ForwardProcess("loglinear", K.Uniform(4))
    with pytest.raises(TypeError, match="kernel"):
        gdds.ForwardProcess(SCHED, torch.eye(4))
    kern = K.SemanticKNN(torch.randn(12, 3), K.SemanticSettings(k=4, bandwidth_k=3), schedule=gdds.LogLinear(1e-3),
                         cache=False, progress=False)
    with pytest.warns(UserWarning, match="same schedule"):
        gdds.ForwardProcess(gdds.Cosine(), kern)
