"""The validation-only protocol (docs/protocol.md): no hyper-parameter is chosen with test rows.

Spies on the estimator that chooses the head's regularisation (`CVLogisticRegression.fit`) and on
the encoder training of the compare experiment, with synthetic data so the tests need no
encoders: every choice must see the training rows (and their labels) only.
"""

from __future__ import annotations

import numpy as np
import pytest

import relreps.stitching as st
from relreps.stitching import CVLogisticRegression

#: A short C grid for the spies (the full grid makes no difference to what is checked).
GRID = (1e-3, 1e-1, 10.0)


@pytest.fixture
def cv_spy(monkeypatch):
    """Record (X, y) of every CVLogisticRegression fit (the fit that chooses C)."""
    monkeypatch.setattr(st, "DEFAULT_CS", GRID)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = CVLogisticRegression.fit

    def fit(self, X, y):
        seen.append((np.asarray(X).copy(), np.asarray(y).copy()))
        return real(self, X, y)

    monkeypatch.setattr(CVLogisticRegression, "fit", fit)
    return seen


def _blobs(rng, y, dim, shift=0.0):
    centres = np.random.default_rng(99).normal(size=(int(y.max()) + 1, dim)) * 3
    return centres[y] + rng.normal(size=(len(y), dim)) + shift


class _Split:
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)


class _FakeData:
    """What `text.cross_architecture` / `text.cross_lingual` read from the real `_Data`, built
    from class blobs. Train and test rows have the SAME count but different label orders, so a
    head fitted (or a C chosen) on test rows would be caught by its labels."""

    def __init__(self, encoders, n=60, classes=3, seed=0):
        rng = np.random.default_rng(seed)
        self.y = {}
        self.splits = {}
        for ds in ("ag_news", "trec"):
            ytr = np.repeat(np.arange(classes), n // classes)
            yte = rng.permutation(ytr)
            assert not np.array_equal(ytr, yte)
            self.splits[ds] = (_Split(ytr), _Split(yte))
        self.emb = {(ds, enc): (_blobs(rng, tr.labels, 16), _blobs(rng, te.labels, 16))
                    for ds, (tr, te) in self.splits.items() for enc in encoders}
        tr, te = self.splits["trec"]
        self._hi = (_blobs(rng, tr.labels, 16), _blobs(rng, te.labels, 16))
        self.pool = {ds: np.arange(0, n, 2) for ds in self.splits}
        self.pt_test = np.arange(0, n, 3)
        ag_tr, ag_te = self.splits["ag_news"]
        self._pt = {"ag_test": _blobs(rng, ag_te.labels[self.pt_test], 16),
                    "ag_pool": _blobs(rng, ag_tr.labels[self.pool["ag_news"]], 16),
                    "trec_pool": _blobs(rng, tr.labels[self.pool["trec"]], 16)}

    def english(self, ds, enc):
        return self.emb[(ds, enc)]

    def hindi(self):
        return self._hi

    def portuguese(self):
        return self._pt


def _assert_only_train(seen, train_labels):
    assert seen, "no head chose its C: the spy saw nothing"
    for X, y in seen:
        assert any(np.array_equal(y, t) for t in train_labels), \
            "a head's C was chosen with labels that are not the training labels"
        assert len(X) == len(y)


def test_text_heads_choose_C_on_training_rows_only(cv_spy):
    from relreps.experiments import text

    encoders = ["minilm-l6", text.XL_ENCODER]
    data = _FakeData(encoders)
    cfg = dict(text.SIZES["smoke"], encoders=encoders, n_anchors=10, xl_anchors=10)
    assert cfg["head"] == "logreg-cv"  # the default is the validated head
    part1 = text.cross_architecture(data, cfg, [0], lambda m: None)
    n1 = len(cv_spy)
    rows, decisions = text.cross_lingual(data, cfg, [0], lambda m: None)
    assert len(cv_spy) > n1
    train_labels = [tr.labels for tr, _ in data.splits.values()]
    _assert_only_train(cv_spy, train_labels)
    # the absolute heads saw exactly the standardised training embeddings
    std = [(e - e.mean(0)) / e.std(0) for (e, _) in [*data.emb.values(), data.hindi()]]
    absolute = [X for X, _ in cv_spy if X.shape[1] == 16]
    assert absolute and all(any(np.allclose(X, s) for s in std) for X in absolute)
    # the chosen C of every head is recorded, from the grid
    for res in part1.values():
        assert all(r["C"] in GRID for r in res.rows)
    assert rows and all(r["C"] in GRID for r in rows)
    # center='auto' ran in part 2 and its decisions are recorded per anchor draw
    assert {r["variant"] for r in rows} >= {text.AUTO}
    assert decisions and all(d["decisions"] and d["decisions"][0]["center"] in (None, "anchors")
                             and d["decisions"][0]["reason"].startswith("auto")
                             for d in decisions)


def test_text_head_option_is_validated():
    from relreps.errors import OptionError
    from relreps.experiments import text
    from relreps.experiments.base import RunContext

    ctx = RunContext("smoke", 0, __import__("pathlib").Path("."), {"head": "logreg-c0.01"})
    assert text._config(ctx)["head"] == "logreg-c0.01"  # a fixed C is still allowed
    with pytest.raises(OptionError):
        text._config(RunContext("smoke", 0, ctx.out, {"head": "logreg-cx"}))


def test_compare_heads_choose_C_on_training_rows_only(cv_spy):
    from relreps.experiments import compare

    rng = np.random.default_rng(1)
    ytr = np.repeat(np.arange(3), 20)
    yte = rng.permutation(ytr)
    spaces = {f"s{i}": (_blobs(rng, ytr, 8 + 4 * i), _blobs(rng, yte, 8 + 4 * i))
              for i in range(2)}
    methods = compare.default_methods(10, 30, 5)
    rows = compare.evaluate_methods("synthetic", spaces, ytr, yte, methods, n_anchors=10,
                                    seeds=[0], head=compare._head())
    _assert_only_train(cv_spy, [ytr])
    assert all(r["C"] in GRID for r in rows)
    table, chosen = compare.head_choices(rows)
    assert "C per seed" in table and set(chosen) == {m.name for m in methods}
    assert compare._head("0.5") == "logreg-c0.5"  # --opt <benchmark>_C still fixes C


def test_compare_digits_encoders_stop_early_on_training_rows(monkeypatch):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from relreps.experiments import compare, demo

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_te, _, _ = train_test_split(x, d.target, test_size=0.25, random_state=0,
                                        stratify=d.target)
    train_rows = {r.tobytes() for r in x_tr}
    calls = []
    real = demo.train_encoder

    def spy(x, y, **kw):
        calls.append((x, kw.get("validation")))
        return real(x, y, **kw)

    monkeypatch.setattr(demo, "train_encoder", spy)
    monkeypatch.setitem(compare._DIGITS_MAX_EPOCHS, "smoke", 12)
    data = compare.digits_data("smoke")
    assert len(calls) == len(compare._DIGITS_ENCODERS)
    for xf, val in calls:
        assert val is not None, "the digits encoders must stop early on a validation split"
        xv = val[0]
        assert len(xf) + len(xv) == len(x_tr)
        assert all(r.tobytes() in train_rows for r in np.concatenate([xf, xv]))
        assert not {r.tobytes() for r in xf} & {r.tobytes() for r in xv}
    for rec in data["training"].values():
        assert 1 <= rec["best_epoch"] <= rec["epochs_run"] <= 12
        assert len(rec["curve"]) == rec["epochs_run"]
        assert all(np.isfinite(c["val_loss"]) for c in rec["curve"])


def test_train_encoder_restores_the_best_validation_epoch():
    from relreps.experiments.demo import train_encoder

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 40)
    x = _blobs(rng, y, 6).astype(np.float32)
    # validation labels are the reverse of the truth: validation loss is best at epoch 1, so
    # training must stop after `patience` more epochs and keep epoch 1's weights
    record: dict = {}
    train_encoder(x, y, seed=0, epochs=50, validation=(x, 1 - y), patience=3, record=record)
    assert record["best_epoch"] == 1 and record["epochs_run"] == 4
    losses = [c["val_loss"] for c in record["curve"]]
    assert losses[0] == min(losses)
