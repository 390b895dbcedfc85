"""Verdicts over training seeds (gdds.engine.evaluation.paired, docs/math.md section 12): the mean of per-block
paired differences over seeds, its standard error from the blocks and from the seeds, a two-sided
Student-t test with Welch-Satterthwaite degrees of freedom, and the rule that a verdict needs three
judged seeds and p < 0.05; and the code fingerprint that keys saved evaluations."""
import math

import numpy as np
import pytest
from scipy import stats

from gdds.engine.evaluation.paired import SeededDifference, paired_test, seeded_difference
from gdds.engine.evaluation.reports import NLLReport, PerSequence
from gdds.version import code_fingerprint, source_fingerprint


def test_the_test_equals_a_hand_computation():
    """d[s, i] = beta_i + gamma_s, 10 tokens per block: the seed-averaged block differences spread like
    beta (stdev sqrt(20/3)), the per-seed means like gamma (stdev 2), so every number is known."""
    beta, gamma = np.array([1.0, 3.0, 5.0, 7.0]), np.array([0.0, 2.0, 4.0])
    test = paired_test((beta[None, :] + gamma[:, None]).tolist(), [10] * 4)
    se_b, se_s = math.sqrt(20 / 3) / 2 / 10, 2 / math.sqrt(3) / 10
    df = (se_b ** 2 + se_s ** 2) ** 2 / (se_b ** 4 / 3 + se_s ** 4 / 2)
    assert test.mean == pytest.approx((4 + 2) / 10, abs=1e-12)
    assert test.se_blocks == pytest.approx(se_b, rel=1e-12) and test.se_seeds == pytest.approx(se_s, rel=1e-12)
    assert test.standard_error == pytest.approx(math.sqrt(0.03), rel=1e-12) and test.df == pytest.approx(df)
    assert df == pytest.approx(4.959, abs=1e-3)
    t = 0.6 / math.sqrt(0.03)
    assert test.p_value == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9) and 0.017 < test.p_value < 0.019
    half = stats.t.ppf(0.975, df) * math.sqrt(0.03)
    assert test.interval == pytest.approx((0.6 - half, 0.6 + half))


def test_blocks_of_different_lengths_are_weighted_by_their_tokens():
    """A ratio of sums over blocks (not a mean of per-block rates), as gdds.likelihood.summarize."""
    test = paired_test([[1.0, 30.0, 2.0], [3.0, 50.0, 0.0]], [10, 100, 10])
    assert test.mean == pytest.approx((2.0 + 40.0 + 1.0) / 120, abs=1e-12)
    one = paired_test([[1.0, 30.0, 2.0]], [10, 100, 10])
    assert one.se_seeds is None and one.df == pytest.approx(2.0)  # blocks only: B - 1 degrees of freedom
    with pytest.raises(ValueError, match="one value per block"):
        paired_test([[1.0, 2.0]], [10, 10, 10])


def test_the_interval_covers_the_truth_when_blocks_are_shared_across_seeds():
    """Every seed is scored on the same blocks: per-block differences correlate (0.86 here, as
    measured in gdds compare), and the seeds' evaluation errors are not independent. The 95% interval
    covers the true mean difference (0) in 94-96% of 1,500 simulated comparisons; treating the seeds'
    block errors as independent (the standard error of one seed divided by sqrt(S), the larger of that
    and the seeds' spread) covers about 75%."""
    rng = np.random.default_rng(0)
    covered = independent = 0
    reps, blocks, seeds = 1500, 32, 3
    for _ in range(reps):
        d = rng.normal(0, 1, blocks)[None] + rng.normal(0, 0.3, seeds)[:, None] + rng.normal(0, 0.4, (seeds, blocks))
        test = paired_test(d.tolist(), [1] * blocks)
        covered += test.interval[0] <= 0 <= test.interval[1]
        se_old = max(math.sqrt(sum(np.var(r, ddof=1) / blocks for r in d)) / seeds,
                     np.std(d.mean(1), ddof=1) / math.sqrt(seeds))
        independent += abs(d.mean()) <= 2 * se_old
    assert 0.93 <= covered / reps <= 0.97, covered / reps
    assert independent / reps < 0.85


def diff(per_seed, spread=0.01, seeds=None, judged=None, blocks=32, tokens=128, seed=0):
    """A SeededDifference whose seed s has per-block differences ``per_seed[s]`` nats/token plus block
    noise of ``spread`` nats/token shared by every seed (the same blocks and draws)."""
    noise = np.random.default_rng(seed).normal(0, spread, blocks)
    rows = [((m + noise) * tokens).tolist() for m in per_seed]
    seeds = list(range(len(per_seed))) if seeds is None else seeds
    return SeededDifference("a", "b", seeds, list(range(blocks)), [tokens] * blocks, rows,
                            seeds if judged is None else judged)


def test_a_verdict_needs_three_judged_seeds_and_p_below_five_percent():
    one = diff([-0.30])
    assert one.verdict == "not significant" and one.reason == "one seed: training noise unknown"
    assert one.test.p_value < 1e-10  # however small the evaluation's error
    two = diff([-0.30, -0.31])
    assert two.verdict == "not significant" and "2 seeds: a verdict needs at least 3" in two.reason
    assert diff([-0.30, -0.28, -0.32]).verdict == "lower" and diff([0.30, 0.28, 0.32]).verdict == "higher"
    assert "< 0.05 over 3 seeds" in diff([-0.30, -0.28, -0.32]).reason
    # The case: +0.113, +0.171, +0.039 (mean +0.108 ± 0.038, t = 2.8 on 2 df): p = 0.11.
    paper = diff([0.113, 0.171, 0.039], spread=1e-4)
    assert paper.verdict == "not significant" and 0.09 < paper.test.p_value < 0.13
    assert paper.test.df == pytest.approx(2.0, abs=0.01) and paper.test.interval[0] < 0 < paper.test.interval[1]


def test_only_the_judged_seeds_count():
    """Seed 0 selected the variant: it is shown, not judged; an entry trained on seed 0 only gets no verdict."""
    fresh = [-0.30, -0.28, -0.32]
    judged = diff([0.9, *fresh], seeds=[0, 1, 2, 3], judged=[1, 2, 3])
    alone = diff(fresh, seeds=[1, 2, 3])
    assert judged.test == alone.test and judged.verdict == "lower" and judged.judged_seeds == [1, 2, 3]
    assert judged.per_seed[0] == pytest.approx(0.9, abs=0.01)  # shown beside them
    selection = diff([0.9], seeds=[0], judged=[1, 2, 3])
    assert selection.test is None and selection.verdict == "not judged" and "not among the judged" in selection.reason
    saved = judged.to_dict()
    assert saved["verdict"] == "lower" and saved["judged"] == [1, 2, 3] and len(saved["per_block"]) == 4
    assert saved["p_value"] == judged.test.p_value and saved["interval"] == list(judged.test.interval)


def test_seeded_difference_pairs_reports_on_the_same_blocks():
    def report(nats, blocks=(3, 5), tokens=(10, 20)):
        return NLLReport("m", 0.0, 0.0, sum(tokens), len(blocks), per_sequence=PerSequence(list(blocks), nats,
                                                                                            list(tokens)))

    d = seeded_difference("a", "b", [0, 1], [(report([5.0, 9.0]), report([4.0, 6.0])),
                                             (report([6.0, 7.0]), report([5.0, 8.0]))])
    assert d.per_block == [[1.0, 3.0], [1.0, -1.0]] and d.per_seed == pytest.approx([4 / 30, 0.0])
    with pytest.raises(ValueError, match="one pair of figures per seed"):
        seeded_difference("a", "b", [0, 1], [(report([5.0, 9.0]), report([4.0, 6.0]))])
    with pytest.raises(ValueError, match="same blocks"):
        seeded_difference("a", "b", [0, 1], [(report([1.0, 2.0]), report([1.0, 2.0])),
                                             (report([1.0, 2.0], blocks=(3, 6)), report([1.0, 2.0], blocks=(3, 6)))])


def test_the_code_fingerprint_ignores_docstrings_and_comments_but_not_code():
    code = 'def f(x):\n    """Add one."""\n    return x + 1  # one\n'
    assert source_fingerprint(code) == source_fingerprint('def f(x):\n    """Add 1 to x."""\n\n    return x + 1\n')
    assert source_fingerprint(code) == source_fingerprint("def f(x):\n    return x + 1\n")
    assert source_fingerprint(code) != source_fingerprint('def f(x):\n    """Add one."""\n    return x + 2\n')
    assert source_fingerprint('"""Module."""\nA = 1\n') != source_fingerprint('"""Module."""\nA = 2\n')
    assert code_fingerprint() == code_fingerprint() and len(code_fingerprint()) == 16
