"""Every python block of the README runs, in order, in one namespace (the quick start builds the
MiniLM semantic kernel into the tests' private cache)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run():
    blocks = python_blocks()
    assert len(blocks) >= 2 and "import torch, gdds" in blocks[0]
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    xt, q, nll = namespace["xt"], namespace["q"], namespace["nll"]
    assert xt.shape == (32, 128) and (xt != namespace["x0"]).any()
    assert q.shape == (1, 3, 5) and abs(float(q.sum(-1).max()) - 1) < 1e-9
    assert nll.shape == (4,) and bool((nll > 0).all())
