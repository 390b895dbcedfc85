"""Building a token store (:mod:`gdds.data.tokens.store`): tokenise a corpus's splits in parallel into
atomic shards, resume after a killed build, and let one process build while the
others wait (:func:`open_store`).

Parallelism is a pool of threads, each encoding a batch of about a million characters: the
tokenizer backends (``tokenizers``, ``tiktoken``) release the GIL while they encode, and threads
need no ``if __name__ == "__main__"`` guard in the caller's script (processes started by
``spawn`` do). Batches are written in corpus order, whatever order they finish in.

A lock (:class:`gdds.files.FileLock` on ``.lock``, which names the builder's host and process id)
makes one process the builder of a store folder; the lock of a killed builder is not held, so the
next build takes it over.

A rebuild (``gdds prepare --rebuild``) builds a fresh store beside the old one and swaps it in with
two renames under the old folder's lock, then deletes the old folder: a run that opened the old
store keeps reading its files (they stay mapped), and a run that starts afterwards opens the new one.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ...files import FileLock, LockHeld, lock_owner, write_atomically, write_text_atomically
from ..corpora.sources import Corpus, CorpusError
from ..tokenizers.base import TextTokenizer
from .store import (
    BATCH_CHARS,
    FORMAT,
    MANIFEST,
    SHARD_TOKENS,
    TOKENIZER_FOLDER,
    TokenizerRecipe,
    TokenStore,
    encoder,
    read_store,
    store_key,
    stores_root,
    token_dtype,
)

_WAIT_SECONDS = 2.0

def _ordered(encode: Callable[[list[str]], list[np.ndarray]], batches: Iterator[list[str]],
             pool: ThreadPoolExecutor | None, ahead: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(documents, ids)`` of each batch in order, at most ``ahead`` batches in flight."""
    if pool is None:
        for batch in batches:
            yield len(batch), encode(batch)
        return
    pending: deque[tuple[int, Future[list[np.ndarray]]]] = deque()
    for batch in batches:
        pending.append((len(batch), pool.submit(encode, batch)))
        if len(pending) >= ahead:
            n, future = pending.popleft()
            yield n, future.result()
    while pending:
        n, future = pending.popleft()
        yield n, future.result()


def _batches(docs: Iterable[str], chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _ShardWriter:
    """Appends documents' ids to the current shard's temporary file; commits full shards."""

    def __init__(self, folder: Path, split: str, index: int, vocab_size: int, shard_tokens: int) -> None:
        self.folder, self.split, self.index = folder, split, index
        self.vocab_size, self.shard_tokens = vocab_size, shard_tokens
        self.fh: BinaryIO | None = None

    def _open(self) -> None:
        self.tmp = self.folder / f".{self.split}-{self.index:05d}.tokens.{os.getpid()}.tmp"
        self.fh = open(self.tmp, "wb")  # noqa: SIM115 (kept open across add() calls, closed by commit/abandon)
        self.lengths: list[int] = []
        self.tokens = self.pending = 0
        self.uncounted: list[np.ndarray] = []
        self.counts = np.zeros(self.vocab_size, dtype=np.int64)

    def add(self, ids: np.ndarray) -> None:
        if self.fh is None:
            self._open()
        assert self.fh is not None
        self.fh.write(ids)  # the array's buffer, not a copy
        self.lengths.append(ids.size)
        self.tokens += ids.size
        self.uncounted.append(ids)
        self.pending += ids.size
        if self.pending >= 1 << 20:
            self._count()
        if self.tokens >= self.shard_tokens:
            self.commit()

    def _count(self) -> None:
        """Add the ids written since the last count to the shard's counts, a million at a time (one
        bincount per document would cost a vocabulary-sized array per sentence; one over a long
        document, 8 bytes per token)."""
        if self.uncounted:
            ids = self.uncounted[0] if len(self.uncounted) == 1 else np.concatenate(self.uncounted)
            for start in range(0, ids.size, 1 << 20):
                self.counts += np.bincount(ids[start:start + (1 << 20)], minlength=self.vocab_size)
        self.uncounted, self.pending = [], 0

    def commit(self) -> None:
        if self.fh is None:
            return
        self._count()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None
        name = f"{self.split}-{self.index:05d}"
        os.replace(self.tmp, self.folder / f"{name}.tokens")
        offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)])
        write_atomically(self.folder / f"{name}.offsets.npy", lambda fh: np.save(fh, offsets))
        write_atomically(self.folder / f"{name}.counts.npy", lambda fh: np.save(fh, self.counts))
        record = {"docs": len(self.lengths), "tokens": int(offsets[-1])}
        write_text_atomically(self.folder / f"{name}.json", json.dumps(record))
        self.index += 1

    def abandon(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.tmp.unlink(missing_ok=True)


def _complete_shards(folder: Path, split: str) -> list[dict[str, Any]]:
    """The committed shards of ``split`` in order (a shard whose record is missing, or whose files
    do not match it, ends the list: it and everything after it are rebuilt)."""
    shards = []
    for i in range(100_000):
        name = f"{split}-{i:05d}"
        record_path = folder / f"{name}.json"
        if not record_path.is_file():
            break
        record = json.loads(record_path.read_text(encoding="utf-8"))
        tokens = folder / f"{name}.tokens"
        if not (tokens.is_file() and (folder / f"{name}.offsets.npy").is_file()
                and (folder / f"{name}.counts.npy").is_file()):
            break
        shards.append({"name": name, **record, "bytes": tokens.stat().st_size})
    return shards


def _remove_from(folder: Path, split: str, first: int) -> None:
    """Remove the files of ``split``'s shards ``first`` onwards, and every temporary file."""
    for path in folder.iterdir():
        name = path.name
        number = name.removeprefix(f".{split}-").removeprefix(f"{split}-")[:5]
        temporary = name.startswith(".") and name.endswith(".tmp")
        if name.lstrip(".").startswith(f"{split}-") and number.isdigit() and (temporary or int(number) >= first):
            path.unlink(missing_ok=True)


def _tokenizer(folder: Path, corpus: Corpus, recipe: TokenizerRecipe) -> TextTokenizer:
    from ..tokenizers.registry import TOKENIZERS, load_tokenizer

    saved = folder / TOKENIZER_FOLDER
    if (saved / "gdds_tokenizer.json").is_file():
        return load_tokenizer(saved)
    if recipe.given is not None:
        tok = recipe.given
    else:
        tok = TOKENIZERS.get(recipe.name).build(corpus.documents("train"), recipe.vocab_size)  # type: ignore[arg-type]
    staging = folder / f".tokenizer.{os.getpid()}.tmp"
    tok.save(staging)
    os.replace(staging, saved)
    return tok


def _build_split(folder: Path, corpus: Corpus, split: str, tok: TextTokenizer, workers: int,
                 shard_tokens: int, progress: bool, limit: int | None) -> None:
    from tqdm.auto import tqdm

    done = _complete_shards(folder, split)
    _remove_from(folder, split, len(done))
    start = sum(s["docs"] for s in done)
    writer = _ShardWriter(folder, split, len(done), tok.vocab_size, shard_tokens)
    total = corpus.size(split) if limit is None else limit
    bar = tqdm(total=total, initial=start, unit="doc", desc=f"tokenising {corpus.name}/{split}", disable=not progress,
               dynamic_ncols=True)
    docs = corpus.documents(split, start)
    batches = _batches(docs if limit is None else itertools.islice(docs, max(0, limit - start)), BATCH_CHARS)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for n, arrays in _ordered(encoder(tok), batches, pool, 2 * workers):
            for ids in arrays:
                writer.add(ids)
            bar.update(n)
        writer.commit()
    except BaseException:
        writer.abandon()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _finish(folder: Path, corpus: Corpus, splits: list[str], tok: TextTokenizer) -> dict[str, Any]:
    """Per-split offsets and counts from the shards, then the manifest."""
    entries = {}
    content = hashlib.sha256()  # of every split's offsets and counts: a rebuild of other text changes it
    for split in splits:
        shards = _complete_shards(folder, split)
        tokens = sum(s["tokens"] for s in shards)
        if tokens == 0:
            raise CorpusError(f"the {split!r} split of corpus {corpus.name!r} gives no tokens; check the corpus")
        parts, shift = [np.zeros(1, dtype=np.int64)], 0
        counts = np.zeros(tok.vocab_size, dtype=np.int64)
        for s in shards:
            parts.append(np.load(folder / f"{s['name']}.offsets.npy")[1:] + shift)
            shift += s["tokens"]
            counts += np.load(folder / f"{s['name']}.counts.npy")
        offsets = np.concatenate(parts)
        content.update(split.encode() + offsets.tobytes() + counts.tobytes())
        write_atomically(folder / f"{split}.offsets.npy", lambda fh, a=offsets: np.save(fh, a))
        write_atomically(folder / f"{split}.counts.npy", lambda fh, a=counts: np.save(fh, a))
        entries[split] = {"docs": int(offsets.size - 1), "tokens": int(tokens),
                          "shards": [{"name": s["name"], "tokens": s["tokens"], "docs": s["docs"]} for s in shards]}
    manifest = {"format": FORMAT, "corpus": corpus.fingerprint(), "corpus_name": corpus.name,
                "tokenizer": tok.identity(), "dtype": token_dtype(tok.vocab_size).str, "splits": entries,
                "content": content.hexdigest(),
                "streaming": {s: {"head_docs": entries[s]["docs"]} for s in sorted(corpus.streaming)}}
    write_text_atomically(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def _take_lock(folder: Path) -> FileLock | None:
    """The store's lock (``.lock``) when this process became its builder; ``None`` while another
    live process builds it (a lock of a killed builder is not held, so it is taken over)."""
    try:
        return FileLock(folder / ".lock")
    except LockHeld:
        return None


def _wait(folder: Path, seconds: float) -> TokenStore:
    deadline = time.monotonic() + seconds
    while not (folder / MANIFEST).is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete token store appeared in {folder} within {seconds:.0f} s; if no "
                               "process is preparing it, run `gdds prepare` again (it takes over a killed "
                               "builder's .lock)")
        time.sleep(_WAIT_SECONDS)
    return read_store(folder)


def _lock_when_free(folder: Path, seconds: float) -> FileLock:
    """Take ``folder``'s builder lock, waiting while a live process holds it."""
    deadline = time.monotonic() + seconds
    while (lock := _take_lock(folder)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder} stayed locked by another builder (pid {lock_owner(folder / '.lock')[1]}) "
                               f"for {seconds:.0f} s; wait for it to finish, then run `gdds prepare --rebuild` again")
        time.sleep(_WAIT_SECONDS)
    return lock


def _beside(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (the owner of a rebuild's staging folder)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _remove_leftovers(folder: Path) -> None:
    """Remove the staging and old folders that killed rebuilds of ``folder`` left on this host."""
    for path in folder.parent.glob(f".{folder.name}.*-*"):
        host, _, pid = path.name.split(".", 2)[-1].partition("-")[2].rpartition("-")
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _rebuild(folder: Path, corpus: Corpus, build: Callable[[Path], TokenStore], wait_seconds: float) -> TokenStore:
    """Build the store afresh in a staging folder beside ``folder`` (nothing of the old store is reused),
    then swap it in under ``folder``'s lock (waiting for a live builder of ``folder`` to finish)."""
    corpus.check()
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    staging, old = _beside(folder, "rebuild"), _beside(folder, "old")
    staging.mkdir()
    try:
        store = build(staging)
        folder.mkdir(exist_ok=True)
        lock = _lock_when_free(folder, wait_seconds)
        try:
            os.rename(folder, old)
        except OSError:
            lock.release(remove=True)
            raise
        try:
            os.rename(staging, folder)
        except OSError as err:
            raise OSError(f"another process created {folder} while --rebuild replaced it ({err}); run "
                          "`gdds prepare --rebuild` again") from err
        finally:
            lock.release()  # its file is now in the old folder, deleted below
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return TokenStore(folder, store.manifest, store.tokenizer)


def _build(folder: Path, corpus: Corpus, recipe: TokenizerRecipe, workers: int | None, progress: bool,
           shard_tokens: int, head_docs: int) -> TokenStore:
    """Build (or finish building) the store in ``folder``, whose lock this process holds."""
    tok = _tokenizer(folder, corpus, recipe)
    splits = list(corpus.splits())
    workers = max(1, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    for split in splits:
        limit = head_docs if split in corpus.streaming else None
        _build_split(folder, corpus, split, tok, workers, shard_tokens, progress, limit)
    return TokenStore(folder, _finish(folder, corpus, splits, tok), tok)


def open_store(corpus: Corpus, recipe: TokenizerRecipe, *, root: Path | str | None = None, build: bool = True,
               workers: int | None = None, progress: bool = True, shard_tokens: int = SHARD_TOKENS,
               wait_seconds: float = 86_400.0, head_docs: int = 10_000, rebuild: bool = False) -> TokenStore:
    """The store of ``corpus`` under ``recipe``: opened when complete; else built when ``build``
    and no live process holds its lock (resuming after the shards a killed build left); else
    waited for (``TimeoutError`` after ``wait_seconds``): under torchrun only local rank 0 builds.
    ``rebuild``: build it afresh even when complete, and swap it in (the module docstring).
    ``workers``: tokenising threads (default: the CPU count; 1 tokenises in the calling thread).
    A streaming split (:attr:`Corpus.streaming`) is read on the fly by training; the store keeps its
    first ``head_docs`` documents only (the manifest's ``streaming`` says so), for the statistics a
    run needs before it starts (unigram counts, co-occurrence embeddings)."""
    folder = stores_root(root) / store_key(corpus, recipe)
    build_in = functools.partial(_build, corpus=corpus, recipe=recipe, workers=workers, progress=progress,
                                 shard_tokens=shard_tokens, head_docs=head_docs)
    if rebuild:
        return _rebuild(folder, corpus, build_in, wait_seconds)
    if (folder / MANIFEST).is_file():
        return read_store(folder)
    if build:
        corpus.check()
    folder.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(folder) if build else None
    if lock is not None and (folder / MANIFEST).is_file():  # the builder before us has just finished
        lock.release()
        lock = None
    if lock is None:
        return _wait(folder, wait_seconds)
    try:
        return build_in(folder)
    finally:
        lock.release(remove=True)
