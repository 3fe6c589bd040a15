"""Every space-similarity metric across the float32/float64 range: magnitudes from subnormal to
near the dtype's maximum, checked against the float64 reference of the same values brought back
to the normal range by an exact power-of-two rescaling, or a named error where the reference is
undefined too (e.g. rows that underflowed to zero)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrics_reference as R
from relreps import metrics as M
from relreps._numerics import pow2_scale, unit_rows
from relreps.errors import RelrepsError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)

# (lowest, highest) power of two applied to data whose largest entry is 1.5. float32: the
# subnormal range starts below 2**-126 and the maximum is ~2**128.
EXPONENTS = {np.float32: (-140, 127), np.float64: (-1065, 1023)}
NORMAL_LOW = {np.float32: -120, np.float64: -1015}
TOL = {np.float32: 2e-5, np.float64: 1e-9}


def scaled(base: np.ndarray, e: int, dtype) -> np.ndarray:
    return np.ldexp(base / np.abs(base).max() * 1.5, e).astype(dtype)


def back(x: np.ndarray, e: int) -> np.ndarray:
    """The exact float64 values of x rescaled to ~1 (powers of two: no rounding)."""
    return np.ldexp(x.astype(np.float64), -e)


def drawn(data, dtype, normal_only: bool = False):
    lo, hi = EXPONENTS[dtype]
    if normal_only:
        lo = NORMAL_LOW[dtype]
    return data.draw(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, hi - 1])))


def pair(seed: int, n: int, d1: int, d2: int, e: int, dtype, offset: int = 3):
    """Two related spaces at magnitudes 2**e and 2**(e - offset), and their float64 references."""
    bx, by = R.correlated_pair(seed, n, d1, d2)
    x, y = scaled(bx, e, dtype), scaled(by, e - offset, dtype)
    return x, y, back(x, e), back(y, e - offset)


def maybe_torch(x, as_torch):
    return torch.from_numpy(x) if as_torch else x


def check(got_fn, expected: float, tol: float, undefined: bool):
    if undefined:
        with pytest.raises(RelrepsError):
            got_fn()
    else:
        got = got_fn()
        assert isinstance(got, float)
        assert got == pytest.approx(expected, abs=tol)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 10**6), n=st.integers(6, 25),
       d=st.integers(2, 6), dtype=st.sampled_from([np.float32, np.float64]),
       as_torch=st.booleans())
def test_mean_cosine_and_cka_across_the_range(data, seed, n, d, dtype, as_torch):
    e = drawn(data, dtype)
    x, y, xr, yr = pair(seed, n, d, d + 1, e, dtype)
    y = y[:, :d]
    yr = yr[:, :d]
    tx, ty = maybe_torch(x, as_torch), maybe_torch(y, as_torch)
    zero_rows = bool((xr == 0).all(1).any() or (yr == 0).all(1).any())
    check(lambda: M.mean_cosine(tx, ty),
          R.mean_cosine(xr, yr) if not zero_rows else 0.0, TOL[dtype], zero_rows)
    constant = bool(np.ptp(xr, axis=0).max() == 0 or np.ptp(yr, axis=0).max() == 0)
    for debiased in (False, True):
        ref = 0.0 if constant else R.cka(xr - xr.mean(0), yr - yr.mean(0), debiased=debiased)
        check(lambda d=debiased: M.cka(tx, ty, debiased=d), ref, TOL[dtype], constant)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 10**6), n=st.integers(6, 20),
       dtype=st.sampled_from([np.float32, np.float64]), debiased=st.booleans())
def test_rbf_cka_across_the_range(data, seed, n, dtype, debiased):
    e = drawn(data, dtype, normal_only=True)
    x, y, xr, yr = pair(seed, n, 3, 4, e, dtype, offset=0)
    ref = R.cka(xr, yr, "rbf", debiased)
    assert M.cka(x, y, kernel="rbf", debiased=debiased) == pytest.approx(ref, abs=TOL[dtype])
    # An absolute bandwidth in the data's units (both spaces at the same magnitude).
    sigma = float(2.0 ** (e - 1))
    ref = R.cka(xr, yr, "rbf", debiased, sigma=0.5)
    assert M.cka(x, y, kernel="rbf", debiased=debiased, sigma=sigma) == \
        pytest.approx(ref, abs=TOL[dtype])


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 10**6), n=st.integers(12, 30),
       dtype=st.sampled_from([np.float32, np.float64]), as_torch=st.booleans())
def test_cca_and_procrustes_across_the_range(data, seed, n, dtype, as_torch):
    e = drawn(data, dtype, normal_only=True)
    x, y, xr, yr = pair(seed, n, 4, 3, e, dtype)
    tx, ty = maybe_torch(x, as_torch), maybe_torch(y, as_torch)
    tol = 1e-9 if dtype == np.float64 else 1e-6  # SVDs run in float64 for either dtype
    assert M.svcca(tx, ty, keep=(3, 2)) == pytest.approx(R.svcca(xr, yr, 3, 2), abs=tol)
    assert M.pwcca(tx, ty) == pytest.approx(R.pwcca(xr, yr), abs=tol)
    for kind in ("squared", "angular"):
        got = M.procrustes_distance(tx, ty, kind=kind)
        tol_p = TOL[dtype] if kind == "squared" else 1e-3 if dtype == np.float32 else 1e-7
        assert got == pytest.approx(R.procrustes(xr, yr, kind), abs=tol_p)


@SETTINGS
@given(data=st.data(), seed=st.integers(0, 10**6), n=st.integers(5, 25),
       dtype=st.sampled_from([np.float32, np.float64]),
       metric=st.sampled_from(["correlation", "cosine", "euclidean"]))
def test_rsa_across_the_range(data, seed, n, dtype, metric):
    e = drawn(data, dtype)
    x, y, xr, yr = pair(seed, n, 4, 5, e, dtype)
    zero = metric != "euclidean" and bool((xr == 0).all(1).any() or (yr == 0).all(1).any())
    constant_rows = metric == "correlation" and bool(
        (np.ptp(xr, axis=1) == 0).any() or (np.ptp(yr, axis=1) == 0).any())
    undefined = zero or constant_rows
    check(lambda: M.rsa(x, y, metric=metric, method="pearson"),
          0.0 if undefined else R.rsa(xr, yr, metric, "pearson"), 1e-9, undefined)
    if e >= NORMAL_LOW[dtype]:  # quantised subnormal data has ties that rounding may split
        check(lambda: M.rsa(x, y, metric=metric),
              0.0 if undefined else R.rsa(xr, yr, metric), 1e-9, undefined)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_of_two_scale_never_overflows_at_the_top_of_the_dtype(dtype):
    fi = torch.finfo(dtype)
    x = torch.tensor([[fi.max, fi.max / 3], [1.0, 2.0], [fi.tiny * fi.eps, 0.0]], dtype=dtype)
    s = pow2_scale(x)
    assert torch.isfinite(s).all()
    assert ((x.abs().amax(1, keepdim=True) / s) < 2).all()
    u, zero = unit_rows(x)
    assert not zero.any()
    assert torch.allclose(u[0].double(), torch.tensor([3.0, 1.0]).double() / 10**0.5)
    assert u[2].tolist() == [1.0, 0.0]
