"""See the forward process: one sentence noised at several times under several kernels.

The sentence is tokenized with the WordPiece vocabulary (30,522 tokens) and noised
with exact samples of ``q_t(.|x0)`` (:meth:`gdds.ForwardProcess.noise`) under kernels of
:data:`gdds.kernels.KERNELS` (by default mask, uniform and semantic, whose embeddings are
MiniLM's). Every time uses a generator seeded
with ``seed`` (common random numbers): each row is an exact sample of ``q_t`` and
rows are coupled, so under the mask kernel the masked set only grows with ``t``.
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.corpora.embedded import shakespeare_line
from ..data.tokenizers.registry import decode_pieces, encode
from ..files import write_atomically
from ..kernels import KERNELS, Kernel
from ..minilm import minilm_kernel, minilm_vocabulary
from ..process import ForwardProcess
from ..schedules import LogLinear, Schedule

DEFAULT_KERNELS = ("mask", "uniform", "semantic")
DEFAULT_TIMES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Figure geometry in inches; DejaVu Sans Mono advances 0.602 em per character.
_MONO, _FONT = "DejaVu Sans Mono", 8.5
_CHAR_W, _LINE_H, _PANEL_W, _PAD = _FONT * 0.602 / 72, _FONT * 1.45 / 72, 5.2, 0.08


@dataclass(frozen=True)
class NoisedRow:
    """The sentence at time ``t``: token strings and, per position, whether it differs from the clean token."""

    t: float
    tokens: list[str]
    changed: list[bool]

    @property
    def n_changed(self) -> int:
        """Number of positions that differ from the clean sentence."""
        return sum(self.changed)


@dataclass
class NoiseDemo:
    """A sentence, its clean WordPiece tokens, and its noised versions ``rows[kernel][i]`` at ``times[i]``."""

    sentence: str
    tokens: list[str]
    times: tuple[float, ...]
    seed: int
    schedule: str
    rows: dict[str, list[NoisedRow]] = field(default_factory=dict)


def title(name: str) -> str:
    """A kernel's heading: its name and its registry description (MiniLM embeddings for a
    kernel that needs embeddings)."""
    recipe = KERNELS.get(name)
    return f"{name} ({'MiniLM ' if recipe.needs_embeddings else ''}{recipe.description})"


def _kernel(name: str, schedule: Schedule, cache_dir: str | Path | None) -> Kernel:
    """Kernel ``name`` of the registry on the WordPiece vocabulary, special tokens excluded (the
    semantic ones by :func:`gdds.minilm.minilm_kernel`, the others on the same vocabulary)."""
    recipe = KERNELS.get(name)
    if recipe.needs_embeddings:
        return minilm_kernel(schedule, kernel=name, cache_dir=cache_dir)
    return recipe.build(minilm_vocabulary(), schedule, None, True)


def _check(times: Sequence[float], kernels: Sequence[str]) -> tuple[tuple[float, ...], tuple[str, ...]]:
    times = tuple(float(t) for t in times)
    kernels = tuple(kernels)
    if not times or not kernels:
        raise ValueError("give at least one time and one kernel")
    bad = [t for t in times if not 0 < t <= 1]  # also catches NaN
    if bad:
        raise ValueError(f"times must lie in (0, 1]; got {bad}")
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown}; choose from {list(KERNELS.names())}")
    if len(set(times)) != len(times) or len(set(kernels)) != len(kernels):
        raise ValueError("times and kernel names must not repeat")
    return times, kernels


def noise_demo(
    sentence: str | None = None,
    times: Sequence[float] = DEFAULT_TIMES,
    kernels: Sequence[str] = DEFAULT_KERNELS,
    seed: int = 0,
    schedule: Schedule | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> NoiseDemo:
    """Noise ``sentence`` (default: a Shakespeare line chosen by ``seed``) at each of
    ``times`` under each of ``kernels`` (names in :data:`gdds.kernels.KERNELS`).

    ``schedule`` defaults to ``LogLinear(1e-3)``; ``cache_dir`` is where the
    semantic kernel's kNN graph is cached (default :func:`gdds.files.cache_dir`); the noising
    runs on ``device`` (its draws differ from one device type to another).
    """
    times, kernels = _check(times, kernels)
    if sentence is None:
        sentence = shakespeare_line(seed)
    ids = encode(sentence)
    if not ids:
        raise ValueError(f"the sentence {sentence!r} has no tokens; give some text")
    sched = schedule if schedule is not None else LogLinear(1e-3)
    x0 = torch.tensor([ids], dtype=torch.long, device=device)
    demo = NoiseDemo(sentence, decode_pieces(ids), times, seed, repr(sched))
    for name in kernels:
        process = ForwardProcess(sched, _kernel(name, sched, cache_dir)).to(device)
        rows = []
        for t in times:
            gen = torch.Generator(device=device).manual_seed(seed)
            xt = process.noise(x0, t, generator=gen)[0].cpu()
            rows.append(NoisedRow(t, decode_pieces(xt.tolist()), (xt != x0[0].cpu()).tolist()))
        demo.rows[name] = rows
    return demo


def render_text(demo: NoiseDemo, ansi: bool = False) -> str:
    """A terminal table: one block per kernel, one line per time. Changed tokens are
    shown in bold red with ``ansi``, else between asterisks (``*[MASK]*``)."""

    def mark(token: str) -> str:
        return f"\033[1;31m{token}\033[0m" if ansi else f"*{token}*"

    n = len(demo.tokens)
    lines = [
        f"sentence: {demo.sentence}",
        f"tokens ({n}, WordPiece): {' '.join(demo.tokens)}",
        f"schedule: {demo.schedule}, seed {demo.seed}; changed tokens "
        + ("in bold red" if ansi else "marked *like this*"),
    ]
    width = len(str(n))
    for name, rows in demo.rows.items():
        lines += ["", f"{title(name)}:"]
        for row in rows:
            shown = " ".join(mark(tok) if ch else tok for tok, ch in zip(row.tokens, row.changed))
            lines.append(f"  t={row.t:<4g} {row.n_changed:>{width}}/{n} changed | {shown}")
    return "\n".join(lines) + "\n"


def save_text(demo: NoiseDemo, path: str | Path) -> Path:
    """Write :func:`render_text` (plain, no ANSI codes) to ``path`` atomically."""
    data = render_text(demo, ansi=False).encode("utf-8")
    return write_atomically(path, lambda fh: fh.write(data))


def save_figure(demo: NoiseDemo, path: str | Path, dpi: int = 150) -> Path:
    """Draw the demo as a PNG grid (rows = times, columns = kernels; changed tokens in
    red) with matplotlib's Agg backend and write it to ``path`` atomically. Characters
    the monospace font cannot draw (some CJK and Indic word pieces) are shown as ``□``."""
    try:
        from matplotlib import font_manager
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ft2font import FT2Font
    except ImportError as exc:
        raise ImportError("the noise figure needs matplotlib: pip install gdds[plot]") from exc

    font_file = font_manager.findfont(font_manager.FontProperties(family=_MONO))
    charmap = FT2Font(font_file).get_charmap()
    rows = {k: [[_drawable(tok, charmap) for tok in r.tokens] for r in rs] for k, rs in demo.rows.items()}
    per_line = int((_PANEL_W - 2 * _PAD) / _CHAR_W)
    layouts = {k: [_wrap(toks, per_line) for toks in rs] for k, rs in rows.items()}
    kernels, n_rows = list(demo.rows), len(demo.times)
    n_lines = max(len(lay) for lays in layouts.values() for lay in lays)
    panel_h = n_lines * _LINE_H + 2 * _PAD + 0.1  # + a strip for the changed count
    head = textwrap.wrap(_drawable(f"“{demo.sentence}”", charmap), 110) + textwrap.wrap(
        _drawable(f"WordPiece tokens ({len(demo.tokens)}): {' '.join(demo.tokens)}", charmap), 130
    )
    head_h, left, gap = 0.55 + 0.2 * len(head), 0.75, 0.12
    width = left + len(kernels) * (_PANEL_W + gap) + 0.03
    height = head_h + n_rows * (panel_h + gap) + 0.25
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    for i, line in enumerate(head):
        fig.text(0.5, 1 - (0.2 + 0.2 * i) / height, line, ha="center", va="top",
                 fontsize=10 if i == 0 else 8, color="black" if i == 0 else "0.3")
    missing = any(ord(ch) not in charmap for rs in demo.rows.values() for r in rs for tok in r.tokens for ch in tok)
    fig.text(left / width, 0.1 / height, f"{demo.schedule}, seed {demo.seed}; tokens that differ from the "
             "clean sentence in red" + ("; □ = a character the font lacks" if missing else ""),
             fontsize=7.5, color="0.35", va="bottom")
    for c, name in enumerate(kernels):
        for r, row in enumerate(demo.rows[name]):
            box = ((left + c * (_PANEL_W + gap)) / width, 1 - (head_h + r * (panel_h + gap) + panel_h) / height,
                   _PANEL_W / width, panel_h / height)
            ax = fig.add_axes(box)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("0.8")
            if r == 0:
                ax.set_title(title(name), fontsize=10)
            if c == 0:
                ax.set_ylabel(f"t = {row.t:g}", fontsize=9, rotation=0, ha="right", va="center")
            ax.text(0.99, 0.03, f"{row.n_changed}/{len(row.tokens)}", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=6.5, color="0.5")
            for j, line in enumerate(layouts[name][r]):
                y = 1 - (_PAD + (j + 0.5) * _LINE_H) / panel_h
                for i, col in line:
                    changed = row.changed[i]
                    ax.text((_PAD + col * _CHAR_W) / _PANEL_W, y, rows[name][r][i], transform=ax.transAxes,
                            family=_MONO, fontsize=_FONT, va="center", color="#c0392b" if changed else "black",
                            fontweight="bold" if changed else "normal")
    return write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, facecolor="white"))


def _drawable(token: str, charmap: dict[int, int]) -> str:
    return "".join(ch if ord(ch) in charmap else "□" for ch in token)


def _wrap(tokens: list[str], per_line: int) -> list[list[tuple[int, int]]]:
    """Wrap tokens into lines of ``(token index, character column)`` pairs."""
    lines: list[list[tuple[int, int]]] = [[]]
    col = 0
    for i, tok in enumerate(tokens):
        if col and col + len(tok) > per_line:
            lines.append([])
            col = 0
        lines[-1].append((i, col))
        col += len(tok) + 1
    return lines
