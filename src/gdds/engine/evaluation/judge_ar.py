"""Our own autoregressive checkpoints as judges (``gdds eval --judge RUN_DIR``).

:class:`gdds.engine.evaluation.judge.Judge` scores text with a Hugging Face-style causal LM: a model
whose ``logits[:, i]`` predict token ``i + 1`` and a tokenizer called as
``tokenizer(text)["input_ids"]``. :class:`gdds.models.causal.CausalLM` predicts
token ``i`` at position ``i`` after a learned start token, so the adapters here

- give the tokenizer the start token as its BOS (``<start>``, id ``V``): the judge
  puts it before every text, so the first token is scored too;
- drop that start token from a window that begins with it (the model prepends its
  own) and otherwise read the window as context after the start token (the later
  windows of a text longer than the model's context; a window one token longer than
  the model's length loses its first token of context);
- shift the model's predictions by one position into the Hugging Face layout.

The judge's name hashes the checkpoint's weights and configuration. No optional
dependency is needed.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from ..build import load_run
from ..checkpoint import latest_checkpoint

START = "<start>"


class CausalAdapter(nn.Module):
    """A :class:`CausalLM` behind the Hugging Face call ``model(input_ids=..., attention_mask=...)``."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.config = SimpleNamespace(max_position_embeddings=lm.config.max_len + 1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any) -> SimpleNamespace:
        """Hugging Face-layout logits ``[B, n, V]``: position ``j`` predicts token ``j + 1``
        (the last position predicts nothing and is left at zero)."""
        ids = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, 0)
        starts = ids[:, 0] == self.lm.start_id
        B, n = ids.shape
        logits = torch.zeros(B, n, self.lm.config.vocab_size, device=ids.device)
        if starts.any():  # [start, x_1..x_{n-1}]: the model's own start token replaces ours
            logits[starts, :n - 1] = self.lm(ids[starts, 1:]).float()
        if (~starts).any():  # a window inside a text; beyond the model's length, its first token is dropped
            drop = max(0, n - self.lm.config.max_len)
            logits[~starts, :n - 1] = self.lm(ids[~starts, drop:])[:, 1 - drop:].float()
        return SimpleNamespace(logits=logits)


class TokenizerAdapter:
    """Our text tokenizer as ``tokenizer(text)["input_ids"]`` with the start token as BOS."""

    def __init__(self, tokenizer: Any, start_id: int):
        self.tokenizer = tokenizer
        self.bos_token, self.bos_token_id = START, start_id
        self.pad_token_id = self.eos_token_id = None

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": self.tokenizer.encode(text)}

    def get_vocab(self) -> dict[str, int]:
        return {START: self.bos_token_id}


def load_ar_judge(folder: Path, device: str | torch.device = "cpu") -> tuple[CausalAdapter, TokenizerAdapter,
                                                                             list[Path], int]:
    """Model and tokenizer adapters, the files that define them, and the context length,
    from a run folder or one of its ``step-*`` checkpoints; the run's method must give exact
    likelihoods (``method: ar``)."""
    folder = Path(folder)
    step = folder if (folder / "manifest.json").is_file() else latest_checkpoint(folder)
    loaded = load_run(step.parent.parent, device=str(device), checkpoint=step)
    if not loaded.method.exact_likelihood:
        raise ValueError(f"{folder} is a gdds run with method {loaded.cfg.method!r}; only autoregressive runs "
                         "(method: ar) can be judges, because they give exact likelihoods")
    weights = step / ("ema.safetensors" if loaded.weights == "ema" else "model.safetensors")
    files = [weights, step / "config.yaml"]
    model, tokenizer = CausalAdapter(loaded.run.model).eval(), loaded.run.data.tokenizer
    return model, TokenizerAdapter(tokenizer, loaded.run.model.start_id), files, loaded.cfg.data.seq_len + 1
