"""Shared test utilities: empirical laws, distances and small random kernels."""
import itertools
import os

import numpy as np
import torch
from scipy.stats import chisquare

import gdds
from gdds import kernels as K
from gdds.data import TokenArray
from gdds.posterior import reverse_step_probs
from gdds.sampling import reference_prior, time_grid


def all_subclasses(cls: type) -> set[type]:
    """Every subclass of ``cls``, however deep."""
    return {sub for direct in cls.__subclasses__() for sub in {direct, *all_subclasses(direct)}}


def empirical(samples: torch.Tensor, m: int) -> torch.Tensor:
    """Empirical law along the last axis: ``[..., n] -> [..., m]`` (float64)."""
    flat = samples.reshape(-1, samples.shape[-1])
    counts = torch.zeros(flat.shape[0], m, dtype=torch.float64)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return (counts / flat.shape[1]).reshape(*samples.shape[:-1], m)


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    """Largest total-variation distance between matching rows of ``p`` and ``q``."""
    return float(0.5 * (p.double() - q.double()).abs().sum(-1).max())


def context_free_chain_law(process, mu: torch.Tensor, steps: int | None, decoding: gdds.Decoding | None = None,
                           grid=None) -> torch.Tensor:
    """The exact law ``[m]`` of one position's ``x_0`` under the reverse chain of ``steps`` uniform steps
    (or on the explicit decreasing times ``grid``) from the uniform reference prior, for a denoiser that
    ignores context and time and answers ``mu [m]`` (float64) everywhere: the prior pushed through
    ``reverse_step_probs`` (filtered by ``decoding``) of every state."""
    law, states = reference_prior(process), torch.arange(process.m)
    for t, s in itertools.pairwise(time_grid(process, steps) if grid is None else grid):
        law = law @ reverse_step_probs(process, mu.expand(process.m, -1), states, s, t, decoding)
    return law


def assert_follows(samples: torch.Tensor, law: torch.Tensor, max_tv: float = 0.03, p_value: float = 1e-3) -> None:
    """The tokens of ``samples`` follow ``law [m]``: total variation below ``max_tv``, no token of
    probability 0, and a chi-square test at ``p_value`` over the cells expected 5 times or more (the
    others merged into the first)."""
    seen = empirical(samples.cpu().reshape(1, -1), law.numel())[0]
    assert tv(seen, law) < max_tv, (seen, law)
    assert bool((seen[law == 0] == 0).all())
    expected, observed = law * samples.numel(), seen * samples.numel()
    big = expected >= 5
    if int(big.sum()) > 1:
        exp_cells, obs_cells = expected[big].clone(), observed[big].clone()
        exp_cells[0] += expected[~big].sum()
        obs_cells[0] += observed[~big].sum()
        assert chisquare(obs_cells.numpy(), exp_cells.numpy()).pvalue > p_value


def random_stochastic(m: int, seed: int, sparsity: float = 0.0) -> torch.Tensor:
    """A random column-stochastic ``[m, m]`` matrix (float64), optionally with zeros."""
    g = torch.Generator().manual_seed(seed)
    F = torch.rand(m, m, dtype=torch.float64, generator=g) + 0.05
    if sparsity:
        F = F * (torch.rand(m, m, dtype=torch.float64, generator=g) > sparsity)
        F[torch.arange(m), (torch.arange(m) + 1) % m] += 0.5  # keep every column non-empty
    return F / F.sum(0, keepdim=True)


def mixing_weight(t: torch.Tensor) -> torch.Tensor:
    """A smooth weight in [0, 1] used for time-dependent kernels in the tests."""
    return 0.15 + 0.7 * torch.as_tensor(t, dtype=torch.float64) ** 2


def time_dependent_dense(m: int, seed: int) -> tuple[np.ndarray, np.ndarray, K.Dense]:
    """``F_t = (1 - w(t)) A + w(t) B`` as a Dense callable, with A and B returned for references."""
    A, B = random_stochastic(m, seed), random_stochastic(m, seed + 1)

    def F(t):
        w = mixing_weight(t)[:, None, None]
        return (1 - w) * A + w * B

    return A.numpy(), B.numpy(), K.Dense(F)


def small_embeddings(m: int = 9, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed))


def kernel_zoo(m: int = 7):
    """An instance of every kernel class on a small vocabulary, and every kernel of the registry
    built by its recipe: ``(name, kernel)``."""
    sched = gdds.LogLinear(1e-3)
    sparse = random_stochastic(m, 3, sparsity=0.6).to_sparse()
    knn = K.SemanticKNN(small_embeddings(m), K.SemanticSettings(k=4, bandwidth_k=3, b=0.2), schedule=sched,
                        cache=False, progress=False)  # (tempered: the time-dependent kNN path; the others have b = 0)
    zoo = [
        ("dense", K.Dense(random_stochastic(m, 1))),
        ("dense-t", time_dependent_dense(m, 10)[2]),
        ("sparse", K.Sparse(sparse)),
        ("mask", K.Mask(m, m - 1)),
        ("uniform", K.Uniform(m)),
        ("uniform-excluding", K.Uniform(m, exclude=[0, 2])),
        ("hybrid", K.Hybrid(m, 0, 0.3)),
        ("hybrid-t", K.Hybrid(m, 0, lambda t: 0.5 * mixing_weight(t))),
        ("mixture-t", K.Mixture([K.Sparse(sparse), K.Dense(random_stochastic(m, 2))],
                                [lambda t: 1 - mixing_weight(t), mixing_weight])),
        ("semantic-knn", knn),
        ("semantic-knn-cosine", K.SemanticKNN(small_embeddings(m, seed=4),
                                              K.SemanticSettings(k=3, bandwidth_k=2, metric="cosine", gamma=0.5),
                                              schedule=sched, cache=False, progress=False)),
        ("semantic-knn-excluding", K.SemanticKNN(small_embeddings(m, seed=5), K.SemanticSettings(k=3, bandwidth_k=2),
                                                 exclude=[1], schedule=sched, cache=False, progress=False)),
        ("absorbing-sparse", K.Absorbing(K.Sparse(sparse), 2)),
        ("tempered-knn", K.TemperedKNN((torch.arange(m)[:, None] + torch.arange(1, 4)) % m,
                                        -0.5 * torch.arange(3.0).expand(m, 3), sched, b=0.3)),
    ]
    # Every kernel a configuration can name, built by its registry recipe.
    vocab = K.Vocabulary(m, m - 1, (m - 1,))
    args = {"semantic": dict(k=3, bandwidth_k=2, cache=False), "semantic-absorb": dict(k=3, bandwidth_k=2, cache=False)}
    for name, recipe in K.KERNELS.items():
        emb = small_embeddings(m, seed=7) if recipe.needs_embeddings else None
        zoo.append((f"registry-{name}", recipe.build(vocab, sched, emb, False, **args.get(name, {}))))
    return zoo


# Where the device-sensitive tests run: GDDS_TEST_DEVICE (e.g. cuda; benchmarks/gpu_suite.sh sets
# it), else the CPU. The same assertions hold on both.
DEVICE = torch.device(os.environ.get("GDDS_TEST_DEVICE", "cpu"))

# A micro training configuration (overrides of the `tiny` preset): character tokens, a 2-layer
# width-64 DiT, 32-token blocks, on the test device. A training step takes milliseconds.
MICRO_TRAIN = [
    "data.tokenizer=char", "data.compact_vocab=false", "data.seq_len=32", "model.layers=2", "model.width=64",
    "model.heads=2", "model.cond_width=32", "train.batch_size=8", "train.warmup_steps=2", "train.log_every=1",
    "train.eval_every=4", "train.eval_batches=1", "train.progress=false", "train.lr=0.003",
    f"train.device={DEVICE.type}",
]


def local_corpus(folder, works: int = 6, chars: int = 3000):
    """A small local corpus: the first ``chars`` characters of ``works`` Shakespeare works, one file each;
    returns the folder (created)."""
    from gdds.data import shakespeare_documents

    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(shakespeare_documents()[:works]):
        (folder / f"w{i:02d}.txt").write_text(doc[:chars])
    return folder


def micro_run(folder, *overrides: str, works: int = 6):
    """A micro run (MICRO_TRAIN on :func:`local_corpus`) trained into ``folder / "run"``; returns its path."""
    from gdds.engine.config import load_config
    from gdds.engine.train import train

    corpus = local_corpus(folder / "corpus", works)
    train(load_config("tiny", [*MICRO_TRAIN, f"data.corpus={corpus}", *overrides]), folder / "run")
    return folder / "run"


def token_array(docs: list[str], tok) -> TokenArray:
    """``docs`` under ``tok``, each encoded on its own, as an in-memory :class:`gdds.data.TokenArray`:
    a reference that owes nothing to the token store."""
    ids = [np.asarray(tok.encode(doc), dtype=np.int64) for doc in docs]
    offsets = np.concatenate([[0], np.cumsum([a.size for a in ids])]).astype(np.int64)
    return TokenArray(np.concatenate(ids), offsets, "direct")
