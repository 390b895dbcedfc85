"""lm-evaluation-harness on a gdds model folder (``GddsLM``, ``gdds lm-eval``), offline: a micro model exported
here, tasks written here from local JSON files. The harness's accuracy is the one the model's own
log-likelihood bounds give, and its perplexities are those of ``gdds.Model.nll_bound`` on the same texts."""
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import gdds
from gdds.cli import main
from helpers import micro_run

lm_eval = pytest.importorskip("lm_eval")
from gdds.engine.evaluation.lm_eval_model import GddsLM  # noqa: E402  (needs lm_eval)

STEPS, DRAWS, SEED = 8, 2, 3
QUESTIONS = [  # characters of the micro corpus only (the character tokenizer knows no others)
    {"question": "to be or not to", "choices": ["be", "the", "and"], "answer": 0},
    {"question": "my good lord,", "choices": ["i will", "sir", "the king"], "answer": 2},
    {"question": "what is the", "choices": ["matter", "end", "night"], "answer": 0},
]
TEXTS = ["the king is dead", "my lord, i will not", "what is the matter with you, and the night that was so long"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval-model")
    assert main(["export", str(micro_run(root, "train.max_steps=3")), str(root / "model")]) == 0
    return root / "model"


def write_tasks(folder):
    """A multiple-choice task and a rolling-perplexity task on local JSON-lines files in ``folder``."""
    (folder / "mc.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (folder / "ppl.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    common = ("dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {cache}\n"
              "test_split: test\n")
    (folder / "gdds_mc.yaml").write_text(
        "task: gdds_mc\n" + common.format(data=folder / "mc.jsonl", cache=folder / "hf-cache")
        + "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    (folder / "gdds_ppl.yaml").write_text(
        "task: gdds_ppl\n" + common.format(data=folder / "ppl.jsonl", cache=folder / "hf-cache")
        + "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\nmetric_list:\n"
        "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
    return folder


def expected_perplexities(folder) -> dict[str, float]:
    """The rolling task's numbers from gdds's own bound API on the same texts, seed and draws."""
    model = gdds.load(folder, device="cpu")
    nats = sum(s.nats_per_token * s.tokens for s in (model.nll_bound(t, STEPS, DRAWS, SEED) for t in TEXTS))
    words = sum(len(re.split(r"\s+", t)) for t in TEXTS)
    nbytes = sum(len(t.encode()) for t in TEXTS)
    return {"word_perplexity": math.exp(nats / words), "byte_perplexity": math.exp(nats / nbytes),
            "bits_per_byte": nats / nbytes / math.log(2)}


def test_harness_accuracy_and_perplexity_are_the_models_bounds(folder, tmp_path):
    from lm_eval.tasks import TaskManager

    tasks = write_tasks(tmp_path)
    lm = GddsLM(pretrained=str(folder), draws=DRAWS, steps=STEPS, seed=SEED, device="cpu",
                se_file=str(tmp_path / "se.json"))
    out = lm_eval.simple_evaluate(model=lm, tasks=["gdds_mc", "gdds_ppl"],
                                  task_manager=TaskManager(include_path=str(tasks)), bootstrap_iters=0)
    scored = {tuple(r["args"]): r for r in lm.records if r["request"] == "loglikelihood"}
    assert len(scored) == sum(len(q["choices"]) for q in QUESTIONS)
    right = []
    for q in QUESTIONS:
        bounds = [scored[(q["question"], " " + choice)]["loglikelihood_lower_bound"] for choice in q["choices"]]
        right.append(max(range(len(bounds)), key=bounds.__getitem__) == q["answer"])
    assert out["results"]["gdds_mc"]["acc,none"] == pytest.approx(sum(right) / len(right))
    for name, value in expected_perplexities(folder).items():
        assert out["results"]["gdds_ppl"][f"{name},none"] == pytest.approx(value, rel=1e-9)
    saved = json.loads((tmp_path / "se.json").read_text())
    assert "lower bounds" in saved["quantity"] and len(saved["records"]) == len(scored) + len(TEXTS)
    assert all(r["standard_error"] > 0 and r["loglikelihood_lower_bound"] < 0 for r in saved["records"])
    context, continuation = QUESTIONS[0]["question"], " be"  # a request's number does not depend on the others
    value = lm.loglikelihood([SimpleNamespace(args=(context, continuation))])[0]
    assert value == (scored[(context, continuation)]["loglikelihood_lower_bound"], False)


def test_conditional_bound_scores_the_continuation_given_the_context(folder, monkeypatch):
    """Every ``x_t`` the network sees holds BOS, the context, EOS and padding clean and only the continuation
    noised; the bound depends on the context; a too long context loses its oldest tokens; a continuation
    longer than the row cannot be bounded and says so; the draws give a positive standard error."""
    lm = GddsLM(pretrained=str(folder), draws=4, steps=STEPS, seed=SEED, device="cpu")
    ids = lm.model.tokenizer.encode
    seen, network = [], lm.model.loaded.denoiser()
    monkeypatch.setattr(lm.model.loaded, "denoiser", lambda: lambda xt, t: seen.append(xt.clone()) or network(xt, t))
    context, continuation = ids("to be or not to"), ids(" be")
    x0, _ = lm.model.padded([context + continuation])
    lm.conditional(context, continuation)
    free = torch.zeros(x0.shape[1], dtype=torch.bool)
    free[1 + len(context):1 + len(context) + len(continuation)] = True
    assert seen and all(torch.equal(xt[:, ~free], x0[:, ~free].expand(len(xt), -1)) for xt in seen)
    assert any(not torch.equal(xt[:, free], x0[:, free].expand(len(xt), -1)) for xt in seen)
    monkeypatch.undo()
    a, se_a = lm.conditional(ids("to be or not to"), ids(" be"))
    b, _ = lm.conditional(ids("my good lord,"), ids(" be"))
    assert a < 0 and se_a > 0 and a != b
    long_context = ids("what is the matter with you, and the night that was so long")
    assert lm.conditional(long_context, ids(" be"))[0] == lm.conditional(long_context[-(lm.model.length - 5):],
                                                                           ids(" be"))[0]
    with pytest.raises(ValueError, match="continuation must have"):
        lm.conditional([], ids("the king is dead, my lord, and the night"))


def test_generate_until_keeps_the_context_and_cuts_at_the_stop_string(folder):
    lm = GddsLM(pretrained=str(folder), draws=2, steps=4, seed=1, device="cpu")
    tok = lm.model.tokenizer
    prompt, row = lm.generated_ids("to be or", 12)
    assert prompt == tok.encode("to be or") and row[:len(prompt)] == prompt and len(row) == lm.model.length
    full = lm.generate("to be or", 12, [])
    new = row[len(prompt):len(prompt) + 12]
    assert full and full == tok.decode(new[:new.index(tok.eos_id)] if tok.eos_id in new else new)
    long_context = " ".join(TEXTS)  # too long: its last tokens are kept, leaving max_gen_toks free positions
    assert lm.generated_ids(long_context, 12)[0] == tok.encode(long_context)[-(lm.model.length - 12):]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    request = SimpleNamespace(args=("to be or", {"until": [stop, "never appears"], "max_gen_toks": 12}))
    assert lm.generate_until([request]) == [full[:full.index(stop)]]


def test_gdds_lm_eval_command_runs_lm_evals_cli_with_gdds_registered(folder, tmp_path, capsys):
    assert main(["lm-eval", "--help"]) == 0
    assert "lm-eval" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:  # only lm-eval takes arguments gdds does not know
        main(["export", str(folder), str(tmp_path / "copy"), "--model", "gdds"])
    assert usage.value.code == 2 and "unrecognized arguments: --model gdds" in capsys.readouterr().err
    tasks = write_tasks(tmp_path)
    args = f"pretrained={folder},draws={DRAWS},steps={STEPS},seed={SEED}"
    assert main(["lm-eval", "--model", "gdds", "--model_args", args, "--tasks", "gdds_ppl", "--include_path",
                 str(tasks), "--output_path", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert "LOWER bounds" in capsys.readouterr().err
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]["gdds_ppl"]
    for name, value in expected_perplexities(folder).items():
        assert results[f"{name},none"] == pytest.approx(value, rel=1e-9)
    assert main(["lm-eval", "--model", "gdds", "--model_args", "pretrained=/no/such/folder", "--tasks",
                 "gdds_ppl", "--include_path", str(tasks)]) == 1


def test_the_python_route_of_docs_lm_eval_md_runs(folder, tmp_path):
    """docs/lm-eval.md's python block, on the micro model and the rolling task written here."""
    page = Path(__file__).resolve().parents[2] / "docs" / "lm-eval.md"
    block = re.search(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL).group(1)
    tasks = write_tasks(tmp_path)
    for old, new in [('"results/demo-model"', repr(str(folder))), ('"TASK"', '"gdds_ppl"'), ('"DIR"', repr(str(tasks))),
                     ('"se.json"', repr(str(tmp_path / "se.json")))]:
        assert old in block
        block = block.replace(old, new)
    namespace: dict = {}
    exec(compile(block, str(page), "exec"), namespace)
    assert namespace["out"]["results"]["gdds_ppl"]["word_perplexity,none"] > 1
    assert len(json.loads((tmp_path / "se.json").read_text())["records"]) == len(TEXTS)
