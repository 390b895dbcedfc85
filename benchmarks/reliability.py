"""Replay of the bad inputs and faults of the attack on gdds (issue 24), each with a verdict.

The attack's report (``reliability-inputs.md`` in the project's shared folder: its inputs table, the faults of
its Part 3 and the crafted inputs of its Part 4) lists what it tried, with the command and what gdds did.
Issue 24 is done when the same inputs and faults, rerun, show no "accepted", no unclear error and nothing
lost. This script reruns every input of that table (each input of a grouped row on its own), the crafted
run, model and judge folders of Part 4, and the cheap faults of Part 3, on tiny stand-ins for the attack's
runs (a corpus of 6 short works, a 2-layer width-64 model trained for 4 steps, a long line of 8 MB where the
attack's was 30 MB), so that it takes minutes on 2 CPU cores. For the long-line rows, the peak RSS above that
of a ``gdds prepare`` of the small corpus, per character, is reported.

Each row runs one command in a fresh process (``python -m gdds ARGS``, shown as ``gdds ARGS``; a Python call of
the table as ``python -c``, its exception shown as the CLI would; a fault through a hook of ``--phase gdds``)
and records its exit status, message, wall time and peak RSS; the verdict rules and the checks are those of
``benchmarks/replay.py`` (its docstring). The checks here: nothing lost (a user's files, each step once in
log.jsonl, weights equal to an uninterrupted run, the previous checkpoint intact, no half-written leftovers),
nothing computed before a refusal (no store built, no step logged, no weights opened), nothing outside a
model folder opened (Linux inotify on the outside file: it sees an open by any code, Rust's included), no
code run from a pickle or a judge folder (its marker file absent).

The parts, a module each beside this script (imported as ``common`` is):

- ``reliability_setup.py``: the stand-ins (corpora, ``tiny.yaml``, the base run and model folders, the bad
  corpus folders and YAML files) and the runner of this replay;
- ``reliability_inputs.py``: the rows of the inputs table;
- ``reliability_faults.py``: Part 3's faults and their rows;
- ``reliability_security.py``: Part 4's crafted folders and their rows;
- ``reliability_phases.py``: what runs in a child process (this script with ``--phase``): the set-up, a
  Python call, ``gdds`` with fault hooks, the overwrites killed at each step;
- this script: the replay in order (the set-up, then the inputs, the faults and the crafted inputs) and the
  report.

Everything is written under one temporary folder, removed at the end unless ``--keep``; GDDS_CACHE_DIR is one
folder in it for the whole replay (so the corpus is tokenised once) except where a row needs its own. Run from
the repository root with gdds importable (e.g. ``PYTHONPATH=src``)::

    python benchmarks/reliability.py [--out FILE.json] [--markdown FILE.md] [--jobs N] [--keep]

Without ``--out`` the JSON report (machine, versions, settings, summary, rows) is printed on stdout. The exit
status is 1 when a row is not as it should be (an error accepted or unclear, a failure, a failed check).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import machine_info, versions
from gdds.files import write_text_atomically
from reliability_faults import fault_cases
from reliability_inputs import input_cases
from reliability_phases import PHASES
from reliability_security import crafted_folders, security_cases
from reliability_setup import HUGE_LINE_BYTES, Replay, write_inputs
from replay import Case, Process

SCRIPT = Path(__file__).resolve()


def replay(root: Path, jobs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Make the inputs under ``root`` and replay every row; the rows and the settings used."""
    rp = Replay(root, jobs, SCRIPT)
    write_inputs(root)
    baseline = rp.execute(Case("set-up", "baseline: `gdds prepare` of the small corpus (the long line's peak RSS is "
                                         "measured above it)", ["prepare", str(rp.yaml)], expect="works"))
    rp.baseline_rss = baseline["peak_rss_mib"]
    setup = Process([sys.executable, str(SCRIPT), "--phase", "setup", "--spec", json.dumps({"root": str(root)})],
                    rp.env, timeout=600).wait()
    if setup.rc != 0:
        raise RuntimeError(f"the set-up failed (exit status {setup.rc}):\n{setup.stderr[-4000:]}")
    crafted_folders(root)
    rows = [baseline, *rp.run_all([*input_cases(rp), *fault_cases(rp), *security_cases(rp)])]
    settings = {"tiny_yaml": rp.yaml.read_text().replace(str(root), "$T"), "jobs": jobs,
                "huge_line_bytes": HUGE_LINE_BYTES, "setup_seconds": round(setup.seconds, 1),
                "long_line": long_line_memory(rp)}
    return rows, settings


def long_line_memory(rp: Replay) -> dict[str, float | None]:
    """Peak RSS of ``gdds prepare`` on the long lines: above the baseline per character, and per extra character."""
    peaks = sorted(rp.long_line.items())
    out: dict[str, float | None] = {"baseline_peak_rss_mib": rp.baseline_rss}
    for chars, peak in peaks:
        out[f"peak_rss_mib_{chars}"] = peak
        out[f"bytes_per_char_above_baseline_{chars}"] = (peak - (rp.baseline_rss or 0)) * (1 << 20) / chars
    if len(peaks) == 2:
        out["bytes_per_extra_char"] = (peaks[1][1] - peaks[0][1]) * (1 << 20) / (peaks[1][0] - peaks[0][0])
    return out


def cell(text: object, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    """The rows as a markdown table, after a summary and the verdict rules."""
    rows, summary = report["rows"], report["summary"]
    lines = [
        "# Replay of the attack's bad inputs and faults (issue 24)", "",
        f"`{' '.join(report['command'])}` on {report['created_utc']}: gdds {report['versions']['gdds']} "
        f"(commit {report['commit']}), {report['machine']['cpu_model']}, {report['machine']['cpu_count']} CPUs; "
        f"{summary['seconds']:.0f} s in all.", "",
        f"{len(rows)} rows: " + ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items())
        + f"; {summary['not_ok']} not as they should be"
        + (f" (#{', #'.join(str(i) for i, r in enumerate(rows, 1) if not r['ok'])})" if summary["not_ok"] else "")
        + f"; {summary['failed_checks']} failed checks.", "",
        "Verdicts: **clear** = an error was due, exit status not 0, one `gdds: error:` line without the "
        "\"report it if it looks like a bug\" suffix, no traceback, naming what the row requires; **unclear** = "
        "an error, but not so; **accepted** = exit status 0 where an error was due; **works** = exit status 0 "
        "where success is right; **failed** = otherwise; **killed** = a fault the harness made. Checks: nothing "
        "lost, nothing computed before a refusal, nothing outside a folder opened, no code run from a pickle.", "",
        "| # | input | command | rc | message | s | verdict | checks |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        checks = "; ".join(("ok: " if c["ok"] else "**FAILED**: ") + c["name"] + (f" ({c['detail']})" if c["detail"]
                                                                                   else "") for c in r["checks"])
        verdict_text = r["verdict"] if r["ok"] or not r["why"] else f"**{r['verdict']}**: {r['why']}"
        how = f" ({r['how']})" if r["how"] else ""
        lines.append(f"| {i} | {cell(r['section'] + ': ' + r['input'])} | `{cell(r['command'], 300)}` {cell(how)} | "
                     f"{r['rc']} | {cell(r['message'])} | {r['seconds']:.1f} | {cell(verdict_text)} | {cell(checks)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay the attack's bad inputs and faults (issue 24).")
    parser.add_argument("--out", type=Path, help="JSON report (default: printed on stdout)")
    parser.add_argument("--markdown", type=Path, help="the rows as a markdown table")
    parser.add_argument("--jobs", type=int, default=2, help="commands run at once where rows are independent")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return PHASES[args.phase](json.loads(args.spec), args.rest)
    from gdds.engine.provenance import git_commit

    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="gdds-reliability-"))
    try:
        rows, settings = replay(root, max(1, args.jobs))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = {"seconds": round(time.perf_counter() - start, 1), "rows": len(rows),
               "verdicts": dict(Counter(r["verdict"] for r in rows)), "not_ok": sum(not r["ok"] for r in rows),
               "failed_checks": sum(not c["ok"] for r in rows for c in r["checks"])}
    report = {"benchmark": "reliability", "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": [Path(sys.executable).name, *sys.argv], "commit": git_commit(),
              "source": "reliability-inputs.md (the attack on a7bf748: inputs table, Part 3 faults, Part 4)",
              "machine": machine_info(cuda_used=False),
              "versions": {**versions(), **{p: version(p) for p in ("transformers", "tokenizers", "safetensors")}},
              "settings": settings, "summary": summary, "rows": rows}
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        write_text_atomically(args.out, text)
    else:
        sys.stdout.write(text)
    if args.markdown:
        write_text_atomically(args.markdown, markdown(report))
    print(f"{len(rows)} rows, {summary['verdicts']}, {summary['not_ok']} not ok, {summary['seconds']:.0f} s",
          file=sys.stderr)
    return 1 if summary["not_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
