"""`relreps stitch fit|predict`: one encoder's classifier used on another encoder's embeddings.

The round-trip tests need ``relreps.StitchedClassifier`` and ``relreps.save/load``; they are
skipped only while those cannot be imported.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from relreps.cli import main


def _has_stitching() -> bool:
    try:
        from relreps.stitching import StitchedClassifier  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec("relreps.persistence") is not None


needs_stitching = pytest.mark.skipif(not _has_stitching(),
                                     reason="relreps.StitchedClassifier / relreps.persistence "
                                            "not importable in this installation")


@pytest.fixture()
def encoders(tmp_path, monkeypatch):
    """Two 'encoders' of the same items: B is a rotated, rescaled, shifted copy of A in another
    width. Items 0..239 are for fitting (with anchors), 240..359 are new items for B."""
    rng = np.random.default_rng(0)
    n, d = 360, 10
    y = np.arange(n) % 3
    a = rng.normal(size=(3, d))[y] * 3 + rng.normal(size=(n, d))
    q, _ = np.linalg.qr(rng.normal(size=(14, 14)))
    b = np.pad(a, ((0, 0), (0, 4))) @ q * 2.0
    monkeypatch.chdir(tmp_path)
    np.save("a_train.npy", a[:240].astype(np.float32))
    np.save("b_new.npy", b[240:].astype(np.float32))
    anchors = np.arange(0, 240, 8)
    np.savetxt("anchors.txt", anchors, fmt="%d")
    np.save("b_anchors.npy", b[anchors].astype(np.float32))
    np.savetxt("y_train.txt", y[:240], fmt="%d")
    np.savetxt("y_new.txt", y[240:], fmt="%d")
    np.savetxt("y_words.txt", np.where(y[240:] == 0, "a", "b"), fmt="%s")
    return tmp_path


def _err(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("relreps: error: "), lines
    return lines[0]


@needs_stitching
def test_fit_then_predict_on_another_encoder(encoders, capsys):
    assert main(["stitch", "fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index",
                 "anchors.txt", "--out", "model.safetensors"]) == 0
    assert "Wrote model.safetensors" in capsys.readouterr().out
    assert main(["stitch", "predict", "model.safetensors", "b_new.npy", "--anchor-embeddings",
                 "b_anchors.npy", "--labels", "y_new.txt", "--out", "pred.npy"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("accuracy: ")[1].split()[0])
    assert acc > 0.9
    pred = np.load("pred.npy")
    assert pred.shape == (120,) and np.mean(pred == np.loadtxt("y_new.txt")) == pytest.approx(acc)
    # predictions printed one per line without --out and --labels
    assert main(["stitch", "predict", "model.safetensors", "b_new.npy", "--anchor-embeddings",
                 "b_anchors.npy"]) == 0
    assert len(capsys.readouterr().out.split()) == 120
    assert main(["stitch", "predict", "model.safetensors", "b_new.npy", "--anchor-embeddings",
                 "b_anchors.npy", "--out", "pred.txt"]) == 0
    assert len(open("pred.txt").read().split()) == 120


@needs_stitching
def test_stitch_errors_with_a_model(encoders, capsys):
    assert main(["stitch", "fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index",
                 "anchors.txt", "--out", "m"]) == 0  # the suffix is added
    capsys.readouterr()
    cases = [
        (["predict", "m.safetensors", "b_new.npy", "--anchor-embeddings", "b_anchors.npy",
          "--labels", "y_words.txt"], "labels of type"),
        (["predict", "m.safetensors", "b_new.npy", "--anchor-embeddings", "a_train.npy"],
         "anchor"),
        (["predict", "m.safetensors", "b_new.npy", "--anchor-embeddings", "b_anchors.npy",
          "--labels", "y_train.txt"], "labels for 120"),
        (["predict", "a_train.npy", "b_new.npy", "--anchor-embeddings", "b_anchors.npy"], ""),
        (["predict", "m.safetensors", "b_new.npy", "--anchor-embeddings", "b_anchors.npy",
          "--out", "pred.csv"], ".npy or .txt"),
    ]
    for args, expected in cases:
        assert main(["stitch", *args]) == 2, args
        assert expected in _err(capsys), args


def test_stitch_errors_before_any_fitting(encoders, capsys):
    open("taken.safetensors", "w").write("x")
    cases = [
        (["fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index", "anchors.txt",
          "--out", "taken.safetensors"], "exists; pass --force"),
        (["fit", "a_train.npy", "--labels", "y_new.txt", "--anchor-index", "anchors.txt",
          "--out", "x.safetensors"], "120 labels for 240"),
        (["fit", "missing.npy", "--labels", "y_train.txt", "--anchor-index", "anchors.txt",
          "--out", "x.safetensors"], "file not found"),
        (["fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index", "y_words.txt",
          "--out", "x.safetensors"], "not an integer"),
        (["fit", "a_train.npy", "--labels", "y_train.txt", "--out", "x.safetensors"],
         "--anchor-index"),
        (["predict", "missing.safetensors", "b_new.npy", "--anchor-embeddings",
          "b_anchors.npy"], "model file not found"),
        (["predict", "m.safetensors", "b_new.npy"], "one of the arguments"),
    ]
    for args, expected in cases:
        assert main(["stitch", *args]) == 2, args
        assert expected in _err(capsys), args


class _FakeStitched:
    """The StitchedClassifier interface the CLI relies on (fit with an anchor index, predict
    with another encoder's anchor embeddings), so the CLI's wiring is tested before the real
    class is available."""

    def __init__(self, head="logreg-cv", similarity="cosine", center="auto", anchor_index=None,
                 random_state=None):
        self.head, self.similarity, self.center = head, similarity, center
        self.anchor_index, self.random_state = anchor_index, random_state

    def _rel(self, x, anchors):
        from relreps.projection import relative_projection

        return relative_projection(np.asarray(x, float), np.asarray(anchors, float),
                                   center="anchors")

    def fit(self, x, y):
        from sklearn.linear_model import LogisticRegression

        self.anchor_embeddings_ = np.asarray(x)[self.anchor_index]
        self.clf_ = LogisticRegression(max_iter=1000).fit(self._rel(x, self.anchor_embeddings_),
                                                          y)
        self.classes_ = self.clf_.classes_
        return self

    def predict(self, x, anchor_embeddings=None):
        calls.append(len(x))
        return self.clf_.predict(self._rel(x, anchor_embeddings))


calls: list[int] = []
_saved: dict[str, _FakeStitched] = {}


class _FakePersistence:
    @staticmethod
    def save(obj, path):
        open(path, "w").write("model")
        _saved["model"] = obj

    @staticmethod
    def load(path):
        return _saved["model"]


def test_cli_wiring_with_a_stand_in_classifier(encoders, capsys, monkeypatch):
    from relreps.workflow import stitch

    monkeypatch.setattr(stitch, "_classifier_class", lambda: _FakeStitched)
    monkeypatch.setattr(stitch, "_persistence", lambda: _FakePersistence)
    monkeypatch.setattr(stitch, "PREDICT_ROWS", 50)
    assert main(["stitch", "fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index",
                 "anchors.txt", "--out", "model"]) == 0
    assert "Wrote model.safetensors" in capsys.readouterr().out
    assert _saved["model"].anchor_index.tolist() == list(range(0, 240, 8))
    assert main(["stitch", "fit", "a_train.npy", "--labels", "y_train.txt", "--anchor-index",
                 "anchors.txt", "--out", "model.safetensors"]) == 2
    assert "--force" in _err(capsys)
    calls.clear()
    assert main(["stitch", "predict", "model.safetensors", "b_new.npy", "--anchor-embeddings",
                 "b_anchors.npy", "--labels", "y_new.txt", "--out", "p.txt"]) == 0
    assert calls == [50, 50, 20]  # classified in blocks of rows
    acc = float(capsys.readouterr().out.split("accuracy: ")[1].split()[0])
    assert acc > 0.9
    assert np.loadtxt("p.txt").shape == (120,)
    # anchors given as rows of SPACE2, in the model's order
    b_all = np.concatenate([np.load("b_anchors.npy"), np.load("b_new.npy")])
    np.save("b_all.npy", b_all)
    np.savetxt("idx.txt", np.arange(30), fmt="%d")
    assert main(["stitch", "predict", "model.safetensors", "b_all.npy", "--anchor-index",
                 "idx.txt", "--out", "p2.npy"]) == 0
    np.testing.assert_array_equal(np.load("p2.npy")[30:], np.loadtxt("p.txt"))
    assert main(["stitch", "predict", "model.safetensors", "b_new.npy", "--anchor-embeddings",
                 "b_anchors.npy", "--labels", "y_words.txt"]) == 2
    assert "labels of type" in _err(capsys)
