"""``gdds.load``: a trained model with text in and text out.

    model = gdds.load("runs/demo-model")              # a model folder, a run folder or a Hub cache name
    texts = model.sample(num=2, prompt="To be")       # the exact reverse chain, strings out
    texts = model.sample(prompts=["To be", "Once"])   # batched prompts: one text each, text i seeded seed + i
    score = model.nll_bound("Some text to score.")    # an upper bound on the NLL: nats/token, bits/char

``sample`` takes a prompt (fixed at the start) or an infilling template (``"The ___ sat on the ___."``:
each blank becomes ``blank_tokens`` free positions, everything else is fixed). ``nll_bound`` scores
each text as ``[BOS] text [EOS]`` (a text longer than the model's length in pieces of ``L - 2``
tokens, each between BOS and EOS), padding excluded: the ``steps``-step bound, averaged over
independent draws, with the standard error of that average (the exact NLL for an autoregressive
model), labelled. Text the vocabulary cannot represent (characters the model never saw) is neither
scored nor used as a prompt: :class:`gdds.data.UnknownTextError` names it, since a figure for text
turned into ``<unk>`` would not be a bound on that text.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..categorical import Decoding
from ..data import PaddedSentences, TextTokenizer, TokenArray
from ..files import interrupted_replace
from ..likelihood import nll_bound
from ..process import ForwardProcess
from ..sampling import Denoiser
from .build import LoadedRun
from .evaluation.evaluate import BOUND_METRIC
from .evaluation.generation import generate
from .model_folder import export_model, is_model_folder, open_model


@dataclass(frozen=True)
class Score:
    """The bound on a set of texts (``metric`` says which figure: a T-step upper bound or an exact NLL)."""

    metric: str
    nats_per_token: float
    standard_error: float
    bits_per_character: float
    tokens: int
    characters: int
    texts: int

    def __str__(self) -> str:
        return (f"{self.metric}: {self.nats_per_token:.4f} ± {self.standard_error:.4f} nats/token, "
                f"{self.bits_per_character:.4f} bits/character ({self.tokens} tokens, {self.texts} texts)")


def _hub_path(name: str) -> Path:
    """A Hugging Face Hub model already in the local cache (never downloaded)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as err:
        raise FileNotFoundError(f"no folder {name!r}, and huggingface_hub is not installed to look it up") from err
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as err:
        raise FileNotFoundError(f"{name!r} is neither a folder nor a model in the local Hugging Face cache; "
                                "gdds never downloads: download it once where the Hub is reachable") from err


class Model:
    """A trained model (see the module docstring); :func:`gdds.load` makes one."""

    def __init__(self, loaded: LoadedRun) -> None:
        self.loaded = loaded

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Model:
        """A model folder, a run folder (its latest checkpoint) or a model in the local Hub cache."""
        folder = Path(path).expanduser()
        local = folder.exists() or interrupted_replace(folder) is not None
        return cls(open_model(folder if local else _hub_path(str(path)), device, with_data=False))

    @property
    def tokenizer(self) -> TextTokenizer:
        return self.loaded.run.data.tokenizer

    @property
    def process(self) -> ForwardProcess | None:
        return self.loaded.run.process

    @property
    def denoiser(self) -> Denoiser:
        """``(x_t, t) -> logits`` on the model's device (bf16 autocast on a GPU)."""
        return self.loaded.denoiser()

    @property
    def length(self) -> int:
        return self.loaded.cfg.data.seq_len

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write this model's folder (:func:`export_model`: a verified copy of the model folder it was
        loaded from, or the export of the run folder it was loaded from); an existing ``folder`` is
        replaced, atomically, only with ``overwrite``."""
        source = self.loaded.checkpoint  # a model folder, or a run's checkpoint RUN_DIR/checkpoints/step-N
        origin = source if is_model_folder(source) else source.parent.parent
        return export_model(origin, folder, self.loaded.weights, overwrite)

    def _template(self, length: int, prompt: str | None, infill: str | None, blank: str,
                  blank_tokens: int) -> list[int]:
        """The ids fixed at the start of every sample, ``-1`` for each free position of a blank."""
        if prompt is not None and infill is not None:
            raise ValueError("give a prompt or an infilling template, not both")
        ids: list[int] = []
        if infill is not None:
            if blank not in infill:
                raise ValueError(f"the infilling template has no blank {blank!r}")
            for i, piece in enumerate(infill.split(blank)):
                ids += ([-1] * blank_tokens if i else []) + self.tokenizer.encode_exact(piece, "the template")
        elif prompt:
            ids = self.tokenizer.encode_exact(prompt, "the prompt")
        if len(ids) > length:
            raise ValueError(f"the prompt or template takes {len(ids)} tokens; the length is {length}")
        return ids

    @torch.no_grad()
    def sample(self, num: int | None = None, length: int | None = None, steps: int = 64, prompt: str | None = None,
               infill: str | None = None, blank: str = "___", blank_tokens: int = 4, seed: int = 0,
               sampler: str | None = None, stop_at_eos: bool = False, temperature: float = 1.0,
               top_k: int | None = None, top_p: float = 1.0, min_p: float = 0.0,
               prompts: Sequence[str] | None = None, **options: Any) -> list[str]:
        """``num`` texts (default 1) of ``length`` tokens (default the model's) from ``sampler`` (a name of
        :data:`gdds.samplers.SAMPLERS`; default the method's: the exact reverse chain in ``steps``
        steps, or exact ancestral samples of an autoregressive model), seeded by ``seed``. ``prompts``
        (instead of ``prompt`` and ``infill``): one text per prompt (``num``, if given, must be their number),
        text ``i`` seeded by ``seed + i`` so that ``sample(prompts=P, seed=s)[i] == sample(prompt=P[i],
        seed=s + i)[0]`` (up to the network's batch invariance: bit for bit in float64). A block-diffusion
        model takes any ``length``; with ``stop_at_eos`` its texts end at their end-of-text token and
        generation stops once every one has it (other samplers refuse it). ``temperature``, ``top_k``,
        ``top_p``, ``min_p``: the decoding filters (:class:`gdds.Decoding`, in that order) of the samplers
        that take them; any but the neutral values samples another model than the one ``nll_bound`` scores.
        ``options``: the sampler's own (:attr:`gdds.samplers.Sampler.options`, e.g. ``grid=`` (explicit times,
        such as ``KLProfile.of_eval(path).fitted_grid(steps)``), the corrector's ``corrector_steps=`` and
        ``corrector_delta=``, or ``score=``, ``threshold=`` and ``eta=`` of the mask kernel's samplers
        (``docs/sampling.md``); others raise :class:`gdds.samplers.SamplerError`."""
        length = self.loaded.sample_length(length, "length")
        rows = None
        if prompts is not None:
            if prompt is not None or infill is not None:
                raise ValueError("give prompts (one per text) or a prompt or template for every text, not both")
            if (num is not None and num != len(prompts)) or not prompts:
                raise ValueError(f"prompts= gives one text per prompt: {len(prompts)} prompts, num = {num}")
            rows = [self._template(length, text, None, blank, blank_tokens) for text in prompts]
        template = self._template(length, prompt, infill, blank, blank_tokens) if rows is None else []
        options = {"eos": self.loaded.run.data.tokenizer.eos_id, **options} if stop_at_eos else options
        decoding = Decoding(temperature, top_k, top_p, min_p)
        if decoding != Decoding():
            options["decoding"] = decoding
        num = (1 if num is None else num) if rows is None else len(rows)
        return generate(self.loaded, num, steps, seed, length, template, sampler, prompts=rows, **options)[1]

    @torch.no_grad()
    def nll_bound(self, texts: str | list[str], steps: int = 128, draws: int = 4, seed: int = 0) -> Score:
        """An upper bound on the NLL of ``texts`` (module docstring): the mean of ``draws`` independent
        ``steps``-step estimates, its standard error over the draws (the texts are given, so the only
        uncertainty is the estimator's); an autoregressive model's exact NLL (standard error 0)."""
        if draws < 2:
            raise ValueError("draws must be at least 2 (a standard error needs two)")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("nll_bound needs a text or a non-empty list of texts (str)")
        tok, length = self.tokenizer, self.length
        pieces = []
        for i, text in enumerate(texts):
            ids = tok.encode_exact(text, "the text" if len(texts) == 1 else f"text {i} (from 0)")
            if not ids:
                raise ValueError("an empty text has nothing to score")
            pieces += [ids[a:a + length - 2] for a in range(0, len(ids), length - 2)]
        x0, keep = self.padded(pieces)
        tokens, characters = int(keep.sum()), sum(len(t) for t in texts)
        totals = self.bound_totals(x0, keep, steps, draws, seed).sum(1)
        mean, se = float(totals.mean()), float(totals.std(unbiased=True)) / math.sqrt(draws)
        return Score(self.bound_label(steps), mean / tokens, se / tokens, mean / characters / math.log(2), tokens,
                     characters, len(texts))

    def padded(self, pieces: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``[BOS] piece [EOS]`` padded to the model's length (each piece at most ``length - 2`` ids)
        and the mask of what ``nll_bound`` scores in them: True on BOS, the piece and EOS, False on padding."""
        tok, length = self.tokenizer, self.length
        if not pieces or any(len(p) > length - 2 for p in pieces):
            raise ValueError(f"padded needs pieces of at most {length - 2} ids (the length less BOS and EOS)")
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
        array = TokenArray(np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces]), offsets, "texts")
        blocks = PaddedSentences(array, length, tok.bos_id, tok.eos_id, tok.pad_id)
        rows = np.arange(len(blocks))
        return blocks.batch(rows), blocks.mask(rows)

    def bound_label(self, steps: int) -> str:
        """What :meth:`bound_totals` gives: the ``steps``-step bound's label, or the exact NLL's."""
        return self.loaded.method.label if self.loaded.method.exact_likelihood else BOUND_METRIC.format(steps=steps)

    @torch.no_grad()
    def bound_totals(self, x0: torch.Tensor, keep: torch.Tensor, steps: int, draws: int, seed: int,
                     batch_size: int = 8) -> torch.Tensor:
        """``[draws, B]`` float64 nats on the CPU: ``draws`` independent estimates of the ``steps``-step upper
        bound on ``-log p`` of the kept tokens of each row given the others (held clean in every ``x_t``), each
        an unbiased estimate of the bound; all from one generator seeded ``seed``, draw after draw, ``batch_size``
        rows per call (so the same rows, seed and batch size give the same numbers). An autoregressive model's
        exact NLL of the kept tokens given the ones before (every draw the same)."""
        loaded = self.loaded
        if loaded.method.exact_likelihood:
            nll = loaded.run.model.nll(x0.to(loaded.device), keep.to(loaded.device)).double().cpu()
            return nll.expand(draws, -1).clone()
        gen = torch.Generator(device=loaded.device).manual_seed(seed)
        denoiser = self.denoiser
        return torch.stack([torch.cat([nll_bound(self.process, denoiser, x0[a:a + batch_size], steps=steps,
                                                 generator=gen, keep=keep[a:a + batch_size]).double().cpu()
                                       for a in range(0, len(x0), batch_size)]) for _ in range(draws)])
