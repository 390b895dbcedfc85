"""Typed run configuration: dataclasses, YAML presets shipped in ``gdds/engine/configs``,
and ``dotted.key=value`` overrides (unknown keys are errors that list close matches).

Choice fields are ``Literal`` types whose values come from the registries that own the
concepts (:data:`gdds.objectives.METHODS`, :data:`gdds.kernels.KERNELS`,
:data:`gdds.SCHEDULES`, :data:`gdds.data.TOKENIZERS`, :data:`gdds.data.PACKINGS`,
:data:`gdds.models.PRESETS`, ...), and ``train.log``'s entries are checked against
:data:`gdds.engine.logs.LOGGERS`, so a new entry there is a valid configuration value here with
no other change."""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import itertools
import math
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ..data.tokenizers.registry import TOKENIZERS
from ..data.tokens.dataset import PACKINGS
from ..kernels.registry import KERNELS
from ..models import PRESETS, DiTConfig
from ..objectives.methods import METHODS
from ..objectives.parametrization import AUTO, PARAMETRIZATIONS
from ..schedules import SCHEDULES, Schedule
from .config_checks import MAX_SEED, MAX_SEQ_LEN, ConfigError, argument_error, check_ranges, parse_yaml, ranged
from .logs import LOGGERS
from .parallel import STRATEGIES

MethodName = Literal[METHODS.names()]
TokenizerName = Literal[TOKENIZERS.names()]
PackingName = Literal[PACKINGS.names()]
ScheduleName = Literal[SCHEDULES.names()]
KernelName = Literal[KERNELS.names()]
ParametrizationName = Literal[(AUTO, *PARAMETRIZATIONS.names())]
StrategyName = Literal[STRATEGIES.names()]
PresetName = Literal[PRESETS.names()]
PRESETS_PACKAGE = "gdds.engine.configs"


@dataclass
class DataConfig:
    """``data.*``: the corpus, its tokenizer and split, and how documents become blocks."""

    corpus: str = "shakespeare"
    """A name of gdds.data.corpora.recipes.CORPORA, a local file or folder, or hf:<name>[:<config>]."""
    corpus_args: dict = field(default_factory=dict)
    """The corpus's options (data_files, builder, valid_docs, path, split, ...; docs/data.md)."""
    tokenizer: TokenizerName = "wordpiece"
    """How text becomes ids."""
    bpe_vocab_size: int = ranged(4096, 260)  # 256 bytes + 4 specials (gdds.data.tokenizers.trained)
    """Vocabulary size of tokenizer=bpe (trained on the training split)."""
    compact_vocab: bool = True
    """Keep only the ids seen in the training split (plus specials) as model outputs."""
    seq_len: int = ranged(128, 3, MAX_SEQ_LEN)
    """Tokens per block: the model's length."""
    packing: PackingName = "wrap"
    """wrap: [BOS] doc [EOS] streams cut into blocks; pad: one document per block, padded."""
    valid_fraction: float = ranged(0.05, 0, 1, open_low=True, open_high=True)
    """Validation share of the hash split (embedded corpora and local files; recipes have their own)."""
    test_fraction: float = ranged(0.05, 0, 1, open_high=True)
    """Test share of the hash split."""
    split_seed: int = ranged(0, 0, MAX_SEED)
    """Seed of the hash split."""


@dataclass
class ProcessConfig:
    """``process.*``: the forward process (schedule, kernel, embeddings) and the training times."""

    schedule: ScheduleName = "loglinear"
    """The noise schedule alpha(t)."""
    schedule_args: dict = field(default_factory=lambda: {"eps": 1e-3})
    """The schedule's parameters (e.g. eps)."""
    kernel: KernelName = "semantic"
    """The jump kernel: where a token goes when it jumps."""
    kernel_args: dict = field(default_factory=dict)
    """The kernel's parameters (semantic: k, eps, b, teleport, ...; hybrid: uniform_weight)."""
    embeddings: str = "minilm"
    """Semantic kernel: minilm, cooccurrence, an embedding file or a run folder."""
    embedding_dim: int = ranged(64, 1)
    """Dimension of the cooccurrence embeddings."""
    embedding_tokens: int = ranged(50_000_000, 1)
    """Cooccurrence embeddings are computed from the first N training tokens."""
    t_min: float = ranged(1e-3, 0, 1, open_high=True)
    """Training times are drawn from U[t_min, 1]."""
    power_cache_gib: float = ranged(2.0, 0)
    """GiB of the kNN kernel's powers kept per token (semantic, b = 0) for the exact q_t; 0: none."""


@dataclass
class ModelConfig:
    """``model.*``: the network's size, a preset with optional overrides."""

    preset: PresetName = "tiny"
    """Network size (a name of gdds.models.PRESETS); the keys below override it when set."""
    layers: int | None = ranged(None, 1)
    """Transformer blocks (null: the preset's)."""
    width: int | None = ranged(None, 1)
    """Hidden width (null: the preset's)."""
    heads: int | None = ranged(None, 1)
    """Attention heads (null: the preset's)."""
    cond_width: int | None = ranged(None, 1)
    """Width of the time conditioning (null: the preset's)."""
    dropout: float | None = ranged(None, 0, 1, open_high=True)
    """Dropout rate (null: the preset's)."""
    tie_weights: bool | None = None
    """Share the input embedding and the output layer (null: the preset's)."""
    vocab_multiple: int | None = ranged(None, 1)
    """Pad the output layer to a multiple of this (128 on GPUs); the extra logits are never read."""
    parametrization: ParametrizationName = AUTO
    """How the output becomes mu (gdds.objectives.parametrization); auto: forward for non-absorbing kernels."""
    block_size: int | None = ranged(None, 1)
    """Diffusion inside blocks of this many tokens, autoregressive over them (gdds.models.block; null: none)."""


@dataclass
class TrainConfig:
    """``train.*``: optimisation, intervals, precision and device."""

    max_steps: int = ranged(1000, 1)
    """Optimizer steps of the run."""
    batch_size: int = ranged(32, 1)
    """Global batch: blocks per optimizer step, all processes together."""
    grad_accum: int = ranged(1, 1)
    """Micro-batches per step (batch_size must be a multiple)."""
    lr: float = ranged(3e-4, 0, open_low=True)
    """Peak learning rate (AdamW)."""
    min_lr: float = ranged(3e-5, 0)
    """Final learning rate of the cosine schedule."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """Learning rate after the linear warmup."""
    warmup_steps: int = ranged(100, 0)
    """Steps of linear warmup."""
    weight_decay: float = ranged(0.0, 0)
    """AdamW weight decay."""
    beta1: float = ranged(0.9, 0, 1, open_high=True)
    """AdamW beta1."""
    beta2: float = ranged(0.98, 0, 1, open_high=True)
    """AdamW beta2."""
    grad_clip: float = ranged(1.0, 0, math.inf, open_low=True)
    """Clip the gradient norm to this (.inf: no clipping)."""
    ema_decay: float = ranged(0.999, 0, 1, open_high=True)
    """Decay of the weights' exponential moving average (0 disables it)."""
    ckpt_every: int = ranged(500, 1)
    """Steps between checkpoints."""
    keep_checkpoints: int = ranged(2, 1)
    """Checkpoints kept (the oldest are removed)."""
    eval_every: int = ranged(250, 1)
    """Steps between validations (snapshot CE, not a likelihood)."""
    eval_batches: int = ranged(8, 1)
    """Validation batches per validation."""
    log_every: int = ranged(10, 1)
    """Steps between log records (and plain progress lines when the bar is off)."""
    log: list = field(default_factory=lambda: ["jsonl", "tensorboard"])
    """Where records go, names of gdds.engine.logs.LOGGERS: jsonl (log.jsonl), tensorboard, wandb (offline)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on the CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train (auto: a GPU when there is one)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms (resume is exact on the CPU anyway)."""
    compile: bool | None = None
    """torch.compile the network; null: on for CUDA, off on the CPU."""
    checkpointing: bool = False
    """Activation checkpointing of every block: less memory, one more forward."""
    strategy: StrategyName = "ddp"
    """Several processes: ddp (the whole model on each) or fsdp (FSDP2, sharded)."""
    noise_groups: int = ranged(1, 1)
    """Noise each micro-batch in this many groups, each with its own seed; each process draws only its own."""
    progress: bool = True
    """A progress bar (off: a plain line every log_every steps)."""


@dataclass
class Config:
    """A whole run: the seed, the training method and one section per part."""

    seed: int = ranged(0, 0, MAX_SEED)
    """Seed of the initialisation, the data order and the noise."""
    method: MethodName = "gdds"
    """gdds: the snapshot objective; elbo: continuous-time ELBO (MDLM, UDLM, GIDD); jump, campbell: path-wise; ar."""
    data: DataConfig = field(default_factory=DataConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and validate a configuration from a nested mapping."""
        if not isinstance(data, dict):
            raise ConfigError(f"a configuration must be a mapping, got {data!r}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} must be a mapping of its keys, got {value!r}")
                kwargs[key] = SECTIONS[key](**{k: _checked(SECTIONS[key], key, k, v) for k, v in value.items()})
            else:
                kwargs[key] = _checked(Config, "", key, value)
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check the ranges that the field types alone do not express (types and choices are
        checked field by field on the way in): each numeric key's :class:`Range`, the keys that
        depend on each other, the schedule and the network's shape, so that a bad value fails
        here, naming its key, and not after the data is tokenised or training has begun."""
        check_ranges(self)
        tc, dc = self.train, self.data
        if tc.batch_size % tc.grad_accum:
            raise ConfigError(f"train.batch_size ({tc.batch_size}) must be a multiple of "
                              f"train.grad_accum ({tc.grad_accum})")
        if tc.lr_schedule == "cosine" and tc.min_lr > tc.lr:
            raise ConfigError(f"train.min_lr ({tc.min_lr}) must not exceed train.lr ({tc.lr}): the cosine "
                              "schedule decays from train.lr to train.min_lr")
        if dc.valid_fraction + dc.test_fraction >= 1:
            raise ConfigError(f"data.valid_fraction + data.test_fraction must be below 1 (the rest is the "
                              f"training split); got {dc.valid_fraction} + {dc.test_fraction}")
        unknown = [name for name in tc.log if name not in LOGGERS]
        if unknown:
            raise ConfigError(f"train.log has {unknown}; its entries are {', '.join(LOGGERS.names())}")
        build_schedule(self.process)
        network_config(self.model, vocab_size=2, max_len=dc.seq_len, causal=False)


def build_schedule(pc: ProcessConfig) -> Schedule:
    """The schedule of ``process.schedule`` with ``process.schedule_args`` (errors name the key)."""
    cls = SCHEDULES.get(pc.schedule)
    try:
        return cls(**pc.schedule_args)
    except TypeError as exc:
        accepted = list(inspect.signature(cls).parameters)
        raise ConfigError(f"process.schedule_args {pc.schedule_args} do not fit {cls.__name__}; "
                          f"it accepts {accepted}") from exc
    except ValueError as exc:
        raise argument_error("process.schedule_args", pc.schedule_args, exc) or \
            ConfigError(f"process.schedule_args {pc.schedule_args}: {exc}") from exc


def network_config(mc: ModelConfig, vocab_size: int, max_len: int, causal: bool) -> DiTConfig:
    """The network's :class:`~gdds.models.DiTConfig`: ``model.preset`` with the ``model.*`` keys
    that are set (errors as :class:`ConfigError`, naming the key when the message names one)."""
    names = ("layers", "width", "heads", "cond_width", "dropout", "tie_weights", "vocab_multiple")
    overrides = {k: getattr(mc, k) for k in names if getattr(mc, k) is not None}
    try:
        return DiTConfig.preset(mc.preset, vocab_size, max_len=max_len, causal=causal, **overrides)
    except ValueError as exc:
        raise argument_error("model", {"preset": mc.preset, **overrides}, exc) or ConfigError(f"model: {exc}") \
            from exc


SECTIONS: dict[str, type] = {"data": DataConfig, "process": ProcessConfig, "model": ModelConfig,
                             "train": TrainConfig}


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a configuration dataclass."""
    return typing.get_type_hints(cls)


@functools.cache
def descriptions() -> dict[str, str]:
    """The one-line description of every dotted key: the docstring under its field in this module's
    source (each field of the configuration dataclasses has one; a test checks)."""
    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    prefix = {cls.__name__: f"{name}." for name, cls in SECTIONS.items()} | {Config.__name__: ""}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in prefix:
            for field_node, doc in itertools.pairwise(node.body):
                if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                        and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
                    out[prefix[node.name] + field_node.target.id] = " ".join(str(doc.value.value).split())
    return out


def all_keys() -> list[str]:
    """Every dotted key a configuration accepts (``seed``, ``train.max_steps``, ...)."""
    keys = [f.name for f in dataclasses.fields(Config) if f.name not in SECTIONS]
    for name, cls in SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def choices(cls: type, name: str) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` field, ``None`` for other fields."""
    kind = _types(cls)[name]
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `gdds train --help` for the keys"
    return ConfigError(f"unknown configuration key {key!r}{hint}")


def _checked(cls: type, section: str, name: str, value: Any) -> Any:
    """``value`` after checking that ``cls`` has field ``name`` and the value has its type
    (one of its choices for a ``Literal`` field)."""
    key = f"{section}.{name}" if section else name
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise _unknown(key)
    kind = _types(cls)[name]
    allowed = choices(cls, name)
    if allowed is not None:
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
        return value
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
        if value is None:
            return value
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    accepted = (int, float) if kind is float else (kind,)
    if not isinstance(value, accepted) or (kind in (int, float) and isinstance(value, bool)):
        article = "an" if kind is int else "a"
        raise ConfigError(f"{key} must be {article} {kind.__name__}{' or null' if optional else ''}; got {value!r}")
    return float(value) if kind is float else value


def preset_names(package: str = PRESETS_PACKAGE) -> list[str]:
    """Names of the YAML presets shipped inside ``package`` (default: the run presets)."""
    return sorted(p.name[:-5] for p in resources.files(package).iterdir() if p.name.endswith(".yaml"))


def read_yaml(name_or_path: str, package: str = PRESETS_PACKAGE, what: str = "configuration") -> dict[str, Any]:
    """A YAML mapping from a file, or the preset ``name_or_path`` shipped in ``package``; ``what`` names
    it in errors."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{what} file {path} does not exist")
        text: str | bytes = path.read_bytes()
    else:
        if name_or_path not in preset_names(package):
            raise ConfigError(f"no preset named {name_or_path!r}; presets: {', '.join(preset_names(package))}")
        text = resources.files(package).joinpath(f"{name_or_path}.yaml").read_text()
    data = parse_yaml(text, name_or_path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name_or_path}: a {what} must be a YAML mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a nested dict."""
    keys = set(all_keys())
    dict_keys = {k for k in keys if _key_type(k) is dict}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like dotted.key=value (e.g. train.max_steps=100)")
        key, raw = item.split("=", 1)
        key = key.strip()
        inside_dict = any(key.startswith(k + ".") for k in dict_keys)
        if key not in keys and not inside_dict:
            raise _unknown(key)
        value = parse_yaml(raw, f"override {item!r}") if raw.strip() else None
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key}: {part} is not a mapping")
        node[parts[-1]] = value
    return data


def _key_type(key: str) -> Any:
    section, _, name = key.rpartition(".")
    return _types(SECTIONS[section] if section else Config)[name]


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    """A preset name (``tiny``, ``demo``, ...) or a YAML path, with overrides applied."""
    return Config.from_dict(apply_overrides(read_yaml(name_or_path), overrides))


def save_config(cfg: Config) -> str:
    """The configuration as YAML text (round-trips through :func:`Config.from_dict`)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
