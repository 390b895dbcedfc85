"""transformers from a model folder: ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` gives
gdds's denoiser logits and ``AutoTokenizer.from_pretrained(folder)`` gives gdds's ids, offline and
without gdds's code (the folder's own configuration_gdds.py / modeling_gdds.py); the templates are held
to :class:`gdds.models.DiT` on a deeper, tied, padded network."""
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

import gdds
from gdds.cli import main
from gdds.engine.hf_files import PushError, push_folder
from gdds.engine.model_files import ModelFolderError
from gdds.models import DiT, DiTConfig
from helpers import micro_run

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))


def random_inputs(vocab: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (3, length), generator=gen), torch.rand(3, generator=gen)


@pytest.mark.parametrize("compact", [False, True])
def test_automodel_and_autotokenizer_equal_gdds(tmp_path, compact):
    """Characters, full vocabulary; WordPiece, compact (model ids are not tokenizer.json's)."""
    vocab = ["data.tokenizer=wordpiece", "data.compact_vocab=true"] if compact else []
    run = micro_run(tmp_path, "train.max_steps=3", *vocab)
    assert main(["export", str(run), str(tmp_path / "model")]) == 0
    folder = tmp_path / "model"
    meta = json.loads((folder / "config.json").read_text())
    assert meta["auto_map"]["AutoModel"] == "modeling_gdds.GddsModel" and meta["model_type"] == "gdds"
    assert {"modeling_gdds.py", "configuration_gdds.py", "tokenizer_config.json"} <= set(meta["files"])
    model = gdds.load(folder)  # gdds's own reading, hashes verified
    network = model.loaded.run.model.float().eval()
    hf = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True).float().eval()
    assert type(hf).__module__ != DiT.__module__ and "gdds" not in type(hf).__module__.split(".")[0]
    xt, t = random_inputs(meta["vocab_size"], meta["seq_len"])
    with torch.no_grad():
        torch.testing.assert_close(hf(xt, t), network(xt, t), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hf(xt[:, :7], 0.25), network(xt[:, :7], 0.25), atol=1e-5, rtol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # config.json has auto_map
    text = "to be or not to be, that is the question"
    ids = hf.model_ids(tok(text).input_ids).tolist()
    assert ids == model.tokenizer.encode(text) and (ids != tok(text).input_ids) == compact
    specials = hf.model_ids([tok.mask_token_id, tok.eos_token_id]).tolist()
    assert specials == [model.tokenizer.mask_id, model.tokenizer.eos_id]
    if compact:
        with pytest.raises(ValueError, match="not in the model's compact vocabulary"):
            hf.model_ids([max(meta["compact_full_ids"]) + 1])
    without_gdds = ("import sys; sys.modules['gdds'] = None; import torch, transformers; "
                    "m = transformers.AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True); "
                    "print(m(torch.tensor([[1, 2, 3]]), 0.5).shape)")
    done = subprocess.run([sys.executable, "-c", without_gdds, str(folder)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0 and f"[1, 3, {meta['vocab_size']}]" in done.stdout, done.stderr
    card = (folder / "README.md").read_text()
    assert "AutoModel.from_pretrained(\"MODEL_DIR\", trust_remote_code=True)" in card
    docs = Path(__file__).parents[2] / "docs" / "model-folders.md"  # its python block, run here
    for page, name in ((card, "MODEL_DIR"), (docs.read_text(), "OUT_DIR")):
        block = re.search(r"```python\n(from transformers.*?)```", page, flags=re.DOTALL).group(1)
        namespace: dict = {}
        exec(block.replace(f'"{name}"', repr(str(folder))), namespace)
        assert namespace["logits"].shape == (1, len(model.tokenizer.encode("To be")), meta["vocab_size"])
    (folder / "modeling_gdds.py").write_text((folder / "modeling_gdds.py").read_text() + "\n# edited\n")
    with pytest.raises(ModelFolderError, match="modeling_gdds.py is not the file"):
        gdds.load(folder)


def test_ar_export_has_no_modeling_code_and_says_why_and_push_says_what_it_lacks(tmp_path, capsys, monkeypatch):
    run = micro_run(tmp_path, "method=ar", "train.max_steps=2")
    assert main(["export", str(run), str(tmp_path / "model"), "--push", "someone/model"]) == 1  # offline
    assert "is written but not pushed to someone/model: HF_HUB_OFFLINE is set" in capsys.readouterr().err
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"):
        push_folder(tmp_path / "model", "someone/model")
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "auto_map" not in meta and "only the bidirectional DiT" in meta["automodel_refusal"]
    assert not (tmp_path / "model" / "modeling_gdds.py").exists()
    assert "no transformers modeling code" in (tmp_path / "model" / "README.md").read_text()
    gdds.load(tmp_path / "model")


def test_the_modeling_template_is_the_dit(tmp_path):
    """A deeper network with tied, padded weights, every parameter random (no adaLN zeros)."""
    from safetensors.torch import save_file

    config = DiTConfig(vocab_size=37, layers=3, width=48, heads=3, cond_width=24, max_len=20, tie_weights=True,
                       vocab_multiple=8, mlp_ratio=2, rope_base=500.0)
    torch.manual_seed(0)
    network = DiT(config).eval()
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.3)
    templates = resources.files("gdds.engine.hf_modeling")
    for name in ("configuration_gdds.py", "modeling_gdds.py"):
        with resources.as_file(templates / name) as path:
            shutil.copyfile(path, tmp_path / name)
    state = {k: v.contiguous() for k, v in network.state_dict().items() if k != "head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "gdds", "auto_map": {"AutoConfig": "configuration_gdds.GddsConfig",
                                           "AutoModel": "modeling_gdds.GddsModel"},
        "architecture": config.to_dict(), "vocab_size": 37}))
    hf = transformers.AutoModel.from_pretrained(tmp_path, trust_remote_code=True).float().eval()
    assert hf.head.weight.data_ptr() == hf.embed.weight.data_ptr()
    xt, t = random_inputs(37, 20, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(hf(xt, t), network(xt, t), atol=1e-5, rtol=1e-5)
        assert hf(xt, t).shape == (3, 20, 37)
