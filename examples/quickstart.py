"""The README's three lines: load a model folder (by default the one `make demo` exports), sample
text with the exact reverse chain, score text with an upper bound on its NLL.

    python examples/quickstart.py [MODEL_DIR]
"""
import sys

import gdds

model = gdds.load(sys.argv[1] if len(sys.argv) > 1 else "results/demo-model")
print(model.sample(num=1, length=64, steps=8, prompt="ROMEO.")[0])
print(model.nll_bound("To be, or not to be, that is the question.", steps=32))
