"""The files of a model folder that ``transformers`` reads (:func:`transformers_files`): the
configuration class and modeling code copied from the templates in ``engine/hf_modeling/``, so that
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` gives the network (:data:`MODELING`: the DiT
denoiser, block diffusion's ``BlockDiT``, the autoregressive ``CausalLM``, also as ``AutoModelForCausalLM``,
and the two-stream network), and ``tokenizer_config.json``, so that ``AutoTokenizer.from_pretrained(folder)``
reads ``tokenizer.json`` as a ``PreTrainedTokenizerFast`` with gdds's ids and special tokens (every network
gdds trains has modeling code: ``tests/engine/test_hf_modeling.py`` holds :data:`MODELING` to the methods).
:func:`push_folder` uploads a model folder to the Hub (``gdds export --push REPO``)."""
from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from tokenizers import Tokenizer

from ..data import CompactTokenizer, TextTokenizer
from ..models import BlockDiT, CausalLM, DiT, TwoStream
from .build import LoadedRun

TEMPLATES = ("configuration_gdds.py", "layers_gdds.py", "modeling_gdds.py")
TOKENIZER_CONFIG = "tokenizer_config.json"


class Modeling(NamedTuple):
    """How ``transformers`` loads one of gdds's networks: the auto classes of ``config.json``'s ``auto_map``
    (the last one is the model card's), the modeling and configuration classes of the templates, and the
    model card's example call on model ids ``x``."""

    autos: tuple[str, ...]
    model: str
    config: str
    call: str


# gdds's network class -> how transformers loads it: the one table of exported networks
MODELING: dict[type, Modeling] = {
    DiT: Modeling(("AutoModel",), "GddsModel", "GddsConfig",
                  "logits = model(x, t=0.5)  # x = x_t at time t: logits of the clean token at every position"),
    BlockDiT: Modeling(("AutoModel",), "GddsBlockModel", "GddsBlockConfig",
                       "logits = model(x, t=0.5, x0=x)  # x_t, t (or [B, n_blocks]), x0: the clean sequence"),
    CausalLM: Modeling(("AutoModel", "AutoModelForCausalLM"), "GddsCausalLM", "GddsCausalLMConfig",
                       "logits = model(x).logits  # row i predicts token i + 1 "
                       "(model.gdds_logits(x): gdds's, row i predicts token i)"),
    TwoStream: Modeling(("AutoModel",), "GddsTwoStreamModel", "GddsTwoStreamConfig",
                        "logits = model.snapshot(x, t=0.5)  # the denoiser; forward: pieces and queries"),
}


def auto_map(network: type) -> dict[str, str]:
    """``config.json``'s ``auto_map`` for gdds's network class ``network`` (one of :data:`MODELING`)."""
    m = MODELING[network]
    return {"AutoConfig": f"configuration_gdds.{m.config}", **dict.fromkeys(m.autos, f"modeling_gdds.{m.model}")}


def _base(tok: TextTokenizer) -> TextTokenizer:
    """The tokenizer whose ids ``tokenizer.json`` holds (a compact vocabulary's base)."""
    return tok.base if isinstance(tok, CompactTokenizer) else tok


def folder_tokenizer(tok: TextTokenizer) -> Tokenizer:
    """``tok``'s base tokenizer as ``tokenizer.json`` holds it: without a post-processor, since gdds adds no
    special tokens to an encoded text (WordPiece's ``[CLS] ... [SEP]``), so that ``AutoTokenizer``'s default
    encoding gives gdds's ids."""
    hf = _base(tok).hf_tokenizer()
    hf.post_processor = None
    return hf


def _special_tokens(loaded: LoadedRun) -> dict[str, str]:
    """The special tokens by their ``transformers`` names, as ``tokenizer.json`` spells them."""
    base = _base(loaded.run.data.tokenizer)
    hf = base.hf_tokenizer()
    names = {"bos_token": base.bos_id, "eos_token": base.eos_id, "pad_token": base.pad_id,
             "mask_token": base.mask_id, "unk_token": base.unk_id}
    return {key: hf.id_to_token(i) for key, i in names.items() if i is not None and hf.id_to_token(i) is not None}


def transformers_files(loaded: LoadedRun, folder: Path) -> dict[str, Any]:
    """Write the ``transformers`` files of ``loaded`` into ``folder``; return the entries they add to
    ``config.json`` (``auto_map``, ``model_type``, ``architectures``, ``network``, ``block_size``,
    ``parametrization``, ``compact_full_ids``)."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": loaded.cfg.data.seq_len,
              "clean_up_tokenization_spaces": False, **_special_tokens(loaded)}
    (folder / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=1))
    network = type(loaded.run.model)
    entries: dict[str, Any] = {"parametrization": loaded.method.parametrization, "network": network.__name__,
                               "block_size": loaded.method.block_size}
    tok = loaded.run.data.tokenizer
    if isinstance(tok, CompactTokenizer):
        entries["compact_full_ids"] = [int(i) for i in tok.vocab.full_ids]
    templates = resources.files("gdds.engine.hf_modeling")
    for name in TEMPLATES:
        with resources.as_file(templates / name) as path:
            shutil.copyfile(path, folder / name)
    return {**entries, "model_type": "gdds", "auto_map": auto_map(network), "architectures": [MODELING[network].model]}


class PushError(RuntimeError):
    """A model folder that could not be uploaded to the Hugging Face Hub (no client, no token, no network)."""


def push_folder(folder: Path, repo: str) -> str:
    """Upload the model folder ``folder`` to the Hub repository ``repo`` (created, private, if missing) with
    ``huggingface_hub``; return its address. A :class:`PushError` says what is missing: the client, a token
    (``hf auth login`` or ``HF_TOKEN``), or the network (``HF_HUB_OFFLINE`` set, or the Hub unreachable)."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError as exc:
        raise PushError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise PushError("HF_HUB_OFFLINE is set: the Hub is not reached offline; unset it to push")
    token = huggingface_hub.get_token()
    if token is None:
        raise PushError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token with write "
                        "access), then push again")
    try:
        huggingface_hub.create_repo(repo, token=token, private=True, exist_ok=True)
        info = huggingface_hub.upload_folder(folder_path=str(folder), repo_id=repo, token=token,
                                             commit_message="gdds export")
    except (OSError, ValueError, HfHubHTTPError) as exc:
        raise PushError(f"the Hub could not be reached or refused the upload to {repo} ({exc})") from exc
    return str(getattr(info, "commit_url", f"https://huggingface.co/{repo}"))
