"""Data pipeline: the embedded corpora, local and Hugging Face corpora read through
resolve_corpus, the document split, tokenizers and the compact vocabulary, the store's token
dtype and the two packings (wrap / pad)."""
import json
import random
import unicodedata

import numpy as np
import pytest
import torch

from gdds.data import (
    PACKINGS,
    TOKENIZERS,
    CharTokenizer,
    CompactTokenizer,
    CompactVocab,
    PackedBlocks,
    PaddedSentences,
    UnknownTextError,
    build_tokenizer,
    kjv_documents,
    load_tokenizer,
    resolve_corpus,
    shakespeare_documents,
    split_documents,
    token_dtype,
    wikipedia_documents,
)
from gdds.data.corpora.sources import CorpusError
from gdds.data.tokens.store import encoder
from helpers import token_array

TEXT = "Hello world! It's a café,  naïve —\n\nthe 3rd line:\tdone. <mask> <|endoftext|> 日本"
DOCS = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer\nThe slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles\nAnd by opposing end them.",
    "In the beginning God created the heaven and the earth.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
]


@pytest.fixture(scope="module")
def tokenizers():
    train = DOCS + [TEXT]
    return {name: build_tokenizer(name, train, 300 if TOKENIZERS.get(name).sized else None)
            for name in TOKENIZERS.names()}


def normalise_wordpiece(text: str) -> str:
    """What BERT uncased keeps: lower case, accents stripped, whitespace removed."""
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    return "".join(text.split())


# ----------------------------------------------------------------------------- tokenizers

@pytest.mark.parametrize("name", ["char", "gpt2", "bpe"])
def test_exact_round_trip(tokenizers, name):
    tok = tokenizers[name]
    for text in DOCS + [TEXT]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids) and tok.mask_id not in ids
        assert tok.decode(ids) == text
    assert tok.encode_batch(DOCS) == [tok.encode(d) for d in DOCS]


def test_wordpiece_round_trip_up_to_normalisation(tokenizers):
    """WordPiece lower-cases, strips accents and re-spaces punctuation: the decoded text
    equals the normalised text once whitespace is removed, and re-encodes to the same ids."""
    tok = tokenizers["wordpiece"]
    for text in DOCS + ["Héllo, Wörld! It's naïve."]:
        ids = tok.encode(text)
        assert normalise_wordpiece(tok.decode(ids)) == normalise_wordpiece(text)
        assert tok.encode(tok.decode(ids)) == ids
    assert (tok.vocab_size, tok.mask_id, tok.bos_id, tok.eos_id, tok.pad_id) == (30522, 103, 101, 102, 0)
    assert tok.pieces(tok.encode("playing")) == ["playing"] and tok.pieces([2652, 2075])[1].startswith("##")


def test_gpt2_ids_match_gpt2(tokenizers):
    tok = tokenizers["gpt2"]
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tok.decode([50256]) == "<|endoftext|>" and tok.encode("<|endoftext|>") != [50256]
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.mask_id, tok.pad_id) == (50259, 50256, 50256, 50257, 50258)
    assert tok.pieces([15496, 995]) == ["Hello", " world"]


def test_appended_specials(tokenizers):
    char, bpe = tokenizers["char"], tokenizers["bpe"]
    n = len(char.chars)
    assert char.chars == sorted(set("".join(DOCS + [TEXT])))
    assert (char.mask_id, char.bos_id, char.eos_id, char.pad_id, char.unk_id) == tuple(range(n, n + 5))
    assert char.encode("Z~") == [char.unk_id, char.unk_id]  # characters never seen in training
    assert bpe.vocab_size == 300 and bpe.mask_id == 296 and bpe.special_ids() == [296, 297, 298, 299]
    for tok in tokenizers.values():
        ids = [tok.mask_id, tok.bos_id, *tok.encode("to be"), tok.eos_id, tok.pad_id]
        assert tok.pieces(ids)[0] in tok.decode(ids)
    with pytest.raises(ValueError, match="outside the char vocabulary"):
        char.decode([char.vocab_size])


@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_save_load_gives_identical_ids(tokenizers, tmp_path, name):
    tok = tokenizers[name]
    again = load_tokenizer(tok.save(tmp_path / name))
    assert again.identity() == tok.identity() and again.vocab_size == tok.vocab_size
    assert again.encode(TEXT) == tok.encode(TEXT)
    meta_path = tmp_path / name / "gdds_tokenizer.json"
    meta = json.loads(meta_path.read_text())
    meta["identity"]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match what was saved"):
        load_tokenizer(tmp_path / name)


def test_bpe_training_is_deterministic():
    a, b = (build_tokenizer("bpe", DOCS * 3, 280) for _ in range(2))
    assert a.identity() == b.identity()


# ------------------------------------------------------------------------ compact vocabulary

@pytest.mark.parametrize("name", TOKENIZERS.names())
def test_compact_vocab_round_trips(tokenizers, tmp_path, name):
    tok = tokenizers[name]
    train = [np.asarray(tok.encode(d)) for d in DOCS]
    vocab = CompactVocab.fit(train, tok.special_ids(), tok.vocab_size)
    assert vocab.size == len(set(np.concatenate(train).tolist()) | set(tok.special_ids()))
    assert np.all(np.diff(vocab.full_ids) > 0)
    for ids in train:
        assert np.array_equal(vocab.to_full(vocab.to_compact(ids)), ids)
        t = torch.as_tensor(ids)
        assert torch.equal(vocab.to_full(vocab.to_compact(t)), t) and vocab.to_compact(t).dtype == torch.long
    assert vocab.to_compact(vocab.full_ids).tolist() == list(range(vocab.size))
    assert CompactVocab.load(vocab.save(tmp_path / "vocab.json")) == vocab

    compact = CompactTokenizer(tok, vocab, unk=tok.unk_id is not None)
    assert compact.vocab_size == vocab.size and compact.mask_id == int(vocab.to_compact(np.array([tok.mask_id]))[0])
    for doc in DOCS:
        ids = compact.encode(doc)
        assert max(ids) < vocab.size and compact.decode(ids) == tok.decode(tok.encode(doc))
    again = load_tokenizer(compact.save(tmp_path / "compact"))
    assert again.identity() == compact.identity() and again.encode(DOCS[0]) == compact.encode(DOCS[0])


def test_compact_vocab_rejects_unseen_ids(tokenizers):
    tok = tokenizers["gpt2"]
    vocab = CompactVocab.fit([np.asarray(tok.encode(DOCS[0]))], tok.special_ids(), tok.vocab_size)
    unseen = tok.encode(" galaxy")[0]
    with pytest.raises(ValueError, match=f"token id {unseen} is not in the compact vocabulary"):
        vocab.to_compact(np.array([tok.eos_id, unseen]))
    with pytest.raises(ValueError, match="not in the compact vocabulary"):
        vocab.to_compact(torch.tensor([[unseen]]))
    with pytest.raises(ValueError, match="outside the full vocabulary"):
        vocab.to_compact(np.array([tok.vocab_size]))
    with pytest.raises(ValueError, match="outside the compact vocabulary"):
        vocab.to_full(torch.tensor([vocab.size]))
    compact = CompactTokenizer(tok, vocab)
    with pytest.raises(ValueError, match="' galaxy'.*not in the compact vocabulary"):
        compact.encode("To be galaxy")
    with pytest.raises(ValueError, match="gpt2 has no unk token"):
        CompactTokenizer(tok, vocab, unk=True)
    with pytest.raises(ValueError, match="lacks the special ids"):
        CompactTokenizer(tok, CompactVocab.fit([np.asarray(tok.encode(DOCS[0]))], [], tok.vocab_size))


def test_compact_unk_fallback(tokenizers):
    tok = tokenizers["wordpiece"]
    vocab = CompactVocab.fit([np.asarray(tok.encode(DOCS[0]))], tok.special_ids(), tok.vocab_size)
    compact = CompactTokenizer(tok, vocab, unk=True)
    ids = compact.encode("To be galaxy")
    assert ids[-1] == compact.unk_id and compact.decode(ids) == "to be [UNK]"


def test_text_outside_the_vocabulary_is_named_never_altered(tokenizers):
    """encode_exact (what a score or a prompt uses) refuses text that would become <unk> / [UNK] or that a
    compact vocabulary lacks, naming how much and what; represented text encodes as encode does."""
    char = tokenizers["char"]
    assert char.encode_exact("To be") == char.encode("To be")
    assert char.unk_id in char.encode("日本語 ☃ x")  # what a score would silently have used
    with pytest.raises(UnknownTextError, match=r"the prompt has 4 character\(s\) outside the char vocabulary \(3 "
                       r"distinct: '語', '☃', 'Ω'\): remove or replace them"):
        char.encode_exact("日本語 ☃ Ω ☃", "the prompt")
    wordpiece = tokenizers["wordpiece"]
    with pytest.raises(UnknownTextError, match="1 character.* '☃'"):
        wordpiece.encode_exact("a ☃ snowman")
    with pytest.raises(UnknownTextError, match="1 word.*'xxxx"):  # WordPiece's [UNK] for a word over 100 chars
        wordpiece.encode_exact("x" * 150)
    compact = CompactTokenizer(wordpiece, CompactVocab.fit([np.asarray(wordpiece.encode(DOCS[0]))],
                                                           wordpiece.special_ids(), wordpiece.vocab_size), unk=True)
    with pytest.raises(UnknownTextError, match="1 token.*never seen .*'galaxy'"):
        compact.encode_exact("To be galaxy")
    gpt2 = tokenizers["gpt2"]
    compact = CompactTokenizer(gpt2, CompactVocab.fit([np.asarray(gpt2.encode(DOCS[0]))], gpt2.special_ids(),
                                                      gpt2.vocab_size))
    assert compact.encode_exact("To be") == compact.encode("To be")
    with pytest.raises(UnknownTextError, match="1 token.*gpt2\\+compact.*' galaxy'"):
        compact.encode_exact("To be galaxy")
    assert gpt2.encode_exact("日本語 ☃") == gpt2.encode("日本語 ☃")  # byte-level: nothing is unknown


AWKWARD = ["don't", "it's", "we'll", "3.14", "1,000", "naïve", "café", "日本語", "🦜", "<|endoftext|>", "a", "I",
           "--", "...", "(x)", "\u0301e", "e\u0301", "WORD", "x" * 30, "'s", "''"]


@pytest.mark.parametrize("name", ["char", "gpt2", "bpe", "wordpiece", "compact"])
def test_a_long_text_encoded_in_pieces_gives_the_same_ids(tokenizers, name, monkeypatch):
    """encode_pieces (how the token store encodes a long document) cuts only where the ids cannot change:
    anywhere for characters, at a single space between non-space characters for the subword tokenizers."""
    from gdds.data.tokenizers import base as tokenizer_base
    from gdds.data.tokens import store

    gpt2 = tokenizers["gpt2"]
    tok = tokenizers.get(name) or CompactTokenizer(gpt2, CompactVocab(np.arange(gpt2.vocab_size), gpt2.vocab_size))
    monkeypatch.setattr(tokenizer_base, "PIECE_CHARS", 7)
    rng = random.Random(name)
    texts = []
    for _ in range(5):
        text = "".join(rng.choice(AWKWARD) + rng.choice([" ", " ", " ", "  ", "   ", "\n", " \n ", "\t", " \t  ",
                                                           ", ", ""])
                       for _ in range(400))
        pieces = list(tok.encode_pieces(text))
        assert [i for ids in pieces for i in ids] == tok.encode(text)
        assert len(pieces) > 50  # it did cut, many times
        texts += [text, text[:5]]
    monkeypatch.setattr(store, "PIECE_CHARS", 7)  # the store's encoder: short texts batched, long ones in pieces
    assert [a.tolist() for a in store.encoder(tok)(texts)] == [tok.encode(t) for t in texts]
    assert list(tokenizers["char"].encode_pieces("x" * 20)) == [tokenizers["char"].encode("x" * 7)] * 2 + [
        tokenizers["char"].encode("x" * 6)]
    assert len(list(gpt2.encode_pieces("x" * 20))) == 1  # no safe cut: encoded whole


# ------------------------------------------------------------------------------- splits

def test_split_is_a_deterministic_partition():
    docs = shakespeare_documents() + [f"document number {i}" for i in range(200)]
    split = split_documents(docs, valid=0.1, test=0.1, seed=3)
    sets = {k: set(v) for k, v in split.items()}
    assert all(sets.values())
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert sets["train"] | sets["valid"] | sets["test"] == set(range(len(docs)))
    assert split == split_documents(docs, valid=0.1, test=0.1, seed=3)
    assert split != split_documents(docs, valid=0.1, test=0.1, seed=4)

    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    shuffled = split_documents([docs[i] for i in order], valid=0.1, test=0.1, seed=3)
    by_content = {name: {docs[order[j]] for j in idx} for name, idx in shuffled.items()}
    assert by_content == {name: {docs[i] for i in idx} for name, idx in split.items()}


def test_split_duplicates_and_small_corpora():
    docs = ["a b c", "d e f", "a b c", "g h i", "a b c"]
    split = split_documents(docs)
    where = {i: name for name, idx in split.items() for i in idx}
    assert where[0] == where[2] == where[4]
    assert all(split.values())  # 3 distinct documents: every split gets one
    assert all(split_documents(DOCS[:3], valid=0.01, test=0.01).values())
    assert split_documents(DOCS, valid=0.0, test=0.2)["valid"] == []
    with pytest.raises(ValueError, match="valid \\+ test < 1"):
        split_documents(DOCS, valid=0.5, test=0.5)


# ------------------------------------------------------------------------------- token dtype

def test_token_dtype_rules():
    assert token_dtype(30522) == np.uint16 and token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    wide = CharTokenizer([chr(0x10000 + i) for i in range(70000)])  # vocab 70,005
    [ids] = encoder(wide)([chr(0x10000 + 69999) * 3])  # what the token store writes
    assert ids.dtype == np.uint32 and ids.tolist() == [69999] * 3


# ------------------------------------------------------------------------------- packing

def test_wrap_blocks_reconstruct_the_stream(tokenizers):
    tok = tokenizers["char"]
    array = token_array(DOCS, tok)
    stream = [i for d in DOCS for i in [tok.bos_id, *tok.encode(d), tok.eos_id]]
    blocks = PackedBlocks(array, 16, tok.bos_id, tok.eos_id)
    assert len(blocks) == len(stream) // 16
    batch = blocks.batch(np.arange(len(blocks)))
    assert batch.dtype == torch.long and batch.shape == (len(blocks), 16)
    assert batch.reshape(-1).tolist() == stream[: len(blocks) * 16]
    assert np.array_equal(blocks[-1], batch[-1].numpy()) and blocks[2].dtype == np.int64
    assert blocks.batch(torch.tensor([3, 0])).tolist() == [batch[3].tolist(), batch[0].tolist()]

    eos_only = PackedBlocks(array, 7, None, tok.eos_id).batch(np.arange(3)).reshape(-1).tolist()
    assert eos_only == [i for d in DOCS for i in [*tok.encode(d), tok.eos_id]][:21]
    with pytest.raises(IndexError, match="block indices must lie in"):
        blocks.batch(np.array([len(blocks)]))


def test_pad_blocks(tokenizers):
    tok = tokenizers["gpt2"]
    docs = ["Hello world", "To be, or not to be, that is the question"]
    array = token_array(docs, tok)
    blocks = PaddedSentences(array, 8, tok.bos_id, tok.eos_id, tok.pad_id)
    assert len(blocks) == 2 and blocks.n_truncated == 1
    batch = blocks.batch(np.array([0, 1]))
    assert batch[0].tolist() == [50256, 15496, 995, 50256] + [tok.pad_id] * 4
    assert batch[1].tolist() == [50256, *tok.encode(docs[1])[:6], 50256]
    assert blocks.mask([0, 1]).tolist() == [[True] * 4 + [False] * 4, [True] * 8]


# ------------------------------------------------------------------------------- corpora

def test_embedded_corpora():
    shakespeare = shakespeare_documents()
    assert len(shakespeare) == 42 and sum(map(len, shakespeare)) > 4_500_000
    assert any("To be, or not to be,--that is the question" in d for d in shakespeare)
    assert all(not d.startswith(("PERSONS", "Dramatis", "DRAMATIS")) and not d.endswith("THE END") for d in shakespeare)
    kjv = kjv_documents()
    assert len(kjv) == 66 and kjv[0].startswith("In the beginning God created the heaven and the earth.")
    assert "darkness was upon the face of the deep" in kjv[0] and kjv[-1].endswith("Amen.")


def test_wikipedia_sample():
    pytest.importorskip("gensim")
    wiki = wikipedia_documents()
    assert len(wiki) == 106 and sum(map(len, wiki)) > 2_500_000
    assert wiki[0].startswith("Anarchism is a political philosophy") and "'''" not in wiki[0]


def held_out(name, **args):
    """Every document of a corpus a run did not train on, in its order (what zero-shot reads)."""
    return list(resolve_corpus(str(name), args).held_out())


def test_local_file_and_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("second file\n\n\nwith two paragraphs\n")
    (tmp_path / "a.txt").write_text("  first file  ")
    (tmp_path / "sub" / "c.txt").write_text("nested")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "notes.md").write_text("not text")
    assert held_out(tmp_path) == ["first file", "second file\n\n\nwith two paragraphs", "nested"]
    assert held_out(tmp_path, glob="*.md") == ["not text"]
    assert held_out(tmp_path / "b.txt", split="paragraph") == ["second file", "with two paragraphs"]
    with pytest.raises(FileNotFoundError, match="no corpus file or folder"):
        held_out(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"no file matching '\*.csv' \(it holds a.txt, b.txt, empty.txt, "
                       r"notes.md, sub/c.txt; .*data.corpus_args=\{glob: "):
        held_out(tmp_path, glob="*.csv")
    with pytest.raises(CorpusError, match="does not take \\['sep'\\]"):
        held_out(tmp_path, sep="\n")


def test_hf_path_on_local_files(tmp_path):
    pytest.importorskip("datasets")
    import datasets.config

    offline_before = datasets.config.HF_HUB_OFFLINE
    cache = str(tmp_path / "hf")
    (tmp_path / "train.txt").write_text("first sentence\n\nsecond sentence\n")
    (tmp_path / "more.txt").write_text("third sentence\n")
    files = [str(tmp_path / "train.txt"), str(tmp_path / "more.txt")]
    text = resolve_corpus("hf:text", {"data_files": files, "cache_dir": cache})
    assert text.splits() == ("train",) and list(text.documents("train")) == [
        "first sentence", "second sentence", "third sentence"]
    (tmp_path / "rows.jsonl").write_text('{"sentence": "a b", "n": 1}\n{"sentence": "c d", "n": 2}\n')
    rows = {"data_files": str(tmp_path / "rows.jsonl"), "cache_dir": cache}
    assert list(resolve_corpus("hf:json", rows).documents("train")) == ["a b", "c d"]  # the only string column
    with pytest.raises(CorpusError, match="no column 'body'"):
        resolve_corpus("hf:json", {**rows, "field": "body"}).check()
    with pytest.raises(FileNotFoundError, match="not in the local datasets cache"):
        resolve_corpus("hf:wikitext:wikitext-103-raw-v1", {"cache_dir": cache}).splits()
    assert offline_before == datasets.config.HF_HUB_OFFLINE


# ------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: resolve_corpus("shakespear"), CorpusError, "unknown corpus 'shakespear'"),
        (lambda: resolve_corpus("hf:"), CorpusError, "hf:<name>"),
        (lambda: resolve_corpus("data/missing.txt"), FileNotFoundError, "no corpus file or folder"),
        (lambda: build_tokenizer("sentencepiece"), ValueError, "unknown tokenizer 'sentencepiece'"),
        (lambda: build_tokenizer("char"), ValueError, "pass train_docs"),
        (lambda: build_tokenizer("gpt2", vocab_size=1000), ValueError, "vocab_size applies to 'bpe' only"),
        (lambda: build_tokenizer("bpe", DOCS, vocab_size=100), ValueError, "vocab_size >= 260"),
        (lambda: CharTokenizer(["ab"]), ValueError, "single characters"),
        (lambda: load_tokenizer("/nonexistent/tok"), FileNotFoundError, "no saved tokenizer"),
        (lambda: CompactVocab([3, 2], 5), ValueError, "strictly increasing"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_packing():
    tok = CharTokenizer("abc")
    array = token_array(["abc", "cab"], tok)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 3"):
        PackedBlocks(array, 2, tok.bos_id, tok.eos_id)
    with pytest.raises(ValueError, match="fewer than one block of seq_len = 100"):
        PackedBlocks(array, 100, tok.bos_id, tok.eos_id)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 3"):
        PaddedSentences(array, 1, tok.bos_id, tok.eos_id, tok.pad_id)
    with pytest.raises(ValueError, match="needs bos_id, eos_id and pad_id"):
        PaddedSentences(array, 8, tok.bos_id, tok.eos_id, None)
    with pytest.raises(IndexError, match="out of range"):
        PaddedSentences(array, 8, tok.bos_id, tok.eos_id, tok.pad_id)[2]


@pytest.mark.parametrize("name", PACKINGS.names())
def test_every_packing_makes_blocks_of_the_sequence_length(name):
    tok = CharTokenizer("abc")
    array = token_array(["abcabc", "cab", "bcabcabca"], tok)
    blocks = PACKINGS.get(name)(array, tok, 5)
    rows = blocks.batch(list(range(len(blocks))))
    assert len(blocks) >= 1 and rows.shape == (len(blocks), 5) and rows.min() >= 0 and rows.max() < tok.vocab_size
    tok.pad_id = None  # a tokenizer without a pad token: only wrap packing works
    if name == "pad":
        with pytest.raises(ValueError, match="pad packing needs a pad token"):
            PACKINGS.get(name)(array, tok, 5)
