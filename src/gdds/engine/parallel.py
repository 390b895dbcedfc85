"""Data parallelism for the training loop (``train.strategy``): what differs between DDP and FSDP2.

- ``ddp`` (:class:`Replicated`): every process holds the whole model; DDP averages the gradients
  (one process: no wrapper). The optimizer state is saved by the main process in ``state.pt``.
- ``fsdp`` (:class:`Sharded`): PyTorch's FSDP2 (``torch.distributed.fsdp.fully_shard``) shards the
  weights, gradients and optimizer state of every transformer block and of the rest of the model
  over the processes, with bf16 parameters and float32 gradient reduction when training in bf16.
  The optimizer state is saved sharded through ``torch.distributed.checkpoint`` (every process
  writes its part into the checkpoint's ``optimizer/`` folder) and loads into any number of
  processes (it reshards), so a run resumes on another number of GPUs.

In both, the checkpoint's weights (``model.safetensors``, ``ema.safetensors``) are full tensors, so
that ``gdds eval`` and ``gdds sample`` load them in one process; gathering them is collective
under FSDP2: every process calls :meth:`full_tensors`, the main one writes. Both average gradients
over processes, so the loss and the updates are those of one process with the whole batch.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..models.layers import Trunk
from ..registry import Registry
from . import checkpoint as ck
from .config_checks import ConfigError
from .distributed import DistInfo, barrier

OPTIMIZER_FOLDER = "optimizer"  # a sharded optimizer state inside a checkpoint


def _is_dtensor(t: torch.Tensor) -> bool:
    """Whether ``t`` is a sharded ``DTensor``. The FSDP2 modules (``torch.distributed.tensor``,
    ``.checkpoint``: about half a second; public from torch 2.6) are imported only by the code that
    shards, so every ``gdds`` command starts without them; a DTensor exists only once its module is loaded."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def gathered(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole: a sharded ``DTensor`` gathered from every process, any other tensor as it is."""
    return t.full_tensor() if _is_dtensor(t) else t


def _full(t: torch.Tensor) -> torch.Tensor:
    return gathered(t).detach().cpu()


class Replicated:
    """One process, or DDP: the whole model on every process."""

    fullgraph = True  # torch.compile may take the network as one graph

    def __init__(self, dist: DistInfo, bf16: bool):
        self.dist = dist

    @property
    def collective_forward(self) -> bool:
        """Whether every process must run the model together (a sharded model gathers its weights
        in the forward pass), e.g. to generate samples after training."""
        return False

    def wrap(self, model: nn.Module, net: nn.Module) -> nn.Module:
        """The module the loop calls: ``net`` (``model`` or its compiled form), under DDP when several
        processes train."""
        return nn.parallel.DistributedDataParallel(net) if self.dist.world > 1 else net

    def shard(self, model: nn.Module) -> None:
        """Nothing to shard: the model stays whole."""

    @contextlib.contextmanager
    def accumulating(self, module: nn.Module, sync: bool) -> Iterator[None]:
        """A micro-batch whose gradients are reduced across processes only when ``sync``."""
        with contextlib.nullcontext() if sync or self.dist.world == 1 else module.no_sync():
            yield

    def full_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Full CPU copies of ``tensors`` (collective under FSDP2: every process calls it)."""
        return {k: _full(v) for k, v in tensors.items()}

    def model_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's weights as full CPU tensors, each stored once (tied weights once)."""
        return self.full_tensors(ck.module_tensors(model))

    def save_optimizer(self, model: nn.Module, opt: torch.optim.Optimizer, staging: Path) -> dict | None:
        """The optimizer state for ``state.pt`` (main process), or ``None`` when it was written
        sharded into ``staging`` instead."""
        return opt.state_dict()

    def load_model(self, model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
        ck.load_module(model, tensors, what)

    def load_like(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``full`` placed as ``like`` is (device; shards under FSDP2)."""
        return full.to(like.device)

    def load_optimizer(self, model: nn.Module, opt: torch.optim.Optimizer, folder: Path, state: dict) -> None:
        if (folder / OPTIMIZER_FOLDER).is_dir():  # written by an FSDP2 run: load it whole here
            _load_sharded_optimizer(model, opt, folder / OPTIMIZER_FOLDER)
        else:
            opt.load_state_dict(state["optimizer"])


class Sharded(Replicated):
    """FSDP2: every block, then the model, sharded over the processes (one process: not sharded,
    but the optimizer state is still saved in the sharded format, so the run can grow)."""

    fullgraph = False  # FSDP2's hooks split the graph

    def __init__(self, dist: DistInfo, bf16: bool):
        try:
            from torch.distributed.fsdp import fully_shard  # noqa: F401 (public from torch 2.6)
        except ImportError as e:
            raise ConfigError(f"train.strategy=fsdp needs PyTorch's FSDP2 (torch>=2.6), and this is torch "
                              f"{torch.__version__}: upgrade torch or set train.strategy=ddp") from e
        super().__init__(dist, bf16)
        self.bf16 = bf16

    @property
    def collective_forward(self) -> bool:
        return self.dist.world > 1

    def shard(self, model: nn.Module) -> None:
        if self.dist.world == 1:
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.bf16 \
            else MixedPrecisionPolicy()
        for trunk in [m for m in model.modules() if isinstance(m, Trunk)]:
            for block in trunk.blocks:
                fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)

    def wrap(self, model: nn.Module, net: nn.Module) -> nn.Module:
        return net

    def model_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.dist.world == 1:
            return super().model_tensors(model)
        return self.full_tensors(model.state_dict())  # sharded tensors: aliases are not told by address

    @contextlib.contextmanager
    def accumulating(self, module: nn.Module, sync: bool) -> Iterator[None]:
        if self.dist.world > 1:
            module.set_requires_gradient_sync(sync)
        yield

    def save_optimizer(self, model: nn.Module, opt: torch.optim.Optimizer, staging: Path) -> dict | None:
        if self.dist.main and staging.exists():
            shutil.rmtree(staging)
        barrier(self.dist)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        with _one_process_is_intended():
            dcp.save(get_optimizer_state_dict(model, opt), checkpoint_id=str(staging))
        barrier(self.dist)
        return None

    def load_model(self, model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
        if self.dist.world == 1:
            return super().load_model(model, tensors, what)
        expected = set(model.state_dict())
        if set(tensors) != expected:
            raise ck.CheckpointError(f"{what} does not match the model: {sorted(expected ^ set(tensors))[:5]}")
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True))

    def load_like(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if _is_dtensor(like):
            from torch.distributed.tensor import distribute_tensor

            return distribute_tensor(full.to(like.device), like.device_mesh, like.placements)
        return full.to(like.device)

    def load_optimizer(self, model: nn.Module, opt: torch.optim.Optimizer, folder: Path, state: dict) -> None:
        if not (folder / OPTIMIZER_FOLDER).is_dir():
            raise ck.CheckpointError(f"{folder} holds no sharded optimizer state ({OPTIMIZER_FOLDER}/): it was "
                                     "written with train.strategy=ddp; resume it with that strategy")
        _load_sharded_optimizer(model, opt, folder / OPTIMIZER_FOLDER)


def _load_sharded_optimizer(model: nn.Module, opt: torch.optim.Optimizer, folder: Path) -> None:
    """Load an optimizer state written by :meth:`Sharded.save_optimizer` into this process's model,
    however many processes wrote it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = get_optimizer_state_dict(model, opt)
    with _one_process_is_intended():
        dcp.load(state, checkpoint_id=str(folder))
    set_optimizer_state_dict(model, opt, state)


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """Silence torch.distributed.checkpoint's warning that it runs in a single process: a
    one-process run saves and loads the sharded format on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


STRATEGIES: Registry[type[Replicated]] = Registry("train.strategy")
STRATEGIES.register("ddp", Replicated)
STRATEGIES.register("fsdp", Sharded)
