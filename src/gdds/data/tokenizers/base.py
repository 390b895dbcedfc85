"""The tokenizer interface shared by every tokenizer of :mod:`gdds.data`.

Special tokens. Each tokenizer has a mask id, and BOS / EOS / PAD ids for packing.
Tokenizers that lack some of them get them **appended after the base vocabulary**, in
the order mask, bos, eos, pad (then unk for the character tokenizer): the base ids keep
their meaning and ``mask_id`` is the base vocabulary size. Appended tokens never come
out of ``encode`` (text that spells ``<mask>`` is encoded as ordinary text), and
``decode`` / ``pieces`` render them by name.
"""
from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...files import write_atomically

if TYPE_CHECKING:
    from tokenizers import Tokenizer

META_FILE = "gdds_tokenizer.json"
PIECE_CHARS = 1 << 20  # a longer text is encoded piece by piece (TextTokenizer.encode_pieces)
# A single space between two non-space characters: every pre-tokenizer here starts a piece at it (GPT-2's
# pattern and the byte-level BPE's put a space only at the start of a piece or in a run of spaces;
# BERT's splits at every space), so the text on either side encodes to the same ids alone as in the whole.
_SPACE_CUT = re.compile(r"(?<=\S) (?=\S)")
_LISTED = 8  # unknown characters or words named in an UnknownTextError


class UnknownTextError(ValueError):
    """Text that a tokenizer cannot represent: characters or pieces outside its vocabulary, which it
    would turn into its unknown token (or refuse). A model can neither score such text nor be
    conditioned on it, so :meth:`TextTokenizer.encode_exact` refuses it rather than alter it."""


def listed(items: list[str]) -> str:
    """The first few of ``items``, each quoted and cut to 24 characters (for messages)."""
    shown = [repr(x if len(x) <= 24 else x[:24] + "...") for x in items[:_LISTED]]
    return ", ".join(shown) + (", ..." if len(items) > _LISTED else "")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8")
    write_atomically(path, lambda fh: fh.write(data))


class TextTokenizer(ABC):
    """Text <-> token ids, with the special ids a diffusion model needs.

    Attributes: ``name``, ``vocab_size`` (the model's output size, appended specials
    included), ``bos_id``, ``eos_id``, ``pad_id`` (``None`` where a tokenizer has none),
    ``mask_id`` (always set) and ``unk_id`` (``None`` unless unknown input maps to it).
    """

    kind: ClassVar[str]
    name: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    mask_id: int
    unk_id: int | None = None
    # Where a text may be cut into pieces that encode apart to the ids of the whole: "anywhere" (one token
    # per character), "space" (at a single space between non-space characters, _SPACE_CUT) or "never".
    cut: ClassVar[str] = "never"

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without any special token."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, parallel where the backend allows."""
        return [self.encode(t) for t in texts]

    def encode_pieces(self, text: str) -> Iterator[list[int]]:
        """The ids of ``text`` a piece of about :data:`PIECE_CHARS` characters at a time, cut where
        :meth:`_cut_at` allows (concatenated, they are ``encode(text)``): a long document is never held as
        one Python list of ints (about 8 bytes per token more than the text itself)."""
        start = 0
        while len(text) - start > PIECE_CHARS:
            stop = self._cut_at(text, start + PIECE_CHARS)
            if stop is None:
                break
            yield self.encode(text[start:stop])
            start = stop
        yield self.encode(text[start:])

    def _cut_at(self, text: str, near: int) -> int | None:
        """The first position from ``near`` on where :attr:`cut` allows cutting ``text``, or ``None``."""
        if self.cut == "anywhere":
            return near
        found = _SPACE_CUT.search(text, near) if self.cut == "space" else None
        return None if found is None else found.start()

    def encode_exact(self, text: str, what: str = "the text") -> list[int]:
        """``encode(text)`` when the vocabulary represents all of ``text``; else
        :class:`UnknownTextError` naming what it cannot (``what`` names the text in the message).
        For callers that must not alter the text: a score of it, a prompt fixed in a sample."""
        ids = self._represented(text)
        if ids is not None:
            return ids
        raise UnknownTextError(f"{what} has {self._unknown(text)}: remove or replace them (a model can neither "
                               "score nor continue text that its vocabulary cannot represent)")

    def _unknown(self, text: str) -> str:
        """What of ``text`` the vocabulary cannot represent, for :meth:`encode_exact`'s message: the
        characters that are unknown on their own, else the words (WordPiece turns a word of more than
        100 characters into ``[UNK]``)."""
        chars = [c for c in dict.fromkeys(text) if self._represented(c) is None]
        if chars:
            unknown = set(chars)
            count = sum(c in unknown for c in text)
            return f"{count} character(s) outside the {self.name} vocabulary ({len(chars)} distinct: {listed(chars)})"
        words = [w for w in dict.fromkeys(text.split()) if self._represented(w) is None]
        return f"{len(words)} word(s) that the {self.name} vocabulary cannot represent ({listed(words)})"

    def _represented(self, text: str) -> list[int] | None:
        """The ids of ``text``, or ``None`` when its encoding holds the unknown token or is refused."""
        try:
            ids = self.encode(text)
        except UnknownTextError:
            return None
        return None if self.unk_id is not None and self.unk_id in ids else ids

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; special tokens appear by name."""

    @abstractmethod
    def pieces(self, ids: Iterable[int]) -> list[str]:
        r"""The string of each token (byte-level tokens that are not valid UTF-8 on
        their own show their bytes as ``\\xNN`` escapes)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 of what defines the vocabulary (a file or the stored contents)."""

    def special_ids(self) -> list[int]:
        """Sorted distinct ids of the special tokens (bos, eos, pad, mask, unk)."""
        ids = (self.bos_id, self.eos_id, self.pad_id, self.mask_id, self.unk_id)
        return sorted({i for i in ids if i is not None})

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description that identifies this tokenizer."""
        return {
            "name": self.name, "vocab_size": self.vocab_size, "bos_id": self.bos_id, "eos_id": self.eos_id,
            "pad_id": self.pad_id, "mask_id": self.mask_id, "unk_id": self.unk_id, "sha256": self.fingerprint(),
        }

    def hf_tokenizer(self) -> Tokenizer:
        """This tokenizer as a ``tokenizers.Tokenizer`` giving the same ids (``encode(text,
        add_special_tokens=False)``), specials marked special: what a model folder's
        ``tokenizer.json`` holds, readable by ``transformers.PreTrainedTokenizerFast``."""
        raise NotImplementedError(f"the {self.name} tokenizer has no tokenizers equivalent of its own")

    def save(self, folder: str | Path) -> Path:
        """Store this tokenizer in ``folder`` (``gdds_tokenizer.json`` and, for trained
        tokenizers, their vocabulary files); read it back with ``load_tokenizer``."""
        folder = Path(folder)
        meta = {"kind": self.kind, "identity": self.identity(), **self._save_payload(folder)}
        write_json(folder / META_FILE, meta)
        return folder

    def _save_payload(self, folder: Path) -> dict[str, Any]:
        """Extra fields of ``gdds_tokenizer.json`` (and files written to ``folder``)
        needed to rebuild the tokenizer; none for tokenizers from installed packages."""
        return {}

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        out = [int(i) for i in ids]
        bad = next((i for i in out if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the {self.name} vocabulary [0, {self.vocab_size})")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


class AppendedSpecials(TextTokenizer):
    """A tokenizer whose ids ``< base_size`` come from a base vocabulary and whose ids
    from ``base_size`` on are the appended special tokens named in ``appended``."""

    base_size: int
    appended: tuple[str, ...]

    def _set_specials(self, base_size: int, appended: tuple[str, ...]) -> None:
        self.base_size, self.appended = base_size, appended
        self.vocab_size = base_size + len(appended)

    def _appended_id(self, name: str) -> int:
        return self.base_size + self.appended.index(name)

    @abstractmethod
    def _decode_base(self, ids: list[int]) -> str:
        """Text of ids that are all in the base vocabulary."""

    @abstractmethod
    def _base_piece(self, i: int) -> str:
        """String of one base-vocabulary token."""

    @abstractmethod
    def _hf_base(self) -> Tokenizer:
        """The base vocabulary (ids ``< base_size``) as a ``tokenizers.Tokenizer``."""

    def hf_tokenizer(self) -> Tokenizer:
        tok = self._hf_base()
        tok.add_special_tokens(list(self.appended))
        ids = [tok.token_to_id(name) for name in self.appended]
        if ids != list(range(self.base_size, self.vocab_size)):
            raise RuntimeError(f"the appended specials of {self.name} got ids {ids} in its tokenizers form, "
                               f"not {self.base_size}..{self.vocab_size - 1}")
        return tok

    def decode(self, ids: Iterable[int]) -> str:
        parts, run = [], []
        for i in self._check_ids(ids):
            if i < self.base_size:
                run.append(i)
                continue
            if run:
                parts.append(self._decode_base(run))
                run = []
            parts.append(self.appended[i - self.base_size])
        if run:
            parts.append(self._decode_base(run))
        return "".join(parts)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self._base_piece(i) if i < self.base_size else self.appended[i - self.base_size]
                for i in self._check_ids(ids)]
