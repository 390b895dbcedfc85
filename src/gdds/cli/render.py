"""Reports for people: the markdown tables and figures of ``gdds eval`` and ``gdds nll-gap``
(``gdds compare``'s are in :mod:`gdds.cli.compare_report`), and the files they write (JSON next to
markdown, written atomically). The numbers come from the engine's report dataclasses; nothing is computed here."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.evaluation.reports import EvalReport, KLProfile, Likelihood, NLLReport, SampleReport
from ..files import write_atomically, write_text_atomically


def new_figure(width: float, height: float) -> Any:
    """A matplotlib figure on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> Path:
    return write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


def _value(r: NLLReport) -> str:
    return f"{r.nats_per_token:.4f} ± {r.standard_error:.4f} nats/token"


def _steps(r: NLLReport) -> str:
    return "" if r.steps is None else f" (T = {r.steps})"


def sample_tag(row: SampleReport) -> str:
    """``T steps`` (or the sampler) and the nucleus, when there is one."""
    what = row.sampler if row.steps is None else f"{row.steps} steps"
    return what + ("" if row.top_p == 1 else f", top_p {row.top_p:g}")


def _against_baseline(where: str, like: Likelihood) -> list[str]:
    """The rows of a model's figure beside its no-training baseline."""
    d = like.difference
    rows = [f"| {where} {like.baseline.metric} | {_value(like.baseline)}{_steps(like.baseline)} |"]
    if like.baseline is not like.unigram and like.baseline.metric != like.unigram.metric:
        rows.append(f"| {where} {like.unigram.metric} | {_value(like.unigram)} |")
    rows.append(f"| {where} model - baseline (paired: same blocks and draws) | {d.nats_per_token:+.4f} ± "
                f"{d.standard_error:.4f} nats/token |")
    return rows


def eval_markdown(report: EvalReport) -> str:
    """A markdown summary table of an evaluation, then its samples."""
    lines = ["| quantity | value |", "|---|---|"]
    like = report.likelihood.model
    if like.exact:
        lines += [f"| valid {like.metric} | {_value(like)} |", f"| valid perplexity (exact) | {like.perplexity:.2f} |"]
    else:
        lines += [f"| valid {like.metric} | {_value(like)}{_steps(like)} |",
                  f"| valid perplexity upper bound | {like.perplexity:.2f} |"]
    lines += _against_baseline("valid", report.likelihood)
    if report.paper_metric is not None:
        pm = report.paper_metric
        lines.append(f"| valid {pm.metric} | {pm.nats_per_token:.4f} nats/token (perplexity {pm.perplexity:.2f}; "
                     f"{pm.denoising_nats_per_token:.4f} per jumped position) |")
    elif report.paper_metric_absent is not None:
        lines.append(f"| valid paper metric | not computed: {report.paper_metric_absent} |")
    if report.snapshot_ce is not None:
        lines.append(f"| valid {report.snapshot_ce.metric} | {report.snapshot_ce.nats_per_token:.4f} nats/token |")
        if report.continuous_bound is not None:
            lines.append(f"| valid {report.continuous_bound.metric} | {_value(report.continuous_bound)} |")
        if report.t_sweep:
            sweep = ", ".join(f"{r.nats_per_token:.3f} ± {r.standard_error:.3f} (T = {r.steps})"
                              for r in report.t_sweep)
            lines.append(f"| valid continuous-time bound | diverges: the model does not copy; T-step bounds {sweep} |")
    for row in report.samples:
        gp_text = "".join(f", gen. perplexity {gp['perplexity']:.1f} ({gp['judge']})" for gp in row.judged())
        lines.append(f"| samples, {sample_tag(row)} | unigram entropy {row.unigram_entropy:.3f} nats{gp_text} |")
        if row.mauve is not None:
            m = row.mauve
            lines.append(f"| samples, {sample_tag(row)}: {m.metric} | {m.value()} "
                         f"({m.samples} samples against {m.references} validation texts, {m.num_buckets} buckets) |")
    for name, z in report.zero_shot.items():
        lines.append(f"| zero-shot {name}: {z.model.metric} | {_value(z.model)}{_steps(z.model)} |")
        lines += _against_baseline(f"zero-shot {name}:", z)
    if report.kl_profile is not None:
        lines += ["", *profile_markdown(report.kl_profile)]
    for row in report.samples:
        lines += ["", f"Samples, {row.sampler}, {sample_tag(row)} ({row.precision}):", ""]
        lines += [f"{i + 1}. {' '.join(text.split())}" for i, text in enumerate(row.texts)]
    return "\n".join(lines) + "\n"


def profile_markdown(profile: KLProfile) -> list[str]:
    """The per-step table of a :class:`KLProfile`."""
    lines = [f"Terms of the {profile.steps}-step bound, nats per token ({profile.sequences} blocks, one draw each; "
             "step k ends at t_k):", "", "| step | t_k | model | baseline | model - baseline |",
             "|---|---|---|---|---|",
             f"| prior | 1 | {profile.model[0]:.4f} | {profile.baseline[0]:.4f} | "
             f"{profile.model[0] - profile.baseline[0]:+.4f} |"]
    for k, t in enumerate(profile.times, start=1):
        a, b = profile.model[k], profile.baseline[k]
        lines.append(f"| {k} | {t:.3f} | {a:.4f} | {b:.4f} | {a - b:+.4f} |")
    return lines


def profile_figure(profile: KLProfile) -> Any:
    """The terms of the bound against ``t``: model and baseline."""
    fig = new_figure(6, 3.5)
    ax = fig.add_subplot()
    ax.plot(profile.times, profile.model[1:], "o-", label="model")
    ax.plot(profile.times, profile.baseline[1:], "s--", label="no-training baseline (Bayes-unigram)")
    ax.set_xlabel("t (end of the step)")
    ax.set_ylabel("term of the bound (nats/token)")
    ax.set_title(f"Where the {profile.steps}-step bound is paid", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_eval(report: EvalReport, out: Path) -> list[Path]:
    """``eval.json``, ``eval.md``, ``kl_profile.png`` (with a profile) and (with a judge)
    ``gen_ppl_vs_entropy.png`` in ``out``."""
    out = Path(out)
    paths = [write_text_atomically(out / "eval.json", json.dumps(report.to_dict(), indent=1)),
             write_text_atomically(out / "eval.md", eval_markdown(report))]
    if report.kl_profile is not None:
        paths.append(save_png(profile_figure(report.kl_profile), out / "kl_profile.png"))
    rows = [r for r in report.samples if r.generative_perplexity is not None]
    if rows:
        fig = new_figure(5, 4)
        ax = fig.add_subplot()
        xs = [r.unigram_entropy for r in rows]
        ys = [r.generative_perplexity["perplexity"] for r in rows]
        ax.plot(xs, ys, "o-")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(sample_tag(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("unigram entropy of samples (nats)")
        ax.set_ylabel(f"generative perplexity ({rows[0].generative_perplexity['judge']})")
        paths.append(save_png(fig, out / "gen_ppl_vs_entropy.png"))
    return paths


def nll_gap_markdown(rows: dict[str, dict[str, float]], times: Sequence[float]) -> str:
    """One row per (kernel, predictor pair): every term in nats per token, exact."""
    head = ["kernel", "snapshot / path predictor", "NLL path", "NLL snapshot", "gap", "IPG", "CG",
            "entropy given path", "entropy given snapshot"]
    keys = ["nll_path", "nll_snapshot", "gap", "information_path_gap", "calibration_gap", "entropy_path",
            "entropy_snapshot"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        kernel, pair = name.split(": ", 1)
        lines.append("| " + " | ".join([kernel, pair, *(f"{r[k]:.4f}" for k in keys)]) + " |")
    lines += ["", f"Exact finite sums, nats per token; path on the grid t = {', '.join(map(str, times))}; "
              "gap = NLL snapshot - NLL path = IPG + CG (IPG from a conditional mutual information, "
              "CG from KL divergences)."]
    return "\n".join(lines) + "\n"
