"""Typed settings: :class:`gdds.OperatorSettings` of the transition operators and
:class:`gdds.kernels.SemanticSettings` of the semantic kernel. Every bad value is refused where the
settings are made, with a message that names the field and what it takes; the defaults are the
operators' and the paper's; a semantic kernel keeps the identity (``repr``, which a run's identity
holds) and the kNN cache file it had when it was built from keywords."""
import dataclasses

import pytest
import torch

import gdds
from gdds import OperatorSettings
from gdds import kernels as K
from gdds.kernels import knn as knn_module
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
            defaults.block) == ("auto", 1e-12, None, True, "mixed", 64)
    kernel = K.SemanticKNN(small_embeddings(40, seed=3), K.SemanticSettings(k=6, bandwidth_k=3, b=0.2), schedule=SCHED,
                           cache=False, progress=False)
    kernel.knn.float32_apply = True
    v = torch.rand(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    plain = transition(kernel, SCHED, v, 0.1, 0.9)
    assert torch.equal(plain, transition(kernel, SCHED, v, 0.1, 0.9, settings=defaults))
    exact = transition(kernel, SCHED, v, 0.1, 0.9, settings=defaults.exact())
    assert not torch.equal(plain, exact)
    torch.testing.assert_close(plain, exact, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("fields,message", [
    (dict(k=0), r"k must be in \[1, m - 1\] .*got 0"),
    (dict(k=8.0), r"k must be in .*got 8.0"),
    (dict(metric="manhattan"), r"metric must be one of \('gaussian', 'cosine'\), got 'manhattan'"),
    (dict(eps=0.0), r"eps must be positive \(the affinity's temperature\), got 0.0"),
    (dict(k=5), r"bandwidth_k must be in \[1, k\] = \[1, 5\], got 7"),
    (dict(bandwidth=-1.0), r"bandwidth must be positive \(a fixed bandwidth\), or None, got -1.0"),
    (dict(gamma=float("nan")), r"gamma must be a finite number, got nan"),
    (dict(lambda_min=1.5), r"lambda_min must be in \[0, 1\], got 1.5"),
    (dict(slope=0.0), r"slope must be a finite non-zero number, got 0.0"),
    (dict(teleport="linear"), r"teleport must be one of sigmoid, schedule, got 'linear'"),
    (dict(neighbours=1.0), r"neighbours must be in \(1, k\) = \(1, 64\)"),
    (dict(teleport_to="nowhere"), r"teleport_to must be 'uniform' or 'mask', got 'nowhere'"),
])
def test_bad_semantic_settings_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        K.SemanticSettings(**fields)


def test_the_kernel_checks_what_its_settings_cannot_know():
    emb = small_embeddings(12, seed=1)
    with pytest.raises(TypeError, match="settings must be a SemanticSettings, got dict"):
        K.SemanticKNN(emb, {"k": 4}, cache=False, progress=False)
    with pytest.raises(ValueError, match="needs the mask_id exactly when it is 'mask'"):
        K.SemanticKNN(emb, K.SemanticSettings(k=4, bandwidth_k=3, teleport_to="mask"), cache=False, progress=False)
    with pytest.raises(ValueError, match="needs the mask_id exactly when it is 'mask'"):
        K.SemanticKNN(emb, K.SemanticSettings(k=4, bandwidth_k=3), mask_id=11, cache=False, progress=False)
    with pytest.raises(ValueError, match=r"k must be in \[1, m - 1\] = \[1, 11\]"):  # the vocabulary's limit
        K.SemanticKNN(emb, K.SemanticSettings(k=12), cache=False, progress=False)


# The reprs and kNN cache keys of the keyword-built kernel (before SemanticSettings): a run's identity holds
# the repr, the cache folder the graph files.
EMB = ((torch.arange(120) * 7 % 11) - 5).float().reshape(30, 4) / 4
CACHE_KEYS = {"gaussian": "0c3f2f2faeccfa3d365ff22e015414070be1658f",
              "cosine": "9a5eb7da19419dbe0bb254453ce286c877f0fd79"}
FIELDS = dict(k=8, b=0.2, eps=0.05, bandwidth_k=3, gamma=0.5, lambda_min=0.02, slope=8, midpoint=0.5)
REPRS = [
    ({}, "k=8, metric='gaussian', eps=0.01, bandwidth_k=7, bandwidth=None, gamma=0.0, b=0.0, lambda_min=0.01, "
         "slope=10.0, midpoint=0.6, excluded=2"),
    (FIELDS, "k=8, metric='gaussian', eps=0.05, bandwidth_k=3, bandwidth=None, gamma=0.5, b=0.2, "
             "lambda_min=0.02, slope=8, midpoint=0.5, excluded=2"),
    ({"metric": "cosine", "bandwidth": 0.7}, "k=8, metric='cosine', eps=0.01, bandwidth_k=7, bandwidth=0.7, "
                                             "gamma=0.0, b=0.0, lambda_min=0.01, slope=10.0, midpoint=0.6, excluded=2"),
    ({**FIELDS, "teleport": "schedule", "teleport_to": "mask"},
     "k=8, metric='gaussian', eps=0.05, bandwidth_k=3, bandwidth=None, gamma=0.5, b=0.2, lambda_min=0.02, slope=8, "
     "midpoint=0.5, teleport='schedule', neighbours=None, teleport_to='mask', mask_id=29, excluded=2"),
]


@pytest.mark.parametrize("fields,expected", REPRS)
def test_a_semantic_kernel_keeps_its_identity_and_its_cache(fields, expected, tmp_path, monkeypatch):
    settings = K.SemanticSettings(**{"k": 8, **fields})
    mask_id = 29 if settings.teleport_to == "mask" else None
    kernel = K.SemanticKNN(EMB, settings, mask_id=mask_id, schedule=SCHED, exclude=[0, 29], cache_dir=tmp_path,
                           progress=False)
    assert repr(kernel) == f"SemanticKNN(m=30, {expected}, schedule=LogLinear(eps=0.001))"
    key = CACHE_KEYS[settings.metric]
    assert [p.name for p in tmp_path.iterdir()] == [f"knn-{key}.pt"]

    def rebuilt(*args, **kwargs):
        raise AssertionError("the cached kNN graph was not found")

    monkeypatch.setattr(knn_module, "knn_graph", rebuilt)  # a graph cached before loads, not rebuilt
    again = K.SemanticKNN(EMB, settings, mask_id=mask_id, schedule=SCHED, exclude=[0, 29], cache_dir=tmp_path,
                          progress=False)
    assert repr(again) == repr(kernel) and torch.equal(again.knn.neighbours, kernel.knn.neighbours)


def test_calibrated_eps_is_the_one_named():
    kernel = K.SemanticKNN(EMB, K.SemanticSettings(k=8, neighbours=3.0), schedule=SCHED, cache=False, progress=False)
    assert kernel.settings.eps == 0.01 and kernel.eps != 0.01
    assert f"eps={kernel.eps!r}, " in repr(kernel) and "teleport='sigmoid', neighbours=3.0, excluded=0" in repr(kernel)
