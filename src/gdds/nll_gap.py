"""The snapshot versus path-wise NLL gap and its decomposition, exactly, on a small
problem (paper section 4.3, the NLL-gap proposition; ``docs/math.md`` section 10).

The excerpt of the paper we ship states the proposition without its formulas, so
this module fixes them as follows; every statement of the proposition then holds,
and every term is an exact finite sum here.

Sequences ``x0`` of length ``L`` over ``m`` tokens follow a known law ``p0``; each
position is noised by the forward process. The *path* is the forward process seen on
a grid ``0 < t_1 < ... < t_K <= 1``, ``X = (X_{t_1}, ..., X_{t_K})`` (the latent of the
``K``-step path-wise ELBO; the continuous path as the grid refines); a *snapshot* is
``(t_k, X_{t_k})`` with ``k`` uniform and independent of everything else. For a
path predictor ``p_path(x0^i | X)`` and a snapshot predictor ``p_snap(x0^i | X_t, t)``,
per token (averaged over positions ``i``):

    NLL_path = E[-log p_path(x0^i | X)],   NLL_snap = E_k E[-log p_snap(x0^i | X_{t_k}, t_k)],
    gap = NLL_snap - NLL_path = IPG + CG,
    IPG = E_k I(x0^i ; X | X_{t_k}) = E_k H(x0^i | X_{t_k}) - H(x0^i | X)  >= 0,
    CG  = E_k E KL(q(. | X_{t_k}) || p_snap) - E KL(q(. | X) || p_path),

with ``q`` the exact posteriors. The information-path gap (IPG) is what a snapshot
loses for every predictor; the calibration gap (CG) can have either sign, and a
snapshot model that is better calibrated than a path model (because it is easier to
train) can make the total gap small or negative. Since the forward process is Markov,
``q(x0 | X) = q(x0 | X_{t_1})``: the path is as informative as its least-noised point.

:func:`decompose` computes every term, the IPG as a conditional mutual information
and the CG from KL divergences, independently of the two NLLs, so ``gap = IPG + CG``
is a check, not an identity of the code. ``gdds nll-gap`` prints the table for the
built-in problem (:func:`example_problem`).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .kernels.base import Kernel
from .kernels.dense import Dense
from .kernels.mask import Mask
from .kernels.uniform import Uniform
from .operators import OperatorSettings
from .process import ForwardProcess
from .schedules import LogLinear

SnapshotPredictor = Callable[[Tensor, float], Tensor]   # (x_t [N, L], t) -> probabilities [N, L, m]
PathPredictor = Callable[[Tensor], Tensor]              # (path [N, K, L]) -> probabilities [N, L, m]


@dataclass
class GapProblem:
    """A law ``p0`` of shape ``(m,) * L`` (float64, sums to 1), a forward process on ``m``
    tokens and the grid ``times`` (increasing, in ``(0, 1]``)."""

    process: ForwardProcess
    p0: Tensor
    times: Sequence[float]

    def __post_init__(self) -> None:
        m = self.process.m
        if self.p0.dim() < 1 or any(s != m for s in self.p0.shape):
            raise ValueError(f"p0 must have shape (m,) * L with m = {m}; got {tuple(self.p0.shape)}")
        if abs(float(self.p0.sum()) - 1) > 1e-9 or (self.p0 < 0).any():
            raise ValueError("p0 must be a probability table (non-negative, summing to 1)")
        ts = list(self.times)
        if not ts or ts[0] <= 0 or ts[-1] > 1 or any(b <= a for a, b in itertools.pairwise(ts)):
            raise ValueError(f"times must increase within (0, 1]; got {ts}")
        if self.process.m ** (self.length * (len(ts) + 1)) > 5_000_000:
            raise ValueError("the problem is too large to enumerate: use fewer tokens, positions or times")

    @property
    def length(self) -> int:
        return self.p0.dim()

    def _step(self, s: float, t: float) -> Tensor:
        eye = torch.eye(self.process.m, dtype=torch.float64)
        return self.process.transition(eye, s, t, settings=OperatorSettings(method="dense"))  # [m, m]: column = from

    def sequences(self) -> Tensor:
        """Every sequence of length ``L``, ``[m^L, L]``, in the row-major order of ``p0``."""
        m, L = self.process.m, self.length
        return torch.tensor(list(itertools.product(range(m), repeat=L)), dtype=torch.long).reshape(m ** L, L)

    def paths(self) -> Tensor:
        """Every path, ``[m^(K L), K, L]``, in the order of :meth:`path_joint`'s columns."""
        m, L, K = self.process.m, self.length, len(self.times)
        return self.sequences().new_tensor(list(itertools.product(range(m), repeat=K * L))).reshape(-1, K, L)

    def path_joint(self) -> Tensor:
        """``p(x0, X)`` as ``[m^L, m^(K L)]``."""
        L, K = self.length, len(self.times)
        grid = [0.0, *self.times]
        x0, paths = self.sequences(), self.paths()
        joint = self.p0.reshape(-1, 1).expand(-1, paths.shape[0]).clone()
        prev = x0[:, None, :].expand(-1, paths.shape[0], L)
        for k in range(K):
            P = self._step(grid[k], grid[k + 1])
            cur = paths[None, :, k, :].expand_as(prev)
            joint = joint * P[cur, prev].prod(-1)
            prev = cur
        return joint

    def snapshot_joint(self, k: int) -> Tensor:
        """``p(x0, X_{t_k})`` as ``[m^L, m^L]``, from ``P_{0 -> t_k}`` directly."""
        seqs = self.sequences()
        P = self._step(0.0, self.times[k])
        return self.p0.reshape(-1, 1) * P[seqs[None, :, :], seqs[:, None, :]].prod(-1)


def _per_token(joint: Tensor, x0: Tensor, m: int) -> Tensor:
    """``Q[n, i, v] = P(latent n, x0^i = v)`` from ``joint [S, N]`` and ``x0 [S, L]``."""
    return torch.einsum("sn,slv->nlv", joint, torch.nn.functional.one_hot(x0, m).double())


def _posterior(Q: Tensor) -> Tensor:
    return Q / Q.sum(-1, keepdim=True).clamp_min(1e-300)


def _expected_nll(Q: Tensor, probs: Tensor) -> float:
    """``E[-log p(x0^i | latent)]`` per token."""
    probs = probs.double()
    logp = torch.where(Q > 0, probs.clamp_min(1e-300).log(), torch.zeros_like(probs))
    return float(-(Q * logp).sum() / Q.shape[1])


def _expected_kl(Q: Tensor, probs: Tensor) -> float:
    """``E KL(q(. | latent) || p)`` per token."""
    q = _posterior(Q)
    ratio = torch.where(Q > 0, q.clamp_min(1e-300).log() - probs.double().clamp_min(1e-300).log(),
                        torch.zeros_like(Q))
    return float((Q * ratio).sum() / Q.shape[1])


@dataclass
class GapReport:
    """Every term in nats per token; all exact (finite sums)."""

    nll_path: float
    nll_snapshot: float
    gap: float
    information_path_gap: float
    calibration_gap: float
    entropy_path: float       # H(x0^i | X)
    entropy_snapshot: float   # E_k H(x0^i | X_{t_k})

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def decompose(problem: GapProblem, snapshot: SnapshotPredictor, path: PathPredictor) -> GapReport:
    """The NLL gap of ``snapshot`` against ``path`` and its IPG + CG decomposition (module docstring)."""
    m = problem.process.m
    x0, paths = problem.sequences(), problem.paths()
    joint = problem.path_joint()
    Q_path = _per_token(joint, x0, m)
    q_path = _posterior(Q_path)
    path_probs = path(paths)
    nll_path, kl_path = _expected_nll(Q_path, path_probs), _expected_kl(Q_path, path_probs)
    nll_snap = kl_snap = ipg = h_snap = 0.0
    K = len(problem.times)
    flat = (paths * problem.process.m ** torch.arange(problem.length - 1, -1, -1)).sum(-1)  # [N, K] snapshot ids
    for k, t in enumerate(problem.times):
        Q_k = _per_token(problem.snapshot_joint(k), x0, m)
        probs = snapshot(x0, float(t))   # the snapshots X_t range over the same sequences
        nll_snap += _expected_nll(Q_k, probs) / K
        kl_snap += _expected_kl(Q_k, probs) / K
        h_snap += _expected_nll(Q_k, _posterior(Q_k)) / K
        # I(x0^i ; X | X_{t_k}) = E log q(x0^i | X) / q(x0^i | X_{t_k}(X))
        q_k = _posterior(Q_k)[flat[:, k]]
        ratio = torch.where(Q_path > 0, q_path.clamp_min(1e-300).log() - q_k.clamp_min(1e-300).log(),
                            torch.zeros_like(Q_path))
        ipg += float((Q_path * ratio).sum() / problem.length) / K
    return GapReport(nll_path, nll_snap, nll_snap - nll_path, ipg, kl_snap - kl_path,
                     _expected_nll(Q_path, q_path), h_snap)


def bayes_snapshot(problem: GapProblem) -> SnapshotPredictor:
    """The exact snapshot posterior ``q(x0^i | X_t)`` (grid times only)."""
    tables = {float(t): _posterior(_per_token(problem.snapshot_joint(k), problem.sequences(), problem.process.m))
              for k, t in enumerate(problem.times)}
    return lambda xt, t: tables[float(t)][(xt * problem.process.m ** torch.arange(xt.shape[1] - 1, -1, -1)).sum(-1)]


def bayes_path(problem: GapProblem) -> PathPredictor:
    """The exact path posterior ``q(x0^i | X)`` (on the enumerated paths, in order)."""
    table = _posterior(_per_token(problem.path_joint(), problem.sequences(), problem.process.m))
    return lambda paths: table


def own_token_snapshot(problem: GapProblem) -> SnapshotPredictor:
    """A context-blind snapshot predictor: the exact ``q(x0^i | X_t^i)`` (its own token only)."""
    m, seqs = problem.process.m, problem.sequences()
    tables = {}
    for k, t in enumerate(problem.times):
        Q = _per_token(problem.snapshot_joint(k), seqs, m)                      # [N, L, m]: P(X_t = n, x0^i = v)
        own = [_posterior(torch.zeros(m, m, dtype=torch.float64).index_add_(0, seqs[:, i], Q[:, i]))
               for i in range(problem.length)]                                   # [own token, x0^i]
        tables[float(t)] = own
    return lambda xt, t: torch.stack([table[xt[:, i]] for i, table in enumerate(tables[float(t)])], dim=1)


def tempered(predictor: Callable[..., Tensor], power: float) -> Callable[..., Tensor]:
    """``p^power`` renormalised: over-confident for ``power > 1``, under-confident below."""

    def call(*args) -> Tensor:
        p = predictor(*args).double().clamp_min(1e-300) ** power
        return p / p.sum(-1, keepdim=True)

    return call


def _ring(m: int) -> Dense:
    """A local kernel: a jump moves a token to a neighbour ``x +- 1 mod m``."""
    eye = torch.eye(m, dtype=torch.float64)
    return Dense(0.5 * (torch.roll(eye, 1, 0) + torch.roll(eye, -1, 0)))


EXAMPLE_KERNELS: dict[str, Callable[[int], Kernel]] = {
    "mask": lambda m: Mask(m, m - 1), "uniform": Uniform, "ring": _ring,
}


def example_problem(kernel: str = "mask", times: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> GapProblem:
    """Pairs over tokens ``{0, 1, 2}`` that are equal with probability 0.8 (``m = 4``, token 3
    is the mask), noised with a kernel of :data:`EXAMPLE_KERNELS` (``mask``, ``uniform`` or
    ``ring``, a local kernel), log-linear schedule."""
    m = 4
    if kernel not in EXAMPLE_KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(EXAMPLE_KERNELS)}")
    p0 = torch.zeros(m, m, dtype=torch.float64)
    p0[:3, :3] = 0.2 / 9
    p0[range(3), range(3)] += 0.8 / 3
    return GapProblem(ForwardProcess(LogLinear(1e-3), EXAMPLE_KERNELS[kernel](m)), p0, tuple(times))


def predictor_pairs(problem: GapProblem) -> dict[str, tuple[SnapshotPredictor, PathPredictor]]:
    """The (snapshot, path) predictor pairs of the ``gdds nll-gap`` table."""
    snap, path = bayes_snapshot(problem), bayes_path(problem)
    return {"exact / exact": (snap, path),
            "context-blind snapshot / exact path": (own_token_snapshot(problem), path),
            "exact snapshot / over-confident path (p^3)": (snap, tempered(path, 3.0)),
            "exact snapshot / under-confident path (p^0.5)": (snap, tempered(path, 0.5))}
