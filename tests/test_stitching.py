"""stitching_matrix and the heads, on a synthetic problem where space B is space A rotated and
rescaled (relative spaces identical: stitching is lossless) and C is A cut to 6 dimensions."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from relreps.anchors import AnchorSet
from relreps.errors import (
    AnchorError,
    InputTypeError,
    OptionError,
    RelrepsError,
    ShapeError,
)
from relreps.stitching import (
    DEFAULT_CS,
    CVLogisticRegression,
    StitchingResult,
    head_is_deterministic,
    make_head,
    score,
    stitching_matrix,
)

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES = 4


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def problem():
    """Space A: 4 Gaussian classes in 12-d; B = A rotated and scaled by 3."""
    rng = np.random.default_rng(0)
    d = 12
    means = rng.normal(size=(N_CLASSES, d)) * 0.8

    def sample(n):
        y = rng.integers(0, N_CLASSES, size=n)
        return means[y] + rng.normal(size=(n, d)), y

    a_tr, y_tr = sample(240)
    a_te, y_te = sample(160)
    q = _orthogonal(rng, d)
    spaces = {"A": (a_tr, a_te), "B": (3.0 * a_tr @ q, 3.0 * a_te @ q)}
    return spaces, y_tr, y_te, rng


def _small_logreg(seed):
    return LogisticRegression(max_iter=500, random_state=seed)


def test_relative_stitching_keeps_accuracy_and_absolute_collapses(problem):
    spaces, y_tr, y_te, _ = problem
    anchors = np.arange(0, 240, 8)  # 30 anchors, the same samples in both spaces
    rel = stitching_matrix(spaces, y_tr, y_te, anchors=anchors, space="relative", seeds=(0, 1))
    ab = stitching_matrix(spaces, y_tr, y_te, space="absolute", seeds=(0, 1))
    for res in (rel, ab):
        assert isinstance(res, StitchingResult)
        # The default head is deterministic and the features are fixed: one fit per space.
        assert len(res.rows) == 2 * 2 and res.n_replicates == 1
        assert {(r["fit_space"], r["eval_space"]) for r in res.rows} == \
            {("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")}
        for r in res.rows:
            assert r["stitched"] == (r["fit_space"] != r["eval_space"])
            assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["f1_weighted"] <= 1.0
            assert r["C"] in DEFAULT_CS
    rel_sum, ab_sum = rel.summary(), ab.summary()
    assert rel_sum["non_stitched_mean"] > 0.8 and ab_sum["non_stitched_mean"] > 0.8
    # Cosine is rotation and scale invariant: the stitched head is as good as the native one.
    assert rel_sum["stitched_mean"] == pytest.approx(rel_sum["non_stitched_mean"], abs=0.02)
    assert rel_sum["ratio"] > 0.97
    # Absolute heads read a rotated, rescaled space: they collapse towards chance.
    assert ab_sum["stitched_mean"] < ab_sum["non_stitched_mean"] - 0.3
    assert ab_sum["stitched_mean"] < rel_sum["stitched_mean"] - 0.3


def test_matrix_summary_markdown_same_unit(problem):
    spaces, y_tr, y_te, _ = problem
    res = stitching_matrix(spaces, y_tr, y_te, anchors=np.arange(20), head=_small_logreg,
                           seeds=(0, 1, 2), metrics=("accuracy", "f1_macro"),
                           show_progress=False)
    names, mean, std = res.matrix("accuracy")
    assert names == ["A", "B"] and mean.shape == std.shape == (2, 2)
    for i, fs in enumerate(names):
        for j, es in enumerate(names):
            vals = [r["accuracy"] for r in res.rows
                    if r["fit_space"] == fs and r["eval_space"] == es]
            assert len(vals) == 3  # a callable head is refitted per seed
            assert mean[i, j] == pytest.approx(np.mean(vals))
            assert std[i, j] == pytest.approx(np.std(vals))
    np.testing.assert_array_equal(res.matrix()[1], mean)  # default metric: the first
    _, f1, _ = res.matrix("f1_macro")
    assert not np.array_equal(f1, mean) and np.all((f1 >= 0) & (f1 <= 1))
    summ = res.summary("accuracy")
    stitched = [r["accuracy"] for r in res.rows if r["stitched"]]
    native = [r["accuracy"] for r in res.rows if not r["stitched"]]
    assert summ["stitched_mean"] == pytest.approx(np.mean(stitched))
    assert summ["non_stitched_mean"] == pytest.approx(np.mean(native))
    assert summ["ratio"] == pytest.approx(summ["stitched_mean"] / summ["non_stitched_mean"])
    assert summ["n_replicates"] == 3
    assert all(isinstance(v, (int, float)) for v in summ.values())  # callers round them
    # to_markdown speaks the unit of summary() (fractions) and says so in its corner.
    lines = res.to_markdown("accuracy").splitlines()
    assert len(lines) == 4 and "accuracy, fraction" in lines[0]
    assert "**A**" in lines[2] and "**B**" in lines[3]
    assert f"{mean[0, 1]:.3f} ± {std[0, 1]:.3f}" in lines[2]
    pct = res.to_markdown("accuracy", percent=True).splitlines()
    assert "accuracy, %" in pct[0] and f"{100 * mean[0, 1]:.1f} ± {100 * std[0, 1]:.1f}" in pct[2]
    with pytest.raises(OptionError, match="was not computed"):
        res.matrix("f1_weighted")


def test_deterministic_heads_fit_once(problem, monkeypatch):
    import relreps.stitching as st

    spaces, y_tr, y_te, _ = problem
    fits = []
    real = st.make_head

    def counting(head, seed):
        fits.append((head, seed))
        return real(head, seed)

    monkeypatch.setattr(st, "make_head", counting)
    res = stitching_matrix(spaces, y_tr, y_te, anchors=np.arange(30), head="logreg",
                           seeds=(4, 5, 6), show_progress=False)
    assert len(fits) == 2  # one per fit space, not one per seed
    assert {r["seed"] for r in res.rows} == {4}
    assert "fitted once" in res.info["fitted_once"] and res.info["fitted_seeds"] == [4]
    summ = res.summary()
    assert summ["n_replicates"] == 1 and np.isnan(summ["stitched_std"])
    md = res.to_markdown()
    assert "±" not in md and "one replicate" in md
    # With anchors drawn per seed the seeds are real replicates: every seed is fitted.
    fits.clear()
    res = stitching_matrix(spaces, y_tr, y_te, n_anchors=25, head="logreg", seeds=(4, 5, 6),
                           show_progress=False)
    assert len(fits) == 6 and res.n_replicates == 3 and "fitted_once" not in res.info
    assert head_is_deterministic("logreg-cv") and head_is_deterministic("logreg-c0.1")
    assert not head_is_deterministic("mlp") and not head_is_deterministic(_small_logreg)


def test_parallel_head_fits_give_the_same_result(problem, monkeypatch):
    import relreps.stitching as st

    spaces, y_tr, y_te, _ = problem
    fits = []
    real = st._fit_head

    def counting(head, seed, X, y):
        fits.append(seed)  # appends in the process that fits
        return real(head, seed, X, y)

    monkeypatch.setattr(st, "_fit_head", counting)
    kw = dict(n_anchors=25, anchor_sampler="stratified", head="logreg-cv", seeds=(0, 1),
              show_progress=False)
    serial = stitching_matrix(spaces, y_tr, y_te, **kw)
    assert len(fits) == 4
    fits.clear()
    parallel = stitching_matrix(spaces, y_tr, y_te, n_jobs=2, **kw)
    assert fits == []  # fitted in the worker processes
    assert parallel.rows == serial.rows and parallel.info == serial.info
    for bad in (0, -2, "two", 1.5):
        with pytest.raises(RelrepsError):
            stitching_matrix(spaces, y_tr, y_te, n_jobs=bad, **kw)


def test_absolute_cells_across_widths_are_reported_not_silent(problem, tmp_path):
    spaces, y_tr, y_te, _ = problem
    three = dict(spaces)
    three["C"] = (spaces["A"][0][:, :6], spaces["A"][1][:, :6])
    res = stitching_matrix(three, y_tr, y_te, space="absolute", head="logreg", seeds=(0,),
                           show_progress=False)
    pairs = {(r["fit_space"], r["eval_space"]) for r in res.rows}
    assert ("A", "C") not in pairs and ("C", "A") not in pairs and ("C", "B") not in pairs
    assert {("A", "B"), ("B", "A"), ("C", "C")} <= pairs
    skipped = {(s["fit_space"], s["eval_space"]): s["reason"] for s in res.skipped}
    assert set(skipped) == {("A", "C"), ("B", "C"), ("C", "A"), ("C", "B")}
    assert "12-d" in skipped[("A", "C")] and "6-d" in skipped[("A", "C")]
    names, mean, _ = res.matrix()
    assert np.isnan(mean[names.index("A"), names.index("C")])
    md = res.to_markdown()
    row_a = next(line for line in md.splitlines() if "**A**" in line)
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    assert cells[1 + names.index("C")] == "n/a" and cells[1 + names.index("B")] != "n/a"
    assert "n/a: an absolute head fitted on a 12-d space cannot read a 6-d space" in md
    ax = res.heatmap(tmp_path / "abs.png")
    assert "n/a" in [t.get_text() for t in ax.texts]
    # Relative spaces of different latent widths stitch fine: same number of anchors.
    rel = stitching_matrix(three, y_tr, y_te, anchors=np.arange(24), head="logreg",
                           seeds=(0,), show_progress=False)
    assert ("A", "C") in {(r["fit_space"], r["eval_space"]) for r in rel.rows}
    assert rel.skipped == []


def test_heatmap_never_switches_backend_and_draws_into_callers_ax(problem, tmp_path,
                                                                   monkeypatch):
    from matplotlib.figure import Figure

    spaces, y_tr, y_te, _ = problem
    res = stitching_matrix(spaces, y_tr, y_te, anchors=np.arange(20), head="logreg",
                           seeds=(0,), show_progress=False)
    backend = matplotlib.get_backend()

    def forbidden(*a, **k):
        raise AssertionError("heatmap must not call matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", forbidden)
    ax = res.heatmap(tmp_path / "stitch.png", "accuracy")
    assert (tmp_path / "stitch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(ax.images) == 1 and len(ax.texts) == 4
    fig = Figure()
    mine = fig.add_subplot(1, 2, 2)
    out = res.heatmap(ax=mine, title="mine")
    assert out is mine and mine.get_title() == "mine" and len(mine.images) == 1
    assert matplotlib.get_backend() == backend
    res.heatmap(tmp_path / "into_ax.png", ax=mine)
    assert (tmp_path / "into_ax.png").exists()
    with pytest.raises(RelrepsError, match="path"):
        res.heatmap()


def test_anchors_resampled_per_seed_by_parameter_or_callable(problem):
    spaces, y_tr, y_te, _ = problem
    calls = []

    def anchors_for(seed):
        calls.append(seed)
        return np.random.default_rng(seed).choice(240, size=25, replace=False)

    res = stitching_matrix(spaces, y_tr, y_te, anchors=anchors_for, head="logreg",
                           seeds=(3, 4, 5), show_progress=False)
    assert calls == [3, 4, 5]
    assert sorted({r["seed"] for r in res.rows}) == [3, 4, 5]
    # Fixed anchors are projected once and reused: seed 3 alone gives the same numbers.
    fixed = stitching_matrix(spaces, y_tr, y_te, anchors=anchors_for(3), head="logreg",
                             seeds=(3,), show_progress=False)
    assert [r["accuracy"] for r in res.rows if r["seed"] == 3] == \
        [r["accuracy"] for r in fixed.rows]
    # The documented parameter: n anchors drawn per seed by a named sampler.
    strat = stitching_matrix(spaces, y_tr, y_te, n_anchors=8, anchor_sampler="stratified",
                             head="logreg", seeds=(0, 1), show_progress=False)
    assert strat.info["anchor_sampler"] == "stratified" and strat.info["n_anchors"] == 8
    assert len(strat.info["center_decisions"]) == 2  # one decision per anchor draw
    a = stitching_matrix(spaces, y_tr, y_te, n_anchors=20, head="logreg", seeds=(0, 1),
                         show_progress=False)
    per_seed = {s: [r["accuracy"] for r in a.rows if r["seed"] == s] for s in (0, 1)}
    assert per_seed[0] != per_seed[1]  # different anchors, different results
    with pytest.raises(OptionError, match="not both"):
        stitching_matrix(spaces, y_tr, y_te, anchors=np.arange(5), n_anchors=5)
    with pytest.raises(RelrepsError, match="anchor_sampler"):
        stitching_matrix(spaces, y_tr, y_te, n_anchors=5, anchor_sampler="best")
    with pytest.raises(RelrepsError, match="n_anchors must be <= 240"):
        stitching_matrix(spaces, y_tr, y_te, n_anchors=241)


def test_parallel_anchor_mapping_and_anchorset(problem):
    spaces, y_tr, y_te, rng = problem
    idx = rng.choice(240, size=30, replace=False)
    mapping = {s: tr[idx] for s, (tr, _) in spaces.items()}
    kw = {"head": "logreg", "seeds": (0,), "show_progress": False}
    by_map = stitching_matrix(spaces, y_tr, y_te, anchors=mapping, **kw)
    by_idx = stitching_matrix(spaces, y_tr, y_te, anchors=idx, **kw)
    by_set = stitching_matrix(spaces, y_tr, y_te, anchors=AnchorSet({"A": idx, "B": idx}), **kw)
    by_one = stitching_matrix(spaces, y_tr, y_te, anchors=AnchorSet.from_indices(idx), **kw)
    acc = [r["accuracy"] for r in by_map.rows]
    for other in (by_idx, by_set, by_one):
        assert [r["accuracy"] for r in other.rows] == acc
    with pytest.raises(AnchorError, match="no anchors for space"):
        stitching_matrix(spaces, y_tr, y_te, anchors=AnchorSet({"A": idx, "Z": idx}), **kw)


def test_eval_only_spaces_need_no_train_rows(problem):
    spaces, y_tr, y_te, rng = problem
    idx = rng.choice(240, size=30, replace=False)
    q = _orthogonal(rng, 12)
    with_p = dict(spaces)
    with_p["P"] = (None, spaces["A"][1] @ q)  # only evaluated: a test set and its anchors
    anchors = {"A": spaces["A"][0][idx], "B": spaces["B"][0][idx], "P": spaces["A"][0][idx] @ q}
    res = stitching_matrix(with_p, y_tr, y_te, anchors=anchors, head="logreg", seeds=(0,),
                           show_progress=False)
    assert {r["fit_space"] for r in res.rows} == {"A", "B"}
    assert {r["eval_space"] for r in res.rows} == {"A", "B", "P"}
    assert res.info["eval_only"] == ["P"]
    names, mean, _ = res.matrix()
    assert np.isnan(mean[names.index("P")]).all()
    a_to_p = next(r["accuracy"] for r in res.rows if r["fit_space"] == "A"
                  and r["eval_space"] == "P")
    a_to_a = next(r["accuracy"] for r in res.rows if r["fit_space"] == "A"
                  and r["eval_space"] == "A")
    assert a_to_p == pytest.approx(a_to_a, abs=0.02)
    with pytest.raises(AnchorError, match="no train rows"):
        stitching_matrix(with_p, y_tr, y_te, anchors=idx)
    with pytest.raises(RelrepsError, match="no train rows to fit"):
        stitching_matrix(with_p, y_tr, y_te, anchors=anchors, fit_spaces=["P"])
    with pytest.raises(RelrepsError, match="no space has train rows"):
        stitching_matrix({"P": (None, spaces["A"][1])}, y_tr, y_te, anchors=anchors)


def test_auto_centring_rescues_an_anisotropic_space(problem):
    spaces, y_tr, y_te, rng = problem
    offset = 25.0 * rng.normal(size=12)  # a large common direction: anisotropic space
    aniso = {"A": spaces["A"], "E": (spaces["B"][0] + offset, spaces["B"][1] + offset)}
    kw = {"anchors": np.arange(0, 240, 6), "head": "logreg", "seeds": (0,),
          "show_progress": False}
    auto = stitching_matrix(aniso, y_tr, y_te, center="auto", **kw)
    plain = stitching_matrix(aniso, y_tr, y_te, center=None, **kw)
    decision = auto.info["center_decisions"][0]
    assert decision["center"] == "anchors" and decision["anisotropy"]["E"] > 0.5
    assert plain.info["center_decisions"][0]["center"] is None
    assert auto.summary()["ratio"] > 0.95
    assert plain.summary()["stitched_mean"] < auto.summary()["stitched_mean"] - 0.2


def test_progress_bar_and_its_switches(problem, capsys, monkeypatch):
    spaces, y_tr, y_te, _ = problem
    kw = {"anchors": np.arange(20), "head": "logreg", "seeds": (0,)}
    monkeypatch.delenv("RELREPS_QUIET", raising=False)
    stitching_matrix(spaces, y_tr, y_te, **kw)
    assert "stitching: fitting 2 head(s)" in capsys.readouterr().err
    stitching_matrix(spaces, y_tr, y_te, show_progress=False, **kw)
    assert "stitching" not in capsys.readouterr().err
    monkeypatch.setenv("RELREPS_QUIET", "1")
    stitching_matrix(spaces, y_tr, y_te, **kw)
    assert "stitching" not in capsys.readouterr().err


def test_stitching_errors(problem):
    spaces, y_tr, y_te, _ = problem
    a10 = {"A": spaces["A"][0][:10], "B": spaces["B"][0][:9]}
    cases = [
        (dict(), AnchorError, "needs anchors"),
        (dict(anchors=a10), AnchorError, "do not correspond across spaces"),
        (dict(anchors={"A": spaces["A"][0][:10]}), AnchorError, r"space\(s\) \['B'\]"),
        (dict(anchors={"A": spaces["A"][0][:10], "B": spaces["A"][0][:10, :5]}), ShapeError,
         "features"),
        (dict(anchors=np.array([0, 1, 999])), AnchorError, "out of range"),
        (dict(anchors=np.array([0, 1, 1])), AnchorError, "repeats"),
        (dict(anchors=np.array([0, -1])), AnchorError, "anchor index -1 out of range"),
        (dict(anchors=np.array([0.5, 1.5])), AnchorError, "index array"),
        (dict(anchors=np.array([True, False])), AnchorError, "boolean mask"),
        (dict(anchors=np.arange(3), space="latent"), RelrepsError, "space must be"),
        (dict(anchors=np.arange(3), metrics=()), RelrepsError, "metrics is empty"),
        (dict(anchors=np.arange(3), metrics=("auc",)), RelrepsError, "metrics must be one of"),
        (dict(anchors=np.arange(3), metrics=3), InputTypeError, "metrics"),
        (dict(anchors=np.arange(3), seeds=()), RelrepsError, "seeds is empty"),
        (dict(anchors=np.arange(3), seeds=(0, 0)), RelrepsError, "repeats"),
        (dict(anchors=np.arange(3), seeds=(-1,)), RelrepsError, ">= 0"),
        (dict(anchors=np.arange(3), seeds=(True,)), InputTypeError, "integer"),
        (dict(anchors=np.arange(3), seeds=(1.5,)), InputTypeError, "integer"),
        (dict(anchors=np.arange(3), head="svm"), OptionError, "head must be"),
        (dict(anchors=np.arange(3), head=3), InputTypeError, "head must be"),
        (dict(anchors=np.arange(3), similarity="nope"), RelrepsError, "unknown similarity"),
        (dict(anchors=np.arange(3), center="mean"), RelrepsError, "center must be"),
        (dict(anchors=np.arange(3), center=np.zeros(12)), InputTypeError, "center must be"),
        (dict(anchors=np.arange(3), fit_spaces=["Z"]), RelrepsError, "fit_spaces must be one"),
        (dict(n_anchors=3, anchor_space="Z"), RelrepsError, "anchor_space"),
        (dict(anchors=np.arange(3), fit_spaces=[]), RelrepsError, "fit_spaces is empty"),
        (dict(anchors=np.arange(3), fit_spaces=3), InputTypeError, "fit_spaces"),
    ]
    for kwargs, err, match in cases:
        with pytest.raises(err, match=match):
            stitching_matrix(spaces, y_tr, y_te, **kwargs)
    with pytest.raises(RelrepsError, match="no spaces"):
        stitching_matrix({}, y_tr, y_te, anchors=np.arange(3))
    with pytest.raises(InputTypeError, match="mapping"):
        stitching_matrix([spaces["A"]], y_tr, y_te, anchors=np.arange(3))
    with pytest.raises(InputTypeError, match="pair"):
        stitching_matrix({"A": spaces["A"][0]}, y_tr, y_te, anchors=np.arange(3))
    with pytest.raises(ShapeError, match="train rows for 239 labels"):
        stitching_matrix(spaces, y_tr[:-1], y_te, anchors=np.arange(3))
    with pytest.raises(ShapeError, match="test rows for 159 labels"):
        stitching_matrix(spaces, y_tr, y_te[:-1], anchors=np.arange(3))
    with pytest.raises(RelrepsError, match="no labels for space"):
        stitching_matrix(spaces, y_tr, {"A": y_te}, anchors=np.arange(3))
    nan_space = {"A": (spaces["A"][0].copy(), spaces["A"][1])}
    nan_space["A"][0][5, 2] = np.nan
    with pytest.raises(RelrepsError, match="NaN"):
        stitching_matrix(nan_space, y_tr, y_te, anchors=np.arange(3))


def test_heads_and_scores():
    from sklearn.pipeline import Pipeline

    assert make_head("logreg", 3).steps[-1][1].random_state == 3
    assert make_head("logreg").steps[-1][1].C == 1.0
    assert make_head("logreg-c0.01").steps[-1][1].C == 0.01
    assert make_head("logreg-c1e-3").steps[-1][1].C == 0.001
    cv = make_head()  # the default
    assert isinstance(cv, Pipeline) and isinstance(cv.steps[-1][1], CVLogisticRegression)
    assert make_head("mlp", 4).random_state == 4
    assert make_head(_small_logreg, 5).random_state == 5
    for bad in ("logreg-c", "logreg-c0", "logreg-c-1", "logreg-cnan", "logreg-cinf",
                "logreg-cabc", "LOGREG", ""):
        with pytest.raises(OptionError, match="head"):
            make_head(bad)
    with pytest.raises(InputTypeError, match="no fit/predict"):
        make_head(lambda seed: object())
    with pytest.raises(RelrepsError, match="seed"):
        make_head("logreg", -1)
    y, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert score(y, p, "accuracy") == pytest.approx(0.75)
    assert score(y, p, "f1_macro") == pytest.approx((2 / 3 + 0.8) / 2)
    assert score(y, p, "f1_weighted") == pytest.approx((2 / 3 + 0.8) / 2)
    assert score(y, p, "balanced_accuracy") == pytest.approx(0.75)
    with pytest.raises(OptionError, match="unknown metric"):
        score([0, 1], [0, 1], "auc")
    with pytest.raises(ShapeError):
        score([0, 1], [0, 1, 1], "accuracy")
