"""Model folders (gdds export, gdds.load): a trained run exported, its corpus, caches and run deleted,
loads in a fresh process and gives bit-identical samples and bounds for the same seed; the folder
has the Hub layout and its tokenizer.json reads in tokenizers."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

import gdds
from gdds.cli import main
from gdds.engine.config import load_config
from gdds.engine.train import train
from helpers import MICRO_TRAIN, local_corpus

PROBE = """
import json, sys
import gdds
model = gdds.load(sys.argv[1])
out = {"samples": model.sample(num=2, length=24, steps=8, prompt="the", seed=3),
       "infill": model.sample(num=1, length=24, steps=8, infill="a ___ b", blank_tokens=3, seed=1)
                 if not model.loaded.method.exact_likelihood else [],
       "score": model.nll_bound(["to be or not to be", "that is the question"], steps=8, seed=5).__dict__}
print(json.dumps(out))
"""


def probe(folder, cache, corpus=None):
    env = {**os.environ, "GDDS_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method", [
    ["process.kernel=semantic", "process.embeddings=cooccurrence", "process.kernel_args={k: 8}"],
    ["method=ar"],
])
def test_an_exported_model_loads_without_its_corpus(tmp_path, method):
    corpus = local_corpus(tmp_path / "corpus", 8)
    cfg = load_config("tiny", [*MICRO_TRAIN, f"data.corpus={corpus}", "data.compact_vocab=true", *method,
                               "train.max_steps=3"])
    train(cfg, tmp_path / "run")
    before = probe(tmp_path / "run", os.environ["GDDS_CACHE_DIR"])  # the run folder, with its corpus
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "model")]) == 0
    shutil.rmtree(corpus)
    shutil.rmtree(tmp_path / "run")
    after = probe(tmp_path / "model", tmp_path / "empty-cache")  # a fresh process, nothing cached
    assert after == before
    score = after["score"]
    assert score["tokens"] > 0 and score["texts"] == 2 and ("upper bound" in score["metric"]) != bool(
        "method=ar" in method)
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "compact_vocab.json",
            "gdds_tokenizer", "unigram.safetensors"} <= files
    assert ("kernel.safetensors" in files) == ("method=ar" not in method)
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    assert meta["format"] == "gdds-model-v1" and meta["vocab_size"] == len(json.loads(
        (tmp_path / "model" / "compact_vocab.json").read_text())["full_ids"])
    hf = Tokenizer.from_file(str(tmp_path / "model" / "tokenizer.json"))
    model = gdds.load(tmp_path / "model")
    copy = model.save_pretrained(tmp_path / "copy")
    assert probe(copy, tmp_path / "empty-cache") == before
    full = model.tokenizer.base.encode("to be")
    assert hf.encode("to be", add_special_tokens=False).ids == full
    assert "## Evaluation" in (tmp_path / "model" / "README.md").read_text()


def test_export_refuses_to_overwrite_and_bad_paths_are_one_line(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "no-run"), str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "exists" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
        gdds.load("someone/not-a-model")
