"""SVCCA, PWCCA, Procrustes distance and RSA: known values, float64/scipy references and the
invariances each one promises (and the transformations it must notice)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrics_reference as R
from relreps import metrics as M
from relreps.errors import InputTypeError, RelrepsError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


def orthonormal_centred(n: int, k: int, seed: int = 0) -> np.ndarray:
    """k orthonormal n-vectors orthogonal to the ones vector (exact sample correlations)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.c_[np.ones(n), rng.normal(size=(n, k))])
    return q[:, 1:]


# ------------------------------------------------------------------------------- CCA

def test_cca_known_values():
    u = orthonormal_centred(50, 4)
    c, s = 0.6, 0.8
    x = np.c_[u[:, 0], u[:, 1]]
    y = np.c_[u[:, 0], c * u[:, 1] + s * u[:, 2]]
    # Canonical correlations 1 and c.
    assert M.svcca(x, y, keep=2) == pytest.approx((1 + c) / 2, abs=1e-12)
    assert M.svcca(x, y, keep=1.0) == pytest.approx((1 + c) / 2, abs=1e-12)
    # PWCCA weights: the neurons of x are u0 (scaled by 3) and u1: alpha = (3, 1).
    x3 = np.c_[3 * u[:, 0], u[:, 1]]
    assert M.pwcca(x3, y) == pytest.approx((3 * 1 + 1 * c) / 4, abs=1e-12)
    assert M.pwcca(x, y) == pytest.approx((1 + c) / 2, abs=1e-12)
    # keep=1 component: the top direction of x3 is u0, matched exactly in y.
    assert M.svcca(x3, y, keep=(1, 2)) == pytest.approx(1.0, abs=1e-12)
    # Unrelated subspaces: correlation 0.
    assert M.svcca(u[:, :1], u[:, 1:2], keep=1) == pytest.approx(0.0, abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(30, 80), d1=st.integers(2, 8),
       d2=st.integers(2, 8), ka=st.integers(1, 8), kb=st.integers(1, 8))
def test_svcca_and_pwcca_equal_the_whitening_reference(seed, n, d1, d2, ka, kb):
    x, y = R.correlated_pair(seed, n, d1, d2)
    ka, kb = min(ka, d1), min(kb, d2)
    assert M.svcca(x, y, keep=(ka, kb)) == pytest.approx(R.svcca(x, y, ka, kb), abs=1e-9)
    assert M.pwcca(x, y) == pytest.approx(R.pwcca(x, y), abs=1e-9)
    assert M.pwcca(x, y, weight_by="b") == pytest.approx(R.pwcca(y, x), abs=1e-9)
    smaller = "a" if d1 <= d2 else "b"
    assert M.pwcca(x, y, weight_by="smaller") == M.pwcca(x, y, weight_by=smaller)


def test_variance_fraction_picks_the_fewest_components():
    rng = np.random.default_rng(3)
    u = orthonormal_centred(100, 3, seed=3)
    x = u * np.array([10.0, 3.0, 0.1])  # variances 100, 9, 0.01
    y = x @ R.orthogonal(rng, 3)
    assert M._n_components(M._cca_basis(x, "a")[1], 0.9, "a") == 1
    assert M._n_components(M._cca_basis(x, "a")[1], 0.99, "a") == 2
    assert M._n_components(M._cca_basis(x, "a")[1], 1.0, "a") == 3
    assert M.svcca(x, y, keep=0.99) == pytest.approx(1.0, abs=1e-12)


def test_cca_invariances():
    rng = np.random.default_rng(4)
    x, y = R.correlated_pair(4, 120, 6, 5)
    for keep in (0.99, 3):
        ref = M.svcca(x, y, keep=keep)
        assert M.svcca(1e5 * x @ R.orthogonal(rng, 6) - 3, y, keep=keep) == \
            pytest.approx(ref, abs=1e-9)
    # SVCCA with every component and PWCCA (weights from a) ignore invertible maps of b.
    m = rng.normal(size=(5, 5)) + 3 * np.eye(5)
    assert M.svcca(x, y @ m, keep=1.0) == pytest.approx(M.svcca(x, y, keep=1.0), abs=1e-9)
    ref = M.pwcca(x, y)
    assert M.pwcca(x, y @ m + 2.0) == pytest.approx(ref, abs=1e-9)
    assert M.pwcca(7.0 * x[:, ::-1] + 1.0, y) == pytest.approx(ref, abs=1e-9)  # permuted neurons
    # ... but PWCCA weighs the neurons of a: a rotation of a changes it.
    assert abs(M.pwcca(x @ R.orthogonal(rng, 6), y) - ref) > 1e-4
    assert M.svcca(y, x, keep=3) == pytest.approx(M.svcca(x, y, keep=3), abs=1e-12)


def test_cca_warns_when_dimensions_fill_the_samples():
    x, y = R.correlated_pair(5, 10, 6, 6)
    with pytest.warns(M.CCAWarning, match="trivially|whatever the data"):
        M.pwcca(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.svcca(x, y, keep=2)


def test_cca_errors():
    x, y = R.correlated_pair(6, 30, 4, 3)
    with pytest.raises(RelrepsError, match="numerical rank 3"):
        M.svcca(x, y, keep=4)
    with pytest.raises(RelrepsError, match="numerical rank 2"):
        M.svcca(x[:, :2] @ np.c_[np.eye(2), np.eye(2)], y, keep=3)  # rank 2 in 4 columns
    for bad, err in ((0, RelrepsError), (0.0, RelrepsError), (1.5, RelrepsError),
                     (True, InputTypeError), ("0.9", InputTypeError), ((1, 2, 3), RelrepsError),
                     ((0.9, None), InputTypeError), (float("nan"), RelrepsError)):
        with pytest.raises(err, match="keep"):
            M.svcca(x, y, keep=bad)
    with pytest.raises(RelrepsError, match="a is constant"):
        M.svcca(np.ones_like(x), y)
    with pytest.raises(RelrepsError, match="weight_by must be one of"):
        M.pwcca(x, y, weight_by="c")


# ------------------------------------------------------------------------------- Procrustes

@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(3, 40), d1=st.integers(1, 30),
       d2=st.integers(1, 30), kind=st.sampled_from(["squared", "angular"]))
def test_procrustes_equals_scipy_rotation_with_zero_padding(seed, n, d1, d2, kind):
    x, y = R.correlated_pair(seed, n, d1, d2)
    got = M.procrustes_distance(x, y, kind=kind)
    assert got == pytest.approx(R.procrustes(x, y, kind), abs=1e-9)


def test_procrustes_known_values_and_invariances():
    rng = np.random.default_rng(7)
    x, y = R.correlated_pair(7, 50, 6, 6)
    assert M.procrustes_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    moved = -4.0 * x @ R.orthogonal(rng, 6) + 11.0
    assert M.procrustes_distance(x, moved) == pytest.approx(0.0, abs=1e-12)
    assert M.procrustes_distance(x, np.c_[x, np.zeros((50, 3))]) == pytest.approx(0, abs=1e-12)
    ref = M.procrustes_distance(x, y)
    assert M.procrustes_distance(y, x) == pytest.approx(ref, abs=1e-12)
    assert M.procrustes_distance(moved, 0.1 * y) == pytest.approx(ref, abs=1e-12)
    assert 0 < ref < 2
    # Orthogonal centred signals: A^T B = 0, the largest distance.
    u = orthonormal_centred(20, 2)
    assert M.procrustes_distance(u[:, :1], u[:, 1:]) == pytest.approx(2.0, abs=1e-12)
    assert M.procrustes_distance(u[:, :1], u[:, 1:], kind="angular") == \
        pytest.approx(math.pi / 2, abs=1e-12)
    with pytest.raises(RelrepsError, match="kind must be one of"):
        M.procrustes_distance(x, y, kind="euclid")
    with pytest.raises(RelrepsError, match="b is constant"):
        M.procrustes_distance(x, np.full_like(y, 3.0))


# ------------------------------------------------------------------------------- RSA

@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(4, 40), d1=st.integers(3, 9),
       d2=st.integers(3, 9), metric=st.sampled_from(["correlation", "cosine", "euclidean"]),
       method=st.sampled_from(["spearman", "pearson"]))
def test_rsa_equals_scipy(seed, n, d1, d2, metric, method):
    # (2 features: every correlation distance is exactly 0 or 2, and scipy's rounding noise
    # breaks those ties arbitrarily; ties are tested below.)
    x, y = R.correlated_pair(seed, n, d1, d2)
    got = M.rsa(x, y, metric=metric, method=method)
    assert got == pytest.approx(R.rsa(x, y, metric, method), abs=1e-9)


def test_rsa_ties_are_averaged_like_scipy():
    # Centred small integers: the Gram products are exact, so tied distances (duplicated rows,
    # equal edges) stay exactly tied. (On arbitrary data, rounding in the matrix products may
    # separate dissimilarities that are equal in exact arithmetic: see the rsa docstring.)
    x = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [-1, -1], [1, 0], [-1, 0]])
    y = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape)
    ranks = M._average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0]))
    assert ranks.tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]
    assert M.rsa(x, y, metric="euclidean") == pytest.approx(R.rsa(x, y, "euclidean"), abs=1e-9)


@pytest.mark.parametrize("metric", ["correlation", "cosine", "euclidean"])
def test_rsa_ties_duplicated_rows_exactly(metric):
    # Duplicated samples: their dissimilarities to any other sample are equal and a duplicate
    # pair's is 0, in exact arithmetic. They must tie exactly (matrix products round a row
    # differently at different positions on some CPUs); scipy's pdist splits some of them by
    # its own rounding, so the reference ties values equal to 12 decimals.
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr

    x, y = R.correlated_pair(21, 80, 12, 9)
    rng = np.random.default_rng(21)
    src, dst = rng.integers(0, 80, 25), rng.integers(0, 80, 25)
    x[dst], y[dst] = x[src], y[src]
    ref = spearmanr(np.round(pdist(x, metric), 12), np.round(pdist(y, metric), 12))[0]
    assert M.rsa(x, y, metric=metric) == pytest.approx(ref, abs=1e-12)
    assert M.rsa(x, y, metric=metric, method="pearson") == \
        pytest.approx(R.rsa(x, y, metric, "pearson"), abs=1e-12)


def test_rsa_invariances_and_subsampling():
    rng = np.random.default_rng(8)
    x, y = R.correlated_pair(8, 60, 5, 7)
    q = R.orthogonal(rng, 5)
    rows = rng.uniform(0.5, 4, size=(60, 1))
    perm = rng.permutation(5)
    moves = {"euclidean": [1e-6 * x @ q + 3e-6],
             "cosine": [1e-6 * x @ q, x * rows],
             "correlation": [1e6 * x[:, perm], x * rows + rows]}
    for metric, moved in moves.items():
        ref = M.rsa(x, y, metric=metric)
        for m in moved:
            assert M.rsa(m, y, metric=metric) == pytest.approx(ref, abs=1e-9)
    # ... and what each metric must notice.
    assert abs(M.rsa(x + 3.0, y, metric="cosine") - M.rsa(x, y, metric="cosine")) > 1e-3
    assert abs(M.rsa(x @ q, y) - M.rsa(x, y)) > 1e-3
    assert abs(M.rsa(x * rows, y, metric="euclidean") - M.rsa(x, y, metric="euclidean")) > 1e-3
    # Above max_samples, the same seeded rows of both spaces.
    sub = M.rsa(x, y, max_samples=20, random_state=3)
    idx = np.sort(np.random.default_rng(3).choice(60, size=20, replace=False))
    assert sub == pytest.approx(R.rsa(x[idx], y[idx]), abs=1e-9)
    assert sub == M.rsa(x, y, max_samples=20, random_state=3)
    assert M.rsa(x, y, max_samples=None) == pytest.approx(R.rsa(x, y), abs=1e-9)
    assert M.rsa(x, x) == pytest.approx(1.0, abs=1e-12)


def test_rsa_errors():
    x, y = R.correlated_pair(9, 12, 3, 3)
    with pytest.raises(RelrepsError, match="metric must be one of"):
        M.rsa(x, y, metric="l1")
    with pytest.raises(RelrepsError, match="method must be one of"):
        M.rsa(x, y, method="kendall")
    with pytest.raises(RelrepsError, match="max_samples must be >= 3"):
        M.rsa(x, y, max_samples=2)
    with pytest.raises(RelrepsError, match="random_state must be >= 0"):
        M.rsa(x, y, random_state=-1)
    with pytest.raises(InputTypeError, match="random_state must be an integer"):
        M.rsa(x, y, random_state=0.5)
    with pytest.raises(ShapeError, match="at least 3 needed"):
        M.rsa(x[:2], y[:2])
    with pytest.raises(ShapeError, match="at least 2 features"):
        M.rsa(x[:, :1], y)
    const = x.copy()
    const[4] = 2.5
    with pytest.raises(RelrepsError, match=r"a has constant rows \(rows \[4\]\)"):
        M.rsa(const, y)
    zero = y.copy()
    zero[[1, 7]] = 0
    with pytest.raises(RelrepsError, match=r"b has zero vectors \(rows \[1, 7\]\)"):
        M.rsa(x, zero, metric="cosine")
    simplex = np.eye(4)
    with pytest.raises(RelrepsError, match="RDM of a is constant"):
        M.rsa(simplex, x[:4], metric="euclidean")
