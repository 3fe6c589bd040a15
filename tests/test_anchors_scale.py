"""Samplers and diagnose on memory-mapped, torch and dask inputs, read in row blocks (issue 13),
and at any magnitude (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import anchors as A

da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def _blobs(n: int = 300, d: int = 5, centers: int = 6, seed: int = 0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centers, d)) * 8
    y = rng.integers(0, centers, size=n)
    return (mu[y] + rng.normal(size=(n, d))).astype(dtype), y


@pytest.fixture
def memmap(tmp_path):
    def make(x: np.ndarray) -> np.memmap:
        m = np.lib.format.open_memmap(tmp_path / f"x{x.shape[0]}_{x.dtype}.npy", mode="w+",
                                      dtype=x.dtype, shape=x.shape)
        m[:] = x
        m.flush()
        return np.load(tmp_path / f"x{x.shape[0]}_{x.dtype}.npy", mmap_mode="r")
    return make


class _TrackedRows:
    """An array-like for dask.array.from_array that records how many rows each read asks for."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.shape, self.dtype, self.ndim = x, x.shape, x.dtype, x.ndim
        self.reads: list[int] = []

    def __getitem__(self, key):
        out = self.x[key]
        self.reads.append(int(np.shape(out)[0]) if np.ndim(out) else 1)
        return out


CASES = [("uniform", {}), ("stratified", {}), ("kmeans", {"algorithm": "lloyd"}),
         ("kmeans", {"algorithm": "minibatch", "block_rows": 64, "batch_size": 50}),
         ("farthest_point", {"block_rows": 37}),
         ("farthest_point", {"metric": "cosine", "block_rows": 37})]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("method", "opts"), CASES)
def test_every_kind_gives_the_same_anchors(method, opts, stream, memmap, monkeypatch):
    if stream and method != "farthest_point":
        return
    x, y = _blobs()
    if stream:  # re-read the rows for every anchor instead of keeping them prepared
        ref = A.sample_anchors(x, 12, method, y=y, random_state=3, **opts)
        monkeypatch.setattr(A, "_FP_CACHE_BYTES", 0)
        np.testing.assert_array_equal(A.sample_anchors(x, 12, method, y=y, random_state=3,
                                                       **opts), ref)
    ref = A.sample_anchors(x, 12, method, y=y, random_state=3, **opts)
    assert len(np.unique(ref)) == 12
    kinds = {"memmap": memmap(x), "torch": torch.from_numpy(x),
             "dask": da.from_array(x, chunks=(45, 5)),
             "dask-unknown-chunks": da.from_array(x, chunks=(100, 5))[da.arange(300) >= 0]}
    for name, xs in kinds.items():
        got = A.sample_anchors(xs, 12, method, y=y, random_state=3, **opts)
        np.testing.assert_array_equal(got, ref, err_msg=name)


@pytest.mark.parametrize(("method", "opts"), CASES)
def test_dask_input_is_read_one_block_at_a_time(method, opts, monkeypatch):
    monkeypatch.setattr(A, "_FP_CACHE_BYTES", 0)
    x, y = _blobs(n=400)
    tracked = _TrackedRows(x)
    xs = da.from_array(tracked, chunks=(25, 5))
    idx = A.sample_anchors(xs, 10, method, y=y, random_state=0, **opts)
    assert len(np.unique(idx)) == 10
    limit = opts.get("block_rows", A.BLOCK_BYTES // 40)
    if opts.get("algorithm") == "lloyd":
        return  # Lloyd's algorithm holds the (small) data in memory by design
    assert tracked.reads and max(tracked.reads) <= min(limit, 400) and max(tracked.reads) <= 25


def test_kmeans_minibatch_finds_well_separated_clusters():
    x, y = _blobs(n=2000, centers=6, seed=4)
    # rows sorted by class: the worst order for a streaming pass
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    for algorithm in ("lloyd", "minibatch"):
        idx = A.sample_anchors(x, 6, "kmeans", random_state=0, algorithm=algorithm,
                               block_rows=128, batch_size=64)
        assert sorted(y[idx].tolist()) == list(range(6)), algorithm


def test_kmeans_auto_switches_to_minibatch_above_the_threshold(monkeypatch):
    x, _ = _blobs(n=120)
    lloyd = A.sample_anchors(x, 5, "kmeans", random_state=1, algorithm="lloyd")
    np.testing.assert_array_equal(A.sample_anchors(x, 5, "kmeans", random_state=1), lloyd)
    monkeypatch.setattr(A, "LLOYD_MAX_ROWS", 100)
    mini = A.sample_anchors(x, 5, "kmeans", random_state=1, algorithm="minibatch")
    np.testing.assert_array_equal(A.sample_anchors(x, 5, "kmeans", random_state=1), mini)


# --------------------------------------------------------------------------- k-means assignment

@SETTINGS
@given(n=st.integers(2, 40), k=st.integers(1, 40), d=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1), block=st.integers(1, 50), dup=st.booleans())
def test_assignment_is_distinct_and_stable(n, k, d, seed, block, dup):
    """Each centroid gets a distinct real row; a row closer to a centroid than that centroid's
    anchor belongs to another centroid that is at least as close to it (no pair would rather
    swap), whatever the block size."""
    k = min(k, n)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if dup:  # duplicated rows and centroids crowded around few samples
        x[n // 2:] = x[: n - n // 2]
    centers = x[rng.integers(0, n, size=k)] + 0.01 * rng.normal(size=(k, d))
    rows = A._Rows(x, "x", block_rows=block)
    got = A._nearest_distinct_rows(rows, centers, 1.0)
    assert len(np.unique(got)) == k and got.min() >= 0 and got.max() < n
    dist = np.sqrt(((centers[:, None] - x[None]) ** 2).sum(-1))
    owner = {int(r): c for c, r in enumerate(got)}
    for c in range(k):
        closer = np.flatnonzero(dist[c] < dist[c, got[c]] - 1e-9)
        for r in closer:
            assert int(r) in owner, (c, r)
            assert dist[owner[int(r)], r] <= dist[c, r] + 1e-9
    # and the result does not depend on the block size
    np.testing.assert_array_equal(
        A._nearest_distinct_rows(A._Rows(x, "x", block_rows=n), centers, 1.0), got)


# --------------------------------------------------------------------------- magnitudes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(exponent=st.integers(-140, 120), data=st.data())
def test_samplers_are_exact_at_any_magnitude(dtype, exponent, data):
    """Multiplying the data by a power of two changes no anchor: subnormal to near-max inputs."""
    fi = np.finfo(dtype)
    lo, hi = (-140, 120) if dtype == np.float32 else (-1060, 1010)
    e = data.draw(st.integers(lo, hi), label="exponent") if dtype == np.float64 else exponent
    x, y = _blobs(n=60, d=3, dtype=dtype)
    x = x / np.abs(x).max()  # entries in [-1, 1]
    scaled = (x.astype(np.float64) * 2.0**e).astype(dtype)
    if not np.isfinite(scaled).all() or np.abs(scaled).max() > fi.max / 4:
        return
    if (np.abs(scaled[x != 0]) < fi.tiny).any():  # subnormal entries lose bits: not exact
        x = (scaled.astype(np.float64) / 2.0**e).astype(dtype)
    for method, opts in [("kmeans", {}), ("farthest_point", {}),
                         ("farthest_point", {"metric": "cosine"})]:
        ref = A.sample_anchors(x, 6, method, random_state=0, **opts)
        got = A.sample_anchors(scaled, 6, method, random_state=0, **opts)
        np.testing.assert_array_equal(got, ref, err_msg=f"{method} {opts} at 2**{e}")


@SETTINGS
@given(log10=st.floats(-300, 300), dtype=st.sampled_from([np.float32, np.float64]))
def test_diagnose_is_scale_free(log10, dtype):
    fi = np.finfo(dtype)
    if not np.log10(fi.tiny) + 2 < log10 < np.log10(fi.max) - 3:
        return
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 20)) + 2.0
    x = rng.normal(size=(50, 20)) + 2.0
    ref = A.diagnose(a, x, center="auto")
    f = 10.0**log10
    got = A.diagnose((a * f).astype(dtype), (x * f).astype(dtype), center="auto")
    rtol = 1e-4 if dtype == np.float32 else 1e-8
    for name in ("effective_dim", "effective_dim_plain", "effective_dim_centered",
                 "condition_number", "anisotropy", "outside_span_fraction",
                 "data_effective_dim"):
        assert np.isfinite(getattr(got, name)), name
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=rtol, abs=1e-6), name
    assert (got.rank, got.center, got.n_near_duplicates) == (ref.rank, ref.center,
                                                             ref.n_near_duplicates)
    np.testing.assert_allclose(got.singular_values / f, ref.singular_values, rtol=rtol * 10,
                               atol=1e-10 * ref.singular_values.max())  # centring's null value


def test_diagnose_at_1e200_is_not_nan():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 8))
    diag = A.diagnose(a * 1e200)
    assert diag.effective_dim == pytest.approx(A.diagnose(a).effective_dim, rel=1e-12)
    assert np.isfinite(diag.singular_values).all()


def test_diagnose_refuses_singular_values_beyond_float64():
    from relreps.errors import NumericalError

    a = np.full((400, 400), 1e307) * np.sign(np.random.default_rng(0).normal(size=(400, 400)))
    with pytest.raises(NumericalError, match="singular values exceed the float64 range"):
        A.diagnose(a)


# --------------------------------------------------------------------------- diagnose at scale

def test_diagnose_data_from_every_kind_agrees(memmap):
    rng = np.random.default_rng(2)
    basis = rng.normal(size=(6, 16))
    x = (rng.normal(size=(500, 6)) @ basis + 0.1 * rng.normal(size=(500, 16))).astype(np.float32)
    a = x[:10]
    for center in (False, True):
        ref = A.diagnose(a, x, center=center)
        tracked = _TrackedRows(x)
        for xs in (memmap(x), torch.from_numpy(x), da.from_array(x, chunks=(70, 16)),
                   da.from_array(tracked, chunks=(50, 16))):
            got = A.diagnose(a, xs, center=center, block_rows=64)
            assert got.outside_span_fraction == pytest.approx(ref.outside_span_fraction,
                                                              rel=1e-10, abs=1e-12)
            assert got.data_effective_dim == pytest.approx(ref.data_effective_dim, rel=1e-10)
            assert got.n_data == 500
        assert max(tracked.reads) <= 50
        # anchors as a dask array too
        got = A.diagnose(da.from_array(a, chunks=(3, 16)), x, center=center)
        assert got.outside_span_fraction == pytest.approx(ref.outside_span_fraction, rel=1e-10)


def test_diagnose_names_non_finite_data_rows():
    from relreps.errors import NonFiniteError

    x = np.ones((40, 3))
    x[33, 2] = np.nan
    for xs in (x, da.from_array(x, chunks=(10, 3))):
        with pytest.raises(NonFiniteError, match=r"x contains NaN or inf values \(rows 33\)"):
            A.diagnose(np.eye(3), xs, block_rows=8)


def test_block_tasks_pickle_for_a_cluster():
    """What dask ships to workers (the per-block functions and their bound arguments) pickles."""
    import functools
    import pickle

    centers = np.ones((2, 3))
    for fn in (functools.partial(A._scan_block, name="x"),
               functools.partial(A._assign_block, centers=centers, scale=2.0),
               functools.partial(A._fp_dist, p=np.ones(3), metric="cosine", scale=1.0, name="x"),
               functools.partial(A._moment_block, mu=None, name="x")):
        back = pickle.loads(pickle.dumps(fn))
        assert back.func is fn.func and back.keywords.keys() == fn.keywords.keys()


def test_samplers_and_diagnose_on_a_local_cluster():
    distributed = pytest.importorskip("distributed")
    x, y = _blobs(n=200)
    xs = da.from_array(x, chunks=(40, 5))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        for method, opts in [("uniform", {}), ("stratified", {}),
                             ("kmeans", {"algorithm": "minibatch", "block_rows": 64}),
                             ("farthest_point", {"block_rows": 64})]:
            got = A.sample_anchors(xs, 6, method, y=y, random_state=0, **opts)
            np.testing.assert_array_equal(
                got, A.sample_anchors(x, 6, method, y=y, random_state=0, **opts))
        diag = A.diagnose(x[:8], xs, block_rows=64)
        assert diag.outside_span_fraction == pytest.approx(
            A.diagnose(x[:8], x).outside_span_fraction, abs=1e-12)
        bad = x.copy()
        bad[150, 1] = np.inf
        from relreps.errors import NonFiniteError

        with pytest.raises(NonFiniteError, match=r"rows 150"):
            A.sample_anchors(da.from_array(bad, chunks=(40, 5)), 4, random_state=0)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.float16, np.bool_])
def test_quantised_memmaps_are_converted_block_by_block(dtype, memmap):
    rng = np.random.default_rng(5)
    raw = (rng.normal(size=(200, 4)) * 20).astype(dtype)
    m = memmap(raw)
    assert isinstance(m, np.memmap) and m.dtype == dtype
    for method, opts in [("uniform", {}), ("kmeans", {"algorithm": "minibatch",
                                                      "block_rows": 32}),
                         ("farthest_point", {"block_rows": 32})]:
        if dtype == np.bool_ and method == "kmeans":
            continue  # 16 distinct rows: fewer than the clusters asked for
        np.testing.assert_array_equal(
            A.sample_anchors(m, 8, method, random_state=0, **opts),
            A.sample_anchors(raw.astype(np.float64), 8, method, random_state=0, **opts))
    np.testing.assert_allclose(A.diagnose(raw[:10].astype(float), m).outside_span_fraction,
                               A.diagnose(raw[:10].astype(float), raw.astype(float))
                               .outside_span_fraction, atol=1e-12)
    with pytest.raises(A.InputTypeError, match="complex"):
        A.sample_anchors(memmap(raw.astype(np.complex64)), 3)


def test_meta_tensors_have_no_values_to_sample():
    with pytest.raises(A.InputTypeError, match="meta device"):
        A.sample_anchors(torch.empty(10, 3, device="meta"), 3)


@pytest.mark.parametrize("exponent", [-1060, -1040, -600, 600, 1010])
@pytest.mark.parametrize("center", [False, True])
def test_diagnose_with_data_is_exact_down_to_subnormals(exponent, center):
    """Scaling anchors and data by 2**e changes nothing beyond the rounding of the scaled
    values themselves (subnormals keep fewer bits): compare with those values scaled back."""
    rng = np.random.default_rng(6)
    a, x = rng.normal(size=(4, 8)) + 1.5, rng.normal(size=(60, 8)) + 1.5
    f = 2.0**exponent
    a_f, x_f = a * f, x * f
    ref = A.diagnose(a_f / f, x_f / f, center=center)  # exactly the values diagnose sees
    got = A.diagnose(a_f, x_f, center=center)
    assert 0 < ref.outside_span_fraction < 1
    assert got.outside_span_fraction == pytest.approx(ref.outside_span_fraction, rel=1e-12)
    assert got.data_effective_dim == pytest.approx(ref.data_effective_dim, rel=1e-12)
    assert A.diagnose(a_f, center=center).outside_span_fraction == pytest.approx(
        A.diagnose(a_f / f, center=center).outside_span_fraction, rel=1e-12)
