"""Block diffusion's limits (``docs/block.md``): one block trains and scores exactly the plain diffusion
model; blocks of one token under the mask kernel score an autoregressive model's exact NLL; on i.i.d.
data the bound of a block model stays above the entropy, and a model that reads its own block's clean
tokens (a leak the block mask forbids) would go below it."""
import math

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.likelihood import nll_bound, summarize
from gdds.models import BlockDiT, DiT, DiTConfig
from gdds.objectives import METHODS
from gdds.sampling import BlockDenoiser

M, L = 7, 8  # vocabulary (the mask is M - 1) and sequence length


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Random values everywhere, the zero-initialised modulations and head included (as after training)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return model.eval()


def clean_batch(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, M - 1, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method, kernel, parametrization", [
    ("gdds", K.Mask(M, M - 1), "mean"),
    ("gdds", K.Uniform(M), "forward"),
    ("gdds", K.Uniform(M), "forward-surrogate"),
    ("elbo", K.Hybrid(M, M - 1, 0.3), "mean"),
])
def test_one_block_trains_and_scores_the_plain_model(method, kernel, parametrization):
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), kernel)
    config = DiTConfig(vocab_size=M, layers=2, width=32, heads=4, cond_width=16, max_len=L)
    plain, block = (METHODS.get(method)(process, 1e-3, parametrization, b) for b in (None, L))
    plain_net, block_net = randomized(DiT(config)), randomized(BlockDiT(config, L))
    x0 = clean_batch(6)

    def loss(m, net):
        inputs = m.inputs(x0, torch.Generator().manual_seed(4))
        return m.token_loss(net(*m.model_args(inputs)), x0, inputs)

    a, b = loss(plain, plain_net), loss(block, block_net)
    assert a.shape == b.shape == x0.shape and torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert isinstance(block.denoiser(block_net), (BlockDenoiser, gdds.sampling.LikelihoodWeighted))
    with torch.no_grad():
        bounds = [nll_bound(process, m.denoiser(net), x0, steps=6, generator=torch.Generator().manual_seed(9))
                  for m, net in ((plain, plain_net), (block, block_net))]
    torch.testing.assert_close(bounds[1], bounds[0], rtol=1e-6, atol=1e-6)


def test_each_block_is_noised_at_its_own_time_and_the_loss_reads_it():
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(M, M - 1))
    method = METHODS.get("gdds")(process, 1e-3, "mean", 2)
    xt, t, x0 = method.inputs(clean_batch(64), torch.Generator().manual_seed(1))
    assert t.shape == (64, L // 2) and bool(((t >= 1e-3) & (t <= 1)).all())
    masked = (xt == M - 1).double().reshape(64, L // 2, 2).mean(-1)  # each block's masked share follows its t
    def corr(a, b):
        return float(torch.corrcoef(torch.stack([a.flatten(), b.double().flatten()]))[0, 1])

    assert corr(masked, t) > 0.5 and abs(corr(masked, t.roll(1, 1))) < 0.25  # its own time, not a neighbour's
    assert bool((t.max(1).values - t.min(1).values > 0.5).all())  # a sequence's blocks spread over [t_min, 1]
    logits = torch.randn(64, L, M)
    rows = method.token_loss(logits, x0, (xt, t, x0))
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, M), x0.reshape(-1), reduction="none").reshape(64, L)
    torch.testing.assert_close(rows, ce)  # mean parametrization: the cross-entropy, position by position


def test_blocks_of_one_token_under_the_mask_score_an_autoregressive_models_exact_nll():
    """A time-independent stand-in whose logits for block ``k`` are a fixed bigram model's conditional given
    ``x0_{k-1}``: with ``alpha(1) = 1e-7`` (no schedule reaches 0: the prior term and the draws at ``t = 1``
    add ``O(1e-7)``) the bound's expectation is the bigram model's exact NLL, per sequence. In one step the
    estimator is deterministic (every token is masked at ``t = 1`` and unmasked by ``mu``): equal to float
    tolerance; in eight, the mean of every term's estimate within four standard errors."""
    process = gdds.ForwardProcess(gdds.LogLinear(1e-7), K.Mask(M, M - 1))
    table = torch.randn(M, M, generator=torch.Generator().manual_seed(3)).index_fill(1, torch.tensor([M - 1]),
                                                                                      -math.inf)
    start = torch.zeros(1, dtype=torch.long) + (M - 1)  # the first token's conditional: the table's last row

    def bigram(xt, t, x0):
        previous = torch.cat([start.expand(x0.shape[0], 1), x0[:, :-1]], dim=1)
        return table[previous]

    n = 3000
    x0 = torch.multinomial(torch.softmax(table[:-1, :-1], -1).mean(0), n * L, replacement=True,
                           generator=torch.Generator().manual_seed(5)).reshape(n, L)
    exact = -torch.log_softmax(bigram(None, None, x0).double(), -1).gather(-1, x0[..., None])[..., 0].sum(-1)
    denoiser, gen = BlockDenoiser(bigram, 1), torch.Generator().manual_seed(6)
    torch.testing.assert_close(nll_bound(process, denoiser, x0[:50], steps=1, generator=gen), exact[:50],
                               rtol=0, atol=1e-4)
    est = nll_bound(process, denoiser, x0, steps=8, all_terms=True, generator=gen)
    gap = summarize(est - exact, torch.full((n,), L))
    assert abs(gap.nats_per_token) < 4 * gap.standard_error + 1e-5, gap


def iid_block_denoiser(process, pi, reads):
    """The exact i.i.d. posterior (every token ~ ``pi``, no context needed) plus a pull towards the clean token
    ``reads`` positions back (2: the same slot of the previous block, what a block model may read; 0: its own
    clean token, a leak)."""
    log_pi = pi.log()

    def fn(xt, t, x0):
        q = gdds.posterior.forward_likelihood(process, xt, t).clamp_min(1e-300).log()
        ctx = torch.nn.functional.one_hot(x0.roll(reads, 1), M).double()
        ctx[:, :reads] = 0  # the first block has no block before it
        return log_pi + q + 3.0 * ctx

    return BlockDenoiser(fn, 2)


def test_a_block_models_bound_on_iid_data_stays_above_the_entropy_and_a_leak_would_not():
    pi = torch.tensor([0.35, 0.25, 0.2, 0.1, 0.06, 0.04, 0.0], dtype=torch.float64)
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(M, M - 1))
    n = 800
    x0 = torch.multinomial(pi, n * L, replacement=True, generator=torch.Generator().manual_seed(2)).reshape(n, L)
    entropy = float(-(pi[:-1] * pi[:-1].log()).sum())
    bounds = {reads: summarize(nll_bound(process, iid_block_denoiser(process, pi, reads), x0, steps=8,
                                         reference=pi, generator=torch.Generator().manual_seed(7)),
                               torch.full((n,), L)) for reads in (2, 0)}
    context = bounds[2]
    assert context.nats_per_token > entropy - 3 * context.standard_error  # the wrong context costs, never helps
    assert context.nats_per_token > entropy + 0.05
    assert bounds[0].nats_per_token < entropy - 0.2  # a model that saw its own clean tokens would beat the entropy


@pytest.mark.parametrize("method", ["jump", "campbell", "ar"])
def test_methods_without_a_loss_per_position_refuse_a_block_size(method):
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(M, M - 1))
    with pytest.raises(ValueError, match=rf"method {method} does not train block diffusion.*gdds and elbo"):
        METHODS.get(method)(None if method == "ar" else process, 1e-3, "auto", 4)
