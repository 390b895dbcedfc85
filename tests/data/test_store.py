"""The token store (gdds.data.tokens.store, gdds.data.tokens.prepare) and runs built from it (gdds.engine.corpus):
the stored ids equal a direct tokenisation, a killed build resumes to the same store, a prepared
corpus is never read again, a zero-shot corpus's held-out documents get a store of their own, and a
streamed split stops and resumes exactly."""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from gdds.cli import main
from gdds.data import (
    CompactTokenizer,
    CompactVocab,
    PackedBlocks,
    build_tokenizer,
    shakespeare_documents,
)
from gdds.data.corpora import sources
from gdds.data.corpora.local import LocalCorpus
from gdds.data.corpora.recipes import resolve_corpus
from gdds.data.corpora.sources import HELD_OUT, CorpusError, HashSplitCorpus
from gdds.data.tokens import prepare
from gdds.data.tokens.prepare import open_store
from gdds.data.tokens.store import MANIFEST, TokenizerRecipe, read_store, store_key
from gdds.data.tokens.stream import StreamedBlocks
from gdds.engine import corpus as engine_corpus
from gdds.engine.config import ConfigError, load_config
from gdds.engine.train import train
from gdds.files import FileLock
from helpers import MICRO_TRAIN, token_array

WORKS = [doc[:6000] for doc in shakespeare_documents()[:16]]


def hash_corpus(docs=WORKS, tag="works"):
    return HashSplitCorpus(tag, lambda: list(docs), lambda: {"tag": tag, "n": len(docs)})


def all_ids(store, split):
    tokens = store.tokens(split)
    return tokens[0:len(tokens)]


@pytest.mark.parametrize("workers", [1, 2])
def test_store_holds_what_direct_tokenisation_gives(tmp_path, workers):
    corpus = hash_corpus()
    store = open_store(corpus, TokenizerRecipe("gpt2"), root=tmp_path, workers=workers, progress=False,
                       shard_tokens=700)
    tok = build_tokenizer("gpt2")
    for split in ("train", "valid", "test"):
        ref = token_array(list(corpus.documents(split)), tok)
        assert len(store.manifest["splits"][split]["shards"]) >= (2 if split == "train" else 1)
        assert np.array_equal(all_ids(store, split), np.asarray(ref.tokens))
        assert np.array_equal(store.offsets(split), ref.offsets)
        assert np.array_equal(store.counts(split), np.bincount(np.asarray(ref.tokens), minlength=tok.vocab_size))
        idx = np.random.default_rng(0).integers(0, ref.n_tokens, (40, 9))  # across shard edges, 2-D
        assert np.array_equal(store.tokens(split)[idx], np.asarray(ref.tokens)[idx])
    lookup = np.arange(tok.vocab_size)[::-1].copy()
    assert np.array_equal(store.tokens("valid", lookup)[5:50], lookup[all_ids(store, "valid")[5:50]])
    assert np.array_equal(np.concatenate(list(store.tokens("train").chunks(1000))), all_ids(store, "train"))


def test_a_killed_build_resumes_to_the_same_store(tmp_path, monkeypatch):
    corpus = hash_corpus()
    straight = open_store(corpus, TokenizerRecipe("char"), root=tmp_path / "a", workers=1, progress=False,
                          shard_tokens=3000)
    added = {"n": 0}
    add = prepare._ShardWriter.add

    def add_then_die(self, ids):
        added["n"] += 1
        if added["n"] == 10:
            raise KeyboardInterrupt  # the process is killed mid-build, inside a shard
        add(self, ids)

    monkeypatch.setattr(prepare._ShardWriter, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        open_store(corpus, TokenizerRecipe("char"), root=tmp_path / "b", workers=1, progress=False,
                   shard_tokens=3000)
    monkeypatch.setattr(prepare._ShardWriter, "add", add)
    folder = tmp_path / "b" / straight.folder.name
    assert not (folder / MANIFEST).exists() and not (folder / ".lock").exists()
    kept = sorted(p.name for p in folder.glob("train-*.json"))
    assert kept  # complete shards survive
    resumed = open_store(corpus, TokenizerRecipe("char"), root=tmp_path / "b", workers=2, progress=False,
                         shard_tokens=3000)
    assert kept[0] in {p.name for p in folder.glob("train-*.json")}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    for split in ("train", "valid", "test"):
        assert np.array_equal(all_ids(resumed, split), all_ids(straight, split))
        assert np.array_equal(resumed.offsets(split), straight.offsets(split))
    assert resumed.tokenizer.identity() == straight.tokenizer.identity()


KILLED_PREPARE = """
import os, signal, sys
from gdds.data.tokens import prepare
from gdds.data.corpora import sources
from gdds.data.corpora.local import LocalCorpus
from gdds.data.tokens.store import TokenizerRecipe
added = {"n": 0}
add = prepare._ShardWriter.add
def add_or_die(self, ids):
    added["n"] += 1
    if added["n"] == 12 and sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    add(self, ids)
prepare._ShardWriter.add = add_or_die
prepare.BATCH_CHARS = 4000
store = prepare.open_store(LocalCorpus(sys.argv[1]), TokenizerRecipe("char"), root=sys.argv[2], workers=2,
                           progress=False, shard_tokens=10000)
print(store.folder)
"""


def test_a_sigkilled_prepare_leaves_nothing_trusted_and_resumes(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(WORKS):
        (folder / f"w{i:02d}.txt").write_text(doc)

    def run(root, mode):
        return subprocess.run([sys.executable, "-c", KILLED_PREPARE, str(folder), str(tmp_path / root), mode],
                              capture_output=True, text=True, timeout=300)

    killed = run("b", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store_dir = next((tmp_path / "b").iterdir())
    assert not (store_dir / MANIFEST).exists() and (store_dir / ".lock").exists()  # the dead builder's lock
    assert [p for p in store_dir.iterdir() if p.name.endswith(".tmp")]  # its half-written shard
    assert list(store_dir.glob("train-*.json"))  # and the complete ones, kept by the next build
    assert run("b", "resume").returncode == 0 and run("a", "straight").returncode == 0
    assert not [p for p in store_dir.iterdir() if p.name.endswith(".tmp") or p.name == ".lock"]
    straight, resumed = read_store(next((tmp_path / "a").iterdir())), read_store(store_dir)
    for split in ("train", "valid", "test"):
        assert np.array_equal(all_ids(resumed, split), all_ids(straight, split))
        assert np.array_equal(resumed.counts(split), straight.counts(split))


def test_waiting_for_another_builder_and_stale_locks(tmp_path):
    corpus, recipe = hash_corpus(), TokenizerRecipe("char")
    with pytest.raises(TimeoutError, match="run `gdds prepare` again"):
        open_store(corpus, recipe, root=tmp_path, build=False, wait_seconds=0.1)
    folder = next(tmp_path.iterdir())
    with FileLock(folder / ".lock"), pytest.raises(TimeoutError):  # a live builder: wait for it
        open_store(corpus, recipe, root=tmp_path, wait_seconds=0.1, progress=False)
    (folder / ".lock").write_text(f"{socket.gethostname()} 999999999")  # a dead builder's lock: take over
    store = open_store(corpus, recipe, root=tmp_path, progress=False, workers=1)
    assert (folder / MANIFEST).is_file() and not (folder / ".lock").exists()
    assert open_store(corpus, recipe, root=tmp_path, build=False).manifest == store.manifest


def write_corpus(folder, docs=WORKS):
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"w{i:02d}.txt").write_text(doc)
    return folder


def edit_keeping_size_and_date(path, at, old, new):
    """Replace the bytes at offset ``at`` (which must be ``old``) by ``new`` of the same length, then put the
    file's dates back: what cp -p, rsync -a, touch -r or two writes in one second leave."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    assert data[at:at + len(old)] == old and len(old) == len(new)
    data[at:at + len(old)] = new
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_an_edit_keeping_size_and_date_gets_a_new_store(tmp_path):
    """The attack's recipe (every 'e' of a file replaced by '~', same size, date restored) used the old store;
    the key's content hash now gives another one, whose tokenizer has '~'."""
    folder = write_corpus(tmp_path / "corpus")
    recipe = TokenizerRecipe("char")
    before = open_store(LocalCorpus(folder), recipe, root=tmp_path / "stores", progress=False, workers=1)
    assert "~" not in before.tokenizer.chars
    path = folder / "w00.txt"
    st = path.stat()
    path.write_text(path.read_text().replace("e", "~"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after = open_store(LocalCorpus(folder), recipe, root=tmp_path / "stores", progress=False, workers=1)
    assert after.folder != before.folder and "~" in after.tokenizer.chars


def test_a_large_file_is_hashed_by_sampled_blocks_and_rebuild_covers_the_rest(tmp_path, capsys):
    """Above 1 MiB a file is hashed by 16 blocks of 64 KiB (head and tail included): an edit in a block
    changes the key, one between blocks does not, and `gdds prepare --rebuild` tokenises afresh, swapping
    the new store in while a reader of the old one keeps reading it."""
    folder = write_corpus(tmp_path / "corpus", [doc[:600] for doc in WORKS[:8]])
    big = folder / "big.txt"
    big.write_text("".join(WORKS) * 40)  # about 3.8 MB
    size = big.stat().st_size
    assert size > sources.WHOLE_FILE_BYTES
    key = lambda: store_key(LocalCorpus(folder), TokenizerRecipe("char"))  # noqa: E731
    first = key()
    edit_keeping_size_and_date(big, size - 10, big.read_bytes()[size - 10:size - 9], b"#")  # the tail block
    second = key()
    assert second != first
    gap = sources.BLOCK_BYTES + 1000  # between the first and the second sampled block
    assert (size - sources.BLOCK_BYTES) / (sources.SAMPLED_BLOCKS - 1) > gap + 10
    old = open_store(LocalCorpus(folder), TokenizerRecipe("char"), root=tmp_path / "stores", progress=False,
                     workers=1)
    held = old.tokens("train")
    old_ids = held[0:len(held)].copy()
    edit_keeping_size_and_date(big, gap, big.read_bytes()[gap:gap + 1], b"@")
    assert key() == second  # missed: what --rebuild is for
    root = tmp_path / "stores"
    (root / f".{second}.rebuild-{socket.gethostname()}-999999999").mkdir()  # a killed rebuild's leftover
    env = {**os.environ, "GDDS_CACHE_DIR": str(tmp_path)}
    args = ["prepare", "tiny", f"data.corpus={folder}", "data.tokenizer=char", "--workers", "1", "--rebuild"]
    done = subprocess.run([sys.executable, "-m", "gdds", *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "rebuilt in" in done.stdout, done.stderr
    assert [p.name for p in root.iterdir()] == [second]  # the old folder and the leftover removed
    new = read_store(root / second)
    assert "@" in new.tokenizer.chars and "@" not in old.tokenizer.chars and new.key != old.key
    assert np.array_equal(held[0:len(held)], old_ids)  # the old store's mapped shards are still readable
    with pytest.raises(CorpusError, match="was replaced .* after it was opened"):
        old.tokens("train")  # mapping the new shards under the old manifest: an error, never a misread


PEAK = """
import sys
from gdds.data.tokens.prepare import open_store
from gdds.data.corpora.recipes import resolve_corpus
from gdds.data.tokens.store import TokenizerRecipe

def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

corpus = resolve_corpus(sys.argv[1], {"split": "chars"}, 0.05, 0.05, 0)
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak resident size (VmHWM) starts again from the current one
before = kib("VmRSS")
store = open_store(corpus, TokenizerRecipe("char"), root=sys.argv[2], workers=1, progress=False)
print(store.manifest["splits"]["train"]["docs"], (kib("VmHWM") - before) * 1024)
"""


def test_a_long_line_is_tokenised_in_a_few_bytes_per_character(tmp_path):
    """R6: one 12 MB line without a space (one document per split) under the character tokenizer grew the
    peak memory by 18x the text (a Python list of ints, then int64); in pieces it stays under 8x."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure a peak")
    path = tmp_path / "line.txt"
    rng = np.random.default_rng(0)
    path.write_bytes(rng.integers(ord("a"), ord("k"), 12_000_000, dtype=np.uint8).tobytes())
    done = subprocess.run([sys.executable, "-c", PEAK, str(path), str(tmp_path / "stores")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    docs, grew = (int(x) for x in done.stdout.split())
    print(f"peak memory grew by {grew / path.stat().st_size:.1f}x the text")
    assert docs == 1 and grew < 8 * path.stat().st_size


def test_a_run_on_a_prepared_corpus_reads_no_text(tmp_path, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(WORKS):
        (folder / f"w{i:02d}.txt").write_text(doc)
    cfg = load_config("tiny", [f"data.corpus={folder}", "process.kernel=semantic", "process.embeddings=cooccurrence",
                               "process.embedding_tokens=5000"])
    assert main(["prepare", "tiny", f"data.corpus={folder}", "process.kernel=semantic",
                 "process.embeddings=cooccurrence", "process.embedding_tokens=5000", "--workers", "1"]) == 0
    first = engine_corpus.build_data(cfg.data)
    emb = engine_corpus.cooccurrence(cfg.process, first)

    def no_text(*args, **kwargs):
        raise AssertionError("raw text was read")

    monkeypatch.setattr(LocalCorpus, "_all", no_text)
    monkeypatch.setattr(engine_corpus.E, "cooccurrence_embeddings", no_text)
    again = engine_corpus.build_data(cfg.data)
    assert again.tokenizer.identity() == first.tokenizer.identity()
    assert torch.equal(again.blocks["train"].batch([0, 3]), first.blocks["train"].batch([0, 3]))
    assert torch.equal(engine_corpus.cooccurrence(cfg.process, again), emb)
    ids, offsets = engine_corpus.budget_tokens(again.arrays["train"], 5000)
    assert offsets[-1] == ids.size <= 5000 and np.isin(offsets[1:-1], again.arrays["train"].offsets).all()



def test_zero_shot_reads_the_held_out_documents_from_a_store_of_their_own(tmp_path, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, doc in enumerate(WORKS[:6]):
        (folder / f"w{i:02d}.txt").write_text(doc)
    dc = load_config("tiny", ["data.tokenizer=gpt2", "data.seq_len=32", "data.packing=wrap"]).data
    gpt2 = build_tokenizer("gpt2")
    seen = np.unique(np.concatenate([token_array(WORKS[:6], gpt2).tokens, gpt2.special_ids()]))
    compact = CompactTokenizer(gpt2, CompactVocab(seen, gpt2.vocab_size))  # a run's tokenizer is often compact
    built = []
    for tok in (gpt2, compact):
        blocks = engine_corpus.zero_shot_blocks(str(folder), tok, dc, root=tmp_path / "stores")
        direct = PackedBlocks(token_array(WORKS[:6], tok), 32, tok.bos_id, tok.eos_id)  # every file, in order
        assert len(blocks) == len(direct) and torch.equal(blocks.batch(range(len(blocks))),
                                                          direct.batch(range(len(direct))))
        built.append(blocks)
    stores = sorted((tmp_path / "stores").iterdir())
    assert len(stores) == 2  # one per tokenizer
    assert all(read_store(path).splits() == (HELD_OUT,) for path in stores)

    def no_text(*args, **kwargs):
        raise AssertionError("raw text was read")

    monkeypatch.setattr(LocalCorpus, "_all", no_text)
    again = engine_corpus.zero_shot_blocks(str(folder), compact, dc, root=tmp_path / "stores")
    assert torch.equal(again.batch([0, 5]), built[1].batch([0, 5]))
    with pytest.raises(ConfigError, match="zero-shot corpus nowhere/x.txt: no corpus file or folder"):
        engine_corpus.zero_shot_blocks("nowhere/x.txt", gpt2, dc, root=tmp_path / "stores")

def test_missing_split_and_bad_corpus_are_config_errors(tmp_path):
    rows = tmp_path / "owt.jsonl"
    rows.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(12)))
    cfg = load_config("tiny", ["data.corpus=openwebtext", "data.tokenizer=char", "data.seq_len=16",
                               f"data.corpus_args={{data_files: {rows}, valid_docs: 3, cache_dir: {tmp_path / 'hf'}}}"])
    data = engine_corpus.build_data(cfg.data)
    assert sorted(data.blocks) == ["train", "valid"] and data.notes["documents"] == {"train": 9, "valid": 3}
    with pytest.raises(ConfigError, match="no 'test' split"):
        data.split("test")
    with pytest.raises(ConfigError, match="did you mean"):
        engine_corpus.build_data(load_config("tiny", ["data.corpus=openwebtxt"]).data)


def test_lm1b_stand_in_pads_and_masks(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(f"sentence number {i} , with words ." for i in range(30)))
    (tmp_path / "test.txt").write_text("a held out line .\nanother one , short .\n")
    files = {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}
    options = json.dumps({"data_files": files, "cache_dir": str(tmp_path / "h")})
    cfg = load_config("tiny", ["data.corpus=lm1b", "data.packing=pad", "data.seq_len=48", "data.tokenizer=gpt2",
                               f"data.corpus_args={options}"])
    data = engine_corpus.build_data(cfg.data)
    tok, blocks = data.tokenizer, data.blocks["valid"]
    assert len(blocks) == 2 and tok.decode(blocks.batch([0])[0, 1:].tolist()).startswith("a held out line.")
    keep = blocks.mask([0, 1])
    rows = blocks.batch([0, 1])
    assert (rows[~keep] == tok.pad_id).all() and (rows[keep] != tok.pad_id).all() and (~keep).any()


def fineweb_rows(tmp_path, n=60):
    path = tmp_path / "fw.jsonl"
    path.write_text("".join(json.dumps({"text": f"page {i}: " + "the quick brown fox " * (1 + i % 5)}) + "\n"
                            for i in range(n)))
    return {"data_files": [str(path)], "valid_docs": 8, "cache_dir": str(tmp_path / "hf")}


def test_streamed_blocks_equal_stored_wrap_blocks_and_seek(tmp_path):
    corpus = resolve_corpus("fineweb", fineweb_rows(tmp_path))
    tok = build_tokenizer("gpt2")
    stored = PackedBlocks(token_array(list(corpus.documents("train")), tok), 24, tok.bos_id, tok.eos_id)
    stream = StreamedBlocks(corpus, "train", tok, 24)
    first = stream.batch(np.arange(0, 5))
    position = stream.position()
    rest = stream.batch(np.arange(5, 12))
    assert torch.equal(torch.cat([first, rest]), stored.batch(np.arange(12)))
    again = StreamedBlocks(corpus, "train", tok, 24)
    again.seek(position)
    assert torch.equal(again.batch(np.arange(5, 12)), rest)
    with pytest.raises(ValueError, match="read in order"):
        again.batch(np.arange(0, 2))
    with pytest.raises(ValueError, match="ended at block 12"):  # 52 short pages cannot fill 10,000 blocks
        again.batch(np.arange(12, 10_012))


def test_a_streamed_run_stops_and_resumes_bitwise(tmp_path):
    args = [*MICRO_TRAIN, "data.corpus=fineweb", f"data.corpus_args={json.dumps(fineweb_rows(tmp_path, 200))}",
            "train.ckpt_every=2", "train.lr_schedule=constant", "train.eval_every=100"]
    train(load_config("tiny", [*args, "train.max_steps=4"]), tmp_path / "straight")
    train(load_config("tiny", [*args, "train.max_steps=2"]), tmp_path / "split")
    assert main(["train", "--resume", str(tmp_path / "split"), "train.max_steps=4"]) == 0
    from gdds.engine.checkpoint import load_tensors, load_torch

    for name in ("model.safetensors", "ema.safetensors"):
        a = load_tensors(tmp_path / "straight/checkpoints/last" / name)
        b = load_tensors(tmp_path / "split/checkpoints/last" / name)
        assert all(torch.equal(a[k], b[k]) for k in a)
    notes = json.loads((tmp_path / "straight/data.json").read_text())
    assert notes["documents"]["valid"] == 8 and list(notes["streamed"]) == ["train"]
    stream = load_torch(tmp_path / "split/checkpoints/last/state.pt")["data_position"]["stream"]
    assert stream["block"] == 4 * 8
    with pytest.raises(ConfigError, match="compact_vocab=false"):
        engine_corpus.build_data(load_config("tiny", [*args, "data.compact_vocab=true"]).data)


def test_under_torchrun_only_local_rank_zero_builds(monkeypatch):
    asked = []
    monkeypatch.setattr(engine_corpus, "open_store", lambda corpus, recipe, **kw: asked.append(kw["build"]))
    cfg = load_config("tiny")
    for rank, builds in (("0", True), ("1", False), ("3", False)):
        monkeypatch.setenv("LOCAL_RANK", rank)
        engine_corpus.store_of(cfg.data)
        assert asked[-1] is builds


def bad_corpora(tmp_path):
    empty, two, latin = tmp_path / "empty", tmp_path / "two", tmp_path / "latin"
    for folder in (empty, two, latin):
        folder.mkdir()
    (empty / "a.txt").write_text("  \n")
    (two / "a.txt").write_text("one document")
    (two / "b.txt").write_text("another document")
    (latin / "a.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "short.txt").write_text("a b c " * 10)
    mixed, control = write_corpus(tmp_path / "mixed_nul", WORKS[:4]), write_corpus(tmp_path / "control", WORKS[:4])
    (mixed / "zz.txt").write_text("some text" + "\x00" * 40 + "more")  # valid UTF-8, yet binary
    (control / "zz.txt").write_text("ab\x01\x02\x1b\x7f" * 50)
    (tmp_path / "long_nul.txt").write_text("word " * 300_000 + "\x00" + "word " * 1000)
    hf_cache = str(tmp_path / "hf")
    return [
        ([f"data.corpus={mixed}"], f"{mixed / 'zz.txt'} holds NUL characters (the first at character 9): it is "
         "binary data or not in the corpus's encoding (UTF-16?); remove it from the corpus"),
        ([f"data.corpus={control}"], f"{control / 'zz.txt'} is mostly control characters, not text: remove it"),
        ([f"data.corpus={tmp_path / 'long_nul.txt'}", "data.corpus_args={split: chars}"],
         "long_nul.txt holds NUL characters (the first at character 1,500,000)"),
        ([f"data.corpus={empty}"], "has no text"),
        ([f"data.corpus={two}"], "corpus_args.split=paragraph"),
        ([f"data.corpus={latin}"], "encoding"),
        ([f"data.corpus={tmp_path / 'missing'}/"], "no corpus file or folder"),
        (["data.corpus=hf:wikitext:wikitext-2-raw-v1", f"data.corpus_args={{cache_dir: {hf_cache}}}"],
         "not in the local datasets cache"),
        (["data.corpus=hf:text"], "data_files"),
        (["data.corpus=text8", f"data.corpus_args={{path: {tmp_path / 'short.txt'}}}"], "fewer than train_chars"),
    ]


def test_a_few_stray_control_characters_are_text(tmp_path):
    folder = write_corpus(tmp_path / "corpus", WORKS[:4])
    (folder / "zz.txt").write_text("\x1b[1mbold\x1b[0m text\x0c with a form feed " * 20)
    corpus = LocalCorpus(folder)
    corpus.check()
    assert sum(1 for _ in corpus.held_out()) == 5


def test_bad_corpora_fail_early_with_the_fix(tmp_path, capsys):
    for overrides, message in bad_corpora(tmp_path):
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "tiny", *overrides, "--workers", "1"])
        assert exit_info.value.code == 2, overrides
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (overrides, err)
