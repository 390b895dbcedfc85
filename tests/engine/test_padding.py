"""Padding (``data.packing=pad``) is neither noised nor scored: by the bound (a bound on the
kept tokens given the layout), the snapshot CE and the training loss."""
import json

import pytest
import torch

import gdds
from gdds import kernels as K
from gdds.baseline import bayes_unigram, unigram_law, unigram_nll
from gdds.data import shakespeare_lines
from gdds.engine.build import load_run
from gdds.engine.config import load_config
from gdds.engine.evaluation.evaluate import bound_report, eval_rows
from gdds.engine.train import train
from gdds.likelihood import nll_bound, summarize
from helpers import MICRO_TRAIN

M, PAD = 9, 8


def padded_iid(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sentences of 3 to 8 i.i.d. tokens in blocks of 10, padded with PAD; and the law."""
    g = torch.Generator().manual_seed(seed)
    pi = torch.cat([torch.rand(M - 1, dtype=torch.float64, generator=g) + 0.3, torch.zeros(1, dtype=torch.float64)])
    pi = pi / pi.sum()
    x0 = torch.multinomial(pi, n * 10, replacement=True, generator=g).reshape(n, 10)
    lengths = torch.randint(3, 9, (n,), generator=g)
    keep = torch.arange(10)[None, :] < lengths[:, None]
    return torch.where(keep, x0, torch.full_like(x0, PAD)), keep, pi


def test_the_bound_scores_only_the_kept_tokens_and_never_noises_padding():
    process = gdds.ForwardProcess(gdds.LogLinear(1e-3), K.Uniform(M))
    x0, keep, pi = padded_iid(64, 0)
    seen = []

    def spy(xt, t):  # the exact denoiser of i.i.d. text, which records what it is shown
        seen.append(xt.clone())
        return bayes_unigram(process, pi.clamp_min(1e-12))(xt, t)

    est = nll_bound(process, spy, x0, steps=6, all_terms=True, generator=torch.Generator().manual_seed(1), keep=keep)
    exact = unigram_nll(pi, x0, keep)
    diff = summarize(est - exact, keep.sum(1))
    assert abs(diff.nats_per_token) < 3 * diff.standard_error + 0.01, diff  # = the exact NLL of the kept tokens
    assert all(bool((xt[~keep] == PAD).all()) for xt in seen) and len(seen) == 6
    unscored = nll_bound(process, spy, x0, steps=6, all_terms=True, generator=torch.Generator().manual_seed(1))
    assert float((unscored - est).mean()) > 1.0  # scoring the padding would add its cost


def lines_corpus(tmp_path) -> list[str]:
    corpus = tmp_path / "lines"
    corpus.mkdir()
    for i, line in enumerate(shakespeare_lines()[:120]):  # one short line per document
        (corpus / f"{i:03d}.txt").write_text(line[:24])
    return [f"data.corpus={corpus}"]


def lm1b_stand_in(tmp_path) -> list[str]:
    """The LM1B recipe on local files with its layout: one tokenised sentence per line, train and test."""
    lines = [" ".join(line[:20].replace(",", " ,").split()) + " ." for line in shakespeare_lines()[:140]]
    (tmp_path / "train.txt").write_text("\n".join(lines[:120]))
    (tmp_path / "test.txt").write_text("\n".join(lines[120:]))
    files = {"train": str(tmp_path / "train.txt"), "test": str(tmp_path / "test.txt")}
    return ["data.corpus=lm1b", f"data.corpus_args={json.dumps({'data_files': files, 'cache_dir': str(tmp_path)})}"]


@pytest.mark.parametrize("corpus", [lines_corpus, lm1b_stand_in])
def test_a_pad_packed_run_leaves_padding_out_of_loss_and_bound(tmp_path, corpus):
    cfg = load_config("tiny", [*MICRO_TRAIN, *corpus(tmp_path), "data.packing=pad", "process.kernel=mask",
                               "train.max_steps=4", "train.eval_every=4", "train.eval_batches=2"])
    tmp_path = tmp_path / "run"
    train(cfg, tmp_path)
    record = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()][-1]
    loaded = load_run(tmp_path)
    rows = list(range(min(len(loaded.run.valid), 8 * 2)))  # one work per block: a short validation split
    kept = int(loaded.run.valid.mask(rows).sum())
    assert record["kind"] == "eval" and record["tokens"] == kept < len(rows) * cfg.data.seq_len
    report = bound_report(loaded, loaded.run.valid, sequences=4, steps=4)
    assert report.tokens == int(loaded.run.valid.mask(eval_rows(loaded.run.valid, 4, 0)).sum())
    assert unigram_law(loaded.run.data.unigram_counts()).shape == (loaded.run.data.tokenizer.vocab_size,)
