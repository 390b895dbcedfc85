"""Cost of the exact operators for the paper's kernel at real vocabularies (issue 23, part 2).

What it measures, on 2 CPU cores, for the semantic kNN kernel (SIK) at the paper's settings (``k = 64``,
``eps = 0.01``, local bandwidth, tempering ``b`` (0.2 unless ``--b``), sigmoid teleport) on random
embeddings (``d = 64``) at ``m = 12,590`` (the WordPiece runs' compact vocabulary) and ``m = 50,257``
(GPT-2), under ``LogLinear(1e-3)``, with a stand-in denoiser (fixed random logits), for a batch of
``B`` sequences of ``L`` tokens (8 x 128; ``--quick``: fewer, see ``QUICK``) whose clean tokens are
drawn from a Zipf law (``p(rank) ~ rank^-1.1``, as in text: work per distinct token is shared):

- ``step``: one exact sampler step from ``t = 1`` to ``s = 1 - 1/T`` (``T = 128``), every position.
  *Reference*: the float64 path of a7bf748 (``reverse_step_probs(mu)``, ``mu`` the softmax of the
  logits). *New*: the forward parametrization's step (``reverse_step_probs(weighted=True)``: the step
  weights the network's law by the ``q_t`` it computes) with the default operators (float32 products of
  the kNN part summed in float64, ``gdds.power_sums.Products``).
- ``term``: the bound term ``KL(q(x_s | x_t, x0) || p(x_s | x_t))`` of that step for the model *and*
  the Bayes-unigram baseline, as every evaluation computes them. *Reference*: a7bf748's algorithm in
  float64 (each denoiser alone; the true posterior through one operator column per position; the
  baseline's ``q_t`` by a separate operator pass). *New*: both denoisers on shared draws
  (``gdds.posterior.posterior_and_steps``: ``r``, ``g`` and the true posterior once, one column per
  distinct clean token).
- ``accuracy``: the new path against the float64 path *of the same model* (weighted steps and
  terms computed with ``precision="float64"``): the largest total-variation distance between steps
  (``max_tv``, target 1e-6) and the largest change of a term per token (target 1e-4 nats).
- ``training``: the exact forward likelihood's cost per training step (``forward_cross_entropy`` of
  16 sequences x 128 tokens; ``--quick`` times fewer sequences and scales) beside the one-jump
  surrogate's, at ``m = 89`` (the decisive comparison's characters), 12,590 and 50,257; at ``b = 0`` also with
  each token's powers kept (``gdds.token_powers``, the default 2 GiB): the first call, which keeps them, and
  the same batch again. Every other row keeps no powers (``process_of``), as before they existed.
- ``prior``: the exact prior term ``KL(q_1(. | x0) || p_1)`` of the batch, first call and repeated
  (the per-token terms are remembered per process).
- ``profile`` (``--profile``): where the new step and term spend their time, the step's operator
  applications timed alone (``g`` per distinct ``x_t``, ``w`` a dense column per position; ``r``, which
  only the mean parametrization needs) and the operators of each by own time under torch's profiler (on
  a GPU, GPU time).
- ``unblocked`` (``--unblocked``): the new step and term with every column multiplied at once
  (``OperatorSettings(block=None)``) beside the default blocks of 64 (the GPU suite asks for it).
- ``all_terms`` (full mode, ``m = 12,590``): the whole ``T = 128``-term bound of a model and its
  Bayes-unigram baseline on ``ALL_TERMS_BLOCKS`` blocks of 128 tokens, scaled to the 32 blocks of an
  evaluation (the issue's target: one hour on 2 cores).
- ``sample`` (full mode, ``m = 12,590``): a whole ``T = 128``-step exact sample of ``B`` sequences of 128
  tokens from a stand-in model (``gdds.sample``, the likelihood-weighted step).

``--device cuda`` runs the same measurements on a GPU (``benchmarks/gpu_suite.sh``): the inputs are drawn on
the CPU with the same seeds, then moved, and every timer waits for the GPU's queued work. ``--dry-run``
measures one tiny vocabulary (``m = 600``) in seconds, no ``all_terms`` (the GPU suite's dry run).

The last line printed is one JSON object, ``{"results": [{"m", "speedup_term_t1", "speedup_step_t1",
"max_tv"}, ...]}``; everything goes to ``DIR/operators.json`` (default ``results/bench``) with the
machine, versions and settings, rewritten after each measurement (a run stopped by a time limit keeps
what it measured). Run it alone (two CPU-heavy jobs on 2 cores distort each other)::

    python benchmarks/operators.py [--out DIR] [--quick | --dry-run] [--b 0.2] [--profile] [--unblocked]
        [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import gdds
from common import add_device, checked_device, command_line, machine_info, op_profile, timed, versions, write_json
from gdds import OperatorSettings
from gdds.baseline import bayes_unigram
from gdds.categorical import one_hot_columns
from gdds.kernels import SemanticKNN, SemanticSettings, cached_knn_graph
from gdds.likelihood import nll_bound, prior_kl
from gdds.objectives.parametrization import forward_cross_entropy, surrogate_cross_entropy
from gdds.posterior import forward_likelihood, posterior_and_steps, reverse_step_probs
from gdds.process import DEFAULT_POWER_CACHE
from gdds.sampling import LikelihoodWeighted, reference_prior

SEED, T, LOGIT_SCALE = 0, 128, 2.0
REFERENCE = OperatorSettings(precision="float64", block=None)  # a7bf748's path: float64, all columns at once


@dataclass(frozen=True)
class Size:
    """A vocabulary and the batch measured there (training: ``train_B`` sequences, scaled to 16)."""

    m: int
    B: int
    L: int
    train_B: int


FULL = (Size(12_590, 8, 128, 16), Size(50_257, 8, 128, 4))
ALL_TERMS_BLOCKS = 8
QUICK = (Size(12_590, 1, 64, 2), Size(50_257, 1, 16, 1))
DRY = (Size(600, 1, 16, 1),)
TRAIN_SMALL = Size(89, 0, 0, 16)


def process_of(m: int, b: float, cache: Path, device: str, power_cache: int = 0) -> gdds.ForwardProcess:
    """The paper's kernel on random embeddings (``d = 64``; ``k = min(64, m - 2)``), on the CPU (its kNN
    graph is found on ``device``): the inputs are drawn there, then everything moves to ``device``. No
    token powers are kept unless ``power_cache`` (bytes) says so, so that every call multiplies."""
    sched = gdds.LogLinear(1e-3)
    emb = torch.randn(m, 64 if m > 1000 else 16, generator=torch.Generator().manual_seed(SEED))
    settings = SemanticSettings(k=min(64, m - 2), b=b)
    cached_knn_graph(emb, settings.k, cache_dir=cache, progress=False, device=torch.device(device))
    kernel = SemanticKNN(emb, settings, schedule=sched, cache_dir=cache, progress=False)
    return gdds.ForwardProcess(sched, kernel, power_cache=power_cache)


def text_like(m: int, shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """Clean tokens drawn as text's are, roughly: ``p(rank) ~ rank^-1.1``."""
    weights = torch.arange(1, m + 1, dtype=torch.float64) ** -1.1
    return torch.multinomial(weights, math.prod(shape), replacement=True, generator=g).view(shape)


def kl_rows(q: Tensor, p: Tensor) -> Tensor:
    return torch.where(q > 0, q * (q.clamp_min(1e-300).log() - p.clamp_min(1e-300).log()), 0.0).sum(-1)


def reference_term(process: gdds.ForwardProcess, mu: Tensor, pi: Tensor, x0: Tensor, xt: Tensor, s: float,
                   t: float) -> tuple[Tensor, Tensor]:
    """a7bf748's bound term in float64: the model's step and the true posterior from one operator pass over
    ``[mu; e_{x0}]`` (a column per position), then the baseline alone, its ``q_t`` by a separate pass."""
    onehot = one_hot_columns(x0, process.m).T
    both = reverse_step_probs(process, torch.cat([mu, onehot]), torch.cat([xt, xt]), s, t, operators=REFERENCE)
    q, p = both[mu.shape[0]:], both[:mu.shape[0]]
    like = forward_likelihood(process, xt[None], torch.tensor([t], dtype=torch.float64), operators=REFERENCE)[0]
    base = pi * like
    both = reverse_step_probs(process, torch.cat([base / base.sum(-1, keepdim=True), onehot]), torch.cat([xt, xt]),
                              s, t, operators=REFERENCE)
    return kl_rows(q, p), kl_rows(both[mu.shape[0]:], both[:mu.shape[0]])


def new_term(process: gdds.ForwardProcess, rho: Tensor, pi: Tensor, x0: Tensor, xt: Tensor, s: float, t: float,
             operators: OperatorSettings | None = None) -> tuple[tuple[Tensor, Tensor], list[Tensor]]:
    """Model and baseline (likelihood-weighted) on shared draws: ``(KLs, steps)``."""
    q, steps = posterior_and_steps(process, [(rho, True), (pi.expand_as(rho), True)], x0, xt, s, t,
                                   operators=operators)
    return (kl_rows(q, steps[0]), kl_rows(q, steps[1])), steps


def tv(a: Tensor, b: Tensor) -> float:
    return float(0.5 * (a - b).abs().sum(-1).max())


def step_parts(process: gdds.ForwardProcess, rho: Tensor, xt: Tensor, s: float, t: float,
               device: str) -> dict[str, Any]:
    """The operator applications of one exact step (``gdds.posterior``), each timed alone with the default
    settings: ``g = P_{s->t}^T e_u`` (float64) per distinct ``x_t`` and ``w = P_{0->s} rho`` with one dense
    column per position (any dense columns cost the same), which are the likelihood-weighted step's; and
    ``r = P_{0->s}^T g`` (float64), which only the mean parametrization and decoding filters need."""
    op = OperatorSettings()
    uniq = torch.unique(xt)
    g, g_s = timed(lambda: process.transition(one_hot_columns(uniq, process.m), s, t, transpose=True,
                                              settings=op.exact()), device)
    r_s = timed(lambda: process.transition(g, 0.0, s, transpose=True, settings=op.exact()), device)[1]
    w_s = timed(lambda: process.transition(rho.T.contiguous(), 0.0, s, settings=op), device)[1]
    return {"positions": xt.numel(), "distinct_xt": uniq.numel(), "g_s": g_s, "r_s": r_s, "w_s": w_s}


def measure_size(size: Size, b: float, cache: Path, device: str, profiled: bool = False,
                 unblocked: bool = False) -> dict[str, Any]:
    """Step, term, accuracy and prior rows at one vocabulary; with ``profiled``, where the new step and term
    spend their time (:func:`step_parts`, and the operators by own time under torch's profiler); with
    ``unblocked``, the new step and term with every column multiplied at once (``block=None``) beside the
    default blocks (on a GPU, blocks may cost more launches than they save in cache)."""
    process, build = timed(lambda: process_of(size.m, b, cache, device))
    g = torch.Generator().manual_seed(SEED + 1)
    n = size.B * size.L
    x0 = text_like(size.m, (size.B, size.L), g)
    s, t = 1 - 1 / T, 1.0
    xt = process.noise(x0, t, generator=g).reshape(-1)
    logits = LOGIT_SCALE * torch.randn(n, size.m, generator=g, dtype=torch.float64)
    pi = torch.softmax(torch.randn(size.m, generator=g, dtype=torch.float64), 0)
    process.to(device)
    x0, xt, rho, pi = x0.reshape(-1).to(device), xt.to(device), torch.softmax(logits.to(device), -1), pi.to(device)
    _, ref_step_s = timed(lambda: reverse_step_probs(process, rho, xt, s, t, operators=REFERENCE), device)
    new_step, new_step_s = timed(lambda: reverse_step_probs(process, rho, xt, s, t, weighted=True), device)
    exact_step = reverse_step_probs(process, rho, xt, s, t, weighted=True, operators=REFERENCE)
    ref_terms, ref_term_s = timed(lambda: reference_term(process, rho, pi, x0, xt, s, t), device)
    (new_terms, new_steps), new_term_s = timed(lambda: new_term(process, rho, pi, x0, xt, s, t), device)
    exact_terms, exact_steps = new_term(process, rho, pi, x0, xt, s, t, operators=REFERENCE)
    max_tv = max([tv(new_step, exact_step)] + [tv(a, b) for a, b in zip(new_steps, exact_steps)])
    term_change = max(float((a - b).abs().sum()) / n for a, b in zip(new_terms, exact_terms))
    batch = x0.reshape(size.B, size.L)
    reference_prior_kl = timed(lambda: _marginal_prior(process, batch), device)[1]
    first = timed(lambda: prior_kl(process, batch), device)[1]
    again = timed(lambda: prior_kl(process, batch), device)[1]
    extra: dict[str, Any] = {}
    if unblocked:
        whole = OperatorSettings(block=None)
        extra["unblocked"] = {
            "block": None, "default_block": OperatorSettings().block,
            "step_s": timed(lambda: reverse_step_probs(process, rho, xt, s, t, weighted=True, operators=whole),
                            device)[1],
            "term_s": timed(lambda: new_term(process, rho, pi, x0, xt, s, t, operators=whole), device)[1]}
    if profiled:
        extra["profile"] = {
            "step_parts": step_parts(process, rho, xt, s, t, device),
            "step": op_profile(lambda: reverse_step_probs(process, rho, xt, s, t, weighted=True), device),
            "term": op_profile(lambda: new_term(process, rho, pi, x0, xt, s, t), device)}
    return {
        "m": size.m, "B": size.B, "L": size.L, "b": b, "graph_build_s": build, "s": s, "t": t,
        "step": {"reference_s": ref_step_s, "new_s": new_step_s, "speedup": ref_step_s / new_step_s},
        "term": {"reference_s": ref_term_s, "new_s": new_term_s, "speedup": ref_term_s / new_term_s,
                 "reference_nats_per_token": [float(k.sum()) / n for k in ref_terms],
                 "new_nats_per_token": [float(k.sum()) / n for k in new_terms]},
        "accuracy": {"max_tv": max_tv, "max_term_change_nats_per_token": term_change,
                     "against": "the same (likelihood-weighted) model with precision='float64'"},
        "prior": {"reference_s": reference_prior_kl, "first_s": first, "repeated_s": again}, **extra,
    }


def _marginal_prior(process: gdds.ForwardProcess, x0: Tensor) -> Tensor:
    """a7bf748's prior term: the marginal ``q_1(. | x0)`` of every sequence, in float64."""
    p1 = reference_prior(process)
    q1 = process.marginal(x0, 1.0, REFERENCE)
    return kl_rows(q1, p1.expand_as(q1)).sum(-1)


def measure_training(size: Size, b: float, cache: Path, device: str) -> dict[str, Any]:
    """Seconds per training step (16 sequences of 128 tokens) of the exact and the surrogate forward CE; the
    exact one multiplying every time, then with the powers of each token kept (at ``b = 0``): the first call,
    which computes and keeps them, and the same batch again, every token kept."""
    process = process_of(size.m, b, cache, device)
    g = torch.Generator().manual_seed(SEED + 2)
    x0 = text_like(size.m, (size.train_B, 128), g)
    times = (torch.arange(size.train_B, dtype=torch.float64) + torch.rand(1, generator=g, dtype=torch.float64)) \
        / size.train_B
    xt = process.noise(x0, times, generator=g)
    logits = LOGIT_SCALE * torch.randn(size.train_B, 128, size.m, generator=g)
    process.to(device)
    x0, xt, times, logits = (v.to(device) for v in (x0, xt, times, logits))
    scale = 16 / size.train_B
    exact = timed(lambda: forward_cross_entropy(process, logits, xt, times, x0), device)[1] * scale
    surrogate = timed(lambda: surrogate_cross_entropy(process, logits, xt, times, x0), device)[1] * scale
    kept = gdds.ForwardProcess(process.schedule, process.kernel, power_cache=DEFAULT_POWER_CACHE)
    first = timed(lambda: forward_cross_entropy(kept, logits, xt, times, x0), device)[1] * scale
    again = timed(lambda: forward_cross_entropy(kept, logits, xt, times, x0), device)[1] * scale
    powers = kept.token_powers(process.kernel.teleport_split(), OperatorSettings()) if b == 0 else None
    return {"m": size.m, "b": b, "sequences_timed": size.train_B, "exact_s_per_step": exact,
            "exact_kept_first_s_per_step": first, "exact_kept_again_s_per_step": again,
            "tokens_kept": None if powers is None else powers.kept,
            "surrogate_s_per_step": surrogate, "step": "16 sequences x 128 tokens, stratified t"}


def stand_in(process: gdds.ForwardProcess, rows: int, g: torch.Generator, device: str) -> LikelihoodWeighted:
    """A stand-in model for ``rows`` sequences of 128 tokens: fixed random logits (drawn from ``g`` on the
    CPU), likelihood-weighted."""
    bank = (LOGIT_SCALE * torch.randn(rows, 128, process.m, generator=g)).to(device)
    return LikelihoodWeighted(process, lambda xt, t: bank[:xt.shape[0]])


def measure_all_terms(m: int, b: float, blocks: int, cache: Path, device: str) -> dict[str, Any]:
    """Seconds of the all-terms bound of a stand-in model (fixed random logits) and its Bayes-unigram
    baseline, bounded together as ``gdds eval`` does, on ``blocks`` sequences of 128 tokens."""
    process = process_of(m, b, cache, device).to(device)
    g = torch.Generator().manual_seed(SEED + 3)
    x0 = text_like(m, (blocks, 128), g).to(device)
    model = stand_in(process, blocks, g, device)
    pi = torch.softmax(torch.randn(m, generator=g, dtype=torch.float64), 0).to(device)
    _, seconds = timed(lambda: nll_bound(process, [model, bayes_unigram(process, pi)], x0, steps=T, all_terms=True,
                                         generator=torch.Generator(device=device).manual_seed(SEED)), device)
    return {"m": m, "b": b, "blocks": blocks, "T": T, "seconds": seconds,
            "hours_for_32_blocks": seconds * 32 / blocks / 3600}


def measure_sample(m: int, b: float, sequences: int, cache: Path, device: str) -> dict[str, Any]:
    """Seconds of a whole ``T = 128``-step exact sample (``gdds.sample``) of ``sequences`` sequences of 128
    tokens from a stand-in model (fixed random logits, likelihood-weighted), as ``gdds sample`` draws it."""
    process = process_of(m, b, cache, device).to(device)
    model = stand_in(process, sequences, torch.Generator().manual_seed(SEED + 4), device)
    _, seconds = timed(lambda: gdds.sample(process, model, sequences, 128, steps=T,
                                           generator=torch.Generator(device=device).manual_seed(SEED)), device)
    return {"m": m, "b": b, "sequences": sequences, "L": 128, "T": T, "seconds": seconds,
            "seconds_per_sequence": seconds / sequences}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    sizes_group = parser.add_mutually_exclusive_group()
    sizes_group.add_argument("--quick", action="store_true")
    sizes_group.add_argument("--dry-run", action="store_true", help="one tiny vocabulary, in seconds")
    parser.add_argument("--b", type=float, default=0.2, help="tempering exponent of the kNN part")
    parser.add_argument("--profile", action="store_true",
                        help="also where the new step and term spend their time (operators, torch's profiler)")
    parser.add_argument("--unblocked", action="store_true",
                        help="also the new step and term with all columns multiplied at once (block=None)")
    add_device(parser)
    args = parser.parse_args(argv)
    checked_device(parser, args)
    mode = "dry-run" if args.dry_run else "quick" if args.quick else "full"
    sizes = {"dry-run": DRY, "quick": QUICK, "full": FULL}[mode]
    rows: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "benchmark": "operators", "mode": mode, "command": command_line(__file__, argv),
        "machine": machine_info(cuda_used=args.device == "cuda"), "versions": versions(),
        "settings": {"b": args.b, "T": T, "profile": args.profile, "unblocked": args.unblocked,
                     "sizes": [asdict(s) for s in sizes], "seed": SEED, "device": args.device,
                     "logits": f"N(0, {LOGIT_SCALE:g}^2), float64", "threads": torch.get_num_threads()},
        "rows": rows, "training": training, "all_terms": None, "sample": None, "results": []}

    def save() -> None:
        report["results"] = [{"m": r["m"], "speedup_term_t1": r["term"]["speedup"],
                              "speedup_step_t1": r["step"]["speedup"], "max_tv": r["accuracy"]["max_tv"]}
                             for r in rows]
        write_json(report, args.out / "operators.json")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        for size in sizes:
            print(f"[m={size.m}] step, term, accuracy, prior ...", flush=True)
            rows.append(measure_size(size, args.b, cache, args.device, args.profile, args.unblocked))
            save()
            print(json.dumps({k: rows[-1][k] for k in ("step", "term", "accuracy", "prior")}), flush=True)
            if args.profile:
                prof = rows[-1]["profile"]
                print(json.dumps({"step_parts": prof["step_parts"], **{what: [(o["op"], round(o["self_s"], 3))
                                  for o in prof[what]["ops"][:6]] for what in ("step", "term")}}), flush=True)
        for size in (TRAIN_SMALL, *sizes):
            print(f"[m={size.m}] training ...", flush=True)
            training.append(measure_training(size, args.b, cache, args.device))
            save()
            print(json.dumps(training[-1]), flush=True)
        if mode == "full":
            print(f"[m={FULL[0].m}] all terms, {ALL_TERMS_BLOCKS} blocks ...", flush=True)
            report["all_terms"] = measure_all_terms(FULL[0].m, args.b, ALL_TERMS_BLOCKS, cache, args.device)
            save()
            print(json.dumps(report["all_terms"]), flush=True)
            print(f"[m={FULL[0].m}] a {T}-step exact sample of {FULL[0].B} sequences ...", flush=True)
            report["sample"] = measure_sample(FULL[0].m, args.b, FULL[0].B, cache, args.device)
            save()
            print(json.dumps(report["sample"]), flush=True)
    print(json.dumps({"results": report["results"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
