"""compare_spaces: the numbers a researcher would trust, at small sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps.errors import AnchorError, NonFiniteError, RelrepsError, ShapeError
from relreps.workflow import compare as cmp
from relreps.workflow.compare import SUMMARY_KEYS, compare_spaces, prepare_comparison

pytestmark = pytest.mark.usefixtures("one_thread")


def _clusters(n=240, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(classes, d))[y] * 3 + rng.normal(size=(n, d))
    return x, y


def _rotation(d, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_rotated_copy_and_unrelated_space():
    x, _ = _clusters()
    rot = x @ _rotation(x.shape[1]) * 5.0  # rotated and rescaled: same angles, other axes
    other = np.random.default_rng(9).normal(size=(len(x), 20))
    rep = compare_spaces({"a": x, "rot": rot, "other": other}, k=10, n_anchors=60)
    p = {(q["source"], q["target"]): q for q in rep.pairs}
    assert len(rep.pairs) == 6 and rep.summary == p[("a", "rot")]
    assert p[("a", "rot")]["relative_mrr"] > 0.95 and p[("a", "rot")]["relative_jaccard"] > 0.9
    assert p[("a", "rot")]["absolute_mrr"] < 0.1
    assert p[("a", "rot")]["mutual_knn"] > 0.99  # intrinsic: rotations do not change it
    chance = 10 / len(x)
    for key in ("relative_mrr", "relative_jaccard", "mutual_knn", "relative_mutual_knn"):
        assert p[("a", "other")][key] < 4 * chance, key
    assert p[("a", "other")]["absolute_mrr"] is None  # widths differ: does not exist
    assert p[("a", "other")]["absolute_cka_linear"] < 0.3
    assert any("widths differ" in n for n in rep.notes)
    for q in rep.pairs:
        assert tuple(q) == SUMMARY_KEYS


def test_center_auto_is_decided_jointly_and_recorded():
    x, _ = _clusters()
    shifted = x + 40.0  # a large common direction: strongly anisotropic
    rep = compare_spaces({"a": x, "b": shifted @ _rotation(x.shape[1])}, k=5, n_anchors=40)
    assert rep.center["center"] == "anchors" and rep.summary["center"] == "anchors"
    assert "anisotropy of b" in rep.center["reason"]
    assert rep.summary["relative_mrr"] > 0.95
    plain = compare_spaces({"a": x, "b": x @ _rotation(x.shape[1])}, k=5, n_anchors=40,
                           center="none")
    assert plain.center["center"] is None and plain.summary["center"] == "none"


def test_labels_give_stitching_chosen_without_test_rows():
    x, y = _clusters(n=180, d=8)
    spaces = {"a": x, "b": x @ _rotation(8)}
    rep = compare_spaces(spaces, y, k=5, n_anchors=24)
    s = rep.summary
    for key in cmp.STITCH_KEYS:
        assert key in s, key
    assert s["relative_stitched_accuracy"] > 0.9 and s["relative_non_stitched_accuracy"] > 0.9
    assert s["absolute_stitched_accuracy"] < 0.8  # an absolute head does not survive rotation
    assert s["translation_method"] in cmp.TRANSLATION_METHODS
    assert s["translation_stitched_accuracy"] > 0.9
    assert rep.stitching["relative"][0][1] == s["relative_stitched_accuracy"]
    # Corrupting the target's test rows changes test scores only: the translation method and
    # its validation scores come from training rows.
    job = prepare_comparison(spaces, y, k=5, n_anchors=24)
    assert set(job.anchor_rows) <= set(job.train) and not set(job.train) & set(job.test)
    b2 = spaces["b"].copy()
    b2[job.test] = np.random.default_rng(0).normal(size=(len(job.test), 8)) * 10
    rep2 = compare_spaces({"a": x, "b": b2}, y, k=5, n_anchors=24)
    assert rep2.summary["translation_validation_accuracy"] == s["translation_validation_accuracy"]
    assert rep2.summary["translation_method"] == s["translation_method"]
    assert rep2.summary["relative_non_stitched_accuracy"] == s["relative_non_stitched_accuracy"]
    assert rep2.summary["relative_stitched_accuracy"] < 0.8


def test_report_files(tmp_path):
    x, y = _clusters(n=120, d=6)
    rep = compare_spaces({"a": x, "b": x @ _rotation(6)}, y, k=5, n_anchors=20)
    figures = rep.write(tmp_path)
    assert figures == ["neighbourhoods.png", "spaces_2d.png", "stitching.png"]
    data = json.loads((tmp_path / "results.json").read_text())
    for key in ("n_items", "n_anchors", "k", "center", "absolute_jaccard", "absolute_mrr",
                "relative_jaccard", "relative_mrr", "absolute_cka_linear",
                "relative_cka_linear", "mutual_knn", "relative_non_stitched_accuracy",
                "relative_stitched_accuracy", "absolute_stitched_accuracy",
                "translation_stitched_accuracy"):
        assert key in data["summary"], key
    assert len(data["pairs"]) == 2 and data["center"]["requested"] == "auto"
    corr = data["basis_correlation"]
    assert corr["relative"]["b"][0] > 0.99  # one shared basis: relative spaces agree
    assert abs(corr["absolute"]["b"][0]) < 0.9  # absolute ones need not
    md = (tmp_path / "results.md").read_text()
    assert "## Stitching accuracy" in md and "![stitching.png](stitching.png)" in md
    for f in figures:
        assert (tmp_path / f).stat().st_size > 1000


def test_sampled_queries_against_all_items(monkeypatch):
    x, _ = _clusters(n=300)
    monkeypatch.setattr(cmp, "MAX_EXACT_ITEMS", 100)
    rep = compare_spaces({"a": x, "b": x @ _rotation(12)}, k=5, n_anchors=40, n_queries=50)
    assert rep.summary["n_queries"] == 50
    assert rep.summary["relative_mrr"] > 0.95 and rep.summary["mutual_knn"] > 0.99
    assert any("50 seeded non-anchor queries searched among all 300 items" in n for n in rep.notes)
    full = compare_spaces({"a": x, "b": x[::-1].copy()}, k=5, n_anchors=40)
    assert full.summary["n_queries"] is None


@pytest.mark.parametrize("sampled", [False, True])
def test_anchors_are_never_queries(monkeypatch, sampled):
    # Two unrelated spaces: an anchor's relative vector peaks at its own position in both, so
    # anchors used as queries would find themselves (MRR ~ the anchor fraction, here 0.25).
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 256)), rng.normal(size=(200, 256))
    if sampled:
        monkeypatch.setattr(cmp, "MAX_EXACT_ITEMS", 100)
    rep = compare_spaces({"a": a, "b": b}, k=5, n_anchors=50, center="none",
                         n_queries=60 if sampled else None)
    assert rep.summary["relative_mrr"] < 0.1
    assert rep.summary["n_queries"] == (60 if sampled else None)


def test_streamed_and_lazy_inputs_match_in_memory(tmp_path, monkeypatch):
    import dask.array as da

    from relreps.io import read_array, write_array

    x, _ = _clusters(n=200)
    b = x @ _rotation(12)
    ref = compare_spaces({"a": x, "b": b}, k=5, n_anchors=30)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", b)
    monkeypatch.setattr(cmp, "STREAM_ITEMS", 50)
    mm = compare_spaces({"a": read_array(tmp_path / "a.npy"), "b": read_array(tmp_path / "b.npy")},
                        k=5, n_anchors=30, work_dir=tmp_path)
    write_array(tmp_path / "b.zarr", b)
    lazy = compare_spaces({"a": da.from_array(x, chunks=(64, 12)),
                           "b": read_array(tmp_path / "b.zarr", as_dask=True)},
                          k=5, n_anchors=30, work_dir=tmp_path)
    for rep in (mm, lazy):
        for key in ("relative_mrr", "relative_jaccard", "absolute_mrr", "mutual_knn",
                    "relative_cka_linear"):
            assert rep.summary[key] == pytest.approx(ref.summary[key], abs=1e-6), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "b.zarr"]
    assert len(set(lazy.notes)) == len(lazy.notes)  # each note once


def test_torch_inputs_are_accepted():
    import torch

    x, _ = _clusters(n=100)
    rep = compare_spaces({"a": torch.tensor(x), "b": torch.tensor(x @ _rotation(12))}, k=5,
                         n_anchors=20)
    assert rep.summary["relative_mrr"] > 0.95


def test_bad_inputs_are_named_errors():
    x, y = _clusters(n=60, d=4)
    bad = x.copy()
    bad[7, 1] = np.nan
    cases = [
        (({"a": x},), {}, ShapeError, "at least two spaces"),
        (({"a": x, "b": x[:-1]},), {}, ShapeError, "row counts differ"),
        (({"a": x, "b": bad},), {}, NonFiniteError, "rows 7"),
        (({"a": x, "b": x}, y[:-1]), {}, ShapeError, "59 labels for 60"),
        (({"a": x, "b": x},), {"n_anchors": 1}, AnchorError, "at least 2 anchors"),
        (({"a": x, "b": x},), {"n_anchors": 500}, AnchorError, "only 60"),
        (({"a": x, "b": x}, y), {"n_anchors": 50}, AnchorError, "training items"),
        (({"a": x, "b": x},), {"k": 0}, RelrepsError, "k must be >= 1"),
        (({"a": x, "b": x},), {"k": 59}, RelrepsError, "k must be at most 58"),
        (({"a": x, "b": x},), {"similarity": "nope"}, RelrepsError, "nope"),
        (({"a": x, "b": x},), {"center": "mean"}, RelrepsError, "center must be one of"),
        (({"a": x, "b": x},), {"anchor_index": [1, 1, 2]}, RelrepsError, "repeats"),
        (({"a": x, "b": x},), {"anchor_index": [1.0, 2.0]}, RelrepsError, "integer"),
        (({"a": x, "b": x},), {"sampler": "stratified"}, AnchorError, "needs labels"),
        (({"a": x, "b": x}, np.zeros(60)), {}, RelrepsError, "single class"),
        (({"a": x, "b": x},), {"seed": -1}, RelrepsError, "seed"),
        (({"a": x, "b": np.zeros((60, 0))},), {}, ShapeError, "feature"),
        (({"a": x, "b": x.astype(complex)},), {}, RelrepsError, "complex"),
    ]
    for args, kwargs, err, match in cases:
        with pytest.raises(err, match=match):
            prepare_comparison(*args, **kwargs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e15]), seed=st.integers(0, 50),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_relative_agreement_is_invariant_to_rotation_and_scale(scale, seed, dtype):
    x, _ = _clusters(n=80, d=6, seed=seed)
    a = (x * scale).astype(dtype)
    b = (x @ _rotation(6, seed + 1) * scale * 3).astype(dtype)
    job = prepare_comparison({"a": a, "b": b}, k=5, n_anchors=20, seed=seed, center="none")
    try:
        rep = job.run()
    except RelrepsError:
        # Near the bottom of float32 the library may refuse (a named error) rather than compute
        # from underflowed squares; never a silent wrong number.
        assert dtype == np.float32 and scale < 1e-18
        return
    assert rep.summary["relative_mrr"] > 0.9
    assert rep.summary["mutual_knn"] > 0.95
    assert rep.summary["relative_cka_linear"] == pytest.approx(1.0, abs=1e-3)


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 400), st.floats(allow_nan=True),
                  st.text(max_size=5), st.lists(st.integers(-2, 70), max_size=4),
                  st.sampled_from([np.arange(3), np.array([1.5, 2.0]), np.zeros((2, 2)),
                                   np.array([True, False]), {"a": 1}, object()]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arg=st.sampled_from(["k", "n_anchors", "anchor_index", "sampler", "similarity", "center",
                            "seed", "n_queries", "test_size", "labels"]), value=_JUNK)
def test_any_wrong_argument_is_a_named_error(arg, value):
    x, y = _clusters(n=60, d=4)
    kwargs = {"k": 3}
    if arg == "labels":
        args = ({"a": x, "b": x}, value)
    else:
        args = ({"a": x, "b": x},)
        kwargs[arg] = value
    try:
        job = prepare_comparison(*args, **kwargs)
    except RelrepsError:
        return
    assert job.k >= 1 and len(job.anchor_rows) >= 2  # accepted: a valid setting


@settings(max_examples=30, deadline=None)
@given(spaces=st.one_of(st.none(), st.integers(), st.text(max_size=4),
                        st.lists(st.integers(), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.one_of(
                            st.none(), st.integers(), st.text(max_size=3),
                            st.lists(st.floats(), max_size=3)), max_size=3)))
def test_any_wrong_spaces_is_a_named_error(spaces):
    with pytest.raises(RelrepsError):
        prepare_comparison(spaces)


def test_default_anchor_count_follows_the_widths_and_the_pool():
    from relreps.workflow.compare import DEFAULT_ANCHORS, default_n_anchors

    assert default_n_anchors([32, 48], 10_000) == DEFAULT_ANCHORS  # narrow spaces: the floor
    assert default_n_anchors([256, 384], 10_000) == 4 * 384  # four per dimension of the widest
    assert default_n_anchors([768], 10_000) == 1536  # capped
    assert default_n_anchors([384], 1_000) == 500  # never more than half of the pool


def test_cli_defaults_are_the_workflow_defaults():
    from relreps.cli import build_parser
    from relreps.workflow.compare import DEFAULT_SIMILARITY

    p = build_parser()
    assert p.parse_args(["compare", "a.npy", "b.npy"]).similarity == DEFAULT_SIMILARITY
    args = p.parse_args(["stitch", "fit", "a.npy", "--labels", "y.txt", "--anchor-index",
                         "i.txt", "--out", "m"])
    assert args.similarity == DEFAULT_SIMILARITY
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8))
    rep = compare_spaces({"a": x, "b": x @ _rotation(8)}, k=5)
    assert rep.summary["similarity"] == DEFAULT_SIMILARITY
    assert rep.summary["n_anchors"] == 60  # half of the 120 items (the floor of 300 is capped)
