"""Runs and model folders saved before a default changed load as the models they were trained as.

A checkpoint stores its configuration as given (defaults left out) and the identity of its set-up
(:meth:`gdds.engine.build.Run.identity`), so a changed default would either refuse to load it or,
worse, rebuild a different model under the same name. Each change is written out here, read from the
saved identity (``docs/library.md``, "Defaults that changed"):

- issue 23: the semantic kernels' tempering ``b`` was 0.2 by default; it is now 0.0, the value of the
  paper's reference configuration. A saved run whose kernel said ``b=0.2`` without setting it gets
  ``process.kernel_args.b = 0.2``.
- issue 23: the ``forward`` parametrization used the one-jump surrogate of ``q_t``; it is now exact,
  and the surrogate is ``forward-surrogate``. A run saved as ``forward`` without the mark of the
  exact one (``"forward_likelihood": "exact"`` in its identity) is ``forward-surrogate``.
"""
from __future__ import annotations

import copy
import re
from typing import Any

from ..kernels.semantic_knn import DEFAULT_B
from .config import Config

SEMANTIC = ("semantic", "semantic-absorb")
EXACT_MARK = {"forward_likelihood": "exact"}  # in the identity of runs with the exact forward parametrization


def upgraded(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved identity with the former defaults of this module's docstring written out."""
    saved = copy.deepcopy(saved)
    process = saved.get("process") or {}
    args = process.get("kernel_args")
    if process.get("kernel") in SEMANTIC and args is not None and "b" not in args:
        found = re.search(r"\bb=([-+0-9.eE]+)", process.get("repr", ""))
        if found and float(found.group(1)) != DEFAULT_B:
            args["b"] = float(found.group(1))
    if saved.get("parametrization") == "forward" and saved.get("forward_likelihood") != "exact":
        saved["parametrization"] = "forward-surrogate"
    return saved


def as_saved(cfg: Config, saved: dict[str, Any]) -> Config:
    """``cfg`` (a saved run's configuration) with the settings its identity ``saved`` implies where a
    default has changed since."""
    then = upgraded(saved)
    out = Config.from_dict(cfg.to_dict())
    kernel_args = (then.get("process") or {}).get("kernel_args") or {}
    if "b" in kernel_args and "b" not in out.process.kernel_args:
        out.process.kernel_args = {**out.process.kernel_args, "b": kernel_args["b"]}
    if then.get("parametrization") == "forward-surrogate" and out.model.parametrization in ("auto", "forward"):
        out.model.parametrization = "forward-surrogate"
    return out
