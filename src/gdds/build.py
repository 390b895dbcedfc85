"""From a :class:`~gdds.config.Config` to the objects a run needs: tokenizer and
data blocks, schedule, kernel and forward process, and the denoiser.

Everything here is deterministic given the configuration, so a resumed run (or
another process of a DDP run) rebuilds exactly the same set-up, and
:meth:`Run.identity` lets a checkpoint check that it did.
"""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from . import kernels as K
from .config import Config, ConfigError, DataConfig, ModelConfig, ProcessConfig
from .data import (
    CompactTokenizer,
    CompactVocab,
    PackedBlocks,
    PaddedSentences,
    TextTokenizer,
    build_tokenizer,
    load_corpus,
    split_documents,
    tokenize_documents,
)
from .data.dataset import TokenArray
from .methods import Autoregressive, Campbell, ContinuousELBO, JumpState, Method, Snapshot
from .models import CausalLM, DiT, DiTConfig, TwoStream
from .process import ForwardProcess
from .schedules import SCHEDULES, Schedule

SPLITS = ("train", "valid", "test")


@dataclass
class Data:
    """Tokenizer (compact when configured), token arrays and blocks of every split."""

    tokenizer: TextTokenizer
    arrays: dict[str, TokenArray]
    blocks: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)


def build_data(dc: DataConfig, cache_dir: Optional[Path] = None) -> Data:
    """Load, split (by document), tokenize (cached) and pack the corpus."""
    docs = load_corpus(dc.corpus)
    split = split_documents(docs, dc.valid_fraction, dc.test_fraction, dc.split_seed)
    texts = {name: [docs[i] for i in split[name]] for name in SPLITS}
    base = build_tokenizer(dc.tokenizer, texts["train"], dc.bpe_vocab_size if dc.tokenizer == "bpe" else None)
    tokenizer: TextTokenizer = base
    notes: dict[str, Any] = {"documents": {n: len(texts[n]) for n in SPLITS}}
    if dc.compact_vocab:
        train_full = tokenize_documents(texts["train"], base, cache_dir)
        vocab = CompactVocab.fit([np.asarray(train_full.tokens)], base.special_ids(), base.vocab_size)
        if base.unk_id is None and dc.tokenizer in ("gpt2", "bpe"):
            # No unknown token to stand for ids unseen in training: take the id *set* of every
            # split (no statistics), so evaluation text is never altered.
            others = [np.asarray(tokenize_documents(texts[n], base, cache_dir).tokens) for n in ("valid", "test")]
            vocab = CompactVocab.fit([np.asarray(train_full.tokens), *others], base.special_ids(), base.vocab_size)
        tokenizer = CompactTokenizer(base, vocab, unk=base.unk_id is not None)
        notes["compact_vocab"] = {"size": vocab.size, "full_size": base.vocab_size}
    arrays = {name: tokenize_documents(texts[name], tokenizer, cache_dir) for name in SPLITS}
    if tokenizer.unk_id is not None:
        notes["unk_tokens"] = {n: int((np.asarray(arrays[n].tokens) == tokenizer.unk_id).sum()) for n in SPLITS}
    blocks = {name: pack_blocks(arrays[name], tokenizer, dc) for name in SPLITS}
    return Data(tokenizer, arrays, blocks, notes)


def pack_blocks(array: TokenArray, tok: TextTokenizer, dc: DataConfig) -> Any:
    """Blocks of ``array`` with the configured packing (``wrap`` or ``pad``)."""
    if dc.packing == "wrap":
        return PackedBlocks(array, dc.seq_len, tok.bos_id, tok.eos_id)
    if tok.pad_id is None:
        raise ConfigError(f"data.packing=pad needs a pad token; {tok.name} has none (use data.packing=wrap)")
    return PaddedSentences(array, dc.seq_len, tok.bos_id, tok.eos_id, tok.pad_id)


def build_schedule(pc: ProcessConfig) -> Schedule:
    cls = SCHEDULES[pc.schedule]
    try:
        return cls(**pc.schedule_args)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters]
        raise ConfigError(f"process.schedule_args {pc.schedule_args} do not fit {cls.__name__}; "
                          f"it accepts {accepted}") from exc


def _embeddings(pc: ProcessConfig, data: Data) -> torch.Tensor:
    """Token embeddings for the semantic kernel, rows aligned with the model's ids."""
    from .data import embeddings as E

    tok = data.tokenizer
    full_ids = tok.vocab.full_ids if isinstance(tok, CompactTokenizer) else None
    base_name = tok.base.name if isinstance(tok, CompactTokenizer) else tok.name
    if pc.embeddings == "minilm":
        if not base_name.startswith("wordpiece"):
            raise ConfigError(f"process.embeddings=minilm is aligned with the WordPiece vocabulary, not {base_name}; "
                              "use process.embeddings=cooccurrence or a file")
        emb = E.minilm_embeddings()
        return E.select_rows(emb, full_ids) if full_ids is not None else emb
    if pc.embeddings == "cooccurrence":
        train = data.arrays["train"]
        return E.cooccurrence_embeddings(np.asarray(train.tokens), tok.vocab_size, dim=pc.embedding_dim,
                                         offsets=train.offsets)
    path = Path(pc.embeddings)
    emb = E.checkpoint_embeddings(path) if path.is_dir() else E.load_embedding_file(path)
    if full_ids is not None and emb.shape[0] != tok.vocab_size:
        emb = E.select_rows(emb, full_ids)
    if emb.shape[0] != tok.vocab_size:
        raise ConfigError(f"embeddings {path} have {emb.shape[0]} rows, the vocabulary {tok.vocab_size}")
    return emb


def build_kernel(pc: ProcessConfig, schedule: Schedule, data: Data,
                 progress: bool = True) -> tuple[K.Kernel, dict[str, Any]]:
    """The jump kernel on the model's vocabulary and an identity record for checkpoints.
    Special tokens are excluded as jump destinations of the uniform and semantic kernels."""
    tok = data.tokenizer
    m, specials = tok.vocab_size, tok.special_ids()
    args = dict(pc.kernel_args)
    identity: dict[str, Any] = {"schedule": repr(schedule), "kernel": pc.kernel, "kernel_args": args}
    emb = None
    if pc.kernel == "semantic":
        emb = _embeddings(pc, data)
        identity["embeddings"] = pc.embeddings
        identity["embeddings_sha256"] = hashlib.sha256(emb.float().contiguous().numpy().tobytes()).hexdigest()
    try:
        if pc.kernel == "mask":
            kernel: K.Kernel = K.Mask(m, tok.mask_id, **args)
        elif pc.kernel == "uniform":
            kernel = K.Uniform(m, exclude=specials, **args)
        elif pc.kernel == "hybrid":
            kernel = K.Hybrid(m, tok.mask_id, **args)
        else:
            kernel = K.SemanticKNN(emb, schedule=schedule, exclude=specials, progress=progress, **args)
    except TypeError as exc:
        raise ConfigError(f"process.kernel_args {args} do not fit the {pc.kernel} kernel: {exc}") from exc
    identity["repr"] = repr(kernel)
    return kernel, identity


def build_model(mc: ModelConfig, vocab_size: int, max_len: int, method: str = "gdds") -> nn.Module:
    """The DiT denoiser; for ``method="ar"`` the same blocks as a causal LM, for
    ``method="campbell"`` the two-stream network of the same size."""
    overrides = {k: getattr(mc, k) for k in ("layers", "width", "heads", "cond_width", "dropout", "tie_weights")
                 if getattr(mc, k) is not None}
    try:
        config = DiTConfig.preset(mc.preset, vocab_size, max_len=max_len, causal=method == "ar", **overrides)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc
    return {"ar": CausalLM, "campbell": TwoStream}.get(method, DiT)(config)


@dataclass
class Run:
    """Everything a training or evaluation run needs, built from one configuration."""

    cfg: Config
    data: Data
    process: Optional[ForwardProcess]  # None for the autoregressive method
    model: nn.Module
    kernel_identity: dict[str, Any]

    @property
    def train(self) -> Any:
        return self.data.blocks["train"]

    @property
    def valid(self) -> Any:
        return self.data.blocks["valid"]

    @property
    def test(self) -> Any:
        return self.data.blocks["test"]

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed or evaluated with this set-up."""
        return {"method": self.cfg.method, "tokenizer": self.data.tokenizer.identity(),
                "data": self.cfg.to_dict()["data"], "process": self.kernel_identity,
                "model": self.model.config.to_dict()}

    def matches(self, saved: dict[str, Any]) -> bool:
        """Whether a checkpoint's stored identity is this set-up's. Fields added since the
        checkpoint was written (the method, model fields) count with their defaults."""
        saved = {"method": "gdds", **saved}
        try:
            saved["model"] = DiTConfig.from_dict(saved.get("model", {})).to_dict()
        except (TypeError, ValueError):
            return False
        return saved == self.identity()

    def save_tokenizer(self, folder: Path) -> None:
        self.data.tokenizer.save(folder)


def build_run(cfg: Config, device: torch.device, progress: bool = True) -> Run:
    """Data, process (on ``device``) and a freshly initialised model (seeded by ``cfg.seed``)."""
    data = build_data(cfg.data)
    process, identity = None, {"kernel": None}
    if cfg.method != "ar":
        schedule = build_schedule(cfg.process)
        kernel, identity = build_kernel(cfg.process, schedule, data, progress)
        process = ForwardProcess(schedule, kernel).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.tokenizer.vocab_size, cfg.data.seq_len, cfg.method)
    return Run(cfg, data, process, model, identity)


def build_method(run: Run) -> Method:
    """The training method of ``run.cfg.method`` (:mod:`gdds.methods`)."""
    if run.cfg.method == "ar":
        return Autoregressive()
    kind = {"elbo": ContinuousELBO, "jump": JumpState, "campbell": Campbell}.get(run.cfg.method, Snapshot)
    try:
        return kind(run.process, run.cfg.process.t_min)
    except ValueError as exc:
        raise ConfigError(f"method: {exc}") from exc
