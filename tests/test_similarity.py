"""The similarity registry: every declared invariance holds, every undeclared one fails.

For each registered similarity and each invariance class, samples and anchors are drawn at random
(hypothesis picks the seed and sizes), transformed together, and projected again. A declared
invariance must leave the relative representation unchanged within float tolerance (float32 and
float64); an undeclared one must change it by a clear margin. Centring on the anchor mean adds
translation invariance to every similarity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import relative_projection
from relreps import similarity as S
from relreps.errors import RelrepsError

# Translated spaces are anisotropic: the collapse warning is expected there.
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::relreps.centering.AnisotropyWarning")]

SIMILARITIES = S.available()
DTYPES = [np.float32, np.float64]
CENTERS = [None, "anchors"]
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)

# Relative tolerance of "unchanged" (scaled by the largest output), and the margin of "changed".
TOL = {np.float32: 2e-3, np.float64: 1e-8}
FAIL_MARGIN = 0.05


def test_registry_lists_the_paper_similarities():
    assert set(SIMILARITIES) >= {"cosine", "angular", "inner", "euclidean", "l1", "linf", "rbf",
                                 "basis"}
    for name in SIMILARITIES:
        inv = S.get(name).invariances
        assert inv <= set(S.INVARIANCES), name


# --------------------------------------------------------------------------- transforms

def random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def make_transform(kind: str, rng: np.random.Generator, d: int, scale: float
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """A generic random member of the invariance class `kind` (never the identity)."""
    if kind == "orthogonal":
        q = random_orthogonal(rng, d)
        return lambda a: a @ q
    if kind == "isotropic_scaling":
        s = rng.uniform(0.25, 0.6) if rng.random() < 0.5 else rng.uniform(1.7, 4.0)
        return lambda a: a * s
    if kind == "translation":
        t = rng.normal(size=d) * 2 * scale + scale
        return lambda a: a + t
    if kind == "permutation":
        p = rng.permutation(d)
        while (p == np.arange(d)).all():
            p = rng.permutation(d)
        return lambda a: a[:, p]
    if kind == "linear":
        sv = rng.permutation(np.geomspace(0.3, 3.0, d))  # far from orthogonal or isotropic
        m = random_orthogonal(rng, d) @ np.diag(sv) @ random_orthogonal(rng, d)
        return lambda a: a @ m
    raise AssertionError(kind)


def draw(seed: int, d: int, n: int, extra: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    # More anchors than dimensions, so "linear" can hold for the change of basis.
    anchors = rng.normal(size=(2 * d + extra, d))
    return rng, x, anchors


def change(name: str, kind: str, dtype, center, seed: int, d: int, n: int, extra: int
           ) -> tuple[float, float]:
    """(largest absolute change of the projection under a random `kind` map, output scale)."""
    rng, x, anchors = draw(seed, d, n, extra)
    f = make_transform(kind, rng, d, scale=float(np.abs(x).mean()))
    x, anchors = x.astype(dtype), anchors.astype(dtype)
    before = relative_projection(x, anchors, similarity=name, center=center)
    after = relative_projection(f(x.astype(np.float64)).astype(dtype),
                                f(anchors.astype(np.float64)).astype(dtype),
                                similarity=name, center=center)
    assert before.dtype == dtype and after.dtype == dtype
    assert np.isfinite(before).all() and np.isfinite(after).all()
    scale = float(np.abs(before.astype(np.float64)).max())
    return float(np.abs(before.astype(np.float64) - after).max()), scale


sizes = dict(seed=st.integers(0, 2**32 - 1), d=st.integers(4, 8), n=st.integers(3, 12),
             extra=st.integers(0, 3))


CASES = [(name, kind, center) for name in SIMILARITIES for kind in S.INVARIANCES
         for center in CENTERS]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "kind", "center"), CASES,
                         ids=[f"{n}-{k}-{'centred' if c else 'plain'}" for n, k, c in CASES])
@SETTINGS
@given(**sizes)
def test_declared_invariances_hold_and_undeclared_fail(name, kind, center, dtype, seed, d, n,
                                                       extra):
    delta, scale = change(name, kind, dtype, center, seed, d, n, extra)
    if kind in S.invariances(name, center):
        assert delta <= TOL[dtype] * max(scale, 1.0), (
            f"{name} (center={center}) declares {kind} invariance but changed by {delta:.3g}")
    else:
        assert delta > FAIL_MARGIN * scale, (
            f"{name} (center={center}) does not declare {kind} but changed only by {delta:.3g}")


def test_centring_adds_translation_and_keeps_the_rest():
    for name in SIMILARITIES:
        plain = S.invariances(name)
        centred = S.invariances(name, "anchors")
        assert plain == S.get(name).invariances
        assert centred == plain | {"translation"}


def test_basis_is_not_linear_invariant_with_fewer_anchors_than_dimensions():
    # The documented condition of the change of basis: the anchors must span the space.
    rng = np.random.default_rng(0)
    d = 8
    x, anchors = rng.normal(size=(10, d)), rng.normal(size=(d - 3, d))
    m = make_transform("linear", rng, d, 1.0)
    before = relative_projection(x, anchors, similarity="basis")
    after = relative_projection(m(x), m(anchors), similarity="basis")
    assert np.abs(before - after).max() > FAIL_MARGIN * np.abs(before).max()
    # ... while orthogonal maps are still fine.
    q = random_orthogonal(rng, d)
    np.testing.assert_allclose(relative_projection(x @ q, anchors @ q, similarity="basis"),
                               before, atol=1e-10)


# --------------------------------------------------------------------------- reference values

def _dist(x: np.ndarray, a: np.ndarray, p: float) -> np.ndarray:
    diff = np.abs(x[:, None, :] - a[None, :, :])
    if p == np.inf:
        return diff.max(-1)
    return (diff**p).sum(-1) ** (1 / p)


def _cos(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ \
        (a / np.linalg.norm(a, axis=1, keepdims=True)).T


def _rbf(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    # sigma: the median distance between anchors (lower middle value for an even count).
    pair = np.sort(_dist(a, a, 2)[np.triu_indices(len(a), 1)])
    sigma = pair[(len(pair) - 1) // 2]
    return np.exp(-_dist(x, a, 2) ** 2 / (2 * sigma**2))


def _basis(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    # Minimum-norm least-squares coordinates c with c @ a ~= x.
    return np.linalg.lstsq(a.T, x.T, rcond=None)[0].T


REFERENCE = {
    "cosine": _cos,
    "angular": lambda x, a: 1 - np.arccos(np.clip(_cos(x, a), -1, 1)) / np.pi,
    "inner": lambda x, a: x @ a.T,
    "euclidean": lambda x, a: -_dist(x, a, 2),
    "l1": lambda x, a: -_dist(x, a, 1),
    "linf": lambda x, a: -_dist(x, a, np.inf),
    "rbf": _rbf,
    "basis": _basis,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("k", [3, 4, 11])  # fewer and more anchors than dimensions
def test_builtin_matches_reference_formula(name, k):
    rng = np.random.default_rng(k)
    x, anchors = rng.normal(size=(9, 6)), rng.normal(size=(k, 6))
    got = relative_projection(x, anchors, similarity=name)
    assert got.shape == (9, k)
    np.testing.assert_allclose(got, REFERENCE[name](x, anchors), rtol=1e-7, atol=1e-7)


# --------------------------------------------------------------------------- registry

@pytest.fixture()
def registry(monkeypatch):
    """A private copy of the registry, so custom similarities do not leak into other tests."""
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    return S


def test_register_custom_similarity(registry):
    calls = []

    @registry.register("neg_sq_euclidean", invariances={"orthogonal", "translation"},
                       description="negative squared distance")
    def _neg_sq(x, anchors):
        calls.append(x.shape)
        return -torch.cdist(x, anchors).square()

    assert "neg_sq_euclidean" in registry.available()
    assert registry.invariances("neg_sq_euclidean") == {"orthogonal", "translation"}
    assert registry.invariances("neg_sq_euclidean", "anchors") == {"orthogonal", "translation"}
    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    got = relative_projection(x, a, similarity="neg_sq_euclidean")
    np.testing.assert_allclose(got, -_dist(x, a, 2) ** 2, rtol=1e-10)
    assert calls == [(5, 3)]
    # The Similarity object itself is accepted too.
    obj = registry.get("neg_sq_euclidean")
    np.testing.assert_allclose(relative_projection(x, a, similarity=obj), got)
    with pytest.raises(RelrepsError, match="already registered"):
        registry.register("neg_sq_euclidean", _neg_sq, invariances=())
    registry.register("neg_sq_euclidean", lambda x, a: x @ a.T, invariances=(), overwrite=True)
    np.testing.assert_allclose(relative_projection(x, a, similarity="neg_sq_euclidean"), x @ a.T)


def test_register_custom_similarity_with_prepare(registry):
    prepared = []

    def prep(anchors):
        prepared.append(len(anchors))
        return anchors.T.clone()

    registry.register("inner_t", lambda x, at: x @ at, prepare=prep, invariances={"orthogonal"})
    x = np.random.default_rng(1).normal(size=(10, 3))
    got = relative_projection(x, x[:4], similarity="inner_t", chunk_size=3)
    np.testing.assert_allclose(got, x @ x[:4].T)
    assert prepared == [4]  # the anchor-side state is computed once, not once per chunk


@pytest.mark.parametrize("bad", [{"rotation"}, {"orthogonal", "affine"}, ["Orthogonal"]])
def test_register_rejects_unknown_invariance_names(registry, bad):
    with pytest.raises(RelrepsError, match="unknown invariance"):
        registry.register("bad_sim", lambda x, a: x @ a.T, invariances=bad)
    assert "bad_sim" not in registry.available()


def test_invariance_checker_detects_a_false_declaration(registry):
    # No built-in lacks permutation invariance, so check the checker on a similarity that
    # wrongly declares it: a per-dimension weighted inner product.
    def weighted(x, anchors):
        w = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)
        return (x * w) @ anchors.T

    registry.register("weighted_inner", weighted, invariances={"permutation"})
    delta, scale = change("weighted_inner", "permutation", np.float64, None, 3, 6, 8, 0)
    assert delta > FAIL_MARGIN * scale


@pytest.mark.parametrize("bad", ["cosin", "", None, 3])
def test_unknown_similarity_is_a_named_error(bad):
    with pytest.raises(RelrepsError, match="unknown similarity"):
        S.get(bad)
    with pytest.raises(RelrepsError, match="unknown similarity"):
        relative_projection(np.ones((2, 2)), np.ones((2, 2)), similarity=bad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e-3])
def test_euclidean_is_accurate_for_samples_that_equal_or_nearly_equal_anchors(dtype, scale):
    # > 25 rows: torch.cdist's |x|^2 + |a|^2 - 2 x.a path, whose cancellation gave 6e-8 (float64)
    # instead of 0 for a sample equal to an anchor
    rng = np.random.default_rng(3)
    x = (scale * (5.0 + rng.normal(size=(60, 16)))).astype(dtype)
    a = x[:8].copy()
    x[8:16] = a + (scale * 1e-4 * rng.normal(size=a.shape)).astype(dtype)  # near-duplicates
    ref = -np.sqrt(((x.astype(np.float64)[:, None] - a.astype(np.float64)[None]) ** 2).sum(-1))
    got = relative_projection(x, a, similarity="euclidean")
    eps = np.finfo(dtype).eps
    assert np.all(got[np.arange(8), np.arange(8)] == 0)
    np.testing.assert_allclose(got, ref, rtol=8 * eps, atol=8 * eps * np.abs(ref).max() * 1e-3)


# --------------------------------------------------------------------------- whitened cosine

def _whitened_cosine(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    from sklearn.covariance import ledoit_wolf

    m = a.mean(0)
    cov, _ = ledoit_wolf(a - m)
    vals, vecs = np.linalg.eigh(cov)
    w = (vecs / np.sqrt(vals)) @ vecs.T
    return _cos((x - m) @ w, (a - m) @ w)


@pytest.mark.parametrize("k", [5, 12, 40])  # fewer and more anchors than dimensions
def test_whitened_cosine_matches_ledoit_wolf_reference(k):
    rng = np.random.default_rng(k)
    mix = rng.normal(size=(8, 8)) * np.geomspace(0.05, 5.0, 8)  # strongly anisotropic space
    x, anchors = rng.normal(size=(9, 8)) @ mix + 3.0, rng.normal(size=(k, 8)) @ mix + 3.0
    np.testing.assert_allclose(relative_projection(x, anchors, similarity="whitened_cosine"),
                               _whitened_cosine(x, anchors), rtol=1e-8, atol=1e-8)


def test_whitened_cosine_agrees_across_a_linear_map_when_cosine_does_not():
    # Two "encoders" that differ by an invertible, far-from-orthogonal linear map (plus noise),
    # with many more anchors than dimensions: whitening each space with its own anchors gives
    # nearly the same relative representation; plain (centred) cosine does not.
    rng = np.random.default_rng(0)
    d = 12
    a = rng.normal(size=(600, d))
    x = rng.normal(size=(50, d))
    m = make_transform("linear", rng, d, 1.0)
    noise = lambda t: t + 0.01 * rng.normal(size=t.shape)  # noqa: E731
    err = {}
    for name in ("whitened_cosine", "cosine"):
        r1 = relative_projection(x, a, similarity=name, center="anchors")
        r2 = relative_projection(noise(m(x)), noise(m(a)), similarity=name, center="anchors")
        err[name] = float(np.abs(r1 - r2).mean())
    # Not exact: the Ledoit-Wolf shrinkage differs between the two spaces (measured 0.03 vs 0.26).
    assert err["whitened_cosine"] < 0.06 and err["cosine"] > 0.2, err


def test_whitened_cosine_needs_varying_anchors():
    with pytest.raises(RelrepsError, match="no variance"):
        relative_projection(np.ones((3, 4)), np.ones((5, 4)), similarity="whitened_cosine")
