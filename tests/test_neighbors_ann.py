"""Approximate search (faiss HNSW / IVF): measured recall next to every metric, validation."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from relreps import neighbors as N
from relreps.errors import InputTypeError, MissingDependencyError, OptionError, RelrepsError

pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("one_thread")


def clustered(seed: int, n: int = 3000, d: int = 24, clusters: int = 40):
    """Embedding-like data: cluster centres in a low-dimensional subspace, plus noise."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, d))
    centres = rng.normal(size=(clusters, 8)) @ basis
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, d))
    y = x + 0.4 * rng.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("method", ["hnsw", "ivf"])
def test_approximate_metrics_report_recall_and_stay_close_to_exact(method):
    x, y = clustered(0)
    exact = N.retrieval_metrics(x, y, 10)
    approx = N.retrieval_metrics(x, y, 10, method=method, recall_queries=400)
    assert set(approx) == {"jaccard", "mrr", "recall_at_k", "recall_queries"}
    assert approx["recall_queries"] == 400
    assert approx["recall_at_k"] >= 0.9
    assert approx["jaccard"] == pytest.approx(exact["jaccard"], abs=0.05)
    assert approx["mrr"] == pytest.approx(exact["mrr"], abs=0.05)
    m = N.mutual_knn_metrics(x, y, 5, method=method, recall_queries=300)
    assert m["recall_at_k"] >= 0.9
    assert m["mutual_knn"] == pytest.approx(N.mutual_knn(x, y, 5), abs=0.05)


def test_target_recall_raises_the_search_effort():
    x, y = clustered(1, n=4000, d=48)
    params = {"ef_search": 12, "M": 4, "ef_construction": 16}  # a deliberately poor index
    low = N.retrieval_metrics(x, y, 10, method="hnsw", ann_params=params, target_recall=None,
                              recall_queries=300)
    high = N.retrieval_metrics(x, y, 10, method="hnsw", ann_params=params, target_recall=0.97,
                               recall_queries=300)
    assert low["recall_at_k"] < 0.97
    assert high["recall_at_k"] > low["recall_at_k"]


def test_measure_recall_and_exclusion():
    x, _ = clustered(2, n=1500)
    exact = N.knn_indices(x, x, 5, exclude=np.arange(1500))
    assert N.measure_recall(x, x, 5, exact, exclude=np.arange(1500), sample=200) == \
        {"recall_at_k": 1.0, "recall_queries": 200}
    shuffled = np.random.default_rng(0).permutation(exact.ravel()).reshape(exact.shape)
    assert N.measure_recall(x, x, 5, shuffled, exclude=np.arange(1500))["recall_at_k"] < 0.1
    approx = N.knn_indices(x, x, 5, method="ivf", exclude=np.arange(1500))
    assert approx.shape == (1500, 5) and not (approx == np.arange(1500)[:, None]).any()
    assert N.measure_recall(x, x, 5, approx, exclude=np.arange(1500))["recall_at_k"] >= 0.9
    with pytest.raises(RelrepsError, match="indices must be integer"):
        N.measure_recall(x, x, 5, approx[:, :3])


def test_dask_input_builds_the_index_from_chunks():
    da = pytest.importorskip("dask.array")
    x, y = clustered(3, n=2000)
    q = N.sample_queries(2000, 500, 0)
    got = N.retrieval_metrics(da.from_array(x, chunks=(300, 24)),
                              da.from_array(y, chunks=(450, 24)), 5, queries=q,
                              method="hnsw", recall_queries=200)
    assert got["recall_at_k"] >= 0.9
    assert got["mrr"] == pytest.approx(N.mrr_at_k(x, y, 5, queries=q), abs=0.05)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"ann_params": {"efSearch": 5}}, OptionError, "unknown key"),
    ({"ann_params": {"M": 1}}, RelrepsError, "M"),
    ({"ann_params": {"ef_search": 2.5}}, InputTypeError, "ef_search"),
    ({"ann_params": [("M", 4)]}, InputTypeError, "ann_params must be a dict"),
    ({"target_recall": 1.5}, RelrepsError, "target_recall"),
    ({"recall_queries": 0}, RelrepsError, "recall_queries"),
])
def test_ann_options_are_validated(kwargs, error, match):
    x, y = clustered(4, n=300)
    with pytest.raises(error, match=match):
        N.retrieval_metrics(x, y, 3, method="hnsw", **kwargs)


def test_missing_faiss_is_a_named_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    x, y = clustered(5, n=200)
    with pytest.raises(MissingDependencyError, match="faiss-cpu"):
        N.knn_indices(x, y, 3, method="hnsw")
    assert N.knn_indices(x, y, 3).shape == (200, 3)  # exact search needs no faiss
