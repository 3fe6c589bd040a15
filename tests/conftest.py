"""Shared test set-up: an isolated embedding cache per test session, and no progress bars.

Every test session gets its own empty `RELREPS_CACHE` (so tests never read results cached by
earlier runs or by the user, and never write into ~/.cache), and `RELREPS_QUIET=1` silences
progress bars. Both are restored when the session ends.

Opt-in fixture `one_thread` (e.g. ``pytestmark = pytest.mark.usefixtures("one_thread")``):
torch and the BLAS libraries (numpy, scikit-learn) use one thread during the test. Many tiny ops
run faster that way, much faster on a busy shared machine where extra threads only spin.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _relreps_test_environment(tmp_path_factory: pytest.TempPathFactory):
    saved = {k: os.environ.get(k) for k in ("RELREPS_CACHE", "RELREPS_QUIET")}
    os.environ["RELREPS_CACHE"] = str(tmp_path_factory.mktemp("relreps-cache"))
    os.environ["RELREPS_QUIET"] = "1"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def one_thread():
    """Run the test with one torch thread and one BLAS thread, restoring the counts after."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
