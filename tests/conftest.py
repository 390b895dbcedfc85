import os

import pytest
import torch


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
