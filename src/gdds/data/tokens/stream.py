"""Blocks of a split read on the fly (a streaming corpus such as FineWeb: never stored whole).

The split's documents, each as ``[BOS] doc [EOS]``, form one token stream cut into consecutive
blocks of ``seq_len`` ("wrap" packing, as :class:`gdds.data.tokens.dataset.PackedBlocks`). The stream
is read forward: training asks for blocks in order (:func:`gdds.engine.steps.step_rows`), and the
reader's position (block, document, offset in the wrapped document) is saved with every
checkpoint and restored by :meth:`StreamedBlocks.seek`, so a resumed run reads exactly the blocks
an uninterrupted one would. A background thread tokenises the next documents while the model trains.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..corpora.sources import Corpus, CorpusError
from ..tokenizers.base import TextTokenizer

_END = object()


class _Reader:
    """``[BOS] doc [EOS]`` ids of a split's documents from index ``start`` on, tokenised ``ahead``
    documents in advance by a background thread (so a training step does not wait for the tokenizer),
    handed out in order; an error of the reader is raised where the next document is asked for."""

    def __init__(self, docs: Iterator[str], tokenizer: TextTokenizer, ahead: int = 256) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(docs, tokenizer), daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, docs: Iterator[str], tok: TextTokenizer) -> None:
        try:
            for text in docs:
                if not self._put(np.asarray([tok.bos_id, *tok.encode(text), tok.eos_id], dtype=np.int64)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def next(self) -> np.ndarray | None:
        """The next wrapped document; ``None`` at the end of the split."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return None if item is _END else item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class StreamedBlocks:
    """"wrap" blocks of ``corpus``'s ``split``, tokenised with ``tokenizer`` as they are read."""

    def __init__(self, corpus: Corpus, split: str, tokenizer: TextTokenizer, seq_len: int) -> None:
        if tokenizer.bos_id is None or tokenizer.eos_id is None:
            raise ValueError(f"streamed blocks need BOS and EOS ids; {tokenizer.name} lacks one")
        self.corpus, self.split, self.tokenizer, self.seq_len = corpus, split, tokenizer, int(seq_len)
        self._reader: _Reader | None = None
        self.seek({"block": 0, "doc": 0, "offset": 0})

    def __len__(self) -> int:
        """Unknown in advance: as many blocks as training asks for."""
        return np.iinfo(np.int64).max

    def seek(self, position: dict[str, int]) -> None:
        """Continue from a :meth:`position`."""
        self._block, self._doc, self._offset = position["block"], position["doc"], position["offset"]
        if self._reader is not None:
            self._reader.close()
        self._reader = _Reader(self.corpus.documents(self.split, self._doc), self.tokenizer)
        self._current: np.ndarray | None = None  # the wrapped document self._doc, read from self._offset on

    def position(self) -> dict[str, int]:
        """Where the next block starts: its index, its document and the offset inside ``[BOS] doc [EOS]``."""
        return {"block": self._block, "doc": self._doc, "offset": self._offset}

    def _wrapped(self) -> np.ndarray:
        assert self._reader is not None  # set by seek()
        wrapped = self._reader.next()
        if wrapped is None:
            raise CorpusError(f"the streamed {self.split!r} split of {self.corpus.name!r} ended at block "
                              f"{self._block}; train for fewer steps or use a larger corpus")
        return wrapped

    def _take(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need:
            if self._current is None:
                self._current = self._wrapped()
            head = self._current
            piece = head[self._offset:self._offset + need]
            parts.append(piece)
            need -= piece.size
            self._offset += piece.size
            if self._offset == head.size:
                self._current = None
                self._doc, self._offset = self._doc + 1, 0
        return np.concatenate(parts)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Blocks ``indices``: the next blocks of the stream, in order."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and not np.array_equal(idx, np.arange(self._block, self._block + idx.size)):
            raise CorpusError(f"a streamed split is read in order: the next block is {self._block}, "
                              f"asked for {idx[:3].tolist()}...")
        out = self._take(idx.size * self.seq_len).reshape(idx.size, self.seq_len)
        self._block += idx.size
        return out

    def batch(self, indices: np.ndarray | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The next ``len(indices)`` blocks as a LongTensor ``[n, seq_len]``."""
        return torch.from_numpy(self.rows(np.asarray(indices)))

    def mask(self, indices: Any) -> None:
        """Every position counts (no padding in wrap packing)."""
        return None
