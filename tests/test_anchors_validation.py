"""Every argument of the anchor samplers is validated: named errors, never a silent
reinterpretation, a raw exception or a hang (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import anchors as A
from relreps.errors import (
    AnchorError,
    InputTypeError,
    NonFiniteError,
    OptionError,
    RelrepsError,
    ShapeError,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
METHODS = ["uniform", "stratified", "kmeans", "farthest_point"]


def _data(n: int = 12, d: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % 3


# --------------------------------------------------------------------------- counts

@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(bad=st.one_of(st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=3), st.none(), st.lists(st.integers(1, 3), max_size=2),
                     st.just(np.float64(3.0)), st.just(np.bool_(True))))
def test_non_integer_counts_are_refused(method, bad):
    x, y = _data()
    with pytest.raises(InputTypeError, match="n must be an integer"):
        A.sample_anchors(x, bad, method, y=y)


@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(n=st.one_of(st.integers(-10**6, 0), st.integers(13, 10**6)))
def test_out_of_range_counts_are_anchor_errors(method, n):
    x, y = _data()
    with pytest.raises(AnchorError, match="positive integer|only 12 samples"):
        A.sample_anchors(x, n, method, y=y)


def test_numpy_integer_counts_are_counts():
    x, y = _data()
    for n in (np.int64(4), np.int32(4), np.uint8(4)):
        assert len(A.sample_anchors(x, n, "stratified", y=y, random_state=0)) == 4


# --------------------------------------------------------------------------- seeds

@pytest.mark.parametrize("method", METHODS)
@SETTINGS
@given(seed=st.integers(-10**9, -1))
def test_negative_seeds_are_refused(method, seed):
    x, y = _data()
    with pytest.raises(RelrepsError, match=r"random_state must be >= 0"):
        A.sample_anchors(x, 3, method, y=y, random_state=seed)


@pytest.mark.parametrize("bad", [1.5, "0", True, [0], object()])
def test_non_integer_seeds_are_refused(bad):
    x, _ = _data()
    with pytest.raises(InputTypeError, match="random_state must be an integer"):
        A.sample_anchors(x, 3, random_state=bad)


def test_legacy_random_state_is_accepted_and_deterministic():
    x, _ = _data()
    a = A.sample_anchors(x, 4, random_state=np.random.RandomState(3))
    b = A.sample_anchors(x, 4, random_state=np.random.RandomState(3))
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- labels

def test_nan_labels_raise_instead_of_hanging():
    x, _ = _data()
    y = np.array([0.0, 1.0, np.nan] * 4)
    with pytest.raises(NonFiniteError, match="y holds NaN or inf labels .*position 2"):
        A.sample_anchors(x, 10, "stratified", y=y)
    y_obj = np.array([0, 1, None] * 4, dtype=object)
    with pytest.raises(NonFiniteError, match="missing labels"):
        A.sample_anchors(x, 10, "stratified", y=y_obj)


@SETTINGS
@given(n_labels=st.integers(0, 30).filter(lambda v: v != 12))
def test_labels_of_the_wrong_length(n_labels):
    x, _ = _data()
    with pytest.raises(ShapeError, match=f"y has {n_labels} labels for 12 samples"):
        A.sample_anchors(x, 3, "stratified", y=np.arange(n_labels) % 2)


def test_bad_label_containers():
    x, _ = _data()
    with pytest.raises(ShapeError, match="1-D"):
        A.sample_anchors(x, 3, "stratified", y=np.zeros((12, 2)))
    with pytest.raises(InputTypeError, match="mixes label types"):
        A.sample_anchors(x, 3, "stratified", y=np.array([1, "a"] * 6, dtype=object))
    with pytest.raises(AnchorError, match="needs the labels y"):
        A.sample_anchors(x, 3, "stratified")
    # A column vector of labels, string labels and torch labels are all labels.
    col = (np.arange(12) % 3)[:, None]
    names = np.array(["cat", "dog", "eel"])[np.arange(12) % 3]
    for y in (col, names, torch.tensor(np.arange(12) % 3)):
        idx = A.sample_anchors(x, 6, "stratified", y=y, random_state=0)
        assert np.bincount(np.arange(12)[idx] % 3).tolist() == [2, 2, 2]


# --------------------------------------------------------------------------- names, options

@SETTINGS
@given(name=st.text(max_size=12).filter(lambda s: s not in A.SAMPLERS))
def test_unknown_sampler_names(name):
    with pytest.raises(RelrepsError, match="method must be one of"):
        A.sample_anchors(np.ones((4, 2)), 2, name)


@pytest.mark.parametrize("bad", [None, 3, ["uniform"], b"uniform"])
def test_sampler_name_of_the_wrong_type(bad):
    with pytest.raises(RelrepsError, match="method must be one of"):
        A.sample_anchors(np.ones((4, 2)), 2, bad)


@SETTINGS
@given(metric=st.one_of(st.text(max_size=10), st.none(), st.integers()).filter(
    lambda m: m not in ("euclidean", "cosine")))
def test_unknown_metric_names(metric):
    with pytest.raises(RelrepsError, match="metric must be one of 'euclidean', 'cosine'"):
        A.sample_anchors(np.eye(4), 2, "farthest_point", metric=metric)


def test_unknown_and_misplaced_options_are_refused():
    x, y = _data()
    with pytest.raises(OptionError, match="'farthest_point' has no option.*n_init.*metric"):
        A.sample_anchors(x, 3, "farthest_point", n_init=3)
    with pytest.raises(OptionError, match="'stratified' has no option.*metric"):
        A.sample_anchors(x, 3, "stratified", y=y, metric="cosine")
    for opt, bad, err in [("algorithm", "elkan", RelrepsError), ("batch_size", 0, RelrepsError),
                          ("batch_size", 2.5, InputTypeError), ("n_epochs", 0, RelrepsError),
                          ("block_rows", -1, RelrepsError), ("block_rows", True, InputTypeError)]:
        with pytest.raises(err, match=opt):
            A.sample_anchors(x, 3, "kmeans", **{opt: bad})


# --------------------------------------------------------------------------- data

BAD_X = [
    (None, InputTypeError, "x is required"),
    ("abc", InputTypeError, "string"),
    ([[1.0, 2.0], [3.0]], InputTypeError, "cannot be read as an array|ragged"),
    (np.ones(5), ShapeError, "2-D"),
    (np.ones((4, 2, 2)), ShapeError, "2-D"),
    (np.ones((4, 2)) + 1j, InputTypeError, "complex"),
    (np.array([["a", "b"], ["c", "d"]]), InputTypeError, "dtype"),
    (np.ones((4, 0)), ShapeError, "feature"),
    (torch.ones(4, 2, dtype=torch.complex64), InputTypeError, "complex"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("x", "err", "msg"), BAD_X)
def test_bad_data(method, x, err, msg):
    with pytest.raises(err, match=msg):
        A.sample_anchors(x, 2, method, y=np.arange(4) % 2)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(method, kind, value):
    x, y = _data()
    x[7, 1] = value
    x = torch.from_numpy(x) if kind == "torch" else x
    with pytest.raises(NonFiniteError, match=r"x contains NaN or inf values \(rows 7\)"):
        A.sample_anchors(x, 3, method, y=y)


def test_zero_rows_and_cosine_distance():
    x, _ = _data()
    x[[2, 5]] = 0.0
    with pytest.raises(RelrepsError, match=r"all-zero rows \(2, 5\).*metric='euclidean'"):
        A.sample_anchors(x, 3, "farthest_point", metric="cosine")
    assert len(A.sample_anchors(x, 3, "farthest_point", random_state=0)) == 3


def test_integer_and_boolean_data_are_numbers():
    x = np.arange(24).reshape(12, 2)
    for data in (x, x > 10, x.astype(np.float16), torch.from_numpy(x)):
        idx = A.sample_anchors(data, 3, "farthest_point", random_state=0)
        assert len(np.unique(idx)) == 3


# --------------------------------------------------------------------------- fuzz

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(),
                      st.text(max_size=4), st.lists(st.integers(-2, 30), max_size=4),
                      st.sampled_from([np.nan, 2.0, np.int64(3), "kmeans", "cosine", (1, 2)]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(method=st.one_of(st.sampled_from(METHODS), ANY_VALUE), n=ANY_VALUE, seed=ANY_VALUE,
       y=st.one_of(st.none(), st.sampled_from(["ok", "short", "nan", "strings"])),
       metric=st.one_of(st.just("__absent__"), ANY_VALUE))
def test_any_arguments_give_valid_anchors_or_a_named_error(method, n, seed, y, metric):
    x, labels = _data()
    ys = {None: None, "ok": labels, "short": labels[:5], "nan": np.where(labels == 1, np.nan, 0.0),
          "strings": labels.astype(str)}[y]
    kwargs = {} if isinstance(metric, str) and metric == "__absent__" else {"metric": metric}
    try:
        idx = A.sample_anchors(x, n, method, y=ys, random_state=seed, **kwargs)
    except RelrepsError:
        return
    # Whatever was accepted was meant: n distinct valid rows.
    assert isinstance(n, (int, np.integer)) and not isinstance(n, bool)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    assert len(np.unique(idx)) == n and idx.min() >= 0 and idx.max() < len(x)


# --------------------------------------------------------------------------- sampler properties

@pytest.mark.parametrize("kind", ["numpy", "torch"])
@SETTINGS
@given(n_samples=st.integers(3, 40), d=st.integers(1, 4), data=st.data())
def test_every_sampler_gives_distinct_rows_deterministically(kind, n_samples, d, data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, d)) + 0.5
    y = rng.integers(0, 3, size=n_samples)
    xs = torch.from_numpy(x) if kind == "torch" else x
    for method in METHODS:
        low = len(np.unique(y)) if method == "stratified" else 1
        n = data.draw(st.integers(low, n_samples), label=f"n[{method}]")
        idx = A.sample_anchors(xs, n, method, y=y, random_state=seed)
        assert idx.shape == (n,) and len(np.unique(idx)) == n
        assert 0 <= idx.min() and idx.max() < n_samples
        np.testing.assert_array_equal(A.sample_anchors(x, n, method, y=y, random_state=seed),
                                      idx)  # numpy and torch agree, and a seed fixes the draw


@SETTINGS
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6), frac=st.floats(0, 1),
       seed=st.integers(0, 2**32 - 1))
def test_stratified_balance(sizes, frac, seed):
    y = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(seed).shuffle(y)
    k = len(sizes)
    n = k + int(frac * (len(y) - k))
    idx = A.sample_anchors(np.zeros((len(y), 1)), n, "stratified", y=y, random_state=seed)
    got = np.bincount(y[idx], minlength=k)
    size = np.bincount(y, minlength=k)
    # Each class gets its fair share, capped by its size; the leftover is spread one by one.
    full = got == size
    assert got.min() >= 1
    if (~full).any():
        assert got[~full].max() - got[~full].min() <= 1
        assert (got[full] <= got[~full].max()).all()


def test_stratified_matches_the_round_robin_it_documents():
    """Same draws as the reference loop (so anchors chosen before this rewrite are unchanged)."""
    rng_y = np.random.default_rng(5)
    y = rng_y.integers(0, 4, size=50)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        classes = np.unique(y)
        pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in rng.permutation(classes)]
        ref: list[int] = []
        while len(ref) < 23:
            for pool in pools:
                if pool and len(ref) < 23:
                    ref.append(int(pool.pop()))
        got = A.sample_anchors(np.zeros((50, 1)), 23, "stratified", y=y, random_state=seed)
        assert got.tolist() == ref
