"""Contract suite every schedule must pass (docs/math.md section 2)."""
import math

import pytest
import torch

import gdds
from gdds.schedules import Schedule
from helpers import all_subclasses


class Quadratic(Schedule):
    """A user schedule that defines only Lambda and beta (generic inverse)."""

    def _Lambda(self, t):
        return 3.0 * t * t + 0.5 * t

    def _beta(self, t):
        return 6.0 * t + 0.5


SCHEDULES = [
    gdds.LogLinear(1e-3),
    gdds.LogLinear(0.05),
    gdds.Linear(0.1, 13.0),
    gdds.Linear(2.0, 2.0),
    gdds.Cosine(1e-3),
    gdds.Exponential(5.0),
    gdds.Geometric(1e-4, 20.0),
    Quadratic(),
]
IDS = [repr(s) for s in SCHEDULES]
GRID = torch.linspace(0, 1, 2001, dtype=torch.float64)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_starts_at_data_and_decreases(sched):
    alpha = sched.alpha(GRID)
    assert alpha[0].item() == pytest.approx(1.0, abs=1e-15)
    assert sched.Lambda(0.0).item() == pytest.approx(0.0, abs=1e-15)
    assert (alpha[1:] < alpha[:-1]).all()
    assert (sched.beta(GRID[1:]) > 0).all() and sched.beta(0.0) >= 0
    assert sched.Lambda_max == pytest.approx(sched.Lambda(1.0).item(), rel=1e-14)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_beta_is_derivative_of_Lambda(sched):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    numeric = (sched.Lambda(t + h) - sched.Lambda(t - h)) / (2 * h)
    assert torch.allclose(numeric, sched.beta(t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_inverse_is_exact(sched):
    t = torch.rand(5000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.cat([t, torch.tensor([0.0, 1.0, 1e-9, 1 - 1e-9], dtype=torch.float64)])
    assert (sched.Lambda_inv(sched.Lambda(t)) - t).abs().max() < 1e-9
    # The generic root-finder agrees with every closed form.
    assert (Schedule._Lambda_inv(sched, sched.Lambda(t)) - t).abs().max() < 1e-9


@pytest.mark.parametrize("sched", SCHEDULES, ids=IDS)
def test_out_of_range_inputs_raise(sched):
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            sched.alpha(bad)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            sched.beta(torch.tensor([0.5, bad]))
    with pytest.raises(ValueError, match="Lambda_inv"):
        sched.Lambda_inv(sched.Lambda_max * 1.01 + 1e-6)
    with pytest.raises(ValueError, match="Lambda_inv"):
        sched.Lambda_inv(-1.0)


def test_closed_forms():
    assert gdds.LogLinear(1e-3).alpha(1.0).item() == pytest.approx(1e-3, rel=1e-12)
    assert gdds.Cosine(1e-3).alpha(1.0).item() == pytest.approx(1e-3, rel=1e-9)
    assert gdds.Exponential(2.0).alpha(0.5).item() == pytest.approx(math.exp(-1.0), rel=1e-14)
    assert gdds.Linear(1.0, 3.0).Lambda(1.0).item() == pytest.approx(2.0, rel=1e-14)
    assert gdds.Geometric(1e-4, 20.0).Lambda(1.0).item() == pytest.approx(20.0 - 1e-4, rel=1e-14)


@pytest.mark.parametrize(
    "make", [lambda: gdds.LogLinear(0.0), lambda: gdds.Cosine(1.0), lambda: gdds.Exponential(-1.0),
             lambda: gdds.Geometric(1.0, 0.5), lambda: gdds.Linear(-1.0, 2.0)]
)
def test_bad_parameters_raise(make):
    with pytest.raises(ValueError):
        make()


def test_every_schedule_class_and_registry_entry_is_under_contract():
    classes = {type(s) for s in SCHEDULES}
    assert {gdds.SCHEDULES.get(name) for name in gdds.SCHEDULES.names()} <= classes
    library = {cls for cls in all_subclasses(Schedule) if cls.__module__.startswith("gdds.")}
    assert {cls for cls in library if not cls.__name__.startswith("_")} <= classes
