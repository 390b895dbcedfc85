"""``gdds decode-bench``: the price of each sampler, measured side by side on one footing
(``docs/decoding.md``).

For each trained run and each :class:`~gdds.engine.evaluation.decoding_settings.Setting` (a sampler of
:data:`gdds.samplers.SAMPLERS`, its options, a step count and perhaps a grid fitted to the run's own profile of
the bound, :func:`fitted_profile`) whose sampler applies to the run (the others are skipped with the sampler's
own reason) :func:`decode_bench` measures

- **speed**: tokens per second of the generate call (wall clock, after a warm-up call), and network
  calls per token (calls counted by a wrapper around the denoiser the sampler is given, divided by
  the sequence length: one call denoises a whole batch of sequences);
- **quality**: each judge's generative perplexity at a common unigram entropy, from a nucleus sweep,
  with a bootstrap standard error over samples (:mod:`gdds.engine.evaluation.decoding_quality`); a
  sampler that takes no ``decoding`` gives its raw point ("no sweep");
- **the bound**, where the setting samples the chain that :func:`gdds.nll_bound` scores
  (each sampler's :class:`gdds.samplers.BoundRule`, the one place that says which settings have one and why the
  others do not):
  the bound on the same validation blocks with the same draws as ``gdds eval``'s, and its
  difference from the reference exact chain's, paired on blocks.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...bound_summary import BoundSummary, paired_difference, summarize
from ...categorical import Decoding
from ...likelihood import bound_terms, nll_bound
from ...samplers import DENOISER, SAMPLERS, SamplerError
from ...sampling import BlockDenoiser, Denoiser, map_network, time_grid
from ...step_grids import fitted_grid
from ...version import code_fingerprint
from ..build import LoadedRun
from ..config import preset_names, read_yaml
from .decoding_quality import NO_SWEEP, Quality, SweepPoint, bootstrap_quality, common_entropy
from .decoding_settings import Setting, check_names
from .evaluate import estimator_generator, estimator_seed, eval_rows
from .judge import Judge
from .judge_conventions import GDDS, MDLM, check_convention

DECODING_PRESETS = "gdds.engine.configs.decoding"


def decoding_preset_names() -> list[str]:
    """The presets shipped in ``gdds/engine/configs/decoding`` (``gdds decode-bench --preset``)."""
    return preset_names(DECODING_PRESETS)


def read_decoding_preset(name_or_path: str) -> dict[str, Any]:
    """A decode-bench preset: ``gdds decode-bench``'s options as a YAML mapping (option names with ``_``;
    ``settings`` a list of :func:`~gdds.engine.evaluation.decoding_settings.settings_of`'s entries), by name
    or from a file."""
    return read_yaml(name_or_path, DECODING_PRESETS, "decode-bench preset")


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """How each setting is measured: ``num_samples`` samples at each nucleus ``top_p`` (1 must be one:
    the model's own law, the timed call), scored by ``judges``; bounds on ``sequences`` validation blocks
    (``all_terms``: every term of each bound, as ``gdds eval --all-terms``), each paired against the
    exact chain in ``reference_steps`` steps (default: the most steps of an exact setting); a fitted grid's
    profile on ``profile_sequences`` other validation blocks (:func:`fitted_profile`); ``resamples`` of the
    bootstrap; ``seed`` of every draw; ``length`` of the samples (default the training length);
    ``judge_convention``: how the judges score them (:mod:`gdds.engine.evaluation.judge_conventions`; under
    ``mdlm`` texts are cut at ``length``, else at the first run's training length, as ``gdds eval`` does)."""

    num_samples: int = 16
    top_p: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8)
    judges: tuple[str, ...] = ()
    sequences: int = 32
    all_terms: bool = False
    reference_steps: int | None = None
    profile_sequences: int = 8
    resamples: int = 1000
    seed: int = 0
    length: int | None = None
    judge_convention: str = GDDS

    def __post_init__(self) -> None:
        check_convention(self.judge_convention)
        for name in ("top_p", "judges"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if 1.0 not in self.top_p or not all(0 < p <= 1 for p in self.top_p):
            raise ValueError(f"the nucleus sweep needs top_p = 1 and values in (0, 1]; got {list(self.top_p)}")
        if self.num_samples < 2 or self.sequences < 2:
            raise ValueError("a standard error needs at least 2 samples and 2 sequences")
        if self.profile_sequences < 1:
            raise ValueError(f"a fitted grid's profile needs at least 1 sequence; got {self.profile_sequences}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class CallCounter:
    """Counts the network calls of the denoisers it wraps (:meth:`wrap`)."""

    def __init__(self) -> None:
        self.calls = 0

    def wrap(self, denoiser: Denoiser) -> Denoiser:
        """``denoiser`` with every call of its network counted (inside a likelihood-weighted denoiser too)."""
        def counted(net: Denoiser) -> Denoiser:
            def call(*args: Tensor) -> Tensor:
                self.calls += 1
                return net(*args)
            return BlockDenoiser(call, net.block_size) if isinstance(net, BlockDenoiser) else call
        return map_network(denoiser, counted)


@dataclass
class SettingResult:
    """What one setting measured (module docstring): ``seconds`` of the timed call for ``num`` sequences of
    ``length`` tokens, ``calls`` of the network in it (``None``: a sampler that takes no denoiser), the
    sweep's points, each judge's :class:`Quality`, and the bound with its paired difference from the
    reference, or the reason it has none; ``grid``: a fitted grid's times, resolved for the run, and then
    ``vs_uniform``, its bound's difference from the same chain's on the uniform grid of as many steps (paired on
    blocks: whether fitting the grid helped)."""

    setting: Setting
    grid: list[float] | None
    seconds: float
    num: int
    length: int
    calls: int | None
    points: list[SweepPoint]
    swept: bool
    bound: BoundSummary | None = None
    difference: BoundSummary | None = None
    bound_reason: str | None = None
    vs_uniform: BoundSummary | None = None
    quality: list[Quality] = field(default_factory=list)

    @property
    def options(self) -> dict[str, Any]:
        """The sampler's options in this run: the setting's, and its fitted grid as ``grid``."""
        return {**self.setting.options, **({} if self.grid is None else {"grid": self.grid})}

    @property
    def tokens_per_s(self) -> float:
        return self.num * self.length / self.seconds

    @property
    def calls_per_token(self) -> float | None:
        return None if self.calls is None else self.calls / self.length

    @property
    def entropy(self) -> float:
        """The unigram entropy of the model's own samples (``top_p = 1``)."""
        return next(p for p in self.points if p.top_p == 1).entropy()

    def to_dict(self) -> dict[str, Any]:
        def summary(s: BoundSummary | None) -> dict[str, Any] | None:
            return None if s is None else {"nats_per_token": s.nats_per_token, "standard_error": s.standard_error,
                                           "tokens": s.tokens}
        return {**self.setting.to_dict(), "label": self.setting.label, "fitted_grid": self.grid,
                "seconds": self.seconds, "samples": self.num,
                "length": self.length, "tokens_per_s": self.tokens_per_s, "network_calls": self.calls,
                "network_calls_per_token": self.calls_per_token, "unigram_entropy": self.entropy,
                "sweep": [{"top_p": p.top_p, "unigram_entropy": p.entropy(),
                           "generative_perplexity": [p.perplexity(j) for j in range(p.nats.shape[0])]}
                          for p in self.points] if self.swept else NO_SWEEP,
                "quality": [q.to_dict() for q in self.quality],
                "bound_minus_uniform_grid": summary(self.vs_uniform),
                "bound": summary(self.bound), "bound_minus_reference": summary(self.difference),
                "no_bound": self.bound_reason}


@dataclass
class RunBench:
    """One run's settings, measured: the run, its checkpoint and weights, the common entropy its sweeps
    reach, and the reference chain every bound is paired with; the settings ``skipped`` on it, each with
    its sampler's reason, and the ``profiles`` its fitted grids were fitted to (:class:`Profile`)."""

    run: str
    checkpoint: str
    weights: str
    method: str
    common_entropy: float | None
    reference: str | None
    results: list[SettingResult]
    skipped: list[tuple[Setting, str]] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "checkpoint": self.checkpoint, "weights": self.weights, "method": self.method,
                "common_entropy": self.common_entropy, "reference": self.reference,
                "settings": [r.to_dict() for r in self.results],
                "skipped": [{**setting.to_dict(), "label": setting.label, "reason": why}
                            for setting, why in self.skipped],
                "fitted_profiles": [p.to_dict() for p in self.profiles]}


@dataclass
class DecodeBench:
    """The result of :func:`decode_bench` (``decoding.json``)."""

    settings: BenchSettings
    judges: list[str]
    runs: list[RunBench]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"provenance": self.provenance, "code_fingerprint": code_fingerprint(),
                "bench_settings": self.settings.to_dict(), "judges": self.judges,
                "runs": [r.to_dict() for r in self.runs]}


def _timed(loaded: LoadedRun, draw: Callable[[], Tensor]) -> tuple[Tensor, float]:
    """``draw()`` and its wall-clock seconds (the device synchronised before and after)."""
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
    sync()
    tic = time.perf_counter()
    out = draw()
    sync()
    return out, time.perf_counter() - tic


def _sweep(loaded: LoadedRun, setting: Setting, grid: list[float] | None, s: BenchSettings,
           judges: Sequence[Judge]) -> SettingResult:
    """Draw and judge ``setting``'s samples (on ``grid``, its fitted grid, when given) at every ``top_p`` (its own
    ``decoding`` with that nucleus) when its sampler takes ``decoding``, after an untimed warm-up call, timing
    and counting the ``top_p = 1`` call."""
    entry = loaded.method.sampler(setting.sampler)
    given = {**setting.options, **({} if grid is None else {"grid": grid})}
    counter = CallCounter()
    denoiser = counter.wrap(loaded.denoiser()) if entry.source == DENOISER else None
    length = loaded.sample_length(s.length, "length")
    own = setting.options.get("decoding", Decoding())
    swept = "decoding" in entry.options and own.top_p == 1  # a setting's own nucleus is not swept again

    def draw(num: int, top_p: float) -> Tensor:
        gen = torch.Generator(device=loaded.device).manual_seed(estimator_seed(s.seed, "samples"))
        options = {**given, **({} if top_p == 1 else {"decoding": replace(own, top_p=top_p)})}
        with loaded.precision(entry.source):
            return loaded.method.generate(loaded.run.model, num, length, setting.steps, gen, (), setting.sampler,
                                          denoiser, **options).cpu()

    draw(min(2, s.num_samples), 1.0)  # warm-up: first calls allocate and compile
    points, seconds, calls = [], 0.0, None
    for top_p in s.top_p if swept else (1.0,):
        counter.calls = 0
        ids, took = _timed(loaded, lambda p=top_p: draw(s.num_samples, p))
        if top_p == 1:
            seconds, calls = took, (counter.calls if denoiser is not None else None)
        texts = [loaded.run.data.tokenizer.decode(row.tolist()) for row in ids]
        points.append(SweepPoint.of(top_p, ids, [j.nll_per_text(texts) for j in judges]))
    return SettingResult(setting, grid, seconds, s.num_samples, length, calls, points, swept)


@torch.no_grad()
def _bound(loaded: LoadedRun, steps: int, keywords: Mapping[str, Any], s: BenchSettings) -> tuple[Tensor, Tensor]:
    """Per-sequence ``steps``-step bounds of the run's denoiser with ``keywords`` on ``gdds eval``'s blocks and
    draws (:func:`~gdds.engine.evaluation.evaluate.eval_rows`, the ``bound`` estimator's generator), and
    the tokens that count in each block."""
    blocks, gen = loaded.run.valid, estimator_generator(loaded, s.seed, "bound")
    rows = eval_rows(blocks, s.sequences, s.seed)
    out, tokens = [], []
    for a in range(0, len(rows), 8):
        x0, keep = blocks.batch(rows[a:a + 8]), blocks.mask(rows[a:a + 8])
        out.append(nll_bound(loaded.run.process, loaded.denoiser(), x0, steps=steps, generator=gen, keep=keep,
                             all_terms=s.all_terms, **keywords).double().cpu())
        tokens.append(torch.full((len(x0),), x0.shape[1]) if keep is None else keep.sum(1))
    return torch.cat(out), torch.cat(tokens)


@dataclass
class Profile:
    """The ``steps``-step profile of a run's bound that its fitted grids are fitted to: every term
    (:func:`gdds.likelihood.bound_terms`, one draw each) in nats per token on the validation blocks ``rows``,
    none of them a block of the bench's bounds; ``times[k - 1]`` ends step ``k``, ``nats[0]`` is the prior term."""

    steps: int
    rows: list[int]
    times: list[float]
    nats: list[float]

    def grid(self, steps: int) -> list[float]:
        """The ``steps``-step grid fitted to it (:func:`gdds.step_grids.fitted_grid`, the prior term left out)."""
        return fitted_grid(self.times, self.nats[1:], steps)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "validation_blocks": self.rows, "times": self.times, "nats_per_token": self.nats}


@torch.no_grad()
def fitted_profile(loaded: LoadedRun, steps: int, s: BenchSettings) -> Profile:
    """The run's ``steps``-step :class:`Profile` on ``s.profile_sequences`` validation blocks drawn (seeded) from
    those the bench's bounds do not use: a grid is never fitted on the blocks it is scored on."""
    blocks, process = loaded.run.valid, loaded.run.process
    rest = np.setdiff1d(np.arange(len(blocks)), eval_rows(blocks, s.sequences, s.seed))
    if rest.size == 0:
        raise ValueError(f"a fitted grid needs validation blocks beyond the bound's {s.sequences}; "
                         f"the split has {len(blocks)}")
    rng = np.random.default_rng(estimator_seed(s.seed, "profile"))
    rows = np.sort(rng.choice(rest, size=min(s.profile_sequences, rest.size), replace=False))
    gen, terms, tokens = estimator_generator(loaded, s.seed, "profile"), torch.zeros(steps + 1, dtype=torch.float64), 0
    for a in range(0, len(rows), 8):
        x0, keep = blocks.batch(rows[a:a + 8]), blocks.mask(rows[a:a + 8])
        terms += bound_terms(process, loaded.denoiser(), x0, steps, generator=gen, keep=keep).sum(0).cpu()
        tokens += x0.numel() if keep is None else int(keep.sum())
    return Profile(steps, rows.tolist(), list(time_grid(process, steps)[::-1][1:]), (terms / tokens).tolist())


def bench_run(loaded: LoadedRun, settings: Sequence[Setting], s: BenchSettings, judges: Sequence[Judge],
              name: str, log: Callable[[str], None] = lambda message: None) -> RunBench:
    """Every setting of ``settings`` on one run (module docstring); ``name`` labels the run. A setting whose
    sampler the run's method cannot use (a mask-kernel sampler on another kernel) is skipped with the sampler's
    own refusal; a fitted grid is fitted here, to this run's profile (:func:`fitted_profile`)."""
    results, skipped, profiles = [], [], {}
    for setting in settings:
        try:
            loaded.method.sampler(setting.sampler)
        except SamplerError as exc:
            log(f"{name}: {setting.label} skipped: {exc}")
            skipped.append((setting, str(exc)))
            continue
        if setting.fitted is not None and setting.fitted not in profiles:
            log(f"{name}: the {setting.fitted}-step profile of the bound, for the fitted grids")
            profiles[setting.fitted] = fitted_profile(loaded, setting.fitted, s)
        grid = None if setting.fitted is None else profiles[setting.fitted].grid(setting.steps)
        log(f"{name}: {setting.label}")
        results.append(_sweep(loaded, setting, grid, s, judges))
    level = common_entropy([r.points for r in results if r.swept])
    if level is None and any(r.swept for r in results):
        log(f"{name}: the nucleus sweeps reach no common entropy; each setting's quality is its top-p 1 point's")
    for r in results:
        at = level if r.swept else None
        points = r.points if at is not None else [p for p in r.points if p.top_p == 1]
        r.quality = [bootstrap_quality(points, at, j, judge.name, s.resamples, s.seed)
                     for j, judge in enumerate(judges)]
    exact_steps = [r.setting.steps for r in results if r.setting.sampler == "exact" and not r.options]
    ref_steps = s.reference_steps or max(exact_steps, default=None)
    bounds: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}

    def bound_of(steps: int, keywords: dict[str, Any]) -> tuple[Tensor, Tensor]:
        key = (steps, repr(sorted(keywords.items())))
        if key not in bounds:
            log(f"{name}: {steps}-step bound" + (f" with {keywords}" if keywords else ""))
            bounds[key] = _bound(loaded, steps, keywords, s)
        return bounds[key]

    if not loaded.method.exact_likelihood:
        for r in results:
            keywords = SAMPLERS.get(r.setting.sampler).bound.keywords(loaded.method.process, r.options)
            if isinstance(keywords, str):
                r.bound_reason = keywords
                continue
            est, tokens = bound_of(r.setting.steps, keywords)
            r.bound = summarize(est, tokens, r.setting.steps)
            if ref_steps is not None:
                r.difference = paired_difference(est, bound_of(ref_steps, {})[0], tokens)
            if r.grid is not None:
                uniform = {k: v for k, v in keywords.items() if k != "grid"}
                r.vs_uniform = paired_difference(est, bound_of(r.setting.steps, uniform)[0], tokens)
    else:
        for r in results:
            r.bound_reason = "no bound: an exact-likelihood model (its exact NLL is gdds eval's figure)"
    reference = None if ref_steps is None else f"exact, T = {ref_steps}"
    return RunBench(name, str(loaded.checkpoint), loaded.weights, loaded.cfg.method, level, reference, results,
                    skipped, list(profiles.values()))


def decode_bench(runs: Mapping[str, LoadedRun], settings: Sequence[Setting], s: BenchSettings,
                 log: Callable[[str], None] = lambda message: None,
                 provenance: dict[str, Any] | None = None) -> DecodeBench:
    """:func:`bench_run` for every run of ``runs`` (name -> loaded run), the judges of ``s`` loaded once
    (on the first run's device, in bf16 on a GPU, as ``gdds eval``)."""
    if not runs or not settings:
        raise ValueError("decode-bench needs at least one run and one setting")
    check_names(settings)
    first = next(iter(runs.values()))
    dtype = torch.bfloat16 if first.half else torch.float32
    truncate = (s.length or first.cfg.data.seq_len) if s.judge_convention == MDLM else None
    judges = [Judge.load(spec, device=first.device, dtype=dtype, convention=s.judge_convention, truncate=truncate)
              for spec in s.judges]
    measured = [bench_run(loaded, settings, s, judges, name, log) for name, loaded in runs.items()]
    return DecodeBench(s, [j.name for j in judges], measured, dict(provenance or {}))

