"""Judges named ``hf:NAME``: a causal LM found only in the local Hugging Face cache.

``gdds eval --judge hf:gpt2-large`` means the model ``gpt2-large`` of the Hugging Face hub as the
cache on this machine holds it, and nothing else: never a local folder that happens to have the same
name, never the network. The cache folder is read from the environment when the judge is loaded,
as ``huggingface_hub`` reads it (``HF_HUB_CACHE``, else ``HUGGINGFACE_HUB_CACHE``, else
``HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` or ``~/.cache/huggingface/hub``), and the
snapshot is the one its ``refs/main`` names: ``models--ORG--NAME/snapshots/<commit>/``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

HF_PREFIX = "hf:"
# A hub model id: NAME or ORG/NAME (letters, digits, '-', '_', '.'), never a path.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class JudgeNotCachedError(FileNotFoundError):
    """A judge ``hf:NAME`` that the local Hugging Face cache does not hold; nothing is downloaded.

    :attr:`name` is the hub name asked for and :attr:`cache` the cache folder searched."""

    def __init__(self, name: str, cache: Path, why: str) -> None:
        self.name = name
        self.cache = cache
        super().__init__(
            f"judge '{HF_PREFIX}{name}': {why} in the local Hugging Face cache {cache} (HF_HUB_CACHE, else "
            f"HF_HOME/hub); judges are loaded offline, nothing is downloaded: fetch it beforehand on a machine "
            f"with network access, e.g. `hf download {name}` with the same HF_HOME, and copy that cache here")


def hub_cache() -> Path:
    """The Hugging Face hub cache folder named by the environment now (``huggingface_hub`` reads it
    once, at import, so a variable set later would be missed there)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.path.expanduser(os.path.expandvars(os.environ[variable])))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expanduser(os.path.expandvars(home))) / "hub"


def cached_snapshot(name: str) -> Path:
    """The folder of the cached snapshot of hub model ``name`` (its ``refs/main`` commit), holding a
    ``config.json``; :class:`JudgeNotCachedError` when the cache lacks it, :class:`ValueError` when
    ``name`` is not a hub model id."""
    if not _REPO_ID.fullmatch(name) or ".." in name:
        raise ValueError(f"judge '{HF_PREFIX}{name}': {name!r} is not a hub model id (NAME or ORG/NAME)")
    cache = hub_cache()
    repo = cache / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    if not ref.is_file():
        raise JudgeNotCachedError(name, cache, f"no {repo.name}/refs/main")
    commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    if not (snapshot / "config.json").is_file():
        raise JudgeNotCachedError(name, cache, f"the snapshot {commit} of main has no config.json")
    return snapshot
