"""Templates that ``gdds export`` copies into a model folder so that ``transformers`` loads it
(``AutoConfig`` / ``AutoModel`` with ``trust_remote_code=True``): ``configuration_gdds.py``,
``layers_gdds.py`` (the layers, imported relatively) and ``modeling_gdds.py`` (one class per network). They
are files, not modules of gdds: they import ``torch`` and ``transformers`` only (a model folder loads without
gdds installed), and gdds never imports them. ``tests/engine/test_hf_modeling.py`` holds their logits equal
to gdds's networks' (:mod:`gdds.models`)."""
