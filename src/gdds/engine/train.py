"""The training loop: any method of :data:`gdds.objectives.METHODS` (the snapshot objective
by default), AdamW, warmup + cosine/constant LR,
clipping, accumulation, EMA, bf16 autocast on GPU, DDP through ``torchrun``,
periodic validation, verified atomic checkpoints and exact resume.

Reproducibility: batch ``s`` is a fixed function of ``(seed, s)`` (a per-epoch
permutation of the blocks), the noise (times and ``x_t``) of every micro-batch is
drawn for the **global** micro-batch from one generator that every process
advances identically, and each process trains on its shard. So a run does not
depend on the number of processes, and resuming restores exactly the state of an
uninterrupted run (weights, EMA, optimizer, RNG states, step).
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import write_text_atomically
from . import checkpoint as ck
from .build import Run, build_run
from .config import Config, ConfigError, apply_overrides, load_config, save_config
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    init_distributed,
    resolve_device,
    shutdown,
)
from .records import RunLog, TrainResult, Validation

RESUMABLE_KEYS = {"train.max_steps", "train.ckpt_every", "train.eval_every", "train.eval_batches",
                  "train.log_every", "train.keep_checkpoints", "train.progress", "train.device", "train.precision"}


class EMA:
    """Exponential moving average of the parameters: ``e <- d e + (1 - d) p``."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Temporarily load the averaged weights into ``model``."""
        saved = {n: p.detach().clone() for n, p in model.named_parameters()}
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(saved[n])


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
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    return perm[pos * batch:(pos + 1) * batch]


@dataclass
class Trainer:
    """The state of a training run (model, optimizer, EMA, noise generator, step) and its steps."""

    cfg: Config
    run_dir: Path
    run: Run
    dist: DistInfo
    device: torch.device

    def __post_init__(self) -> None:
        tc = self.cfg.train
        torch.manual_seed(self.cfg.seed)
        self.model = self.run.model.to(self.device)
        self.method = self.run.method
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model) if self.dist.world > 1 else self.model)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        other = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=False,
        )
        self.ema = EMA(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.noise = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        self.step = 0
        use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and self.device.type == "cuda")
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        micro = tc.batch_size // tc.grad_accum
        if micro % self.dist.world:
            raise ConfigError(f"the micro-batch ({micro} = batch_size / grad_accum) must be divisible by the "
                              f"number of processes ({self.dist.world})")

    # ---- one optimisation step -------------------------------------------------------------
    def _micro_loss(self, blocks: Any, rows: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """Draw the inputs of the global micro-batch of ``blocks[rows]`` (noise: identically on
        every process), train on this shard with the method's per-token loss; padding is
        neither noised nor scored."""
        x0_global = blocks.batch(rows).to(self.device)
        keep = blocks.mask(rows)
        keep = None if keep is None else keep.to(self.device)
        inputs = self.method.inputs(x0_global, generator, keep)
        shard = slice(self.dist.rank, None, self.dist.world)
        inputs = [a[shard] for a in inputs]
        with torch.autocast(**self.autocast):
            logits = self.ddp(*self.method.model_args(inputs))
        loss = self.method.token_loss(logits, x0_global[shard], inputs)
        if keep is None:
            return loss.sum(), loss.numel()
        keep = keep[shard]
        return torch.where(keep, loss, 0.0).sum(), int(keep.sum())

    def train_step(self) -> dict[str, float]:
        tc = self.cfg.train
        rows = batch_indices(self.step, len(self.run.train), tc.batch_size, self.cfg.seed)
        lr = lr_at(self.step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total, count = torch.zeros((), device=self.device), 0
        for a, chunk in enumerate(np.array_split(rows, tc.grad_accum)):
            sync = a == tc.grad_accum - 1 or self.dist.world == 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                loss_sum, n = self._micro_loss(self.run.train, chunk, self.noise)
                # Each shard's mean, averaged over shards (DDP) and micro-batches = the global mean.
                (loss_sum / n / tc.grad_accum).backward()
            total += loss_sum.detach()
            count += n
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        stats = torch.stack([total, torch.tensor(float(count), device=self.device)])
        all_reduce_sum(stats, self.dist)
        return {"loss": float(stats[0] / stats[1]), "metric": self.method.label, "lr": lr,
                "grad_norm": float(grad_norm), "processes": self.dist.world}

    # ---- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str = "valid") -> Validation:
        """The method's loss on the first ``eval_batches`` batches of a split, with fixed
        noise (EMA weights when enabled): the snapshot CE is not a likelihood (see
        :mod:`gdds.likelihood`); the autoregressive NLL is exact."""
        data = getattr(self.run, split)
        batch = self.cfg.train.batch_size // self.cfg.train.grad_accum
        n = min(len(data), batch * self.cfg.train.eval_batches)
        if n < self.dist.world:
            raise ConfigError(f"the {split} split has {len(data)} blocks: too few to evaluate")
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
        stats = torch.zeros(2, device=self.device)
        self.model.eval()
        ctx = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx:
            for start in range(0, n, batch):
                rows = np.arange(start, min(n, start + batch))
                loss_sum, count = self._micro_loss(data, rows, gen)
                stats += torch.stack([loss_sum, torch.tensor(float(count), device=self.device)])
        self.model.train()
        all_reduce_sum(stats, self.dist)
        return Validation(split, self.method.metric, float(stats[0] / stats[1]), self.method.label,
                          "ema" if self.ema is not None else "raw", int(stats[1]))

    @torch.no_grad()
    def generate(self, num: int, steps: int = 64) -> list[str]:
        """``num`` texts with EMA weights from the method's preview sampler
        (:meth:`gdds.objectives.Method.preview`: the APPROXIMATE renoise sampler for diffusion,
        exact ancestral sampling for ``ar``); none for a model that cannot generate."""
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 3)
        self.model.eval()
        ctx = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ctx, torch.autocast(**self.autocast):
            ids = self.method.preview(self.model, num, self.cfg.data.seq_len, steps, gen, self.device)
        self.model.train()
        return [] if ids is None else [self.run.data.tokenizer.decode(row.tolist()) for row in ids.cpu()]

    # ---- checkpoints ------------------------------------------------------------------------
    def save(self) -> Path:
        state = {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "noise_rng": self.noise.get_state(),
            "data_position": {"step": self.step, "blocks": len(self.run.train)},
        }
        writers = {
            "model.safetensors": lambda p: ck.save_tensors(p, ck.module_tensors(self.model)),
            "state.pt": lambda p: ck.save_torch(p, state),
            "config.yaml": lambda p: p.write_text(save_config(self.cfg)),
            "run.json": lambda p: p.write_text(json.dumps(self.run.identity(), indent=1)),
            "tokenizer": lambda p: self.run.data.tokenizer.save(p),
        }
        if self.ema is not None:
            writers["ema.safetensors"] = lambda p: ck.save_tensors(p, self.ema.shadow)
        return ck.save_checkpoint(self.run_dir, self.step, writers, self.cfg.train.keep_checkpoints)

    def load(self, folder: Path) -> None:
        saved = ck.read_json(folder / "run.json")
        if not self.run.matches(saved):
            raise ck.CheckpointError(f"checkpoint {folder} was written for a different run set-up "
                                     f"(tokenizer, vocabulary, process or model): {saved} != {self.run.identity()}")
        ck.load_module(self.model, ck.load_tensors(folder / "model.safetensors"), f"{folder}/model.safetensors")
        if self.ema is not None:
            shadow = ck.load_tensors(folder / "ema.safetensors")
            if set(shadow) != set(self.ema.shadow):
                raise ck.CheckpointError(f"{folder}/ema.safetensors does not match the model's parameters")
            self.ema.shadow = {k: v.to(self.device) for k, v in shadow.items()}
        state = ck.load_torch(folder / "state.pt")
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.noise.set_state(state["noise_rng"])
        self.step = state["step"]


def resume_config(run_dir: Path, overrides: list[str]) -> Config:
    """The configuration stored in the run's latest checkpoint, with the overrides that
    a resumed run may change (``train.max_steps``, intervals, device, precision)."""
    folder = ck.latest_checkpoint(run_dir)
    base = load_config(str(folder / "config.yaml"))
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(f"{key} cannot change when resuming (it would not continue the same run); "
                              f"resumable keys: {', '.join(sorted(RESUMABLE_KEYS))}")
    return Config.from_dict(apply_overrides(base.to_dict(), overrides))


def train(cfg: Config, run_dir: Path, resume: bool = False, samples: int = 0) -> TrainResult:
    """Train until ``train.max_steps``; return the last training and validation records,
    the checkpoint path and ``samples`` texts (:meth:`Trainer.generate`) with their sampler."""
    run_dir = Path(run_dir)
    try:
        device = resolve_device(cfg.train.device)
    except ValueError as exc:
        raise ConfigError(f"train.device: {exc}") from exc
    info = init_distributed(device)
    if info.world > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        if not resume and info.main and ck.list_checkpoints(run_dir):
            raise ConfigError(f"{run_dir} already holds a run with checkpoints; resume it with "
                              f"`gdds train --resume {run_dir}` or choose a new --out folder")
        barrier(info)
        trainer = Trainer(cfg, run_dir, build_run(cfg, device, progress=info.main), info, device)
        if resume:
            trainer.load(ck.latest_checkpoint(run_dir, clean=True))
        result = _loop(trainer)
        if info.main:
            result.checkpoint = str(ck.latest_checkpoint(run_dir))
            result.samples = trainer.generate(samples) if samples else []
            result.sampler = trainer.method.preview_sampler
        return result
    finally:
        shutdown(info)


def _loop(tr: Trainer) -> TrainResult:
    tc, main = tr.cfg.train, tr.dist.main
    if main:
        tr.run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(tr.run_dir) if main else None
    if main:
        write_text_atomically(tr.run_dir / "config.yaml", save_config(tr.cfg))
    bar = tqdm(total=tc.max_steps, initial=tr.step, disable=not (main and tc.progress),
               desc=f"train, loss = {tr.method.label}", unit="step")
    tokens_per_step = tc.batch_size * tr.cfg.data.seq_len
    last = TrainResult()
    tic, since = time.perf_counter(), 0
    try:
        with StopRequest() as stop:
            while tr.step < tc.max_steps:
                record = tr.train_step()
                bar.update(1)
                since += 1
                end = broadcast_flag(stop.requested, tr.dist, tr.device) or tr.step == tc.max_steps
                if tr.step % tc.log_every == 0 or end:
                    elapsed = time.perf_counter() - tic
                    record.update(step=tr.step, tokens_per_s=tokens_per_step * since / max(elapsed, 1e-9))
                    tic, since = time.perf_counter(), 0
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    last.train = {"kind": "train", **record}
                    if log is not None:
                        log.write(last.train)
                if tr.step % tc.eval_every == 0 or end:
                    last.valid = tr.evaluate("valid")
                    if log is not None:
                        log.write(last.valid.record(tr.step))
                if tr.step % tc.ckpt_every == 0 or end:
                    if main:
                        tr.save()
                    barrier(tr.dist)
                if end and tr.step < tc.max_steps:
                    last.stopped_at = tr.step
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()
    return last
