"""Embeddings for the semantic kernel: co-occurrence (PPMI + SVD), user files, checkpoints."""
import itertools

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gdds.data.embeddings import (
    cooccurrence_counts,
    cooccurrence_embeddings,
    load_embedding_file,
    ppmi,
    select_rows,
)
from gdds.data.embeddings.filler import filler_rows
from gdds.engine.checkpoint import CheckpointError, checkpoint_embeddings, save_checkpoint, save_tensors
from gdds.kernels import SemanticKNN, SemanticSettings, knn_graph

# ---------------------------------------------------------------------------------------------
# A synthetic corpus with planted synonyms
# ---------------------------------------------------------------------------------------------

N_DET, N_ADJ, N_VERB, N_NOUN = 3, 20, 20, 20
DET, ADJ, VERB, NOUN = 0, 3, 23, 43  # id ranges: determiners, adjectives, verbs, nouns 43..62
PLANTED = [(43, 63), (44, 64), (45, 65)]  # nouns 43..45 each have a second surface form 63..65
V = 70  # ids 66..69 never occur


def grammar_corpus(n_docs: int = 6000, seed: int = 0) -> np.ndarray:
    """Documents ``[n_docs, 7]``: "DET ADJ NOUN VERB DET ADJ NOUN". Each noun takes adjectives
    and verbs from its own 3-word sets, so nouns differ by context. A planted noun is written
    with one of its two surface forms, chosen once per document: the two forms share every
    context but never co-occur."""
    rng = np.random.default_rng(seed)
    prefs = np.random.default_rng(1234)
    adj_of = np.stack([prefs.choice(N_ADJ, 3, replace=False) for _ in range(N_NOUN)])
    verb_of = np.stack([prefs.choice(N_VERB, 3, replace=False) for _ in range(N_NOUN)])
    subj, obj = rng.integers(N_NOUN, size=(2, n_docs))
    docs = np.stack([
        DET + rng.integers(N_DET, size=n_docs),
        ADJ + adj_of[subj, rng.integers(3, size=n_docs)],
        NOUN + subj,
        VERB + verb_of[subj, rng.integers(3, size=n_docs)],
        DET + rng.integers(N_DET, size=n_docs),
        ADJ + adj_of[obj, rng.integers(3, size=n_docs)],
        NOUN + obj,
    ], axis=1)
    other_form = rng.random((n_docs, len(PLANTED))) < 0.5
    for j, (main, alt) in enumerate(PLANTED):
        docs = np.where((docs == main) & other_form[:, j : j + 1], alt, docs)
    return docs


@pytest.fixture(scope="module")
def corpus():
    return grammar_corpus()


def cosine_matrix(emb: torch.Tensor) -> torch.Tensor:
    E = torch.nn.functional.normalize(emb.double(), dim=1)
    S = E @ E.T
    S.fill_diagonal_(-2.0)
    return S


def test_planted_synonyms_are_nearest_neighbours(corpus):
    emb = cooccurrence_embeddings(corpus, V, dim=16, window=5)
    nbr, _ = knn_graph(emb, k=1, metric="cosine", progress=False)
    S = cosine_matrix(emb)
    planted = {t for pair in PLANTED for t in pair}
    for a, b in PLANTED:
        assert nbr[a, 0] == b and nbr[b, 0] == a
        assert S[a, b] > 0.98
        for x in (a, b):  # every other token is clearly further away
            others = torch.cat([S[x, :V][: min(a, b)], S[x, min(a, b) + 1 : max(a, b)], S[x, max(a, b) + 1 : V]])
            assert others.max() < S[a, b] - 0.05
    # Unrelated tokens are not next to each other: ordinary nouns (distinct contexts) stay apart,
    # and nothing ordinary is as close to any token as a planted synonym is to its partner.
    ordinary = [i for i in range(NOUN, NOUN + N_NOUN) if i not in planted]
    sub = S[ordinary][:, ordinary]
    assert sub.max() < min(S[a, b] for a, b in PLANTED) - 0.05
    for i in ordinary:
        assert int(nbr[i, 0]) not in planted or S[i, nbr[i, 0]] < 0.95


def test_synonyms_never_cooccur_in_the_corpus(corpus):
    C = cooccurrence_counts(corpus, V, window=10)
    for a, b in PLANTED:
        assert C[a, b] == 0 and C[b, a] == 0


def test_counts_match_brute_force():
    """Also in chunks of 4 and 1 tokens: pairs across the chunks' edges count once, as in one piece."""
    rng = np.random.default_rng(3)
    lengths = [0, 1, 7, 2, 0, 12, 5, 1, 9]
    docs = [rng.integers(0, 6, size=n) for n in lengths]
    for weighting, window, chunk in itertools.product(("harmonic", "flat"), (1, 3, 20), (1 << 20, 4, 1)):
        C = cooccurrence_counts(docs, 8, window=window, weighting=weighting, chunk=chunk).toarray()
        ref = np.zeros((8, 8))
        for doc in docs:
            for i in range(len(doc)):
                for j in range(i + 1, min(len(doc), i + window + 1)):
                    w = 1.0 / (j - i) if weighting == "harmonic" else 1.0
                    ref[doc[i], doc[j]] += w
                    ref[doc[j], doc[i]] += w
        np.testing.assert_allclose(C, ref, rtol=1e-12)


PINNED_COUNTS = "5bd87b22cb37eb3b"  # sha256 of the one-pass counts below (their float64 bytes)


def _one_pass_counts(ids, vocab_size, window):
    """The counts as built up to 57e42e9, which the trained runs' embeddings (``embeddings_sha256``)
    hold: one sparse build per distance over all tokens of one document, added in order ``1..window``."""
    import scipy.sparse as sp

    C = sp.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for d in range(1, window + 1):
        C = C + sp.csr_matrix((np.full(ids.size - d, 1.0 / d), (ids[:-d], ids[d:])), shape=C.shape)
    C = (C + C.T).tocsr()
    C.sum_duplicates()
    return C.toarray()


def test_repeated_sum_is_a_sequential_float_loop():
    from gdds.data.embeddings.cooccurrence import _repeated_sum

    ks = np.array([0, 1, 2, 3, 7, 1000, 999, 5000, 4096, 1, 3])
    for w in (1.0, 0.5, 1 / 3, 0.2, 1 / 7):
        ref = np.zeros(ks.max() + 1)
        acc = 0.0
        for k in range(1, ks.max() + 1):
            acc += w
            ref[k] = acc
        for block in (1 << 20, 100, 1):
            assert _repeated_sum(ks, w, block=block).tolist() == ref[ks].tolist()
    assert _repeated_sum(np.zeros(0, dtype=np.int64), 0.2).shape == (0,)


def test_counts_are_bitwise_those_of_one_pass_whatever_the_chunk():
    """Float counts summed in another order differ in the last bits (1/3, 1/5 are not exact), and the
    embeddings' sha256 with them: the counts must be those of one pass, for any chunk size."""
    ids = np.random.default_rng(11).integers(0, 4, size=40_000)
    ref = _one_pass_counts(ids, 5, 5)
    for chunk in (1 << 18, 4096, 1000, 7):
        C = cooccurrence_counts(ids, 5, window=5, chunk=chunk).toarray()
        assert C.tobytes() == ref.tobytes(), chunk
    # Pinned: the float64 counts of this corpus (IEEE arithmetic, no BLAS/LAPACK involved).
    import hashlib

    assert hashlib.sha256(ref.tobytes()).hexdigest()[:16] == PINNED_COUNTS
    # Not k * w: the test above would not see a changed summation order otherwise.
    k = cooccurrence_counts(ids, 5, window=5, weighting="flat").toarray()
    assert not np.array_equal(ref, sum(_one_pass_flat(ids, 5, d) / d for d in range(1, 6)))
    np.testing.assert_allclose(ref, sum(_one_pass_flat(ids, 5, d) / d for d in range(1, 6)), rtol=1e-12)
    assert k.sum() == 2 * sum(ids.size - d for d in range(1, 6))


def _one_pass_flat(ids, vocab_size, d):
    C = np.zeros((vocab_size, vocab_size))
    np.add.at(C, (ids[:-d], ids[d:]), 1.0)
    return C + C.T


def test_ppmi_matches_formula():
    rng = np.random.default_rng(4)
    C = cooccurrence_counts([rng.integers(0, 10, size=200) for _ in range(5)], 12, window=3).toarray()
    for a in (0.75, 1.0):
        ctx = C.sum(axis=0) ** a
        with np.errstate(divide="ignore", invalid="ignore"):
            pmi = np.log(C * ctx.sum() / (C.sum(axis=1, keepdims=True) * ctx[None, :]))
        ref = np.where(C > 0, np.maximum(pmi, 0), 0)
        np.testing.assert_allclose(ppmi(C, smoothing=a).toarray(), ref, rtol=1e-10, atol=1e-12)


def test_document_boundaries_are_respected():
    rng = np.random.default_rng(5)
    filler = [rng.integers(5, 20, size=30) for _ in range(20)]  # background so PMI is meaningful
    docs = [np.array([1, 2]), np.array([3, 4])] + filler  # 2 and 3 only meet across a boundary
    flat = np.concatenate(docs)
    offsets = np.concatenate([[0], np.cumsum([d.size for d in docs])])
    C = cooccurrence_counts(docs, 20, window=5)
    assert C[2, 3] == 0 and C[3, 2] == 0 and C[1, 2] > 0 and C[3, 4] > 0
    M = ppmi(C)
    assert M[2, 3] == 0 and M[3, 2] == 0 and M[1, 2] > 0
    # The same tokens as one document do co-occur.
    assert cooccurrence_counts(flat, 20, window=5)[2, 3] > 0
    # The three ways of passing documents agree.
    C2 = cooccurrence_counts(flat, 20, window=5, offsets=offsets)
    assert (C != C2).nnz == 0
    same_length = [rng.integers(0, 20, size=9) for _ in range(6)]
    C3 = cooccurrence_counts(np.stack(same_length), 20, window=4)
    assert (cooccurrence_counts(same_length, 20, window=4) != C3).nnz == 0
    e1 = cooccurrence_embeddings(docs, 20, dim=4)
    e2 = cooccurrence_embeddings(flat, 20, dim=4, offsets=offsets)
    assert torch.equal(e1, e2)


def test_shapes_dtypes_and_determinism(corpus):
    a = cooccurrence_embeddings(corpus, V, dim=16, seed=7)
    b = cooccurrence_embeddings(corpus, V, dim=16, seed=7)
    assert a.shape == (V, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    # More components than active tokens: trailing columns of real rows are zero, rows still usable.
    seen = torch.from_numpy(np.bincount(corpus.reshape(-1), minlength=V) > 0)
    wide = cooccurrence_embeddings(corpus, V, dim=80)
    assert wide.shape == (V, 80) and torch.isfinite(wide).all()
    assert (wide[seen, int(seen.sum()):] == 0).all() and (wide[~seen].norm(dim=1) > 0).all()


def test_arpack_path_is_deterministic_and_matches_dense():
    rng = np.random.default_rng(6)
    m = 2500  # above the dense threshold: "auto" uses ARPACK
    ranks = np.arange(1, m + 1)
    probs = 1.0 / ranks / (1.0 / ranks).sum()
    tokens = rng.choice(m, size=200_000, p=probs)
    offsets = np.arange(0, tokens.size + 1, 50)
    a = cooccurrence_embeddings(tokens, m, dim=12, offsets=offsets, seed=1)
    b = cooccurrence_embeddings(tokens, m, dim=12, offsets=offsets, seed=1)
    assert torch.equal(a, b)
    # Same subspace and scale as a dense SVD (compare Gram matrices: signs and rotations within
    # degenerate components drop out), on tokens frequent enough to be well determined.
    small = tokens[tokens < 300]
    arp = cooccurrence_embeddings(small, 300, dim=8, solver="arpack").double()
    den = cooccurrence_embeddings(small, 300, dim=8, solver="dense").double()
    torch.testing.assert_close(arp @ arp.T, den @ den.T, rtol=1e-6, atol=1e-8)


def test_unseen_and_rare_tokens_get_distinct_finite_rows(corpus):
    emb = cooccurrence_embeddings(corpus, V, dim=16)
    seen = torch.from_numpy(np.bincount(corpus.reshape(-1), minlength=V) > 0)
    assert (~seen[66:]).all() and (~seen).sum() >= 4
    unseen = emb[~seen]
    assert torch.isfinite(unseen).all() and (unseen.norm(dim=1) > 0).all()
    assert torch.cdist(unseen, unseen).add(torch.eye(unseen.shape[0])).min() > 0
    seen_norm = emb[seen].norm(dim=1).median()
    assert unseen.norm(dim=1).max() < 0.05 * seen_norm
    # The semantic kernel accepts them with the cosine metric (it rejects all-zero rows).
    SemanticKNN(emb, SemanticSettings(k=8, metric="cosine"), cache=False, progress=False)
    # min_count: a token seen once is treated like an unseen one.
    rare = np.concatenate([corpus.reshape(-1), [66]])
    emb2 = cooccurrence_embeddings(rare, V, dim=16, min_count=2)
    assert emb2[66].norm() < 0.05 * seen_norm
    # Filler directions depend only on (seed, dim, token id); their scale follows the corpus.
    assert torch.nn.functional.cosine_similarity(emb2[66], emb[66], dim=0) > 1 - 1e-6
    # Filler rows are stable per token id whatever else is missing.
    one = filler_rows(np.array([9]), 6, 1.0, seed=0)
    two = filler_rows(np.array([9, 2]), 6, 1.0, seed=0)
    np.testing.assert_array_equal(one[0], two[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dim=0), "dim"),
        (dict(window=0), "window"),
        (dict(smoothing=0.0), "smoothing"),
        (dict(min_count=0), "min_count"),
        (dict(solver="magic"), "solver"),
        (dict(weighting="gaussian"), "weighting"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cooccurrence_embeddings(np.arange(10) % 5, 5, **kwargs)


def test_bad_tokens_raise():
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        cooccurrence_embeddings(np.array([0, 1, 5]), 5)
    with pytest.raises(ValueError, match="integers"):
        cooccurrence_embeddings(np.array([0.0, 1.0]), 5)
    with pytest.raises(ValueError, match="offsets"):
        cooccurrence_embeddings(np.arange(4), 5, offsets=np.array([0, 3]))
    with pytest.raises(ValueError, match="offsets"):
        cooccurrence_embeddings([np.arange(4)], 5, offsets=np.array([0, 4]))
    with pytest.raises(ValueError, match="co-occurrences"):
        cooccurrence_embeddings([np.array([1]), np.array([2])], 5)


# ---------------------------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def table():
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(0))


def test_tensor_files_round_trip(tmp_path, table):
    np.save(tmp_path / "e.npy", table.numpy())
    torch.save(table, tmp_path / "e.pt")
    torch.save({"emb": table.double(), "step": 5, "note": "metadata"}, tmp_path / "single.pth")
    torch.save({"model": {"embed.weight": table, "head.bias": torch.zeros(6)}}, tmp_path / "nested.pt")
    save_file({"w": table}, str(tmp_path / "e.safetensors"))
    save_file({"a": table, "b": torch.zeros(3, 2)}, str(tmp_path / "two.safetensors"))
    np.savez(tmp_path / "e.npz", a=table.numpy(), b=np.zeros(3))
    for name, key in [("e.npy", None), ("e.pt", None), ("single.pth", None), ("nested.pt", "model.embed.weight"),
                      ("e.safetensors", None), ("two.safetensors", "a"), ("e.npz", "a")]:
        out = load_embedding_file(tmp_path / name, key=key)
        assert out.dtype == torch.float32 and torch.equal(out, table), name
    assert torch.equal(load_embedding_file(str(tmp_path / "e.npy"), vocab=[str(i) for i in range(6)]), table)


def test_tensor_file_errors(tmp_path, table):
    with pytest.raises(FileNotFoundError):
        load_embedding_file(tmp_path / "nope.npy")
    (tmp_path / "e.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported .*'.csv'"):
        load_embedding_file(tmp_path / "e.csv")
    np.save(tmp_path / "flat.npy", np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="rank 2"):
        load_embedding_file(tmp_path / "flat.npy")
    bad = table.clone()
    bad[2, 1] = float("nan")
    bad[4, 0] = float("inf")
    save_file({"w": bad}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"2 NaN or infinite values.*\[2, 4\]"):
        load_embedding_file(tmp_path / "nan.safetensors")
    save_file({"a": table, "b": table.clone()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match=r"2 tensors; pass key=.*a \(6, 4\), b \(6, 4\)"):
        load_embedding_file(tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match=r"unknown key 'c'; available keys: a \(6, 4\), b"):
        load_embedding_file(tmp_path / "two.safetensors", key="c")
    torch.save({"x": table, "y": table}, tmp_path / "d.pt")
    with pytest.raises(ValueError, match="unknown key 'z'.*x .*y"):
        load_embedding_file(tmp_path / "d.pt", key="z")
    torch.save(table, tmp_path / "t.pt")
    with pytest.raises(ValueError, match="unknown key"):
        load_embedding_file(tmp_path / "t.pt", key="w")
    np.save(tmp_path / "e.npy", table.numpy())
    with pytest.raises(ValueError, match="6 rows but the vocabulary has 5"):
        load_embedding_file(tmp_path / "e.npy", vocab=list("abcde"))


def write_text(path, rows, header=True):
    lines = [f"{len(rows)} {len(next(iter(rows.values())))}"] if header else []
    lines += [" ".join([tok] + [repr(float(v)) for v in vec]) for tok, vec in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("header", [True, False])
def test_text_file_aligns_to_vocab(tmp_path, table, header):
    vocab = ["[PAD]", "the", "king", "love", "thou", "é"]
    rows = {tok: table[i].tolist() for i, tok in enumerate(vocab)}
    rows = {"zzz": [9.0] * 4, **dict(reversed(list(rows.items())))}  # order and extras do not matter
    write_text(tmp_path / "e.vec", rows, header)
    if header:  # a byte-order mark is ignored
        (tmp_path / "e.vec").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "e.vec").read_bytes())
    out = load_embedding_file(tmp_path / "e.vec", vocab=vocab)
    assert out.dtype == torch.float32 and torch.equal(out, table)
    mapping = {tok: i for i, tok in enumerate(vocab)}
    assert torch.equal(load_embedding_file(tmp_path / "e.vec", vocab=mapping), table)


def test_text_file_missing_tokens(tmp_path, table):
    vocab = ["a", "b", "c", "d", "e", "f"]
    write_text(tmp_path / "glove.txt", {t: table[i].tolist() for i, t in enumerate(vocab) if t not in "be"}, False)
    with pytest.warns(UserWarning, match=r"2 of 6 vocabulary tokens are missing.*\['b', 'e'\]"):
        out = load_embedding_file(tmp_path / "glove.txt", vocab=vocab, seed=3)
    keep = [0, 2, 3, 5]
    assert torch.equal(out[keep], table[keep])
    filler = out[[1, 4]]
    assert torch.isfinite(filler).all() and (filler.norm(dim=1) > 0).all() and not torch.equal(filler[0], filler[1])
    assert filler.norm(dim=1).max() < 0.05 * table.norm(dim=1).median()
    with pytest.warns(UserWarning):
        again = load_embedding_file(tmp_path / "glove.txt", vocab=vocab, seed=3)
    assert torch.equal(out, again)


def test_text_file_errors(tmp_path, table):
    write_text(tmp_path / "e.txt", {"a": [1.0, 2.0], "b": [3.0, float("nan")]}, False)
    with pytest.raises(ValueError, match="vocab="):
        load_embedding_file(tmp_path / "e.txt")
    with pytest.raises(ValueError, match=r"e.txt:2: NaN"):
        load_embedding_file(tmp_path / "e.txt", vocab=["a", "b"])
    (tmp_path / "short.txt").write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(ValueError, match=r"short.txt:2: expected a token and 3 values"):
        load_embedding_file(tmp_path / "short.txt", vocab=["a", "b"])
    (tmp_path / "words.txt").write_text("a 1 x\n")
    with pytest.raises(ValueError, match="not numbers"):
        load_embedding_file(tmp_path / "words.txt", vocab=["a"])
    write_text(tmp_path / "other.txt", {"x": [1.0]}, True)
    with pytest.raises(ValueError, match="none of the 2 vocabulary tokens"):
        load_embedding_file(tmp_path / "other.txt", vocab=["a", "b"])


# ---------------------------------------------------------------------------------------------
# Our checkpoints
# ---------------------------------------------------------------------------------------------


def make_run(tmp_path, table, ema=True, name="embed.weight"):
    """A run folder with one real checkpoint (:func:`gdds.checkpoint.save_checkpoint`):
    ``run/checkpoints/step-00000010/{model,ema}.safetensors`` and ``last -> step-00000010``."""
    run = tmp_path / "run"
    writers = {"model.safetensors": lambda p: save_tensors(
        p, {name: table.to(torch.bfloat16), "head.bias": torch.zeros(6)})}
    if ema:
        writers["ema.safetensors"] = lambda p: save_tensors(p, {name: 2 * table, "head.bias": torch.zeros(6)})
    save_checkpoint(run, 10, writers)
    return run


def test_checkpoint_embeddings_from_run_checkpoint_or_file(tmp_path, table):
    run = make_run(tmp_path, table)
    expected = table.to(torch.bfloat16).float()
    last = run / "checkpoints" / "last"
    for where in (run, last, last / "model.safetensors", str(run)):
        out = checkpoint_embeddings(where)
        assert out.dtype == torch.float32 and torch.equal(out, expected)
    for where in (run, last, last / "model.safetensors", last / "ema.safetensors"):
        assert torch.equal(checkpoint_embeddings(where, ema=True), 2 * table)


def test_checkpoint_embeddings_errors(tmp_path, table):
    run = make_run(tmp_path, table, ema=False)
    with pytest.raises(FileNotFoundError, match="EMA"):
        checkpoint_embeddings(run, ema=True)
    with pytest.raises(FileNotFoundError, match="EMA"):
        checkpoint_embeddings(run / "checkpoints" / "last" / "model.safetensors", ema=True)
    with pytest.raises(FileNotFoundError, match="run folder"):
        checkpoint_embeddings(tmp_path)
    with pytest.raises(FileNotFoundError):
        checkpoint_embeddings(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no parameter 'tok.weight'; available keys: embed.weight \(6, 4\)"):
        checkpoint_embeddings(run, key="tok.weight")


def test_checkpoint_embeddings_verifies_the_checkpoint(tmp_path, table):
    run = make_run(tmp_path, table)
    step = run / "checkpoints" / "step-00000010"
    (run / "checkpoints" / "last").unlink()  # without ``last``: the newest step-* folder
    assert torch.equal(checkpoint_embeddings(run, ema=True), 2 * table)
    weights = step / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])  # truncated
    for where in (run, step):
        with pytest.raises(CheckpointError, match="model.safetensors is truncated or corrupt"):
            checkpoint_embeddings(where)
    (step / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        checkpoint_embeddings(step)


def test_checkpoint_embeddings_of_a_compiled_model(tmp_path, table):
    run = make_run(tmp_path, table, ema=False, name="_orig_mod.embed.weight")
    assert torch.equal(checkpoint_embeddings(run), table.to(torch.bfloat16).float())


# ---------------------------------------------------------------------------------------------
# Compact vocabularies
# ---------------------------------------------------------------------------------------------


def test_select_rows(table):
    full_ids = np.array([5, 0, 3])
    out = select_rows(table, full_ids)
    assert torch.equal(out, table[[5, 0, 3]])
    assert torch.equal(select_rows(table, torch.tensor([2, 1])), table[[2, 1]])
    assert torch.equal(select_rows(table.double(), [4]), table.double()[[4]])
    out[0] = 0  # a copy, not a view
    assert table[5].abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        select_rows(table, [0, 6])
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        select_rows(table, [-1])
    with pytest.raises(ValueError, match="repeated"):
        select_rows(table, [1, 1])
    with pytest.raises(ValueError, match="integers"):
        select_rows(table, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        select_rows(table, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="empty"):
        select_rows(table, np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[m, d\]"):
        select_rows(table[0], [0])
