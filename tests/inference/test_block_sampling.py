"""Generation block by block (gdds.block_sampling) with a tiny random BlockDiT: the cache changes nothing
(same samples for the same seed), fixed tokens are kept, EOS stops, lengths beyond the network's positions
slide a window, one block is the plain chain, and a two-block chain follows its exact law."""
import itertools
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import chisquare

import gdds
from gdds import kernels as K
from gdds.block_sampling import sample_blocks
from gdds.engine.build import LoadedRun
from gdds.engine.config_checks import ConfigError
from gdds.models import DiTConfig
from gdds.models.block import BlockDiT
from gdds.objectives import METHODS
from gdds.posterior import reverse_step_probs
from gdds.sampling import reference_prior, time_grid

V = 5  # four clean tokens and the mask (uniform: five tokens)
KERNELS = {"mask": lambda m: K.Mask(m, m - 1), "uniform": K.Uniform}


def process(kernel: str, m: int = V) -> gdds.ForwardProcess:
    return gdds.ForwardProcess(gdds.LogLinear(1e-3), KERNELS[kernel](m))


def network(block_size: int, max_len: int = 64, vocab: int = V) -> BlockDiT:
    """Random values everywhere, the zero-initialised modulations and head included (as after training)."""
    torch.manual_seed(0)
    net = BlockDiT(DiTConfig(vocab_size=vocab, layers=2, width=32, heads=4, cond_width=16, max_len=max_len),
                   block_size)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return net.eval()


def draw(proc, net, num, length, steps=4, seed=0, **options) -> torch.Tensor:
    return sample_blocks(proc, net, num, length, steps, generator=torch.Generator().manual_seed(seed), **options)


class Positions:
    """A block network that records the largest position it is asked to compute (its own forward pass,
    or the cache's end plus the block)."""

    def __init__(self, net: BlockDiT):
        self.net, self.block_size, self.config, self.highest, self.blocks = net, net.block_size, net.config, 0, 0

    def __call__(self, xt, t, x0):
        self.highest = max(self.highest, xt.shape[1])
        return self.net(xt, t, x0)

    def denoise(self, xt, t, cache):
        self.highest = max(self.highest, (0 if cache is None else cache.end) + xt.shape[1])
        return self.net.denoise(xt, t, cache)

    def extend(self, cache, block):
        self.blocks += 1
        return self.net.extend(cache, block)

    def encode(self, x0, start=0):
        self.highest = max(self.highest, start + x0.shape[1])
        return self.net.encode(x0, start)


@pytest.mark.parametrize("kernel", KERNELS)
def test_cached_and_uncached_generation_draw_the_same_samples_and_keep_fixed_tokens(kernel):
    """14 tokens in blocks of 4 (the last shorter): a prompt of a whole block and a half, a token to
    infill in block 2; the cache is kept (one extend per block) or the full pass recomputed."""
    proc, net = process(kernel), network(4)
    fixed = torch.full((6, 14), -1)
    fixed[:, :6] = torch.tensor([0, 1, 2, 3, 0, 1])
    fixed[:, 10] = 2
    spy = Positions(net)
    cached = draw(proc, spy, 6, 14, fixed=fixed)
    assert torch.equal(cached, draw(proc, net, 6, 14, fixed=fixed, cache=False))
    assert spy.blocks == 3  # blocks 0, 1 and 2 joined the cache once each; the last is never needed
    assert torch.equal(cached[:, :6], fixed[:, :6]) and bool((cached[:, 10] == 2).all())
    assert int(cached.max()) < V and not torch.equal(cached, draw(proc, net, 6, 14, seed=1, fixed=fixed))


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_block_is_the_plain_reverse_chain(kernel):
    proc, net = process(kernel), network(8, max_len=8)
    plain = gdds.sample(proc, lambda xt, t: net(xt, t), 5, 8, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(draw(proc, net, 5, 8, steps=6, seed=3), plain)


@pytest.mark.parametrize("cache", [True, False])
def test_lengths_beyond_the_networks_positions_slide_a_window(cache):
    """max_len 12, blocks of 4: the context is the last two blocks once 12 positions are used up."""
    proc = process("mask")
    spy = Positions(network(4, max_len=12))
    x = draw(proc, spy, 3, 30, cache=cache)
    assert x.shape == (3, 30) and spy.highest == 12
    assert torch.equal(x, draw(proc, spy.net, 3, 30, cache=not cache))


def test_text_before_the_window_is_forgotten():
    """max_len 8, blocks of 4: block 2 is drawn given block 1 only (re-encoded at positions 0..3): its
    logits do not move with block 0 and do with block 1."""
    proc, net = process("uniform"), network(4, max_len=8)
    prompts = torch.full((3, 4, 12), -1)
    prompts[:, :, :8] = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2], [3, 3, 3, 3, 4, 0, 1, 2], [0, 1, 2, 3, 2, 2, 2, 2]]
                                     )[:, None]

    def last_logits(fixed):
        seen = []

        def recorded(network):
            return lambda xt, t: seen.append(network(xt, t)) or seen[-1]

        draw(proc, net, 4, 12, steps=1, fixed=fixed, denoise=recorded)
        return seen[-1]

    first, earlier, later = (last_logits(p) for p in prompts)
    assert torch.equal(first, earlier) and not torch.allclose(first, later)


def test_generation_stops_after_the_block_where_every_sequence_said_eos():
    """A bias towards token 2 as EOS: the blocks after the stop are never drawn, and every free token after
    a sequence's first generated EOS is EOS; the prompt (which holds the EOS token) is kept."""
    proc, spy = process("mask"), Positions(network(4))
    fixed = torch.full((8, 40), -1)
    fixed[:, :3] = torch.tensor([2, 2, 0])

    def biased(net):
        return lambda xt, t: net(xt, t) + 2.0 * torch.nn.functional.one_hot(torch.tensor(2), V)

    x = draw(proc, spy, 8, 40, fixed=fixed, eos=2, denoise=biased)
    assert spy.blocks < 9 and torch.equal(x[:, :3], fixed[:, :3])
    free = x[:, 3:]
    first = (free == 2).long().argmax(dim=1)
    assert bool((free == 2).any(dim=1).all())
    assert all(bool((row[i:] == 2).all()) for row, i in zip(free, first.tolist()))
    assert not bool((x[:, 3:4 * (spy.blocks + 1)] == 2).all())  # it did draw tokens before stopping


@torch.no_grad()
def chain_law(proc, denoiser, n: int, steps: int) -> torch.Tensor:
    """The exact law ``[m^n]`` of one block of ``n`` tokens under the reverse chain of ``denoiser``: every
    block state pushed through the product of the positions' reverse steps."""
    states = torch.tensor(list(itertools.product(range(proc.m), repeat=n)))
    law = reference_prior(proc)[states].prod(dim=1)
    for t, s in itertools.pairwise(time_grid(proc, steps)):
        mu = torch.softmax(denoiser(states, torch.full((len(states),), t)).double(), dim=-1)
        step = reverse_step_probs(proc, mu.reshape(-1, proc.m), states.reshape(-1), s, t).reshape(len(states), n, -1)
        law = law @ step[:, torch.arange(n), states].prod(dim=-1)  # [S, S'] from the per-position steps
    return law


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_two_block_chain_follows_its_exact_law(kernel):
    """Three tokens, blocks of 2: block 1's law exactly, block 2's given each block 1 exactly (its cache),
    against 20,000 sequences (seed 0): total variation below 0.05 (at most about 0.025 expected from
    sampling alone over the 81 outcomes) and a chi-square test at 0.1% over the outcomes expected 5
    times or more (the others merged)."""
    proc, net, steps, num = process(kernel, 3), network(2, vocab=3), 3, 20_000
    first = chain_law(proc, lambda xt, t: net.denoise(xt, t, None), 2, steps)
    blocks = torch.tensor(list(itertools.product(range(3), repeat=2)))

    def given(block):  # block 2's denoiser given block 1, for every state of block 2 at once
        cache = net.encode(block.expand(len(blocks), -1))
        return lambda xt, t: net.denoise(xt, t, cache)

    law = torch.cat([p * chain_law(proc, given(c), 2, steps) for p, c in zip(first, blocks)])
    x = draw(proc, net, num, 4, steps=steps)
    index = (x * 3 ** torch.arange(3, -1, -1)).sum(dim=1)
    seen = torch.bincount(index, minlength=3 ** 4).double()
    assert 0.5 * float((seen / num - law).abs().sum()) < 0.05
    assert bool((seen[law == 0] == 0).all())
    expected, big = law * num, law * num >= 5
    observed = torch.cat([seen[big], seen[~big].sum()[None]])
    assert chisquare(observed.numpy(), torch.cat([expected[big], expected[~big].sum()[None]]).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("parametrization", ["mean", "forward-surrogate", "forward"])
def test_a_block_method_generates_with_its_parametrization(parametrization):
    proc, net = process("uniform"), network(4)
    method = METHODS.get("gdds")(proc, parametrization=parametrization, block_size=4)
    ours = method.generate(net, 3, 10, 4, torch.Generator().manual_seed(0), prompt=[1, 2, 3])
    assert torch.equal(ours, draw(proc, net, 3, 10, fixed=torch.tensor([1, 2, 3] + [-1] * 7).expand(3, -1),
                                  denoise=method.parametrized))
    if parametrization != "mean":
        assert not torch.equal(ours, METHODS.get("gdds")(proc, parametrization="mean", block_size=4).generate(
            net, 3, 10, 4, torch.Generator().manual_seed(0), prompt=[1, 2, 3]))


def test_a_block_model_samples_any_length_and_a_plain_one_keeps_its_positions():
    def loaded(block_size):
        method = METHODS.get("gdds")(process("mask"), block_size=block_size)
        return LoadedRun(None, SimpleNamespace(method=method, model=SimpleNamespace(config=SimpleNamespace(
            max_len=16))), None, "ema", torch.device("cpu"))

    assert loaded(4).sample_length(1000, "--length") == 1000 and loaded(4).sample_length(None, "--length") == 16
    with pytest.raises(ConfigError, match=r"--length must be in \[1, 16\]; got 17"):
        loaded(None).sample_length(17, "--length")
    with pytest.raises(ConfigError, match="got 0"):
        loaded(4).sample_length(0, "--length")
