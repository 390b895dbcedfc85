"""The MiniLM semantic kernel has one builder (:func:`gdds.minilm.minilm_kernel`): the library's
call and a run's ``process.embeddings: minilm`` give the same kernel, with every bracketed
WordPiece token excluded, on the full and on a compact vocabulary."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gdds.data import CompactTokenizer, CompactVocab, WordPieceTokenizer, shakespeare_lines, wordpiece_special_ids
from gdds.engine.build import build_kernel
from gdds.engine.config import ProcessConfig, build_schedule
from gdds.kernels import KERNELS, Uniform, Vocabulary
from gdds.minilm import minilm_kernel, minilm_rows, minilm_vocabulary

BRACKETED = wordpiece_special_ids()


@pytest.fixture(scope="module")
def compact():
    """WordPiece restricted to the ids of 200 Shakespeare lines and the five specials, as a run's
    ``data.compact_vocab: true`` builds it."""
    base = WordPieceTokenizer()
    seen = [np.array(ids) for ids in base.encode_batch(shakespeare_lines()[:200])]
    return CompactTokenizer(base, CompactVocab.fit(seen, base.special_ids(), base.vocab_size), unk=True)


def _same(a, b):
    assert repr(a) == repr(b)
    assert torch.equal(a.knn.neighbours, b.knn.neighbours) and torch.equal(a.knn.log_affinity, b.knn.log_affinity)
    teleport = a.kernels[1]
    if isinstance(teleport, Uniform):  # its destinations (semantic-absorb's teleport is the mask, in the repr)
        assert torch.equal(teleport.support, b.kernels[1].support)


def test_the_rule_excludes_every_bracketed_token_the_vocabulary_holds(compact):
    full = minilm_vocabulary()
    assert (full.size, full.mask_id, full.special_ids) == (30522, 103, tuple(BRACKETED)) and len(BRACKETED) == 999
    assert minilm_vocabulary(exclude_special=False).special_ids == ()
    # A compact vocabulary holds no [unusedN] (the tokenizer never emits one): its five specials remain.
    small = minilm_vocabulary(compact.vocab.full_ids)
    assert small == Vocabulary(compact.vocab_size, compact.mask_id, tuple(compact.special_ids()))
    assert len(small.special_ids) == 5
    # Were an [unusedN] kept, it would be excluded too: the rule is the bracket, not the five names.
    with_unused = np.sort(np.append(compact.vocab.full_ids, 1))  # 1 = [unused0]
    assert len(minilm_vocabulary(with_unused).special_ids) == 6
    with pytest.raises(ValueError, match="MASK"):
        minilm_vocabulary([0, 1000, 2000])


@pytest.mark.parametrize("kernel", ["semantic", "semantic-absorb"])
def test_a_compact_run_builds_the_library_kernel(compact, kernel):
    pc = ProcessConfig(kernel=kernel, embeddings="minilm")
    schedule = build_schedule(pc)
    engine, identity = build_kernel(pc, schedule, SimpleNamespace(tokenizer=compact), progress=False)
    library = minilm_kernel(schedule, full_ids=compact.vocab.full_ids, kernel=kernel, progress=False)
    _same(engine, library)
    assert engine.n_excluded == 5 and engine.m == compact.vocab_size
    # Compact runs keep the identity they had when the engine excluded the tokenizer's specials.
    before = KERNELS.get(kernel).build(Vocabulary(compact.vocab_size, compact.mask_id, tuple(compact.special_ids())),
                                       schedule, minilm_rows(compact.vocab.full_ids), False)
    assert identity["repr"] == repr(before)


def test_a_full_vocabulary_run_builds_the_library_kernel():
    """``data.compact_vocab: false``: 999 ids excluded (the engine used to exclude 5), no
    bracketed token among anyone's neighbours. The graph is the one ``tests/cli/test_noise_cli.py``
    reads (same settings, the session's cache), so it is built once per test session."""
    pc = ProcessConfig(kernel="semantic", embeddings="minilm")
    schedule = build_schedule(pc)
    engine, _ = build_kernel(pc, schedule, SimpleNamespace(tokenizer=WordPieceTokenizer()), progress=False)
    library = minilm_kernel(schedule, progress=False)
    _same(engine, library)
    assert engine.n_excluded == 999
    assert not torch.isin(engine.knn.neighbours, torch.tensor(BRACKETED)).any()
