"""Path-wise objectives of the jump-states parametrization (paper section 4.2;
``docs/math.md`` section 9).

The network does not predict the clean token; it predicts where the reverse chain
jumps. ``J_theta(z | x_t, t)`` is a distribution over destinations ``z != x`` (the
current token ``x`` is excluded), and the reverse exit rates are kept fixed at
their true values, so the model's reverse rate is ``lambda_bar(x) J_theta(z | x)``.
Against the reverse CTMC conditioned on ``x0`` (rates ``R(x -> z | x0) =
Q_t[x, z] q_t(z | x0) / q_t(x | x0)``, forward rate ``Q_t[x, z] = beta_t F_t[x, z]``
from ``z`` into ``x``) the path-wise negative ELBO is, up to terms free of
``theta``, the weighted cross-entropy (paper, path-wise ELBO proposition)

    L = int_0^1 E_{x_t ~ q_t(.|x0)} [ lambda(x_t | x0) CE(J(. | x_t, x0), J_theta(. | x_t)) ] dt
      = int_0^1 E [ sum_{z != x_t} R(x_t -> z | x0) (-log J_theta(z | x_t)) ] dt.           (JS)

Two estimators of ``(JS)`` restricted to ``t >= t_min``:

- :func:`jump_state_loss`: ``t ~ U[t_min, 1]`` and the integrand in closed form; it
  needs ``q_t(.|x0)``, so column-constant kernels only (mask, uniform, hybrids),
  where ``q = k e_{x0} + c`` and ``R(x -> z | x0) = beta pi_t[x] q[z] / q[x]``.
- the Campbell estimator (:func:`campbell_batch`, :func:`campbell_loss`): since
  ``q_t(x | x0) R(x -> z | x0) = q_t(z | x0) Q_t[x, z]``, Campbell's formula turns
  ``(JS)`` into the expected sum over the jumps ``z -> x`` (at times ``tau``) of one
  forward path of ``-log J_theta(z | X_tau, tau)``: each jump's pre-jump token is
  predicted from the post-jump sequence. It needs only the uniformization path
  (:meth:`gdds.ForwardProcess.noise` with ``full_path``), so any kernel.

Generation needs the true unconditional reverse exit rate, which is known only for
the absorbing (mask) kernel: ``beta alpha / (1 - alpha)`` at a masked position and
0 elsewhere. There ``J_theta(. | mask)`` is exactly the clean-token posterior, so a
jump-state model of the mask process is sampled and bounded like any denoiser
(:func:`jump_denoiser`); for other kernels these models train but cannot generate.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..process import ForwardProcess
from .elbo import per_time, reachable_columns

END = 2.0  # the end time of a piece that lasts to the end of the path (any value > 1)
# The values of padding, per field of PathBatch: pieces on the empty interval [inf, inf), invalid queries.
PADDING = (0, 0, torch.inf, torch.inf, 0, 0.0, 0, 0, False)
JUMP_NEEDS, JUMP_INSTEAD = "the closed-form jump-state loss", "use the Campbell estimator (method campbell)"


def jump_log_probs(logits: Tensor, xt: Tensor) -> Tensor:
    """``log J_theta(. | x_t)``: the log-softmax of ``logits [..., m]`` over ``z != x_t``
    (float32; the current token gets ``-inf``)."""
    return torch.log_softmax(logits.float().scatter(-1, xt[..., None], -torch.inf), dim=-1)


def jump_state_loss(process: ForwardProcess, logits: Tensor, xt: Tensor, x0: Tensor, t: Tensor) -> Tensor:
    """The integrand of ``(JS)`` per position, ``[B, L]``, for a column-constant kernel:
    ``beta pi[x] / q[x] * sum_{z != x} q[z] (-log J_theta(z | x))`` with ``x = x_t``."""
    process.require_column_constant(JUMP_NEEDS, JUMP_INSTEAD)
    k, c, pi, beta = per_time(process, t)                     # k, beta [B]; c, pi [B, m] (float64)
    nll = -jump_log_probs(logits, xt).scatter(-1, xt[..., None], 0.0)  # [B, L, m]; z = x contributes nothing
    cols = reachable_columns(c)
    c_nll = ((c.float()[:, None, :] * nll).sum(-1) if cols is None
             else (c[:, cols].float()[:, None, :] * nll[..., cols]).sum(-1))
    cross = c_nll + k.float()[:, None] * nll.gather(-1, x0[..., None])[..., 0]
    q_x = c.gather(1, xt) + k[:, None] * (xt == x0)
    rate = beta[:, None] * pi.gather(1, xt)
    weight = torch.where(rate > 0, rate / q_x.clamp_min(1e-300), torch.zeros_like(rate))
    return (weight.float() * cross)


@dataclass
class PathBatch:
    """One forward path per sequence as *pieces* and *queries* (all ``[B, P]`` / ``[B, Q]``).

    Piece ``p``: token ``tokens[p]`` held at position ``positions[p]`` on ``[start, end)``
    (padding: ``start = end = inf``). Query ``q``: the jump of position ``q_pos`` at
    time ``q_time`` from ``q_target`` (pre-jump) to ``q_current`` (post-jump);
    ``q_valid`` marks real queries (padding has ``q_time = 0``).
    """

    tokens: Tensor
    positions: Tensor
    start: Tensor
    end: Tensor
    q_pos: Tensor
    q_time: Tensor
    q_target: Tensor
    q_current: Tensor
    q_valid: Tensor

    def model_inputs(self) -> tuple[Tensor, ...]:
        """The arguments of the two-stream network (:class:`gdds.models.TwoStream`)."""
        return self.tokens, self.positions, self.start, self.end, self.q_pos, self.q_time

    def astuple(self) -> tuple[Tensor, ...]:
        return (*self.model_inputs(), self.q_target, self.q_current, self.q_valid)

    @staticmethod
    def concat(batches: Sequence[PathBatch]) -> PathBatch:
        """One batch of the sequences of ``batches``: pieces and queries padded to the widest with
        the layout's inert values (pieces on the empty interval ``[inf, inf)``, invalid queries)."""
        fields = [f.name for f in dataclasses.fields(PathBatch)]

        def padded(name: str, width: int, fill: float | bool) -> Tensor:
            return torch.cat([torch.nn.functional.pad(getattr(b, name), (0, width - getattr(b, name).shape[1]),
                                                      value=fill) for b in batches])

        pieces = max(b.tokens.shape[1] for b in batches)
        queries = max(b.q_pos.shape[1] for b in batches)
        widths = {**dict.fromkeys(fields[:4], pieces), **dict.fromkeys(fields[4:], queries)}
        return PathBatch(**{n: padded(n, widths[n], fill) for n, fill in zip(fields, PADDING)})


def _compact(keep: Tensor, *fields: Tensor, fill: tuple) -> list[Tensor]:
    """Move the ``keep`` entries of each row to the front (in order) and cut to the longest row."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    width = max(int(keep.sum(1).max()), 1)
    order = order[:, :width]
    kept = keep.gather(1, order)
    return [torch.where(kept, f.gather(1, order), torch.full_like(f[:, :width], v)) for f, v in zip(fields, fill)]


def campbell_batch(process: ForwardProcess, x0: Tensor, t_min: float = 0.0,
                   generator: torch.Generator | None = None) -> PathBatch:
    """Simulate one forward path on ``(0, 1]`` per sequence of ``x0 [B, L]`` and lay it out
    for the two-stream network; queries are the real jumps (token changes) at times
    ``>= t_min``."""
    B, L = x0.shape
    _, info = process.noise(x0, 1.0, full_path=True, generator=generator)
    states = torch.cat((x0[..., None], info.states), dim=-1)                 # [B, L, 1 + K]
    times = torch.cat((torch.zeros_like(info.times[..., :1]), info.times), dim=-1)
    prev = torch.cat((x0[..., None], states[..., :-1]), dim=-1)  # the state before each slot (slot 0: x0)
    real = states != prev
    real[..., 0] = True                                                         # the initial piece
    real &= states >= 0
    start = torch.where(real, times, torch.full_like(times, torch.inf))
    # A piece ends where the next real piece of its position starts.
    after = torch.cat((start[..., 1:], torch.full_like(start[..., :1], END)), dim=-1)
    end = torch.flip(torch.cummin(torch.flip(after, [-1]), dim=-1).values, [-1]).clamp_max(END)
    pos = torch.arange(L, device=x0.device)[None, :, None].expand_as(states)
    flat = [a.reshape(B, -1) for a in (real, states, pos, start, end)]
    tokens, positions, p_start, p_end = _compact(flat[0], *flat[1:], fill=PADDING[:4])
    query = real.clone()
    query[..., 0] = False
    query &= times >= t_min
    qflat = [a.reshape(B, -1) for a in (query, pos, times, prev, states)]
    q_pos, q_time, q_target, q_current, q_valid = _compact(
        qflat[0], *qflat[1:], qflat[0], fill=PADDING[4:])
    return PathBatch(tokens, positions, p_start, p_end, q_pos, q_time, q_target, q_current, q_valid)


def campbell_loss(logits: Tensor, batch: PathBatch, length: int) -> Tensor:
    """The Campbell estimate per position, ``[B, length]``: the sum over the position's
    jumps of ``-log J_theta(pre-jump token | post-jump sequence, tau)`` (``logits [B, Q, m]``
    from the two-stream network)."""
    logj = jump_log_probs(logits, batch.q_current)
    nll = -logj.gather(-1, batch.q_target[..., None])[..., 0]
    nll = torch.where(batch.q_valid, nll, torch.zeros_like(nll))
    out = torch.zeros(nll.shape[0], length, dtype=nll.dtype, device=nll.device)
    return out.scatter_add(1, batch.q_pos, nll)


def jump_denoiser(process: ForwardProcess, logits_fn: Callable[[Tensor, Tensor], Tensor]
                  ) -> Callable[[Tensor, Tensor], Tensor]:
    """A jump-state model of the mask process as a clean-token denoiser: ``J_theta(. | mask)``
    at masked positions, the token itself elsewhere (an unmasked token is clean)."""
    mask_id = process.mask_id
    if mask_id is None:
        raise ValueError(f"a jump-state model generates only where the true reverse exit rates are known "
                         f"(the mask kernel); got {process!r}")

    def call(xt: Tensor, t: Tensor) -> Tensor:
        logj = jump_log_probs(logits_fn(xt, t), xt)
        clean = torch.full_like(logj, -torch.inf).scatter(-1, xt[..., None], 0.0)
        return torch.where((xt == mask_id)[..., None], logj, clean)

    return call
