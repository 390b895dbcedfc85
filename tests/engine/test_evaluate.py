"""`gdds sample` and `gdds eval` on small trained runs; the bound falls with training."""
import json
import math

import pytest
import torch

import gdds
from gdds.cli import main
from gdds.data import UnknownTextError
from gdds.engine.build import load_run
from gdds.engine.checkpoint import list_checkpoints
from gdds.engine.config import ConfigError, load_config
from gdds.engine.evaluation.evaluate import EvalSettings, bound_report, eval_rows, evaluate, generate
from gdds.engine.evaluation.reports import KLProfile
from gdds.engine.train import train
from gdds.likelihood import summarize
from gdds.samplers import SamplerError
from helpers import MICRO_TRAIN, local_corpus

MICRO = [*MICRO_TRAIN, "train.log_every=10", "process.kernel=mask"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run trained for 80 steps on Shakespeare, checkpoints every 20 steps (all kept)."""
    out = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny", [*MICRO, "train.max_steps=80", "train.ckpt_every=20", "train.eval_every=80",
                               "train.keep_checkpoints=10"])
    train(cfg, out)
    return out


def test_bound_falls_as_training_proceeds(run):
    bounds = []
    for folder in list_checkpoints(run)[::3]:  # steps 20 and 80
        loaded = load_run(run, checkpoint=folder)
        b = bound_report(loaded, loaded.run.valid, sequences=24, steps=8)
        assert b.metric.startswith("NLL upper bound") and b.nats_per_token > 0 and not b.exact
        bounds.append(b)
    assert bounds[1].nats_per_token < bounds[0].nats_per_token - 4 * bounds[0].standard_error
    # Bits per character divide the total by the characters, not by tokens with BOS/EOS.
    blocks = loaded.run.valid.batch(eval_rows(loaded.run.valid, 24, 0))
    tok = loaded.run.data.tokenizer
    characters = int((~torch.isin(blocks, torch.tensor([tok.bos_id, tok.eos_id, tok.pad_id, tok.mask_id]))).sum())
    assert bounds[1].bits_per_character == pytest.approx(
        bounds[1].nats_per_token * blocks.numel() / characters / math.log(2), rel=1e-12)


def test_sample_cli(run, capsys, tmp_path, monkeypatch):
    assert main(["sample", str(run), "--num", "2", "--steps", "4", "--prompt", "KING", "--out",
                 str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "exact reverse chain, 4 steps" in out and "[2] KING" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert len(saved["texts"]) == 2 and all(t.startswith("KING") for t in saved["texts"])
    assert main(["sample", str(run), "--num", "1", "--steps", "3", "--approximate", "--prompt", "KING"]) == 0
    out = capsys.readouterr().out
    assert "APPROXIMATE renoise sampler, 3 steps:" in out and "[1] KING" in out
    assert main(["sample", str(run), "--num", "1", "--steps", "3", "--sampler", "exact", "--spacing", "lambda"]) == 0
    assert "exact reverse chain, 3 steps (lambda grid)" in capsys.readouterr().out
    for refused in (["--sampler", "renoise", "--gumbel"], ["--sampler", "ancestral"]):
        with pytest.raises(SystemExit):
            main(["sample", str(run), *refused])
    assert "its options are device" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # only the block sampler stops at the end-of-text token
        main(["sample", str(run), "--stop-at-eos"])
    assert "does not accept eos" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", str(run), "--steps", "0"])
    import gdds.cli.evaluation as cli

    shapes = []
    monkeypatch.setattr(cli, "generate", lambda *a, **k: shapes.append(tuple((out := generate(*a, **k))[0].shape))
                        or out)
    assert main(["sample", str(run), "--num", "2", "--steps", "3", "--length", "9"]) == 0
    assert shapes == [(2, 9)]
    model = gdds.load(run)
    assert len(model.sample(num=1, length=5, steps=2)) == 1
    # The decoding filters reach the sampler as one gdds.Decoding, from the CLI and from Model.sample.
    seen = []
    monkeypatch.setattr(cli, "generate", lambda *a, **k: seen.append(k.get("decoding")) or generate(*a, **k))
    assert main(["sample", str(run), "--num", "1", "--steps", "2", "--top-k", "1", "--temperature", "0.5",
                 "--min-p", "0.1", "--top-p", "0.9"]) == 0
    assert main(["sample", str(run), "--num", "1", "--steps", "2"]) == 0
    assert seen == [gdds.Decoding(temperature=0.5, top_k=1, top_p=0.9, min_p=0.1), None]
    greedy = model.sample(num=2, length=6, steps=3, top_k=1, seed=4)
    assert greedy == model.sample(num=2, length=6, steps=3, temperature=1e-3, seed=4)  # both: the argmax
    assert model.sample(num=2, length=6, steps=3, seed=4, top_k=10**6, min_p=0.0) == \
        model.sample(num=2, length=6, steps=3, seed=4)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        model.sample(num=1, length=5, steps=2, top_k=0)
    for bad in ("0", "100000"):  # the network has positions for data.seq_len = 32 tokens only
        with pytest.raises(SystemExit) as info:
            main(["sample", str(run), "--length", bad])
        assert info.value.code == 2 and f"--length must be in [1, 32]; got {bad}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"length must be in \[1, 32\]; got 100000: the model was trained with "
                       "data.seq_len=32"):
        model.sample(length=100000)


def test_batched_prompts_give_each_prompt_its_own_seeded_call(run, capsys):
    """``sample(prompts=P, seed=s)[i] == sample(prompt=P[i], seed=s + i)[0]`` for every sampler of the run,
    bit for bit with the network in float64 (in float32 only up to its batch invariance); ``gdds sample``
    with several ``--prompt`` prints those texts; mismatched counts are refused by name."""
    model = gdds.load(run)
    model.loaded.run.model.double()
    prompts = ["KING", "", "QUEEN M", "A"]
    for sampler in ("exact", "renoise"):
        texts = model.sample(prompts=prompts, length=12, steps=3, seed=7, sampler=sampler)
        assert len(texts) == 4 and all(text.startswith(prompt) for text, prompt in zip(texts, prompts, strict=True))
        alone = [model.sample(prompt=prompt, length=12, steps=3, seed=7 + i, sampler=sampler)[0]
                 for i, prompt in enumerate(prompts)]
        assert texts == alone
    assert main(["sample", str(run), "--steps", "3", "--length", "12", "--seed", "7",
                 *(arg for prompt in prompts for arg in ("--prompt", prompt))]) == 0
    printed = capsys.readouterr().out  # the same batch as Model.sample(prompts=...), from the float32 network
    texts = gdds.load(run).sample(prompts=prompts, length=12, steps=3, seed=7)
    assert "4 samples" in printed and all(f"[{i + 1}] {text}\n" in printed for i, text in enumerate(texts))
    with pytest.raises(ValueError, match="4 prompts, num = 2"):
        model.sample(prompts=prompts, num=2)
    with pytest.raises(ValueError, match="not both"):
        model.sample(prompts=prompts, prompt="KING")
    with pytest.raises(ValueError, match="the prompt or template takes 5 tokens; the length is 4"):
        model.sample(prompts=["A", "QUEEN"], length=4)
    with pytest.raises(SystemExit):
        main(["sample", str(run), "--num", "3", "--prompt", "A", "--prompt", "B"])
    assert "--num 3 with 2 prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", str(run), "--length", "3", "--prompt", "A", "--prompt", "KING"])
    assert "the prompt has 4 tokens; the model's length is 3" in capsys.readouterr().err


def test_the_mask_kernels_samplers_and_their_options_from_the_cli_and_model_sample(run, capsys, monkeypatch):
    """``--score``, ``--threshold`` and ``--eta`` reach their samplers (and are refused by the others);
    ``Model.sample`` passes a sampler's options through; at most ``steps`` network calls each."""
    import gdds.cli.evaluation as cli

    seen = []
    monkeypatch.setattr(cli, "generate", lambda *a, **k: seen.append((a[6], k)) or generate(*a, **k))
    for argv in (["--sampler", "ordered", "--score", "margin"], ["--sampler", "threshold", "--threshold", "0.8"],
                 ["--sampler", "remdm", "--eta", "0.1", "--top-k", "3"]):
        assert main(["sample", str(run), "--num", "2", "--steps", "3", "--prompt", "KING", *argv]) == 0
        assert "[2] KING" in capsys.readouterr().out
    assert seen == [("ordered", {"score": "margin"}), ("threshold", {"threshold": 0.8}),
                    ("remdm", {"eta": 0.1, "decoding": gdds.Decoding(top_k=3)})]
    for refused, option in ((["--eta", "0.1"], "eta"), (["--sampler", "ordered", "--threshold", "0.5"], "threshold")):
        with pytest.raises(SystemExit):
            main(["sample", str(run), *refused])
        assert f"does not accept {option}" in capsys.readouterr().err
    model, calls = gdds.load(run), []
    network = model.loaded.run.model.forward
    monkeypatch.setattr(model.loaded.run.model, "forward", lambda *a, **k: calls.append(1) or network(*a, **k))
    for sampler, options in (("ordered", {"score": "entropy"}), ("threshold", {"threshold": 0.5}),
                             ("remdm", {"eta": 0.0})):
        calls.clear()
        assert len(model.sample(num=2, length=8, steps=5, sampler=sampler, **options)) == 2
        assert 1 <= len(calls) <= 5 and (sampler != "remdm" or len(calls) == 5)
    assert model.sample(num=2, length=8, steps=5, sampler="remdm", eta=0.0, seed=3) == \
        model.sample(num=2, length=8, steps=5, seed=3)  # eta = 0: the exact chain
    with pytest.raises(SamplerError, match="does not accept score"):
        model.sample(num=1, length=5, steps=2, sampler="remdm", score="margin")


def test_text_outside_the_vocabulary_is_never_scored_nor_prompted(run, capsys):
    """No number for text that was not scored: out-of-vocabulary characters are refused by name by
    nll_bound, Model.sample and `gdds sample --prompt` (before, they became <unk> and a 'bound' was printed)."""
    model = gdds.load(run)
    assert model.nll_bound("KING HENRY", steps=4, draws=2).tokens == len("KING HENRY") + 2
    with pytest.raises(UnknownTextError, match=r"text 1 \(from 0\) has 6 character\(s\) outside the char "
                       r"vocabulary \(3 distinct: '日', '本', '語'\)"):
        model.nll_bound(["KING", "日本語日本語"], steps=4, draws=2)
    for empty in ([], (), [3]):
        with pytest.raises(ValueError, match="a non-empty list of texts"):
            model.nll_bound(empty, steps=4, draws=2)
    with pytest.raises(UnknownTextError, match="the prompt has 1 character.*'☃'"):
        model.sample(num=1, steps=2, prompt="KING ☃")
    with pytest.raises(UnknownTextError, match="the template has 1 character.*'☃'"):
        model.sample(num=1, steps=2, infill="KING ___ ☃")
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(run), "--num", "1", "--steps", "2", "--prompt", "日本語 ☃"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "<unk>" not in err
    assert "the prompt has 4 character(s) outside the char vocabulary (4 distinct: '日', '本', '語', '☃')" in err


def test_eval_cli_writes_labelled_reports(run, tmp_path, capsys):
    # zero-shot on local files (the embedded corpora's packages need not be installed, e.g. on the GPU machine)
    held_out, out = str(local_corpus(tmp_path / "held-out", works=3, chars=2000)), tmp_path / "eval"
    assert main(["eval", str(run), "--steps", "4", "--sequences", "4", "--sample-steps", "2", "4", "--num-samples",
                 "2", "--zero-shot", held_out, "--profile-steps", "4", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    valid = report["valid"]
    assert valid["snapshot_ce"]["metric"] == "snapshot CE (not a likelihood)"
    # The figure and its standard error are the ratio of sums and the delta-method SE of the saved
    # per-sequence bounds, and the same as the engine computes on the same blocks and draws.
    bound = valid["bound"]
    s = summarize(torch.tensor(bound["per_sequence"]["nats"], dtype=torch.float64),
                  torch.tensor(bound["per_sequence"]["tokens"]))
    assert bound["steps"] == 4 and bound["tokens"] == s.tokens and bound["sequences"] == 4
    assert bound["nats_per_token"] == pytest.approx(s.nats_per_token, rel=1e-12)
    assert bound["standard_error"] == pytest.approx(s.standard_error, rel=1e-12) and s.standard_error > 0
    loaded = load_run(run)
    again = bound_report(loaded, loaded.run.valid, sequences=4, steps=4)
    assert (again.nats_per_token, again.standard_error) == (bound["nats_per_token"], bound["standard_error"])
    assert [r["steps"] for r in report["samples"]] == [2, 4]
    # Every bound stands beside the no-training baseline on the same blocks and draws.
    for section in (valid, report["zero_shot"][held_out]):
        bound, base, diff = section["bound"], section["baseline"], section["paired_difference"]
        assert set(base) == set(bound) and (base["steps"], base["tokens"]) == (bound["steps"], bound["tokens"])
        assert "Bayes-unigram" in base["metric"] and "perplexity" in section["unigram"]  # the unigram NLL is exact
        assert diff["nats_per_token"] == pytest.approx(bound["nats_per_token"] - base["nats_per_token"], abs=1e-9)
        # Paired: the SE of the per-sequence differences on the same blocks, not the two SEs combined.
        model, baseline = bound["per_sequence"], base["per_sequence"]
        assert model["blocks"] == baseline["blocks"] and model["tokens"] == baseline["tokens"]
        assert diff["sequences"] == 4
        paired = summarize(torch.tensor(model["nats"], dtype=torch.float64)
                           - torch.tensor(baseline["nats"], dtype=torch.float64), torch.tensor(model["tokens"]))
        assert diff["standard_error"] == pytest.approx(paired.standard_error, rel=1e-12)
        assert diff["standard_error"] != pytest.approx(math.hypot(bound["standard_error"], base["standard_error"]),
                                                       rel=1e-3)
    # The profile of the bound's terms over t: the prior term does not depend on the denoiser.
    profile = report["kl_profile"]
    assert profile["steps"] == 4 and len(profile["times"]) == 4 and len(profile["model"]) == 5
    assert profile["model"][0] == pytest.approx(profile["baseline"][0], abs=1e-12) and profile["times"][-1] == 1.0
    assert (out / "kl_profile.png").stat().st_size > 0
    # The profile places the time points of a sampler's grid (gdds.step_grids.fitted_grid).
    grid = KLProfile.of_eval(out / "eval.json").fitted_grid(3)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and len(grid) == 4
    assert main(["sample", str(run), "--num", "2", "--steps", "3", "--sampler", "corrector", "--corrector-steps", "1",
                 "--fitted-grid", str(out / "eval.json"), "--out", str(out / "s.json")]) == 0
    saved = json.loads((out / "s.json").read_text())
    assert "corrector" in saved["sampler"] and "grid fitted to" in saved["sampler"] and len(saved["texts"]) == 2
    assert len(gdds.load(run).sample(num=1, steps=3, sampler="corrector", grid=grid, corrector_delta=1.0)) == 1
    md = (out / "eval.md").read_text()
    assert "not a likelihood" in md and "NLL upper bound" in md and "paired" in md and "t_k" in md
    assert f"zero-shot {held_out}" in capsys.readouterr().out


def test_the_continuous_bound_is_shown_only_where_it_is_finite(tmp_path):
    """Uniform kernel: with the mean parametrization the model does not copy, its continuous-time
    bound diverges and a T-sweep is shown instead; with the forward one the bound is finite."""
    for name in ("mean", "forward"):
        cfg = load_config("tiny", [*MICRO_TRAIN, "process.kernel=uniform", f"model.parametrization={name}",
                                   "train.max_steps=4", "train.eval_every=4"])
        train(cfg, tmp_path / name)
        assert main(["eval", str(tmp_path / name), "--steps", "4", "--sequences", "2", "--sample-steps", "2",
                     "--num-samples", "1", "--profile-steps", "0"]) == 0
        report = json.loads((tmp_path / name / "eval" / "eval.json").read_text())
        valid = report["valid"]
        if name == "mean":
            assert "continuous_bound" not in valid and "diverges" in valid["t_sweep"]["continuous_time_bound"]
            assert [b["steps"] for b in valid["t_sweep"]["bounds"]] == [32, 128, 512]
            assert "diverges" in (tmp_path / name / "eval" / "eval.md").read_text()
        else:
            assert "t_sweep" not in valid and valid["continuous_bound"]["samples_of_t"] > 0
        assert "kl_profile" not in report


def test_sample_and_eval_refuse_what_the_model_cannot_do_before_computing(run, tmp_path, capsys, monkeypatch):
    """--num beyond the memory and --sample-length beyond the model's length are refused once the
    model is open, before the sampler or the bound runs (they are replaced by a failure here)."""
    import gdds.cli.evaluation as cli
    import gdds.engine.evaluation.evaluate as engine

    def never(*args, **kwargs):
        raise AssertionError("computed before the bad input was refused")

    monkeypatch.setattr(cli, "generate", never)
    monkeypatch.setattr(engine, "likelihood_report", never)
    with pytest.raises(SystemExit) as info:
        main(["sample", str(run), "--num", "100000000"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--num 100000000: sampling 100000000 sequences of 32 tokens" in err
    assert "GiB" in err and "use --num" in err
    with pytest.raises(SystemExit) as info:
        main(["eval", str(run), "--sample-length", "100000", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--sample-length must be in [1, 32]; got 100000" in err
    assert not (tmp_path / "e").exists()


def test_eval_logs_the_number_of_sequences_it_bounds(run, monkeypatch):
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    import gdds.engine.evaluation.evaluate as engine

    monkeypatch.setattr(engine, "likelihood_report", stop)
    loaded, messages = load_run(run), []
    with pytest.raises(Stop):
        evaluate(loaded, EvalSettings(sequences=100000), log=messages.append)
    n = len(loaded.run.valid)
    assert messages == [f"bounding {n} validation sequences (all the split has; 100000 asked) with T = 64, "
                        "beside the no-training baseline"]


def test_a_model_folder_samples_with_a_cache_folder_it_cannot_write(tmp_path, monkeypatch, capsys):
    """R5: the kNN graph of a semantic model folder is kept in memory when the cache cannot take it
    (a cache folder under a file: nothing can be written there, even as root)."""
    cfg = load_config("tiny", [*MICRO_TRAIN, "process.kernel=semantic", "process.embeddings=cooccurrence",
                               "process.kernel_args={k: 8}", "train.max_steps=2", "train.eval_every=2"])
    train(cfg, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "model")]) == 0
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GDDS_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="could not cache the kNN graph"):
        assert main(["sample", str(tmp_path / "model"), "--num", "1", "--steps", "2"]) == 0
    assert "1 samples from" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["exact", "renoise"])
def test_samples_of_a_loaded_run_use_the_function_its_bound_uses(run, sampler):
    """The loaded run's denoiser (its device, its autocast) is the one the samplers call, as the bound
    does: samples and bound never score the model at two precisions."""
    loaded = load_run(run)
    calls = []
    own = loaded.denoiser

    def recorded():
        fn = own()

        def call(xt, t):
            calls.append(t)
            return fn(xt, t)

        return call

    loaded.denoiser = recorded
    ids, texts = generate(loaded, 2, 3, seed=0, sampler=sampler)
    assert ids.shape == (2, loaded.cfg.data.seq_len) and len(texts) == 2
    assert len(calls) == 3  # one call per step (renoise: one per step; exact: one per step, t changes)


def test_eval_passes_the_judge_convention_and_the_sample_length_to_its_judges(run, tmp_path, monkeypatch, capsys):
    """``--judge-convention mdlm`` reaches every judge, with MDLM's truncation at the sample length
    (the scoring itself: tests/engine/test_judge.py)."""
    from gdds.engine.evaluation import evaluate as evaluate_module

    loads = []

    class Recorder:
        def __init__(self, spec, **options):
            loads.append((spec, options["convention"], options["truncate"]))
            self.name = f"{spec}+convention={options['convention']}"

        def perplexity(self, texts):
            return {"judge": self.name, "perplexity": 2.0, "nats_per_token": math.log(2.0), "tokens": 1,
                    "texts": len(texts)}

    monkeypatch.setattr(evaluate_module.Judge, "load", lambda spec, **options: Recorder(spec, **options))
    common = ["eval", str(run), "--steps", "2", "--sequences", "2", "--sample-steps", "2", "--num-samples", "1",
              "--profile-steps", "0", "--sample-length", "12", "--judge", "hf:org/a", "--more-judges", "smollm2"]
    assert main([*common, "--judge-convention", "mdlm", "--out", str(tmp_path / "m")]) == 0
    assert loads == [("hf:org/a", "mdlm", 12), ("smollm2", "mdlm", 12)]
    report = json.loads((tmp_path / "m" / "eval.json").read_text())
    assert report["samples"][0]["generative_perplexity"]["judge"] == "hf:org/a+convention=mdlm"
    loads.clear()
    assert main([*common, "--out", str(tmp_path / "g")]) == 0
    assert loads == [("hf:org/a", "gdds", None), ("smollm2", "gdds", None)]
    with pytest.raises(SystemExit):
        main([*common, "--judge-convention", "sedd"])
    assert "invalid choice: 'sedd'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown judge convention"):
        EvalSettings(judge_convention="sedd")
