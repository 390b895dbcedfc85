"""What the training loop needs besides the model and the method: the learning-rate schedule, the
order of the batches and the seeds of the noise, the EMA of the weights, stop requests, and the
device settings (``gdds.engine.train``)."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..data.tokens.stream import StreamedBlocks
from .config import Config, ConfigError


class EMA:
    """Exponential moving average of the parameters: ``e <- d e + (1 - d) p``, one fused
    ``_foreach_lerp_`` over all tensors per step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        names, params = zip(*model.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in names], [p.detach() for p in params], 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model``."""
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        with torch.no_grad():  # (a loop: FSDP2's sharded tensors have no foreach copy)
            for n, p in model.named_parameters():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            resharded(model)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(saved[n])


def resharded(model: torch.nn.Module) -> None:
    """Shard an FSDP2 model's parameters back (a forward without backward leaves the root's
    gathered), so that ``named_parameters`` gives the sharded tensors again; no-op otherwise (an FSDP2
    module exists only once ``torch.distributed.fsdp`` is loaded, which only the code that shards does)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is None:
        return
    for module in model.modules():
        if isinstance(module, fsdp.FSDPModule):
            module.reshard()


class StopRequest:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step
    (it then validates, checkpoints and returns); a second SIGINT aborts at once."""

    requested = False

    def __enter__(self) -> StopRequest:
        self._saved = {}
        if threading.current_thread() is threading.main_thread():
            self._saved = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then constant or cosine to ``min_lr``."""
    tc = cfg.train
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    span = max(1, tc.max_steps - tc.warmup_steps)
    progress = min(1.0, (step - tc.warmup_steps) / span)
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * progress))


def batch_indices(step: int, n_blocks: int, batch: int, seed: int) -> np.ndarray:
    """Block indices of global batch ``step``: consecutive slices of a per-epoch permutation."""
    per_epoch = n_blocks // batch
    if per_epoch == 0:
        raise ConfigError(f"the training split has {n_blocks} blocks, fewer than train.batch_size={batch}")
    epoch, pos = divmod(step, per_epoch)
    return _permutation(n_blocks, seed, epoch)[pos * batch:(pos + 1) * batch].copy()


@functools.lru_cache(maxsize=2)
def _permutation(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """The block order of one epoch, drawn once per epoch (not at every step: at millions of blocks a
    permutation costs milliseconds)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    perm.flags.writeable = False
    return perm


def step_rows(blocks: Any, step: int, batch: int, seed: int) -> np.ndarray:
    """Block indices of global batch ``step``: :func:`batch_indices` for stored blocks; the next
    ``batch`` blocks for a split read in order (:class:`gdds.data.tokens.stream.StreamedBlocks`)."""
    if isinstance(blocks, StreamedBlocks):
        return np.arange(step * batch, (step + 1) * batch, dtype=np.int64)
    return batch_indices(step, len(blocks), batch, seed)


def group_seed(seed: int, step: int, micro: int, group: int) -> int:
    """The seed of one noise group: a function of (run seed, step, micro-batch, group) alone, so
    that a group's draws do not depend on which process draws it (``train.noise_groups``)."""
    return int(np.random.SeedSequence([seed, step, micro, group]).generate_state(1, np.uint64)[0])


def compiled(setting: bool | None, device: torch.device) -> bool:
    """Whether ``train.compile`` compiles the network: ``true``, ``false``, or unset (on for CUDA;
    on the CPU the compile time is not won back in short runs: ``benchmarks/train.py``)."""
    return setting if setting is not None else device.type == "cuda"


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``: through pinned memory with a non-blocking copy to a GPU."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def saved_device(state: dict[str, Any]) -> str:
    """The device type a checkpoint's state was written on (checkpoints written before it was
    recorded: a CUDA generator's state has 16 bytes, a CPU one's thousands)."""
    return state.get("device") or ("cuda" if state["noise_rng"].numel() == 16 else "cpu")


def deterministic_mode(device: torch.device) -> None:
    """``torch.use_deterministic_algorithms(True)``; on CUDA with the cuBLAS workspace setting
    that deterministic matrix products need (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, unless set)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
