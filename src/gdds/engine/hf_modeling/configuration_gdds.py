"""The configuration of a gdds model folder for ``transformers`` (``AutoConfig``, ``trust_remote_code=True``).

Written by ``gdds export`` beside ``modeling_gdds.py``; self-contained (no gdds import). The
network's hyper-parameters are ``config.json["architecture"]`` (gdds's ``DiTConfig``); the forward
process the logits belong to is ``config.json["process"]`` (schedule, kernel and their parameters)
with ``parametrization`` and ``method``: read ``modeling_gdds.py``'s docstring before using the logits.
"""
from transformers import PretrainedConfig


class GddsConfig(PretrainedConfig):
    """``config.json`` of a gdds model folder: the network (``architecture``) and what its logits mean."""

    model_type = "gdds"

    def __init__(self, architecture=None, process=None, parametrization="mean", method=None, special_ids=None,
                 compact_full_ids=None, **kwargs):
        self.architecture = dict(architecture or {})
        self.process = process
        self.parametrization = parametrization
        self.method = method
        self.special_ids = dict(special_ids or {})
        self.compact_full_ids = compact_full_ids  # a compact vocabulary: model id c is tokenizer.json id [c]
        kwargs.setdefault("tie_word_embeddings", bool(self.architecture.get("tie_weights", False)))
        super().__init__(**kwargs)
