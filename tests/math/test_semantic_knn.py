"""Semantic kNN kernel: exact graph, cache, affinities, teleport schedule."""
import errno
import math
import os

import pytest
import torch

import gdds
import gdds.files
from gdds import kernels as K
from gdds.kernels import knn as knn_module


def brute_force(emb: torch.Tensor, k: int, metric: str, exclude=()):
    E = emb.double()
    if metric == "cosine":
        E = E / E.norm(dim=1, keepdim=True)
        D = 1 - E @ E.T
    else:
        D = torch.cdist(E, E) ** 2
    D.fill_diagonal_(float("inf"))
    D[:, list(exclude)] = float("inf")
    order = torch.argsort(D, dim=1, stable=True)[:, :k]
    return order, D.gather(1, order)


@pytest.mark.parametrize("metric", ["gaussian", "cosine"])
@pytest.mark.parametrize("m,d,k", [(300, 16, 10), (50, 3, 49)])
def test_graph_equals_brute_force(metric, m, d, k):
    emb = torch.randn(m, d, generator=torch.Generator().manual_seed(m + d))
    nbr, dist = K.knn_graph(emb, k, metric, progress=False)
    ref_nbr, ref_dist = brute_force(emb, k, metric)
    assert torch.equal(nbr, ref_nbr)
    assert torch.allclose(dist.double(), ref_dist, rtol=1e-5, atol=1e-6)


def test_excluded_tokens_are_never_neighbours():
    emb = torch.randn(200, 5, generator=torch.Generator().manual_seed(8))
    banned = [0, 3, 50, 199]
    nbr, _dist = K.knn_graph(emb, 12, progress=False, exclude=banned)
    ref_nbr, _ref_dist = brute_force(emb, 12, "gaussian", banned)
    assert torch.equal(nbr, ref_nbr) and not torch.isin(nbr, torch.tensor(banned)).any()
    kern = K.SemanticKNN(emb, K.SemanticSettings(k=12), exclude=banned, cache=False, progress=False)
    for t in (0.0, 0.5, 1.0):
        assert (kern.dense(t)[banned] == 0).all()
    assert (kern.stationary(1.0)[banned] < 1e-12).all()
    x = torch.arange(200).repeat(50)
    jumps = kern.jump(x, torch.rand(x.numel(), dtype=torch.float64), torch.Generator().manual_seed(0))
    assert not torch.isin(jumps, torch.tensor(banned)).any()
    assert "excluded=4" in repr(kern)


def test_chunked_build_is_identical(monkeypatch):
    emb = torch.randn(500, 8, generator=torch.Generator().manual_seed(1))
    whole = K.knn_graph(emb, 12, progress=False)
    monkeypatch.setattr(knn_module, "_BLOCK_FLOATS", 4000)  # forces 8-row chunks
    chunked = K.knn_graph(emb, 12, progress=False)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_cache_hit_returns_identical_graph(tmp_path, monkeypatch):
    emb = torch.randn(200, 6, generator=torch.Generator().manual_seed(2))
    first = K.cached_knn_graph(emb, 8, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("knn-*.pt"))
    assert len(files) == 1 and not list(tmp_path.glob(".knn-*"))

    def fail(*args, **kwargs):
        raise AssertionError("the cached graph was rebuilt")

    monkeypatch.setattr(knn_module, "knn_graph", fail)
    second = K.cached_knn_graph(emb, 8, cache_dir=tmp_path, progress=False)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # Different embeddings or settings get a different key.
    keys = {knn_module.graph_key(e, k, mt)
            for e, k, mt in [(emb, 8, "gaussian"), (emb, 9, "gaussian"), (emb, 8, "cosine"), (emb * 2, 8, "gaussian")]}
    assert len(keys) == 4


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GDDS_CACHE_DIR", str(tmp_path))
    assert gdds.files.cache_dir() == tmp_path
    emb = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    K.SemanticKNN(emb, K.SemanticSettings(k=5, bandwidth_k=3), progress=False)
    assert len(list(tmp_path.glob("knn-*.pt"))) == 1


def test_unreadable_cache_is_reported(tmp_path):
    emb = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    (tmp_path / f"knn-{knn_module.graph_key(emb, 5, 'gaussian')}.pt").write_bytes(b"not a graph")
    with pytest.raises(RuntimeError, match="unreadable"):
        K.cached_knn_graph(emb, 5, cache_dir=tmp_path, progress=False)


def test_a_cache_folder_that_cannot_be_written_is_a_warning(tmp_path, monkeypatch):
    """R5 of the reliability report: a read-only cache folder made the kernel (so a model folder)
    unusable; the graph is now returned all the same, with a warning."""
    emb = torch.randn(30, 4, generator=torch.Generator().manual_seed(3))
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes through permissions: fail the write as a read-only file system does
        def read_only(path, write):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(gdds.files, "write_atomically", read_only)
    with pytest.warns(UserWarning, match=r"could not cache the kNN graph in .*read-only \((Read-only file system|"
                                         r"Permission denied)\); it is kept in memory"):
        nbr, dist = K.cached_knn_graph(emb, 5, cache_dir=folder, progress=False)
    expected = K.knn_graph(emb, 5, progress=False)
    assert torch.equal(nbr, expected[0]) and torch.equal(dist, expected[1]) and not list(folder.iterdir())


def test_affinity_and_tempering_formulas():
    emb = torch.randn(40, 5, generator=torch.Generator().manual_seed(4))
    sched = gdds.LogLinear(1e-3)
    kern = K.SemanticKNN(emb, K.SemanticSettings(k=10, bandwidth_k=7, eps=0.3, b=0.2), schedule=sched, cache=False,
                         progress=False)
    nbr, dist = brute_force(emb, 10, "gaussian")
    s = dist[:, 6].sqrt()
    A = torch.exp(-dist / (0.3 * s[:, None] * s[nbr]))
    for t in (0.0, 0.5, 0.95):
        a = float(sched.alpha(t)) ** 0.2
        W = A**a
        expected = W / W.sum(1, keepdim=True)
        assert torch.allclose(kern.knn.probs(t), expected, atol=1e-6)
        lam = float(kern.teleport(torch.tensor(t)))
        F = kern.dense(t)
        row = torch.full((40,), lam / 40, dtype=torch.float64)
        row[nbr[3]] += (1 - lam) * expected[3]
        assert torch.allclose(F[:, 3], row, atol=1e-6)
    fixed = K.log_affinity(nbr, dist.float(), eps=0.3, bandwidth=1.5)
    ref = -dist / (0.3 * 1.5**2)
    assert torch.allclose(fixed.double(), ref - ref.max(1, keepdim=True).values, atol=1e-4)
    deg = K.log_affinity(nbr, dist.float(), eps=0.3, gamma=0.5)
    raw = A / (A.sum(1)[:, None] * A.sum(1)[nbr]) ** 0.5  # A_ij / (deg_i deg_j)^gamma
    assert torch.allclose(torch.softmax(deg.double(), 1), raw / raw.sum(1, keepdim=True), atol=1e-5)


def test_teleport_schedule():
    emb = torch.randn(20, 3, generator=torch.Generator().manual_seed(5))
    kern = K.SemanticKNN(emb, K.SemanticSettings(k=5, bandwidth_k=3), cache=False, progress=False)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    lam = kern.teleport(t)
    assert lam[0].item() == pytest.approx(0.01, abs=1e-12)
    assert lam[-1].item() == pytest.approx(1.0, abs=1e-12)
    assert (torch.diff(lam) > 0).all()
    mid = 0.01 + 0.99 * (0.5 - 1 / (1 + math.exp(6))) / (1 / (1 + math.exp(-4)) - 1 / (1 + math.exp(6)))
    assert kern.teleport(torch.tensor(0.6, dtype=torch.float64)).item() == pytest.approx(mid, rel=1e-12)
    assert torch.allclose(kern.stationary(1.0), torch.full((20,), 0.05, dtype=torch.float64))


def test_paper_defaults():
    """The reference configuration's settings (configs/forward_process/sik_knn.yaml of its code), b = 0
    included: the kNN step does not depend on time."""
    emb = torch.randn(100, 4, generator=torch.Generator().manual_seed(6))
    kern = K.SemanticKNN(emb, cache=False, progress=False)
    assert kern.settings == K.SemanticSettings(k=64, metric="gaussian", eps=0.01, bandwidth_k=7, bandwidth=None,
                                               gamma=0.0, b=0.0, lambda_min=0.01, slope=10.0, midpoint=0.6,
                                               teleport="sigmoid", neighbours=None, teleport_to="uniform")
    assert not kern.knn.time_dependent
    assert kern.knn.neighbours.shape == (100, 64)
    assert not (kern.knn.neighbours == torch.arange(100)[:, None]).any()


def test_minilm_embeddings_and_special_tokens():
    from gdds.data import minilm_embeddings, wordpiece, wordpiece_special_ids

    emb = minilm_embeddings()
    assert emb.shape == (30522, 384) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    special = wordpiece_special_ids()
    names = {wordpiece().id_to_token(i) for i in special}
    assert len(special) == 999 and {"[MASK]", "[PAD]", "[CLS]", "[SEP]", "[UNK]", "[unused0]"} <= names
    assert wordpiece().token_to_id("the") not in special


@pytest.mark.slow
def test_from_minilm_full_vocabulary(tmp_path):
    from gdds.data import wordpiece_special_ids
    from gdds.minilm import minilm_kernel

    kern = minilm_kernel(cache_dir=tmp_path, progress=False)
    assert kern.m == 30522 and kern.knn.neighbours.shape == (30522, 64) and kern.n_excluded == 999
    assert not torch.isin(kern.knn.neighbours, torch.tensor(wordpiece_special_ids())).any()
    proc = gdds.ForwardProcess(gdds.LogLinear(1e-3), kern)
    x0 = torch.randint(0, 30522, (4, 64))
    xt = proc.noise(x0, torch.full((4,), 0.3))
    assert xt.shape == x0.shape and (xt != x0).any()


def test_the_recipe_fits_k_to_a_small_vocabulary():
    import gdds
    from gdds.kernels import KERNELS
    from gdds.kernels.registry import Vocabulary

    build = KERNELS.get("semantic").build
    emb = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    small = build(Vocabulary(20, 15, (15, 16, 17, 18, 19)), gdds.LogLinear(1e-3), emb, False)
    assert small.knn.neighbours.shape[1] == small.settings.k == 14  # every other of the 15 candidates
    tiny = build(Vocabulary(8, 5, (5, 6, 7)), gdds.LogLinear(1e-3), emb[:8], False)
    assert tiny.knn.neighbours.shape[1] == 4 and tiny.settings.bandwidth_k == 4
    with pytest.raises(ValueError, match="k must be in"):  # an explicit k is kept, and refused
        build(Vocabulary(20, 15, (15, 16, 17, 18, 19)), gdds.LogLinear(1e-3), emb, False, k=30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_sparse_kernel_matrices_are_the_dense_kernel_with_int32_indices(dtype):
    """Above DENSE_PRODUCTS tokens the kNN kernel multiplies through CSR matrices (both directions); their
    indices are int32 (the CPU's sparse product would convert int64 ones at every call), and a product
    equals the dense kernel's and that of the same matrix with int64 indices, entry for entry."""
    m = 1100
    emb = torch.randn(m, 8, generator=torch.Generator().manual_seed(21))
    knn = K.SemanticKNN(emb, K.SemanticSettings(k=8), cache=False, progress=False).knn
    v = torch.rand(m, 5, generator=torch.Generator().manual_seed(22), dtype=dtype)
    dense = knn.probs(0.0)  # [m, k]: the column y of F holds probs[y] at rows neighbours[y]
    F = torch.zeros(m, m, dtype=torch.float64)
    F[knn.neighbours, torch.arange(m)[:, None]] = dense
    for transpose, apply in ((False, knn.apply), (True, knn.apply_T)):
        A = knn._matrix(0.0, transpose, dtype)
        assert A.crow_indices().dtype == A.col_indices().dtype == torch.int32
        wide = torch.sparse_csr_tensor(A.crow_indices().long(), A.col_indices().long(), A.values(), A.shape,
                                       check_invariants=True)
        assert torch.equal(apply(v), wide @ v)
        torch.testing.assert_close(apply(v).double(), (F.T if transpose else F) @ v.double(),
                                   rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7)
