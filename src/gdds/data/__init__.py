"""Data: corpora, tokenizers and embeddings (SPEC section 4: corpus -> tokens)."""
from .corpora import shakespeare_dir, shakespeare_line, shakespeare_lines
from .embeddings import minilm_dir, minilm_embeddings
from .tokenizers import (
    WORDPIECE_MASK_ID,
    WORDPIECE_VOCAB_SIZE,
    decode_pieces,
    encode,
    wordpiece,
    wordpiece_path,
    wordpiece_special_ids,
)

__all__ = [
    "shakespeare_dir", "shakespeare_lines", "shakespeare_line", "wordpiece", "wordpiece_path", "encode",
    "decode_pieces", "wordpiece_special_ids", "WORDPIECE_MASK_ID", "WORDPIECE_VOCAB_SIZE", "minilm_dir",
    "minilm_embeddings",
]
