"""Hyper-parameters of the transformer backbone shared by every network (:class:`DiTConfig`)
and its named sizes (:data:`PRESETS`, the registry that ``model.preset`` names)."""
from __future__ import annotations

import dataclasses
import difflib
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import Registry

# Each entry: the DiTConfig fields of a named size (the vocabulary and the rest come from the run).
PRESETS: Registry[dict[str, int]] = Registry("DiT preset")
PRESETS.register("tiny", dict(layers=4, width=192, heads=4, cond_width=64))  # CPU demos and tests
PRESETS.register("small", dict(layers=12, width=768, heads=12, cond_width=128))  # the paper's (and MDLM's) size
PRESETS.register("medium", dict(layers=24, width=1024, heads=16, cond_width=128))


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class DiTConfig:
    """Hyper-parameters of :class:`DiT`. ``preset(name, vocab_size)`` builds the standard sizes."""

    vocab_size: int
    layers: int
    width: int
    heads: int
    cond_width: int = 128
    max_len: int = 1024
    dropout: float = 0.0
    tie_weights: bool = False
    mlp_ratio: int = 4
    rope_base: float = 10000.0
    causal: bool = False
    vocab_multiple: int = 1  # the output head is padded to a multiple of this (128 on GPUs); never scored

    def __post_init__(self) -> None:
        for name in ("vocab_size", "layers", "width", "heads", "cond_width", "max_len", "mlp_ratio", "vocab_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"DiTConfig.{name} must be a positive integer; got {value!r}")
            setattr(self, name, int(value))
        for name in ("tie_weights", "causal"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DiTConfig.{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("dropout", "rope_base"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), numbers.Real):
                raise ValueError(f"DiTConfig.{name} must be a number; got {getattr(self, name)!r}")
            setattr(self, name, float(getattr(self, name)))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DiTConfig.dropout must lie in [0, 1); got {self.dropout}")
        if not self.rope_base > 1.0:
            raise ValueError(f"DiTConfig.rope_base must be greater than 1 (10000 is usual); got {self.rope_base}")
        if self.width % self.heads:
            options = [h for h in range(1, self.width + 1) if self.width % h == 0 and (self.width // h) % 2 == 0]
            near = sorted(options, key=lambda h: abs(h - self.heads))[:3]
            raise ValueError(
                f"DiTConfig.width ({self.width}) must be divisible by heads ({self.heads}); "
                f"try heads in {sorted(near)} or a width that is a multiple of {self.heads}"
            )
        if self.head_dim % 2:
            raise ValueError(
                f"the head dimension width / heads = {self.width} / {self.heads} = {self.head_dim} must be even "
                "for rotary embeddings; change width or heads"
            )

    @property
    def padded_vocab(self) -> int:
        """``vocab_size`` rounded up to a multiple of ``vocab_multiple``: the rows of the output head
        (and of the embedding when tied). Matrix shapes that are multiples of 128 use the GPU's
        tensor cores fully; the extra logits are cut off before anything reads them."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (YAML/JSON friendly); inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiTConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming close matches."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in names]
        if unknown:
            listed = "; ".join(f"{k!r}{_suggest(str(k), names)}" for k in unknown)
            raise ValueError(f"unknown DiTConfig field(s): {listed}. Valid fields: {', '.join(names)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"DiTConfig is missing required field(s): {', '.join(missing)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> DiTConfig:
        """A named size of :data:`PRESETS` (``tiny``, ``small``, ``medium``) with optional field
        overrides; an unknown name is a ``ValueError`` that lists the names."""
        return cls.from_dict({**PRESETS.get(name), "vocab_size": vocab_size, **overrides})
