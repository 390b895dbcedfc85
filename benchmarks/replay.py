"""Running the rows of a replay of bad inputs and faults (``benchmarks/reliability.py``): each row one command
in a fresh process, its exit status, message, wall time and peak RSS, a verdict and named checks.

The message of a command is the last ``gdds...: error:`` line of its stderr (progress bars and argparse's usage
lines come before it), else its last warning, else its last line.

Verdict rules (:func:`verdict`):

- where an error is due: ``accepted`` when the exit status is 0; ``clear`` when it is not 0 (and not a
  signal), stderr holds exactly one ``gdds: error: ...`` line (or argparse's ``gdds CMD: error: ...``), no
  traceback and not the "report it if it looks like a bug" suffix (which ``gdds.cli.main`` adds to an error
  type it does not expect), and the message contains every name the row requires (the key, file, option or
  character the attack expected to see named; case-insensitive) and none it forbids (a wrong diagnosis the
  attack reported); else ``unclear``, with the reasons;
- where success is right: ``works`` with exit status 0, else ``failed``;
- a run the harness kills on purpose (a fault): ``killed`` when SIGKILL ended it, else ``failed``.

A row is ``ok`` when its verdict is ``clear``, ``works`` or ``killed`` and each of its checks holds (a check is
a function of the command's result that returns ``None`` when its property holds, else what is wrong; one
that raises does not hold).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import resource
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERROR_LINE = re.compile(r"^gdds(?: [\w-]+)?: error: ")
WARNING_LINE = re.compile(r"Warning: ")
BUG_SUFFIX = "report it if it looks like a bug"
OK_VERDICTS = ("clear", "works", "killed")


# ---------------------------------------------------------------------------------------------- verdicts
def message(stderr: str) -> str:
    """The error line of ``stderr``: its last ``gdds...: error:`` line, else its last warning
    (``...Warning: ...``), else its last non-empty line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    warnings = [line for line in lines if WARNING_LINE.search(line)]
    return (errors or warnings or lines or [""])[-1]


def verdict(expect: str, rc: int, stderr: str, names: Sequence[str] = (), absent: Sequence[str] = ()
            ) -> tuple[str, str]:
    """``(verdict, why)`` by the rules of the module docstring; ``expect`` is ``error``, ``works`` or ``killed``."""
    if expect == "works":
        return ("works", "") if rc == 0 else ("failed", f"exit status {rc} where success is right")
    if expect == "killed":
        return ("killed", "") if rc == -signal.SIGKILL else ("failed", f"exit status {rc}, not the harness's SIGKILL")
    if rc == 0:
        return "accepted", "exit status 0 where an error was due"
    text, problems = message(stderr).casefold(), []
    if rc < 0:
        problems.append(f"ended by signal {-rc}")
    if "Traceback" in stderr:
        problems.append("a traceback")
    error_lines = sum(bool(ERROR_LINE.match(line.strip())) for line in stderr.splitlines())
    if error_lines != 1:
        problems.append(f"{error_lines} `gdds: error:` lines, not one")
    if BUG_SUFFIX in stderr:
        problems.append("the 'report it if it looks like a bug' suffix (an error type the CLI does not expect)")
    if missing := [n for n in names if n.casefold() not in text]:
        problems.append(f"does not name {', '.join(missing)}")
    if wrong := [n for n in absent if n.casefold() in text]:
        problems.append(f"says {', '.join(wrong)}")
    return ("unclear", "; ".join(problems)) if problems else ("clear", "")


# ------------------------------------------------------------------------------------------- processes
@dataclass
class Result:
    """What one command did."""

    rc: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mib: float


class Process:
    """A command started now; :meth:`wait` reaps it with ``wait4`` (its own peak RSS), killing it at ``timeout``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path | None = None,
                 limits: dict[int, int] | None = None, timeout: float = 300.0) -> None:
        # closed by wait(), which reads them
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115
        self.timeout, self.start = timeout, time.perf_counter()

        def limit() -> None:
            for kind, value in (limits or {}).items():
                resource.setrlimit(kind, (value, value))

        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, env=env,
                                     cwd=cwd, preexec_fn=limit if limits else None)

    def wait(self) -> Result:
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - self.start > self.timeout:
                os.kill(self.proc.pid, signal.SIGKILL)
            time.sleep(0.02)
        seconds = time.perf_counter() - self.start
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        text = []
        for fh in (self.out, self.err):
            fh.seek(0)
            text.append(fh.read().decode("utf-8", "replace"))
            fh.close()
        return Result(self.proc.returncode, text[0], text[1], seconds, usage.ru_maxrss / 1024)


class OpenWatch:
    """Which of ``paths`` any process opens while this watch is active (Linux inotify ``IN_OPEN``)."""

    IN_OPEN, IN_NONBLOCK = 0x20, 0x800

    def __init__(self, paths: Iterable[Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.paths = {}
        for path in paths:
            wd = libc.inotify_add_watch(self.fd, os.fsencode(path), self.IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
            self.paths[wd] = str(path)

    def opened(self) -> list[str]:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            data = b""
        finally:
            os.close(self.fd)
        seen, at = set(), 0
        while at < len(data):
            wd, _, _, size = struct.unpack_from("iIII", data, at)
            seen.add(self.paths[wd])
            at += 16 + size
        return sorted(seen)


# ------------------------------------------------------------------------------------------------ rows
Check = Callable[[Result], "str | None"]  # None when the property holds, else what is wrong


@dataclass
class Case:
    """One replayed input or fault: the command (``gdds ARGS``, or the runner's script with ``--phase PHASE
    --spec JSON(spec) -- ARGS``; the phase ``python`` is shown as ``python -c SPEC``), what is due (``error``,
    ``works``, ``killed``), the names its message must (``names``) and must not (``absent``) contain, and the
    checks after it (``watch``: files that no process may open meanwhile, the check named ``watch_check``).
    ``background``: start it and go on once this file exists; ``join``: no command, wait
    for that background case's."""

    section: str
    input: str
    args: list[str] = field(default_factory=list)
    expect: str = "error"
    names: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    phase: str | None = None
    spec: Any = None
    how: str = ""
    display: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    limits: dict[int, int] = field(default_factory=dict)
    watch: tuple[Path, ...] = ()
    watch_check: str = "nothing outside the folder opened"
    checks: list[tuple[str, Check]] = field(default_factory=list)
    before: Callable[[], object] | None = None
    parallel: bool = True
    timeout: float = 300.0
    background: Path | None = None
    join: Case | None = None

    def argv(self, script: Path) -> list[str]:
        """``python -m gdds ARGS``, or ``python SCRIPT --phase PHASE --spec JSON -- ARGS``."""
        if self.phase is None:
            return [sys.executable, "-m", "gdds", *self.args]
        return [sys.executable, str(script), "--phase", self.phase, "--spec", json.dumps(self.spec), "--", *self.args]

    def shown(self, root: Path) -> str:
        """The command as a user would type it, the temporary folder written ``$T``."""
        if self.display is not None:
            text = self.display
        elif self.phase == "python":
            text = f"python -c {shlex.quote(self.spec)}"
        else:
            text = shlex.join(["gdds", *self.args])
        env = " ".join(f"{k}={v}" for k, v in self.env.items() if k == "GDDS_CACHE_DIR")
        if resource.RLIMIT_FSIZE in self.limits:
            env = f"ulimit -f {self.limits[resource.RLIMIT_FSIZE] // 1024}; {env}"
        return f"{env} {text}".strip().replace(str(root), "$T")


class Runner:
    """Runs cases with the environment of every command (GDDS_DEBUG unset, GDDS_CACHE_DIR the folder
    ``root/cache``) and the phases of ``script``; keeps the processes started in the background."""

    def __init__(self, root: Path, jobs: int, script: Path) -> None:
        self.root, self.jobs, self.script = root, jobs, script
        self.env = {k: v for k, v in os.environ.items() if k != "GDDS_DEBUG"}
        self.env["GDDS_CACHE_DIR"] = str(root / "cache")
        self.pending: dict[int, Process] = {}
        self.serial = 0

    def out(self, name: str = "run") -> str:
        """A fresh ``--out`` folder path (missing)."""
        self.serial += 1
        return str(self.root / "runs" / f"{name}-{self.serial:03d}")

    def execute(self, case: Case, parallel: bool = False) -> dict[str, Any] | None:
        """Run ``case``: its row (``None`` for a case started in the background)."""
        if case.before is not None:
            case.before()
        env = {**self.env, **case.env}
        if parallel and self.jobs > 1:
            env["OMP_NUM_THREADS"] = "1"  # two commands at once on 2 cores: one thread each
        if case.join is not None:
            return row(case, self.pending.pop(id(case.join)).wait(), self.root, case.checks)
        watch = OpenWatch(case.watch) if case.watch else None
        process = Process(case.argv(self.script), env, case.cwd, case.limits, case.timeout)
        if case.background is not None:
            self.pending[id(case)] = process
            deadline = time.monotonic() + case.timeout
            while not case.background.exists() and time.monotonic() < deadline and \
                    os.waitid(os.P_PID, process.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.05)
            return None
        result = process.wait()
        checks = list(case.checks)
        if watch is not None:
            opened = watch.opened()
            checks.insert(0, (case.watch_check, lambda _: opened and f"opened {opened}"))
        return row(case, result, self.root, checks)

    def run_all(self, cases: list[Case]) -> list[dict[str, Any]]:
        """The rows of ``cases``, in order: the ``parallel`` ones ``jobs`` at a time, then the others one by one."""
        rows: dict[int, dict[str, Any] | None] = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            futures = {i: pool.submit(self.execute, c, True) for i, c in enumerate(cases) if c.parallel}
            for i, future in futures.items():
                rows[i] = future.result()
        for i, case in enumerate(cases):
            if not case.parallel:
                rows[i] = self.execute(case)
        return [rows[i] for i in range(len(cases)) if rows[i] is not None]


def row(case: Case, result: Result, root: Path, checks: list[tuple[str, Check]]) -> dict[str, Any]:
    """The record of ``case`` run with ``result``: verdict, checks and whether all is as it should be."""
    name, why = verdict(case.expect, result.rc, result.stderr, case.names, case.absent)
    done = []
    for label, check in checks:
        try:
            problem = check(result)
        except Exception as exc:  # a check that cannot run does not hold
            problem = f"check failed: {type(exc).__name__}: {exc}"
        done.append({"name": label, "ok": not problem, "detail": str(problem or "").replace(str(root), "$T")})
    return {"section": case.section, "input": case.input, "command": case.shown(root), "how": case.how,
            "expect": case.expect, "names": list(case.names), "rc": result.rc,
            "message": message(result.stderr).replace(str(root), "$T"), "seconds": round(result.seconds, 2),
            "peak_rss_mib": round(result.peak_rss_mib, 1), "verdict": name, "why": why, "checks": done,
            "ok": name in OK_VERDICTS and all(c["ok"] for c in done)}


# --------------------------------------------------------------------------------------- file helpers
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links followed): its SHA-256 by relative name."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def log_steps(run: Path, kind: str) -> list[int]:
    """The steps of the ``kind`` records of ``run``'s ``log.jsonl``, in file order, torn lines included as -1."""
    steps = []
    for line in (run / "log.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            steps.append(-1)
            continue
        if record.get("kind") == kind:
            steps.append(record["step"])
    return steps


def leftovers(run: Path) -> list[str]:
    """Half-written things a killed process can leave in a run folder."""
    found = [*run.glob("checkpoints/.tmp-*"), *run.glob("checkpoints/.trash-*"), *run.glob("checkpoints/.last-*"),
             *run.glob(".*.tmp")]
    return sorted(str(p.relative_to(run)) for p in found)


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder by its manifest (missing or changed files), or None."""
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    bad = [n for n, e in manifest.items() if not (folder / n).is_file() or sha256(folder / n) != e["sha256"]]
    return f"{folder.name}: {bad} do not match the manifest" if bad else None


def each_step_once(run: Path, steps: int, evals: list[int]) -> Check:
    def check(_: Result) -> str | None:
        train, valid = log_steps(run, "train"), log_steps(run, "eval")
        if train != list(range(1, steps + 1)) or valid != evals:
            return f"log.jsonl train steps {train}, eval steps {valid}"
        return None
    return check


def same_weights(run: Path, reference: Path) -> Check:
    def check(_: Result) -> str | None:
        a, b = run / "checkpoints" / "last", reference / "checkpoints" / "last"
        differ = [n for n in ("model.safetensors", "ema.safetensors") if sha256(a / n) != sha256(b / n)]
        return f"{differ} differ from the uninterrupted run" if differ else None
    return check


def no_leftovers(run: Path) -> Check:
    return lambda _: (found := leftovers(run)) and f"left {found}"


def missing(path: Path, what: str) -> Check:
    return lambda _: path.exists() and f"{what}: {path} exists"
