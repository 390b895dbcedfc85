"""Run configuration: presets, overrides, typed errors with close matches, every numeric key's range."""
import dataclasses
import math
import typing
from types import SimpleNamespace

import pytest
import torch

from gdds.engine.build import build_kernel
from gdds.engine.config import (
    SECTIONS,
    Config,
    ConfigError,
    all_keys,
    build_schedule,
    load_config,
    preset_names,
    save_config,
)


def test_presets_load_and_round_trip():
    names = preset_names()
    assert {"tiny", "demo", "small"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert Config.from_dict(cfg.to_dict()) == cfg
        import yaml

        assert Config.from_dict(yaml.safe_load(save_config(cfg))) == cfg


def test_overrides_apply_and_parse_values():
    cfg = load_config("tiny", ["train.max_steps=7", "seed=3", "data.seq_len=64", "model.width=96",
                               "process.kernel_args.k=8", "train.lr=1e-3", "data.compact_vocab=false"])
    assert (cfg.train.max_steps, cfg.seed, cfg.data.seq_len, cfg.model.width) == (7, 3, 64, 96)
    assert cfg.process.kernel_args["k"] == 8 and cfg.train.lr == 1e-3 and cfg.data.compact_vocab is False
    assert {"seed", "train.max_steps", "train.batch_size", "train.ckpt_every", "data.seq_len", "model.layers",
            "model.width"} <= set(all_keys())


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train.max_step=5"], r"unknown configuration key 'train.max_step'; did you mean train.max_steps"),
        (["model.widht=5"], "did you mean model.width"),
        (["train.max_steps=abc"], "train.max_steps must be an int"),
        (["train.max_steps=true"], "train.max_steps must be an int"),
        (["train.max_steps=0"], "train.max_steps must be at least 1"),
        (["train.lr=fast"], "train.lr must be a float"),
        (["data.packing=zip"], "data.packing must be one of wrap, pad"),
        (["process.kernel=gaussian"], "process.kernel must be one of"),
        (["train.batch_size=10", "train.grad_accum=3"], "multiple of train.grad_accum"),
        (["train.max_steps"], "dotted.key=value"),
        (["process.t_min=1.5"], r"process.t_min must be in \[0, 1\)"),
    ],
)
def test_bad_overrides_raise(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", overrides)


def test_bad_preset_and_file(tmp_path):
    with pytest.raises(ConfigError, match="no preset named 'tinyy'; presets:"):
        load_config("tinyy")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ConfigError, match="did you mean train.max_steps"):
        load_config(str(bad))


# Each value a configuration must refuse, and the key its message must name (D4, D6 of the
# reliability report: before, several trained silently or failed in torch's words, naming no key).
REJECTED = [
    (["train.grad_clip=-1"], "train.grad_clip"), (["train.grad_clip=0"], "train.grad_clip"),
    (["train.weight_decay=-1"], "train.weight_decay"), (["train.min_lr=-0.01"], "train.min_lr"),
    (["train.lr=0.00001"], "train.min_lr"),  # the tiny preset's min_lr is 1e-4: the cosine would climb
    (["train.warmup_steps=-5"], "train.warmup_steps"), (["train.lr=-1"], "train.lr"), (["train.lr=0"], "train.lr"),
    (["train.lr=.nan"], "train.lr"), (["train.lr=.inf"], "train.lr"), (["train.beta1=1.5"], "train.beta1"),
    (["train.beta1=-0.1"], "train.beta1"), (["train.beta2=1"], "train.beta2"),
    (["train.ema_decay=1"], "train.ema_decay"), (["train.ema_decay=-0.5"], "train.ema_decay"),
    (["train.eval_batches=0"], "train.eval_batches"),
    (["train.noise_groups=0"], "train.noise_groups"), (["train.grad_accum=0"], "train.grad_accum"),
    (["train.keep_checkpoints=0"], "train.keep_checkpoints"), (["train.log_every=0"], "train.log_every"),
    (["data.valid_fraction=1.5"], "data.valid_fraction"), (["data.valid_fraction=0"], "data.valid_fraction"),
    (["data.test_fraction=-0.1"], "data.test_fraction"),
    (["data.valid_fraction=0.5", "data.test_fraction=0.5"], "data.valid_fraction + data.test_fraction"),
    (["data.seq_len=100000000"], "data.seq_len"), (["data.seq_len=2"], "data.seq_len"),
    (["data.bpe_vocab_size=10"], "data.bpe_vocab_size"), (["data.split_seed=-1"], "data.split_seed"),
    (["process.embedding_dim=0"], "process.embedding_dim"),
    (["process.embedding_tokens=0"], "process.embedding_tokens"),
    (["process.t_min=-0.1"], "process.t_min"), (["seed=-1"], "seed"), (["seed=4294967296"], "seed"),
    (["process.schedule_args={eps: 2}"], "process.schedule_args.eps"),
    (["process.schedule=exponential", "process.schedule_args={c: -1}"], "process.schedule_args.c"),
    (["process.schedule_args={epz: 0.1}"], "process.schedule_args"),
    (["model.layers=0"], "model.layers"), (["model.width=-1"], "model.width"), (["model.heads=0"], "model.heads"),
    (["model.cond_width=0"], "model.cond_width"), (["model.dropout=1"], "model.dropout"),
    (["model.vocab_multiple=0"], "model.vocab_multiple"), (["model.heads=7"], "model.heads: "),
    (["model.preset=huge"], "model.preset must be one of tiny, small, medium"),
]


@pytest.mark.parametrize("overrides,key", REJECTED, ids=[" ".join(o) for o, _ in REJECTED])
def test_each_bad_value_is_refused_naming_its_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides)
    assert str(info.value).startswith(key), str(info.value)


def test_every_numeric_key_has_a_range_and_the_edges_are_accepted():
    for key in all_keys():
        section, _, name = key.rpartition(".")
        cls = SECTIONS[section] if section else Config
        kind = typing.get_type_hints(cls)[name]
        if {int, float} & {kind, *typing.get_args(kind)}:
            assert "range" in next(f for f in dataclasses.fields(cls) if f.name == name).metadata, key
    cfg = load_config("tiny", ["train.grad_clip=.inf", "train.weight_decay=0", "train.min_lr=0", "train.warmup_steps=0",
                               "train.beta1=0", "train.ema_decay=0", "data.test_fraction=0", "data.seq_len=3",
                               "seed=4294967295", "train.lr_schedule=constant", "train.lr=0.00001"])
    assert cfg.train.grad_clip == math.inf and cfg.train.lr == 1e-5  # min_lr > lr is harmless without the cosine


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "syn.yaml"
    bad.write_text("train:\n  lr: 0.001\n  max_steps: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{bad}: invalid YAML at line 4, column 1: .*flow sequence"):
        load_config(str(bad))
    (tmp_path / "latin1.yaml").write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml: invalid YAML"):
        load_config(str(tmp_path / "latin1.yaml"))
    with pytest.raises(ConfigError, match=r"override 'train.lr=\[1,': invalid YAML at line 1"):
        load_config("tiny", ["train.lr=[1,"])


def test_kernel_arguments_name_their_key():
    """The kernel's arguments are checked where the kernel is built (k is bounded by the vocabulary);
    the kernel's own message is kept, behind the key."""
    tokenizer = SimpleNamespace(vocab_size=20, mask_id=19, special_ids=lambda: [19])
    data, emb = SimpleNamespace(tokenizer=tokenizer), torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    for kernel, args, key in [("semantic", "{k: 0}", "process.kernel_args.k: k must be in"),
                              ("semantic", "{k: -3, b: 0.2}", "process.kernel_args.k: k must be in"),
                              ("hybrid", "{uniform_weight: 2}", "process.kernel_args.uniform_weight: uniform_weight")]:
        pc = load_config("tiny", [f"process.kernel={kernel}", f"process.kernel_args={args}",
                                  "process.embeddings=cooccurrence"]).process  # not MiniLM's: 20 tokens
        with pytest.raises(ConfigError, match=key):
            build_kernel(pc, build_schedule(pc), data, progress=False, embeddings=emb)
