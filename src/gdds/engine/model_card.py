"""The ``README.md`` model card of a model folder (:mod:`gdds.engine.model_folder`): what the model
is, what it was trained on and with how much compute, its evaluation as ``gdds eval`` wrote it
(every figure labelled: a bound with its T and standard error, the snapshot CE "not a likelihood"),
and how to load it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..version import __version__
from .build import LoadedRun
from .hf_files import MODELING


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _training(loaded: LoadedRun, run_dir: Path) -> list[str]:
    cfg, tc = loaded.cfg, loaded.cfg.train
    step = int(loaded.checkpoint.name.split("-")[-1]) if loaded.checkpoint.name.startswith("step-") else None
    data = _json(run_dir / "data.json") or {}
    lines = [f"- corpus: `{cfg.data.corpus}`" + (f" (options {json.dumps(cfg.data.corpus_args)})"
                                                 if cfg.data.corpus_args else ""),
             f"- tokenizer: `{cfg.data.tokenizer}`, {loaded.run.data.tokenizer.vocab_size:,} model ids"
             + (" (compact vocabulary)" if cfg.data.compact_vocab else ""),
             f"- blocks of {cfg.data.seq_len} tokens (`{cfg.data.packing}` packing)"]
    if data.get("tokens"):
        lines.append("- tokens per split: " + ", ".join(f"{k} {v:,}" for k, v in data["tokens"].items()))
    if step is not None:
        seen = step * tc.batch_size * cfg.data.seq_len
        lines.append(f"- {step:,} optimizer steps of {tc.batch_size} blocks: {seen:,} training tokens seen")
    lines.append(f"- optimizer: AdamW, lr {tc.lr}, {tc.lr_schedule} schedule, EMA {tc.ema_decay}; "
                 f"precision {tc.precision}; device {tc.device}")
    return lines


def model_card(loaded: LoadedRun, run_dir: Path) -> str:
    """The model card of ``loaded`` (the run in ``run_dir``)."""
    cfg, run = loaded.cfg, loaded.run
    params = sum(p.numel() for p in run.model.parameters())
    arch = run.model.config
    process = "none (autoregressive)" if run.process is None else (
        f"schedule `{cfg.process.schedule}` {json.dumps(cfg.process.schedule_args)}, kernel `{cfg.process.kernel}` "
        f"{json.dumps(cfg.process.kernel_args)}" + (f", embeddings `{cfg.process.embeddings}`"
                                                    if "embeddings" in run.kernel_identity else ""))
    evaluation = run_dir / "eval" / "eval.md"
    lines = [
        "---", "library_name: gdds", "tags: [discrete-diffusion, gdds, text-generation]", "---", "",
        f"# gdds model: `{cfg.method}` on `{cfg.data.corpus}`", "",
        f"Trained with gdds {__version__} (generalized discrete diffusion from snapshots).", "",
        "## Model", "",
        f"- method: `{cfg.method}`, parametrization `{loaded.method.parametrization}`",
        f"- forward process: {process}",
        f"- network: `{type(run.model).__name__}`"
        + ("" if loaded.method.block_size is None else f" (blocks of {loaded.method.block_size} tokens)")
        + f", {arch.layers} layers, width {arch.width}, {arch.heads} heads, {params:,} parameters; "
        f"{loaded.weights} weights",
        "", "## Training", "", *_training(loaded, run_dir), "", "## Evaluation", "",
        evaluation.read_text(encoding="utf-8").strip() if evaluation.is_file() else
        "Not evaluated yet: `gdds eval MODEL_DIR` writes the bound (with T and its standard error) beside the "
        "no-training baseline.",
        "", "## Use", "", "```python", "import gdds", "model = gdds.load(\"MODEL_DIR\")",
        "print(model.sample(num=2, prompt=\"To be\"))  # the exact reverse chain",
        "print(model.nll_bound(\"Some text to score.\"))  # an upper bound on the NLL, in nats/token",
        "```", "", "```bash", "gdds sample MODEL_DIR --num 4", "gdds eval MODEL_DIR", "```", "",
        *_transformers(loaded),
    ]
    return "\n".join(lines)


def _transformers(loaded: LoadedRun) -> list[str]:
    """How to load the network with ``transformers``: its class and one call of it."""
    network = type(loaded.run.model).__name__
    modeling = MODELING[type(loaded.run.model)]
    auto = modeling.autos[-1]
    meaning = ("exact next-token logits" if loaded.run.process is None else
               "logits to read with the forward process and parametrization above")
    return [f"With `transformers`, without gdds: the `{network}` network as `{modeling.model}` "
            f"({meaning}; `modeling_gdds.py` says what they mean):", "",
            "```python", f"from transformers import {auto}, AutoTokenizer",
            f"model = {auto}.from_pretrained(\"MODEL_DIR\", trust_remote_code=True)",
            "tok = AutoTokenizer.from_pretrained(\"MODEL_DIR\", trust_remote_code=True)  # config.json's auto_map",
            "x = model.model_ids(tok(\"To be\", return_tensors=\"pt\").input_ids)  # the same ids unless compact",
            modeling.call, "```", ""]
