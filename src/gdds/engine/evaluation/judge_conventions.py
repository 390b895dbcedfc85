"""How a judge turns texts into scored tokens: gdds's convention and the one of MDLM and Duo.

``gdds`` (the default, :class:`gdds.engine.evaluation.judge.Judge`): each text alone, a prefix token
so that its first token is scored, a sliding window over long texts, every text token scored once.

``mdlm``: the procedure of the generative-perplexity code of MDLM (kuleshov-group/mdlm,
``diffusion.py``: ``Diffusion.eval_retokenize`` and ``Diffusion.compute_generative_perplexity``) and
Duo (s-sahoo/duo, ``metrics.py``: ``Metrics._eval_retokenize`` and
``Metrics.record_generative_perplexity``), which are the same procedure:

- each text is tokenised by the judge's tokenizer with its own special tokens (GPT-2's adds none, so
  no BOS), truncated to ``truncate`` tokens (theirs: the diffusion model's sequence length), and all
  the texts of one call are padded to the longest (on the tokenizer's padding side, with its pad
  token, else its EOS): theirs are the samples of one sampling batch (``loader.eval_batch_size``),
  ``gdds eval``'s the samples of one setting, which it draws in one batch;
- each padded row is cut into consecutive chunks of ``context`` tokens (their ``eval_context_size``),
  no overlap; in each chunk the first token is not scored and token ``j`` is scored from the
  logits at ``j - 1``, with the attention mask of the padding (rows go through the judge
  ``batch_size`` at a time, theirs ``eval.perplexity_batch_size`` = 8 at a time: rows are
  independent);
- a target is scored when it is not the EOS token, or when it is the chunk's first EOS: padding is
  EOS for GPT-2, so a text shorter than the longest of the call gets one scored EOS after its end,
  and text after a second EOS is still scored;
- the perplexity is ``exp`` of the total NLL over the total number of scored tokens of all texts.

What differs: their last rows are dropped when the number of samples of a call is not a multiple of
their batch of 8 (never in their scripts, whose sampling batches are 1, 8 or 64; we score every
text); they load the judge in float32, while ``gdds eval`` loads it in bfloat16 where it
samples in half precision (on a GPU; the log-softmax is float32 here); they pick the chunk length by
the judge's name (4096 for a Llama-2, else 1024), we take the judge's stated context; they decode
their samples with the special tokens of the diffusion tokenizer left in the text, while the texts
given here are whatever the caller decoded (``gdds eval``: gdds's tokenizer).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

GDDS = "gdds"
MDLM = "mdlm"
CONVENTIONS = (GDDS, MDLM)
CONVENTION_TAG = "+convention="  # how a judge's name (Judge.name) records a convention other than gdds's


def check_convention(convention: str) -> str:
    """``convention`` if it is one of :data:`CONVENTIONS`, else :class:`ValueError`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown judge convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    return convention


def pad_rows(rows: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of token-id ``rows`` padded with ``pad`` to the longest, on the
    right (or the ``left``): the one padding of every judge call (both conventions, MAUVE's features)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _padded(tokenizer: Any, texts: Sequence[str], truncate: int | None, pad: int) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of ``texts`` tokenised with the tokenizer's special tokens,
    truncated to ``truncate`` tokens and padded to the longest on the tokenizer's padding side."""
    rows = [list(tokenizer(text, truncation=truncate is not None, max_length=truncate, verbose=False)["input_ids"])
            for text in texts]
    return pad_rows(rows, pad, left=getattr(tokenizer, "padding_side", "right") == "left")


def mdlm_scored(chunk: Tensor, eos: int) -> Tensor:
    """Which targets ``chunk[:, 1:]`` the MDLM/Duo convention scores: those that are not ``eos``,
    and the chunk's first ``eos`` (a bool tensor of shape ``(rows, width - 1)``)."""
    is_eos = chunk == eos
    first_eos = is_eos.cumsum(-1) == 1
    return (first_eos | ~is_eos)[:, 1:]


def mdlm_nll_per_text(model: Any, tokenizer: Any, texts: Sequence[str], *, context: int, truncate: int | None,
                      batch_size: int) -> tuple[list[float], list[int]]:
    """Each text's negative log-likelihood (nats) and number of scored tokens under the MDLM/Duo
    convention (module docstring): ``texts`` are padded together, so a text's figures depend on the
    longest of them; ``batch_size`` rows go through the model at once."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the mdlm judge convention needs a Hugging Face tokenizer with an EOS token")
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else eos
    device = next(model.parameters()).device
    nats, counts = [0.0] * len(texts), [0] * len(texts)
    if not texts:
        return nats, counts
    ids, mask = _padded(tokenizer, texts, truncate, pad)
    with torch.inference_mode():
        for start in range(0, ids.shape[1], context):
            chunk, chunk_mask = ids[:, start:start + context], mask[:, start:start + context]
            scored = mdlm_scored(chunk, eos)
            for r in range(0, chunk.shape[0], batch_size):
                rows = slice(r, r + batch_size)
                logits = model(input_ids=chunk[rows].to(device), attention_mask=chunk_mask[rows].to(device),
                               use_cache=False).logits
                logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                picked = logp.gather(-1, chunk[rows, 1:, None].to(device)).squeeze(-1).double().cpu()
                for k, (row_logp, row_scored) in enumerate(zip(picked, scored[rows], strict=True)):
                    nats[r + k] -= float(row_logp[row_scored].sum())
                    counts[r + k] += int(row_scored.sum())
    return nats, counts
