"""Typed settings: :class:`gdds.OperatorSettings` of the transition operators. Every bad value is
refused where the settings are made, with a message that names the field and what it takes; the
defaults are the operators' defaults."""
import dataclasses

import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.operators import transition
from helpers import small_embeddings

SCHED = gdds.LogLinear(1e-3)


@pytest.mark.parametrize("field,value,message", [
    ("method", "magic", r"OperatorSettings.method must be one of 'auto', 'closed', 'dense', 'series'; got 'magic'"),
    ("tol", 0.0, r"OperatorSettings.tol is the Poisson tail mass left out: a number in \(0, 1\)"),
    ("tol", 1.5, r"OperatorSettings.tol .* got 1.5"),
    ("tol", "1e-12", r"OperatorSettings.tol .* got '1e-12'"),
    ("step", 0.0, r"OperatorSettings.step is the longest frozen piece in Lambda: a positive number, or None"),
    ("step", float("inf"), r"OperatorSettings.step .* got inf"),
    ("step", True, r"OperatorSettings.step .* got True"),
    ("precision", "half", r"OperatorSettings.precision must be 'mixed' or 'float64'; got 'half'"),
    ("block", 0, r"OperatorSettings.block is the columns multiplied at a time: a positive integer, or None"),
    ("block", 2.5, r"OperatorSettings.block .* got 2.5"),
])
def test_bad_operator_settings_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        OperatorSettings(**{field: value})


def test_operator_settings_are_frozen_keyword_only_and_typed():
    with pytest.raises(TypeError, match="richardson must be True or False"):
        OperatorSettings(richardson=1)
    with pytest.raises(TypeError):
        OperatorSettings("series")  # keyword-only: a positional method would read as any field
    settings = OperatorSettings(method="series", step=0.25)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.step = 0.5  # type: ignore[misc]
    assert settings.exact() == OperatorSettings(method="series", step=0.25, precision="float64")
    assert settings.precision == "mixed" and settings.mixed and not settings.exact().mixed


def test_default_settings_are_the_operators_defaults():
    """``OperatorSettings()`` is what the operators apply without settings; the float64 reference
    differs from it (the semantic kernel's kNN products are float32 by default) by float32 round-off."""
    defaults = OperatorSettings()
    assert (defaults.method, defaults.tol, defaults.step, defaults.richardson, defaults.precision,
            defaults.block) == ("auto", 1e-12, None, True, "mixed", None)
    kernel = K.SemanticKNN(small_embeddings(40, seed=3), k=6, bandwidth_k=3, b=0.2, schedule=SCHED, cache=False,
                           progress=False)
    kernel.knn.float32_apply = True
    v = torch.rand(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = transition(kernel, SCHED, v, 0.1, 0.9)
    assert torch.equal(plain, transition(kernel, SCHED, v, 0.1, 0.9, settings=defaults))
    exact = transition(kernel, SCHED, v, 0.1, 0.9, settings=defaults.exact())
    assert not torch.equal(plain, exact)
    torch.testing.assert_close(plain, exact, rtol=1e-5, atol=1e-9)
