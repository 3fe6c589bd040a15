"""Input validation of the space-similarity metrics: any array or argument either gives a finite
value in the metric's range or a named RelrepsError, never a raw exception or a silent NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import metrics_reference as R
from relreps import metrics as M
from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")

METRICS = {  # name: (function of two arrays, range of a valid value)
    "mean_cosine": (M.mean_cosine, (-1, 1)),
    "cka": (M.cka, (-1, 1)),
    "cka_debiased": (lambda a, b: M.cka(a, b, debiased=True), (-1, 1)),
    "cka_rbf": (lambda a, b: M.cka(a, b, kernel="rbf"), (-1, 1)),
    "svcca": (M.svcca, (0, 1)),
    "pwcca": (M.pwcca, (0, 1)),
    "procrustes": (M.procrustes_distance, (0, 2)),
    "rsa": (M.rsa, (-1, 1)),
    "rsa_euclidean": (lambda a, b: M.rsa(a, b, metric="euclidean", method="pearson"), (-1, 1)),
    "accumulator": (lambda a, b: M.CKAAccumulator().update(a, b).compute(), (-1, 1)),
    "accumulator_minibatch": (lambda a, b: M.CKAAccumulator("minibatch").update(a, b)
                              .compute(), (-1, 1)),
}

DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_,
          np.complex64]


def arrays():
    return hnp.arrays(dtype=st.sampled_from(DTYPES),
                      shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7))


def named_or_valid(fn, bounds, a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.CCAWarning)
        try:
            value = fn(a, b)
        except RelrepsError:
            return
    assert isinstance(value, float)
    assert np.isfinite(value)
    assert bounds[0] - 1e-12 <= value <= bounds[1] + 1e-12


@settings(max_examples=60, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(METRICS)), a=arrays(), b=arrays(), as_torch=st.booleans())
def test_any_array_gives_a_valid_value_or_a_named_error(name, a, b, as_torch):
    fn, bounds = METRICS[name]
    if as_torch and a.dtype != np.uint8:  # torch has no uint16+ but does take these
        a, b = torch.from_numpy(a.copy()), torch.from_numpy(b.copy())
    named_or_valid(fn, bounds, a, b)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(METRICS)), n=st.integers(0, 8), d1=st.integers(0, 4),
       d2=st.integers(0, 4), seed=st.integers(0, 100),
       spoil=st.sampled_from(["none", "nan", "inf", "constant", "zero_row", "duplicate"]))
def test_degenerate_matrices_give_a_valid_value_or_a_named_error(name, n, d1, d2, seed,
                                                                 spoil):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, d1)), rng.normal(size=(n, d2))
    if n and d1:
        if spoil == "nan":
            a[rng.integers(n), 0] = np.nan
        elif spoil == "inf":
            a[rng.integers(n), 0] = -np.inf
        elif spoil == "constant":
            a[:] = 2.0
        elif spoil == "zero_row":
            a[rng.integers(n)] = 0.0
        elif spoil == "duplicate":
            a[:] = a[0]
    fn, bounds = METRICS[name]
    named_or_valid(fn, bounds, a, b)


BAD_ARRAYS = [
    (None, InputTypeError), ("abc", InputTypeError), ([[1.0, 2.0], [3.0]], InputTypeError),
    (np.ones((6, 2)) * 1j, InputTypeError), (np.ones(6), ShapeError),
    (np.ones((6, 2, 2)), ShapeError), (np.array([["a", "b"]] * 6), InputTypeError),
    (np.array([[{}, 1.0]] * 6, dtype=object), InputTypeError),
    (torch.ones(6, 2, dtype=torch.complex64), InputTypeError),
    (scipy.sparse.csr_matrix(np.ones((6, 2))), InputTypeError),
    (np.full((6, 2), np.nan), NonFiniteError), (3.0, ShapeError),
    (np.ones((5, 2)), ShapeError), (np.ones((6, 0)), ShapeError),
]


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("case", range(len(BAD_ARRAYS)))
def test_bad_arrays_raise_the_named_class(name, case):
    bad, err = BAD_ARRAYS[case]
    good = np.random.default_rng(0).normal(size=(6, 2))
    fn, _ = METRICS[name]
    for args in ((bad, good), (good, bad)):
        with pytest.raises(err):
            fn(*args)


x6, y6 = R.correlated_pair(0, 12, 3, 3)
BAD_ARGS = [
    (M.cka, {"kernel": "poly"}, RelrepsError), (M.cka, {"kernel": None}, RelrepsError),
    (M.cka, {"debiased": "yes"}, InputTypeError), (M.cka, {"debiased": None}, InputTypeError),
    (M.cka, {"kernel": "rbf", "sigma": 0}, RelrepsError),
    (M.cka, {"kernel": "rbf", "sigma": float("inf")}, RelrepsError),
    (M.cka, {"kernel": "rbf", "sigma": True}, InputTypeError),
    (M.cka, {"kernel": "rbf", "max_samples_rbf": True}, InputTypeError),
    (M.cka, {"kernel": "rbf", "max_samples_rbf": 2}, RelrepsError),
    (M.svcca, {"keep": -1}, RelrepsError), (M.svcca, {"keep": [0.5]}, RelrepsError),
    (M.svcca, {"keep": np.float64(1.5)}, RelrepsError), (M.svcca, {"keep": None}, InputTypeError),
    (M.pwcca, {"weight_by": 0}, RelrepsError), (M.pwcca, {"weight_by": "A"}, RelrepsError),
    (M.procrustes_distance, {"kind": "squared "}, RelrepsError),
    (M.rsa, {"metric": "Correlation"}, RelrepsError), (M.rsa, {"method": None}, RelrepsError),
    (M.rsa, {"max_samples": 3.0}, InputTypeError), (M.rsa, {"max_samples": True},
                                                    InputTypeError),
    (M.rsa, {"random_state": "seed"}, InputTypeError),
]


@pytest.mark.parametrize("case", range(len(BAD_ARGS)))
def test_bad_arguments_raise_a_named_error_naming_the_argument(case):
    fn, kwargs, err = BAD_ARGS[case]
    with pytest.raises(err) as info:
        fn(x6, y6, **kwargs)
    assert list(kwargs)[-1] in str(info.value)  # the bad one is listed last


def test_positional_call_of_the_old_signature_still_works():
    assert M.cka(x6, y6, "linear", True) == M.cka(x6, y6, debiased=True)
    assert M.cka(x6, y6, "rbf", False, 1.0, 100) == M.cka(x6, y6, kernel="rbf", sigma=1.0)
