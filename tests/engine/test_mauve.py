"""MAUVE beside generative perplexity (gdds.engine.evaluation.mauve_score): features from an offline
judge, the estimate and its bootstrap standard error, `gdds eval --mauve` and compare's column."""
import dataclasses
import json
import random
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("mauve")

from gdds.cli import main
from gdds.cli.compare_report import compare_markdown
from gdds.cli.evaluation import eval_settings
from gdds.cli.main import build_parser
from gdds.engine.evaluation.compare import Comparison, ComparisonRow
from gdds.engine.evaluation.evaluate import EvalSettings
from gdds.engine.evaluation.judge import Judge
from gdds.engine.evaluation.mauve_score import (
    MAUVE_INSTALL_HINT,
    MauveError,
    MauveSettings,
    judge_features,
    mauve_estimate,
    mauve_of_samples,
)
from gdds.engine.evaluation.reports import EvalReport
from helpers import micro_run

WORDS = [f"w{i}" for i in range(100)]


def _tiny_judge_folder(folder):
    """A 2-layer GPT-2 with random weights and a word-level tokenizer of :data:`WORDS`, saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "<|endoftext|>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(vocab), n_positions=64)
                    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def featurizer(tmp_path_factory):
    return str(_tiny_judge_folder(tmp_path_factory.mktemp("judge")))


def _texts(n, words, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def test_features_are_the_last_tokens_final_hidden_state_whatever_the_batch(featurizer):
    judge = Judge.load(featurizer)
    texts = _texts(5, WORDS, 0)
    features = judge_features(judge, texts, batch_size=2)  # padded batches of unequal lengths
    assert features.shape == (5, 32) and features.dtype == np.float32
    for text, row in zip(texts, features):
        ids = torch.tensor([judge.encode(text)])
        with torch.no_grad():
            alone = judge.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert np.allclose(row, alone.numpy(), atol=1e-5)


def test_mauve_is_near_one_within_a_law_and_low_across_laws(featurizer):
    """Two samples of one law score near 1, a collapsed law (one word repeated, as a degenerate sampler
    writes) far lower; the label names the featurizer; the standard error is positive and the whole
    estimate repeats under the seed."""
    settings = MauveSettings(featurizer=featurizer, resamples=4)
    refs = _texts(60, WORDS, 0)
    collapsed = [" ".join(["w7"] * (3 + i % 10)) for i in range(60)]
    same, other = mauve_of_samples(settings, refs, [_texts(60, WORDS, 1), collapsed])
    assert same.mauve > 0.9 and other.mauve < 0.2 and same.mauve - other.mauve > 10 * same.standard_error
    assert same.standard_error > 0 and other.standard_error > 0
    name = Judge.load(featurizer).name
    assert same.featurizer == name and name in same.metric and "not a likelihood" in same.metric
    assert (same.references, same.samples, same.num_buckets) == (60, 60, 6)
    assert same.settings["seed"] == 25 and same.settings["scaling_factor"] == 5.0 and "bootstrap" in same.se_method
    assert mauve_of_samples(settings, refs, [_texts(60, WORDS, 1)]) == [same]


def test_the_estimate_depends_on_the_seed_only_through_its_draws():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    one = mauve_estimate(p, q, MauveSettings(resamples=3), "synthetic")
    assert one == mauve_estimate(p, q, MauveSettings(resamples=3), "synthetic")
    assert mauve_estimate(p, p, MauveSettings(resamples=3), "synthetic").mauve == pytest.approx(1.0)
    assert one.standard_error != mauve_estimate(p, q, MauveSettings(resamples=3, seed=1), "synthetic").standard_error


def test_too_few_texts_and_missing_packages_are_clear_errors(monkeypatch):
    rng = np.random.default_rng(0)
    with pytest.raises(MauveError, match=r"at least 10 texts in each set .* got 40 reference texts and 8 samples"):
        mauve_estimate(rng.normal(size=(40, 4)), rng.normal(size=(8, 4)), MauveSettings(), "synthetic")
    with pytest.raises(MauveError, match="at least 20 texts"):
        MauveSettings(num_buckets=4).check(100, 19)
    with pytest.raises(ValueError, match="--num-samples"):  # the eval's settings refuse it before any work
        EvalSettings(num_samples=8, mauve=MauveSettings())
    with pytest.raises(ValueError, match="2 bootstrap"):
        MauveSettings(resamples=1)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=MAUVE_INSTALL_HINT.replace("[", r"\[").replace("]", r"\]")):
        mauve_estimate(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), MauveSettings(), "synthetic")


def test_a_judge_without_hidden_states_cannot_featurize(featurizer):
    judge = Judge.load(featurizer)

    class LogitsOnly(torch.nn.Module):  # what gdds's own autoregressive judges return
        def forward(self, input_ids, **_):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 4)})()

    judge.model = LogitsOnly()
    judge.model.weight = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(MauveError, match="no hidden states"):
        judge_features(judge, ["w1 w2"])


@pytest.mark.parametrize("command", ["eval", "compare"])
def test_mauve_is_off_unless_asked(command, tmp_path):
    where = ["x"] if command == "eval" else ["--out", str(tmp_path)]
    parser = build_parser()
    plain = parser.parse_args([command, *where, "--num-samples", "10"])
    asked = parser.parse_args([command, *where, "--num-samples", "10", "--mauve", "--mauve-references", "20"])
    assert eval_settings(plain).mauve is None
    assert eval_settings(asked).mauve == MauveSettings(references=20) and eval_settings(asked).mauve_references == 20


def test_eval_with_mauve_writes_it_and_compare_shows_its_column(tmp_path, featurizer, capsys):
    run = micro_run(tmp_path, "train.max_steps=4", "train.eval_every=4")
    out = tmp_path / "eval"
    assert main(["eval", str(run), "--steps", "2", "--sequences", "2", "--sample-steps", "2", "--num-samples", "10",
                 "--profile-steps", "0", "--mauve", "--mauve-featurizer", featurizer, "--mauve-resamples", "3",
                 "--out", str(out)]) == 0
    saved = json.loads((out / "eval.json").read_text())
    mauve = saved["samples"][0]["mauve"]
    assert 0 < mauve["mauve"] <= 1 and mauve["standard_error"] > 0 and mauve["references"] == 10
    assert mauve["featurizer"] == Judge.load(featurizer).name and mauve["settings"]["resamples"] == 3
    assert f"{mauve['mauve']:.3f} ± {mauve['standard_error']:.3f}" in (out / "eval.md").read_text()
    assert "MAUVE estimate (features:" in capsys.readouterr().out

    report = EvalReport.from_dict(saved)
    assert report.to_dict() == saved
    plain = dataclasses.replace(report, samples=[dataclasses.replace(r, mauve=None) for r in report.samples])
    rows = {name: ComparisonRow(name, 0, rep, 0.0, 1.0, 1) for name, rep in (("a", report), ("b", plain))}
    result = Comparison("tiny", [], {"a": [], "b": []}, EvalSettings(sample_steps=(2,), num_samples=10), rows)
    table = compare_markdown(result)
    head, _, a, b = (line.strip("| ").split(" | ") for line in table.splitlines()[:4])
    column = head.index(f"MAUVE ± SE, features: {featurizer.rsplit('/', 1)[-1]} (T = 2)")
    assert a[column] == f"{mauve['mauve']:.3f} ± {mauve['standard_error']:.3f}" and b[column] == "—"
    assert mauve["featurizer"] in table
    rows.pop("a")
    assert "MAUVE" not in compare_markdown(result)
