"""The configuration of a gdds model folder for ``transformers`` (``AutoConfig``, ``trust_remote_code=True``).

Written by ``gdds export`` beside ``modeling_gdds.py``; self-contained (no gdds import). The
network is ``config.json["network"]`` (``DiT``, ``BlockDiT`` with ``block_size``, ``CausalLM``, ``TwoStream``)
with the hyper-parameters ``config.json["architecture"]`` (gdds's ``DiTConfig``); the forward
process the logits belong to is ``config.json["process"]`` (schedule, kernel and their parameters)
with ``parametrization`` and ``method``: read ``modeling_gdds.py``'s docstring before using the logits.
"""
from transformers import PretrainedConfig


class GddsConfig(PretrainedConfig):
    """``config.json`` of a gdds model folder: the network (``architecture``) and what its logits mean."""

    model_type = "gdds"

    def __init__(self, architecture=None, process=None, parametrization="mean", method=None, special_ids=None,
                 compact_full_ids=None, network="DiT", block_size=None, **kwargs):
        self.network = network  # gdds's network class: which modeling class reads the weights
        self.block_size = block_size  # block diffusion's block length (network BlockDiT)
        self.architecture = dict(architecture or {})
        self.process = process
        self.parametrization = parametrization
        self.method = method
        self.special_ids = dict(special_ids or {})
        self.compact_full_ids = compact_full_ids  # a compact vocabulary: model id c is tokenizer.json id [c]
        kwargs.setdefault("tie_word_embeddings", bool(self.architecture.get("tie_weights", False)))
        super().__init__(**kwargs)


# One configuration class per network: ``transformers`` maps a configuration class to the first model class
# loaded with it in a process, so folders of different networks must not share one. Each names GddsConfig's
# ``__init__`` as its own: ``transformers`` rewrites a subclass without one as a dataclass (fields lost).
class GddsBlockConfig(GddsConfig):
    """``config.json`` of a block-diffusion folder (``network`` ``BlockDiT``, ``block_size``)."""

    __init__ = GddsConfig.__init__


class GddsCausalLMConfig(GddsConfig):
    """``config.json`` of an autoregressive folder (``network`` ``CausalLM``)."""

    __init__ = GddsConfig.__init__


class GddsTwoStreamConfig(GddsConfig):
    """``config.json`` of a two-stream folder (``network`` ``TwoStream``)."""

    __init__ = GddsConfig.__init__
