"""A block-diffusion run end to end (``docs/block.md``): ``model.block_size`` trains a
:class:`gdds.models.BlockDiT`, a resumed run is the uninterrupted one bit for bit, ``gdds eval`` reports its
bound labelled as block diffusion beside the baseline, the configuration refuses what it cannot train, and
a model folder of the run loads the same network and scores the same."""
import json

import pytest

from gdds.cli import main
from gdds.engine.build import load_run
from gdds.engine.config import ConfigError, load_config
from gdds.engine.evaluation.evaluate import kl_profile, likelihood_report, snapshot_report
from gdds.engine.model_folder import load_model_folder
from gdds.engine.train import train
from gdds.likelihood import nll_bound
from gdds.models import BlockDiT
from helpers import MICRO_TRAIN, local_corpus, micro_run

BLOCK = ["model.block_size=4", "train.ckpt_every=3", "train.lr_schedule=constant"]


def test_a_block_run_trains_resumes_evaluates_and_exports(tmp_path):
    import torch

    from gdds.engine.checkpoint import load_tensors

    corpus = local_corpus(tmp_path / "corpus")
    cfg = [*MICRO_TRAIN, f"data.corpus={corpus}", *BLOCK]
    train(load_config("tiny", [*cfg, "train.max_steps=6"]), tmp_path / "straight")
    train(load_config("tiny", [*cfg, "train.max_steps=3"]), tmp_path / "split")
    assert main(["train", "--resume", str(tmp_path / "split"), "train.max_steps=6"]) == 0
    a, b = (load_tensors(tmp_path / run / "checkpoints/last/model.safetensors") for run in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    loaded = load_run(tmp_path / "straight", device="cpu")
    assert isinstance(loaded.run.model, BlockDiT) and loaded.run.model.block_size == 4
    assert loaded.run.identity()["block_size"] == 4
    # gdds eval's likelihood part (its samples need block-by-block generation, docs/block.md)
    like = likelihood_report(loaded, loaded.run.valid, 4, 4)
    assert "block diffusion, blocks of 4 tokens" in like.model.metric and like.model.nats_per_token > 0
    assert "no-training baseline" in like.baseline.metric and like.difference.standard_error > 0
    assert snapshot_report(loaded, loaded.run.valid, 4).nats_per_token > 0
    assert len(kl_profile(loaded, loaded.run.valid, 2, 4).model) == 5

    assert main(["export", str(tmp_path / "straight"), str(tmp_path / "model")]) == 0
    folder = load_model_folder(tmp_path / "model", device="cpu")
    assert isinstance(folder.run.model, BlockDiT) and folder.run.model.block_size == 4
    x0 = loaded.run.valid.batch(list(range(3)))
    scores = [nll_bound(run.run.process, run.denoiser(), x0, steps=4,
                        generator=torch.Generator().manual_seed(1)) for run in (loaded, folder)]
    torch.testing.assert_close(scores[0], scores[1])

    # gdds eval end to end, and gdds sample past the training length, stopping at the end-of-text token
    assert main(["eval", str(tmp_path / "straight"), "--steps", "4", "--sequences", "4", "--sample-steps", "2",
                 "--num-samples", "2"]) == 0
    assert "blocks of 4 tokens" in (tmp_path / "straight" / "eval" / "eval.md").read_text()
    eos = loaded.run.data.tokenizer.eos_id
    out = tmp_path / "samples.json"
    assert main(["sample", str(tmp_path / "straight"), "--num", "3", "--steps", "2", "--length", "70",
                 "--stop-at-eos", "--out", str(out)]) == 0
    texts = json.loads(out.read_text())["texts"]
    assert len(texts) == 3 and not any(loaded.run.data.tokenizer.decode([eos]) in text for text in texts)
    assert max(len(text) for text in texts) <= 70


@pytest.mark.parametrize("extra, message", [
    (["model.block_size=5"], r"model.block_size=5 must divide data.seq_len=32"),
    (["model.block_size=4", "method=jump"], r"method jump does not train block diffusion"),
    (["model.block_size=4", "method=ar"], r"method ar does not train block diffusion"),
])
def test_the_configuration_refuses_what_block_diffusion_cannot_train(tmp_path, extra, message):
    corpus = local_corpus(tmp_path / "corpus", 4)
    with pytest.raises(ConfigError, match=message):
        train(load_config("tiny", [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=1", *extra]),
              tmp_path / "run")


def test_the_paper_metric_of_one_block_is_the_plain_models(tmp_path):
    """With one block (b = L) the per-block paper metric draws, noises and scores exactly as the plain
    model's (the same weights and draws give the same figure); with blocks of 4 it is finite."""
    import numpy as np
    import torch

    from gdds.engine.evaluation.paper_metric import paper_metric

    corpus = local_corpus(tmp_path / "corpus")
    base = [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=3", "process.kernel=mask"]
    figures = {}
    for name, extra in (("plain", []), ("one", ["model.block_size=32"]), ("four", ["model.block_size=4"])):
        train(load_config("tiny", [*base, *extra]), tmp_path / name)
        loaded = load_run(tmp_path / name, device="cpu")
        with torch.no_grad():  # every weight away from its initial zero, the same in each run (time is read)
            for p in loaded.run.model.parameters():
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
        figures[name] = paper_metric(loaded, loaded.run.valid, np.arange(6), torch.Generator().manual_seed(0))
    assert figures["one"].nats_per_token == pytest.approx(figures["plain"].nats_per_token, rel=1e-5)
    assert figures["one"].jumped == figures["plain"].jumped
    four = figures["four"]
    assert 0 < four.jumped < four.tokens and 0 < four.nats_per_token < 10


def test_the_memory_check_of_a_block_model_counts_one_block_and_its_context(tmp_path):
    """gdds sample's estimate (cli.evaluation.sampling_bytes): a plain model's grows with the whole length
    at every step; a block model's with one block, its cached context and the token ids."""
    from gdds.cli.evaluation import sampling_bytes

    corpus = local_corpus(tmp_path / "corpus")
    base = [*MICRO_TRAIN, f"data.corpus={corpus}", "train.max_steps=1"]
    runs = {}
    for name, extra in (("plain", []), ("block", ["model.block_size=4"])):
        train(load_config("tiny", [*base, *extra]), tmp_path / name)
        runs[name] = load_run(tmp_path / name, device="cpu")
    plain, block = (sampling_bytes(runs[n], 32) for n in ("plain", "block"))
    assert block < plain / 4  # one block of 4 tokens at a time instead of 32
    longer = sampling_bytes(runs["block"], 100_000) - sampling_bytes(runs["block"], 32)
    assert longer == 32 * (100_000 - 32)  # past the network's positions only the token ids grow


def test_block_samples_and_the_bound_run_the_network_in_one_precision(tmp_path, monkeypatch):
    """On a GPU the bound's denoiser runs under bf16 autocast (``LoadedRun.precision``); the block sampler calls
    the network itself (cache, ``extend``, ``denoise``), and must run it the same way, or its samples come from
    another function than the one scored. The CPU stands in for the GPU: with ``half`` forced on, every network
    call of the bound and of the sampler runs under autocast; with it off, none does; an autoregressive
    model's never does (its exact NLL is float32)."""
    import torch

    from gdds.engine.build import LoadedRun
    from gdds.engine.evaluation.generation import generate
    from gdds.samplers import CAUSAL

    loaded = load_run(micro_run(tmp_path, "model.block_size=4", "train.max_steps=2"), device="cpu")
    model, seen = loaded.run.model, []

    def spy(call):
        def recorded(*args, **kwargs):
            seen.append(torch.is_autocast_enabled("cpu"))
            return call(*args, **kwargs)
        return recorded

    for name in ("forward", "extend", "denoise"):
        monkeypatch.setattr(model, name, spy(getattr(model, name)))
    x0 = loaded.run.valid.batch([0, 1])
    for half in (True, False):
        monkeypatch.setattr(LoadedRun, "half", property(lambda self, on=half: on))
        seen.clear()
        nll_bound(loaded.run.process, loaded.denoiser(), x0, steps=2, generator=torch.Generator().manual_seed(0))
        bound_calls = list(seen)
        seen.clear()
        ids, _ = generate(loaded, 2, 2, length=12)
        assert ids.shape == (2, 12) and bound_calls and seen
        assert set(bound_calls) == set(seen) == {half}
        with loaded.precision(CAUSAL):
            assert not torch.is_autocast_enabled("cpu")
