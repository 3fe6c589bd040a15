"""Every argument of the stitching API, given garbage, raises a named RelrepsError (never a raw
TypeError/KeyError/... from deep inside)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps.errors import InputTypeError, RelrepsError
from relreps.stitching import StitchedClassifier, make_head, score, stitching_matrix
from relreps.validation import check_choices, check_seeds, check_texts

pytestmark = pytest.mark.usefixtures("one_thread")

GARBAGE = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
    st.text(max_size=5), st.binary(max_size=3), st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(np.array([[1.0, np.nan]])), st.just(object()), st.just(()), st.just(np.ones((2, 3))),
    st.just(lambda *a: None), st.just({"A": (None, None)}))

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 5))
Y = np.arange(40) % 2
SPACES = {"A": (X[:30], X[30:]), "B": (X[:30] * 2, X[30:] * 2)}
GOOD = {"anchors": np.arange(6), "head": "logreg", "seeds": (0,), "show_progress": False}
ARGS = ("anchors", "n_anchors", "anchor_sampler", "anchor_space", "space", "similarity",
        "center", "head", "seeds", "metrics", "fit_spaces")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arg=st.sampled_from(ARGS), value=GARBAGE)
def test_stitching_matrix_garbage_arguments(arg, value):
    kwargs = dict(GOOD)
    if arg in ("n_anchors", "anchor_sampler", "anchor_space"):
        kwargs.pop("anchors")
        kwargs.setdefault("n_anchors", 4)
    kwargs[arg] = value
    try:
        res = stitching_matrix(SPACES, Y[:30], Y[30:], **kwargs)
    except RelrepsError:
        return
    assert res.rows  # accepted values must give a real result


@settings(max_examples=60, deadline=None)
@given(which=st.sampled_from(["spaces", "y_train", "y_test"]), value=GARBAGE)
def test_stitching_matrix_garbage_data(which, value):
    args = {"spaces": SPACES, "y_train": Y[:30], "y_test": Y[30:]}
    args[which] = value
    with pytest.raises(RelrepsError):
        stitching_matrix(args["spaces"], args["y_train"], args["y_test"], **GOOD)


@settings(max_examples=120, deadline=None)
@given(param=st.sampled_from(["head", "n_anchors", "sampler", "similarity", "center",
                              "anchor_index", "random_state"]), value=GARBAGE)
def test_classifier_garbage_parameters(param, value):
    est = StitchedClassifier(**{"head": "logreg", "n_anchors": 6, param: value})
    try:
        est.fit(X, Y)
    except RelrepsError:
        return
    assert est.predict(X).shape == (40,)


@settings(max_examples=80, deadline=None)
@given(arg=st.sampled_from(["anchor_embeddings", "anchor_ids", "target_anchor_embeddings"]),
       value=GARBAGE)
def test_classifier_garbage_fit_arguments(arg, value):
    try:
        StitchedClassifier(head="logreg", n_anchors=6).fit(X, Y, **{arg: value})
    except RelrepsError:
        pass


@pytest.fixture(scope="module")
def fitted():
    return StitchedClassifier(head="logreg", n_anchors=6, random_state=0).fit(X, Y)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=GARBAGE, anchors=GARBAGE)
def test_predict_garbage(fitted, x, anchors):
    with pytest.raises(RelrepsError):
        fitted.predict(x, anchor_embeddings=anchors)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=GARBAGE, encoder=GARBAGE)
def test_text_methods_garbage(fitted, texts, encoder):
    with pytest.raises(RelrepsError):
        fitted.predict_texts(texts, encoder=encoder)
    with pytest.raises(RelrepsError):
        StitchedClassifier().fit_texts(texts, [0, 1], encoder=encoder, anchor_texts=texts)


@settings(max_examples=60, deadline=None)
@given(head=GARBAGE, seed=GARBAGE, metric=GARBAGE)
def test_make_head_and_score_garbage(head, seed, metric):
    try:
        make_head(head, seed)
    except RelrepsError:
        pass
    try:
        score([0, 1], [0, 1], metric)
    except RelrepsError:
        pass


def test_collection_checks():
    assert check_choices("a", "m", ("a", "b")) == ("a",)
    assert check_choices(["b", "a", "b"], "m", ("a", "b")) == ("b", "a")
    assert check_seeds((3,)) == (3,) and check_seeds(range(3)) == (0, 1, 2)
    with pytest.raises(InputTypeError, match="range"):  # "3 seeds" or "seed 3": refused
        check_seeds(3)
    assert check_texts(np.array(["x", "y"]), "t") == ["x", "y"]
    for bad in ((), ["c"], 3, b"a"):
        with pytest.raises(RelrepsError):
            check_choices(bad, "m", ("a", "b"))
    for bad in ((), (1, 1), (-1,), (True,), "1", 1.0, None):
        with pytest.raises(RelrepsError):
            check_seeds(bad)
    for bad in ("one", [1], [], None, ["a", "a"]):
        with pytest.raises(RelrepsError):
            check_texts(bad, "t", unique=True)
