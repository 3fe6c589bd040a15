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


def _estimators():
    from relreps.nn import TorchClassifier
    from relreps.projection import RelativeProjection
    from relreps.stitching import CVLogisticRegression
    from relreps.translation import LatentTranslator

    return [("RelativeProjection", lambda X: RelativeProjection(n_anchors=4).fit(X)),
            ("LatentTranslator", lambda X: LatentTranslator().fit(X, np.ones((len(X), 3)))),
            ("LatentTranslator-Y", lambda X: LatentTranslator().fit(np.ones((len(X), 3)), X)),
            ("TorchClassifier", lambda X: TorchClassifier(epochs=1).fit(X, _two(X))),
            ("CVLogisticRegression", lambda X: CVLogisticRegression().fit(X, _two(X)))]


def _two(X):
    return np.arange(len(X)) % 2


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: e[0])
@pytest.mark.parametrize("make", [lambda b: b.astype(str), lambda b: b.astype(str).astype(object),
                                  lambda b: b.astype(bytes),
                                  lambda b: np.zeros(b.shape, "datetime64[s]")],
                         ids=["str", "object-str", "bytes", "datetime"])
def test_estimators_refuse_what_check_array_refuses(est, make):
    # scikit-learn parses strings of digits as numbers; relreps refuses them everywhere
    from relreps.errors import InputTypeError

    b = np.random.default_rng(0).normal(size=(12, 3))
    with pytest.raises(InputTypeError):
        est[1](make(b))


def test_estimators_refuse_string_columns_of_a_dataframe():
    pd = pytest.importorskip("pandas")
    from relreps.errors import InputTypeError
    from relreps.projection import RelativeProjection

    df = pd.DataFrame({"a": np.arange(10.0), "b": [str(v) for v in range(10)]})
    with pytest.raises(InputTypeError, match="'b'"):
        RelativeProjection(n_anchors=3).fit(df)
    numeric = df.assign(b=np.arange(10.0) ** 2)
    fitted = RelativeProjection(n_anchors=3, center="anchors").fit(numeric)
    assert list(fitted.feature_names_in_) == ["a", "b"]  # names kept for numeric frames


@pytest.mark.parametrize("est", _estimators(), ids=lambda e: e[0])
def test_estimators_name_nan_input_as_non_finite(est):
    # scikit-learn's NaN message mentions "samples", which used to make it a ShapeError
    from relreps.errors import NonFiniteError

    b = np.random.default_rng(0).normal(size=(12, 3))
    b[4, 1] = np.nan
    with pytest.raises(NonFiniteError):
        est[1](b)
