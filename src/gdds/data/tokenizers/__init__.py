"""Tokenizers: the interface (:mod:`.base`), the registry of named tokenizers with the pretrained
ones (:mod:`.registry`), tokenizers trained on a corpus (:mod:`.trained`, :mod:`.byte_bpe`) and
the compact vocabulary (:mod:`.vocab`)."""
