"""Evaluation of a trained run: the honest bound (or an autoregressive model's exact NLL), the
snapshot CE (labelled, not a likelihood), the continuous-time bound where it applies, samples
from the model's own sampler with their entropy and a judge's generative perplexity, and
zero-shot bounds on other corpora (``docs/math.md`` section 8).

One :class:`EvalSettings` holds the settings; the evaluators return report dataclasses
(:mod:`gdds.engine.evaluation.reports`). Writing them as JSON, markdown and figures is the command
line's job (:mod:`gdds.cli.render`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...baseline import bayes_unigram, unigram_law, unigram_nll
from ...categorical import Decoding
from ...data import TOKENIZERS, Blocks
from ...likelihood import bound_terms, continuous_bound, nll_bound, paired_difference, summarize, term_probs
from ...objectives import SNAPSHOT_LABEL, snapshot_cross_entropy, snapshot_inputs
from ...samplers import CAUSAL
from ...sampling import time_grid, with_context
from ..build import LoadedRun
from ..corpus import zero_shot_blocks
from .entropy import per_sample_entropy, unigram_entropy
from .generation import generate
from .judge import Judge
from .judge_conventions import GDDS, MDLM, check_convention
from .mauve_score import MauveSettings, mauve_of_samples, reference_texts
from .paper_metric import NoReferenceFigure, paper_metric, reference_figure
from .reports import (
    EvalReport,
    KLProfile,
    Likelihood,
    NLLReport,
    PairedDifference,
    PerSequence,
    SampleReport,
    SnapshotReport,
)

CONTINUOUS_SAMPLES = 4  # draws of t per sequence in the continuous-time bound
SWEEP_STEPS = (32, 128, 512)  # T of the bounds shown where the continuous-time bound diverges
BOUND_METRIC = "NLL upper bound ({steps}-step ELBO of the sampled chain)"
BLOCK_METRIC = ", block diffusion, blocks of {block_size} tokens (a sum of block bounds given the blocks before)"
CONTINUOUS_METRIC = "NLL upper bound of the continuous-time reverse CTMC (the T -> infinity limit of the chain)"
BASELINE_METRIC = "no-training baseline: NLL upper bound of the Bayes-unigram denoiser ({steps}-step ELBO)"
UNIGRAM_METRIC = "exact NLL of the unigram model (add-one counts of the training split)"


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """What ``gdds eval`` and ``gdds compare`` measure: the bound's ``steps`` (T) on the first
    ``sequences`` validation blocks, ``num_samples`` samples at each of ``sample_steps`` and each
    nucleus ``top_p`` (1: the model's own law; a sweep traces generative perplexity against entropy)
    (``sample_length`` tokens, default the training length), the ``judge`` of generative
    perplexity (and ``more_judges`` scoring the same samples) under the ``judge_convention``
    (:mod:`gdds.engine.evaluation.judge_conventions`), ``zero_shot`` corpora, and the
    ``seed`` of every draw; ``mauve``: also MAUVE of each sample set against as many held-out texts
    (:mod:`gdds.engine.evaluation.mauve_score`; slow, so off by default)."""

    steps: int = 64
    sequences: int = 32
    sample_steps: tuple[int, ...] = (16, 64)
    num_samples: int = 8
    judge: str | None = None
    zero_shot: tuple[str, ...] = ()
    seed: int = 0
    sample_length: int | None = None
    profile_steps: int = 16
    profile_sequences: int = 2
    paper_metric: bool = False  # also the paper's figure (evaluation.paper_metric; not a likelihood)
    all_terms: bool = False  # the valid bound with all T terms per sequence (T network calls each), not one drawn
    importance_terms: bool = False  # draw the bound's term from the baseline's profile (importance sampling)
    paper_metric_grid: int | None = None  # snap its t to a grid of T steps
    top_p: tuple[float, ...] = (1.0,)
    more_judges: tuple[str, ...] = ()
    mauve: MauveSettings | None = None
    judge_convention: str = GDDS  # gdds's sliding window, or MDLM/Duo's chunks of texts cut at the sample length

    def __post_init__(self) -> None:
        check_convention(self.judge_convention)
        for name in ("sample_steps", "zero_shot", "top_p", "more_judges"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.top_p or not all(0 < p <= 1 for p in self.top_p):
            raise ValueError(f"every nucleus top_p must lie in (0, 1]; got {list(self.top_p)}")
        if self.steps < 1 or self.sequences < 2 or not self.sample_steps or min(self.sample_steps) < 1 \
                or self.num_samples < 1:
            raise ValueError("the bound's steps, the sample steps and the number of samples must be >= 1 and "
                             "the sequences >= 2 (a standard error needs two)")
        if self.sample_length is not None and self.sample_length < 1:
            raise ValueError("the sample length must be >= 1")
        if self.profile_steps < 0 or self.profile_sequences < 0 or self.profile_steps == 1:
            raise ValueError("the profile's steps (0: no profile, else >= 2) and sequences must be >= 0")
        if self.paper_metric_grid is not None and self.paper_metric_grid < 1:
            raise ValueError("the paper metric's grid must have at least 1 step")
        for name in self.zero_shot:
            if "=" in name:
                raise ValueError(f"zero-shot corpus {name!r} looks like an override: put overrides before "
                                 "--zero-shot or end the list with --")
        if self.mauve is not None:
            self.mauve.check(self.mauve_references, self.num_samples)

    @property
    def mauve_references(self) -> int:
        """How many held-out texts MAUVE compares the samples with (default as many as samples)."""
        return self.num_samples if self.mauve is None or self.mauve.references is None else self.mauve.references

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


ESTIMATOR_SEEDS = {"blocks": 0, "bound": 1, "snapshot": 2, "continuous": 3, "samples": 4, "profile": 5, "paper": 6,
                   "pilot": 7}
PILOT_SEQUENCES = 8


def estimator_seed(seed: int, estimator: str) -> int:
    """Each estimator draws its own randomness: a seed per ``(seed, estimator)``. Every model evaluated
    with the same ``seed`` gets the same blocks and draws (``gdds compare`` pairs them on that)."""
    return 1000 * seed + ESTIMATOR_SEEDS[estimator]


def estimator_generator(loaded: LoadedRun, seed: int, estimator: str) -> torch.Generator:
    """The estimator's own generator (:func:`estimator_seed`), on the run's device."""
    return torch.Generator(device=loaded.device).manual_seed(estimator_seed(seed, estimator))


def eval_rows(blocks: Blocks, sequences: int, seed: int) -> np.ndarray:
    """``sequences`` blocks drawn without replacement across the whole split (sorted, seeded)."""
    n = min(len(blocks), sequences)
    rng = np.random.default_rng(estimator_seed(seed, "blocks"))
    return np.sort(rng.choice(len(blocks), size=n, replace=False))


Estimate = Callable[[Tensor, "Tensor | None"], Tensor]


def _per_sequence(blocks: Blocks, rows: np.ndarray, batch: int, estimate: Estimate, what: str = "") -> Tensor:
    """``estimate`` (``x0 [b, L], keep [b, L] or None -> [b]`` nats) over the blocks ``rows`` in
    batches of ``batch``; ``keep`` marks the positions that count (not padding). ``what``: the
    label of a progress bar over the sequences (on a terminal)."""
    bar = tqdm(total=len(rows), desc=what, unit="seq", leave=False, disable=None if what else True)
    out = []
    for a in range(0, len(rows), batch):
        out.append(estimate(blocks.batch(rows[a:a + batch]), blocks.mask(rows[a:a + batch])))
        bar.update(out[-1].shape[-1])
    bar.close()
    return torch.cat(out, dim=-1)


def _tokens(blocks: Blocks, rows: np.ndarray) -> Tensor:
    """The tokens that count in each block (padding excluded)."""
    keep = blocks.mask(rows)
    return keep.sum(1) if keep is not None else torch.full((len(rows),), blocks.batch(rows[:1]).shape[1])


def _bound_estimates(loaded: LoadedRun, denoiser: Any, blocks: Blocks, rows: np.ndarray, steps: int, seed: int,
                     batch: int = 8, all_terms: bool = False, probs: Tensor | None = None) -> Tensor:
    """Per-sequence ``steps``-step bounds of ``denoiser`` (every term, or the drawn one from ``probs``:
    :func:`gdds.nll_bound`'s ``all_terms``, ``term_probs``); the draws depend on ``seed`` only, so two
    denoisers bounded alike share blocks, term indices and ``x_t``."""
    gen = estimator_generator(loaded, seed, "bound")
    return _per_sequence(blocks, rows, batch, lambda x0, keep: nll_bound(
        loaded.run.process, denoiser, x0, steps=steps, generator=gen, keep=keep, all_terms=all_terms,
        term_probs=probs), f"{steps}-step bound")


def _exact_nll(loaded: LoadedRun, blocks: Blocks, rows: np.ndarray, batch: int = 8) -> Tensor:
    return _per_sequence(blocks, rows, batch, lambda x0, keep: loaded.run.model.nll(
        x0.to(loaded.device), None if keep is None else keep.to(loaded.device)).cpu())


def _characters(loaded: LoadedRun, blocks: Blocks, rows: np.ndarray) -> int | None:
    """The characters the blocks ``rows`` hold (tokens but BOS, EOS, padding and mask) for a
    character-level tokenizer, else ``None``."""
    if not TOKENIZERS.get(loaded.cfg.data.tokenizer).per_character:
        return None
    tok = loaded.run.data.tokenizer
    x = blocks.batch(rows)
    special = torch.tensor([i for i in (tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id) if i is not None])
    characters = ~torch.isin(x, special)
    keep = blocks.mask(rows)
    return int((characters if keep is None else characters & keep).sum())


def bound_metric(loaded: LoadedRun, steps: int) -> str:
    """The label of the model's ``steps``-step bound, naming block diffusion and its block size when it is one."""
    b = loaded.method.block_size
    return BOUND_METRIC.format(steps=steps) + ("" if b is None else BLOCK_METRIC.format(block_size=b))


def _report(metric: str, est: Tensor, tokens: Tensor, characters: int | None, exact: bool,
            steps: int | None, rows: np.ndarray) -> NLLReport:
    s = summarize(est, tokens, steps)
    return NLLReport(metric, s.nats_per_token, s.standard_error, s.tokens, len(est), exact=exact, steps=s.steps,
                     bits_per_character=None if characters is None else s.bits_per_character(characters),
                     per_sequence=PerSequence(rows.tolist(), est.double().tolist(), tokens.tolist()))


@torch.no_grad()
def bound_report(loaded: LoadedRun, blocks: Blocks, sequences: int, steps: int, seed: int = 0,
                 batch: int = 8) -> NLLReport:
    """The ``steps``-step bound on ``sequences`` blocks drawn across the split: nats/token ± SE,
    perplexity (upper bounds). For a method with an exact likelihood (autoregressive): its
    exact NLL (``steps`` unused; the standard error is then over sequences only)."""
    rows, exact = eval_rows(blocks, sequences, seed), loaded.method.exact_likelihood
    est = _exact_nll(loaded, blocks, rows, batch) if exact else \
        _bound_estimates(loaded, loaded.denoiser(), blocks, rows, steps, seed, batch)
    return _report(loaded.method.label if exact else bound_metric(loaded, steps), est, _tokens(blocks, rows),
                   _characters(loaded, blocks, rows), exact, None if exact else steps, rows)


@torch.no_grad()
def likelihood_report(loaded: LoadedRun, blocks: Blocks, sequences: int, steps: int, seed: int = 0,
                      batch: int = 8, all_terms: bool = False,
                      importance_terms: bool = False) -> Likelihood:
    """The model's figure (:func:`bound_report`) beside the baseline that needs no training, on
    the same blocks and the same draws, and their paired difference. The baseline is the
    ``steps``-step bound of the Bayes-unigram denoiser under the run's own process
    (:func:`gdds.baseline.bayes_unigram`, with the training split's add-one unigram law), or,
    for a model with an exact likelihood, the unigram model's exact NLL. ``all_terms``: every one
    of the ``T`` terms of each sequence's bound instead of one drawn (less variance, ``T`` times the
    cost), for the model and the baseline alike. ``importance_terms``: the one drawn term follows
    the baseline's terms on a pilot of ``PILOT_SEQUENCES`` blocks (:func:`gdds.likelihood.term_probs`;
    importance sampling, the same expectation), for both."""
    rows, exact = eval_rows(blocks, sequences, seed), loaded.method.exact_likelihood
    tokens, characters = _tokens(blocks, rows), _characters(loaded, blocks, rows)
    pi = unigram_law(loaded.run.data.unigram_counts())
    unigram = _per_sequence(blocks, rows, batch, lambda x0, keep: unigram_nll(pi, x0, keep))
    unigram_report = _report(UNIGRAM_METRIC, unigram, tokens, characters, True, None, rows)
    if exact:
        model_est, base_est = _exact_nll(loaded, blocks, rows, batch), unigram
        model, baseline = _report(loaded.method.label, model_est, tokens, characters, True, None, rows), unigram_report
    else:
        baseline_denoiser = bayes_unigram(loaded.run.process, pi)
        probs = None
        if importance_terms and not all_terms:
            pilot = bound_terms(loaded.run.process, baseline_denoiser, blocks.batch(rows[:PILOT_SEQUENCES]), steps,
                                keep=blocks.mask(rows[:PILOT_SEQUENCES]),
                                generator=estimator_generator(loaded, seed, "pilot"))
            probs = term_probs(pilot)
        model_est, base_est = _bound_estimates(loaded, [loaded.denoiser(), baseline_denoiser], blocks, rows, steps,
                                               seed, batch, all_terms, probs)
        terms = ", all terms" if all_terms else ", importance-sampled term" if probs is not None else ""
        model = _report(bound_metric(loaded, steps) + terms, model_est, tokens, characters, False, steps, rows)
        baseline = _report(BASELINE_METRIC.format(steps=steps) + terms, base_est, tokens, characters, False, steps,
                           rows)
    d = paired_difference(model_est, base_est, tokens)
    return Likelihood(model, baseline, unigram_report,
                      PairedDifference(d.nats_per_token, d.standard_error, len(rows), baseline.metric))


@torch.no_grad()
def kl_profile(loaded: LoadedRun, blocks: Blocks, sequences: int, steps: int, seed: int = 0) -> KLProfile:
    """Every term of the ``steps``-step bound (:func:`gdds.likelihood.bound_terms`), per token,
    for the model and the Bayes-unigram baseline on the same ``sequences`` blocks and draws."""
    rows = eval_rows(blocks, sequences, seed)
    x0, keep, tokens = blocks.batch(rows), blocks.mask(rows), int(_tokens(blocks, rows).sum())
    pi = unigram_law(loaded.run.data.unigram_counts())
    process = loaded.run.process

    gen = estimator_generator(loaded, seed, "profile")
    model, baseline = (bound_terms(process, [loaded.denoiser(), bayes_unigram(process, pi)], x0, steps, generator=gen,
                                   keep=keep).sum(1) / tokens).tolist()
    return KLProfile(steps, time_grid(process, steps)[::-1][1:], model, baseline, len(rows), tokens)


@torch.no_grad()
def continuous_report(loaded: LoadedRun, blocks: Blocks, sequences: int, seed: int = 0,
                      batch: int = 8) -> NLLReport:
    """The continuous-time bound (:func:`gdds.likelihood.continuous_bound`, column-constant
    kernels: MDLM's and UDLM's bound) on ``sequences`` blocks drawn across the split, with its own
    draws. It bounds the NLL of the reverse CTMC that the ``T``-step chain tends to as ``T``
    grows, not of a sampler with finitely many steps."""
    gen = estimator_generator(loaded, seed, "continuous")
    rows = eval_rows(blocks, sequences, seed)
    est = _per_sequence(blocks, rows, batch, lambda x0, keep: continuous_bound(
        loaded.run.process, loaded.denoiser(), x0, samples=CONTINUOUS_SAMPLES, generator=gen, keep=keep))
    s = summarize(est, _tokens(blocks, rows))
    return NLLReport(CONTINUOUS_METRIC, s.nats_per_token, s.standard_error, s.tokens, len(est),
                     samples_of_t=CONTINUOUS_SAMPLES)


@torch.no_grad()
def snapshot_report(loaded: LoadedRun, blocks: Blocks, sequences: int, seed: int = 0,
                    batch: int = 16) -> SnapshotReport:
    """Mean snapshot CE of the model's denoiser on ``sequences`` blocks drawn across the split,
    with its own draws. Not a likelihood."""
    gen = estimator_generator(loaded, seed, "snapshot")
    rows = eval_rows(blocks, sequences, seed)
    total, count = 0.0, 0
    for a in range(0, len(rows), batch):
        x0, keep = blocks.batch(rows[a:a + batch]).to(loaded.device), blocks.mask(rows[a:a + batch])
        keep = torch.ones_like(x0, dtype=torch.bool) if keep is None else keep.to(loaded.device)
        xt, t = snapshot_inputs(loaded.run.process, x0, loaded.cfg.process.t_min, gen)
        ce = snapshot_cross_entropy(with_context(loaded.denoiser(), x0)(torch.where(keep, xt, x0), t), x0)
        total, count = total + float(torch.where(keep, ce, 0.0).sum()), count + int(keep.sum())
    return SnapshotReport(SNAPSHOT_LABEL, total / count, count)


def sample_reports(loaded: LoadedRun, s: EvalSettings, log: Callable[[str], None]) -> list[SampleReport]:
    """``s.num_samples`` samples at every ``(sample_steps, top_p)`` (ancestral sampling has no step
    count), their entropies, and each judge's generative perplexity of them."""
    sampler = loaded.method.sampler()
    dtype = torch.bfloat16 if loaded.half else torch.float32  # on a GPU in bf16 (a perplexity is not a bound)
    truncate = (s.sample_length or loaded.cfg.data.seq_len) if s.judge_convention == MDLM else None
    judges = [Judge.load(spec, device=loaded.device, dtype=dtype, convention=s.judge_convention, truncate=truncate)
              for spec in [s.judge, *s.more_judges] if spec]
    rows = []
    for k in s.sample_steps if sampler.source != CAUSAL else [None]:
        for top_p in s.top_p:
            log(f"sampling {s.num_samples} sequences: {sampler.label}" + ("" if k is None else f", {k} steps")
                + ("" if top_p == 1 else f", nucleus top_p = {top_p}"))
            ids, texts = generate(loaded, s.num_samples, k, estimator_seed(s.seed, "samples"),
                                  s.sample_length, **({} if top_p == 1 else {"decoding": Decoding(top_p=top_p)}))
            row = SampleReport(k, sampler.label, "float64 inverse CDF", unigram_entropy(ids),
                               per_sample_entropy(ids), texts, top_p=top_p)
            if judges:
                row.generative_perplexity = judges[0].perplexity(texts)
                row.more_judges = [judge.perplexity(texts) for judge in judges[1:]]
            rows.append(row)
    return rows


def evaluate(loaded: LoadedRun, settings: EvalSettings, log: Callable[[str], None] = lambda message: None
             ) -> EvalReport:
    """Everything ``gdds eval`` reports; ``log`` receives progress messages. Settings that do not fit
    the model fail first, before any compute."""
    method, s = loaded.method, settings
    exact = method.exact_likelihood
    if not exact:
        loaded.denoiser()  # fails early for a model that cannot generate
    loaded.sample_length(s.sample_length, "--sample-length")
    if s.mauve is not None:  # the split may hold fewer blocks than MAUVE's references
        s.mauve.check(min(s.mauve_references, len(loaded.run.valid)), s.num_samples)
    sequences = min(s.sequences, len(loaded.run.valid))  # what eval_rows draws
    counted = f"{sequences} validation sequences" + (
        f" (all the split has; {s.sequences} asked)" if sequences < s.sequences else "")
    report = EvalReport(str(loaded.checkpoint), loaded.weights, loaded.cfg.method,
                        sum(p.numel() for p in loaded.run.model.parameters()))
    log(f"exact NLL of {counted}, beside the unigram model" if exact
        else f"bounding {counted} with T = {s.steps}, beside the no-training baseline")
    report.likelihood = likelihood_report(loaded, loaded.run.valid, s.sequences, s.steps, s.seed,
                                          all_terms=s.all_terms, importance_terms=s.importance_terms)
    if not exact:
        report.snapshot_ce = snapshot_report(loaded, loaded.run.valid, s.sequences, s.seed)
        if s.paper_metric:
            try:
                figure = reference_figure(loaded)
                log(f"the paper's reported metric, the reference's {figure} figure (not a likelihood)")
                report.paper_metric = paper_metric(loaded, loaded.run.valid, eval_rows(
                    loaded.run.valid, s.sequences, s.seed), estimator_generator(loaded, s.seed, "paper"),
                    s.paper_metric_grid)
            except NoReferenceFigure as exc:
                log(f"no paper metric: {exc}")
                report.paper_metric_absent = str(exc)
        if method.continuous_bound_applies and method.continuous_bound_finite:
            log(f"continuous-time bound of {sequences} validation sequences")
            report.continuous_bound = continuous_report(loaded, loaded.run.valid, s.sequences, s.seed)
        elif method.continuous_bound_applies:
            log(f"the continuous-time bound diverges: T-step bounds at T = {SWEEP_STEPS} instead")
            report.t_sweep = [bound_report(loaded, loaded.run.valid, s.sequences, T, s.seed)
                              for T in SWEEP_STEPS]
    if not exact and s.profile_steps and s.profile_sequences:
        log(f"profile of the {s.profile_steps}-step bound's terms over t, model and baseline, "
            f"{s.profile_sequences} sequences")
        report.kl_profile = kl_profile(loaded, loaded.run.valid, s.profile_sequences, s.profile_steps, s.seed)
    report.samples = sample_reports(loaded, s, log)
    real = loaded.run.valid.batch(eval_rows(loaded.run.valid, s.num_samples, s.seed))
    pad = loaded.run.data.tokenizer.pad_id
    report.data_entropy = unigram_entropy(real[:, :s.sample_length or real.shape[1]], None if pad is None else [pad])
    if s.mauve is not None:
        log(f"MAUVE of each sample set against {s.mauve_references} validation texts ({s.mauve.featurizer})")
        refs = reference_texts(loaded.run.data.tokenizer, loaded.run.valid.batch(eval_rows(
            loaded.run.valid, s.mauve_references, s.seed)), s.sample_length or real.shape[1])
        for row, estimate in zip(report.samples, mauve_of_samples(s.mauve, refs, [r.texts for r in report.samples],
                                                                  loaded.device), strict=True):
            row.mauve = estimate
    for name in s.zero_shot:
        log(f"zero-shot bound on {name}, beside the no-training baseline")
        blocks = zero_shot_blocks(name, loaded.run.data.tokenizer, loaded.cfg.data)
        report.zero_shot[name] = likelihood_report(loaded, blocks, s.sequences, s.steps, s.seed)
    return report
