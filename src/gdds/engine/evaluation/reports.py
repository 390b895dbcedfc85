"""The reports of an evaluation, as dataclasses: :class:`NLLReport` (a bound or an exact NLL,
per token), :class:`PairedDifference` and :class:`Likelihood` (a model's figure beside the
no-training baseline on the same blocks and draws), :class:`SnapshotReport`,
:class:`SampleReport` (with its :class:`MauveEstimate`) and :class:`EvalReport`, the whole of
``gdds eval``. ``to_dict`` gives the JSON layout of ``eval.json``; ``from_dict`` reads it back
(``gdds compare`` reuses saved evaluations)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...step_grids import fitted_grid


@dataclass
class PerSequence:
    """The per-sequence values behind a figure: the validation ``blocks`` (row ids), each one's
    estimate in ``nats`` and its ``tokens``. Two figures on the same blocks can be paired
    (:func:`gdds.engine.evaluation.paired.difference`)."""

    blocks: list[int]
    nats: list[float]
    tokens: list[int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NLLReport:
    """Negative log-likelihood per token over ``sequences`` sequences: an upper bound (the
    ``steps``-step bound, or the continuous-time bound estimated with ``samples_of_t`` draws
    of ``t`` per sequence) or, with ``exact``, an exact NLL. ``standard_error`` is the
    Monte-Carlo standard error of ``nats_per_token``."""

    metric: str
    nats_per_token: float
    standard_error: float
    tokens: int
    sequences: int
    exact: bool = False
    steps: int | None = None
    samples_of_t: int | None = None
    bits_per_character: float | None = None
    per_sequence: PerSequence | None = None

    @property
    def perplexity(self) -> float:
        """``exp(nats_per_token)``: the perplexity, or an upper bound on it."""
        return math.exp(self.nats_per_token)

    def to_dict(self) -> dict[str, Any]:
        """Keys carry ``_upper_bound`` unless the figure is exact."""
        kind = "" if self.exact else "_upper_bound"
        out: dict[str, Any] = {"metric": self.metric, "nats_per_token": self.nats_per_token,
                               "standard_error": self.standard_error, f"perplexity{kind}": self.perplexity,
                               "tokens": self.tokens, "sequences": self.sequences}
        if self.samples_of_t is not None:
            out["samples_of_t"] = self.samples_of_t
        else:
            out["steps"] = self.steps
        if self.bits_per_character is not None:
            out[f"bits_per_character{kind}"] = self.bits_per_character
        if self.per_sequence is not None:
            out["per_sequence"] = self.per_sequence.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NLLReport:
        exact = "perplexity" in d
        kind = "" if exact else "_upper_bound"
        return cls(d["metric"], d["nats_per_token"], d["standard_error"], d["tokens"], d["sequences"], exact,
                   d.get("steps"), d.get("samples_of_t"), d.get(f"bits_per_character{kind}"),
                   PerSequence(**d["per_sequence"]) if "per_sequence" in d else None)


@dataclass
class PairedDifference:
    """Model minus baseline, per token, from per-sequence differences on the same blocks and
    the same draws; ``standard_error`` is the Monte-Carlo standard error of the difference."""

    nats_per_token: float
    standard_error: float
    sequences: int
    baseline: str

    def to_dict(self) -> dict[str, Any]:
        return {"nats_per_token": self.nats_per_token, "standard_error": self.standard_error,
                "sequences": self.sequences, "baseline": self.baseline}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairedDifference:
        return cls(d["nats_per_token"], d["standard_error"], d["sequences"], d["baseline"])


@dataclass
class Likelihood:
    """A model's NLL figure (``model``: its bound, or its exact NLL) beside the baseline that
    needs no training (``baseline``: the Bayes-unigram denoiser's bound under the same process,
    or for an exact model the unigram model), the unigram model's exact NLL, and the paired
    difference ``model - baseline``."""

    model: NLLReport
    baseline: NLLReport
    unigram: NLLReport
    difference: PairedDifference

    def to_dict(self) -> dict[str, Any]:
        return {"nll" if self.model.exact else "bound": self.model.to_dict(), "baseline": self.baseline.to_dict(),
                "unigram": self.unigram.to_dict(), "paired_difference": self.difference.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Likelihood:
        return cls(NLLReport.from_dict(d["nll"] if "nll" in d else d["bound"]), NLLReport.from_dict(d["baseline"]),
                   NLLReport.from_dict(d["unigram"]), PairedDifference.from_dict(d["paired_difference"]))


@dataclass
class KLProfile:
    """Where a model pays and where information is revealed: every term of the ``steps``-step
    bound in nats per token, for the model and the no-training baseline on the same
    ``sequences`` blocks and draws (one draw of each term). ``times[k - 1]`` is ``t_k``, the end
    of step ``k``; ``model[0]``/``baseline[0]`` is the prior term, ``[k]`` the term of step ``k``
    (``k = 1``: the reconstruction)."""

    steps: int
    times: list[float]
    model: list[float]
    baseline: list[float]
    sequences: int
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "times": self.times, "model": self.model, "baseline": self.baseline,
                "sequences": self.sequences, "tokens": self.tokens,
                "metric": "terms of the T-step bound, nats per token (index 0: prior; k: step ending at t_k)"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KLProfile:
        return cls(d["steps"], d["times"], d["model"], d["baseline"], d["sequences"], d["tokens"])

    def fitted_grid(self, steps: int) -> list[float]:
        """The ``steps``-step grid fitted to the model's terms (:func:`gdds.step_grids.fitted_grid`): each step
        pays about the same share of the profile's nats (the prior term, which no grid changes, left out)."""
        return fitted_grid(self.times, self.model[1:], steps)

    @classmethod
    def of_eval(cls, path: Path) -> KLProfile:
        """The profile saved in an ``eval.json`` of ``gdds eval`` (``ValueError`` saying how to get one)."""
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the evaluation {path}: {exc}") from exc
        if not isinstance(saved, dict) or "kl_profile" not in saved:
            raise ValueError(f"{path} holds no per-step profile of the bound; run gdds eval with --profile-steps "
                             "(e.g. 32) and --profile-sequences above 0")
        return cls.from_dict(saved["kl_profile"])


@dataclass
class SnapshotReport:
    """Mean snapshot cross-entropy (``metric`` says: not a likelihood)."""

    metric: str
    nats_per_token: float
    tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "nats_per_token": self.nats_per_token, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotReport:
        return cls(d["metric"], d["nats_per_token"], d["tokens"])


@dataclass(frozen=True)
class MauveEstimate:
    """MAUVE (:mod:`gdds.engine.evaluation.mauve_score`) of ``samples`` samples against ``references``
    held-out texts (``metric`` names the featurizer), with its bootstrap ``standard_error``
    (``se_method``) and the settings it ran with. An estimate of a divergence-frontier summary in
    (0, 1], not a likelihood."""

    metric: str
    featurizer: str
    mauve: float
    standard_error: float
    references: int
    samples: int
    num_buckets: int
    se_method: str
    settings: dict[str, Any]

    def value(self) -> str:
        """The estimate with its standard error, as every report prints it."""
        return f"{self.mauve:.3f} ± {self.standard_error:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MauveEstimate:
        return cls(**d)


@dataclass
class SampleReport:
    """Samples from one sampler setting (``steps``: ``None`` for ancestral sampling; nucleus
    ``top_p``, 1 for the model's own law), their entropies (nats, exact for the samples given)
    and, with a judge, their generative perplexity (the judge's record; ``more_judges``: the other
    judges' records of the same samples; ``mauve``: their MAUVE against held-out text, when asked for)."""

    steps: int | None
    sampler: str
    precision: str
    unigram_entropy: float
    per_sample_entropy: float
    texts: list[str]
    generative_perplexity: dict[str, Any] | None = None
    top_p: float = 1.0
    more_judges: list[dict[str, Any]] = field(default_factory=list)
    mauve: MauveEstimate | None = None

    def judged(self) -> list[dict[str, Any]]:
        """Every judge's record of these samples, the main judge first."""
        return ([] if self.generative_perplexity is None else [self.generative_perplexity]) + self.more_judges

    def to_dict(self) -> dict[str, Any]:
        out = {"steps": self.steps, "sampler": self.sampler, "precision": self.precision, "top_p": self.top_p,
               "unigram_entropy": self.unigram_entropy, "per_sample_entropy": self.per_sample_entropy,
               "texts": self.texts}
        if self.generative_perplexity is not None:
            out["generative_perplexity"] = self.generative_perplexity
        if self.more_judges:
            out["more_judges"] = self.more_judges
        if self.mauve is not None:
            out["mauve"] = self.mauve.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleReport:
        return cls(d["steps"], d["sampler"], d["precision"], d["unigram_entropy"], d["per_sample_entropy"],
                   d["texts"], d.get("generative_perplexity"), d.get("top_p", 1.0), d.get("more_judges", []),
                   MauveEstimate.from_dict(d["mauve"]) if "mauve" in d else None)


PAPER_METRIC = ("paper metric: unweighted denoising CE with the true jump mask carried into the model's output "
                "(reference implementation's validation perplexity for GDDS; not a likelihood)")
MDLM_PAPER_METRIC = ("paper metric for MDLM: MDLM's ELBO-weighted masked CE at one t ~ U(1e-3, 1) per sequence "
                     "(reference implementation's validation perplexity for MDLM; its continuous-time bound without "
                     "the prior term and t < 1e-3, one draw: not a bound)")


@dataclass(frozen=True)
class PaperMetric:
    """The paper's reported figure on ``sequences`` blocks (:mod:`gdds.engine.evaluation.paper_metric`; ``metric``
    says which of the reference's figures): not a likelihood; ``denoising_nats_per_token`` is the
    figure per jumped position (unweighted)."""

    metric: str
    nats_per_token: float
    perplexity: float
    denoising_nats_per_token: float
    tokens: int
    jumped: int
    sequences: int
    grid: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PaperMetric:
        return cls(**d)


@dataclass
class EvalReport:
    """Everything ``gdds eval`` measures on one checkpoint. ``likelihood`` is the bound of the
    sampled chain (or the exact NLL of an autoregressive model) beside its no-training
    baseline; ``snapshot_ce`` and ``continuous_bound`` are there when they apply; ``paper_metric`` when
    asked for and reproduced for the method, else ``paper_metric_absent`` says why."""

    checkpoint: str
    weights: str
    method: str
    parameters: int
    likelihood: Likelihood | None = None
    snapshot_ce: SnapshotReport | None = None
    continuous_bound: NLLReport | None = None
    samples: list[SampleReport] = field(default_factory=list)
    zero_shot: dict[str, Likelihood] = field(default_factory=dict)
    kl_profile: KLProfile | None = None
    t_sweep: list[NLLReport] = field(default_factory=list)
    paper_metric: PaperMetric | None = None
    data_entropy: float | None = None  # unigram entropy of as many validation blocks as samples (same length)
    paper_metric_absent: str | None = None

    def own_law_samples(self) -> SampleReport:
        """The samples of the model's own law (``top_p = 1``) at the largest sampling setting evaluated."""
        own = [r for r in self.samples if r.top_p == 1]
        return own[-1] if own else self.samples[-1]

    def nucleus_sweep(self) -> list[SampleReport]:
        """The samples at :meth:`own_law_samples`'s step count, one per nucleus setting, by entropy."""
        steps = self.own_law_samples().steps
        return sorted((r for r in self.samples if r.steps == steps), key=lambda r: r.unigram_entropy)

    def valid(self) -> dict[str, Any]:
        """The ``valid`` section of ``eval.json``: ``nll`` (exact) or ``bound``, then ``baseline``,
        ``unigram``, ``paired_difference``, and ``snapshot_ce``, ``continuous_bound`` if measured."""
        out = self.likelihood.to_dict()
        if self.snapshot_ce is not None:
            out["snapshot_ce"] = self.snapshot_ce.to_dict()
        if self.continuous_bound is not None:
            out["continuous_bound"] = self.continuous_bound.to_dict()
        if self.paper_metric is not None:
            out["paper_metric"] = self.paper_metric.to_dict()
        elif self.paper_metric_absent is not None:
            out["paper_metric"] = {"not_computed": self.paper_metric_absent}
        if self.t_sweep:
            out["t_sweep"] = {"continuous_time_bound": "diverges (the model does not copy tokens that did not move)",
                              "bounds": [r.to_dict() for r in self.t_sweep]}
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {"checkpoint": self.checkpoint, "weights": self.weights, "method": self.method,
               "parameters": self.parameters, "valid": self.valid(),
               "samples": [row.to_dict() for row in self.samples],
               "zero_shot": {name: r.to_dict() for name, r in self.zero_shot.items()}}
        if self.kl_profile is not None:
            out["kl_profile"] = self.kl_profile.to_dict()
        if self.data_entropy is not None:
            out["data_entropy"] = {"unigram_entropy": self.data_entropy,
                                   "what": "unigram entropy of as many validation blocks as samples, same length"}
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        v = d["valid"]
        pm = v.get("paper_metric", {})
        return cls(d["checkpoint"], d["weights"], d["method"], d["parameters"], Likelihood.from_dict(v),
                   SnapshotReport.from_dict(v["snapshot_ce"]) if "snapshot_ce" in v else None,
                   NLLReport.from_dict(v["continuous_bound"]) if "continuous_bound" in v else None,
                   [SampleReport.from_dict(r) for r in d["samples"]],
                   {name: Likelihood.from_dict(r) for name, r in d["zero_shot"].items()},
                   KLProfile.from_dict(d["kl_profile"]) if "kl_profile" in d else None,
                   [NLLReport.from_dict(r) for r in v.get("t_sweep", {}).get("bounds", [])],
                   PaperMetric.from_dict(pm) if pm and "not_computed" not in pm else None,
                   d["data_entropy"]["unigram_entropy"] if "data_entropy" in d else None, pm.get("not_computed"))
