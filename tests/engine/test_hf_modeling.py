"""transformers from a model folder: ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` gives
the logits of every network gdds trains (DiT, BlockDiT, CausalLM, also as ``AutoModelForCausalLM`` with
``generate``, TwoStream) and ``AutoTokenizer.from_pretrained(folder)`` gives gdds's ids, offline and
without gdds's code (the folder's own configuration_gdds.py / layers_gdds.py / modeling_gdds.py); the
templates are also held to :class:`gdds.models.DiT` on a deeper, tied, padded network."""
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
from gdds.engine.checkpoint import module_tensors, save_tensors
from gdds.engine.hf_files import MODELING, TEMPLATES, PushError, push_folder
from gdds.engine.model_files import ModelFolderError
from gdds.models import BlockDiT, CausalLM, DiT, DiTConfig, TwoStream
from gdds.objectives.methods import METHODS
from helpers import micro_run

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def random_inputs(vocab: int, length: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (3, length), generator=gen), torch.rand(3, generator=gen)


# case -> the run's overrides and gdds's network
CASES = {
    "dit": ([], "DiT"),
    "dit-compact": (["data.tokenizer=wordpiece", "data.compact_vocab=true"], "DiT"),
    "block": (["model.block_size=4"], "BlockDiT"),
    "ar": (["method=ar"], "CausalLM"),
    "two-stream": (["method=campbell"], "TwoStream"),
}


def assert_same_logits(network, hf, vocab: int, length: int) -> None:
    """``hf`` (the folder's modeling code) and gdds's ``network`` give the same logits, in each of the
    network's calls, on random inputs at the full length and at a shorter one."""
    xt, t = random_inputs(vocab, length)
    for n in (length, 7):
        x = xt[:, :n]
        if isinstance(network, CausalLM):
            torch.testing.assert_close(hf.gdds_logits(x), network(x), atol=1e-5, rtol=1e-5)
            out = hf(x, labels=x)
            torch.testing.assert_close(out.logits[:, :-1], network(x)[:, 1:], atol=1e-5, rtol=1e-5)
            nll = torch.nn.functional.cross_entropy(network(x)[:, 1:].reshape(-1, vocab), x[:, 1:].reshape(-1))
            torch.testing.assert_close(out.loss, nll, atol=1e-5, rtol=1e-5)
        elif isinstance(network, TwoStream):
            torch.testing.assert_close(hf.snapshot(x, t), network.snapshot(x, t), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hf.snapshot(x, 0.25), network.snapshot(x, 0.25), atol=1e-5, rtol=1e-5)
            batch = two_stream_batch(x, t)
            torch.testing.assert_close(hf(*batch), network(*batch), atol=1e-5, rtol=1e-5)
        elif isinstance(network, BlockDiT):
            x0, _ = random_inputs(vocab, n, seed=2)
            per_block = torch.rand(3, network.n_blocks(n), generator=torch.Generator().manual_seed(3))
            for time in (t, per_block, 0.25):
                torch.testing.assert_close(hf(x, time, x0=x0), network(x, time, x0), atol=1e-5, rtol=1e-5)
            with pytest.raises(ValueError, match="the clean sequence x0"):
                hf(x, t)
        else:
            torch.testing.assert_close(hf(x, t), network(x, t), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(hf(x, 0.25), network(x, 0.25), atol=1e-5, rtol=1e-5)


def two_stream_batch(x, t):
    """A path of two pieces per position (the token until a jump at a random time, then another), and queries
    at random positions and times: the pieces-and-queries call of the two-stream network."""
    B, L = x.shape
    gen = torch.Generator().manual_seed(4)
    jump = torch.rand(B, L, generator=gen, dtype=torch.float64)
    pos = torch.arange(L).expand(B, L)
    zeros = torch.zeros(B, L, dtype=torch.float64)
    tokens = torch.cat((x, x.flip(1)), dim=1)
    q_pos = torch.randint(0, L, (B, 5), generator=gen)
    q_time = torch.rand(B, 5, generator=gen, dtype=torch.float64)
    return tokens, pos.repeat(1, 2), torch.cat((zeros, jump), 1), torch.cat((jump, zeros + 2.0), 1), q_pos, q_time


def randomise(network, folder: Path, copy: Path) -> Path:
    """``network``'s every parameter drawn at random (no adaLN zeros: every block acts), saved into a copy of
    the model folder ``folder`` (``copy``), for ``transformers`` to load."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0, 0.3, generator=gen)
    shutil.copytree(folder, copy)
    save_tensors(copy / "model.safetensors", module_tensors(network))
    return copy


@pytest.mark.parametrize("case", list(CASES))
def test_automodel_and_autotokenizer_equal_gdds(tmp_path, case):
    """Every network gdds trains, from an exported micro run: gdds's logits through AutoModel, gdds's ids through
    AutoTokenizer (characters; WordPiece with a compact vocabulary, whose model ids are not tokenizer.json's),
    the model card's and the docs' examples run, and the folder loads in a process without gdds."""
    overrides, network_name = CASES[case]
    run = micro_run(tmp_path, "train.max_steps=3", *overrides)
    assert main(["export", str(run), str(tmp_path / "model")]) == 0
    folder = tmp_path / "model"
    meta = json.loads((folder / "config.json").read_text())
    assert meta["network"] == network_name and meta["model_type"] == "gdds"
    assert {*TEMPLATES, "tokenizer_config.json"} <= set(meta["files"])
    model = gdds.load(folder)  # gdds's own reading, hashes verified
    network = model.loaded.run.model.float().eval()
    assert type(network).__name__ == network_name
    assert meta["auto_map"]["AutoModel"] == f"modeling_gdds.{MODELING[type(network)].model}"
    hf = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True).float().eval()
    assert "gdds" not in type(hf).__module__.split(".")[0] and not isinstance(hf, type(network))
    with torch.no_grad():
        assert_same_logits(network, hf, meta["vocab_size"], meta["seq_len"])
        randomised = randomise(network, folder, tmp_path / "random")  # 3 steps leave the blocks near identity
        hf_random = transformers.AutoModel.from_pretrained(randomised, trust_remote_code=True).float().eval()
        assert_same_logits(network, hf_random, meta["vocab_size"], meta["seq_len"])
    tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # config.json has auto_map
    text = "to be or not to be, that is the question"
    compact = "compact" in case
    ids = hf.model_ids(tok(text).input_ids).tolist()
    assert ids == model.tokenizer.encode(text) and (ids != tok(text).input_ids) == compact
    specials = hf.model_ids([tok.mask_token_id, tok.eos_token_id]).tolist()
    assert specials == [model.tokenizer.mask_id, model.tokenizer.eos_id]
    if compact:
        with pytest.raises(ValueError, match="not in the model's compact vocabulary"):
            hf.model_ids([max(meta["compact_full_ids"]) + 1])
    card = (folder / "README.md").read_text()
    docs = (Path(__file__).parents[2] / "docs" / "model-folders.md").read_text()
    shape = [1, len(model.tokenizer.encode("To be")), meta["vocab_size"]]
    code = re.search(r"```python\n(from transformers.*?)```", card, flags=re.DOTALL).group(1)
    without_gdds = "import sys; sys.modules['gdds'] = None\n" + code.replace('"MODEL_DIR"', repr(str(folder)))
    done = subprocess.run([sys.executable, "-c", without_gdds + "\nprint(list(logits.shape))"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0 and str(shape) in done.stdout, done.stderr
    code = re.search(rf"```python\n# {network_name}\n(from transformers.*?)```", docs, flags=re.DOTALL).group(1)
    namespace: dict = {}
    exec(code.replace('"OUT_DIR"', repr(str(folder))), namespace)
    assert list(namespace["logits"].shape) == shape
    (folder / "modeling_gdds.py").write_text((folder / "modeling_gdds.py").read_text() + "\n# edited\n")
    with pytest.raises(ModelFolderError, match="modeling_gdds.py is not the file"):
        gdds.load(folder)


def test_every_network_gdds_trains_has_modeling_code():
    """Each method's network, and block diffusion's, has a modeling class in the templates."""
    assert {method.network for _, method in METHODS.items()} | {BlockDiT} == set(MODELING)
    source = (resources.files("gdds.engine.hf_modeling") / "modeling_gdds.py").read_text()
    assert all(f"class {name}(" in source for name in (m.model for m in MODELING.values()))


def test_the_causal_lm_generates_with_transformers(tmp_path):
    """``AutoModelForCausalLM.generate`` (greedy) is the argmax chain of gdds's own logits."""
    run = micro_run(tmp_path, "method=ar", "train.max_steps=2")
    assert main(["export", str(run), str(tmp_path / "model")]) == 0
    network = gdds.load(tmp_path / "model").loaded.run.model.float().eval()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "model", trust_remote_code=True).float()
    prompt = torch.tensor([[5, 9, 2]])
    with torch.no_grad():
        out = hf.generate(prompt, max_new_tokens=6, do_sample=False)
        x = prompt
        while x.shape[1] < 9:
            x = torch.cat((x, network(torch.cat((x, x[:, :1]), 1))[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert out.tolist() == x.tolist()
    with pytest.raises(ValueError, match="padding is not supported"):
        hf(prompt, attention_mask=torch.tensor([[0, 1, 1]]))


def test_push_says_what_it_lacks(tmp_path, capsys, monkeypatch):
    run = micro_run(tmp_path, "method=ar", "train.max_steps=2")
    assert main(["export", str(run), str(tmp_path / "model"), "--push", "someone/model"]) == 1  # offline
    assert "is written but not pushed to someone/model: HF_HUB_OFFLINE is set" in capsys.readouterr().err
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"):
        push_folder(tmp_path / "model", "someone/model")
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
    for name in TEMPLATES:
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
