"""Reports for people: the markdown tables and figures of ``gdds eval``, ``gdds compare`` and
``gdds nll-gap``, and the files they write (JSON next to markdown, written atomically). The
numbers come from the engine's report dataclasses; nothing is computed here."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.compare import Comparison
from ..engine.reports import EvalReport, KLProfile, Likelihood, NLLReport
from ..files import write_atomically, write_text_atomically


def _figure(width: float, height: float) -> Any:
    """A matplotlib figure on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: Path) -> Path:
    return write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


def _value(r: NLLReport) -> str:
    return f"{r.nats_per_token:.4f} ± {r.standard_error:.4f} nats/token"


def _steps(r: NLLReport) -> str:
    return "" if r.steps is None else f" (T = {r.steps})"


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
    if report.snapshot_ce is not None:
        lines.append(f"| valid {report.snapshot_ce.metric} | {report.snapshot_ce.nats_per_token:.4f} nats/token |")
        if report.continuous_bound is not None:
            lines.append(f"| valid {report.continuous_bound.metric} | {_value(report.continuous_bound)} |")
        if report.t_sweep:
            sweep = ", ".join(f"{r.nats_per_token:.3f} ± {r.standard_error:.3f} (T = {r.steps})"
                              for r in report.t_sweep)
            lines.append(f"| valid continuous-time bound | diverges: the model does not copy; T-step bounds {sweep} |")
    for row in report.samples:
        gp = row.generative_perplexity
        gp_text = f", gen. perplexity {gp['perplexity']:.1f} ({gp['judge']})" if gp else ""
        what = row.sampler if row.steps is None else f"{row.steps} steps"
        lines.append(f"| samples, {what} | unigram entropy {row.unigram_entropy:.3f} nats{gp_text} |")
    for name, z in report.zero_shot.items():
        lines.append(f"| zero-shot {name}: {z.model.metric} | {_value(z.model)}{_steps(z.model)} |")
        lines += _against_baseline(f"zero-shot {name}:", z)
    if report.kl_profile is not None:
        lines += ["", *profile_markdown(report.kl_profile)]
    for row in report.samples:
        steps = "" if row.steps is None else f", {row.steps} steps"
        lines += ["", f"Samples, {row.sampler}{steps} ({row.precision}):", ""]
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
    fig = _figure(6, 3.5)
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
        paths.append(_save_png(profile_figure(report.kl_profile), out / "kl_profile.png"))
    rows = [r for r in report.samples if r.generative_perplexity is not None]
    if rows:
        fig = _figure(5, 4)
        ax = fig.add_subplot()
        xs = [r.unigram_entropy for r in rows]
        ys = [r.generative_perplexity["perplexity"] for r in rows]
        ax.plot(xs, ys, "o-")
        for r, x, y in zip(rows, xs, ys):
            tag = r.sampler if r.steps is None else f"T={r.steps}"
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("unigram entropy of samples (nats)")
        ax.set_ylabel(f"generative perplexity ({rows[0].generative_perplexity['judge']})")
        paths.append(_save_png(fig, out / "gen_ppl_vs_entropy.png"))
    return paths


def compare_figure(result: Comparison) -> Any:
    """Bound per entry (± standard error); generative perplexity against unigram entropy
    of the samples when a judge was used."""
    reports = {name: row.report for name, row in result.rows.items()}
    judged = all(r.samples[-1].generative_perplexity is not None for r in reports.values())
    fig = _figure(10 if judged else 5.5, 4)
    ax = fig.add_subplot(1, 2 if judged else 1, 1)
    heads = [r.likelihood.model for r in reports.values()]
    ax.bar(list(reports), [h.nats_per_token for h in heads], yerr=[h.standard_error for h in heads], capsize=3)
    ax.set_ylabel(f"valid NLL bound, T = {result.settings.steps} (nats/token; ar: exact)")
    ax.tick_params(axis="x", labelrotation=45)
    if judged:
        ax2 = fig.add_subplot(1, 2, 2)
        for name, r in reports.items():
            sample = r.samples[-1]
            ax2.scatter(sample.unigram_entropy, sample.generative_perplexity["perplexity"])
            ax2.annotate(name, (sample.unigram_entropy, sample.generative_perplexity["perplexity"]),
                         textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax2.set_xlabel("unigram entropy of samples (nats)")
        ax2.set_ylabel(f"generative perplexity ({result.settings.judge})")
    fig.tight_layout()
    return fig


def _headline(report: EvalReport) -> str:
    like = report.likelihood.model
    return f"{like.nats_per_token:.3f} ± {like.standard_error:.3f}" + (" (exact)" if like.exact else "")


def _baseline_cells(report: EvalReport) -> list[str]:
    base, d = report.likelihood.baseline, report.likelihood.difference
    return [f"{base.nats_per_token:.3f} ± {base.standard_error:.3f}",
            f"{d.nats_per_token:+.3f} ± {d.standard_error:.3f}"]


def compare_markdown(result: Comparison) -> str:
    """One row per entry: bound (exact NLL for ar), snapshot CE, samples, judge, zero-shot."""
    zero = sorted({z for r in result.rows.values() for z in r.report.zero_shot})
    head = ["method", "overrides", "parameters", "train tokens/s",
            f"valid NLL bound, T = {result.settings.steps} (nats/token)", "no-training baseline (nats/token)",
            "model - baseline (paired)", "continuous-time bound (nats/token)",
            "snapshot CE (not a likelihood)", f"sample unigram entropy (T = {result.settings.sample_steps[-1]})",
            f"gen. perplexity (T = {result.settings.sample_steps[-1]})",
            *[f"zero-shot {z}" for z in zero]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result.rows.items():
        rep = row.report
        snap, cont, sample = rep.snapshot_ce, rep.continuous_bound, rep.samples[-1]
        gp = sample.generative_perplexity
        cells = [name, " ".join(result.entries[row.method]), f"{rep.parameters / 1e6:.2f}M",
                 f"{row.train_tokens_per_s:.0f}", _headline(rep), *_baseline_cells(rep),
                 f"{cont.nats_per_token:.3f} ± {cont.standard_error:.3f}" if cont else
                 "diverges" if rep.t_sweep else "—",
                 f"{snap.nats_per_token:.3f}" if snap else "—", f"{sample.unigram_entropy:.3f}",
                 f"{gp['perplexity']:.1f}" if gp else "—",
                 *[f"{rep.zero_shot[z].model.nats_per_token:.3f}" if z in rep.zero_shot else "—" for z in zero]]
        lines.append("| " + " | ".join(cells) + " |")
    judge = f"; judge: {result.settings.judge}" if result.settings.judge else ""
    lines += ["", f"Base preset `{result.base}` with overrides {result.overrides or 'none'}; "
              f"{result.settings.sequences} validation blocks per bound{judge}. Bounds are upper bounds on the NLL "
              "of the sampled chain (± Monte-Carlo standard error); the continuous-time bound (column-constant "
              "kernels) bounds the NLL of the reverse CTMC that chain tends to as T grows; the autoregressive row is "
              "an exact NLL. The no-training baseline is the bound of the Bayes-unigram denoiser under each method's "
              "own process on the same blocks and draws (the unigram model's exact NLL for ar); the paired difference "
              "is model minus baseline with its standard error."]
    if result.differences:
        lines += ["", *differences_markdown(result)]
    return "\n".join(lines) + "\n"


def differences_markdown(result: Comparison) -> list[str]:
    """Each entry's bound minus the reference's, paired on the same blocks, per seed and on average."""
    seeds = result.seeds
    head = ["method", *[f"seed {k}" for k in seeds], "mean", "standard error (Monte-Carlo / seeds)", "verdict"]
    lines = [f"Bound minus `{result.reference}`'s bound, paired on the same {result.settings.sequences} blocks "
             "(nats/token; negative: better than the reference):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in result.differences.items():
        spread = "—" if d.se_seeds is None else f"{d.se_seeds:.3f}"
        lines.append("| " + " | ".join([name, *[f"{v:+.3f} ± {se:.3f}" for v, se in zip(d.per_seed, d.per_seed_se)],
                                        f"{d.mean:+.3f}", f"{d.se_monte_carlo:.3f} / {spread}", d.verdict]) + " |")
    return lines


def write_comparison(result: Comparison, out: Path) -> list[Path]:
    """``compare.md`` and ``compare.png`` next to the ``compare.json`` the engine wrote."""
    out = Path(out)
    return [write_text_atomically(out / "compare.md", compare_markdown(result)),
            _save_png(compare_figure(result), out / "compare.png")]


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
