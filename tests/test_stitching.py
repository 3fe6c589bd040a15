"""Zero-shot stitching on a synthetic problem where space B is space A rotated and rescaled."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from relreps.errors import AnchorError, RelrepsError
from relreps.stitching import StitchingResult, make_head, score, stitching_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

N_CLASSES = 4


def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def problem():
    """Space A: 4 Gaussian classes in 12-d; B = A rotated and scaled by 3; C: A cut to 6-d."""
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


def _small_logreg(seed: int):
    return LogisticRegression(max_iter=500, random_state=seed)


def test_relative_stitching_keeps_accuracy_and_absolute_collapses(problem):
    spaces, y_tr, y_te, _ = problem
    anchors = np.arange(0, 240, 8)  # 30 anchors, the same samples in both spaces
    rel = stitching_matrix(spaces, y_tr, y_te, anchors=anchors, space="relative", seeds=(0, 1))
    ab = stitching_matrix(spaces, y_tr, y_te, space="absolute", seeds=(0, 1))
    for res in (rel, ab):
        assert isinstance(res, StitchingResult)
        assert len(res.rows) == 2 * 2 * 2  # seeds x fit spaces x eval spaces
        assert {(r["fit_space"], r["eval_space"]) for r in res.rows} == \
            {("A", "A"), ("A", "B"), ("B", "A"), ("B", "B")}
        for r in res.rows:
            assert r["stitched"] == (r["fit_space"] != r["eval_space"])
            assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["f1_weighted"] <= 1.0
    rel_sum, ab_sum = rel.summary(), ab.summary()
    # The problem is learnable in each space.
    assert rel_sum["non_stitched_mean"] > 0.8 and ab_sum["non_stitched_mean"] > 0.8
    # Relative spaces of A and B are identical (cosine is rotation and scale invariant): the
    # stitched head is as good as the native one.
    assert rel_sum["stitched_mean"] == pytest.approx(rel_sum["non_stitched_mean"], abs=0.02)
    assert rel_sum["ratio"] > 0.97
    # Absolute heads read a rotated, rescaled space: they collapse towards chance.
    assert ab_sum["stitched_mean"] < ab_sum["non_stitched_mean"] - 0.3
    assert ab_sum["stitched_mean"] < rel_sum["stitched_mean"] - 0.3


def test_matrix_summary_markdown_and_heatmap(problem, tmp_path):
    spaces, y_tr, y_te, _ = problem
    res = stitching_matrix(spaces, y_tr, y_te, anchors=np.arange(20), head=_small_logreg,
                           seeds=(0, 1, 2), metrics=("accuracy", "f1_macro"))
    names, mean, std = res.matrix("accuracy")
    assert names == ["A", "B"] and mean.shape == std.shape == (2, 2)
    for i, fs in enumerate(names):
        for j, es in enumerate(names):
            vals = [r["accuracy"] for r in res.rows
                    if r["fit_space"] == fs and r["eval_space"] == es]
            assert len(vals) == 3
            assert mean[i, j] == pytest.approx(np.mean(vals))
            assert std[i, j] == pytest.approx(np.std(vals))
    # The default metric is the first one requested.
    np.testing.assert_array_equal(res.matrix()[1], mean)
    _, f1, _ = res.matrix("f1_macro")
    assert not np.array_equal(f1, mean)  # a different metric, not a copy of accuracy
    assert np.all((f1 >= 0) & (f1 <= 1))
    summ = res.summary("accuracy")
    stitched = [r["accuracy"] for r in res.rows if r["stitched"]]
    native = [r["accuracy"] for r in res.rows if not r["stitched"]]
    assert summ["stitched_mean"] == pytest.approx(np.mean(stitched))
    assert summ["non_stitched_mean"] == pytest.approx(np.mean(native))
    assert summ["ratio"] == pytest.approx(summ["stitched_mean"] / summ["non_stitched_mean"])
    md = res.to_markdown("accuracy")
    lines = md.splitlines()
    assert len(lines) == 4 and "**A**" in lines[2] and "**B**" in lines[3]
    assert f"{100 * mean[0, 1]:.1f} ± {100 * std[0, 1]:.1f}" in lines[2]
    path = res.heatmap(tmp_path / "stitch.png", "accuracy")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_absolute_pairs_with_different_widths_are_skipped(problem):
    spaces, y_tr, y_te, _ = problem
    three = dict(spaces)
    three["C"] = (spaces["A"][0][:, :6], spaces["A"][1][:, :6])
    res = stitching_matrix(three, y_tr, y_te, space="absolute", head=_small_logreg, seeds=(0,))
    pairs = {(r["fit_space"], r["eval_space"]) for r in res.rows}
    assert ("A", "C") not in pairs and ("C", "A") not in pairs and ("C", "B") not in pairs
    assert {("A", "B"), ("B", "A"), ("C", "C")} <= pairs
    names, mean, _ = res.matrix()
    assert np.isnan(mean[names.index("A"), names.index("C")])
    row_a = next(line for line in res.to_markdown().splitlines() if "**A**" in line)
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    assert cells[1 + names.index("C")] == "-" and cells[1 + names.index("B")] != "-"
    # Relative spaces of different latent widths stitch fine: same number of anchors.
    rel = stitching_matrix(three, y_tr, y_te, anchors=np.arange(24), head=_small_logreg,
                           seeds=(0,))
    assert ("A", "C") in {(r["fit_space"], r["eval_space"]) for r in rel.rows}


def test_per_seed_anchors_via_a_callable(problem):
    spaces, y_tr, y_te, _ = problem
    calls = []

    def anchors_for(seed):
        calls.append(seed)
        return np.random.default_rng(seed).choice(240, size=25, replace=False)

    res = stitching_matrix(spaces, y_tr, y_te, anchors=anchors_for, head=_small_logreg,
                           seeds=(3, 4, 5))
    assert calls == [3, 4, 5]
    assert sorted({r["seed"] for r in res.rows}) == [3, 4, 5]
    # Fixed anchors are projected once and reused for every seed.
    fixed = stitching_matrix(spaces, y_tr, y_te, anchors=anchors_for(3), head=_small_logreg,
                             seeds=(3, 4))
    same_seed = [r["accuracy"] for r in res.rows if r["seed"] == 3]
    assert same_seed == [r["accuracy"] for r in fixed.rows if r["seed"] == 3]


def test_parallel_anchor_mapping(problem):
    spaces, y_tr, y_te, rng = problem
    idx = rng.choice(240, size=30, replace=False)
    mapping = {s: tr[idx] for s, (tr, _) in spaces.items()}
    by_map = stitching_matrix(spaces, y_tr, y_te, anchors=mapping, head=_small_logreg,
                              seeds=(0,))
    by_idx = stitching_matrix(spaces, y_tr, y_te, anchors=idx, head=_small_logreg, seeds=(0,))
    assert [r["accuracy"] for r in by_map.rows] == [r["accuracy"] for r in by_idx.rows]


def test_stitching_errors(problem):
    spaces, y_tr, y_te, _ = problem
    with pytest.raises(AnchorError, match="needs anchors"):
        stitching_matrix(spaces, y_tr, y_te)
    with pytest.raises(AnchorError, match="do not correspond across spaces"):
        stitching_matrix(spaces, y_tr, y_te, anchors={"A": spaces["A"][0][:10],
                                                      "B": spaces["B"][0][:9]})
    with pytest.raises(AnchorError, match=r"no anchors given for space\(s\) \['B'\]"):
        stitching_matrix(spaces, y_tr, y_te, anchors={"A": spaces["A"][0][:10]})
    with pytest.raises(AnchorError, match="out of range"):
        stitching_matrix(spaces, y_tr, y_te, anchors=np.array([0, 1, 999]))
    with pytest.raises(AnchorError, match="index array"):
        stitching_matrix(spaces, y_tr, y_te, anchors=np.array([0.5, 1.5]))
    with pytest.raises(RelrepsError, match="space must be"):
        stitching_matrix(spaces, y_tr, y_te, space="latent")
    with pytest.raises(RelrepsError, match="no spaces"):
        stitching_matrix({}, y_tr, y_te, anchors=np.arange(3))
    with pytest.raises(RelrepsError, match="train rows for 239 labels"):
        stitching_matrix(spaces, y_tr[:-1], y_te, anchors=np.arange(3))
    with pytest.raises(RelrepsError, match="test rows for 159 labels"):
        stitching_matrix(spaces, y_tr, y_te[:-1], anchors=np.arange(3))
    with pytest.raises(RelrepsError, match="head must be"):
        make_head("svm", 0)
    with pytest.raises(RelrepsError, match="unknown metric"):
        score([0, 1], [0, 1], "auc")


def test_heads_and_scores():
    assert make_head("logreg", 3).steps[-1][1].random_state == 3
    assert make_head("mlp", 4).random_state == 4
    assert make_head(_small_logreg, 5).random_state == 5
    y, p = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert score(y, p, "accuracy") == pytest.approx(0.75)
    # f1 per class: class 0 -> 2/3, class 1 -> 0.8; supports equal
    assert score(y, p, "f1_macro") == pytest.approx((2 / 3 + 0.8) / 2)
    assert score(y, p, "f1_weighted") == pytest.approx((2 / 3 + 0.8) / 2)
