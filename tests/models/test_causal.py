"""The autoregressive baseline (gdds.models.causal): causality, exact NLL, exact sampling, a Markov-chain fit,
errors."""
import itertools
import math

import pytest
import torch

from gdds import Decoding
from gdds.models import DiT, DiTConfig
from gdds.models.causal import CausalLM
from gdds.objectives import METHODS

AR = METHODS.get("ar")(None)


def ar_loss(model: CausalLM, x: torch.Tensor) -> torch.Tensor:
    """The autoregressive method's training loss: mean per-token NLL of ``x``."""
    return AR.token_loss(model(x), x, AR.inputs(x, None)).mean()

TINY = dict(layers=2, width=32, heads=2, cond_width=16)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from threads, and OpenMP threads competing with other busy
    processes for the cores slow them down by an order of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def causal_lm(vocab: int, max_len: int = 16, seed: int = 0, std: float = 0.2) -> CausalLM:
    """A tiny CausalLM; ``std > 0`` re-initialises every parameter (DiT zero-inits head and adaLN)."""
    torch.manual_seed(seed)
    model = CausalLM(DiTConfig(vocab_size=vocab, max_len=max_len, causal=True, **TINY))
    if std:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, std)
    return model.eval()


def test_nll_is_the_sum_of_prefix_conditionals_and_attention_is_causal():
    V, L = 11, 9
    model = causal_lm(V)
    x = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nll = model.nll(x)
        assert nll.dtype == torch.float64 and nll.shape == (4,)
        by_prefix = torch.zeros(4, dtype=torch.float64)
        for i in range(L):
            log_p = torch.log_softmax(model(x[:, : i + 1])[:, -1].double(), dim=-1)
            by_prefix -= log_p.gather(-1, x[:, i : i + 1]).squeeze(-1)
        torch.testing.assert_close(nll, by_prefix, atol=1e-5, rtol=0)
        assert (nll - L * math.log(V)).abs().min() > 0.1, "random weights should not predict uniformly"
        assert torch.allclose(ar_loss(model, x).double(), nll.mean() / L, atol=1e-5)

        logits = model(x)
        assert logits.shape == (4, L, V)
        for j in range(L):
            y = x.clone()
            y[:, j] = (y[:, j] + 1) % V
            changed = model(y)
            torch.testing.assert_close(changed[:, : j + 1], logits[:, : j + 1], atol=1e-6, rtol=0,
                                       msg=f"changing x[:, {j}] moved logits at positions <= {j}")
            if j < L - 1:
                assert (changed[:, j + 1 :] - logits[:, j + 1 :]).abs().max() > 1e-3, f"x[:, {j}] is ignored"


def test_generate_reproduces_the_model_law():
    V, L, n = 3, 2, 20000
    model = causal_lm(V, max_len=4, seed=3, std=0.5)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    with torch.no_grad():
        p = torch.exp(-model.nll(seqs))
    assert abs(p.sum().item() - 1.0) < 1e-9, f"probabilities of all {V ** L} sequences sum to {p.sum().item()}"
    assert p.max() - p.min() > 0.05, f"law too close to uniform to be a meaningful test: {p.tolist()}"

    samples = model.generate(n, L, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (n, L) and samples.dtype == torch.long
    freq = torch.bincount(samples[:, 0] * V + samples[:, 1], minlength=V**L).double() / n
    tv = 0.5 * (freq - p).abs().sum().item()
    assert tv < 0.03, f"total variation {tv:.4f} between samples and the model law (expected ~0.01 at n={n})"

    prompt = torch.full((n, 1), 2)
    continued = model.generate(n, L, generator=torch.Generator().manual_seed(1), prompt=prompt)
    assert (continued[:, 0] == 2).all(), "the prompt must be kept"
    conditional = p[2 * V : 3 * V] / p[2 * V : 3 * V].sum()
    tv = 0.5 * (torch.bincount(continued[:, 1], minlength=V).double() / n - conditional).abs().sum().item()
    assert tv < 0.03, f"total variation {tv:.4f} of the continuation of prompt [2]"
    assert model.generate(3, 2, prompt=torch.tensor([[0, 1]] * 3)).tolist() == [[0, 1]] * 3


@pytest.mark.parametrize("decoding", [Decoding(temperature=0.5), Decoding(temperature=2.0), Decoding(top_k=2),
                                      Decoding(top_p=0.6), Decoding(min_p=0.4),
                                      Decoding(temperature=1.5, top_k=3, top_p=0.9, min_p=0.1)], ids=str)
def test_generate_draws_each_conditional_through_the_decoding_filters(decoding):
    """The law of the samples is the product of the filtered conditionals ``filter(p(x_1))
    filter(p(x_2 | x_1))`` (TV below 0.03 at 20,000 samples, fixed seed; it differs from the model's law
    by more than that, so the test can tell), and top-k = 1 is greedy decoding: every sample is the argmax
    path."""
    V, L, n = 4, 2, 20000
    model = causal_lm(V, max_len=4, seed=0, std=0.2)  # a law every filter moves by at least 0.2 in TV
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    with torch.no_grad():
        conditionals = torch.softmax(model(seqs).double(), dim=-1)  # [V^2, L, V]: p(x_1), p(x_2 | x_1)
    own = torch.exp(-model.nll(seqs)).detach()
    law = decoding.filter(conditionals[:, 0])[seqs[:, 0], seqs[:, 0]] * decoding.filter(conditionals[:, 1])[
        torch.arange(V**L), seqs[:, 1]]
    assert abs(law.sum().item() - 1) < 1e-12 and 0.5 * (law - own).abs().sum().item() > 0.2
    samples = model.generate(n, L, generator=torch.Generator().manual_seed(0), decoding=decoding)
    freq = torch.bincount(samples[:, 0] * V + samples[:, 1], minlength=V**L).double() / n
    tv = 0.5 * (freq - law).abs().sum().item()
    assert tv < 0.03, f"total variation {tv:.4f} between samples and the filtered law"
    greedy = model.generate(5, L, generator=torch.Generator().manual_seed(1), decoding=Decoding(top_k=1))
    first = int(conditionals[0, 0].argmax())
    assert greedy.tolist() == [[first, int(conditionals[first * V, 1].argmax())]] * 5


def sample_chain(pi0: torch.Tensor, T: torch.Tensor, n: int, length: int, g: torch.Generator) -> torch.Tensor:
    x = torch.empty(n, length, dtype=torch.long)
    x[:, 0] = torch.multinomial(pi0, n, replacement=True, generator=g)
    for i in range(1, length):
        x[:, i] = torch.multinomial(T[x[:, i - 1]], 1, generator=g).squeeze(-1)
    return x


def chain_nll(pi0: torch.Tensor, T: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return -(pi0.log()[x[:, 0]] + T.log()[x[:, :-1], x[:, 1:]].sum(dim=-1))


def test_fits_a_markov_chain_to_its_exact_likelihood():
    """The true chain is the best possible model, so the fitted NLL must sit just above the exact one."""
    K, L = 4, 16
    g = torch.Generator().manual_seed(0)
    pi0 = torch.softmax(torch.randn(K, generator=g, dtype=torch.float64), dim=0)
    T = torch.softmax(torch.randn(K, K, generator=g, dtype=torch.float64), dim=-1)
    train, held_out = sample_chain(pi0, T, 2048, L, g), sample_chain(pi0, T, 4096, L, g)

    model = causal_lm(K, max_len=L, std=0.0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (64,), generator=g)]
        opt.zero_grad()
        ar_loss(model, batch).backward()
        opt.step()

    with torch.no_grad():
        model_nll = model.eval().nll(held_out)
    exact_nll = chain_nll(pi0, T, held_out)
    gap = model_nll - exact_nll
    se = gap.std().item() / math.sqrt(len(gap))
    summary = (f"model {model_nll.mean().item():.4f} vs exact {exact_nll.mean().item():.4f} nats/sequence "
               f"(gap {gap.mean().item():.4f} +- {se:.4f}, {gap.mean().item() / L:.4f} nats/token)")
    assert gap.mean().item() / L < 0.02, f"the model did not learn the chain (tolerance 0.02 nats/token): {summary}"
    assert gap.mean().item() > -3 * se, f"the model beats the true chain beyond Monte-Carlo error: {summary}"


def test_errors_say_what_to_fix():
    model = causal_lm(5, max_len=8, std=0.0)
    with pytest.raises(ValueError, match=r"token ids in x must lie in \[0, 5\)"):
        model(torch.tensor([[0, 5]]))  # 5 is the start token's id, not a valid input
    with pytest.raises(ValueError, match=r"token ids in x must lie in \[0, 5\)"):
        model.nll(torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match=r"shape \[B, L\]"):
        model(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \[B, L\]"):
        model(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"length 9 > max_len = 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"length 9 exceeds max_len = 8"):
        model.generate(2, 9)
    with pytest.raises(ValueError, match="num must be a positive integer"):
        model.generate(0, 4)
    with pytest.raises(ValueError, match=r"prompt must have shape \[num, P\] = \[2, P\]"):
        model.generate(2, 4, prompt=torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids in prompt"):
        model.generate(2, 4, prompt=torch.full((2, 1), 7))
    with pytest.raises(ValueError, match="causal=True"):
        CausalLM(DiTConfig(vocab_size=5, **TINY))
    with pytest.raises(ValueError, match="causal must be True or False"):
        DiTConfig(vocab_size=5, causal="yes", **TINY)


def test_preset_sizes_and_flops():
    with torch.device("meta"):
        ar = CausalLM.preset("small", 50257)
        dit = DiT(DiTConfig.preset("small", 50258))
    assert ar.config.causal and ar.config.vocab_size == 50257 and ar.net.config.vocab_size == 50258
    assert ar.num_parameters() == dit.num_parameters()
    assert dit.flops_per_token(1024) - ar.flops_per_token(1024) == 6 * 12 * 768 * 1024  # half the attention term
