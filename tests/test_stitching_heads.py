"""The cross-validated default head: C chosen on the fit data only, by the one-standard-error
rule, deterministically."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps.errors import InputTypeError, RelrepsError
from relreps.stitching import DEFAULT_CS, CVLogisticRegression, make_head

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 20)) * 0.6
    y = rng.integers(0, 3, size=300)
    return means[y] + rng.normal(size=(300, 20)), y


def test_grid_choice_and_refit(blobs):
    X, y = blobs
    best = CVLogisticRegression(rule="best").fit(X, y)
    one_se = CVLogisticRegression().fit(X, y)
    for m in (best, one_se):
        np.testing.assert_array_equal(m.Cs_, np.asarray(DEFAULT_CS))
        assert m.C_ in DEFAULT_CS and m.n_folds_ == 5
        assert m.cv_scores_.shape == m.cv_std_.shape == (len(DEFAULT_CS),)
        assert m.estimator_.C == m.C_  # the final model is refitted with the chosen C
        np.testing.assert_array_equal(m.coef_, m.estimator_.coef_)
    i_best = int(np.nanargmax(best.cv_scores_))
    assert best.C_ == DEFAULT_CS[i_best]
    # One standard error rule: the strongest regularisation within one SE of the best score.
    bar = best.cv_scores_[i_best] - best.cv_std_[i_best] / np.sqrt(5)
    assert one_se.C_ == DEFAULT_CS[int(np.flatnonzero(best.cv_scores_ >= bar)[0])]
    assert one_se.C_ <= best.C_
    assert one_se.score(X, y) > 0.8


def test_deterministic_and_independent_of_the_seed_argument(blobs):
    X, y = blobs
    a, b = make_head("logreg-cv", 0).fit(X, y), make_head("logreg-cv", 7).fit(X, y)
    assert a[-1].C_ == b[-1].C_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_flat_scores_pick_the_strongest_regularisation():
    # Labels independent of X: every C scores at chance, within noise of the best; the rule
    # then takes the smallest C, the head that least fits directions another encoder lacks.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = np.tile([0, 1], 100)
    m = CVLogisticRegression(Cs=(0.001, 0.1, 10.0)).fit(X, y)
    assert m.C_ == 0.001


def test_cross_validation_sees_only_fit_data(blobs, monkeypatch):
    import sklearn.linear_model as lm

    X, y = blobs
    seen = []
    real = lm.LogisticRegression.fit

    def spy(self, X_, y_, *a, **k):
        seen.append(np.asarray(X_).copy())
        return real(self, X_, y_, *a, **k)

    monkeypatch.setattr(lm.LogisticRegression, "fit", spy)
    m = CVLogisticRegression().fit(X[:200], y[:200])
    fit_rows = {r.tobytes() for r in X[:200]}
    assert len(seen) == 5 * int((~np.isnan(m.cv_scores_)).sum()) + 1  # folds x C, final fit
    for part in seen:
        assert {r.tobytes() for r in part} <= fit_rows  # never a row of X[200:]
    assert len(seen[-1]) == 200 and all(len(p) == 160 for p in seen[:-1])


def test_early_stop_saves_the_weakly_regularised_end_without_changing_the_choice(blobs):
    X, y = blobs
    full = CVLogisticRegression(patience=None).fit(X, y)
    assert not np.isnan(full.cv_scores_).any()
    early = CVLogisticRegression(patience=1).fit(X, y)
    done = ~np.isnan(early.cv_scores_)
    assert not done.all() and done[: done.sum()].all()  # a prefix of the grid, then NaN
    np.testing.assert_array_equal(early.cv_scores_[done], full.cv_scores_[done])
    assert early.C_ == full.C_


def test_small_classes_reduce_folds_or_fall_back_with_a_warning():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(13, 3))
    y = np.array([0] * 10 + [1] * 3)
    assert CVLogisticRegression().fit(X, y).n_folds_ == 3
    y1 = np.array([0] * 12 + [1])
    with pytest.warns(UserWarning, match="too few to cross-validate"):
        m = CVLogisticRegression().fit(X, y1)
    assert m.n_folds_ == 0 and m.C_ == 1.0 and np.isnan(m.cv_scores_).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CVLogisticRegression(Cs=[0.5]).fit(X, y).C_ == 0.5  # a single C: no search


def test_parameter_validation_happens_in_fit(blobs):
    X, y = blobs
    bad = [({"Cs": []}, RelrepsError, "at least one"), ({"Cs": [0.0]}, RelrepsError, "> 0"),
           ({"Cs": "1"}, InputTypeError, "Cs"), ({"Cs": [np.nan]}, RelrepsError, "finite"),
           ({"cv": 1}, RelrepsError, ">= 2"), ({"cv": 2.5}, InputTypeError, "integer"),
           ({"scoring": "roc_auc"}, RelrepsError, "scoring"),
           ({"rule": "min"}, RelrepsError, "rule"), ({"max_iter": 0}, RelrepsError, ">= 1"),
           ({"patience": 0}, RelrepsError, ">= 1"), ({"tol": 0}, RelrepsError, "> 0"),
           ({"random_state": -2}, RelrepsError, ">= 0")]
    for params, err, match in bad:
        est = CVLogisticRegression(**params)  # never raises in __init__
        with pytest.raises(err, match=match):
            est.fit(X, y)
    with pytest.raises(RelrepsError, match="1 class"):
        CVLogisticRegression().fit(X, np.zeros(len(X)))
    with pytest.raises(RelrepsError, match="Unknown label type"):
        CVLogisticRegression().fit(X, np.linspace(0, 1, len(X)))


@settings(max_examples=25, deadline=None)
@given(cs=st.lists(st.floats(min_value=1e-4, max_value=1e2), min_size=1, max_size=4))
def test_chosen_c_is_always_from_the_grid(cs):
    rng = np.random.default_rng(len(cs))
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(int)
    m = CVLogisticRegression(Cs=cs, cv=3).fit(X, y)
    assert m.C_ in set(np.unique(np.asarray(cs, dtype=float)).tolist())


# ------------------------------------------------------------ features constant in float32


def _with_flat_feature(blobs, noise):
    X, y = blobs
    rng = np.random.default_rng(2)
    flat = np.full((len(X), 1), 0.5) + noise * rng.integers(-4, 5, size=(len(X), 1))
    return np.hstack([X, flat]).astype(np.float32), y


@pytest.mark.parametrize("head", ["logreg-cv", "logreg", "logreg-c0.1"])
def test_a_feature_constant_on_training_rows_cannot_dominate(blobs, head):
    from sklearn.pipeline import Pipeline

    from relreps.stitching import ConstantFeatureFilter

    ulp = float(np.spacing(np.float32(0.5)))
    X, y = _with_flat_feature(blobs, noise=ulp)  # constant in float32: 0.5 +- 4 ulps
    tr, te = slice(0, 200), slice(200, None)
    Xte = X[te].copy()
    Xte[:, -1] = np.random.default_rng(3).uniform(-1, 1, size=len(Xte))  # varies at test time
    m = make_head(head).fit(X[tr], y[tr])
    assert isinstance(m, Pipeline) and isinstance(m.steps[0][1], ConstantFeatureFilter)
    assert m[0].keep_.sum() == X.shape[1] - 1 and not m[0].keep_[-1]
    ref = make_head(head).fit(X[tr, :-1], y[tr])
    np.testing.assert_array_equal(m.predict(Xte), ref.predict(Xte[:, :-1]))
    # a varying feature of the same size is kept
    Xv, _ = _with_flat_feature(blobs, noise=1e-3)
    assert make_head(head).fit(Xv[tr], y[tr])[0].keep_.all()


def test_constant_filter_keeps_one_feature_when_all_are_constant():
    from relreps.stitching import ConstantFeatureFilter

    X = np.ones((6, 3), dtype=np.float32) * [1.0, 2.0, 3.0]
    X[0, 1] += 1e-6  # the largest (still negligible) range
    f = ConstantFeatureFilter().fit(X)
    assert f.keep_.tolist() == [False, True, False]
    assert f.transform(X).shape == (6, 1)
    assert f.get_feature_names_out().tolist() == ["x1"]
    with pytest.raises(RelrepsError):
        f.transform(np.ones((2, 4)))
    with pytest.raises(RelrepsError):
        ConstantFeatureFilter().transform(X)  # not fitted


def test_constant_filter_follows_scikit_learn_conventions():
    from sklearn.utils.estimator_checks import check_estimator

    from relreps.stitching import ConstantFeatureFilter

    check_estimator(ConstantFeatureFilter())
