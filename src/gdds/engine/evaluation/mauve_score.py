"""MAUVE of samples against held-out text, with a bootstrap standard error (``gdds eval --mauve``).

MAUVE (Pillutla et al., NeurIPS 2021) embeds both sets of texts, quantizes the embeddings into
``k`` clusters (PCA, then k-means on the union) and summarizes the divergence frontier of the two
cluster histograms in ``(0, 1]``: 1 when they match. It is an estimate of a divergence-frontier
summary, neither a likelihood nor a bound, and it depends on the featurizer: MAUVE computed with
different embeddings cannot be set side by side, so its label names the featurizer.

Nothing is downloaded: the ``mauve-text`` package never featurizes here (its default would fetch
GPT-2 Large); :func:`judge_features` embeds each text with an offline judge
(:class:`~gdds.engine.evaluation.judge.Judge`, by default SmolLM2) as MAUVE's reference implementation
does with GPT-2: the final layer's hidden state at the text's last token. The standard error is
the spread of MAUVE over ``resamples`` bootstrap draws (both feature sets resampled with
replacement, seeded), each quantized again. ``mauve-text`` and ``faiss-cpu`` are optional
(``pip install 'gdds[mauve]'``) and imported inside the functions that need them.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config_checks import ConfigError
from .judge import SMOLLM2, Judge
from .judge_conventions import pad_rows
from .reports import MauveEstimate

MAUVE_INSTALL_HINT = "pip install 'gdds[mauve]'"
PER_BUCKET = 5  # the fewest texts per cluster, in each set: fewer leave the histograms mostly empty
FEATURES = "final-layer hidden state of the last token"
SE_METHOD = ("standard deviation of MAUVE over {resamples} bootstrap draws (references and samples each "
             "resampled with replacement, seed {seed}; each draw quantized again)")


class MauveError(ConfigError):
    """MAUVE cannot be estimated as asked (too few texts for the clusters, a featurizer without hidden
    states); the message says what to change."""


def import_mauve() -> Any:
    """The ``mauve`` module (of ``mauve-text``, which needs ``faiss``), or an ImportError saying what to install."""
    try:
        importlib.import_module("faiss")
        return importlib.import_module("mauve")
    except ImportError as exc:
        raise ImportError(f"MAUVE needs the packages mauve-text and faiss-cpu ({exc}): {MAUVE_INSTALL_HINT}") from exc


@dataclass(frozen=True, kw_only=True)
class MauveSettings:
    """How ``gdds eval --mauve`` estimates MAUVE: texts embedded by the judge ``featurizer`` (offline),
    ``references`` held-out texts (``None``: as many as samples), ``num_buckets`` clusters (``None``:
    MAUVE's rule, a tenth of the smaller set, at least 2), the scaling constant ``c`` of the divergence
    curve (``scaling_factor``), the k-means settings, and ``resamples`` bootstrap draws for the
    standard error; ``seed`` seeds both k-means and the bootstrap."""

    featurizer: str = SMOLLM2
    references: int | None = None
    resamples: int = 10
    num_buckets: int | None = None
    scaling_factor: float = 5.0
    kmeans_explained_var: float = 0.9
    kmeans_num_redo: int = 5
    kmeans_max_iter: int = 500
    divergence_curve_points: int = 25
    seed: int = 25

    def __post_init__(self) -> None:
        if self.references is not None and self.references < 1:
            raise ValueError("the number of MAUVE reference texts must be >= 1")
        if self.resamples < 2:
            raise ValueError("MAUVE's standard error needs at least 2 bootstrap resamples")
        if self.num_buckets is not None and self.num_buckets < 2:
            raise ValueError("MAUVE needs at least 2 buckets (clusters)")
        if not self.scaling_factor > 0:
            raise ValueError("MAUVE's scaling factor must be positive")

    def buckets(self, n_references: int, n_samples: int) -> int:
        """The number of clusters for these set sizes (MAUVE's ``'auto'``: ``round(min / 10)``, at least 2)."""
        return self.num_buckets or max(2, round(min(n_references, n_samples) / 10))

    def check(self, n_references: int, n_samples: int) -> None:
        """:class:`MauveError` unless each set has :data:`PER_BUCKET` texts per cluster."""
        k = self.buckets(n_references, n_samples)
        if min(n_references, n_samples) < PER_BUCKET * k:
            raise MauveError(f"MAUVE with {k} buckets needs at least {PER_BUCKET * k} texts in each set "
                             f"({PER_BUCKET} per bucket); got {n_references} reference texts and {n_samples} "
                             "samples: raise --num-samples (and --mauve-references)")


def mauve_label(featurizer: str) -> str:
    """The metric's label: an estimate, and the embeddings it was computed with."""
    return (f"MAUVE estimate (features: {featurizer}, {FEATURES}; a divergence-frontier summary, "
            "not a likelihood; comparable only under the same featurizer)")


def mauve_estimate(p_features: np.ndarray, q_features: np.ndarray, settings: MauveSettings,
                   featurizer: str) -> MauveEstimate:
    """MAUVE of ``q_features`` (samples, ``[n_q, d]``) against ``p_features`` (references, ``[n_p, d]``) by
    ``mauve-text`` on features given (it featurizes nothing), and the standard deviation over
    ``settings.resamples`` bootstrap draws of both sets."""
    p, q = np.asarray(p_features, dtype=np.float32), np.asarray(q_features, dtype=np.float32)
    settings.check(len(p), len(q))
    mauve, k, s = import_mauve(), settings.buckets(len(p), len(q)), settings

    def score(a: np.ndarray, b: np.ndarray) -> float:
        return float(mauve.compute_mauve(
            p_features=a, q_features=b, num_buckets=k, kmeans_explained_var=s.kmeans_explained_var,
            kmeans_num_redo=s.kmeans_num_redo, kmeans_max_iter=s.kmeans_max_iter,
            divergence_curve_discretization_size=s.divergence_curve_points, mauve_scaling_factor=s.scaling_factor,
            seed=s.seed, verbose=False).mauve)

    rng = np.random.default_rng(s.seed)
    draws = [score(p[rng.integers(len(p), size=len(p))], q[rng.integers(len(q), size=len(q))])
             for _ in range(s.resamples)]
    recorded = {key: v for key, v in dataclasses.asdict(s).items() if key not in ("featurizer", "references")}
    return MauveEstimate(mauve_label(featurizer), featurizer, score(p, q), float(np.std(draws, ddof=1)), len(p),
                         len(q), k, SE_METHOD.format(resamples=s.resamples, seed=s.seed), recorded)


@torch.inference_mode()
def judge_features(judge: Judge, texts: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """One vector per text, ``[n, d]`` float32: the judge's final-layer hidden state at the text's last
    token (the text as the judge scores it, :meth:`Judge.encode`, cut to its first ``max_length`` tokens),
    as MAUVE's reference featurizer does with GPT-2 Large."""
    encoded = [judge.encode(text)[:judge.max_length] for text in texts]
    if any(not ids for ids in encoded):
        raise MauveError(f"MAUVE's featurizer {judge.name} got an empty text and has no prefix token to embed")
    out = []
    for a in range(0, len(encoded), batch_size):
        batch = encoded[a:a + batch_size]
        ids, mask = pad_rows(batch, judge.pad_id)
        hidden = getattr(judge.model(input_ids=ids.to(judge.device), attention_mask=mask.to(judge.device),
                                     output_hidden_states=True, use_cache=False), "hidden_states", None)
        if hidden is None:
            raise MauveError(f"MAUVE's featurizer {judge.name} gives no hidden states: use a Hugging Face causal "
                             "LM (smollm2, a local folder or a cached hub name)")
        last = torch.tensor([len(row) - 1 for row in batch], device=hidden[-1].device)
        out.append(hidden[-1][torch.arange(len(batch), device=last.device), last].float().cpu())
    return torch.cat(out).numpy()


def reference_texts(tokenizer: Any, blocks: torch.Tensor, length: int) -> list[str]:
    """The held-out texts MAUVE compares samples with: each block's first ``length`` tokens (the
    samples' length), padding and mask tokens left out, decoded as samples are."""
    drop = [i for i in (tokenizer.pad_id, tokenizer.mask_id) if i is not None]
    return [tokenizer.decode([i for i in row[:length].tolist() if i not in drop]) for row in blocks]


def mauve_of_samples(settings: MauveSettings, references: Sequence[str], samples: Sequence[Sequence[str]],
                     device: str | torch.device = "cpu") -> list[MauveEstimate]:
    """MAUVE of each set of ``samples`` against the same ``references``, embedded once by
    ``settings.featurizer`` (:func:`judge_features`, in float32 on ``device``)."""
    import_mauve()  # fails before the featurizer loads
    for texts in samples:
        settings.check(len(references), len(texts))
    judge = Judge.load(settings.featurizer, device=device)
    p = judge_features(judge, references)
    return [mauve_estimate(p, judge_features(judge, texts), settings, judge.name) for texts in samples]
