"""Every registered similarity across the whole float32/float64 range: right or a named error.

Hypothesis draws magnitudes for the samples and the anchors (separately) from the subnormal range
up to just below the dtype's largest value, and compares each built-in similarity with a
reference computed in extended precision (``np.longdouble``, whose exponent range covers every
float64 input and every product of two). Where the true result is not representable in the
input's dtype (above its largest value) the projection must raise ``NumericalError`` and nothing
else; everywhere else it must return the reference to the dtype's precision (results in the
subnormal range to the subnormal spacing).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import relative_projection
from relreps import similarity as S
from relreps.centering import AnisotropyWarning
from relreps.errors import NumericalError
from test_similarity import REFERENCE as REFERENCE64
from test_similarity import _dist

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore", category=AnisotropyWarning)]

LD = np.longdouble
BUILTINS = ["cosine", "angular", "inner", "euclidean", "l1", "linf", "rbf", "basis"]
# Relative tolerance, per output row, against the largest reference value of that row.
# Tolerances relative to each row's error scale (see `error_scale`): a few ulps, more where the
# function amplifies rounding (arccos near +-1, the kernel's exponent, the pseudo-inverse).
RTOL = {np.float32: {"basis": 2e-3, "rbf": 5e-4, "angular": 5e-4, "euclidean": 1e-5},
        np.float64: {"basis": 1e-9, "rbf": 1e-11, "angular": 2e-8, "euclidean": 1e-13}}
DEFAULT_RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _needs_longdouble() -> None:
    if np.finfo(LD).maxexp < 16000:
        pytest.skip("np.longdouble is plain float64 on this platform: no extended reference")


def _pow2(m: np.ndarray) -> np.ndarray:
    """Powers of two >= m (1 where m == 0), exact."""
    _, e = np.frexp(m.astype(LD))
    return np.where(m > 0, np.ldexp(LD(1), e), LD(1))


def _basis(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    # Linear in x row by row, inverse-homogeneous in a: scale both to ~1, solve in float64
    # (lstsq has no long double), and put the exact powers of two back.
    sx = _pow2(np.abs(x).max(1, keepdims=True))
    sa = _pow2(np.abs(a).max())
    c = np.linalg.lstsq((a / sa).astype(np.float64).T, (x / sx).astype(np.float64).T,
                        rcond=None)[0].T
    return c.astype(LD) * sx / sa


# The float64 reference formulas of test_similarity work unchanged in long double; only the
# change of basis needs scaling (numpy's least squares has no long double).
REFERENCE = {**REFERENCE64, "basis": _basis}


def reference(name: str, x: np.ndarray, a: np.ndarray, center: str | None
              ) -> tuple[np.ndarray, float]:
    """(true similarities in long double, largest magnitude of the centred inputs).

    Centring is computed in the data's units, or, for anchors near the dtype's limits (subnormal
    or huge), in their frame (divided by a power of two >= their largest magnitude): the second
    value is then the largest centred sample in that frame.
    """
    x, a = x.astype(LD), a.astype(LD)
    if center != "anchors":
        return REFERENCE[name](x, a), float(max(np.abs(x).max(), np.abs(a).max()))
    mu = a.mean(0)
    x, a = x - mu, a - mu
    return REFERENCE[name](x, a), float(max(np.abs(x).max(), np.abs(a).max()))


def error_scale(name: str, x: np.ndarray, a: np.ndarray, center: str | None) -> np.ndarray:
    """(n, 1) scale of the rounding error each row may carry (normwise, as in error analysis).

    Bounded similarities (cosine, angular, rbf) err in absolute terms. A dot product of inputs
    rounded relative to their own magnitudes errs relative to (|x_i| + |mu|)(|a_j| + |mu|), a
    distance relative to |x_i| + |a_j| + 2 |mu|, coordinates in the anchor basis relative to
    (|x_i| + |mu|) |pinv(a)|.
    """
    xl, al = x.astype(LD), a.astype(LD)
    mu = al.mean(0) if center == "anchors" else np.zeros(al.shape[1], LD)
    if name in ("cosine", "angular", "rbf"):
        return np.ones((len(x), 1), LD)
    p = {"l1": 1, "linf": np.inf}.get(name, 2)

    def norm(v: np.ndarray) -> np.ndarray:
        v = np.abs(v)
        return v.max(-1) if p == np.inf else (v**p).sum(-1) ** (1 / p)

    xs, anchors, m = norm(xl)[:, None], norm(al).max(), norm(mu)
    if name == "inner":
        return (xs + m) * (anchors + m)
    if name == "basis":
        ac = al - mu
        s = _pow2(np.abs(ac).max())
        sv = np.linalg.svd((ac / s).astype(np.float64), compute_uv=False)
        smallest = sv[sv > sv[0] * max(ac.shape) * np.finfo(np.float64).eps].min() * s
        return (xs + m) / smallest
    return xs + anchors + 2 * m


@st.composite
def cases(draw, names=tuple(BUILTINS)):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    fi = np.finfo(dtype)
    name = draw(st.sampled_from(names))
    center = draw(st.sampled_from([None, "anchors"]))
    lo, hi = int(np.log2(fi.smallest_subnormal)) + 6, fi.maxexp - 4
    ex = draw(st.integers(lo, hi))
    ea = ex if draw(st.booleans()) else draw(st.integers(lo, hi))
    d = draw(st.integers(2, 6))
    k = draw(st.integers(d + 2, 2 * d + 3)) if name == "basis" else draw(st.integers(2, 9))
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["numpy", "torch"]))
    rng = np.random.default_rng(seed)
    x = np.ldexp(rng.normal(size=(n, d)).clip(-7, 7), ex).astype(dtype)
    a = np.ldexp(rng.normal(size=(k, d)).clip(-7, 7), ea).astype(dtype)
    return dtype, name, center, x, a, kind


def _project(x, a, kind, **kw):
    if kind == "torch":
        return relative_projection(torch.from_numpy(x), torch.from_numpy(a), **kw).numpy()
    return relative_projection(x, a, **kw)


def _degenerate(name: str, x: np.ndarray, a: np.ndarray, center: str | None) -> bool:
    """Inputs whose values underflowed to zero vectors (no direction / no bandwidth)."""
    ref_x, ref_a = x.astype(LD), a.astype(LD)
    if center == "anchors":
        mu = ref_a.mean(0)
        ref_x, ref_a = ref_x - mu, ref_a - mu
    zero_rows = (ref_x == 0).all(1).any() or (ref_a == 0).all(1).any()
    if name in ("cosine", "angular") and zero_rows:
        return True
    if name == "rbf" and len(np.unique(a, axis=0)) < len(a) // 2 + 1:
        return True
    return bool(name == "basis" and (np.abs(a) == 0).all())


@settings(max_examples=400, deadline=None, derandomize=True)
@given(case=cases())
def test_every_builtin_is_right_or_a_named_error_across_the_range(case):
    _needs_longdouble()
    dtype, name, center, x, a, kind = case
    if _degenerate(name, x, a, center):
        return
    fi = np.finfo(dtype)
    ref, biggest = reference(name, x, a, center)
    representable = np.abs(ref).max() < LD(fi.max) / 16 and biggest < fi.max / 16
    if center == "anchors":
        # Anchors near the dtype's limits are centred in their own frame: samples must then
        # lie within the dtype's range of the anchors' magnitude.
        s = _pow2(np.abs(a).max())
        if not fi.tiny / fi.eps**2 <= s <= fi.max * fi.eps:
            representable &= bool(np.abs(x.astype(LD)).max() / s < LD(fi.max) / 16)
    try:
        got = _project(x, a, kind, similarity=name, center=center)
    except NumericalError:
        assert not representable, (
            f"{name} raised NumericalError although the true result (max "
            f"{float(np.abs(ref).max()):.3g}) fits in {dtype.__name__}")
        return
    assert got.dtype == dtype and got.shape == ref.shape
    assert np.isfinite(got).all()
    rtol = RTOL[dtype].get(name, DEFAULT_RTOL[dtype])
    row_scale = error_scale(name, x, a, center)
    atol = 8 * LD(fi.smallest_subnormal)  # results in the subnormal range are rounded there
    err = np.abs(got.astype(LD) - ref)
    assert (err <= rtol * row_scale + atol).all(), (
        f"{name} center={center} {dtype.__name__}: max relative error "
        f"{float((err / (row_scale + atol)).max()):.3g} > {rtol}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", BUILTINS)
def test_huge_and_tiny_rows_side_by_side(name, dtype):
    """Rows of very different magnitudes in one block: each row keeps its own precision."""
    _needs_longdouble()
    fi = np.finfo(dtype)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 4)).astype(dtype)
    scales = np.array([fi.max / 64, 1e3, 1.0, 1e-3, fi.tiny * 4, fi.smallest_subnormal * 64])
    x = (rng.normal(size=(6, 4)) * scales[:, None]).astype(dtype)
    ref, _ = reference(name, x, a, None)
    try:
        got = relative_projection(x, a, similarity=name)
    except NumericalError:
        assert np.abs(ref).max() > LD(fi.max) / 16, name
        keep = np.abs(ref).max(1) < LD(fi.max) / 16
        x, ref = x[keep], ref[keep]
        got = relative_projection(x, a, similarity=name)
    rtol = 10 * RTOL[dtype].get(name, DEFAULT_RTOL[dtype])
    atol = 8 * LD(fi.smallest_subnormal)
    row_scale = error_scale(name, x, a, None)
    assert (np.abs(got.astype(LD) - ref) <= rtol * row_scale + atol).all(), name


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_inner_overflow_is_named_and_cancellation_is_exact(kind):
    big = np.float32(1e30)
    x = np.array([[big, big], [1, 2]], dtype=np.float32)
    a = np.array([[big, big]], dtype=np.float32)
    with pytest.raises(NumericalError, match=r"inner similarities of x at rows 0 exceed the "
                                             r"range of torch.float32"):
        _project(x, a, kind, similarity="inner")
    # The products overflow but their sum is exactly 0: it must come out as 0, not NaN.
    a = np.array([[1e20, -1e20]], dtype=np.float32)
    x = np.array([[1e20, 1e20]], dtype=np.float32)
    assert _project(x, a, kind, similarity="inner")[0, 0] == 0.0


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["cosine", "angular"])
def test_huge_float32_norms_give_the_true_cosines(kind, name):
    # float32 norms overflow above ~1.8e19: this used to be an error, now it is exact.
    x = np.array([[1e20, 2e20, 0, 0], [1, 2, 3, 4]], dtype=np.float32)
    a = np.eye(4, dtype=np.float32)
    got = _project(x, a, kind, similarity=name)
    cos = np.array([1, 2, 0, 0]) / 5**0.5
    want = cos if name == "cosine" else 1 - np.arccos(cos) / np.pi
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_distance_beyond_the_dtype_is_named():
    fi = np.finfo(np.float32)
    x = np.array([[fi.max * 0.75, fi.max * 0.75]], dtype=np.float32)
    a = np.array([[-fi.max * 0.75, -fi.max * 0.75], [0, 0]], dtype=np.float32)
    for name in ("euclidean", "l1", "linf"):
        with pytest.raises(NumericalError, match=f"{name} similarities of x at rows 0"):
            relative_projection(x, a, similarity=name)
    # rbf is bounded: 0 for anchors that far away, never an error
    assert np.isfinite(relative_projection(x, np.vstack([a, [[1, 1]]]), similarity="rbf")).all()


def test_centring_overflow_is_named():
    fi = np.finfo(np.float32)
    # Anchors below 2**104 are centred in the data's units; their mean is beyond half an ulp of
    # the largest float32, so max - mean rounds to inf.
    m = -1.5 * 2.0**103
    a = np.array([[m, 2.0**99], [m, -(2.0**99)], [m + 2.0**100, 0]], np.float32)
    x = np.array([[1, 1], [fi.max, 1]], dtype=np.float32)
    with pytest.raises(NumericalError, match=r"x minus the centre overflows torch.float32 at "
                                             r"rows 1 \(values near"):
        relative_projection(x, a, center="anchors")
    # The same data in float64 are fine.
    assert np.isfinite(relative_projection(x.astype(np.float64), a.astype(np.float64),
                                           center="anchors")).all()
    # Subnormal anchors are centred in their own frame; samples 2**130 times larger cannot be.
    a = np.array([[1e-40, 0], [0, 1e-40], [1e-40, 1e-40]], dtype=np.float32)
    with pytest.raises(NumericalError, match="rows 1 .*anchors are near the dtype's limits"):
        relative_projection(np.array([[1e-40, 0], [1.0, 1.0]], np.float32), a, center="anchors")
    got = relative_projection(np.array([[3e-40, 0]], np.float32), a, center="anchors")
    np.testing.assert_allclose(got, relative_projection(np.array([[3.0, 0]]),
                                                        a.astype(np.float64) * 1e40,
                                                        center="anchors"), rtol=1e-2)


def test_every_registered_builtin_has_a_reference():
    assert sorted(REFERENCE) == sorted(BUILTINS) == sorted(
        n for n in S.available() if S.get(n).self_checking)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(exp=st.integers(-140, 120), chunk=st.sampled_from([None, 1, 2]),
       kind=st.sampled_from(["numpy", "torch"]))
def test_user_similarity_is_checked_across_the_range(exp, chunk, kind):
    """A user similarity gets no rescaling, but its output is never returned non-finite."""
    registry = S
    saved = dict(registry._REGISTRY)
    try:
        registry.register("neg_sq", lambda x, a: -torch.cdist(x, a).square(),
                          invariances={"orthogonal"})
        rng = np.random.default_rng(exp + 200)
        x = np.ldexp(rng.normal(size=(4, 3)), exp).astype(np.float32)
        a = np.ldexp(rng.normal(size=(5, 3)), exp).astype(np.float32)
        truth = -(_dist(x.astype(LD), a.astype(LD), 2) ** 2)
        try:
            got = _project(x, a, kind, similarity="neg_sq", chunk_size=chunk)
        except NumericalError as e:
            assert "similarity 'neg_sq' returned NaN or inf for finite inputs" in str(e)
            assert np.abs(truth).max() > np.finfo(np.float32).max / 4
            return
        assert np.isfinite(got).all() and got.shape == (4, 5)
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)
