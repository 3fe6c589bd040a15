"""RelativeProjection as a scikit-learn transformer: the estimator checks, pipelines, grid search,
pandas output, other array kinds and devices, centring decisions and persistence."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from relreps import RelativeProjection, relative_projection
from relreps.centering import AnisotropyWarning
from relreps.errors import (
    FormatError,
    InputTypeError,
    NotFittedError,
    RelrepsError,
    ShapeError,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ESTIMATORS = [
    RelativeProjection(n_anchors=5, random_state=0),
    RelativeProjection(n_anchors=5, similarity="euclidean", center="auto", random_state=0),
    RelativeProjection(n_anchors=6, similarity="rbf", center="anchors", sampler="kmeans",
                       random_state=0),
    RelativeProjection(n_anchors=4, similarity="basis", chunk_size=7, random_state=0),
]


def expected_failed_checks(estimator: RelativeProjection) -> dict[str, str]:
    if estimator.similarity in ("cosine", "angular"):
        return {"check_estimators_dtypes": (
            "the check's integer data (3 * uniform cast to int) has all-zero rows, which have "
            "no direction: cosine and angular similarities refuse them with a named error "
            "(the other similarities pass this check)")}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
@pytest.mark.filterwarnings("ignore::relreps.centering.AnisotropyWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n: int = 60, d: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# --------------------------------------------------------------------------- fitted state

def test_not_fitted_error_is_relreps_and_sklearn():
    with pytest.raises(NotFittedError) as e:
        RelativeProjection().transform(_data())
    assert isinstance(e.value, SkNotFittedError) and isinstance(e.value, RelrepsError)
    with pytest.raises(SkNotFittedError):
        RelativeProjection().get_feature_names_out()


def test_feature_names_and_pandas_output():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(_data(), columns=[f"f{i}" for i in range(5)])
    rp = RelativeProjection(n_anchors=4, random_state=0).set_output(transform="pandas")
    out = rp.fit_transform(X)
    assert list(rp.feature_names_in_) == list(X.columns)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == [f"anchor{i}" for i in range(4)]
    np.testing.assert_allclose(out.to_numpy(), relative_projection(X.to_numpy(), rp.anchors_))
    with pytest.raises(ValueError, match="feature names"):
        rp.transform(X.rename(columns={"f0": "other"}))
    with pytest.raises(RelrepsError):
        rp.get_feature_names_out(["a", "b"])
    # pandas output wraps numpy results; a torch result cannot be wrapped: a named error.
    with pytest.raises(InputTypeError, match="wraps numpy results only"):
        rp.transform(torch.tensor(X.to_numpy()))


def test_clone_pipeline_and_grid_search_over_anchors_similarity_and_center():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=240, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    X = X + 4.0  # an offset that centring removes: the grid should find it useful
    pipe = make_pipeline(RelativeProjection(random_state=0), StandardScaler(),
                         LogisticRegression(max_iter=2000))
    grid = GridSearchCV(pipe, {"relativeprojection__n_anchors": [8, 24],
                               "relativeprojection__similarity": ["cosine", "euclidean"],
                               "relativeprojection__center": [None, "anchors", "auto"]},
                        cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnisotropyWarning)
        grid.fit(X[:180], y[:180])
    assert len(grid.cv_results_["params"]) == 12
    best = grid.best_estimator_.named_steps["relativeprojection"]
    assert best.anchors_.shape == (grid.best_params_["relativeprojection__n_anchors"], 8)
    assert grid.score(X[180:], y[180:]) > 1 / 3 + 0.2
    c = clone(best)
    assert not hasattr(c, "anchors_") and c.get_params() == best.get_params()


def test_pipeline_refits_deterministically():
    X = _data(100)
    y = (X[:, 0] > 0).astype(int)
    pipe = Pipeline([("rel", RelativeProjection(n_anchors=10, random_state=1)),
                     ("clf", LogisticRegression())]).fit(X, y)
    again = clone(pipe).fit(X, y)
    np.testing.assert_array_equal(again.predict(X), pipe.predict(X))


# --------------------------------------------------------------------------- kinds and devices

def test_numpy_fit_then_torch_transform_keeps_kind_dtype_and_device():
    X = _data()
    rp = RelativeProjection(n_anchors=6, random_state=0).fit(X)
    out = rp.transform(torch.tensor(X))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), rp.transform(X), rtol=1e-12)
    out32 = rp.transform(torch.tensor(X, dtype=torch.float32))
    assert out32.dtype == torch.float64  # anchors fitted in float64: promotion, as numpy does


def test_torch_fit_then_numpy_transform_and_meta_device():
    X = torch.tensor(_data(), dtype=torch.float32)
    rp = RelativeProjection(n_anchors=6, random_state=0, center="anchors").fit(X)
    assert isinstance(rp.anchors_, torch.Tensor) and rp.anchors_.dtype == torch.float32
    got = rp.transform(X.numpy())
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_allclose(got, rp.transform(X).numpy(), atol=1e-6)  # cosines: absolute
    # The meta device has shapes only: the projection must stay on it (never touch values).
    meta = rp.transform(torch.empty(11, 5, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (11, 6)


@pytest.mark.parametrize("similarity", ["cosine", "angular", "inner", "euclidean", "l1", "linf",
                                        "rbf", "basis"])
@pytest.mark.parametrize("center", [None, "anchors", "auto"])
def test_relative_projection_on_meta_stays_on_meta(similarity, center):
    x = torch.empty(7, 4, device="meta")
    a = torch.empty(5, 4, device="meta")
    out = relative_projection(x, a, similarity=similarity, center=center, chunk_size=3)
    assert out.device.type == "meta" and out.shape == (7, 5)


def test_transform_of_a_memmap_streams_it(tmp_path):
    X = _data(300).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, X)
    rp = RelativeProjection(n_anchors=7, random_state=0, chunk_size=64).fit(X)
    got = rp.transform(np.load(path, mmap_mode="r"))
    np.testing.assert_allclose(got, rp.transform(X), rtol=1e-6)


# --------------------------------------------------------------------------- validation in fit

@pytest.mark.parametrize("params, error, match", [
    (dict(n_anchors=2.5), InputTypeError, "n_anchors must be an integer"),
    (dict(n_anchors=True), InputTypeError, "n_anchors must be an integer"),
    (dict(n_anchors=0), RelrepsError, "n_anchors must be >= 1"),
    (dict(n_anchors=500), RelrepsError, "asked for 500 anchors but only 60 samples"),
    (dict(chunk_size=0), RelrepsError, "chunk_size must be >= 1"),
    (dict(chunk_size=1.5), InputTypeError, "chunk_size must be an integer"),
    (dict(center="mean"), RelrepsError, "center must be None, 'none', 'anchors', 'auto'"),
    (dict(center=True), InputTypeError, "center must be None"),
    (dict(center=np.zeros(3)), ShapeError, r"center vector must have shape \(5,\)"),
    (dict(similarity="cosin"), RelrepsError, "unknown similarity"),
    (dict(anchors=np.ones((3, 4))), ShapeError, "anchors have 4 features but X has 5"),
])
def test_fit_validates_its_parameters(params, error, match):
    with pytest.raises(error, match=match):
        RelativeProjection(**{"n_anchors": 5, **params}).fit(_data())


def test_transform_validates_width_and_values():
    rp = RelativeProjection(n_anchors=5, random_state=0).fit(_data())
    with pytest.raises(ShapeError, match="X has 4 features, but RelativeProjection is expecting"
                                         " 5 features"):
        rp.transform(_data(d=4))
    bad = _data(20)
    bad[13, 2] = np.nan
    with pytest.raises(RelrepsError, match=r"X contains NaN or inf values \(rows 13\)"):
        rp.transform(bad)
    with pytest.raises(RelrepsError, match=r"X contains NaN or inf values \(rows 13\)"):
        rp.set_params(chunk_size=4).transform(bad)


# --------------------------------------------------------------------------- centring

def _anisotropic(n: int = 80, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) + 6.0 * np.ones(d)  # one dominant common direction


def test_auto_centres_anisotropic_anchors_and_records_why():
    rp = RelativeProjection(n_anchors=20, center="auto", random_state=0).fit(_anisotropic())
    assert rp.center_ == "anchors"
    dec = rp.center_decision_
    assert dec.center == "anchors" and dec.anisotropy["anchors"] > 0.5 and "centred" in dec.reason
    np.testing.assert_allclose(rp.transform(_anisotropic()),
                               relative_projection(_anisotropic(), rp.anchors_, center="anchors"))
    iso = RelativeProjection(n_anchors=20, center="auto", random_state=0).fit(_data(80, 16))
    assert iso.center_ is None and iso.center_decision_.anisotropy["anchors"] < 0.2


def test_plain_cosine_on_anisotropic_anchors_warns_once_at_fit():
    X = _anisotropic()
    with pytest.warns(AnisotropyWarning, match="close to collapse") as rec:
        rp = RelativeProjection(n_anchors=20, random_state=0).fit(X)
    assert rec[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rp.transform(X)  # the decision was taken at fit: no warning per transform
        RelativeProjection(n_anchors=20, random_state=0, center="anchors").fit(X)
        RelativeProjection(n_anchors=20, random_state=0, similarity="euclidean").fit(X)


# --------------------------------------------------------------------------- persistence

def _save(obj, path) -> None:
    """The agreed format: one safetensors file, JSON config in its metadata."""
    from safetensors.numpy import save_file

    config, arrays = obj._relreps_state()
    meta = {"relreps": json.dumps({"relreps_format": 1, "class": type(obj).__name__,
                                   "config": config})}
    save_file(arrays, str(path), metadata=meta)


def _load(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["relreps"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["class"] == "RelativeProjection"
    return RelativeProjection._relreps_from_state(meta["config"], arrays)


PERSISTED = [
    dict(n_anchors=9, random_state=3),
    dict(n_anchors=9, random_state=3, center="auto", similarity="rbf"),
    dict(anchors=np.random.default_rng(5).normal(size=(4, 6)), center=np.arange(6.0),
         similarity="euclidean", chunk_size=5),
]


def _fitted(params):
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(_anisotropic(60, 6), columns=list("abcdef"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnisotropyWarning)
        return RelativeProjection(**params).fit(X), X


@pytest.mark.parametrize("params", PERSISTED)
def test_persistence_round_trip_keeps_params_state_and_outputs(tmp_path, params):
    rp, X = _fitted(params)
    path = tmp_path / "rp.safetensors"
    _save(rp, path)
    loaded = _load(path)
    assert loaded.get_params().keys() == rp.get_params().keys()
    for k, v in rp.get_params().items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(loaded.get_params()[k], v)
        else:
            assert loaded.get_params()[k] == v, k
    assert list(loaded.feature_names_in_) == list("abcdef")
    assert loaded.center_decision_.to_dict() == rp.center_decision_.to_dict()
    np.testing.assert_array_equal(loaded.transform(X), rp.transform(X))


def test_persistence_is_bit_identical_in_a_fresh_process(tmp_path):
    models = [_fitted(p) for p in PERSISTED]
    X = models[0][1].to_numpy()
    np.save(tmp_path / "x.npy", X)
    paths = []
    for i, (rp, _) in enumerate(models):
        paths.append(str(tmp_path / f"rp{i}.safetensors"))
        _save(rp, paths[-1])
    code = (
        "import sys, numpy as np, pandas as pd\n"
        f"sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})\n"
        "from test_projection_sklearn import _load\n"
        f"x = pd.DataFrame(np.load({str(tmp_path / 'x.npy')!r}), columns=list('abcdef'))\n"
        f"for i, p in enumerate({paths!r}):\n"
        f"    np.save(p + '.out.npy', _load(p).transform(x))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    for (rp, frame), p in zip(models, paths):
        np.testing.assert_array_equal(np.load(p + ".out.npy"), rp.transform(frame))


def test_persistence_state_is_validated():
    rp = RelativeProjection(n_anchors=5, random_state=0).fit(_data())
    config, arrays = rp._relreps_state()
    json.dumps(config)  # plain JSON: nothing that needs code to load
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    broken = [
        ({**config, "params": {**config["params"], "similarity": "nope"}}, arrays),
        ({**config, "fitted": {**config["fitted"], "n_features_in_": 4}}, arrays),
        ({**config, "fitted": {**config["fitted"], "center_": "sideways"}}, arrays),
        ({**config, "params": {**config["params"], "evil": 1}}, arrays),
        ({"params": config["params"]}, arrays),
        (config, {}),
        (config, {**arrays, "anchors_": np.full((5, 5), np.nan)}),
        (config, {**arrays, "anchor_indices_": np.arange(3)}),
        ("not a dict", arrays),
    ]
    for cfg, arr in broken:
        with pytest.raises(RelrepsError):
            RelativeProjection._relreps_from_state(cfg, arr)
    with pytest.raises(NotFittedError):
        RelativeProjection()._relreps_state()


def test_persistence_through_relreps_save_when_available(tmp_path):
    persistence = pytest.importorskip("relreps.persistence")
    rp = RelativeProjection(n_anchors=5, random_state=0, center="auto").fit(_data())
    persistence.save(rp, tmp_path / "rp.safetensors")
    loaded = persistence.load(tmp_path / "rp.safetensors")
    np.testing.assert_array_equal(loaded.transform(_data()), rp.transform(_data()))
    with pytest.raises(FormatError):
        (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
        persistence.load(tmp_path / "bad.safetensors")
