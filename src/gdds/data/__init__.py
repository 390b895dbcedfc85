"""Data (SPEC section 4: corpus -> tokens): corpora and their split, tokenizers, the
compact vocabulary, the cached token array and its packing into blocks, embeddings."""
from .corpora import (
    hf_documents,
    kjv_documents,
    load_corpus,
    local_documents,
    shakespeare_dir,
    shakespeare_documents,
    shakespeare_line,
    shakespeare_lines,
    split_documents,
    wikipedia_documents,
)
from .dataset import PackedBlocks, PaddedSentences, TokenArray, token_dtype, tokenize_documents
from .embeddings import (
    checkpoint_embeddings,
    cooccurrence_embeddings,
    load_embedding_file,
    minilm_dir,
    minilm_embeddings,
    select_rows,
)
from .tokenizer_base import TextTokenizer
from .tokenizers import (
    GPT2_VOCAB_SIZE,
    TOKENIZER_NAMES,
    WORDPIECE_MASK_ID,
    WORDPIECE_VOCAB_SIZE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    WordPieceTokenizer,
    build_tokenizer,
    decode_pieces,
    encode,
    gpt2_path,
    load_tokenizer,
    wordpiece,
    wordpiece_path,
    wordpiece_special_ids,
)
from .vocab import CompactTokenizer, CompactVocab

__all__ = [
    "shakespeare_dir", "shakespeare_lines", "shakespeare_line", "wordpiece", "wordpiece_path", "encode",
    "decode_pieces", "wordpiece_special_ids", "WORDPIECE_MASK_ID", "WORDPIECE_VOCAB_SIZE", "minilm_dir",
    "minilm_embeddings", "cooccurrence_embeddings", "load_embedding_file", "checkpoint_embeddings", "select_rows",
    "load_corpus", "split_documents", "shakespeare_documents", "kjv_documents", "wikipedia_documents",
    "local_documents", "hf_documents",
    "TextTokenizer", "CharTokenizer", "BPETokenizer", "WordPieceTokenizer", "GPT2Tokenizer", "build_tokenizer",
    "load_tokenizer", "gpt2_path", "TOKENIZER_NAMES", "GPT2_VOCAB_SIZE", "CompactVocab", "CompactTokenizer",
    "TokenArray", "tokenize_documents", "token_dtype", "PackedBlocks", "PaddedSentences",
]
