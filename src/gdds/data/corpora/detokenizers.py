"""Detokenisers: undo the word tokenisation some benchmark corpora are distributed in, so that a
subword tokenizer sees ordinary text (the masked-diffusion papers, e.g. SEDD, Lou et al. 2024 and
MDLM, Sahoo et al. 2024, detokenise LM1B, WikiText and PTB before GPT-2 tokenisation).

- :func:`lm1b_detokenize`: LM1B sentences (``He said , " it 's fine . "`` -> ``He said, "it's fine."``);
- :func:`wikitext_detokenize`: WikiText articles (``1 @,@ 000`` -> ``1,000``, ``= = Career = =`` ->
  ``== Career ==``);
- :func:`ptb_detokenize`: Penn Treebank sentences (``it 's`` -> ``it's``; ``N`` and ``<unk>`` are kept).

Also :func:`group_articles`, which turns the line rows of WikiText into articles.
``DETOKENIZERS`` is the one list of their names (``corpus_args.detokenize`` of ``hf:`` corpora);
``DETOKENIZER_VERSION`` enters corpus fingerprints, so changing a rule re-tokenises.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from ...registry import Registry

DETOKENIZER_VERSION = 1

# A clitic split off its word: "it 's", "they 're", "we 've", "I 'll", "I 'm", "he 'd", "do n't".
_CLITIC = re.compile(r" ('(?:s|re|ve|ll|m|d)|n't)\b", re.IGNORECASE)
# A plural possessive split off: "the players ' guild" (a quote opening a quotation is followed by a word).
_PLURAL_POSSESSIVE = re.compile(r"(?<=s) '(?= |$)", re.MULTILINE)
# Punctuation that closes: no space before it when it is followed by a space, an end or more punctuation
# (so ".5" or ".NET" keep their space).
_CLOSING = re.compile(r" +([,.!?;:%)\]}])(?=[\s,.!?;:%)\]}\"']|$)")
_OPENING = re.compile(r"([(\[{$#]) +")
_QUOTED = re.compile(r'" ([^"\n]*?) "')
_URL = re.compile(r"\b(https?|ftp) : / / ")
_NUMBER_JOINERS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}
_HEADING_RUN = re.compile(r"=(?: =)+")
_LINE_EDGES = re.compile(r"^[ \t]+|[ \t]+$", re.MULTILINE)
_ARTICLE_TITLE = re.compile(r"^= [^=](?:.*[^=])? =$")


def _spacing(text: str) -> str:
    """The rules shared by every detokeniser: clitics, closing/opening punctuation, paired double
    quotes, and spaces at the edges of lines."""
    text = _CLITIC.sub(r"\1", text)
    text = _PLURAL_POSSESSIVE.sub("'", text)
    text = _CLOSING.sub(r"\1", text)
    text = _OPENING.sub(r"\1", text)
    text = _QUOTED.sub(r'"\1"', text)
    return _LINE_EDGES.sub("", text)


def lm1b_detokenize(text: str) -> str:
    """One LM1B sentence as ordinary text: clitics joined (``it 's`` -> ``it's``, ``do n't`` ->
    ``don't``), no space before closing punctuation (``, . ! ? ; : % ) ]``) nor after opening
    brackets and ``$``, double quotes hugging what they quote, ``http : / / `` -> ``http://``."""
    return _spacing(_URL.sub(r"\1://", text))


def wikitext_detokenize(text: str) -> str:
    """A WikiText article as ordinary text: the ``@-@``, ``@,@``, ``@.@`` number joiners
    (``1 @,@ 000`` -> ``1,000``, ``state @-@ of`` -> ``state-of``), headings ``= = Career = =`` ->
    ``== Career ==``, then the spacing rules of :func:`lm1b_detokenize` and each line stripped."""
    for joiner, char in _NUMBER_JOINERS.items():
        text = text.replace(joiner, char)
    text = _HEADING_RUN.sub(lambda m: m.group().replace(" ", ""), text)
    return _spacing(text)


def ptb_detokenize(text: str, unk: str | None = None) -> str:
    r"""A Penn Treebank sentence (``ptb_text_only``: lower case, numbers as ``N``, rare words as
    ``<unk>``) with clitics joined (``it 's`` -> ``it's``, ``do n't`` -> ``don't``) and
    ``\\/`` -> ``/``. The ``N`` and ``<unk>`` tokens are kept (``unk`` replaces ``<unk>`` when
    given)."""
    text = _spacing(text.replace("\\/", "/"))
    return text if unk is None else text.replace("<unk>", unk)


def group_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText rows (one line each) grouped into articles: an article starts at a title line
    ``= Title =`` (a single ``=`` on each side; ``= = Section = =`` lines are headings inside it).
    Lines before the first title form an article of their own. Lines are joined by newlines."""
    article: list[str] = []
    for line in lines:
        line = line.rstrip("\n")
        if _ARTICLE_TITLE.match(line.strip()) and any(part.strip() for part in article):
            yield "\n".join(article)
            article = []
        article.append(line)
    if any(part.strip() for part in article):
        yield "\n".join(article)


DETOKENIZERS: Registry[Callable[[str], str]] = Registry("detokenizer")
DETOKENIZERS.register("lm1b", lm1b_detokenize)
DETOKENIZERS.register("wikitext", wikitext_detokenize)
DETOKENIZERS.register("ptb", ptb_detokenize)
