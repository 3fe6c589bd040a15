"""Anchor samplers, parallel anchors, AnchorSet and diagnose."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import anchors as A
from relreps.centering import AnisotropyWarning
from relreps.errors import AnchorError, InputTypeError, OptionError, RelrepsError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


def _blobs(seed: int = 0, per: int = 20, centers: int = 4, d: int = 3, spread: float = 0.05):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centers, d)) * 10
    y = np.repeat(np.arange(centers), per)
    return mu[y] + rng.normal(size=(len(y), d)) * spread, y


# --------------------------------------------------------------------------- samplers

@pytest.mark.parametrize("method", ["uniform", "stratified", "kmeans", "farthest_point"])
@SETTINGS
@given(n_samples=st.integers(5, 60), frac=st.floats(0.05, 1.0), seed=st.integers(0, 10**6))
def test_samplers_return_distinct_valid_indices_deterministically(method, n_samples, frac, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, 3))
    y = rng.integers(0, 3, size=n_samples)
    n_classes = len(np.unique(y))
    n = max(int(frac * n_samples), n_classes if method == "stratified" else 1)
    idx = A.sample_anchors(x, n, method, y=y, random_state=seed)
    assert idx.shape == (n,) and np.issubdtype(idx.dtype, np.integer)
    assert len(np.unique(idx)) == n
    assert idx.min() >= 0 and idx.max() < n_samples
    np.testing.assert_array_equal(A.sample_anchors(x, n, method, y=y, random_state=seed), idx)
    # A numpy Generator is accepted as random_state too.
    np.testing.assert_array_equal(
        A.sample_anchors(x, n, method, y=y, random_state=np.random.default_rng(seed)), idx)


def test_uniform_depends_on_the_seed_and_covers_rows():
    x = np.zeros((100, 2))
    draws = [set(A.sample_anchors(x, 10, random_state=s).tolist()) for s in range(30)]
    assert len({frozenset(d) for d in draws}) > 25
    counts = np.bincount(np.concatenate([list(d) for d in draws]), minlength=100)
    assert (counts > 0).sum() > 80  # every row can be picked


@SETTINGS
@given(sizes=st.lists(st.integers(1, 15), min_size=2, max_size=5), n=st.integers(1, 40),
       seed=st.integers(0, 10**6))
def test_stratified_is_a_class_balanced_round_robin(sizes, n, seed):
    y = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # arbitrary label values
    x = np.zeros((len(y), 2))
    n = min(max(n, len(sizes)), len(y))
    idx = A.sample_anchors(x, n, "stratified", y=y, random_state=seed)
    got = {c: int((y[idx] == c).sum()) for c in np.unique(y)}
    size = {c: int((y == c).sum()) for c in got}
    # Round robin: a class gets two or more anchors fewer than another only when it has no
    # samples left.
    for c1 in got:
        for c2 in got:
            if got[c1] > got[c2] + 1:
                assert got[c2] == size[c2], (got, size)
    # Every prefix of the round robin is balanced too: the first len(classes) picks hit every
    # class once.
    k = len(sizes)
    assert sorted(y[idx[:k]].tolist()) == sorted(np.unique(y).tolist())


def test_stratified_errors():
    x, y = _blobs(per=5, centers=4)
    with pytest.raises(AnchorError, match="needs the labels y"):
        A.sample_anchors(x, 8, "stratified")
    with pytest.raises(AnchorError, match="asked for 3 anchors but there are 4 classes"):
        A.sample_anchors(x, 3, "stratified", y=y)
    with pytest.raises(RelrepsError, match="y has 19 labels for 20 samples"):
        A.sample_anchors(x, 8, "stratified", y=y[:-1])
    # torch labels are accepted
    idx = A.sample_anchors(x, 8, "stratified", y=torch.tensor(y), random_state=0)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2, 2]


def test_kmeans_returns_the_real_samples_nearest_the_centroids():
    x, y = _blobs(seed=1, per=25, centers=5, spread=0.5)
    idx = A.sample_anchors(x, 5, "kmeans", random_state=0)
    # Well-separated blobs: the centroids are the blob means; one anchor per blob, and it is the
    # blob's sample nearest to that mean.
    assert sorted(y[idx].tolist()) == [0, 1, 2, 3, 4]
    for i in idx:
        members = np.flatnonzero(y == y[i])
        mean = x[members].mean(0)
        nearest = members[np.argmin(((x[members] - mean) ** 2).sum(1))]
        assert i == nearest
        np.testing.assert_array_equal(x[i], x[nearest])  # a real sample, not the centroid


def test_kmeans_with_as_many_anchors_as_samples_uses_every_sample():
    x, _ = _blobs(per=3, centers=2)
    idx = A.sample_anchors(x, len(x), "kmeans", random_state=0)
    assert sorted(idx.tolist()) == list(range(len(x)))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 12))
def test_farthest_point_is_greedy(metric, seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)) + (1.0 if metric == "cosine" else 0.0)
    idx = A.sample_anchors(x, n, "farthest_point", random_state=seed, metric=metric)
    z = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    for t in range(1, n):
        mind = dist[:, idx[:t]].min(1)
        # The t-th pick maximises the distance to the nearest earlier pick (up to ties).
        assert mind[idx[t]] == pytest.approx(mind.max(), rel=1e-9, abs=1e-12)
        assert mind[idx[t]] > 0


def test_farthest_point_bad_metric():
    with pytest.raises(RelrepsError, match="metric must be"):
        A.sample_anchors(np.ones((5, 2)), 2, "farthest_point", metric="l1")


def test_farthest_point_picks_the_extremes_first():
    x = np.array([[0.0, 0], [1, 0], [10, 0], [-10, 0], [0.5, 0]])
    idx = A.sample_anchors(x, 3, "farthest_point", random_state=0)
    assert set(idx[1:3].tolist()) | {int(idx[0])} >= {2, 3}


@pytest.mark.parametrize("method", ["uniform", "stratified", "kmeans", "farthest_point"])
def test_sampler_count_errors(method):
    x, y = _blobs(per=3, centers=2)
    with pytest.raises(AnchorError, match="asked for 7 anchors but only 6 samples"):
        A.sample_anchors(x, 7, method, y=y)
    for bad in (0, -1):
        with pytest.raises(AnchorError, match="positive integer"):
            A.sample_anchors(x, bad, method, y=y)
    for bad in (2.5, 2.0, True, "3", None):  # neither fractions nor booleans are counts
        with pytest.raises(InputTypeError, match="n must be an integer"):
            A.sample_anchors(x, bad, method, y=y)


def test_unknown_sampler_and_bad_input():
    with pytest.raises(RelrepsError,
                       match="unknown anchor sampler 'random': method must be one of 'uniform'"):
        A.sample_anchors(np.ones((4, 2)), 2, "random")
    with pytest.raises(OptionError, match="'uniform' has no option.*metric"):
        A.sample_anchors(np.ones((4, 2)), 2, "uniform", metric="cosine")
    with pytest.raises(RelrepsError, match="NaN or inf"):
        A.sample_anchors(np.full((4, 2), np.nan), 2)


# --------------------------------------------------------------------------- parallel anchors

@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(1, 30))
def test_parallel_anchors_correspond(seed, n):
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(60)]
    keys_a = list(rng.permutation(vocab[:45]))
    keys_b = list(rng.permutation(vocab[15:]))  # 30 shared words, different row orders
    ia, ib = A.parallel_anchors(keys_a, keys_b, n, random_state=seed)
    assert len(ia) == len(ib) == n
    assert [keys_a[i] for i in ia] == [keys_b[i] for i in ib]
    assert len(set(ia.tolist())) == n
    assert all(int(keys_a[i][1:]) in range(15, 45) for i in ia)
    ia2, ib2 = A.parallel_anchors(keys_a, keys_b, n, random_state=seed)
    np.testing.assert_array_equal(ia, ia2)
    np.testing.assert_array_equal(ib, ib2)


def test_parallel_anchors_candidates_and_errors():
    keys_a, keys_b = ["a", "b", "c", "d"], ["d", "c", "x", "a"]
    ia, ib = A.parallel_anchors(keys_a, keys_b, 2, candidates=["c", "d", "zz"], random_state=0)
    assert sorted(keys_a[i] for i in ia) == ["c", "d"]
    assert [keys_a[i] for i in ia] == [keys_b[i] for i in ib]
    # A repeated candidate is one key: never the same anchor twice.
    for seed in range(10):
        ia, ib = A.parallel_anchors(keys_a, keys_b, 2, candidates=["a", "a", "a", "d"],
                                    random_state=seed)
        assert sorted(ia.tolist()) == [0, 3] and sorted(ib.tolist()) == [0, 3]
    with pytest.raises(AnchorError, match="only 2 keys are shared"):
        A.parallel_anchors(keys_a, keys_b, 3, candidates=["a", "a", "d", "d"])
    aset = A.AnchorSet.from_keys({"x": keys_a, "y": keys_b}, 2, candidates=["c", "c", "d"])
    assert sorted(aset.keys) == ["c", "d"]
    with pytest.raises(AnchorError, match="only 3 keys are shared"):
        A.parallel_anchors(keys_a, keys_b, 4)
    with pytest.raises(AnchorError, match="duplicate key 'a'"):
        A.parallel_anchors(["a", "b", "a"], keys_b, 1)
    with pytest.raises(AnchorError, match="positive integer"):
        A.parallel_anchors(keys_a, keys_b, 0)


def test_anchor_set_from_keys_correspond_across_many_spaces(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    keys = {"en": list(rng.permutation(words)), "fr": list(rng.permutation(words[5:])),
            "de": list(rng.permutation(words[:45]))}
    aset = A.AnchorSet.from_keys(keys, 12, random_state=1)
    assert len(aset) == 12 and aset.spaces == ["en", "fr", "de"]
    for s in aset.spaces:
        assert [keys[s][i] for i in aset.indices[s]] == aset.keys
    # Embeddings: row i of each space's anchors is the same key.
    data = {s: np.array([[int(k[1:])] for k in keys[s]], dtype=float) for s in keys}
    emb = {s: aset.embeddings(s, data[s]) for s in keys}
    np.testing.assert_array_equal(emb["en"], emb["fr"])
    np.testing.assert_array_equal(emb["en"], emb["de"])
    # Plain-file round trip.
    path = tmp_path / "anchors.json"
    aset.meta["source"] = "test"
    aset.save(path)
    back = A.AnchorSet.load(path)
    assert back.keys == aset.keys and back.meta == {"source": "test"}
    assert back.spaces == aset.spaces
    for s in aset.spaces:
        np.testing.assert_array_equal(back.indices[s], aset.indices[s])
    with pytest.raises(AnchorError, match="only 40 keys are shared by all spaces"):
        A.AnchorSet.from_keys(keys, 41)


def test_anchor_set_from_indices_and_validation():
    aset = A.AnchorSet.from_indices([3, 1, 4], spaces=("a", "b"), keys=list("abcdefg"))
    assert aset.keys == ["d", "b", "e"] and len(aset) == 3
    x = np.arange(10.0)[:, None]
    np.testing.assert_array_equal(aset.embeddings("b", x).ravel(), [3, 1, 4])
    with pytest.raises(AnchorError, match="no anchors for space 'c'"):
        aset.embeddings("c", x)
    with pytest.raises(AnchorError, match="out of range"):
        aset.embeddings("a", x[:4])
    with pytest.raises(AnchorError, match="do not correspond across spaces"):
        A.AnchorSet({"a": [0, 1, 2], "b": [0, 1]})
    with pytest.raises(AnchorError, match="same sample twice"):
        A.AnchorSet({"a": [0, 1, 1]})
    with pytest.raises(AnchorError, match="2 keys for 3 anchors"):
        A.AnchorSet({"a": [0, 1, 2]}, keys=["x", "y"])
    with pytest.raises(AnchorError, match="at least one space"):
        A.AnchorSet({})


# --------------------------------------------------------------------------- diagnose

def _with_singular_values(rng, k: int, d: int, s: np.ndarray) -> np.ndarray:
    u, _ = np.linalg.qr(rng.normal(size=(k, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(d, len(s))))
    return u @ np.diag(s) @ v.T


@pytest.mark.parametrize(("k", "d", "r"), [(20, 5, 5), (20, 8, 3), (6, 10, 6), (6, 10, 2)])
def test_diagnose_rank_condition_and_effective_dim(k, d, r):
    rng = np.random.default_rng(k * d + r)
    s = np.geomspace(10.0, 1.0, r)
    diag = A.diagnose(_with_singular_values(rng, k, d, s))
    assert (diag.n_anchors, diag.dim, diag.rank) == (k, d, r)
    np.testing.assert_allclose(diag.singular_values[:r], s, rtol=1e-10)
    assert diag.effective_dim == pytest.approx((s**2).sum() ** 2 / (s**4).sum(), rel=1e-10)
    if r == min(k, d):
        assert diag.condition_number == pytest.approx(10.0, rel=1e-8)
    else:
        assert diag.condition_number == np.inf
        assert any("rank deficient" in w for w in diag.warnings)
    # The cost of not spanning the space (share of a sample's direction outside the anchors'
    # span) is reported whenever r < d. Estimated by leave-one-out over the anchors, it is 0 when
    # the anchors are linearly dependent (each lies in the span of the others, so do samples
    # drawn like them) and positive when each anchor adds a direction.
    assert (diag.outside_span_fraction > 0) == (r == k < d)
    assert any("invisible to the relative representation" in m
               for m in diag.warnings + diag.notes) == (r < d)
    assert str(diag).startswith(f"{k} anchors in {d}-d: rank {r}")


def test_diagnose_effective_dim_of_isotropic_anchors_is_the_dimension():
    diag = A.diagnose(np.vstack([np.eye(6) * 3, -np.eye(6) * 3]))
    assert diag.rank == 6 and diag.effective_dim == pytest.approx(6.0)
    assert diag.condition_number == pytest.approx(1.0)
    assert diag.warnings == [] and diag.n_near_duplicates == 0


def test_diagnose_warns_on_collinear_and_duplicate_anchors():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    collinear = np.outer(rng.uniform(1, 2, size=12), direction)  # 12 anchors on one line
    diag = A.diagnose(collinear)
    assert diag.rank == 1
    assert diag.n_near_duplicates == 12 * 11 // 2
    assert any("rank deficient" in w and "collinear" in w for w in diag.warnings)
    assert any("near duplicates" in w for w in diag.warnings)
    # Nearly collinear: full rank numerically but terribly conditioned.
    nearly = collinear + 1e-9 * rng.normal(size=collinear.shape)
    diag = A.diagnose(nearly)
    assert diag.condition_number > 1e6
    assert diag.warnings and diag.effective_dim < 1.01
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diag = A.diagnose(collinear, warn=True)
    emitted = [(w.category, str(w.message)) for w in caught]
    assert [m for _, m in emitted] == diag.warnings  # every warning, once, in order
    kinds = {c for c, m in emitted if "use center='anchors'" in m}
    assert kinds == {AnisotropyWarning}
    assert all(c is A.AnchorWarning for c, m in emitted if "use center" not in m)


def test_diagnose_counts_near_duplicates():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(10, 16))
    dup = np.vstack([base, base[[2, 5, 7]] * 1.5 + 1e-6 * rng.normal(size=(3, 16))])
    diag = A.diagnose(dup)
    assert diag.n_near_duplicates == 3
    assert any("3 pair(s) of anchors are near duplicates" in w for w in diag.warnings)
    assert A.diagnose(base).n_near_duplicates == 0
    # A looser threshold counts more pairs; the count is monotone in it.
    assert A.diagnose(base, duplicate_cosine=-1.0).n_near_duplicates == 45


def test_diagnose_center_and_errors():
    rng = np.random.default_rng(2)
    shifted = rng.normal(size=(30, 4)) * 0.01 + 100.0  # one dominant direction: the offset
    assert A.diagnose(shifted).effective_dim < 1.01
    assert A.diagnose(shifted, center=True).effective_dim > 2.5
    with pytest.raises(AnchorError, match="no anchors"):
        A.diagnose(np.zeros((0, 4)))
    with pytest.raises(RelrepsError, match="NaN or inf"):
        A.diagnose(np.array([[np.nan, 1.0]]))
    # torch input works
    assert A.diagnose(torch.eye(3)).rank == 3
