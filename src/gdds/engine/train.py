"""The training loop: any method of :data:`gdds.objectives.METHODS` (the snapshot objective
by default), AdamW, warmup + cosine/constant LR,
clipping, accumulation, EMA, bf16 autocast on GPU, DDP through ``torchrun``,
periodic validation, verified atomic checkpoints and exact resume.

Reproducibility: batch ``s`` is a fixed function of ``(seed, s)`` (a per-epoch
permutation of the blocks), the noise (times and ``x_t``) of every micro-batch is
drawn for the **global** micro-batch from one generator that every process
advances identically, and each process trains on its shard; or, with
``train.noise_groups``, each group of the micro-batch from its own seed
(:func:`gdds.engine.steps.group_seed`), each process drawing only its groups. So a run does not
depend on the number of processes, and resuming restores exactly the state of an
uninterrupted run (weights, EMA, optimizer, RNG states, step).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.tokens.stream import StreamedBlocks
from ..files import write_text_atomically
from ..models.layers import Trunk
from ..objectives import NotGenerative
from . import checkpoint as ck
from .build import Run, build_run
from .config import Config, ConfigError, save_config
from .distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_flag,
    gather_objects,
    init_distributed,
    resolve_device,
    shutdown,
)
from .logs import RunLog
from .parallel import OPTIMIZER_FOLDER, STRATEGIES, gathered
from .records import TrainResult, Validation
from .resume import check_resumable
from .run_folder import claim
from .steps import (
    EMA,
    StopRequest,
    compiled,
    deterministic_mode,
    group_seed,
    lr_at,
    saved_device,
    step_rows,
    to_device,
)


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
        cuda = self.device.type == "cuda"
        self.model = self.run.model.to(self.device)
        self.method = self.run.method
        for module in self.model.modules():
            if isinstance(module, Trunk):
                module.checkpointing = tc.checkpointing
        if cuda and not tc.deterministic:  # TF32 matrix products for what runs outside bf16 autocast
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        use_bf16 = tc.precision == "bf16" or (tc.precision == "auto" and cuda)
        self.parallel = STRATEGIES.get(tc.strategy)(self.dist, use_bf16)
        self.parallel.shard(self.model)
        net = torch.compile(self.model, fullgraph=self.parallel.fullgraph) if compiled(tc.compile, self.device) \
            else self.model
        self.ddp = self.parallel.wrap(self.model, net)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        other = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=tc.lr, betas=(tc.beta1, tc.beta2), fused=cuda,
        )
        self.ema = EMA(self.model, tc.ema_decay) if tc.ema_decay > 0 else None
        self.noise = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1)
        self.step = 0
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        micro = tc.batch_size // tc.grad_accum
        if micro % self.dist.world:
            raise ConfigError(f"the micro-batch ({micro} = batch_size / grad_accum) must be divisible by the "
                              f"number of processes ({self.dist.world})")
        groups = tc.noise_groups
        if groups < 1 or micro % groups or (groups > 1 and groups % self.dist.world):
            raise ConfigError(f"train.noise_groups={groups} must divide the micro-batch ({micro}) and be a multiple "
                              f"of the number of processes ({self.dist.world}), or be 1")

    @property
    def streamed(self) -> bool:
        """Whether the training split is read on the fly (its position is saved with checkpoints)."""
        return isinstance(self.run.train, StreamedBlocks)

    # ---- one optimisation step -------------------------------------------------------------
    def _micro_loss(self, blocks: Any, rows: np.ndarray, generator: torch.Generator,
                    micro: int | None = None) -> tuple[torch.Tensor, int]:
        """This process's loss sum and token count on the micro-batch ``blocks[rows]`` (the
        method's per-token loss; padding is neither noised nor scored). With ``micro`` (its
        index in the step) and ``train.noise_groups > 1``, each group of the micro-batch draws from
        its own seed and this process draws only its groups; otherwise ``generator`` draws the
        whole micro-batch, identically on every process, and each keeps its shard."""
        inputs, x0, keep = self._inputs(blocks, rows, generator, micro)
        with torch.autocast(**self.autocast):
            logits = self.ddp(*self.method.model_args(inputs))
        loss = self.method.token_loss(logits, x0, inputs)
        if keep is None:
            return loss.sum(), loss.numel()
        return torch.where(keep, loss, 0.0).sum(), int(keep.sum())

    def _drawn(self, blocks: Any, rows: np.ndarray, generator: torch.Generator) -> tuple[Any, Any, Any]:
        x0 = to_device(blocks.batch(rows), self.device)
        keep = blocks.mask(rows)
        keep = None if keep is None else keep.to(self.device)
        return self.method.inputs(x0, generator, keep), x0, keep

    def _inputs(self, blocks: Any, rows: np.ndarray, generator: torch.Generator,
                micro: int | None) -> tuple[Any, torch.Tensor, torch.Tensor | None]:
        """The network's inputs, clean tokens and kept positions of this process's part."""
        groups = self.cfg.train.noise_groups
        if micro is None or groups == 1:
            inputs, x0, keep = self._drawn(blocks, rows, generator)
            shard = slice(self.dist.rank, None, self.dist.world)
            return [a[shard] for a in inputs], x0[shard], None if keep is None else keep[shard]
        per, mine = len(rows) // groups, range(self.dist.rank, groups, self.dist.world)
        parts = [self._drawn(blocks, rows[g * per:(g + 1) * per], torch.Generator(device=self.device).manual_seed(
                 group_seed(self.cfg.seed, self.step, micro, g))) for g in mine]
        keeps = [p[2] for p in parts]
        return (self.method.concat_inputs([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                None if keeps[0] is None else torch.cat(keeps))

    def train_step(self) -> dict[str, float]:
        tc = self.cfg.train
        rows = step_rows(self.run.train, self.step, tc.batch_size, self.cfg.seed)
        lr = lr_at(self.step, self.cfg)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total, count = torch.zeros((), device=self.device), 0
        for a, chunk in enumerate(np.array_split(rows, tc.grad_accum)):
            with self.parallel.accumulating(self.ddp, a == tc.grad_accum - 1):
                loss_sum, n = self._micro_loss(self.run.train, chunk, self.noise, a)
                # Each shard's mean, averaged over shards (DDP) and micro-batches = the global mean.
                (loss_sum / n / tc.grad_accum).backward()
            total += loss_sum.detach()
            count += n
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        grad_norm = gathered(grad_norm)
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
        """``num`` texts with EMA weights from the method's ``preview_sampler`` (diffusion: the APPROXIMATE
        renoise sampler; ``ar``: exact ancestral sampling); none for a model that cannot generate."""
        gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 3)
        self.model.eval()
        ctx, ids = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext(), None
        with contextlib.suppress(NotGenerative), ctx, torch.autocast(**self.autocast):
            ids = self.method.generate(self.model, num, self.cfg.data.seq_len, steps, gen,
                                       sampler=self.method.preview_sampler)
        self.model.train()
        return [] if ids is None else [self.run.data.tokenizer.decode(row.tolist()) for row in ids.cpu()]

    # ---- checkpoints ------------------------------------------------------------------------
    def cuda_rng_state(self) -> torch.Tensor | None:
        """This process's own CUDA RNG state (of its device only; ``None`` on CPU)."""
        return torch.cuda.get_rng_state(self.device).cpu() if self.device.type == "cuda" else None

    def save(self, cuda_rng: list[torch.Tensor | None] | None = None) -> Path | None:
        """Write a checkpoint: every process calls it (gathering sharded weights and writing the
        sharded optimizer state are collective), the main one writes the folder and returns it.
        ``cuda_rng``: every process's :meth:`cuda_rng_state`, in rank order (default: this one's)."""
        cuda_rng = [self.cuda_rng_state()] if cuda_rng is None else cuda_rng
        weights = self.parallel.model_tensors(self.model)
        ema = self.parallel.full_tensors(self.ema.shadow) if self.ema is not None else None
        staging = ck.checkpoint_root(self.run_dir) / f".tmp-{OPTIMIZER_FOLDER}-{self.step:08d}"
        if self.dist.main:
            staging.parent.mkdir(parents=True, exist_ok=True)
        optimizer = self.parallel.save_optimizer(self.model, self.opt, staging)
        if not self.dist.main:
            return None
        state = {
            "step": self.step,
            "optimizer": optimizer,
            "torch_rng": torch.get_rng_state(),
            "device": self.device.type,
            "cuda_rng": [] if self.device.type != "cuda" else cuda_rng,
            "noise_rng": self.noise.get_state(),
            "data_position": {"step": self.step, "blocks": len(self.run.train),
                              **({"stream": self.run.train.position()} if self.streamed else {})},
        }
        writers = {
            "model.safetensors": lambda p: ck.save_tensors(p, weights),
            "state.pt": lambda p: ck.save_torch(p, state),
            "config.yaml": lambda p: p.write_text(save_config(self.cfg)),
            "run.json": lambda p: p.write_text(json.dumps(self.run.identity(), indent=1)),
            "tokenizer": lambda p: self.run.data.tokenizer.save(p),
        }
        if ema is not None:
            writers["ema.safetensors"] = lambda p: ck.save_tensors(p, ema)
        if optimizer is None:  # written sharded by every process
            writers[OPTIMIZER_FOLDER] = lambda p: os.replace(staging, p)
        return ck.save_checkpoint(self.run_dir, self.step, writers, self.cfg.train.keep_checkpoints)

    def load(self, folder: Path) -> None:
        mismatch = self.run.mismatch(ck.read_json(folder / "run.json"))
        if mismatch:
            raise ck.CheckpointError(f"checkpoint {folder} was written for a different run set-up: {mismatch}")
        self.parallel.load_model(self.model, ck.load_tensors(folder / "model.safetensors"),
                                 f"{folder}/model.safetensors")
        if self.ema is not None:
            shadow = ck.load_tensors(folder / "ema.safetensors")
            if set(shadow) != set(self.ema.shadow):
                raise ck.CheckpointError(f"{folder}/ema.safetensors does not match the model's parameters")
            self.ema.shadow = {k: self.parallel.load_like(v, self.ema.shadow[k]) for k, v in shadow.items()}
        state = ck.load_torch(folder / "state.pt")
        saved = saved_device(state)
        if saved != self.device.type:
            raise ck.CheckpointError(
                f"checkpoint {folder} was written by a run on {saved}; its noise generator cannot continue on "
                f"{self.device.type} (a {saved} and a {self.device.type} generator draw different streams), so the "
                f"run would not continue the same run: resume it with train.device={saved}")
        self.parallel.load_optimizer(self.model, self.opt, folder, state)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda":
            # Each process takes its own rank's state; a process that the saving run did not have
            # (resumed on more GPUs) starts a stream of its own, seeded by (seed, rank).
            own = state["cuda_rng"][self.dist.rank] if self.dist.rank < len(state["cuda_rng"]) else None
            if own is not None and own.numel() == torch.cuda.get_rng_state(self.device).numel():
                torch.cuda.set_rng_state(own, self.device)
            else:
                torch.cuda.manual_seed(self.cfg.seed * 1000 + self.dist.rank)
        self.noise.set_state(state["noise_rng"])
        self.step = state["step"]
        if self.streamed:
            self.run.train.seek(state["data_position"]["stream"])


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
    determinism = torch.are_deterministic_algorithms_enabled()
    if cfg.train.deterministic:
        deterministic_mode(device)
    lock = None
    try:
        lock = claim(run_dir, resume, info)  # one process trains a run at a time; before any compute
        if resume:
            check_resumable(cfg, run_dir)
        trainer = Trainer(cfg, run_dir, build_run(cfg, device, progress=info.main), info, device)
        if info.main:  # what the data turned out to be: documents, tokens, vocabulary, unknown tokens
            write_text_atomically(run_dir / "data.json", json.dumps(trainer.run.data.notes, indent=1))
        if resume:
            trainer.load(ck.latest_checkpoint(run_dir))
        try:
            result = _loop(trainer)
        except RuntimeError as exc:
            if cfg.train.deterministic and "deterministic" in str(exc):
                raise ConfigError(f"train.deterministic=true: an operation has no deterministic implementation on "
                                  f"{device.type} ({str(exc).splitlines()[0]}); set train.deterministic=false "
                                  f"(noise, data order and resume stay exact; only floating-point reduction "
                                  f"order may vary)") from exc
            raise
        together = info.main or trainer.parallel.collective_forward  # a sharded model needs every process
        texts = trainer.generate(samples) if samples and together else []
        if info.main:
            result.checkpoint = str(ck.latest_checkpoint(run_dir))
            result.samples = texts
            result.sampler = trainer.method.sampler(trainer.method.preview_sampler).label
        return result
    finally:
        torch.use_deterministic_algorithms(determinism)
        trainer = None  # its DDP reducer must let go of the process group before the group goes (shutdown)
        shutdown(info)
        if lock is not None:
            lock.release()


def _loop(tr: Trainer) -> TrainResult:
    tc, main = tr.cfg.train, tr.dist.main
    log = RunLog(tr.run_dir, tc.log, tr.cfg.to_dict(), tr.step, None if tc.progress else tc.max_steps) if main else None
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
                    tr.save(gather_objects(tr.cuda_rng_state(), tr.dist))
                    barrier(tr.dist)
                if end and tr.step < tc.max_steps:
                    last.stopped_at = tr.step
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()
    return last
