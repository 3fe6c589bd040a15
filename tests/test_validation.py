"""The shared validation layer (relreps.validation) on its own."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from relreps import relative_projection
from relreps import validation as V


def _int_memmap(path, data):
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=data.dtype, shape=data.shape)
    mm[:] = data
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float16, np.bool_])
def test_large_integer_and_float16_memmaps_are_converted_block_by_block(tmp_path, monkeypatch,
                                                                       dtype):
    monkeypatch.setattr(V, "MEMMAP_CONVERT_BYTES", 1 << 12)
    monkeypatch.setattr(V, "MEMMAP_BLOCK_BYTES", 1 << 14)
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 200, size=(4000, 50)) % (2 if dtype is np.bool_ else 200)
            ).astype(dtype)
    x = _int_memmap(tmp_path / "x.npy", data)
    target = V.float_dtype(dtype)
    tracemalloc.start()
    try:
        got = V.check_array(x, "x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    whole = data.size * target.itemsize
    assert peak < whole / 4, f"converted in memory: peak {peak} B for {whole} B of data"
    assert isinstance(got, np.memmap) and got._mmap is not None and got.dtype == target
    np.testing.assert_array_equal(np.asarray(got), data.astype(target))
    anchors = data[:5].astype(target)
    np.testing.assert_allclose(relative_projection(x, anchors, center="anchors"),
                               relative_projection(data.astype(target), anchors, center="anchors"),
                               rtol=1e-6)


def test_small_memmaps_and_arrays_are_converted_in_memory(tmp_path):
    data = np.arange(12, dtype=np.int32).reshape(4, 3)
    for x in (_int_memmap(tmp_path / "s.npy", data), data):
        got = V.check_array(x, "x")
        assert got.dtype == np.float64 and getattr(got, "_mmap", None) is None
        np.testing.assert_array_equal(got, data)


def test_float_dtype_is_the_conversion_check_array_applies():
    assert V.float_dtype(np.int8) == np.float64 and V.float_dtype(np.bool_) == np.float64
    assert V.float_dtype(np.float16) == np.float32 and V.float_dtype(np.float32) == np.float32
    assert V.float_dtype(np.longdouble) == np.float64
