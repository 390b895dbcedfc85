"""The contract every training method of the registry (``gdds.objectives.METHODS``) passes, on
every process it is compared with (``gdds compare``'s entries) and on one it cannot generate
for: the loss is finite and falls on the micro configuration, a checkpoint rebuilds the same
method and the same validation number, and the model either generates and is bounded, or
refuses with the documented error (:class:`gdds.objectives.NotGenerative`)."""
import json
import math

import pytest
import torch

from gdds.engine.build import load_run
from gdds.engine.checkpoint import latest_checkpoint
from gdds.engine.config import load_config
from gdds.engine.distributed import DistInfo
from gdds.engine.evaluation.compare import ENTRIES, entry_config
from gdds.engine.evaluation.evaluate import bound_report, generate
from gdds.engine.train import Trainer, train
from gdds.objectives import METHODS, NotGenerative
from helpers import DEVICE, MICRO_TRAIN

# The semantic kernels need embeddings of the character vocabulary: co-occurrence ones.
EMBEDDINGS = ["process.embeddings=cooccurrence", "process.embedding_dim=8"]
# One entry per (method, kernel): entries that differ only in kernel_args or embeddings run the same code.
DISTINCT = {tuple(o for o in overrides if not o.startswith(("process.kernel_args", "process.embeddings"))): name
            for name, overrides in reversed(ENTRIES.items())}
# A method on a process whose reverse exit rates are unknown: it trains, but cannot generate.
CASES = {**{name: overrides for name, overrides in ENTRIES.items() if name in DISTINCT.values()},
         "campbell-uniform": ["method=campbell", "process.kernel=uniform"]}
CANNOT_GENERATE = {"campbell-uniform"}
# How far the validation loss must fall in 30 steps: 3%, but 1% for the Campbell loss on the
# uniform process (about 30 nats per position: every jump of the path counts; it falls 1.6%).
FALL = {"campbell-uniform": 0.99}
SHORT = ["train.max_steps=30", "train.eval_every=5", "train.eval_batches=4", "train.log_every=5",
         "train.ema_decay=0"]


def config(name: str):
    if name in ENTRIES:
        semantic = any(o.startswith("process.kernel=semantic") for o in ENTRIES[name])
        return entry_config("tiny", name, [*MICRO_TRAIN, *(EMBEDDINGS if semantic else []), *SHORT])
    return load_config("tiny", [*MICRO_TRAIN, *SHORT, *CASES[name]])


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tmp_path_factory):
    """One short run per case (30 steps of the micro configuration)."""
    out = tmp_path_factory.mktemp(request.param)
    cfg = config(request.param)
    return request.param, cfg, out, train(cfg, out)


def test_every_registered_method_is_under_contract():
    covered = {config(name).method for name in CASES}
    assert covered == set(METHODS.names()), f"add a case for {set(METHODS.names()) - covered}"


def test_loss_is_finite_and_falls(trained):
    name, cfg, out, result = trained
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "train"]
    evals = [r for r in log if r["kind"] == "eval"]
    key = f"valid_{METHODS.get(cfg.method).metric}"
    values = [e[key] for e in evals]  # the same batches and the same noise at every evaluation
    assert all(math.isfinite(v) for v in losses + values)
    assert values[-1] < FALL.get(name, 0.97) * values[0], values
    assert result.valid.label == evals[-1]["metric"] == METHODS.get(cfg.method).label  # it says what it is


def test_a_checkpoint_rebuilds_the_method_and_its_validation_number(trained):
    _, cfg, out, result = trained
    trainer = Trainer(cfg, out, load_run(out, device=DEVICE.type).run, DistInfo(), DEVICE)
    assert type(trainer.method) is METHODS.get(cfg.method)
    trainer.load(latest_checkpoint(out))
    again = trainer.evaluate("valid")
    assert again.value == pytest.approx(result.valid.value, rel=1e-6) and again.label == result.valid.label


def test_generates_and_is_bounded_or_refuses_with_the_documented_error(trained):
    name, cfg, out, _ = trained
    loaded = load_run(out)
    if name in CANNOT_GENERATE:
        with pytest.raises(NotGenerative, match="exit rates"):
            loaded.denoiser()
        with pytest.raises(NotGenerative):
            generate(loaded, 2, 2)
        return
    vocab = loaded.run.data.tokenizer.vocab_size
    for sampler in loaded.method.usable_samplers:  # each through the one door, Method.generate
        ids, texts = generate(loaded, 2, 2, prompt=[3, 1], sampler=sampler)
        assert ids.shape == (2, cfg.data.seq_len) and int(ids.min()) >= 0 and int(ids.max()) < vocab
        assert (ids[:, :2] == torch.tensor([3, 1])).all() and len(texts) == 2
    report = bound_report(loaded, loaded.run.valid, sequences=2, steps=2)
    assert math.isfinite(report.nats_per_token) and report.nats_per_token > 0
    assert report.exact == METHODS.get(cfg.method).exact_likelihood
