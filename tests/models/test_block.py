"""The block-diffusion network (gdds.models.block): one block is the DiT, a noised block reads only its
own tokens and the clean blocks before it, and the KV cache gives the full forward pass's logits."""
import pytest
import torch

from gdds.models import DiT, DiTConfig
from gdds.models.block import BlockDiT, block_mask
from helpers import DEVICE

V = 13


def config(**overrides) -> DiTConfig:
    return DiTConfig(**{**dict(vocab_size=V, layers=2, width=32, heads=4, cond_width=16, max_len=64), **overrides})


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random values everywhere, the zero-initialised modulations and head included (as after training)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    return model.eval()


def test_the_same_seed_builds_the_dit_and_one_block_computes_it():
    torch.manual_seed(3)
    dit = DiT(config())
    torch.manual_seed(3)
    block = BlockDiT(config(), block_size=16)
    assert list(dit.state_dict()) == list(block.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), block.state_dict().values()))
    trained_like(dit)
    block.load_state_dict(dit.state_dict())
    x, t = torch.randint(0, V, (3, 16)), torch.rand(3)
    assert torch.allclose(block.eval()(x, t), dit(x, t), atol=1e-6, rtol=0)


def test_the_mask_lets_a_noised_block_see_itself_and_the_clean_past_only():
    mask = block_mask(5, 2)  # blocks {0, 1}, {2, 3}, {4}; rows and columns: noised 0..4, clean 0..4
    noised_2 = mask[2]  # noised position 2 (block 1)
    assert noised_2[:5].tolist() == [False, False, True, True, False]
    assert noised_2[5:].tolist() == [True, True, False, False, False]
    clean_2 = mask[7]  # clean position 2 (block 1): clean blocks <= 1, never a noised token
    assert clean_2.tolist() == [False] * 5 + [True, True, True, True, False]


@pytest.fixture
def model():
    """On GDDS_TEST_DEVICE (benchmarks/gpu_suite.sh runs this file on CUDA)."""
    torch.manual_seed(0)
    return trained_like(BlockDiT(config(), block_size=4)).to(DEVICE)


def tokens(*shape: int) -> torch.Tensor:
    return torch.randint(0, V, shape).to(DEVICE)


def test_a_noised_block_reads_no_later_clean_block_and_no_other_noised_block(model):
    x0, xt, t = tokens(3, 14), tokens(3, 14), torch.rand(3, 4).to(DEVICE)
    full = model(xt, t, x0)
    later, others = x0.clone(), xt.clone()
    later[:, 8:] = (later[:, 8:] + 1) % V  # clean blocks 2 and 3
    others[:, 4:8] = (others[:, 4:8] + 1) % V  # noised block 1
    moved = model(others, t, later)
    assert torch.equal(moved[:, :4], full[:, :4]) and torch.equal(moved[:, 8:12], full[:, 8:12])
    assert not torch.allclose(moved[:, 12:], full[:, 12:])  # block 3 reads clean block 2
    earlier = x0.clone()
    earlier[:, :4] = (earlier[:, :4] + 1) % V
    assert not torch.allclose(model(xt, t, earlier)[:, 4:8], full[:, 4:8])  # block 1 reads clean block 0


def test_each_block_is_conditioned_on_its_own_time(model):
    x0, xt = tokens(2, 8), tokens(2, 8)
    t = torch.tensor([[0.3, 0.6], [0.9, 0.2]], device=DEVICE)
    later = t.clone()
    later[:, 1] = 0.75
    a, b = model(xt, t, x0), model(xt, later, x0)
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])


def test_the_kv_cache_gives_the_full_pass_logits(model):
    """Block by block from the cache (the last block shorter) against one full forward pass."""
    x0, xt, t = tokens(3, 14), tokens(3, 14), torch.rand(3, 4).to(DEVICE)
    full = model(xt, t, x0)
    cache = None
    for k, a in enumerate(range(0, 14, 4)):
        got = model.denoise(xt[:, a:a + 4], t[:, k], cache)
        assert torch.allclose(got, full[:, a:a + 4], atol=1e-5, rtol=0), k
        cache = model.extend(cache, x0[:, a:a + 4])
    assert cache.length == 14 and cache.end == 14
    assert torch.allclose(model.encode(x0).layers[1][0], cache.layers[1][0], atol=1e-6, rtol=0)


def test_bad_inputs_are_refused_with_what_to_fix(model):
    x = tokens(2, 8)
    with pytest.raises(ValueError, match="the clean sequence x0"):
        model(x, 0.5)
    with pytest.raises(ValueError, match=r"\[B, n_blocks\] = \[2, 2\]"):
        model(x, torch.rand(2, 3, device=DEVICE), x)
    with pytest.raises(ValueError, match="at most 4 tokens"):
        model.denoise(x, 0.5, None)
    with pytest.raises(ValueError, match="causal=False"):
        BlockDiT(config(causal=True), 4)
    with pytest.raises(ValueError, match="positive integer"):
        BlockDiT(config(), 0)
