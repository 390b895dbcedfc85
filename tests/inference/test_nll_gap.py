"""The snapshot vs path-wise NLL gap (gdds.nll_gap): IPG >= 0 (and 0 for a one-point path),
CG = 0 for exact predictors and negative for an over-confident path model, and the enumerated
path law equal to the forward sampler's (chi-square over all (x0, path) cells, fixed seed).

``gap = IPG + CG`` holds by the definitions (it is an identity of the three expectations); the
code computes the two parts by other routes than the two NLLs, so checking it is a regression
check of that code, not evidence for the decomposition."""
import json

import pytest
import torch

from gdds.cli import main
from gdds.nll_gap import GapProblem, bayes_path, bayes_snapshot, decompose, example_problem, predictor_pairs, tempered

KERNELS = ["mask", "uniform", "ring"]


def random_predictors(problem, seed):
    g = torch.Generator().manual_seed(seed)
    m, L = problem.process.m, problem.length
    snap_tables = {float(t): torch.rand(m ** L, L, m, generator=g, dtype=torch.float64) + 0.01 for t in problem.times}
    path_table = torch.rand(problem.paths().shape[0], L, m, generator=g, dtype=torch.float64) + 0.01
    norm = lambda p: p / p.sum(-1, keepdim=True)  # noqa: E731
    return (lambda xt, t: norm(snap_tables[float(t)]), lambda paths: norm(path_table))


@pytest.mark.parametrize("kernel", KERNELS)
def test_gap_is_ipg_plus_cg(kernel):
    problem = example_problem(kernel, (0.3, 0.7, 1.0))
    pairs = {**predictor_pairs(problem), "random": random_predictors(problem, 1)}
    for name, (snap, path) in pairs.items():
        r = decompose(problem, snap, path)
        assert r.gap == pytest.approx(r.information_path_gap + r.calibration_gap, abs=1e-10), name
        assert r.information_path_gap > 0.05 and r.information_path_gap == pytest.approx(
            r.entropy_snapshot - r.entropy_path, abs=1e-10)
    exact = decompose(problem, *pairs["exact / exact"])
    assert abs(exact.calibration_gap) < 1e-12 and exact.nll_path == pytest.approx(exact.entropy_path)
    over = decompose(problem, bayes_snapshot(problem), tempered(bayes_path(problem), 3.0))
    assert over.calibration_gap < -0.05 and over.gap < over.information_path_gap


def test_one_point_path_loses_nothing_and_path_is_its_first_point():
    problem = example_problem("uniform", (0.5,))
    r = decompose(problem, bayes_snapshot(problem), bayes_path(problem))
    assert abs(r.information_path_gap) < 1e-12 and abs(r.gap) < 1e-12
    longer = decompose(example_problem("uniform", (0.5, 0.8, 1.0)), *predictor_pairs(
        example_problem("uniform", (0.5, 0.8, 1.0)))["exact / exact"])
    assert longer.entropy_path == pytest.approx(r.entropy_snapshot, abs=1e-10)  # Markov: H(x0 | X) = H(x0 | X_t1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_snapshot_joint_is_the_path_marginal(kernel):
    problem = example_problem(kernel, (0.2, 0.6, 1.0))
    joint, paths = problem.path_joint(), problem.paths()
    m = problem.process.m
    for k in range(3):
        ids = (paths[:, k] * m ** torch.arange(problem.length - 1, -1, -1)).sum(-1)
        marginal = torch.zeros(joint.shape[0], m ** problem.length, dtype=torch.float64).index_add_(1, ids, joint)
        torch.testing.assert_close(marginal, problem.snapshot_joint(k), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_path_law_matches_the_forward_sampler(kernel):
    problem = example_problem(kernel, (0.3, 1.0))
    g = torch.Generator().manual_seed(2)
    n, m = 40000, problem.process.m
    x0 = problem.sequences()[torch.multinomial(problem.p0.reshape(-1), n, replacement=True, generator=g)]
    _, info = problem.process.noise(x0, 1.0, full_path=True, generator=g)
    states = torch.cat((x0[..., None], info.states), -1)
    grid = [states.gather(-1, (info.times <= t).sum(-1, keepdim=True))[..., 0] for t in problem.times]
    digits = torch.cat((x0, *grid), dim=1)   # x0^1..x0^L, X_t1^1..X_t1^L, ...
    ids = (digits * m ** torch.arange(digits.shape[1] - 1, -1, -1)).sum(-1)
    counts = torch.bincount(ids, minlength=m ** digits.shape[1]).double()
    law = problem.path_joint().reshape(-1)
    assert counts[law == 0].sum() == 0
    chi2 = float(((counts - n * law) ** 2 / (n * law))[law > 0].sum())
    dof = int((law > 0).sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5, (chi2, dof)  # one-sided, about 4 standard deviations


def test_bad_problems_raise():
    base = example_problem("mask")
    with pytest.raises(ValueError, match="times must increase"):
        GapProblem(base.process, base.p0, (0.5, 0.4))
    with pytest.raises(ValueError, match="probability table"):
        GapProblem(base.process, base.p0 * 2, (0.5,))
    with pytest.raises(ValueError, match="shape"):
        GapProblem(base.process, torch.ones(3) / 3, (0.5,))
    with pytest.raises(ValueError, match="unknown kernel"):
        example_problem("semantic")


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "gap.json"
    assert main(["nll-gap", "--kernels", "mask", "--times", "0.5", "1.0", "--json", str(out)]) == 0
    assert "| mask | exact / exact |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(r["information_path_gap"] >= 0 for r in rows.values())
