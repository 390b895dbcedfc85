import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


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
