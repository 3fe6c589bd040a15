"""Dask input: a lazy projection, one task per row block, equal to the in-memory path; run on a
local distributed cluster (threads, and once with worker processes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relreps import RelativeProjection, relative_projection
from relreps import similarity as S
from relreps.errors import InputTypeError, NonFiniteError, ShapeError

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::relreps.centering.AnisotropyWarning")]


def _data(n: int = 103, d: int = 6, k: int = 9, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(k, d))


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.mark.parametrize("similarity", S.available())
@pytest.mark.parametrize("center", [None, "anchors", "auto"])
def test_dask_equals_numpy(client, similarity, center):
    x, a = _data()
    xd = da.from_array(x, chunks=(20, 4))  # columns split too: rechunked to whole rows
    out = relative_projection(xd, a, similarity=similarity, center=center)
    assert isinstance(out, da.Array) and out.shape == (103, 9) and out.dtype == np.float64
    assert out.chunks == ((20, 20, 20, 20, 20, 3), (9,))
    np.testing.assert_allclose(out.compute(), relative_projection(x, a, similarity=similarity,
                                                                   center=center),
                               rtol=1e-12, atol=1e-12)


def test_result_is_lazy_and_one_task_per_block_shares_the_anchors():
    x, a = _data()
    calls = []

    def load(block):
        calls.append(len(block))
        return block

    xd = da.from_array(x, chunks=(25, 6)).map_blocks(load, dtype=x.dtype,
                                                     meta=np.empty((0, 0)))
    out = relative_projection(xd, a, center="anchors")
    assert calls == []  # nothing computed yet
    graph = dict(out.__dask_graph__())
    projection_tasks = [k for k in graph if isinstance(k, tuple) and k[0] == out.name]
    assert len(projection_tasks) == 5  # one per row block
    shared = [k for k in graph if isinstance(k, str) and "relreps-projection-anchors" in k]
    assert len(shared) == 1  # the prepared anchors: one key every block depends on
    np.testing.assert_allclose(out.compute(scheduler="sync"),
                               relative_projection(x, a, center="anchors"), rtol=1e-12)
    assert sorted(calls) == [3, 25, 25, 25, 25]


def test_float32_stays_float32_and_dask_anchors_are_accepted():
    x, a = _data()
    xd = da.from_array(x.astype(np.float32), chunks=40)
    out = relative_projection(xd, da.from_array(a.astype(np.float32)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.compute(scheduler="sync"),
                               relative_projection(x.astype(np.float32), a.astype(np.float32)),
                               rtol=1e-6)


def test_nan_in_a_later_block_names_its_absolute_row():
    x, a = _data()
    x[77, 3] = np.nan
    out = relative_projection(da.from_array(x, chunks=20), a)
    with pytest.raises(NonFiniteError, match=r"x contains NaN or inf values \(rows 77\)"):
        out.compute(scheduler="sync")
    with pytest.raises(NonFiniteError, match=r"rows 77"):
        relative_projection(da.from_array(x, chunks=20), a, similarity="rbf",
                            chunk_size=3).compute(scheduler="sync")


def test_chunk_size_bounds_the_sub_blocks_of_each_task(monkeypatch):
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    seen = []

    def spy(x, u):
        seen.append(x.shape[0])
        return S.get("cosine").apply(x, u)

    S.register("spy", spy, prepare=S.get("cosine").prepare, invariances=())
    x, a = _data(n=50)
    got = relative_projection(da.from_array(x, chunks=20), a, similarity="spy", chunk_size=8)
    np.testing.assert_allclose(got.compute(scheduler="sync"), relative_projection(x, a),
                               rtol=1e-12)
    assert sorted(seen) == sorted([8, 8, 4, 8, 8, 4, 8, 2])


def test_dask_errors_are_named():
    x, a = _data()
    xd = da.from_array(x, chunks=20)
    with pytest.raises(InputTypeError, match="dask array but anchors are a torch tensor"):
        relative_projection(xd, torch.tensor(a))
    with pytest.raises(InputTypeError, match="out= is supported for numpy inputs only"):
        relative_projection(xd, a, out=np.empty((103, 9)))
    with pytest.raises(ShapeError, match="unknown size"):
        relative_projection(xd[xd[:, 0] > 0], a)
    with pytest.raises(ShapeError, match="dimension mismatch"):
        relative_projection(xd, a[:, :3])


def test_transformer_transform_is_lazy_on_the_cluster(client):
    x, _ = _data(200)
    rp = RelativeProjection(n_anchors=12, random_state=0, center="auto").fit(x)
    out = rp.transform(da.from_array(x, chunks=50))
    assert isinstance(out, da.Array)
    np.testing.assert_allclose(client.compute(out).result(), rp.transform(x), rtol=1e-12)
    # Fitting on dask input with explicit anchors keeps everything lazy but the anchors.
    rp2 = RelativeProjection(anchors=x[:12]).fit(da.from_array(x, chunks=50))
    np.testing.assert_allclose(rp2.transform(da.from_array(x, chunks=50)).compute(),
                               relative_projection(x, x[:12]), rtol=1e-12)


def test_with_worker_processes():
    """The prepared anchors travel to another process (pickled once) and back."""
    x, a = _data(400, 8, 16, seed=3)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        out = relative_projection(da.from_array(x.astype(np.float32), chunks=100),
                                  a.astype(np.float32), similarity="euclidean", center="auto")
        got = c.compute(out).result()
    np.testing.assert_allclose(got, relative_projection(x.astype(np.float32),
                                                        a.astype(np.float32),
                                                        similarity="euclidean", center="auto"),
                               rtol=1e-5, atol=1e-5)


def test_lazy_result_does_not_see_later_changes_to_the_inputs():
    x, a = _data()
    centre = a.mean(0)
    out = relative_projection(da.from_array(x, chunks=50), a, center=centre)
    want = relative_projection(x, a, center=centre)
    a[:] = 0.0
    centre[:] = 1e6
    np.testing.assert_allclose(out.compute(scheduler="sync"), want, rtol=1e-12)
