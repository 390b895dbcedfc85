"""The forward-likelihood parametrization (gdds.objectives.parametrization): it copies at low
noise for every kernel, it is the exact Bayes posterior for column-constant kernels, its
one-jump surrogate is close to exact at low noise, and for the mask kernel it is the same
model as the mean parametrization. Exactness for the other kernels: tests/objectives/test_forward_likelihood.py."""
import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.likelihood import nll_bound
from gdds.objectives import METHODS
from gdds.objectives.parametrization import forward_logits, surrogate_logits
from gdds.posterior import forward_likelihood
from helpers import kernel_zoo

M = 7
ZOO = kernel_zoo(M)
SCHED = gdds.LogLinear(1e-3)


def process_of(kernel) -> gdds.ForwardProcess:
    return gdds.ForwardProcess(SCHED, kernel)


def random_logits(shape, seed: int) -> torch.Tensor:
    return 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,kernel", ZOO, ids=[n for n, _ in ZOO])
def test_the_parametrized_mu_copies_at_low_noise(name, kernel):
    """mu(x_t | x_t) -> 1 as t -> 0 whatever the network says (here fixed random logits of
    scale 3); the mean parametrization of the same logits does not copy."""
    process = process_of(kernel)
    xt = torch.randint(0, M, (4, 6), generator=torch.Generator().manual_seed(1))
    logits = random_logits((4, 6, M), 2)
    copies = []
    for t in (1e-2, 1e-4, 1e-6, 1e-9):
        mu = torch.softmax(forward_logits(process, logits, xt, torch.full((4,), t)).double(), -1)
        copies.append(float(mu.gather(-1, xt[..., None]).min()))
    assert copies == sorted(copies) and copies[-1] > 0.999, (name, copies)
    plain = torch.softmax(logits.double(), -1).gather(-1, xt[..., None])
    assert plain.min() < 0.5


@pytest.mark.parametrize("name,kernel", [z for z in ZOO if z[1].column_constant], ids=lambda v: v if isinstance(v, str)
                         else "")
def test_exact_bayes_posterior_for_column_constant_kernels(name, kernel):
    """With f = log pi the parametrized mu is exactly the posterior pi(y) q_t(x_t | y) / Z."""
    process = process_of(kernel)
    xt = torch.randint(0, M, (3, 5), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.01, 0.4, 0.95])
    log_pi = torch.log_softmax(torch.randn(M, generator=torch.Generator().manual_seed(4)), 0)
    mu = torch.softmax(forward_logits(process, log_pi.expand(3, 5, M), xt, t).double(), -1)
    posterior = log_pi.double().exp() * forward_likelihood(process, xt, t)
    torch.testing.assert_close(mu, posterior / posterior.sum(-1, keepdim=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["semantic-knn", "dense", "sparse"])
def test_the_one_jump_surrogate_is_close_to_exact_at_low_noise(name):
    kernel = dict(ZOO)[name]
    process = process_of(kernel)
    xt = torch.randint(0, M, (2, 6), generator=torch.Generator().manual_seed(5))
    for t, tol in ((0.002, 0.01), (0.02, 0.06)):
        times = torch.full((2,), t)
        mu = torch.softmax(surrogate_logits(process, torch.zeros(2, 6, M), xt, times).double(), -1)
        q = forward_likelihood(process, xt, times)
        assert float((mu - q / q.sum(-1, keepdim=True)).abs().max()) < tol, (name, t)


def test_for_the_mask_kernel_it_is_the_mean_parametrization():
    """The mask's reverse step reads mu only at masked positions, where log q_t(mask | y) is one
    constant for every y but the mask token itself, which clean text never holds: with the
    mask token's logit at -inf both parametrizations give the same bound, draw for draw."""
    process = process_of(K.Mask(M, M - 1))

    def network(xt, t):
        logits = random_logits((*xt.shape, M), int(xt.sum()) % 1000)
        return logits.index_fill(-1, torch.tensor([M - 1]), -torch.inf)

    x0 = torch.randint(0, M - 1, (6, 8), generator=torch.Generator().manual_seed(6))
    bounds = []
    for name in ("mean", "forward"):
        method = METHODS.get("gdds")(process, parametrization=name)
        bounds.append(nll_bound(process, method.denoiser(network), x0, steps=8,
                                generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(bounds[0], bounds[1], atol=1e-9, rtol=0)
    assert METHODS.get("gdds")(process).parametrization == "mean"  # the default for an absorbing kernel
    assert METHODS.get("gdds")(process_of(K.Uniform(M))).parametrization == "forward"


def test_training_loss_and_gradient_are_finite_for_every_kernel():
    for name, kernel in ZOO:
        process = process_of(kernel)
        method = METHODS.get("gdds")(process, parametrization="forward")
        x0 = torch.randint(0, M, (4, 6), generator=torch.Generator().manual_seed(9))
        xt, t = method.inputs(x0, torch.Generator().manual_seed(10))
        logits = random_logits((4, 6, M), 11).requires_grad_()
        loss = method.token_loss(logits, x0, (xt, t)).mean()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), name


def test_methods_whose_output_is_not_mu_refuse_the_forward_parametrization():
    process = process_of(K.Mask(M, M - 1))
    with pytest.raises(ValueError, match="supports the parametrizations mean"):
        METHODS.get("jump")(process, parametrization="forward")
    with pytest.raises(ValueError, match="supports the parametrizations mean"):
        METHODS.get("campbell")(process, parametrization="forward")


def test_a_model_that_does_not_copy_has_a_bound_growing_with_T_and_the_parametrized_one_converges():
    """Uniform kernel, the same fixed random network under both parametrizations, every term of
    the T-step bound (one draw each): the mean parametrization pays copy errors at every step,
    so its bound grows with T (its continuous-time bound diverges); the forward one settles."""
    process = process_of(K.Uniform(M))

    def network(xt, t):
        return 2 * torch.randn(*xt.shape, M, generator=torch.Generator().manual_seed(int(xt.sum()) % 997))

    x0 = torch.randint(0, M, (16, 6), generator=torch.Generator().manual_seed(1))
    bounds = {}
    for name in ("mean", "forward"):
        denoiser = METHODS.get("gdds")(process, parametrization=name).denoiser(network)
        bounds[name] = [float(nll_bound(process, denoiser, x0, steps=T, all_terms=True,
                                        generator=torch.Generator().manual_seed(2)).mean()) / 6 for T in (8, 32, 128)]
    mean, forward = bounds["mean"], bounds["forward"]
    assert mean[1] - mean[0] > 0.5 and mean[2] - mean[1] > 0.5, mean
    assert abs(forward[2] - forward[1]) < 0.2 and forward[2] < mean[0], forward
    assert METHODS.get("gdds")(process, parametrization="mean").continuous_bound_finite is False
    assert METHODS.get("gdds")(process).continuous_bound_finite is True


@pytest.mark.parametrize("parametrization", ["forward", "forward-surrogate"])
@pytest.mark.parametrize("name,kernel", ZOO, ids=[n for n, _ in ZOO])
def test_the_training_loss_is_the_cross_entropy_of_the_parametrized_mu(name, kernel, parametrization):
    """The training loss (for column-constant kernels and the surrogate, sparse: never materialising
    the parametrized logits) equals the cross-entropy of the parametrized logits, value and gradient."""
    from gdds.objectives.parametrization import PARAMETRIZATIONS
    from gdds.objectives.snapshot import snapshot_cross_entropy

    form = PARAMETRIZATIONS.get(parametrization)
    process = process_of(kernel)
    x0 = torch.randint(0, M - 1, (3, 5), generator=torch.Generator().manual_seed(12))
    t = torch.tensor([0.01, 0.4, 0.9])
    xt = process.noise(x0, t, generator=torch.Generator().manual_seed(13))
    dense = random_logits((3, 5, M), 14).requires_grad_()
    sparse = dense.detach().clone().requires_grad_()
    a = snapshot_cross_entropy(form.logits(process, dense, xt, t), x0)
    b = form.cross_entropy(process, sparse, xt, t, x0)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    finite = torch.isfinite(a)
    torch.testing.assert_close(a[finite], b[finite], atol=1e-5, rtol=1e-5)
    a[finite].sum().backward()
    b[finite].sum().backward()
    torch.testing.assert_close(dense.grad, sparse.grad, atol=1e-5, rtol=1e-5)
