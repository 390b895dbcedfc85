"""From a :class:`~gdds.engine.config.Config` to the objects a run needs (tokenizer and data
blocks, schedule, kernel and forward process, the training method and its network), and
back from a finished run's checkpoint (:func:`load_run`).

Everything here is deterministic given the configuration, so a resumed run (or
another process of a DDP run) rebuilds exactly the same set-up, and
:meth:`Run.identity` lets a checkpoint check that it did.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Blocks, CompactTokenizer, TextTokenizer, WordPieceTokenizer
from ..data import embeddings as E
from ..kernels import KERNELS, Kernel, Vocabulary
from ..minilm import minilm_kernel, minilm_rows
from ..models import BlockDiT, DiTConfig
from ..objectives import METHODS, Method
from ..process import ForwardProcess
from ..registry import Registry
from ..samplers import CAUSAL, DENOISER
from ..sampling import BlockDenoiser, Denoiser, map_network
from ..schedules import Schedule
from . import checkpoint as ck
from .config import (
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    ProcessConfig,
    build_schedule,
    load_config,
    network_config,
)
from .config_checks import argument_error
from .corpus import Data, build_data, cooccurrence
from .distributed import resolve_device
from .legacy import EXACT_MARK, as_saved, upgraded


def _full_ids(tok: TextTokenizer) -> np.ndarray | None:
    """The full-vocabulary id of each model id under a compact vocabulary (``None`` without one)."""
    return tok.vocab.full_ids if isinstance(tok, CompactTokenizer) else None


def _require_wordpiece(tok: TextTokenizer) -> None:
    """MiniLM's embeddings and its kernel's excluded ids are WordPiece's: refuse any other tokenizer."""
    base = tok.base if isinstance(tok, CompactTokenizer) else tok
    if not isinstance(base, WordPieceTokenizer):
        raise ConfigError(f"process.embeddings=minilm is aligned with the WordPiece vocabulary, not {base.name}; "
                          "use process.embeddings=cooccurrence or a file")


def _minilm(pc: ProcessConfig, data: Data) -> torch.Tensor:
    _require_wordpiece(data.tokenizer)
    return minilm_rows(_full_ids(data.tokenizer))


# Named sources of ``process.embeddings``; any other value is the path of a file or a run folder.
EMBEDDINGS: Registry[Callable[[ProcessConfig, Data], torch.Tensor]] = Registry("embedding source")
EMBEDDINGS.register("minilm", _minilm)
EMBEDDINGS.register("cooccurrence", cooccurrence)


def kernel_embeddings(pc: ProcessConfig, data: Data) -> torch.Tensor:
    """Token embeddings for the semantic kernel, rows aligned with the model's ids."""
    if pc.embeddings in EMBEDDINGS:
        return EMBEDDINGS.get(pc.embeddings)(pc, data)
    tok, path = data.tokenizer, Path(pc.embeddings)
    emb = ck.checkpoint_embeddings(path) if path.is_dir() else E.load_embedding_file(path)
    if _full_ids(tok) is not None and emb.shape[0] != tok.vocab_size:
        emb = E.select_rows(emb, _full_ids(tok))
    if emb.shape[0] != tok.vocab_size:
        raise ConfigError(f"embeddings {path} have {emb.shape[0]} rows, the vocabulary {tok.vocab_size}")
    return emb


def build_kernel(pc: ProcessConfig, schedule: Schedule, data: Data, progress: bool = True,
                 embeddings: torch.Tensor | None = None) -> tuple[Kernel, dict[str, Any]]:
    """The jump kernel of ``process.kernel`` (:data:`gdds.kernels.KERNELS`) on the model's
    vocabulary and an identity record for checkpoints. Special tokens are never a jump
    destination of the uniform and semantic kernels; on MiniLM's embeddings the semantic kernel is
    :func:`gdds.minilm.minilm_kernel`'s, which also keeps jumps off the ``[unusedN]`` tokens."""
    tok = data.tokenizer
    recipe = KERNELS.get(pc.kernel)
    args = dict(pc.kernel_args)
    identity: dict[str, Any] = {"schedule": repr(schedule), "kernel": pc.kernel, "kernel_args": args}
    emb = None
    if recipe.needs_embeddings:
        emb = kernel_embeddings(pc, data) if embeddings is None else embeddings
        identity["embeddings"] = pc.embeddings
        identity["embeddings_sha256"] = hashlib.sha256(emb.float().contiguous().numpy().tobytes()).hexdigest()
    on_minilm = pc.embeddings == "minilm" and recipe.needs_embeddings
    if on_minilm:
        _require_wordpiece(tok)
    try:
        if on_minilm:
            kernel = minilm_kernel(schedule, full_ids=_full_ids(tok), kernel=pc.kernel, embeddings=emb,
                                   progress=progress, **args)
        else:
            vocabulary = Vocabulary(tok.vocab_size, tok.mask_id, tuple(tok.special_ids()))
            kernel = recipe.build(vocabulary, schedule, emb, progress, **args)
    except TypeError as exc:
        raise ConfigError(f"process.kernel_args {args} do not fit the {pc.kernel} kernel: {exc}") from exc
    except ValueError as exc:
        named = argument_error("process.kernel_args", args, exc)
        if named is None:
            raise
        raise named from exc
    identity["repr"] = repr(kernel)
    return kernel, identity


def build_model(mc: ModelConfig, vocab_size: int, max_len: int, method: type[Method]) -> nn.Module:
    """The network of ``method`` (:attr:`Method.network`: the DiT denoiser, the causal LM on
    the same blocks, the two-stream network) at the configured size; with ``model.block_size`` the
    block-diffusion network (:class:`gdds.models.BlockDiT`, ``docs/block.md``), for the methods that
    train it and blocks that tile ``max_len`` (``data.seq_len``)."""
    config = network_config(mc, vocab_size, max_len, method.causal)
    if mc.block_size is None:
        return method.network(config)
    try:
        method.check_block_size(mc.block_size)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if max_len % mc.block_size:
        raise ConfigError(f"model.block_size={mc.block_size} must divide data.seq_len={max_len}: block diffusion "
                          f"trains on whole blocks; set data.seq_len to a multiple of {mc.block_size} or choose a "
                          f"block size that divides {max_len}")
    return BlockDiT(config, mc.block_size)


@dataclass
class Run:
    """Everything a training or evaluation run needs, built from one configuration."""

    cfg: Config
    data: Data
    process: ForwardProcess | None  # None for methods that do not noise (autoregressive)
    model: nn.Module
    method: Method
    kernel_identity: dict[str, Any]

    @property
    def train(self) -> Blocks:
        return self.data.split("train")

    @property
    def valid(self) -> Blocks:
        return self.data.split("valid")

    @property
    def test(self) -> Blocks:
        return self.data.split("test")

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed or evaluated with this set-up."""
        exact = EXACT_MARK if self.method.parametrization == "forward" else {}
        if self.method.block_size is not None:  # the same weights as a DiT's: only this tells them apart
            exact = {**exact, "block_size": self.method.block_size}
        return {"method": self.cfg.method, "tokenizer": self.data.tokenizer.identity(),
                "data": self.cfg.to_dict()["data"], "process": self.kernel_identity,
                "model": self.model.config.to_dict(), "parametrization": self.method.parametrization, **exact}

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """What differs between a checkpoint's (or model folder's) stored identity and this set-up's,
        one ``"field: stored A, rebuilt B"`` line per differing leaf (empty: the same set-up). Fields
        added since the checkpoint was written count with the value they had then (method gdds, model
        fields at their defaults, the mean parametrization, and the defaults of :mod:`gdds.engine.legacy`)."""
        saved = {"method": "gdds", "parametrization": "mean", **upgraded(saved)}
        saved["data"] = {**dataclasses.asdict(DataConfig()), **saved.get("data", {})}
        try:
            saved["model"] = DiTConfig.from_dict(saved.get("model", {})).to_dict()
        except (TypeError, ValueError) as err:
            return [f"model: stored {saved.get('model')} is not a network configuration of this version ({err})"]
        return [f"{key}: stored {a!r}, rebuilt {b!r}" for key, a, b in leaf_differences(saved, self.identity())]

    def mismatch(self, saved: dict[str, Any]) -> str:
        """:meth:`differences` as one sentence, empty when there are none; differing
        ``embeddings_sha256`` adds that the kernel's embeddings are not those the run was trained on."""
        differences = self.differences(saved)
        hint = ("; the kernel's embeddings are not the ones the run was trained on (another gdds version or "
                "corpus built them)") if any(d.startswith("process.embeddings_sha256") for d in differences) else ""
        return "; ".join(differences) + hint


def leaf_differences(first: Any, second: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted path, first's value, second's value)`` for every leaf where two nested dictionaries differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        return [item for key in sorted(set(first) | set(second), key=str)
                for item in leaf_differences(first.get(key), second.get(key), f"{path}.{key}" if path else str(key))]
    return [] if first == second else [(path, first, second)]


def build_run(cfg: Config, device: torch.device, progress: bool = True) -> Run:
    """Data, process (on ``device``), the training method and a freshly initialised model
    (seeded by ``cfg.seed``)."""
    return assemble(cfg, build_data(cfg.data, progress=progress), device, progress)


def assemble(cfg: Config, data: Data, device: torch.device, progress: bool = True,
             embeddings: torch.Tensor | None = None) -> Run:
    """A run on ``data`` (only its tokenizer is used, and its data for the kernel's embeddings unless
    ``embeddings`` are given, as a model folder gives them)."""
    method_cls = METHODS.get(cfg.method)
    process, identity = None, {"kernel": None}
    if method_cls.noised:
        schedule = build_schedule(cfg.process)
        kernel, identity = build_kernel(cfg.process, schedule, data, progress, embeddings)
        process = ForwardProcess(schedule, kernel, int(cfg.process.power_cache_gib * 2**30)).to(device)
        process.keep_frequent_powers(data.unigram_counts())  # the budget goes to the most frequent clean tokens
    try:
        method = method_cls(process, cfg.process.t_min, cfg.model.parametrization, cfg.model.block_size)
    except ValueError as exc:
        raise ConfigError(f"method: {exc}") from exc
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len, method_cls)
    return Run(cfg, data, process, model, method, identity)


@dataclass
class LoadedRun:
    """A trained run rebuilt from a checkpoint, its weights loaded, in eval mode."""

    cfg: Config
    run: Run
    checkpoint: Path
    weights: str
    device: torch.device

    @property
    def method(self) -> Method:
        return self.run.method

    def sample_length(self, length: int | None, option: str) -> int:
        """``length`` (default: the training length) when the network has positions for it, or any positive
        length for a block-diffusion model (it slides a window beyond: :mod:`gdds.block_sampling`); else
        a :class:`ConfigError` naming ``option`` (``--length``, ``--sample-length``, ``length``)."""
        longest = self.run.model.config.max_len
        if length is None:
            return longest
        if self.method.block_size is not None and length >= 1:
            return length
        if not 1 <= length <= longest:
            raise ConfigError(f"{option} must be in [1, {longest}]; got {length}: the model was trained with "
                              f"data.seq_len={longest}, and its network has no positions beyond (for longer texts, "
                              "train a model with a larger data.seq_len)")
        return length

    @property
    def half(self) -> bool:
        """Whether networks run in bf16 here (on a GPU: the denoiser under autocast, the judge)."""
        return self.device.type == "cuda"

    def precision(self, source: str) -> AbstractContextManager[Any]:
        """How the network runs for a sampler of ``source`` (:attr:`gdds.samplers.Sampler.source`): under bf16
        autocast on a GPU for the denoiser (the bound's function, :meth:`denoiser`) and for a sampler that
        calls the network itself (the block sampler: its bound reads the same network through the
        denoiser), so that samples and bound use one function; in float32 for an autoregressive model,
        whose exact NLL is computed in float32; on the CPU always in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.half and source != CAUSAL)

    def denoiser(self) -> Denoiser:
        """The model as a denoiser ``(x_t, t) -> float32 logits`` on the run's device, under bf16
        autocast on a GPU (the sampler and the bound take the softmax in float64, and both use this
        same function); :class:`gdds.objectives.NotGenerative` for a model that has none. The
        forward-likelihood parametrization stays a :class:`~gdds.sampling.LikelihoodWeighted` around
        the network, so that the reverse step weights it by the ``q_t`` it computes anyway, and a block
        model's stays a :class:`~gdds.sampling.BlockDenoiser` (its clean context moved to the device too)."""
        net = self.method.denoiser(self.run.model)

        def on_device(fn: Denoiser) -> Denoiser:
            def call(xt: torch.Tensor, t: torch.Tensor, *context: torch.Tensor) -> torch.Tensor:
                with self.precision(DENOISER):
                    return fn(xt.to(self.device), t.to(self.device, torch.float32),
                              *(c.to(self.device) for c in context)).float()

            return BlockDenoiser(call, fn.block_size) if isinstance(fn, BlockDenoiser) else call

        return map_network(net, on_device)


def load_run(run_dir: Path, weights: str = "ema", device: str = "auto",
             checkpoint: Path | None = None) -> LoadedRun:
    """Rebuild a run's set-up from its latest checkpoint (or ``checkpoint``, a
    ``step-*`` folder) and load its weights (``ema`` when the run kept an EMA, else ``raw``)."""
    folder = ck.latest_checkpoint(Path(run_dir)) if checkpoint is None else Path(checkpoint)
    ck.verify_checkpoint(folder)
    saved = ck.read_json(folder / "run.json")
    cfg = as_saved(load_config(str(folder / "config.yaml")), saved)
    dev = resolve_device(device)
    run = build_run(cfg, dev, progress=False)
    mismatch = run.mismatch(saved)
    if mismatch:
        raise ck.CheckpointError(f"{folder} was written for a different set-up than this installation rebuilds: "
                                 f"{mismatch}")
    name = "ema.safetensors" if weights == "ema" and (folder / "ema.safetensors").is_file() else "model.safetensors"
    ck.load_module(run.model, ck.load_tensors(folder / name), f"{folder}/{name}")
    run.model.to(dev).eval()
    return LoadedRun(cfg, run, folder, "ema" if name.startswith("ema") else "raw", dev)
