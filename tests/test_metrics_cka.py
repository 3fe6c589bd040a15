"""CKA: both routes (feature space, Gram), kernels, estimators, memmap, dask and minibatches
against the Gram-matrix definitions of tests/metrics_reference.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrics_reference as R
from relreps import metrics as M
from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(5, 40), d1=st.integers(1, 50),
       d2=st.integers(1, 50), debiased=st.booleans(), offset=st.sampled_from([0.0, 3.0, -50.0]))
def test_linear_cka_both_routes_equal_the_gram_definition(seed, n, d1, d2, debiased, offset):
    x, y = R.correlated_pair(seed, n, d1, d2)
    x = x + offset  # CKA is translation invariant; a large mean must not cost precision
    expected = R.cka(x - x.mean(0), y, debiased=debiased)
    assert M.cka(x, y, debiased=debiased) == pytest.approx(expected, abs=1e-9)
    for route in ("feature", "gram"):
        hxy, hxx, hyy = (float(t) for t in M._linear_terms(x, y, debiased, route=route))
        assert hxy / np.sqrt(hxx * hyy) == pytest.approx(expected, abs=1e-9)


def test_gram_route_is_taken_only_for_fewer_samples_than_features():
    assert M._use_gram(10, 100, 200)
    assert not M._use_gram(1000, 100, 200)
    assert not M._use_gram(300, 10, 10)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(6, 30), debiased=st.booleans(),
       sigma=st.sampled_from([None, 0.7, 3.0]))
def test_rbf_cka_equals_the_gram_definition(seed, n, debiased, sigma):
    x, y = R.correlated_pair(seed, n, 4, 6)
    expected = R.cka(x, y, "rbf", debiased, sigma)
    got = M.cka(x, y, kernel="rbf", debiased=debiased, sigma=sigma)
    assert got == pytest.approx(expected, abs=1e-9)


def test_mean_cosine_values():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    assert M.mean_cosine(a, b) == pytest.approx((1 + 0 - 1) / 3, abs=1e-15)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    expected = R.mean_cosine(x, y)
    assert M.mean_cosine(x, y) == pytest.approx(expected, abs=1e-14)
    assert M.mean_cosine(x * 3, y * 0.5) == pytest.approx(expected, abs=1e-14)
    assert M.mean_cosine(x, -x) == pytest.approx(-1.0, abs=1e-15)
    z = y.copy()
    z[[2, 30]] = 0
    with pytest.raises(RelrepsError, match=r"b has zero vectors \(rows \[2, 30\]\)"):
        M.mean_cosine(x, z)
    with pytest.raises(ShapeError, match="widths must match"):
        M.mean_cosine(x, y[:, :4])


def test_cka_detects_shared_structure():
    x, y = R.correlated_pair(6, 400, 30, 20, noise=0.3)
    assert M.cka(x, y, debiased=True) > 0.5
    rng = np.random.default_rng(6)
    assert abs(M.cka(x, rng.normal(size=(400, 20)), debiased=True)) < 0.05


def test_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    assert M.cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert M.cka(x, -2 * x + 7) == pytest.approx(1.0, abs=1e-12)
    # Two orthogonal, centred one-dimensional signals: CKA 0 exactly.
    u = np.array([1.0, -1.0, 1.0, -1.0])
    v = np.array([1.0, 1.0, -1.0, -1.0])
    assert M.cka(u[:, None], v[:, None]) == pytest.approx(0.0, abs=1e-15)
    # One feature in common out of two equal-variance independent ones: K = x x^T, and with
    # orthogonal centred columns linear CKA is ||X^T Y||^2 / (||X^T X|| ||Y^T Y||) = 1/2.
    w = np.array([1.0, 1.0, 1.0, 1.0]) * np.array([1, -1, -1, 1])
    assert M.cka(np.c_[u, v], np.c_[u, w]) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(kernel, debiased):
    rng = np.random.default_rng(1)
    x, y = R.correlated_pair(1, 60, 8, 8)
    ref = M.cka(x, y, kernel=kernel, debiased=debiased)
    q = R.orthogonal(rng, 8)
    for moved in (x @ q, 1e-3 * x, 1e4 * x - 7.0):
        assert M.cka(moved, y, kernel=kernel, debiased=debiased) == pytest.approx(ref, abs=1e-9)
    assert M.cka(y, x, kernel=kernel, debiased=debiased) == pytest.approx(ref, abs=1e-12)
    skew = x @ np.diag(np.geomspace(0.05, 20, 8))  # not an isotropic map: changes CKA
    assert abs(M.cka(skew, y, kernel=kernel, debiased=debiased) - ref) > 0.01


def test_absolute_sigma_follows_the_units_of_the_input():
    x, y = R.correlated_pair(2, 30, 3, 4)
    ref = M.cka(x, y, kernel="rbf", sigma=1.5)
    assert M.cka(x * 2.0**-60, y * 2.0**-60, kernel="rbf", sigma=1.5 * 2.0**-60) == \
        pytest.approx(ref, abs=1e-10)
    assert M.cka(x * 1e3, y * 1e3, kernel="rbf", sigma=1.5) != pytest.approx(ref, abs=1e-3)


def test_debiased_is_near_zero_for_independent_wide_data():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(200, 200)), rng.normal(size=(200, 200))
    assert M.cka(x, y) > 0.3
    assert abs(M.cka(x, y, debiased=True)) < 0.05


def test_float32_inputs_stay_float32_in_the_products_and_match_float64():
    x, y = R.correlated_pair(3, 3000, 64, 48)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    for debiased in (False, True):
        ref = R.cka(x32.astype(np.float64)[:400], y32.astype(np.float64)[:400], debiased=debiased)
        assert M.cka(x32[:400], y32[:400], debiased=debiased) == pytest.approx(ref, abs=2e-6)
        full = M.cka(x, y, debiased=debiased)
        assert M.cka(x32, y32, debiased=debiased) == pytest.approx(full, abs=2e-6)


def test_memmap_input_is_streamed_and_read_only_maps_work(tmp_path):
    x, y = R.correlated_pair(4, 700, 20, 10)
    for arr, name in ((x, "x"), (y, "y")):
        np.save(tmp_path / f"{name}.npy", arr.astype(np.float32))
    mx = np.load(tmp_path / "x.npy", mmap_mode="r")
    my = np.load(tmp_path / "y.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning on non-writable arrays
        got = M.cka(mx, my, debiased=True)
    assert got == pytest.approx(M.cka(x, y, debiased=True), abs=1e-5)


def test_blocks_give_the_same_value(monkeypatch):
    x, y = R.correlated_pair(6, 1000, 30, 12)
    whole = M.cka(x, y, debiased=True)
    monkeypatch.setattr(M, "_BLOCK_ELEMENTS_LINEAR", 300 * 30)  # blocks of 300 rows (and 256)
    assert M.cka(x, y, debiased=True) == pytest.approx(whole, abs=1e-12)


# ------------------------------------------------------------------------------- dask

@pytest.mark.parametrize("debiased", [False, True])
def test_dask_equals_in_memory(debiased):
    da = pytest.importorskip("dask.array")
    x, y = R.correlated_pair(7, 230, 9, 6)
    expected = M.cka(x, y, debiased=debiased)
    dx = da.from_array(x, chunks=((50, 7, 100, 73), (4, 5)))  # uneven rows, split columns
    dy = da.from_array(y, chunks=(60, 6))
    assert M.cka(dx, dy, debiased=debiased) == pytest.approx(expected, abs=1e-12)
    assert M.cka(dx, y, debiased=debiased) == pytest.approx(expected, abs=1e-12)


def test_dask_errors_name_the_row_and_refuse_what_is_not_blockwise():
    da = pytest.importorskip("dask.array")
    x, y = R.correlated_pair(8, 100, 4, 3)
    bad = x.copy()
    bad[77, 1] = np.nan
    with pytest.raises(NonFiniteError, match="rows 77"):
        M.cka(da.from_array(bad, chunks=30), y)
    with pytest.raises(InputTypeError, match="numpy or torch"):
        M.cka(da.from_array(x, chunks=30), y, kernel="rbf")
    with pytest.raises(InputTypeError, match="numpy or torch"):
        M.mean_cosine(da.from_array(x, chunks=30), x)
    with pytest.raises(InputTypeError):
        M.cka(da.from_array(x, chunks=30), torch.tensor(y))
    unknown = da.from_array(x, chunks=30)
    unknown = unknown[unknown[:, 0] > -100]  # a boolean filter: row counts unknown
    with pytest.raises(ShapeError, match="compute_chunk_sizes"):
        M.cka(unknown, y)
    assert M.cka(unknown.compute_chunk_sizes(), y) == pytest.approx(M.cka(x, y), abs=1e-12)


# ------------------------------------------------------------------------------- minibatches

@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(4, 120), debiased=st.booleans(),
       cuts=st.lists(st.integers(1, 119), max_size=6), as_torch=st.booleans())
def test_exact_accumulator_equals_full_data_cka(seed, n, debiased, cuts, as_torch):
    x, y = R.correlated_pair(seed, n, 7, 5)
    x[seed % n] *= 1e3  # a batch with a much larger scale than the others
    bounds = sorted({0, n, *[c for c in cuts if c < n]})
    acc = M.CKAAccumulator(debiased=debiased)
    for s, e in zip(bounds[:-1], bounds[1:]):
        xs, ys = (torch.tensor(x[s:e]), torch.tensor(y[s:e])) if as_torch else (x[s:e], y[s:e])
        assert acc.update(xs, ys) is acc
    assert acc.n_samples == n
    assert acc.compute() == pytest.approx(M.cka(x, y, debiased=debiased), abs=1e-9)


def test_minibatch_estimator_equals_the_average_of_batch_hsics():
    x, y = R.correlated_pair(9, 150, 12, 9)
    batches = [(x[s:s + 32], y[s:s + 32]) for s in range(0, 150, 32)] + [(x[:3], y[:3])]
    acc = M.CKAAccumulator("minibatch")
    for xb, yb in batches:
        acc.update(xb, yb)
    assert acc.skipped_samples == 3 and acc.n_samples == 150
    assert acc.compute() == pytest.approx(R.minibatch_cka(batches), abs=1e-10)
    # One batch holding every row: the debiased full-data CKA.
    one = M.CKAAccumulator("minibatch").update(x, y).compute()
    assert one == pytest.approx(M.cka(x, y, debiased=True), abs=1e-10)
    # Invariances hold batch by batch (a common rescaling of every batch of one space).
    acc2 = M.CKAAccumulator("minibatch")
    q = R.orthogonal(np.random.default_rng(0), 12)
    for xb, yb in batches:
        acc2.update(1e-30 * xb @ q + 4e-30, yb)
    assert acc2.compute() == pytest.approx(acc.compute(), abs=1e-10)


def test_accumulator_errors_and_reset():
    x, y = R.correlated_pair(10, 20, 3, 2)
    with pytest.raises(RelrepsError, match="no batch"):
        M.CKAAccumulator().compute()
    with pytest.raises(RelrepsError, match="debiased=True"):
        M.CKAAccumulator("minibatch", debiased=False)
    with pytest.raises(RelrepsError, match="estimator must be one of"):
        M.CKAAccumulator("online")
    with pytest.raises(InputTypeError, match="debiased"):
        M.CKAAccumulator(debiased="yes")
    acc = M.CKAAccumulator(debiased=True).update(x[:3], y[:3])
    with pytest.raises(ShapeError, match="at least 4"):
        acc.compute()
    with pytest.raises(ShapeError, match="differ from the first batch"):
        acc.update(x[3:], y[3:, :1])
    with pytest.raises(InputTypeError, match="one device"):
        acc.update(torch.empty(2, 3, device="meta"), torch.empty(2, 2, device="meta"))
    with pytest.raises(ShapeError, match="row counts differ"):
        acc.update(x[:5], y[:4])
    small = M.CKAAccumulator("minibatch").update(x[:3], y[:3])
    with pytest.raises(RelrepsError, match="3 rows skipped"):
        small.compute()
    acc.reset()
    assert acc.n_samples == 0
    assert acc.update(x, y).compute() == pytest.approx(M.cka(x, y, debiased=True), abs=1e-12)


# ------------------------------------------------------------------------------- errors

def test_cka_argument_errors():
    x, y = R.correlated_pair(11, 10, 3, 3)
    with pytest.raises(RelrepsError, match="sigma must be > 0"):
        M.cka(x, y, kernel="rbf", sigma=0)
    with pytest.raises(RelrepsError, match="sigma must be"):
        M.cka(x, y, kernel="rbf", sigma=-1.0)
    with pytest.raises(RelrepsError, match="sigma must be finite"):
        M.cka(x, y, kernel="rbf", sigma=float("nan"))
    with pytest.raises(InputTypeError, match="sigma must be a number"):
        M.cka(x, y, kernel="rbf", sigma="1")
    with pytest.raises(RelrepsError, match="sigma is the rbf kernel's bandwidth"):
        M.cka(x, y, sigma=1.0)
    with pytest.raises(InputTypeError, match="debiased must be True or False"):
        M.cka(x, y, debiased=1)
    with pytest.raises(InputTypeError, match="max_samples_rbf must be an integer"):
        M.cka(x, y, kernel="rbf", max_samples_rbf=5.5)
    with pytest.raises(ShapeError, match="max_samples_rbf=5"):
        M.cka(x, y, kernel="rbf", max_samples_rbf=5)
    with pytest.raises(ShapeError, match="debiased CKA needs at least 4 samples"):
        M.cka(x[:3], y[:3], debiased=True)
    dup = np.r_[np.repeat(x[:1], 8, axis=0), x[1:3]]  # 56 of 90 pairs at distance 0
    with pytest.raises(RelrepsError, match="median pairwise distance of a is 0"):
        M.cka(dup, y, kernel="rbf")
    assert 0 <= M.cka(dup, y, kernel="rbf", sigma=1.0) <= 1
    with pytest.raises(RelrepsError, match="b has no .*variance"):
        M.cka(x, np.ones_like(y))
