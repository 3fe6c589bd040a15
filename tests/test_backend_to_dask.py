"""relreps._backend.to_dask: lazy row blocks of numpy and memory-mapped arrays, no up-front copy."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")

from relreps._backend import FileRows, to_dask  # noqa: E402
from relreps.io import read_array  # noqa: E402


def _memmap(tmp_path, n=1000, d=16, dtype=np.float32):
    x = np.random.default_rng(0).standard_normal((n, d)).astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return x, np.load(path, mmap_mode="r")


def test_memmap_is_read_from_its_file_not_copied_into_the_graph(tmp_path):
    x, mm = _memmap(tmp_path, n=20_000, d=64)  # 5 MB
    lazy = to_dask(mm, block_rows=3000)
    assert lazy.chunks[0][0] == 3000 and lazy.shape == x.shape
    graph_bytes = len(pickle.dumps(dict(lazy.__dask_graph__())))
    assert graph_bytes < 100_000, graph_bytes  # the data stays in the file
    np.testing.assert_array_equal(lazy.compute(), x)


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 99), stop=st.integers(1, 100), block=st.integers(1, 40))
def test_views_of_a_memmap_read_the_same_rows(tmp_path_factory, start, stop, block):
    tmp = tmp_path_factory.mktemp("v")
    x, mm = _memmap(tmp, n=100, d=5, dtype=np.float64)
    if stop <= start:
        start, stop = stop - 1, start + 1
    view = mm[start:stop]
    lazy = to_dask(view, block_rows=block)
    np.testing.assert_array_equal(lazy.compute(), x[start:stop])


def test_non_contiguous_memmaps_and_plain_arrays(tmp_path):
    x, mm = _memmap(tmp_path, n=50, d=6)
    np.testing.assert_array_equal(to_dask(mm[:, ::2], block_rows=7).compute(), x[:, ::2])
    np.testing.assert_array_equal(to_dask(x, block_rows=7).compute(), x)
    assert to_dask(da.ones((3, 2))) is not None


def test_file_rows_pickles_small_and_reads_rows(tmp_path):
    x, mm = _memmap(tmp_path, n=200, d=8)
    rows = FileRows(mm.filename, mm.offset, mm.shape, mm.dtype)
    again = pickle.loads(pickle.dumps(rows))
    np.testing.assert_array_equal(again[10:20], x[10:20])


def test_read_array_as_dask_equals_the_file(tmp_path):
    x, _ = _memmap(tmp_path, n=300, d=4)
    lazy = read_array(tmp_path / "x.npy", as_dask=True)
    assert len(pickle.dumps(dict(lazy.__dask_graph__()))) < 50_000
    np.testing.assert_array_equal(lazy.compute(), x)


def test_copy_on_write_changes_are_seen(tmp_path):
    x, _ = _memmap(tmp_path, n=40, d=3)
    cow = np.load(tmp_path / "x.npy", mmap_mode="c")
    cow[5] = 7.0  # a private change, not in the file
    got = to_dask(cow, block_rows=8).compute()
    assert np.all(got[5] == 7.0)
    np.testing.assert_array_equal(got[6:], x[6:])


def test_small_query_sets_are_gathered_before_the_search(tmp_path):
    # Rows drawn from every block of an array: computed into one chunk first, so the search's
    # graph does not wait on all of the array's blocks while holding prepared item blocks.
    from relreps.metrics import knn_indices
    from relreps.neighbors import _gathered

    x, mm = _memmap(tmp_path, n=2000, d=8)
    lazy = to_dask(mm, block_rows=100)
    q = np.arange(0, 2000, 37)
    g = _gathered(lazy[q])
    assert g.numblocks == (1, 1) and len(g.__dask_graph__()) <= 2  # the data and its one block
    np.testing.assert_array_equal(g.compute(), x[q])
    got = np.asarray(knn_indices(lazy[q], lazy, 5, exclude=q))
    want = knn_indices(x[q], x, 5, exclude=q)
    np.testing.assert_array_equal(got, want)
