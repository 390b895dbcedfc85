"""Evaluation of a trained run: the honest bound, the snapshot CE (labelled, not a
likelihood), samples from the model's reverse chain, generative perplexity under a
judge, unigram entropy, zero-shot bounds on other corpora; JSON, markdown, figure.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from . import checkpoint as ck
from .atomic import write_atomically
from .build import Run, build_run, pack_blocks
from .config import Config, ConfigError, load_config
from .data import load_corpus, tokenize_documents
from .distributed import resolve_device
from .likelihood import continuous_bound, nll_bound, summarize
from .methods import AR_LABEL, SNAPSHOT_LABEL, denoiser
from .objectives import sample_times, snapshot_cross_entropy
from .sampling import sample


@dataclass
class LoadedRun:
    cfg: Config
    run: Run
    checkpoint: Path
    weights: str
    device: torch.device

    def denoiser(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The model as a float32 denoiser ``(x_t, t) -> logits`` (no autocast)."""
        try:
            net = denoiser(self.cfg.method, self.run.model, self.run.process)
        except ValueError as exc:
            raise ConfigError(f"{self.cfg.method} run: {exc}") from exc

        def call(xt: Tensor, t: Tensor) -> Tensor:
            return net(xt.to(self.device), t.to(self.device, torch.float32)).float()

        return call


def load_run(run_dir: Path, weights: str = "ema", device: str = "auto",
             checkpoint: Optional[Path] = None) -> LoadedRun:
    """Rebuild a run's set-up from its latest checkpoint (or ``checkpoint``, a
    ``step-*`` folder) and load its weights (``ema`` when the run kept an EMA, else ``raw``)."""
    folder = ck.latest_checkpoint(Path(run_dir)) if checkpoint is None else Path(checkpoint)
    ck.verify_checkpoint(folder)
    cfg = load_config(str(folder / "config.yaml"))
    dev = resolve_device(device)
    run = build_run(cfg, dev, progress=False)
    saved = ck.read_json(folder / "run.json")
    if not run.matches(saved):
        raise ck.CheckpointError(f"{folder} was written for a different set-up than this installation rebuilds "
                                 f"(tokenizer, data, process or model); stored {saved}")
    name = "ema.safetensors" if weights == "ema" and (folder / "ema.safetensors").is_file() else "model.safetensors"
    ck.load_module(run.model, ck.load_tensors(folder / name), f"{folder}/{name}")
    run.model.to(dev).eval()
    return LoadedRun(cfg, run, folder, "ema" if name.startswith("ema") else "raw", dev)


def _rows(n_blocks: int, count: int) -> np.ndarray:
    return np.arange(min(n_blocks, count))


def _per_sequence(blocks: Any, sequences: int, batch: int, estimate: Callable[[Tensor], Tensor]
                  ) -> tuple[Tensor, Tensor]:
    """``estimate`` (``x0 [b, L] -> [b]`` nats) over the first ``sequences`` blocks in batches of
    ``batch``: the estimates and the tokens of each sequence, for :func:`summarize`."""
    rows = _rows(len(blocks), sequences)
    est = torch.cat([estimate(blocks.batch(rows[a:a + batch])) for a in range(0, len(rows), batch)])
    return est, torch.full((len(rows),), blocks.batch(rows[:1]).shape[1])


@torch.no_grad()
def bound_report(lr: LoadedRun, blocks: Any, sequences: int, steps: int, seed: int = 0,
                 batch: int = 8, **op: Any) -> dict[str, Any]:
    """The ``steps``-step bound on the first ``sequences`` blocks: nats/token ± SE, perplexity
    (upper bounds). For an autoregressive run: its exact NLL (``steps`` unused; the
    standard error is then over sequences only)."""
    gen = torch.Generator().manual_seed(seed)
    ar = lr.cfg.method == "ar"
    est, tokens = _per_sequence(blocks, sequences, batch, lambda x0: lr.run.model.nll(x0.to(lr.device)).cpu()
                                if ar else nll_bound(lr.run.process, lr.denoiser(), x0, steps=steps,
                                                     generator=gen, **op))
    s = summarize(est, tokens, None if ar else steps)
    kind = "" if ar else "_upper_bound"
    out = {"metric": AR_LABEL if ar else f"NLL upper bound ({steps}-step ELBO of the sampled chain)",
           "nats_per_token": s.nats_per_token, "standard_error": s.standard_error, f"perplexity{kind}": s.perplexity,
           "tokens": s.tokens, "sequences": len(est), "steps": s.steps}
    if lr.cfg.data.tokenizer == "char":
        out[f"bits_per_character{kind}"] = s.nats_per_token / math.log(2)
    return out


CONTINUOUS_SAMPLES = 4  # draws of t per sequence in the continuous-time bound


@torch.no_grad()
def continuous_report(lr: LoadedRun, blocks: Any, sequences: int, seed: int = 0, batch: int = 8) -> dict[str, Any]:
    """The continuous-time bound (``gdds.likelihood.continuous_bound``, column-constant kernels:
    MDLM's and UDLM's bound) on the first ``sequences`` blocks. It bounds the NLL of the
    reverse CTMC that the ``T``-step chain tends to as ``T`` grows, not of a sampler with
    finitely many steps."""
    gen = torch.Generator().manual_seed(seed)
    est, tokens = _per_sequence(blocks, sequences, batch, lambda x0: continuous_bound(
        lr.run.process, lr.denoiser(), x0, samples=CONTINUOUS_SAMPLES, generator=gen))
    s = summarize(est, tokens)
    return {"metric": "NLL upper bound of the continuous-time reverse CTMC (the T -> infinity limit of the chain)",
            "nats_per_token": s.nats_per_token, "standard_error": s.standard_error,
            "perplexity_upper_bound": s.perplexity, "tokens": s.tokens, "sequences": len(est),
            "samples_of_t": CONTINUOUS_SAMPLES}


@torch.no_grad()
def snapshot_report(lr: LoadedRun, blocks: Any, sequences: int, seed: int = 0, batch: int = 16) -> dict[str, Any]:
    """Mean snapshot CE on the first ``sequences`` blocks (fixed noise). Not a likelihood."""
    gen = torch.Generator().manual_seed(seed)
    rows = _rows(len(blocks), sequences)
    total, count = 0.0, 0
    for a in range(0, len(rows), batch):
        x0 = blocks.batch(rows[a:a + batch])
        t = sample_times(x0.shape[0], lr.cfg.process.t_min, gen)
        xt = lr.run.process.sample(x0, t, generator=gen)
        ce = snapshot_cross_entropy(lr.denoiser()(xt, t).cpu(), x0)
        total, count = total + float(ce.sum()), count + ce.numel()
    return {"metric": SNAPSHOT_LABEL, "nats_per_token": total / count, "tokens": count}


def generate(lr: LoadedRun, num: int, steps: int, seed: int = 0, length: Optional[int] = None,
             **kwargs: Any) -> tuple[Tensor, list[str]]:
    """``num`` sequences (``length`` tokens, default the training length) from the model's
    reverse chain (an autoregressive run: exact ancestral samples) and their decoded texts."""
    length = lr.cfg.data.seq_len if length is None else length
    if lr.cfg.method == "ar":
        gen = torch.Generator(device=lr.device).manual_seed(seed)
        ids = lr.run.model.generate(num, length, gen, **kwargs).cpu()
    else:
        gen = torch.Generator().manual_seed(seed)
        ids = sample(lr.run.process, lr.denoiser(), num, length, steps=steps, generator=gen, **kwargs)
    tok = lr.run.data.tokenizer
    return ids, [tok.decode(row.tolist()) for row in ids]


def zero_shot_blocks(lr: LoadedRun, corpus: str) -> Any:
    """Blocks of another corpus under the run's tokenizer and packing."""
    docs = load_corpus(corpus)
    return pack_blocks(tokenize_documents(docs, lr.run.data.tokenizer), lr.run.data.tokenizer, lr.cfg.data)


def evaluate(lr: LoadedRun, steps: int = 64, sequences: int = 32, sample_steps: Sequence[int] = (16, 64),
             num_samples: int = 8, judge: Optional[str] = None, zero_shot: Sequence[str] = (),
             seed: int = 0, sample_length: Optional[int] = None,
             log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Everything ``gdds eval`` reports, as a JSON-able dict; ``log`` receives progress messages."""
    from .judge import per_sample_entropy, unigram_entropy

    ar = lr.cfg.method == "ar"
    if not ar:
        lr.denoiser()  # fails early for a model that cannot generate
    report: dict[str, Any] = {"checkpoint": str(lr.checkpoint), "weights": lr.weights, "method": lr.cfg.method,
                              "parameters": sum(p.numel() for p in lr.run.model.parameters())}
    if ar:
        log(f"exact NLL of {sequences} validation sequences")
        report["valid"] = {"nll": bound_report(lr, lr.run.valid, sequences, steps, seed)}
        sample_steps = [None]  # ancestral sampling has no step count
    else:
        log(f"bounding {sequences} validation sequences with T = {steps}")
        report["valid"] = {"bound": bound_report(lr, lr.run.valid, sequences, steps, seed),
                           "snapshot_ce": snapshot_report(lr, lr.run.valid, sequences, seed)}
        if lr.run.process.kernel.column_constant:
            log(f"continuous-time bound of {sequences} validation sequences")
            report["valid"]["continuous_bound"] = continuous_report(lr, lr.run.valid, sequences, seed)
    judge_model = None
    if judge is not None:
        from .judge import Judge

        judge_model = Judge.load(judge)
    report["samples"] = []
    for k in sample_steps:
        sampler = "exact ancestral sampler" if ar else "exact reverse chain"
        log(f"sampling {num_samples} sequences: {sampler}" + ("" if ar else f", {k} steps"))
        ids, texts = generate(lr, num_samples, k, seed, sample_length)
        row = {"steps": k, "sampler": sampler, "precision": "float64 inverse CDF",
               "unigram_entropy": unigram_entropy(ids), "per_sample_entropy": per_sample_entropy(ids),
               "texts": texts}
        if judge_model is not None:
            row["generative_perplexity"] = judge_model.perplexity(texts)
        report["samples"].append(row)
    report["zero_shot"] = {}
    for name in zero_shot:
        log(f"zero-shot bound on {name}")
        report["zero_shot"][name] = bound_report(lr, zero_shot_blocks(lr, name), sequences, steps, seed)
    return report


def markdown(report: dict[str, Any]) -> str:
    """A markdown summary table of :func:`evaluate`'s report."""
    v = report["valid"]
    lines = ["| quantity | value |", "|---|---|"]
    if "nll" in v:
        lines += [f"| valid {v['nll']['metric']} | {v['nll']['nats_per_token']:.4f} ± "
                  f"{v['nll']['standard_error']:.4f} nats/token |",
                  f"| valid perplexity (exact) | {v['nll']['perplexity']:.2f} |"]
    else:
        lines += [f"| valid {v['bound']['metric']} | {v['bound']['nats_per_token']:.4f} ± "
                  f"{v['bound']['standard_error']:.4f} nats/token (T = {v['bound']['steps']}) |",
                  f"| valid perplexity upper bound | {v['bound']['perplexity_upper_bound']:.2f} |",
                  f"| valid {v['snapshot_ce']['metric']} | {v['snapshot_ce']['nats_per_token']:.4f} nats/token |"]
        if "continuous_bound" in v:
            c = v["continuous_bound"]
            lines.append(f"| valid {c['metric']} | {c['nats_per_token']:.4f} ± {c['standard_error']:.4f} nats/token |")
    for row in report["samples"]:
        gp = row.get("generative_perplexity")
        gp_text = f", gen. perplexity {gp['perplexity']:.1f} ({gp['judge']})" if gp else ""
        what = row["sampler"] if row["steps"] is None else f"{row['steps']} steps"
        lines.append(f"| samples, {what} | unigram entropy {row['unigram_entropy']:.3f} nats{gp_text} |")
    for name, b in report["zero_shot"].items():
        lines.append(f"| zero-shot {name} bound | {b['nats_per_token']:.4f} ± {b['standard_error']:.4f} nats/token |")
    for row in report["samples"]:
        steps = "" if row["steps"] is None else f", {row['steps']} steps"
        lines += ["", f"Samples, {row['sampler']}{steps} ({row['precision']}):", ""]
        lines += [f"{i + 1}. {' '.join(text.split())}" for i, text in enumerate(row["texts"])]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """``eval.json``, ``eval.md`` and (with a judge) ``gen_ppl_vs_entropy.png`` in ``out``."""
    out = Path(out)
    text = json.dumps(report, indent=1)
    paths = [write_atomically(out / "eval.json", lambda fh: fh.write(text.encode())),
             write_atomically(out / "eval.md", lambda fh: fh.write(markdown(report).encode()))]
    rows = [r for r in report["samples"] if "generative_perplexity" in r]
    if rows:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xs = [r["unigram_entropy"] for r in rows]
        ys = [r["generative_perplexity"]["perplexity"] for r in rows]
        ax.plot(xs, ys, "o-")
        for r, x, y in zip(rows, xs, ys):
            tag = r["sampler"] if r["steps"] is None else f"T={r['steps']}"
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("unigram entropy of samples (nats)")
        ax.set_ylabel(f"generative perplexity ({rows[0]['generative_perplexity']['judge']})")
        paths.append(write_atomically(out / "gen_ppl_vs_entropy.png",
                                      lambda fh: fig.savefig(fh, format="png", dpi=120)))
    return paths
