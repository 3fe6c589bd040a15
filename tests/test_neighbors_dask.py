"""Neighbour search and metrics on dask arrays: lazy, and equal to the in-memory results.

These run on dask's local threaded scheduler; tests/test_distributed.py runs the same graphs on a
LocalCluster (with a worker killed mid-run).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps import neighbors as N
from relreps.errors import InputTypeError, NonFiniteError, NumericalError, RelrepsError

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="synchronous"):
        yield


def pair(seed: int, n: int, d: int, dups: int = 10):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x + 0.8 * rng.normal(size=(n, d)).astype(np.float32)
    x[rng.integers(0, n, dups)] = x[rng.integers(0, n, dups)]  # exact ties
    return rng, x, y


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(12, 400), d=st.integers(1, 9),
       k=st.integers(1, 8), cq=st.integers(5, 200), cb=st.integers(5, 200),
       metric=st.sampled_from(["cosine", "inner"]), exclude=st.booleans(),
       tiny=st.booleans())
def test_knn_dask_equals_in_memory(monkeypatch, seed, n, d, k, cq, cb, metric, exclude, tiny):
    rng, x, y = pair(seed, n, d)
    k = min(k, n - 1)
    ex = rng.integers(0, n, size=n) if exclude else None
    expected = N.knn_indices(x, y, k, metric=metric, exclude=ex)
    with monkeypatch.context() as m:
        if tiny:  # many tiles inside every chunk
            m.setattr(N, "plan_blocks", lambda *a, **kw: N.BlockPlan(4, 64, 64))
        lazy = N.knn_indices(da.from_array(x, chunks=(cq, d)), da.from_array(y, chunks=(cb, d)),
                             k, metric=metric, exclude=ex)
        assert isinstance(lazy, da.Array) and lazy.shape == (n, k) and lazy.dtype == np.int64
        np.testing.assert_array_equal(lazy.compute(), expected)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(12, 300), k=st.integers(1, 7),
       chunks=st.integers(7, 150), subset=st.booleans())
def test_metrics_dask_equal_in_memory_exactly(seed, n, k, chunks, subset):
    rng, x, y = pair(seed, n, 6)
    q = N.sample_queries(n, max(1, n // 3), seed) if subset else None
    dx, dy = da.from_array(x, chunks=(chunks, 3)), da.from_array(y, chunks=(chunks + 5, 6))
    ref = N.retrieval_metrics(x, y, k, queries=q)
    assert N.retrieval_metrics(dx, dy, k, queries=q) == ref  # bit-identical (integer counts)
    assert N.retrieval_metrics(x, dy, k, queries=q) == ref  # numpy mixed with dask
    assert N.mrr_at_k(dx, dy, k, queries=q) == ref["mrr"]
    assert N.jaccard_at_k(dx, y, k, queries=q) == ref["jaccard"]
    k = min(k, n - 1)
    assert N.mutual_knn(dx, dy, k) == N.mutual_knn(x, y, k)


def test_dask_results_are_lazy_until_computed():
    calls = []

    def load(block):
        if len(block):  # dask may call it on an empty array to infer the output type
            calls.append(len(block))
        return block

    x = np.random.default_rng(0).normal(size=(200, 4))
    dx = da.from_array(x, chunks=(50, 4)).map_blocks(load, dtype=x.dtype)
    lazy = N.knn_indices(dx, dx, 3)
    assert calls == []
    np.testing.assert_array_equal(lazy.compute(), N.knn_indices(x, x, 3))
    assert calls


def test_dask_value_errors_name_global_rows():
    x = np.random.default_rng(1).normal(size=(100, 4))
    bad = x.copy()
    bad[73, 1] = np.inf
    with pytest.raises(NonFiniteError, match="rows 73"):
        N.knn_indices(da.from_array(x, chunks=25), da.from_array(bad, chunks=25), 2).compute()
    zero = x.copy()
    zero[58] = 0
    with pytest.raises(NumericalError, match=r"zero vectors \(rows \[58\]\)"):
        N.retrieval_metrics(da.from_array(zero, chunks=20), da.from_array(x, chunks=20), 2)


def test_dask_argument_errors_come_before_any_compute():
    dx = da.from_array(np.ones((10, 3)), chunks=5)
    with pytest.raises(InputTypeError, match="mixed dask and torch"):
        N.knn_indices(dx, torch.ones(10, 3), 2)
    with pytest.raises(InputTypeError, match="boolean mask"):
        N.retrieval_metrics(dx, dx, 2, queries=np.ones(10, dtype=bool))
    with pytest.raises(RelrepsError, match="k must be between 1 and 10"):
        N.knn_indices(dx, dx, 11)
    with pytest.raises(InputTypeError, match="complex"):
        N.knn_indices(dx.astype(np.complex64), dx, 2)
    unknown = dx[dx[:, 0] > 0]  # boolean indexing: row count unknown until computed
    with pytest.raises(RelrepsError, match="compute_chunk_sizes"):
        N.knn_indices(unknown, dx, 2)


def test_merge_order_does_not_matter():
    # The tree reduction may merge partial top-k lists in any grouping and order.
    rng = np.random.default_rng(2)
    vals = np.round(rng.normal(size=(20, 12)), 1)  # many ties
    idx = np.stack([rng.permutation(100)[:12] for _ in range(20)])
    parts = [(vals[:, i:i + 3], idx[:, i:i + 3]) for i in range(0, 12, 3)]
    v1, i1 = N._merge_task(parts, 4)
    v2, i2 = N._merge_task([N._merge_task(parts[2:], 4), N._merge_task(parts[:2][::-1], 4)], 4)
    np.testing.assert_array_equal(i1, i2)
    order = np.lexsort((idx, -vals), axis=1)[:, :4]
    np.testing.assert_array_equal(i1, np.take_along_axis(idx, order, 1))
