"""Batched prompts of different lengths (issue 27, items 1 and 4): with one generator per row, every sampler
of the registry gives row ``i`` of a batched call exactly the sample that one call with ``prompts[i]`` and
generator ``i`` gives, bit for bit: on a float64 denoiser that reads its whole row and the time (so a
mixed-up row or a shared draw shows), with the positions chunked across rows or not, and on tiny DiTs in
float64 through ``Method.generate``. One row drawn from ``[g]`` is the row drawn from ``g``."""
from types import SimpleNamespace

import pytest
import torch

import gdds
import gdds.sampling
from gdds import kernels as K
from gdds.categorical import inverse_cdf, uniforms
from gdds.models import BlockDiT, DiT, DiTConfig
from gdds.models.causal import CausalLM
from gdds.objectives import METHODS
from gdds.objectives.methods import prompt_rows
from gdds.samplers import DENOISER, NETWORK, SAMPLERS, SamplerError

M, LENGTH, STEPS = 6, 7, 5
PROMPTS = [[3, 1, 4], [], [2], [0, 5, 1, 2, 3]]  # lengths 3, 0, 1 and 5 (5 is the mask's id: a token all the same)
TABLE = torch.randn(2, M, M, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def process(kernel: str = "mask") -> gdds.ForwardProcess:
    return gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Mask(M, M - 1) if kernel == "mask" else K.Uniform(M))


def contextual(xt: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """Float64 logits of each position from its own token, its left neighbour's, the time and (blocks) the
    sum of the row's clean context: elementwise per row, so batching cannot change them."""
    left = torch.roll(xt, 1, dims=1)
    logits = TABLE[0][xt] + TABLE[1][left] + t.double()[:, None, None]
    return logits if context is None else logits + 0.1 * context.double()[:, None, None]


class ContextualBlocks:
    """A block network (``gdds.block_sampling.BlockNetwork``, blocks of 3 in 4 positions: the window slides)
    whose cache is each row's sum of clean tokens."""

    block_size, config = 3, SimpleNamespace(max_len=4)

    def denoise(self, xt, t, cache):
        return contextual(xt, t, torch.zeros(len(xt), dtype=torch.long) if cache is None else cache)

    def extend(self, cache, block):
        return block.sum(dim=1) + (0 if cache is None else cache)

    def encode(self, x0, start=0):
        return x0.sum(dim=1)


def causal(seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(DiTConfig(vocab_size=M, max_len=8, causal=True, layers=1, width=16, heads=2,
                              cond_width=8)).double()


def draw(name: str, num: int, generator, fixed: torch.Tensor | None, kernel: str = "mask") -> torch.Tensor:
    entry = SAMPLERS.get(name)
    source = {NETWORK: ContextualBlocks(), DENOISER: contextual}.get(entry.source) or causal()
    return entry.draw(process(kernel), source, num, LENGTH, steps=STEPS, generator=generator, fixed=fixed)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("chunk", [None, 5 * M], ids=["whole", "rows-split"])
@pytest.mark.parametrize("kernel", ["mask", "uniform"])
@pytest.mark.parametrize("name", SAMPLERS.names())
def test_a_batched_call_gives_each_prompt_its_own_call(name, kernel, chunk, monkeypatch):
    if not SAMPLERS.get(name).applies(process(kernel)):
        pytest.skip(f"{name} does not apply to the {kernel} kernel (tests/inference/test_sampler_contract.py)")
    if chunk is not None:  # 5 positions per chunk: rows of 7 are split across chunks
        monkeypatch.setattr(gdds.sampling, "CHUNK_FLOATS", chunk)
    batched = draw(name, len(PROMPTS), [seeded(10 + i) for i in range(len(PROMPTS))],
                   prompt_rows(len(PROMPTS), LENGTH, prompts=PROMPTS), kernel)
    for i, prompt in enumerate(PROMPTS):
        alone = draw(name, 1, seeded(10 + i), prompt_rows(1, LENGTH, prompt), kernel)
        assert torch.equal(batched[i:i + 1], alone), (i, batched[i], alone)
        assert batched[i, :len(prompt)].tolist() == prompt
    assert len({tuple(row[5:].tolist()) for row in batched}) > 1  # the rows are not one draw repeated


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_one_row_from_a_list_of_one_generator_is_that_generators_row(name):
    fixed = prompt_rows(1, LENGTH, [2, 4])
    assert torch.equal(draw(name, 1, [seeded(3)], fixed), draw(name, 1, seeded(3), fixed))


def test_uniforms_per_row_are_each_rows_own_stream():
    u = uniforms([seeded(1), seeded(2)], 2, (3,))
    assert torch.equal(u[1], torch.rand(3, dtype=torch.float64, generator=seeded(2)))
    assert torch.equal(uniforms([seeded(1)], 1, (3,)), uniforms(seeded(1), 1, (3,)))
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        uniforms([seeded(1), seeded(2)], 3)
    probs = torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64)
    assert inverse_cdf(probs, u=torch.tensor([[0.1, 0.3]], dtype=torch.float64)).tolist() == [[0, 2]]
    assert torch.equal(inverse_cdf(probs.expand(2, 3), [seeded(1), seeded(2)]),
                       inverse_cdf(probs, u=uniforms([seeded(1), seeded(2)], 2)))


@pytest.mark.parametrize("method", ["gdds", "elbo", "ar"])
def test_tiny_networks_in_float64_through_method_generate(method):
    """A DiT (and a block DiT of blocks of 4, and a causal one), untrained, in float64: ``Method.generate``
    with ``prompts=`` and one generator per row equals one call per prompt."""
    proc = process()
    m = METHODS.get(method)(None if method == "ar" else proc, **({"block_size": 4} if method == "elbo" else {}))
    torch.manual_seed(1)
    config = DiTConfig(vocab_size=M, max_len=8, layers=1, width=16, heads=2, cond_width=8)
    model = causal(1) if method == "ar" else (BlockDiT(config, 4) if method == "elbo"
                                              else DiT(config)).double()
    batched = m.generate(model, len(PROMPTS), LENGTH, STEPS, [seeded(i) for i in range(len(PROMPTS))],
                         prompts=PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert torch.equal(batched[i:i + 1], m.generate(model, 1, LENGTH, STEPS, seeded(i), prompt))


def test_the_ancestral_sampler_continues_prompts_of_different_lengths_from_one_generator():
    model = causal()
    x = SAMPLERS.get("ancestral").draw(None, model, 4, LENGTH, generator=seeded(0),
                                       fixed=prompt_rows(4, LENGTH, prompts=PROMPTS))
    assert all(x[i, :len(p)].tolist() == p for i, p in enumerate(PROMPTS))
    with pytest.raises(ValueError, match="each row's ids before its -1 padding"):
        model.generate(2, LENGTH, prompt=torch.tensor([[1, -1, 2], [1, 2, 3]]))


def test_errors_name_the_mismatch():
    with pytest.raises(ValueError, match="3 prompts for 2 sequences"):
        prompt_rows(2, LENGTH, prompts=[[1], [2], [3]])
    with pytest.raises(ValueError, match="not both"):
        prompt_rows(2, LENGTH, [1], prompts=[[1], [2]])
    with pytest.raises(ValueError, match="the prompt of sequence 1 has 8 tokens; the length is 7"):
        prompt_rows(2, LENGTH, prompts=[[1], [2] * 8])
    for name in SAMPLERS.names():
        with pytest.raises(ValueError, match="2 generators for 3 sequences"):
            draw(name, 3, [seeded(0), seeded(1)], None)
    with pytest.raises(SamplerError, match="gumbel=True draws its noise by chunk"):
        gdds.sample(process(), contextual, 2, LENGTH, STEPS, gumbel=True, generator=[seeded(0), seeded(1)])
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="the generator is on cuda"):
            gdds.sample(process(), contextual, 2, LENGTH, STEPS, generator=[seeded(0), torch.Generator("cuda")])

