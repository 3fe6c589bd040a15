"""relreps.distributed.get_client, and neighbour search on a LocalCluster that loses a worker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from relreps import neighbors as N
from relreps.distributed import client_info, get_client
from relreps.errors import InputTypeError, OptionError, RelrepsError

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs, error, match", [
    ({"scheduler": "tcp://127.0.0.1:8786", "workers": 2}, OptionError, "not both"),
    ({"workers": 0}, RelrepsError, "workers must be >= 1"),
    ({"workers": True}, InputTypeError, "workers must be an integer"),
    ({"workers": 1.5}, InputTypeError, "workers must be an integer"),
    ({"threads_per_worker": 0}, RelrepsError, "threads_per_worker"),
    ({"memory_limit": "lots"}, OptionError, "not a size"),
    ({"memory_limit": -5}, RelrepsError, "memory_limit"),
    ({"memory_limit": 1.5}, RelrepsError, "memory_limit"),
    ({"scheduler": ""}, OptionError, "address"),
    ({"scheduler": 8786}, OptionError, "address"),
    ({"timeout": 0}, RelrepsError, "timeout"),
])
def test_get_client_validates_before_starting_anything(kwargs, error, match):
    with pytest.raises(error, match=match):
        get_client(**kwargs)


def test_unreachable_scheduler_is_one_named_error():
    with pytest.raises(OptionError, match="cannot reach the dask scheduler"):
        get_client("tcp://127.0.0.1:9", timeout=1)


# --------------------------------------------------------------------------- a local cluster

@pytest.fixture(scope="module")
def client():
    with get_client(workers=2, threads_per_worker=1, memory_limit="1GB") as c:
        yield c


def _die_once(block: np.ndarray, marker: str, row: int, block_info=None) -> np.ndarray:
    """Kill the worker process the first time the block starting at `row` is loaded."""
    start = block_info[0]["array-location"][0][0] if block_info else -1
    if start == row and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return block


@pytest.mark.slow
def test_cluster_results_equal_in_memory(client):
    info = client_info(client)
    assert info["workers"] == 2 and info["threads"] == 2
    assert info["memory_limit_bytes"] == 2 * 10**9
    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 8)).astype(np.float32)
    y = x + rng.normal(size=(900, 8)).astype(np.float32)
    dx, dy = da.from_array(x, chunks=(200, 8)), da.from_array(y, chunks=(350, 8))
    np.testing.assert_array_equal(N.knn_indices(dx, dy, 6).compute(), N.knn_indices(x, y, 6))
    assert N.retrieval_metrics(dx, dy, 5) == N.retrieval_metrics(x, y, 5)
    assert N.mutual_knn(dx, dy, 4) == N.mutual_knn(x, y, 4)


@pytest.mark.slow
def test_a_worker_killed_mid_computation_does_not_change_the_result(client, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    marker = tmp_path / "killed"
    dx = da.from_array(x, chunks=(200, 6)).map_blocks(_die_once, marker=str(marker), row=1000,
                                                      dtype=x.dtype)
    got = N.knn_indices(dx, dx, 5, exclude=np.arange(1200)).compute()
    assert marker.exists()  # a worker did die while the graph ran
    np.testing.assert_array_equal(got, N.knn_indices(x, x, 5, exclude=np.arange(1200)))
    assert N.retrieval_metrics(dx, dx, 3) == N.retrieval_metrics(x, x, 3)
