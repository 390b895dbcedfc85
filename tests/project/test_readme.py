"""Every python block of the README runs, in order, in one namespace, followed by those of the docs
pages that continue it (docs/sampling.md builds on the quick start's `sched` and `K`): the quick start
builds the MiniLM semantic kernel into the tests' private cache; the model-folder block loads a micro
model trained and exported here in place of the demo's."""
import re
from pathlib import Path

from gdds.cli import main
from helpers import micro_run

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# Pages whose python blocks continue the README's namespace, in the order they run.
CONTINUED_IN = (ROOT / "docs" / "sampling.md",)
# Pages whose python blocks a test of their own runs.
OWN_TEST = {ROOT / "docs" / "model-folders.md": "tests/engine/test_hf_modeling.py",
            ROOT / "docs" / "lm-eval.md": "tests/engine/test_lm_eval_model.py"}


def python_blocks(page: Path = README) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path):
    micro_run(tmp_path, "data.seq_len=64", "train.max_steps=2")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "demo-model")]) == 0
    blocks = python_blocks()
    assert len(blocks) >= 2 and "gdds.load(" in blocks[0] and "import torch, gdds" in blocks[1]
    continued = [(page, block) for page in CONTINUED_IN for block in python_blocks(page)]
    assert any("gdds.nll_bound(" in block for _, block in continued)
    namespace: dict = {}
    for page, block in [(README, block) for block in blocks] + continued:
        block = block.replace('"results/demo-model"', repr(str(tmp_path / "demo-model")))
        exec(compile(block, str(page), "exec"), namespace)
    assert isinstance(namespace["model"].sample(num=1, length=8, steps=2)[0], str)
    xt, q, nll = namespace["xt"], namespace["q"], namespace["nll"]
    assert xt.shape == (32, 128) and (xt != namespace["x0"]).any()
    assert q.shape == (1, 3, 5) and abs(float(q.sum(-1).max()) - 1) < 1e-9
    assert nll.shape == (4,) and bool((nll > 0).all())


def test_docs_with_python_blocks_are_run():
    """A python block in a docs page that this file does not run would go untested: every page with
    one must be listed in CONTINUED_IN (or get a test of its own)."""
    pages = {page for page in (ROOT / "docs").rglob("*.md") if python_blocks(page)}
    listed = set(CONTINUED_IN) | set(OWN_TEST)
    assert pages <= listed, sorted(str(p.relative_to(ROOT)) for p in pages - listed)
    assert all((ROOT / test).is_file() and page.name in (ROOT / test).read_text() for page, test in OWN_TEST.items())


def test_the_readme_repeats_make_demos_evaluation():
    """The README's `gdds eval results/demo-model ...` claims to repeat the evaluation `make demo`
    ran: it must carry the Makefile's settings (issue 24: it once bounded with T = 64, not 128)."""
    makefile = (README.parent / "Makefile").read_text().replace("\\\n", " ")
    demo = re.search(r"gdds eval results/demo ([^\n]*)", makefile).group(1).split()
    shown = re.search(r"`gdds eval results/demo-model ([^`]*)`", README.read_text()).group(1).split()
    out = shown.index("--out")
    assert shown[:out] + shown[out + 2:] == demo
