"""Run configuration: presets, overrides, typed errors with close matches."""
import pytest

from gdds.engine.config import Config, ConfigError, all_keys, load_config, preset_names, save_config


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
