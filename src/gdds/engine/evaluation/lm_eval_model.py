"""``GddsLM``: a gdds model folder as an lm-evaluation-harness model, registered as ``gdds``.

Importing this module imports ``lm_eval`` (the ``lmeval`` extra) and registers the class; nothing else
in gdds imports it, so ``import gdds`` never loads ``lm_eval``. lm-eval 0.4.x has no plugin discovery,
so a bare ``lm_eval --model gdds`` cannot find the class: run ``gdds lm-eval --model gdds ...`` (this
module imported, then lm-eval's own command line), or in Python import this module and call
``lm_eval.simple_evaluate(model=GddsLM(pretrained=FOLDER), ...)`` (``docs/lm-eval.md``).

What the harness receives are **lower bounds on log-likelihoods** (upper bounds on NLL and perplexity):

- ``loglikelihood(context, continuation)``: minus the mean of ``draws`` independent estimates of the
  ``steps``-step bound on ``-log p(continuation | context)``, computed on the row ``[BOS] context
  continuation [EOS]`` padded to the model's length with only the continuation's positions scored; BOS,
  context, EOS and padding are held clean in every ``x_t`` (as the sampler holds a prompt), so this is the
  bound of :func:`gdds.nll_bound` with ``keep`` on the continuation: a valid bound on the continuation
  given everything else in the row (its length included, as the LLaDA and Dream adapters condition).
  A context too long for the row loses its oldest tokens. ``is_greedy`` is always False: a diffusion
  model has no left-to-right argmax to compare with, and a bound cannot certify one.
- ``loglikelihood_rolling(text)``: minus the bound of :meth:`gdds.engine.api.Model.nll_bound` on the text,
  the same number for the same ``steps``, ``draws``, ``seed`` (and ``bound_batch`` 8): windows of ``length -
  2`` tokens, each between BOS and EOS, without overlap, each scored given nothing before it (a bound on the
  text under a model that treats its windows as independent, so never tighter than one long window would be).
- ``generate_until(context, gen_kwargs)``: the method's default sampler (the exact reverse chain in
  ``steps`` steps for a diffusion model) with the context as a prompt (its tokens fixed), cut to
  ``max_gen_toks`` tokens, at the first end-of-text token and at the first of the ``until`` strings.

Every request is scored with its own generator seeded ``seed`` (the same draws for every answer of a
question, which makes their differences less noisy), so a number never depends on the other requests.
The standard error of each log-likelihood (over the independent draws) is in :attr:`GddsLM.records`, is
logged, and is written with each value to ``se_file`` when given: lm-eval's results have no place for it.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ...files import write_text_atomically
from ..api import Model
from .generation import before_eos, generate

LOG = logging.getLogger(__name__)
NOTE = ("gdds: every log-likelihood given to lm-eval is a LOWER BOUND ({label}, mean of {draws} draws): "
        "perplexities and NLLs are upper bounds; per-request standard errors: GddsLM.records{file}")


@register_model("gdds")
class GddsLM(LM):
    """A gdds model (``pretrained``: a model folder of ``gdds export`` or a run folder) in lm-eval; the
    module docstring says what each request type returns. ``draws`` (at least 2): independent estimates
    per request (cost grows with it; the standard error shrinks as ``1 / sqrt(draws)``); ``steps``: ``T``,
    the bound's grid and the sampler's steps (the bound's cost does not grow with ``T``: one drawn term per
    estimate; a larger ``T`` gives a tighter bound); ``bound_batch``: rows (windows) per network call within a
    request, 8 as in :meth:`gdds.engine.api.Model.nll_bound` (it changes which draws are made, not their law);
    ``se_file``: a JSON file of every request's value and standard error. lm-eval's own ``batch_size`` and
    ``max_batch_size`` are accepted and unused: requests are scored one by one, each from its own seed."""

    def __init__(self, pretrained: str, draws: int = 8, steps: int = 64, bound_batch: int = 8,
                 device: str | None = None, seed: int = 0, se_file: str | None = None,
                 batch_size: int | str | None = None, max_batch_size: int | None = None) -> None:
        super().__init__()
        self.draws, self.steps, self.seed = int(draws), int(steps), int(seed)
        if self.draws < 2 or self.steps < 1 or int(bound_batch) < 1:
            raise ValueError(f"draws must be at least 2 (a standard error needs two), steps and bound_batch at "
                             f"least 1; got draws={draws}, steps={steps}, bound_batch={bound_batch}")
        self.bound_batch = int(bound_batch)
        self.model = Model.load(pretrained, device=device or "auto")
        self.se_file = None if se_file is None else Path(se_file)
        self.records: list[dict[str, Any]] = []
        self.label = self.model.bound_label(self.steps)
        LOG.warning(NOTE.format(label=self.label, draws=self.draws, file=f" and {se_file}" if se_file else ""))

    @property
    def device(self) -> torch.device:
        return self.model.loaded.device

    def _encode(self, text: str, what: str) -> list[int]:
        return self.model.tokenizer.encode_exact(text, what)

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's convention for causal models: the context's trailing spaces move to the continuation,
        and the continuation's ids are those of the whole text after the context's."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        ctx = self._encode(context, "the context") if context else []
        return ctx, self._encode(context + continuation, "the context and continuation")[len(ctx):]

    def conditional(self, context: list[int], continuation: list[int]) -> tuple[float, float]:
        """``(log-likelihood lower bound, standard error)`` of ``continuation`` given ``context`` (ids)."""
        room = self.model.length - 2 - len(continuation)
        if not continuation or room < 0:
            raise ValueError(f"a continuation must have 1 to {self.model.length - 2} tokens (the model's length "
                             f"less BOS and EOS); this one has {len(continuation)}")
        context = context[len(context) - room:] if len(context) > room else context
        x0, _ = self.model.padded([context + continuation])
        keep = torch.zeros_like(x0, dtype=torch.bool)
        keep[0, 1 + len(context):1 + len(context) + len(continuation)] = True
        return self._summary(self.model.bound_totals(x0, keep, self.steps, self.draws, self.seed, self.bound_batch))

    def rolling(self, text: str) -> tuple[float, float]:
        """``(log-likelihood lower bound, standard error)`` of the whole ``text`` (windows: module docstring)."""
        ids, width = self._encode(text, "the text"), self.model.length - 2
        if not ids:
            return 0.0, 0.0
        x0, keep = self.model.padded([ids[a:a + width] for a in range(0, len(ids), width)])
        return self._summary(self.model.bound_totals(x0, keep, self.steps, self.draws, self.seed, self.bound_batch))

    def _summary(self, totals: torch.Tensor) -> tuple[float, float]:
        per_draw = totals.sum(1)
        return -float(per_draw.mean()), float(per_draw.std(unbiased=True)) / math.sqrt(self.draws)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            value, se = self.conditional(*self._pair(*request.args))
            self._record("loglikelihood", request.args, value, se)
            out.append((value, False))
            self.cache_hook.add_partial("loglikelihood", request.args, (value, False))
        self._flush("loglikelihood", len(requests))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            value, se = self.rolling(request.args[0])
            self._record("loglikelihood_rolling", request.args, value, se)
            out.append(value)
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, value)
        self._flush("loglikelihood_rolling", len(requests))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or []
            text = self.generate(context, int(kwargs.get("max_gen_toks", 256)), [until] if isinstance(until, str)
                                 else list(until))
            out.append(text)
            self.cache_hook.add_partial("generate_until", request.args, text)
        return out

    def generate(self, context: str, max_gen_toks: int, until: list[str]) -> str:
        """The text generated after ``context`` (module docstring): at most ``max_gen_toks`` tokens, before
        the first end-of-text token and the first stop string of ``until``."""
        prompt, ids = self.generated_ids(context, max_gen_toks)
        tok = self.model.tokenizer
        text = tok.decode(before_eos(ids[len(prompt):len(prompt) + max_gen_toks], tok.eos_id, 0))
        cut = min((text.index(stop) for stop in until if stop and stop in text), default=len(text))
        return text[:cut]

    def generated_ids(self, context: str, max_gen_toks: int) -> tuple[list[int], list[int]]:
        """The prompt's ids (the context's last tokens that leave ``max_gen_toks`` free positions, at least
        one) and the whole generated row, the prompt's positions included."""
        loaded = self.model.loaded
        ids = self._encode(context, "the context") if context else []
        if loaded.method.block_size is not None:
            length = len(ids) + max_gen_toks
        else:
            length = self.model.length
            keep = length - max(1, min(max_gen_toks, length - 1))
            ids = ids[len(ids) - keep:] if len(ids) > keep else ids
        rows, _ = generate(loaded, 1, self.steps, self.seed, length, prompts=[ids])
        return ids, rows[0].tolist()

    def _record(self, kind: str, args: tuple, value: float, se: float) -> None:
        self.records.append({"request": kind, "args": list(args), "loglikelihood_lower_bound": value,
                             "standard_error": se})

    def _flush(self, kind: str, count: int) -> None:
        """Log the requests just scored (their summed bound and its standard error) and write ``se_file``."""
        done = self.records[len(self.records) - count:]
        total = sum(r["loglikelihood_lower_bound"] for r in done)
        se = sum(r["standard_error"] for r in done) / max(1, count)
        LOG.warning("gdds: %d %s requests: log-likelihoods are lower bounds (%s, %d draws), summed %.4f nats, "
                    "standard error %.4f nats per request on average", count, kind, self.label, self.draws, total, se)
        if self.se_file is not None:
            meta = {"quantity": f"lower bounds on log-likelihoods in nats: minus the {self.label}",
                    "standard_error": f"over {self.draws} independent draws of the bound (the mean's)",
                    "draws": self.draws, "steps": self.steps, "seed": self.seed, "records": self.records}
            write_text_atomically(self.se_file, json.dumps(meta, indent=1) + "\n")
