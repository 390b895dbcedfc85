"""``gdds sample`` (generate from a trained run) and ``gdds eval`` (its honest evaluation); the
evaluation options shared with ``gdds compare`` are added by :func:`add_eval_options` and read
back as one :class:`~gdds.engine.evaluation.evaluate.EvalSettings` by :func:`eval_settings`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..categorical import Decoding
from ..data import UnknownTextError
from ..engine.build import LoadedRun
from ..engine.config import ConfigError
from ..engine.distributed import resolve_device
from ..engine.evaluation.evaluate import EvalSettings, evaluate
from ..engine.evaluation.generation import generate
from ..engine.evaluation.judge_conventions import CONVENTIONS
from ..engine.evaluation.mauve_score import MauveSettings
from ..engine.evaluation.reports import KLProfile
from ..engine.model_folder import open_model
from ..files import check_writable, write_text_atomically
from ..samplers import CAUSAL, SAMPLERS, SamplerError
from ..unmasking import SCORES
from .render import eval_markdown, write_eval

# `gdds sample --steps` above this is refused: each step is a network call on every sequence, and the
# time grid is held in memory (the paper samples with at most a few thousand).
MAX_SAMPLE_STEPS = 100_000
JUDGE_HELP = ("judge LM of generative perplexity: 'smollm2' (offline default judge), hf:NAME (a causal LM in the "
              "local Hugging Face cache only, e.g. hf:gpt2-large, the judge of MDLM, Duo, SEDD; never downloaded), "
              "a .gguf file, a local model folder or an AR run folder")


DECODING = tuple(f.name for f in dataclasses.fields(Decoding))
"""The fields of :class:`gdds.Decoding`, each an option of ``gdds sample`` (``--top-k``, ...)."""


def checked(what: str, rule: str, accepts: Callable[[float], bool],
            convert: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: ``convert(text)`` (a number) that ``accepts`` takes; the error says that ``what``
    must ``rule``, so a bad value is refused while parsing, before any model is read."""
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accepts(value):  # comparisons with NaN are false: NaN is refused too
            raise argparse.ArgumentTypeError(f"{what} must {rule}; got {text}")
        return value

    return parse


def unit_interval(what: str, note: str = "") -> Callable[[str], float]:
    """An argparse type: a number in ``(0, 1]``; ``what`` (and ``note``) name it in the error."""
    return checked(what, f"lie in (0, 1]{f' ({note})' if note else ''}", lambda value: 0 < value <= 1)


def output_folder(args: argparse.Namespace, folder: Path) -> Path:
    """``folder`` (of ``--out``) once :func:`gdds.files.check_writable` finds it can be written, before
    any compute; a usage error naming it otherwise."""
    try:
        check_writable(folder)
    except OSError as exc:
        args.parser.error(f"cannot write to {folder} ({exc.strerror or exc}); choose another folder with --out")
    return folder


def sampling_bytes(loaded: LoadedRun, length: int) -> int:
    """What one sequence of ``length`` tokens surely holds during a reverse step (:func:`check_memory`): a
    block model steps one block at a time and keeps the keys and values of its context (at most the
    network's positions) instead."""
    net, block = loaded.run.model.config, loaded.method.block_size
    stepped = length if block is None else min(block, length)
    context = 0 if block is None else min(length, net.max_len) * net.layers * 2 * net.width * 4
    return stepped * (8 * net.padded_vocab + 128 * net.width) + 32 * length + context


def check_memory(args: argparse.Namespace, loaded: LoadedRun, length: int) -> None:
    """A usage error naming ``--num`` when sampling ``args.num`` sequences at once cannot fit in the
    device's memory. The estimate counts only what a reverse step surely holds per token: the
    float32 logits (and their normalised copy), the network's activations (about 32 floats of its
    width) and the token ids, so it errs low; above it, torch would fail with an allocation error."""
    per_sequence = sampling_bytes(loaded, length)
    if loaded.device.type == "cuda":
        total = torch.cuda.get_device_properties(loaded.device).total_memory
    else:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if args.num * per_sequence > total:
        args.parser.error(f"--num {args.num}: sampling {args.num} sequences of {length} tokens at once needs about "
                          f"{args.num * per_sequence / 2**30:,.0f} GiB, more than the {total / 2**30:,.0f} GiB of "
                          f"{loaded.device.type}; use --num {max(1, total // per_sequence):,} or fewer, and another "
                          "--seed for more")


def add_device_option(p: argparse.ArgumentParser) -> None:
    """``--device``: where the command runs (the one definition of the option)."""
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto (a GPU when there is one, default), cpu, cuda or cuda:N")


def device_of(args: argparse.Namespace) -> torch.device:
    """The device of ``--device``; one that does not exist here is a usage error."""
    try:
        return resolve_device(args.device)
    except ValueError as exc:
        args.parser.error(f"--device: {exc}")


def add_judge_convention(p: argparse.ArgumentParser, default: str) -> None:
    """``--judge-convention`` (:mod:`gdds.engine.evaluation.judge_conventions`), shared by every command with judges."""
    p.add_argument("--judge-convention", choices=CONVENTIONS, default=default,
                   help="how the judges turn samples into scored tokens: 'gdds' (default: a prefix token, every "
                        "token scored, sliding window) or 'mdlm' (MDLM's and Duo's: their tokenizer call, truncation "
                        "to the sample length, the texts of one call padded together, chunks of the judge's context, "
                        "first token of each chunk unscored). Numbers under different judges or conventions are not "
                        "comparable; the judge's label names both")


def add_eval_options(p: argparse.ArgumentParser, defaults: EvalSettings) -> None:
    """The options of an :class:`EvalSettings` (``--judge``'s help is the caller's)."""
    p.add_argument("--steps", type=int, default=defaults.steps, help=f"T of the bound (default {defaults.steps})")
    p.add_argument("--sequences", type=int, default=defaults.sequences,
                   help=f"validation blocks to bound (default {defaults.sequences})")
    p.add_argument("--sample-steps", type=int, nargs="+", default=list(defaults.sample_steps),
                   help="step counts to sample with")
    p.add_argument("--num-samples", type=int, default=defaults.num_samples)
    p.add_argument("--sample-top-p", type=unit_interval("each nucleus top-p"), nargs="+", default=list(defaults.top_p),
                   metavar="P",
                   help="nucleus settings to sample with (1: the model's own law; a sweep such as 1 0.95 0.9 0.8 "
                        "traces generative perplexity against entropy)")
    p.add_argument("--more-judges", nargs="*", default=list(defaults.more_judges), metavar="JUDGE",
                   help="other judges scoring the same samples (e.g. smollm2 hf:gpt2-large)")
    add_judge_convention(p, defaults.judge_convention)
    p.add_argument("--zero-shot", nargs="*", default=list(defaults.zero_shot), metavar="CORPUS",
                   help="e.g. kjv wikipedia (end the list with -- before overrides)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--profile-steps", type=int, default=defaults.profile_steps,
                   help=f"T of the per-step profile of the bound, model and baseline (0: none; default "
                        f"{defaults.profile_steps})")
    p.add_argument("--profile-sequences", type=int, default=defaults.profile_sequences,
                   help=f"validation blocks of that profile (default {defaults.profile_sequences})")
    p.add_argument("--paper-metric", action="store_true",
                   help="also the paper's reported figure (the true jump mask carried into the output: NOT a "
                        "likelihood), beside the bound")
    p.add_argument("--paper-metric-grid", type=int, default=None, metavar="T",
                   help="snap the paper metric's times to a grid of T steps")
    p.add_argument("--all-terms", action="store_true",
                   help="bound each sequence with all T terms (T network calls) instead of one drawn term")
    p.add_argument("--importance-terms", action="store_true",
                   help="draw the bound's term from the baseline's profile (importance sampling: less variance)")
    mauve = MauveSettings()
    p.add_argument("--mauve", action="store_true",
                   help="also MAUVE of each sample set against held-out validation text (an estimate with a "
                        "bootstrap SE; slow: needs at least 10 samples, about 100 or more to mean much)")
    p.add_argument("--mauve-featurizer", default=mauve.featurizer, metavar="JUDGE",
                   help=f"the offline causal LM whose last-token hidden states MAUVE compares (default "
                        f"{mauve.featurizer}; MAUVE under different featurizers is not comparable)")
    p.add_argument("--mauve-references", type=int, default=None, metavar="N",
                   help="held-out texts MAUVE compares the samples with (default: as many as samples)")
    p.add_argument("--mauve-resamples", type=int, default=mauve.resamples, metavar="B",
                   help=f"bootstrap draws of MAUVE's standard error (default {mauve.resamples})")


def eval_settings(args: argparse.Namespace) -> EvalSettings:
    """The :class:`EvalSettings` of parsed options; a bad value is a usage error."""
    try:
        return EvalSettings(steps=args.steps, sequences=args.sequences, sample_steps=tuple(args.sample_steps),
                            num_samples=args.num_samples, judge=args.judge, zero_shot=tuple(args.zero_shot),
                            seed=args.seed, sample_length=getattr(args, "sample_length", None),
                            profile_steps=args.profile_steps, profile_sequences=args.profile_sequences,
                            paper_metric=args.paper_metric, paper_metric_grid=args.paper_metric_grid,
                            all_terms=args.all_terms, importance_terms=args.importance_terms,
                            top_p=tuple(args.sample_top_p), more_judges=tuple(args.more_judges),
                            mauve=MauveSettings(featurizer=args.mauve_featurizer, references=args.mauve_references,
                                                resamples=args.mauve_resamples) if args.mauve else None,
                            judge_convention=args.judge_convention)
    except ValueError as exc:
        args.parser.error(str(exc))


def add_sample(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="generate text from a trained run with the model's own sampler",
                              description="Sample from the latest checkpoint of RUN_DIR (EMA weights), or from a "
                              "model folder (gdds export), with a sampler of the library (--sampler): by default "
                              "the model's own law, the exact reverse chain p_theta(x_s | x_t) that `gdds eval` "
                              "scores (an autoregressive model: exact ancestral sampling); 'renoise' is the "
                              "APPROXIMATE renoise sampler (no likelihood applies to its samples); 'ordered', "
                              "'threshold' and 'remdm' are the mask kernel's faster samplers (not the bounded "
                              "chain; docs/sampling.md).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--sampler", choices=SAMPLERS.names(), default=None,
                   help="; ".join(f"{name}: the {entry.label}" for name, entry in SAMPLERS.items())
                   + " (default: the method's first; a sampler refuses options it does not take)")
    p.add_argument("--approximate", action="store_const", const="renoise", dest="sampler",
                   help="shorthand for --sampler renoise")
    p.add_argument("--num", type=int, default=None, help="number of sequences (default 4; with several --prompt, "
                   "one per prompt)")
    p.add_argument("--steps", type=int, default=64, help=f"reverse steps T (default 64, at most {MAX_SAMPLE_STEPS:,})")
    p.add_argument("--length", type=int, default=None, help="tokens per sequence (default and most: the training "
                   "length, data.seq_len; a block-diffusion model takes any length)")
    p.add_argument("--spacing", choices=("t", "lambda"), default=None,
                   help="exact, corrector, ordered and remdm samplers: time grid uniform in t (default) or in Lambda")
    p.add_argument("--score", choices=SCORES.names(), default=None,
                   help="ordered sampler (mask kernel): reveal first the positions whose mu has the largest "
                   "probability (confidence, default), top-1 minus top-2 margin, or lowest entropy")
    p.add_argument("--threshold", type=unit_interval("the confidence threshold"), default=None,
                   help="threshold sampler (mask kernel): reveal every position whose largest probability "
                   "reaches it (and the most confident one) at each network call, in (0, 1] (default 0.9)")
    p.add_argument("--eta", type=checked("eta", "lie in [0, 1]", lambda value: 0 <= value <= 1), default=None,
                   help="remdm sampler (mask kernel): the remasking cap sigma_t = min(eta, (1 - alpha_s) / "
                   "alpha_t), in [0, 1] (default 0.02; 0 is the exact chain)")
    p.add_argument("--fitted-grid", type=Path, default=None, metavar="EVAL_JSON",
                   help="exact and corrector samplers: the --steps time points placed so that each step pays "
                   "about the same share of the bound's nats in the per-step profile that `gdds eval "
                   "--profile-steps` saved in EVAL_JSON (gdds.step_grids.fitted_grid)")
    p.add_argument("--corrector-steps", type=checked("--corrector-steps", "be an integer >= 0",
                                                     lambda value: value >= 0, int), default=None,
                   help="corrector sampler: forward-backward moves after each step (default 1; 0: the exact chain); "
                   "network calls per sequence: steps * (1 + corrector steps)")
    p.add_argument("--corrector-delta", type=checked("--corrector-delta", "lie in (0, 1]",
                                                     lambda value: 0 < value <= 1), default=None,
                   help="corrector sampler: each move renoises from s to s + delta (t - s), a fraction of the step "
                   "t -> s (default 0.5)")
    p.add_argument("--temperature", type=checked("the temperature", "be a positive finite number",
                                                  lambda value: 0 < value < float("inf")), default=None,
                   help="every sampler: mu^(1/T), the first filter (not 1 changes the model)")
    p.add_argument("--top-k", type=checked("top-k", "be a positive integer", lambda value: value >= 1, int),
                   default=None,
                   help="every sampler: keep the k most probable clean tokens, after the "
                   "temperature (below the vocabulary changes the model)")
    p.add_argument("--top-p", type=unit_interval("the nucleus top-p"), default=None,
                   help="every sampler: nucleus filtering, in (0, 1], after top-k "
                   "(below 1 changes the model)")
    p.add_argument("--min-p", type=checked("min-p", "lie in [0, 1]", lambda value: 0 <= value <= 1), default=None,
                   help="every sampler: keep the tokens with at least min-p times the "
                   "largest probability, in [0, 1], the last filter (above 0 changes the model)")
    p.add_argument("--gumbel", action="store_const", const=True, default=None,
                   help="exact sampler: Gumbel-max on float32 instead of float64 inverse CDF")
    p.add_argument("--prompt", action="append", default=None,
                   help="text fixed at the start of every sequence; given several times, one sequence per prompt "
                   "(batched prompts of any lengths, sequence i seeded --seed + i)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="block sampler: each text ends at its end-of-text token, and generation stops once "
                   "every sequence has one (--length is then the most)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="also write the samples to this JSON file")
    add_device_option(p)
    p.set_defaults(run=run_sample, parser=p)


def run_sample(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    prompts = args.prompt or []
    if len(prompts) > 1 and args.num not in (None, len(prompts)):
        parser.error(f"--num {args.num} with {len(prompts)} prompts: several --prompt give one sequence each "
                     f"(leave out --num, or give --num {len(prompts)})")
    args.num = (4 if args.num is None else args.num) if len(prompts) < 2 else len(prompts)
    if args.num < 1 or not 1 <= args.steps <= MAX_SAMPLE_STEPS:
        parser.error(f"--num must be at least 1 and --steps in [1, {MAX_SAMPLE_STEPS:,}]; got --num {args.num}, "
                     f"--steps {args.steps}")
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; give the JSON file to write, e.g. {args.out / 'samples.json'}")
    if args.out is not None:
        output_folder(args, args.out.parent)
    fitted = None
    if args.fitted_grid is not None:
        if args.spacing is not None:
            parser.error("--fitted-grid places the time points itself; drop --spacing")
        try:
            fitted = KLProfile.of_eval(args.fitted_grid).fitted_grid(args.steps)
        except ValueError as exc:
            parser.error(str(exc))
    loaded = open_model(args.run_dir, device=str(device_of(args)), with_data=False)
    options = {key: value for key in ("spacing", "gumbel", "score", "threshold", "eta", "corrector_steps",
                                      "corrector_delta") if (value := getattr(args, key)) is not None}
    if fitted is not None:
        options["grid"] = fitted
    filters = {key: value for key in DECODING if (value := getattr(args, key)) is not None}
    if filters:  # each was checked while parsing
        options["decoding"] = Decoding(**filters)
    if args.stop_at_eos:
        options["eos"] = loaded.run.data.tokenizer.eos_id
    try:
        sampler = loaded.method.sampler(args.sampler)
        sampler.check(options)
        length = loaded.sample_length(args.length, "--length")
    except (SamplerError, ConfigError) as exc:
        parser.error(str(exc))
    try:
        rows = [loaded.run.data.tokenizer.encode_exact(text, "the prompt") if text else [] for text in prompts]
    except UnknownTextError as exc:
        parser.error(str(exc))
    for row in rows:
        if len(row) >= length:
            parser.error(f"the prompt has {len(row)} tokens; the model's length is {length}")
    check_memory(args, loaded, length)
    batched = {"prompts": rows} if len(rows) > 1 else {}
    texts = generate(loaded, args.num, args.steps, args.seed, length, rows[0] if len(rows) == 1 else [],
                     args.sampler, **batched, **options)[1]
    grid = f"grid fitted to {args.fitted_grid}" if args.fitted_grid else f"{args.spacing or 't'} grid"
    label = sampler.label if sampler.source == CAUSAL else f"{sampler.label}, {args.steps} steps" + (
        f" ({grid})" if "spacing" in sampler.options else "")
    print(f"{len(texts)} samples from {loaded.checkpoint} ({loaded.weights} weights), {label}:")
    for i, text in enumerate(texts):
        print(f"[{i + 1}] {text}")
    if args.out is not None:
        write_text_atomically(args.out, json.dumps({"sampler": label, "checkpoint": str(loaded.checkpoint),
                                                    "texts": texts}, indent=1))
    return 0


def add_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="honest evaluation of a trained run (bound, samples, judge, zero-shot)",
                              description="Evaluate the latest checkpoint of RUN_DIR (or a model folder, on the "
                              "corpus of its configuration): the T-step NLL upper bound "
                              "with its standard error, the snapshot CE (not a likelihood), samples at several "
                              "step counts with their unigram entropy and (with --judge) generative perplexity "
                              "(with --mauve also their MAUVE against held-out text), and zero-shot bounds on other "
                              "corpora. Writes eval.json, eval.md and a figure.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    add_eval_options(p, EvalSettings())
    p.add_argument("--sample-length", type=int, default=None, help="tokens per sample (default: the training length)")
    p.add_argument("--judge", default=None, help=JUDGE_HELP)
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/eval)")
    add_device_option(p)
    p.set_defaults(run=run_eval, parser=p)


def run_eval(args: argparse.Namespace) -> int:
    settings = eval_settings(args)
    out = output_folder(args, args.out or args.run_dir / "eval")
    loaded = open_model(args.run_dir, device=str(device_of(args)))
    try:  # a setting that does not fit the model (--sample-length, --zero-shot) is a usage error
        report = evaluate(loaded, settings,
                          log=lambda message: print(f"gdds eval: {message}", file=sys.stderr, flush=True))
    except ConfigError as exc:
        args.parser.error(str(exc))
    paths = write_eval(report, out)
    print(eval_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
