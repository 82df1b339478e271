"""Settings every test shares."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_form_cache(tmp_path_factory):
    """Compiles measure kernels' weight forms into a cache of this run's own (weights="auto"):
    a test neither reads the machine's cache nor leaves decisions in it."""
    from slimgraph.backends.tvm.weight_forms import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("slimgraph-cache")))
        yield
