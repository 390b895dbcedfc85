import atexit
import os
import shutil
import tempfile

import pytest
import torch

# transformers reads HF_MODULES_CACHE once, when it is imported: set it before any test imports it, so the
# remote code of exported model folders (tests/engine/test_hf_modeling.py) is cached here, not in the
# user's ~/.cache/huggingface/modules.
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="gdds-test-hf-modules-")
atexit.register(shutil.rmtree, os.environ["HF_MODULES_CACHE"], ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Keep every cache the tests create (kNN graphs, token arrays) out of the user's."""
    old = os.environ.get("GDDS_CACHE_DIR")
    os.environ["GDDS_CACHE_DIR"] = str(tmp_path_factory.mktemp("gdds-cache"))
    yield
    if old is None:
        os.environ.pop("GDDS_CACHE_DIR", None)
    else:
        os.environ["GDDS_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def device():
    """The device of the device-sensitive tests (``helpers.DEVICE``: GDDS_TEST_DEVICE, else cpu)."""
    from helpers import DEVICE

    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("GDDS_TEST_DEVICE asks for cuda but CUDA is not available")
    return DEVICE
