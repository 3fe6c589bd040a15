"""StitchedClassifier: fit on one encoder, predict from another given its anchor embeddings."""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

from relreps.anchors import AnchorWarning
from relreps.centering import AnisotropyWarning
from relreps.errors import (
    AnchorError,
    InputTypeError,
    NotFittedError,
    OptionError,
    RelrepsError,
    ShapeError,
)
from relreps.stitching import StitchedClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    d = 16
    means = rng.normal(size=(3, d))
    y = rng.integers(0, 3, size=500)
    x = means[y] + 0.8 * rng.normal(size=(500, d))
    x -= x.mean(0)  # an isotropic space (mean pairwise cosine ~0): no centring needed
    q = _orthogonal(rng, d)
    return x[:350], y[:350], x[350:], y[350:], q


def test_zero_shot_on_a_rotated_rescaled_encoder(data):
    x, y, xt, yt, q = data
    m = StitchedClassifier(n_anchors=60, random_state=0).fit(x, y)
    assert m.n_anchors_ == 60 and m.anchor_embeddings_.shape == (60, 16)
    np.testing.assert_array_equal(m.anchor_embeddings_, x[m.anchor_index_])
    assert m.anchor_ids_ == m.anchor_index_.tolist()
    assert m.C_ is not None and m.center_decision_["requested"] == "auto"
    native = m.score(xt, yt)
    assert native > 0.85
    # Encoder B: every embedding rotated and scaled. Give B's embeddings of the same anchors.
    other = m.score(2.5 * xt @ q, yt, anchor_embeddings=2.5 * m.anchor_embeddings_ @ q)
    assert other == pytest.approx(native, abs=0.01)
    proba = m.predict_proba(2.5 * xt @ q, anchor_embeddings=2.5 * m.anchor_embeddings_ @ q)
    assert proba.shape == (len(xt), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(proba, m.predict_proba(xt), atol=1e-6)


def test_anchor_sources(data):
    x, y, xt, yt, _ = data
    idx = np.arange(0, 350, 7)
    by_index = StitchedClassifier(anchor_index=idx, head="logreg").fit(x, y)
    np.testing.assert_array_equal(by_index.anchor_index_, idx)
    outside = xt[:40]  # anchors that are not training samples, with their own ids
    ids = [f"doc-{i}" for i in range(40)]
    by_emb = StitchedClassifier(head="logreg").fit(x, y, anchor_embeddings=outside,
                                                   anchor_ids=ids)
    assert by_emb.anchor_index_ is None and by_emb.anchor_ids_ == ids
    assert by_emb.n_anchors_ == 40
    strat = StitchedClassifier(n_anchors=9, sampler="stratified", head="logreg",
                               random_state=0).fit(x, y)
    assert sorted(np.bincount(y[strat.anchor_index_]).tolist()) == [3, 3, 3]
    with pytest.warns(AnchorWarning, match="using all 20 rows"):
        small = StitchedClassifier(n_anchors=300, head="logreg").fit(x[:20], y[:20])
    assert small.n_anchors_ == 20
    with pytest.raises(AnchorError, match="anchor_ids has 3 entries for 40"):
        StitchedClassifier(head="logreg").fit(x, y, anchor_embeddings=outside,
                                              anchor_ids=ids[:3])


def test_auto_centring_decided_at_fit_and_warned_at_predict(data):
    x, y, xt, yt, q = data
    rng = np.random.default_rng(0)
    offset = 30 * rng.normal(size=16)
    # Fit space anisotropic: auto centres.
    m = StitchedClassifier(n_anchors=60, head="logreg", random_state=0).fit(x + offset, y)
    assert m.center_ == "anchors" and "centred" in m.center_decision_["reason"]
    # Fit space isotropic, other space anisotropic: the model was fitted uncentred, so the
    # anisotropic space cannot be read faithfully: a warning, not a silent collapse.
    iso = StitchedClassifier(n_anchors=60, head="logreg", random_state=0).fit(x, y)
    assert iso.center_ is None
    b_anchors, b_x = iso.anchor_embeddings_ @ q + offset, xt @ q + offset
    with pytest.warns(AnisotropyWarning, match="fitted without centring"):
        collapsed = iso.score(b_x, yt, anchor_embeddings=b_anchors)
    # Knowing the other space at fit time makes the joint decision: centred, no warning.
    joint = StitchedClassifier(n_anchors=60, head="logreg", random_state=0)
    joint.fit(x, y, target_anchor_embeddings={"B": iso.anchor_embeddings_ @ q + offset})
    assert joint.center_ == "anchors" and "B" in joint.center_decision_["anisotropy"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnisotropyWarning)
        good = joint.score(b_x, yt, anchor_embeddings=b_anchors)
    assert good > collapsed + 0.2 and good == pytest.approx(joint.score(xt, yt), abs=0.02)
    none = StitchedClassifier(n_anchors=60, head="logreg", center=None,
                              random_state=0).fit(x, y)
    assert none.center_ is None and none.center_decision_["requested"] is None


def test_validation_errors_are_named(data):
    x, y, xt, _, _ = data
    m = StitchedClassifier(n_anchors=30, head="logreg", random_state=0)
    with pytest.raises(NotFittedError):
        m.predict(xt)
    from sklearn.exceptions import NotFittedError as SkNotFitted

    with pytest.raises(SkNotFitted):
        m.predict(xt)
    m.fit(x, y)
    with pytest.raises(AnchorError, match="29 rows; this model has 30 anchors"):
        m.predict(xt, anchor_embeddings=m.anchor_embeddings_[:29])
    with pytest.raises(ShapeError, match="same encoder"):
        m.predict(xt[:, :8], anchor_embeddings=m.anchor_embeddings_)
    with pytest.raises(ShapeError, match="features"):
        m.predict(xt[:, :8])
    with pytest.raises(RelrepsError, match="NaN"):
        m.predict(np.full_like(xt, np.nan))
    bad_params = [({"head": "svm"}, OptionError), ({"n_anchors": 0}, RelrepsError),
                  ({"n_anchors": 2.5}, InputTypeError), ({"n_anchors": True}, InputTypeError),
                  ({"sampler": "best"}, RelrepsError), ({"similarity": "nope"}, RelrepsError),
                  ({"center": "mean"}, RelrepsError), ({"anchor_index": [0, 0]}, RelrepsError),
                  ({"anchor_index": [0.0, 1.0]}, InputTypeError),
                  ({"anchor_index": [999]}, RelrepsError),
                  ({"random_state": -1}, RelrepsError)]
    for params, err in bad_params:
        est = StitchedClassifier(**params)  # never raises in __init__ (sklearn contract)
        with pytest.raises(err):
            est.fit(x, y)
    with pytest.raises(ShapeError, match="same encoder"):
        StitchedClassifier(head="logreg").fit(x, y, anchor_embeddings=xt[:10, :4])
    with pytest.raises(RelrepsError, match="1 class"):
        StitchedClassifier(head="logreg").fit(x, np.zeros(len(x)))
    with pytest.raises(ShapeError):
        StitchedClassifier(head="logreg").fit(x, y[:-1])


def test_sklearn_tools_work(data):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y, _, _, _ = data
    est = StitchedClassifier(n_anchors=30, head="logreg", random_state=0)
    assert clone(est).get_params() == est.get_params()
    grid = GridSearchCV(est, {"n_anchors": [10, 40], "center": ["auto", "anchors", None],
                              "similarity": ["cosine", "euclidean"]}, cv=3).fit(x, y)
    assert grid.best_params_["n_anchors"] in (10, 40) and grid.best_score_ > 0.8
    assert cross_val_score(est, x, y, cv=3).mean() > 0.8
    pipe = make_pipeline(FunctionTransformer(), est).fit(x, y)
    assert pipe.score(x, y) > 0.8


def test_string_labels_torch_input_and_mlp_head(data):
    import torch

    x, y, xt, yt, q = data
    names = np.array(["cat", "dog", "eel"])
    m = StitchedClassifier(n_anchors=40, head="logreg", random_state=0).fit(x, names[y])
    assert set(m.predict(xt)) <= set(names) and list(m.classes_) == ["cat", "dog", "eel"]
    mt = StitchedClassifier(n_anchors=40, head="logreg", random_state=0).fit(
        torch.from_numpy(x), y)
    np.testing.assert_array_equal(mt.predict(torch.from_numpy(xt)), mt.predict(xt))
    mlp = StitchedClassifier(n_anchors=40, head="mlp", random_state=0).fit(x, y)
    assert mlp.C_ is None and mlp.score(xt, yt) > 0.7
    assert mlp.score(xt @ q, yt, anchor_embeddings=mlp.anchor_embeddings_ @ q) == \
        pytest.approx(mlp.score(xt, yt), abs=0.03)


# ----------------------------------------------------------------------------- texts

WORDS = ("goal match team score win player coach league | market stock price bank trade "
         "profit share economy | planet star space orbit telescope galaxy rocket moon").split("|")


class HashEncoder:
    """A toy text encoder: sum of fixed random word vectors (deterministic, offline)."""

    def __init__(self, dim=24, seed=0, transform=None):
        self.dim, self.seed, self.transform, self.name = dim, seed, transform, f"hash-{seed}"

    def _word(self, w):
        return np.random.default_rng(zlib.crc32(w.encode()) + self.seed).normal(size=self.dim)

    def encode(self, texts, batch_size=64):
        out = np.stack([sum(self._word(w) for w in t.split()) for t in texts])
        return out if self.transform is None else self.transform(out)


def _texts(rng, n):
    topics = [t.split() for t in WORDS]
    y = rng.integers(0, 3, size=n)
    texts = [" ".join(rng.choice(topics[c], size=4)) + " " + " ".join(
        rng.choice(sum(topics, []), size=2)) for c in y]
    return texts, y


def test_texts_fit_with_one_encoder_predict_with_another():
    rng = np.random.default_rng(0)
    texts, y = _texts(rng, 300)
    test_texts, yt = _texts(rng, 150)
    anchor_texts = list(dict.fromkeys(_texts(rng, 80)[0]))[:50]
    enc_a = HashEncoder()
    q = _orthogonal(rng, 24)
    enc_b = HashEncoder(transform=lambda e: 4.0 * e @ q)  # another "model": rotated, scaled
    m = StitchedClassifier(head="logreg").fit_texts(texts, y, encoder=enc_a,
                                                    anchor_texts=anchor_texts)
    assert m.anchor_texts_ == anchor_texts and m.anchor_ids_ == anchor_texts
    assert m.encoder_ is None  # an object, not a loadable name
    own = m.score(enc_a.encode(test_texts), yt)
    assert own > 0.9
    pred_b = m.predict_texts(test_texts, encoder=enc_b)
    np.testing.assert_array_equal(pred_b, m.predict_texts(test_texts, encoder=enc_a))
    assert m.score_texts(test_texts, yt, encoder=enc_b) == pytest.approx(own)
    # A plain callable texts -> embeddings works as an encoder too.
    assert m.score_texts(test_texts, yt, encoder=enc_b.encode) == pytest.approx(own)
    with pytest.raises(RelrepsError, match="encoder is required"):
        m.predict_texts(test_texts)
    with pytest.raises(InputTypeError, match="single string"):
        m.predict_texts("one text", encoder=enc_a)
    with pytest.raises(InputTypeError, match="not a string"):
        m.predict_texts(["ok", 3], encoder=enc_a)
    with pytest.raises(AnchorError, match="repeats"):
        StitchedClassifier().fit_texts(texts, y, encoder=enc_a, anchor_texts=["a", "a"])
    with pytest.raises(ShapeError, match="embeddings for"):
        StitchedClassifier().fit_texts(texts, y, encoder=lambda t: np.ones((1, 3)),
                                       anchor_texts=["a", "b"])
    plain = StitchedClassifier(n_anchors=10, head="logreg").fit(enc_a.encode(texts), y)
    with pytest.raises(AnchorError, match="not fitted with anchor texts"):
        plain.predict_texts(test_texts, encoder=enc_a)


def test_texts_with_named_encoders():
    """Two real offline encoders by name (skipped where their packages are missing)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("onnxruntime")
    from relreps.encoders import load_text_encoder
    from relreps.errors import DataNotFoundError, MissingDependencyError

    try:
        load_text_encoder("minilm-l6")
        load_text_encoder("minilm-l3")
    except (DataNotFoundError, MissingDependencyError) as e:
        pytest.skip(str(e))
    rng = np.random.default_rng(1)
    texts, y = _texts(rng, 60)
    anchor_texts = list(dict.fromkeys(_texts(rng, 40)[0]))[:30]
    m = StitchedClassifier(head="logreg").fit_texts(texts, y, encoder="minilm-l6",
                                                    anchor_texts=anchor_texts)
    assert m.encoder_ == "minilm-l6"
    assert m.score_texts(texts, y) > 0.9  # its own encoder by default
    assert m.score_texts(texts, y, encoder="minilm-l3") > 0.6
    # A local sentence-transformers folder, by its path: the same model as "minilm-l6".
    from relreps.encoders.text import minilm_l6_model_dir

    folder = minilm_l6_model_dir()
    np.testing.assert_array_equal(m.predict_texts(texts, encoder=folder), m.predict_texts(texts))


def test_whitened_cosine_stitches_across_a_linear_map():
    # Encoder B = encoder A through an invertible linear map that is far from orthogonal (the
    # case of two encoders trained apart). Cosine relative spaces then disagree; whitening each
    # space with its own anchors (whitened_cosine) stitches at the native accuracy.
    rng = np.random.default_rng(5)
    d = 16
    means = 1.5 * rng.normal(size=(3, d))
    y = rng.integers(0, 3, size=1400)
    x = means[y] + rng.normal(size=(1400, d))
    sv = np.geomspace(0.1, 10.0, d)
    lin = _orthogonal(rng, d) @ np.diag(sv) @ _orthogonal(rng, d)
    xb = x @ lin
    tr, te = slice(0, 1000), slice(1000, None)
    scores = {}
    for sim in ("whitened_cosine", "cosine"):
        m = StitchedClassifier(n_anchors=400, similarity=sim, center="anchors",
                               random_state=0).fit(x[tr], y[tr])
        native = m.score(x[te], y[te])
        stitched = m.score(xb[te], y[te], anchor_embeddings=xb[tr][m.anchor_index_])
        scores[sim] = (native, stitched)
    native, stitched = scores["whitened_cosine"]
    assert native > 0.85 and stitched >= native - 0.03, scores
    assert scores["cosine"][1] < stitched - 0.05, scores
