"""The contract every sampler of the registry (``gdds.samplers.SAMPLERS``) passes, called as
``Method.generate`` calls it, on a six-token process and a denoiser whose chain has a known law
(it ignores context and time, so every position follows the same reverse chain:
``helpers.context_free_chain_law``): samples of the right shape, dtype, range and device, fixed
positions kept, and the exact samplers' draws following the exact law of their chain; a sampler of one
kernel (``Sampler.kernel``: the mask kernel's of ``gdds.unmasking``) refuses the others. Methods refuse the
samplers and options that do not apply, naming those that do."""
from types import SimpleNamespace

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.block_sampling import BLOCK_SAMPLER
from gdds.models import DiTConfig
from gdds.models.causal import CausalLM
from gdds.objectives import METHODS
from gdds.samplers import CAUSAL, DENOISER, NETWORK, SAMPLERS, SamplerError
from helpers import assert_follows, context_free_chain_law

M = 6
MU = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08, 0.0], dtype=torch.float64)  # token 5 (the mask) is never clean
KERNELS = {"mask": lambda: K.Mask(M, M - 1), "uniform": lambda: K.Uniform(M)}


def process(kernel: str, device: torch.device | str = "cpu") -> gdds.ForwardProcess:
    return gdds.ForwardProcess(gdds.LogLinear(1e-3), KERNELS[kernel]()).to(device)


def denoiser(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``log mu`` at every position, whatever ``x_t`` and ``t``."""
    return MU.log().to(xt.device).expand(*xt.shape, -1).clone()


def causal_model(device: torch.device) -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(DiTConfig(vocab_size=M, max_len=8, causal=True, layers=1, width=16, heads=2,
                              cond_width=8)).to(device)


class ContextFreeBlocks:
    """A block network (``gdds.block_sampling.BlockNetwork``) of blocks of 3 and 4 positions (so 7 tokens
    slide a window) that answers ``log mu`` whatever its inputs: each block's chain is the chain above."""

    block_size, config = 3, SimpleNamespace(max_len=4)

    def __call__(self, xt, t, x0):
        return denoiser(xt, t)

    def denoise(self, xt, t, cache):
        return denoiser(xt, t)

    def extend(self, cache, block):
        return cache

    def encode(self, x0, start=0):
        return None


def draw(name: str, proc: gdds.ForwardProcess, num: int, length: int, steps: int, seed: int,
         fixed: torch.Tensor | None = None) -> torch.Tensor:
    """``Method.generate``'s call of the sampler ``name`` (a block sampler's ``denoise`` left at its
    default: the network's output is ``mu``'s logits)."""
    entry = SAMPLERS.get(name)
    source = {NETWORK: ContextFreeBlocks(), DENOISER: denoiser}.get(entry.source) or causal_model(proc.device)
    gen = torch.Generator(device=proc.device).manual_seed(seed)
    return entry.draw(proc, source, num, length, steps=steps, generator=gen, fixed=fixed)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", SAMPLERS.names())
def test_samples_have_the_right_shape_range_and_keep_fixed_positions(name, kernel, device):
    proc = process(kernel, device)
    fixed = torch.full((5, 7), -1)
    fixed[:, :2] = torch.tensor([3, 1])
    entry = SAMPLERS.get(name)
    if not entry.applies(proc):  # a sampler of one kernel (the mask kernel's of gdds.unmasking) refuses the others
        assert entry.kernel is not None and not isinstance(proc.kernel, entry.kernel)
        with pytest.raises(SamplerError, match=f"needs the {entry.kernel.__name__} kernel"):
            draw(name, proc, 5, 7, 4, seed=0, fixed=fixed)
        return
    x = draw(name, proc, 5, 7, 4, seed=0, fixed=fixed)
    assert x.shape == (5, 7) and x.dtype == torch.long and x.device.type == device.type
    assert int(x.min()) >= 0 and int(x.max()) < M
    assert (x[:, :2].cpu() == torch.tensor([3, 1])).all()
    fixed[:, 5] = 2  # a token fixed after free ones: infilling
    if SAMPLERS.get(name).source != CAUSAL:
        assert (draw(name, proc, 5, 7, 4, seed=1, fixed=fixed)[:, [0, 1, 5]].cpu() == torch.tensor([3, 1, 2])).all()
    else:
        with pytest.raises(SamplerError, match="cannot fill blanks"):
            draw(name, proc, 5, 7, 4, seed=1, fixed=fixed)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", [name for name, entry in SAMPLERS.items() if entry.exact and entry.source != CAUSAL])
def test_exact_samplers_follow_the_exact_law_of_their_chain(name, kernel):
    """8,000 tokens (fixed seed) against the chain's law: total variation below 0.03 (about 0.01
    expected from sampling alone) and a chi-square test at 0.1% (``helpers.assert_follows``)."""
    proc = process(kernel)
    assert_follows(draw(name, proc, 2000, 4, 8, seed=0), context_free_chain_law(proc, MU, 8))


def test_the_ancestral_sampler_draws_the_causal_models_own_samples():
    """Its law is the model's (``tests/models/test_causal.py::test_generate_reproduces_the_model_law``);
    here: the same draws as ``CausalLM.generate``, the prompt given as fixed positions."""
    model, fixed = causal_model(torch.device("cpu")), torch.full((3, 5), -1)
    fixed[:, :2] = torch.tensor([[1, 2], [3, 4], [0, 0]])
    ours = SAMPLERS.get("ancestral").draw(None, model, 3, 5, generator=torch.Generator().manual_seed(2), fixed=fixed,
                                          decoding=gdds.Decoding(top_p=0.9, temperature=0.7))
    theirs = model.generate(3, 5, torch.Generator().manual_seed(2), prompt=fixed[:, :2],
                            decoding=gdds.Decoding(top_p=0.9, temperature=0.7))
    assert torch.equal(ours, theirs)


def test_every_sampler_belongs_to_a_method_and_every_method_names_registered_samplers():
    used = {name for _, method in METHODS.items() for name in method.samplers}
    assert used | {BLOCK_SAMPLER} == set(SAMPLERS.names())  # a block model's: METHODS' instances with block_size
    block = METHODS.get("gdds")(process("mask"), block_size=4)
    assert block.samplers == (BLOCK_SAMPLER,) == (block.preview_sampler,)
    assert SAMPLERS.get(BLOCK_SAMPLER).source == NETWORK
    for _, method in METHODS.items():
        assert method.preview_sampler in method.samplers
        assert all((SAMPLERS.get(name).source == CAUSAL) == (method is METHODS.get("ar")) for name in method.samplers)
    assert len({entry.label for _, entry in SAMPLERS.items()}) == len(SAMPLERS)


def test_methods_refuse_the_samplers_and_options_that_do_not_apply():
    snapshot, ar = METHODS.get("gdds")(process("mask")), METHODS.get("ar")(None)
    assert snapshot.sampler().label == "exact reverse chain" and ar.sampler().label == "exact ancestral sampler"
    with pytest.raises(SamplerError, match="method gdds samples with exact, renoise, corrector, ordered, "
                                           "threshold, remdm; not 'ancestral'"):
        snapshot.sampler("ancestral")
    with pytest.raises(SamplerError, match="method ar samples with ancestral; not 'renoise'"):
        ar.generate(None, 2, 4, 2, None, sampler="renoise")
    with pytest.raises(SamplerError, match="does not accept gumbel; its options are device, decoding"):
        snapshot.generate(None, 2, 4, 2, None, sampler="renoise", gumbel=True)
    with pytest.raises(SamplerError, match="does not accept bogus; its options are spacing, grid, decoding, gumbel"):
        snapshot.generate(None, 2, 4, 2, None, bogus=1)
    with pytest.raises(SamplerError, match="not 'exactly'"):
        snapshot.sampler("exactly")
    uniform = METHODS.get("elbo")(process("uniform"))
    assert uniform.usable_samplers == ("exact", "renoise", "corrector")
    assert snapshot.usable_samplers == snapshot.samplers
    for masked in ("ordered", "threshold", "remdm"):
        assert snapshot.sampler(masked) is SAMPLERS.get(masked)
        with pytest.raises(SamplerError, match=r"needs the Mask kernel \(gdds.kernels.Mask\), not the Uniform kernel; "
                                               "method elbo samples this model with exact, renoise, corrector$"):
            uniform.generate(None, 2, 4, 2, None, sampler=masked)
    with pytest.raises(SamplerError, match="does not accept eta; its options are score, spacing, decoding"):
        snapshot.generate(None, 2, 4, 2, None, sampler="ordered", eta=0.1)
    SAMPLERS.get("exact").check({"operators", "spacing"})  # operator settings define the chain: accepted
    block = METHODS.get("elbo")(process("mask"), block_size=4)
    assert block.sampler().label == "exact block-by-block reverse chain"
    for plain in ("exact", "renoise"):
        with pytest.raises(SamplerError, match=f"samples with blocks; not '{plain}' .a block-diffusion model, "
                                               "model.block_size=4, is drawn block by block"):
            block.generate(None, 2, 4, 2, None, sampler=plain)
    with pytest.raises(SamplerError, match="does not accept denoise; its options are eos, cache, spacing"):
        block.generate(None, 2, 4, 2, None, denoise=None)
