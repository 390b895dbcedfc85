"""``gdds compare``: every method on one footing, measured the same way (paper section 5's
comparison, with honest bounds).

Each entry of :data:`ENTRIES` is a training method on a process, given as configuration
overrides of one base preset, so every run uses the same data, tokenizer, backbone size,
optimizer, number of steps and tokens. Each trained run is then evaluated by
:func:`gdds.engine.evaluation.evaluate.evaluate` with the same :class:`~gdds.engine.evaluation.evaluate.EvalSettings`:
the ``T``-step NLL bound of the sampled chain (an autoregressive model's exact NLL), the
snapshot CE where it applies (labelled), samples with their unigram entropy, generative
perplexity under one judge, and zero-shot bounds. ``judge="ar"`` uses the comparison's own
autoregressive run as the judge.

A run folder that already holds a finished run is evaluated, not retrained, and an
interrupted one is resumed, so a long comparison can be continued. A finished evaluation is reused
only when it was made with the same settings by the same code (:func:`gdds.version.code_fingerprint`);
one made by other code is computed again, and the report says which were. A run folder kept without its
checkpoints (an archived run, :mod:`gdds.engine.evaluation.saved_evaluation`) counts as trained and evaluated.

Verdicts (:mod:`gdds.engine.evaluation.paired`) use the ``judged_seeds`` only (default every seed): the seed a
structured variant was selected on is left out of its verdict, and so of every verdict.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...files import write_text_atomically
from ...version import code_fingerprint
from .. import checkpoint as ck
from ..build import load_run
from ..config import Config, ConfigError, load_config, preset_names, read_yaml
from ..logs import read_log
from ..resume import changed_settings
from ..train import train
from .entropy import log_interpolate
from .evaluate import CONTINUOUS_SAMPLES, EvalSettings, evaluate
from .paired import SeededDifference, seeded_difference
from .reports import EvalReport, SampleReport
from .saved_evaluation import archived, read_saved, refuse_archived, write_saved

ENTRIES: dict[str, list[str]] = {
    "gdds-semantic": ["method=gdds", "process.kernel=semantic"],
    "gdds-mask": ["method=gdds", "process.kernel=mask"],
    "gdds-uniform": ["method=gdds", "process.kernel=uniform"],
    "mdlm": ["method=elbo", "process.kernel=mask"],
    "udlm": ["method=elbo", "process.kernel=uniform"],
    "gidd": ["method=elbo", "process.kernel=hybrid", "process.kernel_args={uniform_weight: 0.2}"],
    "jump-mask": ["method=jump", "process.kernel=mask"],
    "campbell-mask": ["method=campbell", "process.kernel=mask"],
    "ar": ["method=ar"],
    # Structured kernels through the same snapshot training (issue 15): the paper's kernel with its
    # tempering b and teleport midpoint varied, semantic-then-absorb, and a mask/uniform hybrid. The
    # default b = 0 is the reference's configuration; 0.2 its code's fallback and gdds's default before
    # issue 23 (docs/library.md).
    "gdds-semantic-absorb": ["method=gdds", "process.kernel=semantic-absorb"],
    "gdds-semantic-b0.2": ["method=gdds", "process.kernel=semantic", "process.kernel_args={b: 0.2}"],
    # The same with the one-jump surrogate of q_t in the forward parametrization (issue 23's ablation: what
    # the approximation cost the results published before it).
    "gdds-semantic-b0.2-surrogate": ["method=gdds", "process.kernel=semantic", "process.kernel_args={b: 0.2}",
                                     "model.parametrization=forward-surrogate"],
    "gdds-semantic-b1": ["method=gdds", "process.kernel=semantic", "process.kernel_args={b: 1.0}"],
    "gdds-semantic-mid0.3": ["method=gdds", "process.kernel=semantic", "process.kernel_args={midpoint: 0.3}"],
    "gdds-semantic-mid0.8": ["method=gdds", "process.kernel=semantic", "process.kernel_args={midpoint: 0.8}"],
    "gdds-hybrid": ["method=gdds", "process.kernel=hybrid", "process.kernel_args={uniform_weight: 0.2}"],
    # The paper's kernel on MiniLM's word embeddings or on corpus co-occurrence ones (WordPiece bases).
    "gdds-semantic-minilm": ["method=gdds", "process.kernel=semantic", "process.embeddings=minilm"],
    "gdds-semantic-cooc": ["method=gdds", "process.kernel=semantic", "process.embeddings=cooccurrence"],
    # Block diffusion (docs/block.md): diffusion inside blocks of 4 or 16 characters, autoregressive over them.
    "gdds-mask-b4": ["method=gdds", "process.kernel=mask", "model.block_size=4"],
    "gdds-mask-b16": ["method=gdds", "process.kernel=mask", "model.block_size=16"],
    "gdds-semantic-b4": ["method=gdds", "process.kernel=semantic", "model.block_size=4"],
    "gdds-semantic-b16": ["method=gdds", "process.kernel=semantic", "model.block_size=16"],
}
STANDARD = ("gdds-semantic", "gdds-mask", "gdds-uniform", "mdlm", "udlm", "gidd", "jump-mask", "campbell-mask", "ar")
"""What ``gdds compare`` trains unless told (``--methods``): one entry per method and classic process."""
OWN_AR_JUDGE = "ar"  # judge name meaning the comparison's own autoregressive run


COMPARE_PRESETS = "gdds.engine.configs.compare"


def compare_preset_names() -> list[str]:
    """The comparison presets shipped in ``gdds/engine/configs/compare`` (``gdds compare --preset``)."""
    return preset_names(COMPARE_PRESETS)


def read_compare_preset(name_or_path: str) -> dict[str, Any]:
    """A comparison preset: ``gdds compare``'s options as a YAML mapping (option names with ``_``,
    e.g. ``sample_steps``; ``overrides`` is a list of ``key=value``), by name or from a file."""
    return read_yaml(name_or_path, COMPARE_PRESETS, "comparison preset")


class Interrupted(RuntimeError):
    """Training was stopped by a signal (its checkpoint is saved); the comparison stops too."""


def entry_config(base: str, name: str, overrides: Sequence[str] = ()) -> Config:
    """The configuration of entry ``name`` on preset ``base`` with shared ``overrides``."""
    if name not in ENTRIES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(ENTRIES)}")
    return load_config(base, [*overrides, *ENTRIES[name]])


def at_entropy(samples: Sequence[SampleReport], target: float, judge: int = 0) -> float | None:
    """Generative perplexity (judge ``judge``: 0 the main one) at unigram entropy ``target``, linear
    in log-perplexity between the two samples of a nucleus sweep around it; ``None`` when the sweep
    does not reach ``target`` (no extrapolation)."""
    return log_interpolate([(r.unigram_entropy, r.judged()[judge]["perplexity"]) for r in samples
                            if len(r.judged()) > judge], target)


def run_name(name: str, seed: int, base_seed: int) -> str:
    """The folder of entry ``name`` trained with ``seed``: ``name`` for the base preset's seed,
    ``name-seed<k>`` for the others."""
    return name if seed == base_seed else f"{name}-seed{seed}"


@dataclass
class ComparisonRow:
    """One run's evaluation (entry ``method`` trained with ``seed``), training time in this call,
    logged training throughput and tokens, and whether the evaluation was ``computed`` now,
    ``reused`` or ``recomputed`` (a saved one was made by other code: :data:`EVALUATIONS`)."""

    method: str
    seed: int
    report: EvalReport
    train_seconds_this_call: float
    train_tokens_per_s: float
    tokens: int
    evaluation: str = "computed"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "report": self.report.to_dict(),
                "train_seconds_this_call": self.train_seconds_this_call,
                "train_tokens_per_s": self.train_tokens_per_s, "tokens": self.tokens, "evaluation": self.evaluation}


@dataclass
class Comparison:
    """The result of :func:`compare` (``compare.json``): ``rows`` by run folder name, and each
    entry's difference from ``reference`` paired on blocks, per seed (:mod:`gdds.engine.evaluation.paired`),
    judged on ``judged_seeds`` (``None``: every seed); ``pairs`` names an entry's own counterpart as well
    (a block model's full-diffusion model), paired the same way."""

    base: str
    overrides: list[str]
    entries: dict[str, list[str]]
    settings: EvalSettings
    rows: dict[str, ComparisonRow]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    reference: str | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)  # command, commit, date, machine
    judged_seeds: list[int] | None = None
    selection: dict[str, Any] | None = None  # {seed, among, differences, chosen}: _select
    pairs: dict[str, str] = dataclasses.field(default_factory=dict)  # entry -> its counterpart

    @property
    def judged(self) -> list[int]:
        """The seeds the verdicts use."""
        return list(self.seeds if self.judged_seeds is None else self.judged_seeds)

    @property
    def target_entropy(self) -> float | None:
        """The unigram entropy of real validation text at the samples' size: where methods are compared."""
        return next((r.report.data_entropy for r in self.rows.values() if r.report.data_entropy is not None), None)

    def judges(self) -> list[str]:
        """The judges' names, the main one first."""
        first = next(iter(self.rows.values())).report.own_law_samples()
        return [record["judge"] for record in first.judged()]

    @property
    def common_entropy(self) -> float | None:
        """The highest unigram entropy that every run's nucleus sweep reaches (a nucleus only lowers
        entropy, so a sweep starting below :attr:`target_entropy` never reaches it); ``None`` when
        the sweeps do not overlap."""
        sweeps = [[r.unigram_entropy for r in row.report.nucleus_sweep()] for row in self.rows.values()]
        if not all(sweeps):
            return None
        level = min(max(s) for s in sweeps)
        return level if level >= max(min(s) for s in sweeps) else None

    def equal_entropy(self, run: str, target: float | None = None) -> list[float | None]:
        """Each judge's generative perplexity of ``run``'s nucleus sweep at entropy ``target``
        (default :attr:`target_entropy`; :func:`at_entropy`; ``None`` where the sweep does not
        reach it)."""
        sweep = self.rows[run].report.nucleus_sweep()
        target = self.target_entropy if target is None else target
        return [None if target is None else at_entropy(sweep, target, j) for j in range(len(self.judges()))]

    @property
    def differences(self) -> dict[str, SeededDifference]:
        """Each entry's bound minus the reference's, on every seed both were trained with; the
        verdicts use the :attr:`judged` seeds only."""
        if self.reference is None:
            return {}
        return {name: d for name in self.entries if name != self.reference
                and (d := self._paired(name, self.reference)) is not None}

    @property
    def pair_differences(self) -> dict[str, SeededDifference]:
        """Each paired entry's bound minus its counterpart's (:attr:`pairs`), as :attr:`differences`."""
        return {name: d for name, other in self.pairs.items() if (d := self._paired(name, other)) is not None}

    def _paired(self, name: str, other: str) -> SeededDifference | None:
        """``name``'s bound minus ``other``'s on the seeds both have (``None``: no such seed)."""
        theirs = {r.seed: r for r in self.runs_of(other)}
        runs = [r for r in self.runs_of(name) if r.seed in theirs]
        if not runs:
            return None
        return seeded_difference(name, other, [r.seed for r in runs], [
            (r.report.likelihood.model, theirs[r.seed].report.likelihood.model) for r in runs], self.judged)

    def runs_of(self, method: str) -> list[ComparisonRow]:
        """The rows of entry ``method``, one per seed, in seed order."""
        return sorted((r for r in self.rows.values() if r.method == method), key=lambda r: r.seed)

    def to_dict(self) -> dict[str, Any]:
        common = self.common_entropy
        return {"base": self.base, "overrides": self.overrides, "methods": self.entries,
                "bound_steps": self.settings.steps, "sequences": self.settings.sequences,
                "judge": self.settings.judge, "seeds": self.seeds, "judged_seeds": self.judged,
                "reference": self.reference, "settings": self.settings.to_dict(), "provenance": self.provenance,
                "code_fingerprint": code_fingerprint(), "selection": self.selection,
                "differences": {n: d.to_dict() for n, d in self.differences.items()},
                "pairs": self.pairs, "pair_differences": {n: d.to_dict() for n, d in self.pair_differences.items()},
                "target_entropy": self.target_entropy,
                "generative_perplexity_at_target_entropy": {n: dict(zip(self.judges(), self.equal_entropy(n)))
                                                             for n in self.rows},
                "common_entropy": common,
                "generative_perplexity_at_common_entropy": None if common is None else {
                    n: dict(zip(self.judges(), self.equal_entropy(n, common))) for n in self.rows},
                "rows": {n: r.to_dict() for n, r in self.rows.items()}}


def _trained(cfg: Config, run_dir: Path, log: Callable[[str], None]) -> float:
    """Train (or resume, or skip a finished run); seconds spent training now."""
    if archived(cfg, run_dir):
        log(f"{run_dir.name}: archived run found (its evaluation, no checkpoints), not retrained")
        return 0.0
    done = ck.list_checkpoints(run_dir)
    if done:
        _check_settings(cfg, run_dir)
    if done and ck.read_json(ck.latest_checkpoint(run_dir) / "manifest.json")["step"] >= cfg.train.max_steps:
        log(f"{run_dir.name}: finished run found, not retrained")
        return 0.0
    log(f"{run_dir.name}: training {cfg.train.max_steps} steps")
    tic = time.perf_counter()
    result = train(cfg, run_dir, resume=bool(done))
    if result.stopped_at is not None:
        raise Interrupted(f"{run_dir.name}: stopped at step {result.stopped_at} (checkpoint saved); "
                          "run the same command again to resume the comparison")
    return time.perf_counter() - tic


def _check_settings(cfg: Config, run_dir: Path) -> None:
    """A :class:`ConfigError` when the run in ``run_dir`` was trained with other settings than ``cfg``
    (:func:`gdds.engine.resume.changed_settings`): reused or resumed, it would stand in the table for a
    configuration it is not."""
    changed = changed_settings(cfg, run_dir)
    if changed:
        raise ConfigError(f"{run_dir} was trained with other settings than this comparison asks for "
                          f"({'; '.join(changed)}): move it away (or choose another --out) to train it again")


def _throughput(run_dir: Path) -> float:
    """Median training throughput (tokens/s) over the run's logged steps."""
    rates = [r["tokens_per_s"] for r in read_log(run_dir) if r.get("kind") == "train" and "tokens_per_s" in r]
    return float(statistics.median(rates)) if rates else float("nan")


EVALUATIONS = ("computed", "reused", "recomputed")  # how a row's evaluation was obtained (ComparisonRow)


def _evaluated(run_dir: Path, settings: EvalSettings, steps: int, log: Callable[[str], None],
               device: str = "auto") -> tuple[EvalReport, str]:
    """The evaluation report of ``run_dir`` and how it was obtained (:data:`EVALUATIONS`): reused
    from ``compare_eval.json`` when it was made with the same settings on the same finished run by
    the same code (:func:`gdds.version.code_fingerprint`), else computed and saved; an evaluation
    made by other code is ``recomputed``."""
    code = code_fingerprint()
    key = {**settings.to_dict(), "continuous_samples": CONTINUOUS_SAMPLES, "step": steps, "code": code}
    how, saved = "computed", read_saved(run_dir)
    if saved is not None:
        old = dict(saved.get("key", {}))
        made_by = old.pop("code", None)
        if saved.get("key") == key:
            log(f"{run_dir.name}: evaluation with these settings and this code found, not repeated")
            return EvalReport.from_dict(saved["report"]), "reused"
        refuse_archived(run_dir, made_by, code)
        if old == {k: v for k, v in key.items() if k != "code"}:
            how = "recomputed"
            log(f"{run_dir.name}: the saved evaluation was made by other code (fingerprint {made_by or 'unknown'}, "
                f"now {code}): evaluating again")
    log(f"{run_dir.name}: evaluating")
    report = evaluate(load_run(run_dir, device=device), settings, log=log)
    write_saved(run_dir, key, report.to_dict())
    return report, how


def _select(among: Sequence[str], reference: str, seed: int, folder: dict[tuple[str, int], Path],
            settings: EvalSettings, steps: dict[str, int], log: Callable[[str], None], device: str) -> dict[str, Any]:
    """The entry of ``among`` whose bound is lowest against ``reference``'s on the selection ``seed``
    (paired on blocks: :func:`gdds.engine.evaluation.paired.seeded_difference`), with every candidate's difference."""
    def report(name: str) -> EvalReport:
        return _evaluated(folder[name, seed], settings, steps[name], log, device)[0]

    ref = report(reference).likelihood.model
    diffs = {name: seeded_difference(name, reference, [seed], [(report(name).likelihood.model, ref)]).per_seed[0]
             for name in among}
    chosen = min(diffs, key=diffs.__getitem__)
    log(f"selection on seed {seed}: {chosen} (bound minus {reference}'s: "
        + ", ".join(f"{n} {d:+.3f}" for n, d in diffs.items()) + ")")
    return {"seed": seed, "among": list(among), "reference": reference, "differences": diffs, "chosen": chosen}


def compare(out: Path, entries: Sequence[str], settings: EvalSettings, base: str = "demo",
            overrides: Sequence[str] = (), log: Callable[[str], None] = lambda message: None,
            device: str = "auto", seeds: Sequence[int] | None = None, reference: str | None = None,
            seeded: Sequence[str] | None = None, train_only: bool = False,
            provenance: dict[str, Any] | None = None, judged_seeds: Sequence[int] | None = None,
            select: Sequence[str] = (), pairs: dict[str, str] | None = None) -> Comparison | None:
    """Train and evaluate ``entries`` into ``out/<run>`` (:func:`run_name`) on ``device`` (``auto``: a
    GPU when there is one): the entries of ``seeded`` (default all) with every training seed of
    ``seeds`` (default the base preset's), the others with the first. Pair each entry's bound with
    ``reference``'s (default ``gdds-mask`` when compared) on every seed both have, with verdicts on
    ``judged_seeds`` only (default all of ``seeds``; leave out the seed a variant was selected on); write
    ``out/compare.json`` (with ``provenance``: :func:`gdds.engine.provenance.provenance`) and return it
    (``train_only``: train, evaluate nothing but what the selection needs, return ``None``). ``select``:
    candidates; after the first seed is trained, the one whose bound is lowest against ``reference``'s
    on that seed (:func:`_select`) is trained with every seed too, so a variant is chosen on one seed
    and judged on the others (``judged_seeds``) by a rule fixed in advance. ``pairs``: entry -> its own
    counterpart (also compared), paired as with the reference.
    Every run is bounded on the same blocks with the same draws, so entries on the same process share
    their noise too."""
    out = Path(out)
    code_fingerprint()  # read the sources now: a comparison runs for hours, and they may be edited meanwhile
    if reference is None and "gdds-mask" in entries:
        reference = "gdds-mask"
    if reference is not None and reference not in entries and not train_only:
        raise ValueError(f"the reference {reference!r} must be one of the compared methods")
    unknown = set(seeded or ()) - set(ENTRIES)  # (seeded methods not compared this time are left out)
    if unknown:
        raise ValueError(f"unknown seeded methods {sorted(unknown)}; choose from {', '.join(ENTRIES)}")
    pairs = dict(pairs or {})
    if set(pairs) - set(entries) or set(pairs.values()) - set(entries):
        raise ValueError(f"every pair {pairs} must name two compared methods")
    if select and (reference is None or set(select) - set(entries)):
        raise ValueError(f"the selection candidates {list(select)} must be compared methods, with a reference")
    trained_on = [] if device == "auto" else [f"train.device={device}"]
    base_seed = load_config(base, list(overrides)).seed
    seeds = [base_seed] if seeds is None else list(dict.fromkeys(seeds))
    if judged_seeds is not None and (not judged_seeds or set(judged_seeds) - set(seeds)):
        raise ValueError(f"the judged seeds {list(judged_seeds)} must be some of the trained seeds {seeds}")
    seeds_of = {name: seeds if seeded is None or name in seeded else seeds[:1] for name in entries}

    def configs_of(names: Sequence[str]) -> dict[tuple[str, int], Config]:
        return {(name, seed): entry_config(base, name, [*overrides, *trained_on, f"seed={seed}"])
                for name in names for seed in seeds_of[name]}

    configs = configs_of(entries)
    folder = {key: out / run_name(*key, base_seed) for key in configs}
    train_s = {key: _trained(cfg, folder[key], log) for key, cfg in configs.items() if key[1] == seeds[0]}
    if OWN_AR_JUDGE in (settings.judge, *settings.more_judges):
        if "ar" not in entries:
            raise ValueError("the judge 'ar' needs the ar method in the comparison")
        own = str(folder["ar", seeds[0]])
        settings = dataclasses.replace(settings, judge=own if settings.judge == OWN_AR_JUDGE else settings.judge,
                                       more_judges=[own if j == OWN_AR_JUDGE else j for j in settings.more_judges])
    selection = None
    if select:
        selection = _select(select, reference, seeds[0], folder, settings,
                            {name: configs[name, seeds[0]].train.max_steps for name in entries}, log, device)
        seeds_of[selection["chosen"]] = seeds
        configs = configs_of(entries)
        folder = {key: out / run_name(*key, base_seed) for key in configs}
    train_s.update({key: _trained(cfg, folder[key], log) for key, cfg in configs.items() if key not in train_s})
    if train_only:
        return None
    rows = {}
    for (name, seed), cfg in configs.items():  # same blocks and draws for every run
        report, how = _evaluated(folder[name, seed], settings, cfg.train.max_steps, log, device)
        rows[folder[name, seed].name] = ComparisonRow(
            name, seed, report, train_s[name, seed], _throughput(folder[name, seed]),
            cfg.train.max_steps * cfg.train.batch_size * cfg.data.seq_len, how)
    result = Comparison(base, list(overrides), {n: ENTRIES[n] for n in entries}, settings, rows, seeds, reference,
                        provenance=dict(provenance or {}),
                        judged_seeds=None if judged_seeds is None else list(dict.fromkeys(judged_seeds)),
                        selection=selection, pairs=pairs)
    write_text_atomically(out / "compare.json", json.dumps(result.to_dict(), indent=1))
    return result

