"""Every tokenizer written as a ``tokenizer.json`` (``TextTokenizer.hf_tokenizer``) gives the same ids,
read by ``tokenizers.Tokenizer.from_file`` and by ``transformers.PreTrainedTokenizerFast``, with the
specials at their ids; GPT-2's merge ranks convert to an exact byte-level BPE."""
import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from gdds.data import build_tokenizer, shakespeare_documents
from gdds.data.tokenizers.byte_bpe import vocab_and_merges

DOCS = shakespeare_documents()
TEXT = DOCS[3][:40000] + " héllo wörld 日本語 🎉 \t tabs  \n\n  x  ÿ é   end  "


@pytest.mark.parametrize("name", ["char", "wordpiece", "gpt2", "bpe"])
def test_tokenizer_json_gives_the_same_ids(name, tmp_path):
    tok = build_tokenizer(name, DOCS[:5], 2000 if name == "bpe" else None)
    path = tmp_path / "tokenizer.json"
    tok.hf_tokenizer().save(str(path))
    back = Tokenizer.from_file(str(path))
    ours = tok.encode(TEXT)
    assert back.encode(TEXT, add_special_tokens=False).ids == ours
    assert back.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    for i in tok.special_ids():
        assert fast.convert_tokens_to_ids(tok.pieces([i])[0]) == i
    assert fast(TEXT[:2000], add_special_tokens=False)["input_ids"] == tok.encode(TEXT[:2000])
    if name in ("gpt2", "bpe"):  # byte-level: every text comes back (WordPiece normalises, char has <unk>)
        assert back.decode(ours) == TEXT
    if name == "char":
        known = TEXT[:40000]
        assert back.decode(tok.encode(known)) == known


def test_merges_from_ranks_rebuild_a_bpe():
    ranks = {b"a": 0, b"b": 1, b"c": 2}
    ranks.update({b"ab": 3, b"abc": 4, b"ca": 5, b"cab": 6})
    vocab, merges = vocab_and_merges(ranks)
    assert merges == [("a", "b"), ("ab", "c"), ("c", "a"), ("c", "ab")]
    assert vocab == {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "ca": 5, "cab": 6}
