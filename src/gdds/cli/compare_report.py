"""``gdds compare``'s report for people: ``compare.md`` (every run; each method against the
reference, paired on blocks and per seed; the paper's metric beside the bound; generative
perplexity at the entropy of real text; MAUVE when measured) and ``compare.png`` (bounds, and generative perplexity
against entropy over the nucleus sweep, one panel per judge). The numbers come from
:class:`gdds.engine.evaluation.compare.Comparison`; nothing is computed here."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.evaluation.compare import Comparison
from ..engine.evaluation.judge_conventions import CONVENTION_TAG
from ..engine.evaluation.judge_hub import HF_PREFIX
from ..engine.evaluation.paired import ALPHA, LEVEL, MIN_SEEDS
from ..engine.evaluation.reports import EvalReport
from ..files import write_text_atomically
from .render import new_figure, save_png


def judge_label(judge: str) -> str:
    """A judge's short name for column heads and axes (``results/x/ar@sha256:94..`` -> ``ar``,
    ``smollm2:SmolLM2-135M-Instruct.Q4_1.gguf@sha256:52..`` -> ``smollm2``,
    ``hf:gpt2-large@sha256:..+convention=mdlm`` -> ``gpt2-large (mdlm)``: a convention other than
    gdds's stays in the label, its numbers are not comparable); the legend of ``compare.md`` gives the
    full identifiers."""
    head, _, tail = judge.partition("@")
    short = Path(head.removeprefix(HF_PREFIX)).name.split(":")[0]
    convention = tail.partition(CONVENTION_TAG)[2].split("+")[0]
    return f"{short} ({convention})" if convention else short


def compare_figure(result: Comparison) -> Any:
    """Bound per run (± standard error); per judge, generative perplexity against the unigram
    entropy of the samples over the nucleus sweep (one line per method, its first seed's run), with
    the entropy of real text and the common entropy (:attr:`Comparison.common_entropy`) marked."""
    judges = result.judges()
    fig = new_figure(5.5 + 4.5 * len(judges), max(4.0, 1.0 + 0.25 * len(result.rows)))
    ax = fig.add_subplot(1, 1 + len(judges), 1)
    heads = [row.report.likelihood.model for row in result.rows.values()]
    ax.barh(list(result.rows), [h.nats_per_token for h in heads], xerr=[h.standard_error for h in heads], capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel(f"valid NLL bound, T = {result.settings.steps}\n(nats/token; ar: exact NLL)")
    ax.tick_params(axis="y", labelsize=7)
    for j, judge in enumerate(judges):
        panel = fig.add_subplot(1, 1 + len(judges), 2 + j)
        for name in result.entries:
            sweep = [r for r in result.runs_of(name)[0].report.nucleus_sweep() if len(r.judged()) > j]
            panel.plot([r.unigram_entropy for r in sweep], [r.judged()[j]["perplexity"] for r in sweep], "o-",
                       label=name, markersize=3)
        if result.target_entropy is not None:
            panel.axvline(result.target_entropy, color="grey", linestyle=":", label="real text")
        if result.common_entropy is not None:
            panel.axvline(result.common_entropy, color="black", linestyle="--", linewidth=0.8,
                          label="reached by every run")
        panel.set_yscale("log")
        panel.set_xlabel("unigram entropy of samples (nats)")
        panel.set_ylabel(f"generative perplexity (judge: {judge_label(judge)})")
        panel.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _headline(report: EvalReport) -> str:
    like = report.likelihood.model
    return f"{like.nats_per_token:.3f} ± {like.standard_error:.3f}" + (" (exact)" if like.exact else "")


def _baseline_cells(report: EvalReport) -> list[str]:
    base, d = report.likelihood.baseline, report.likelihood.difference
    return [f"{base.nats_per_token:.3f} ± {base.standard_error:.3f}",
            f"{d.nats_per_token:+.3f} ± {d.standard_error:.3f}"]


def _paper_cells(report: EvalReport) -> list[str]:
    pm, bound = report.paper_metric, report.likelihood.model
    if pm is None:
        return ["—", "—"]
    return [f"{pm.nats_per_token:.3f}", f"{bound.nats_per_token - pm.nats_per_token:+.3f}"]


def _absent_paper_metric(result: Comparison) -> str:
    """Why runs have no paper metric (— in its column), one sentence per reason."""
    why: dict[str, list[str]] = {}
    for name, row in result.rows.items():
        if row.report.paper_metric_absent is not None:
            why.setdefault(row.report.paper_metric_absent, []).append(name)
    return " ".join(f"No paper metric for {', '.join(names)}: {reason}." for reason, names in why.items())


def mauve_featurizer(result: Comparison) -> str | None:
    """The featurizer of the runs' MAUVE (``None``: no run has MAUVE)."""
    return next((m.featurizer for r in result.rows.values() if (m := r.report.own_law_samples().mauve)), None)


def runs_markdown(result: Comparison) -> list[str]:
    """One row per run: bound (exact NLL for ar), baseline, paper metric, snapshot CE, samples, zero-shot."""
    zero = sorted({z for r in result.rows.values() for z in r.report.zero_shot})
    judges = result.judges()
    last = result.settings.sample_steps[-1]
    mauve = mauve_featurizer(result)
    head = ["run", "overrides", "parameters", "train tokens/s",
            f"valid NLL bound, T = {result.settings.steps} (nats/token)", "no-training baseline (nats/token)",
            "model - baseline (paired)", "continuous-time bound (nats/token)",
            "paper metric (not a likelihood)", "bound - paper metric", "snapshot CE (not a likelihood)",
            f"sample unigram entropy (T = {last})",
            *[f"gen. perplexity, {judge_label(j)} (T = {last})" for j in judges],
            *([f"MAUVE ± SE, features: {judge_label(mauve)} (T = {last})"] if mauve else []),
            *[f"zero-shot {z}" for z in zero]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in result.rows.items():
        rep = row.report
        snap, cont, sample = rep.snapshot_ce, rep.continuous_bound, rep.own_law_samples()
        cells = [name, " ".join([*result.entries[row.method], f"seed={row.seed}"]), f"{rep.parameters / 1e6:.2f}M",
                 f"{row.train_tokens_per_s:.0f}", _headline(rep), *_baseline_cells(rep),
                 f"{cont.nats_per_token:.3f} ± {cont.standard_error:.3f}" if cont else
                 "diverges" if rep.t_sweep else "—", *_paper_cells(rep),
                 f"{snap.nats_per_token:.3f}" if snap else "—", f"{sample.unigram_entropy:.3f}",
                 *[f"{gp['perplexity']:.1f}" for gp in sample.judged()],
                 *([sample.mauve.value() if sample.mauve else "—"] if mauve else []),
                 *[f"{rep.zero_shot[z].model.nats_per_token:.3f}" if z in rep.zero_shot else "—" for z in zero]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def p_text(p: float) -> str:
    """A p-value for a table (``< 0.001`` below that)."""
    return "< 0.001" if p < 1e-3 else f"{p:.3f}"


def differences_markdown(result: Comparison, pairs: bool = False) -> list[str]:
    """Each entry's bound minus the reference's (``pairs``: minus its counterpart's), paired on the same
    blocks, per seed and over the judged seeds (:mod:`gdds.engine.evaluation.paired`), and how the
    verdict is decided, in words."""
    judged, level = result.judged, f"{LEVEL:.0%}"
    left_out = [k for k in result.seeds if k not in judged]
    head = ["method", *[f"seed {k}" + ("" if k in judged else " (not judged)") for k in result.seeds],
            "mean over judged seeds", "SE: blocks / seeds / combined", "df", "p (two-sided)", f"{level} interval",
            "verdict"]
    other = "its counterpart's (the method beside it)" if pairs else f"`{result.reference}`'s"
    lines = [f"Bound minus {other} bound, paired on the same {result.settings.sequences} blocks "
             "and draws (nats/token; negative: lower than the other). Each seed's difference is shown with "
             "its standard error from the blocks alone. The mean is over the judged seeds "
             f"({', '.join(map(str, judged))}"
             + (f"; seed {', '.join(map(str, left_out))} is left out: the seed a variant is selected on would "
                "favour it" if left_out else "") +
             ") of the per-block differences; its standard error combines the spread across blocks of the "
             "seed-averaged differences with the spread across seeds (which double-counts their interaction, so "
             "it is slightly conservative), with Welch-Satterthwaite degrees of freedom. How the verdict is "
             f"decided: \"lower\" or \"higher\" only with at least {MIN_SEEDS} judged training seeds and a "
             f"two-sided Student-t p-value below {ALPHA:g}; otherwise \"not significant\", with the reason (with "
             "one seed the training noise, which moves a difference between seeds, is unknown whatever the "
             "evaluation's own error).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in (result.pair_differences if pairs else result.differences).items():
        name = f"{name} - {result.pairs[name]}" if pairs else name
        by_seed = {k: f"{v:+.3f} ± {se:.3f}" for k, v, se in zip(d.seeds, d.per_seed, d.per_seed_se)}
        test = d.test
        stats = ["—"] * 5 if test is None else [
            f"{test.mean:+.3f}",
            f"{test.se_blocks:.3f} / {'—' if test.se_seeds is None else f'{test.se_seeds:.3f}'} / "
            f"{test.standard_error:.3f}", f"{test.df:.1f}", p_text(test.p_value),
            f"[{test.interval[0]:+.3f}, {test.interval[1]:+.3f}]"]
        lines.append("| " + " | ".join([name, *[by_seed.get(k, "—") for k in result.seeds], *stats,
                                        f"{d.verdict} ({d.reason})"]) + " |")
    return lines


def selection_line(selection: dict[str, Any]) -> str:
    """How the variant trained with every seed was chosen (``select`` of
    :func:`gdds.engine.evaluation.compare.compare`)."""
    diffs = ", ".join(f"`{n}` {d:+.3f}" for n, d in sorted(selection["differences"].items(), key=lambda kv: kv[1]))
    return (f"Selection: on seed {selection['seed']}, the candidate whose bound is lowest against "
            f"`{selection['reference']}`'s (paired, nats/token: {diffs}) was chosen, `{selection['chosen']}`, and "
            "trained with every seed; its verdict uses the judged seeds only.")


def evaluations_line(result: Comparison) -> str:
    """Which evaluations were computed now, reused, or computed again because the saved one was
    made by other code (:func:`gdds.engine.evaluation.compare._evaluated`)."""
    how = {kind: [n for n, r in result.rows.items() if r.evaluation == kind]
           for kind in ("computed", "reused", "recomputed")}
    parts = [f"{len(how['computed'])} computed in this call", f"{len(how['reused'])} reused (same settings, same "
             "code)"]
    if how["recomputed"]:
        parts.append(f"{len(how['recomputed'])} computed again because the saved evaluation was made by other "
                     f"code ({', '.join(how['recomputed'])})")
    return "Evaluations: " + "; ".join(parts) + "."


def entropy_markdown(result: Comparison) -> list[str]:
    """Generative perplexity at equal entropy, per run and judge, read off the nucleus sweeps: at the
    entropy of real text and at the highest entropy every sweep reaches."""
    judges, target, common = result.judges(), result.target_entropy, result.common_entropy
    if not judges or target is None or len(result.settings.top_p) < 2:
        return []
    levels = [(target, "real text"), *([(common, "common")] if common is not None else [])]
    lines = [f"Generative perplexity at equal unigram entropy, read off each run's nucleus sweep (top_p "
             f"{', '.join(map(str, result.settings.top_p))}; linear in log-perplexity between the two settings "
             f"around it; — : the sweep does not reach it): at the entropy of real validation text ({target:.3f} "
             "nats, as many blocks as samples) and, since a nucleus only lowers entropy, at the highest entropy "
             "every run's sweep reaches (common: "
             + ("none, the sweeps do not overlap" if common is None else f"{common:.3f} nats") + "):", "",
             "| run | " + " | ".join(f"{judge_label(j)} at {level:.3f} ({what})" for level, what in levels
                                     for j in judges) + " |",
             "|---|" + "---|" * (len(judges) * len(levels))]
    for name in result.rows:
        values = [v for level, _ in levels for v in result.equal_entropy(name, level)]
        lines.append(f"| {name} | " + " | ".join("—" if v is None else f"{v:.1f}" for v in values) + " |")
    return lines


def provenance_line(prov: dict[str, Any]) -> str:
    """Date, commit, machine, torch version and the exact command of a comparison."""
    machine = prov.get("machine", {})
    where = f"{machine.get('cpu_model')} ({machine.get('cpus_available')} CPUs"
    where += f", {machine['cuda_device']})" if machine.get("cuda_device") else ")"
    return (f"Measured {prov.get('date')} at commit {prov.get('commit')} on {where}, torch "
            f"{prov.get('versions', {}).get('torch')}: `{prov.get('command')}`")


def compare_markdown(result: Comparison) -> str:
    """The tables of ``compare.md`` and their legend."""
    judges = "; ".join(f"{judge_label(j)} = `{Path(j).name}`" for j in result.judges())
    judge = f"; judges (with their checkpoint's hash): {judges}" if judges else ""
    if (mauve := mauve_featurizer(result)) is not None:
        judge += (f"; MAUVE (an estimate of a divergence-frontier summary, not a likelihood, ± bootstrap SE) against "
                  f"held-out validation text, features: `{mauve}` (comparable only under the same featurizer)")
    lines = [*runs_markdown(result), "",
             f"Base preset `{result.base}` with overrides {result.overrides or 'none'}; "
             f"{result.settings.sequences} validation blocks per bound, the same blocks and draws for every "
             f"run{judge}. "
             "Bounds are upper bounds on the NLL of the sampled chain (± Monte-Carlo standard error); the "
             "continuous-time bound (column-constant kernels) bounds the NLL of the reverse CTMC that chain tends to "
             "as T grows; the autoregressive row is an exact NLL. An exact NLL below upper bounds shows only that "
             "the autoregressive model's NLL is below those bounds: a diffusion model's true NLL is at most its "
             "bound and may be lower, so it does not show that the autoregressive model has the better likelihood. "
             "The no-training baseline is the bound of the "
             "Bayes-unigram denoiser under each method's own process on the same blocks and draws (the unigram "
             "model's exact NLL for ar); the paired difference is model minus baseline with its standard error. The "
             "paper metric is the reference implementation's validation figure for the run's algorithm, at "
             "t ~ U(1e-3, 1) as it draws it: for GDDS runs the cross-entropy with the true jump mask carried into "
             "the output, for mdlm MDLM's ELBO-weighted masked cross-entropy; not a likelihood. "
             + _absent_paper_metric(result), evaluations_line(result)]
    if result.differences:
        lines += ["", *differences_markdown(result)]
    if result.pair_differences:
        lines += ["", *differences_markdown(result, pairs=True)]
    if result.selection:
        lines += ["", selection_line(result.selection)]
    if result.provenance:
        lines += ["", provenance_line(result.provenance)]
    table = entropy_markdown(result)
    if table:
        lines += ["", *table]
    return "\n".join(lines) + "\n"


def write_comparison(result: Comparison, out: Path) -> list[Path]:
    """``compare.md`` and ``compare.png`` next to the ``compare.json`` the engine wrote."""
    out = Path(out)
    return [write_text_atomically(out / "compare.md", compare_markdown(result)),
            save_png(compare_figure(result), out / "compare.png")]
