"""LatentTranslator as a scikit-learn estimator; persistence; devices; the whole float range."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from relreps.errors import (
    AnchorError,
    FormatError,
    InputTypeError,
    NonFiniteError,
    NotFittedError,
    NumericalError,
    RelrepsError,
    ShapeError,
)
from relreps.translation import LatentTranslator


@parametrize_with_checks([LatentTranslator(), LatentTranslator("lstsq"),
                          LatentTranslator("affine", alpha=0.1),
                          LatentTranslator("orthogonal", std_scaling=False)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _pair(seed=0, n=80, d_a=6, d_b=4, noise=0.05):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d_a))
    b = a @ rng.normal(size=(d_a, d_b)) + noise * rng.normal(size=(n, d_b))
    return a, b


def test_clone_score_grid_search_and_pipeline():
    a, b = _pair()
    tr = LatentTranslator("lstsq")
    assert clone(tr).get_params() == {"method": "lstsq", "std_scaling": True, "alpha": 0.0,
                                      "constant_rtol": 1e-4}
    assert tr.fit(a, b).score(a, b) > 0.99  # R^2 of the translated vectors
    grid = GridSearchCV(LatentTranslator(), {"method": ["orthogonal", "lstsq"],
                                             "alpha": [0.0, 1.0]},
                        cv=KFold(3, shuffle=True, random_state=0)).fit(a, b)
    assert grid.best_params_["method"] == "lstsq"  # a general linear map, not a rotation
    assert cross_val_score(LatentTranslator("lstsq"), a, b, cv=3).min() > 0.95
    pipe = make_pipeline(StandardScaler(), LatentTranslator("lstsq")).fit(a, b)
    assert pipe.predict(a).shape == b.shape and pipe.score(a, b) > 0.99
    out = LatentTranslator("lstsq").set_output(transform="pandas").fit(a, b).transform(a)
    assert list(out.columns) == [f"latenttranslator{i}" for i in range(4)]


def test_one_dimensional_target_predicts_one_dimensional_values():
    a, b = _pair(d_b=1)
    tr = LatentTranslator("lstsq").fit(a, b[:, 0])
    assert tr.predict(a).shape == (len(a),) and tr.transform(a).shape == (len(a), 1)
    np.testing.assert_allclose(tr.predict(a), LatentTranslator("lstsq").fit(a, b).predict(a)[:, 0])


def test_not_fitted_and_argument_errors_are_named():
    a, b = _pair()
    with pytest.raises(NotFittedError) as err:
        LatentTranslator().transform(a)
    assert isinstance(err.value, SkNotFittedError)
    for bad, exc in [({"method": "sgd"}, RelrepsError), ({"alpha": -1.0}, RelrepsError),
                     ({"alpha": "1"}, InputTypeError), ({"std_scaling": 1}, InputTypeError),
                     ({"constant_rtol": -1e-3}, RelrepsError)]:
        tr = LatentTranslator(**bad)  # stored unchanged; validated in fit
        with pytest.raises(exc):
            tr.fit(a, b)
    with pytest.raises(AnchorError, match="do not correspond"):
        LatentTranslator().fit(a, b[:-1])
    with pytest.raises(InputTypeError, match="requires y"):
        LatentTranslator().fit(a, None)
    with pytest.raises(InputTypeError, match="mixed numpy and torch"):
        LatentTranslator().fit(torch.as_tensor(a), b)
    with pytest.raises(AnchorError, match="all identical"):
        LatentTranslator().fit(a, np.ones_like(b))
    with pytest.raises(NonFiniteError):
        LatentTranslator().fit(a, np.where(b > 1, np.nan, b))
    with pytest.raises(RelrepsError, match="[Cc]omplex"):
        LatentTranslator().fit(a.astype(complex), b)
    tr = LatentTranslator().fit(a, b)
    with pytest.raises(ShapeError, match="features"):
        tr.transform(a[:, :3])
    with pytest.raises(ShapeError):
        tr.residual(a, b[:, :2])


def test_torch_follows_the_input_device_including_meta():
    a, b = _pair()
    tr = LatentTranslator("lstsq").fit(torch.as_tensor(a), torch.as_tensor(b))
    x = torch.as_tensor(a[:5], dtype=torch.float32)
    out = tr.transform(x)
    assert out.dtype == torch.float32 and out.device == x.device
    np.testing.assert_allclose(out.numpy(), tr.transform(a[:5]), rtol=1e-5, atol=1e-5)
    meta = tr.transform(x.to("meta"))
    assert meta.is_meta and meta.shape == (5, 4)


def _through_safetensors(obj):
    from safetensors.numpy import load, save

    config, arrays = obj._relreps_state()
    blob = save(arrays, metadata={"config": json.dumps(config)})
    return type(obj)._relreps_from_state(json.loads(json.dumps(config)), load(blob))


@pytest.mark.parametrize("method", ["orthogonal", "lstsq", "affine"])
def test_persistence_round_trip_is_bit_identical(method):
    a, b = _pair(d_a=5, d_b=7)
    tr = LatentTranslator(method, alpha=0.5 if method != "orthogonal" else 0.0).fit(a, b)
    back = _through_safetensors(tr)
    np.testing.assert_array_equal(back.transform(a), tr.transform(a))
    assert back.get_params() == tr.get_params()
    one = LatentTranslator("lstsq").fit(a, b[:, 0])
    assert _through_safetensors(one).predict(a).shape == (len(a),)
    dead = LatentTranslator(method).fit(a, np.hstack([b, np.full((len(b), 1), 2.0)]))
    back = _through_safetensors(dead)
    np.testing.assert_array_equal(back.constant_features_, [7])
    np.testing.assert_array_equal(back.transform(a), dead.transform(a))


def test_persistence_refuses_tampered_state():
    a, b = _pair()
    with pytest.raises(NotFittedError):
        LatentTranslator()._relreps_state()
    config, arrays = LatentTranslator().fit(a, b)._relreps_state()
    cases = [({**config, "params": {**config["params"], "method": "pickle"}}, arrays),
             ({**config, "n_features_in": 2.5}, arrays),
             ({k: v for k, v in config.items() if k != "y_1d"}, arrays),
             ({**config, "constant_features": [0, 0]}, arrays),
             ({**config, "constant_features": [99]}, arrays),
             ({**config, "constant_features": [True]}, arrays),
             (config, {**arrays, "matrix": np.zeros((3, 3))}),
             (config, {**arrays, "scale_b": np.array(-1.0)}),
             (config, {**arrays, "bias": np.full(4, np.nan)}),
             (config, {k: v for k, v in arrays.items() if k != "mean_a"})]
    for cfg, arr in cases:
        with pytest.raises(FormatError):
            LatentTranslator._relreps_from_state(cfg, arr)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), exp=st.integers(-300, 300), dtype=st.sampled_from(
    [np.float64, np.float32]), method=st.sampled_from(["orthogonal", "lstsq", "affine"]),
    std_scaling=st.booleans())
def test_any_magnitude_is_translated_correctly_or_refused(seed, exp, dtype, method, std_scaling):
    """Inputs across the whole float range: the exact map is recovered, or a named error."""
    fi = np.finfo(dtype)
    exp = int(np.clip(exp, np.log2(fi.tiny) + 30, np.log2(fi.max) - 30)) if dtype == np.float32 \
        else exp
    rng = np.random.default_rng(seed)
    q = _orthogonal(4, rng)
    a = rng.normal(size=(30, 4)) * 2.0 ** exp
    b = a @ q
    a, b = a.astype(dtype), b.astype(dtype)
    try:
        tr = LatentTranslator(method, std_scaling=std_scaling).fit(a, b)
        out = tr.transform(a)
    except (NumericalError, AnchorError):
        return
    assert out.dtype == dtype and np.isfinite(out).all()
    tol = 1e-4 if dtype == np.float32 else 1e-9
    ref = a.astype(np.float64) @ q
    err = np.linalg.norm(out.astype(np.float64) / 2.0 ** exp - ref / 2.0 ** exp)
    assert err <= tol * np.linalg.norm(ref / 2.0 ** exp)


def test_overflowing_output_is_a_numerical_error():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 3)).astype(np.float32)
    b = (a * 1e37).astype(np.float32)
    tr = LatentTranslator("lstsq").fit(a, b)
    with pytest.raises(NumericalError, match="range"):
        tr.transform(a * 1e3)
    with pytest.raises(NumericalError, match="range"):
        tr.transform(torch.as_tensor(a * 1e3))
