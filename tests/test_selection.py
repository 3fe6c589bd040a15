"""Best-aligned anchor selection and the anchor-count sweep."""

import numpy as np
import pytest

from relreps.errors import AnchorError, InputTypeError, OptionError, RelrepsError, ShapeError
from relreps.selection import (
    anchor_alignment_scores,
    anchor_count_sweep,
    best_aligned_anchors,
    select_anchors,
)


@pytest.fixture
def spaces():
    """B is a rotation of A except for the first 40 rows, which are scrambled in B: those
    samples are bad anchors (their relative columns disagree across spaces)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    b = a @ q
    b[:40] = rng.normal(size=(40, 6)) * 2
    return a, b


def test_scores_flag_the_scrambled_rows(spaces):
    a, b = spaces
    s = anchor_alignment_scores([a, b], random_state=0)
    assert s.shape == (200,)
    assert s[40:].mean() > 0.6  # the reference sample includes the scrambled rows
    assert s[:40].mean() < s[40:].mean() - 0.3


def test_best_aligned_avoids_bad_anchors_and_uniform_does_not(spaces):
    a, b = spaces
    idx = best_aligned_anchors([a, b], 30, random_state=0)
    assert len(idx) == 30 and len(set(idx)) == 30
    assert (idx >= 40).all()
    uni = select_anchors([a, b], 30, "uniform", random_state=0)
    assert (uni < 40).any()


def test_candidates_restrict_the_pool_and_redundancy_spreads_choices(spaces):
    a, b = spaces
    cand = np.arange(100, 200)
    idx = best_aligned_anchors([a, b], 10, candidates=cand, random_state=1)
    assert set(idx) <= set(cand)
    # without the penalty the choice is the top of the score; with it, columns are less similar
    greedy = best_aligned_anchors([a, b], 10, redundancy=0.0, random_state=1)
    spread = best_aligned_anchors([a, b], 10, redundancy=1.0, random_state=1)

    def max_corr(ix):
        from relreps.projection import relative_projection

        r = relative_projection(a, a[ix], center="anchors")
        c = np.corrcoef(r.T)
        return np.abs(c[np.triu_indices(len(ix), 1)]).mean()

    assert max_corr(spread) < max_corr(greedy)


def test_errors(spaces):
    a, b = spaces
    with pytest.raises(AnchorError):
        best_aligned_anchors([a], 5)
    with pytest.raises(ShapeError, match="row counts differ"):
        best_aligned_anchors([a, b[:-1]], 5)
    with pytest.raises(AnchorError):
        best_aligned_anchors([a, b], 0)
    with pytest.raises(RelrepsError, match="candidates repeats the index 1"):
        best_aligned_anchors([a, b], 5, candidates=[1, 1, 2, 3, 4])


def test_sweep_rows_and_choice():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    centers = rng.normal(size=(3, 5)) * 3
    x = centers[y] + rng.normal(size=(120, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    spaces = {"a": (x[:90], x[90:]), "b": (x[:90] @ q, x[90:] @ q)}
    rows = anchor_count_sweep(spaces, y[:90], y[90:], counts=(6, 12),
                              methods=("uniform", "best_aligned"), seeds=(0,))
    assert len(rows) == 4
    assert {r["method"] for r in rows} == {"uniform", "best_aligned"}
    for r in rows:  # a rotation is invisible to cosine relative spaces: stitching is lossless
        assert r["stitched"] == pytest.approx(r["non_stitched"], abs=0.05)
        assert 0.5 < r["stitched"] <= 1.0
    with pytest.raises(RelrepsError):
        anchor_count_sweep(spaces, y[:90], y[90:], counts=(6,), methods=("random",))


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize(("kwargs", "err", "msg"), [
    ({"n": True}, InputTypeError, "n must be an integer"),
    ({"n": 2.0}, InputTypeError, "n must be an integer"),
    ({"random_state": -1}, RelrepsError, "random_state must be >= 0"),
    ({"n_reference": 2}, RelrepsError, "n_reference must be >= 3"),
    ({"n_reference": 10.5}, InputTypeError, "n_reference must be an integer"),
    ({"candidates": [0, -1, 3]}, RelrepsError, "negative index -1"),
    ({"candidates": [0.0, 1.0, 2.0]}, InputTypeError, "integer row indices"),
    ({"candidates": np.ones(200, dtype=bool)}, InputTypeError, "boolean mask"),
    ({"candidates": [0, 500]}, RelrepsError, "out of range"),
    ({"similarity": "cosin"}, RelrepsError, "unknown similarity 'cosin'"),
    ({"center": "mean"}, RelrepsError, "center must be one of None, 'anchors', 'auto'"),
    ({"redundancy": -1.0}, RelrepsError, "redundancy must be >= 0"),
    ({"redundancy": float("nan")}, RelrepsError, "redundancy must be finite"),
])
def test_best_aligned_validates_every_argument(spaces, kwargs, err, msg):
    a, b = spaces
    args = {"n": 5, **kwargs}
    n = args.pop("n")
    with pytest.raises(err, match=msg):
        best_aligned_anchors([a, b], n, **args)


def test_bad_spaces(spaces):
    a, b = spaces
    with pytest.raises(InputTypeError, match="spaces must be a sequence"):
        best_aligned_anchors(a, 3)
    with pytest.raises(RelrepsError, match=r"NaN or inf"):
        best_aligned_anchors([a, np.full_like(b, np.nan)], 3)
    with pytest.raises(AnchorError, match="at least two"):
        anchor_alignment_scores({"a": a})


def test_select_anchors_validation(spaces):
    a, b = spaces
    y = np.arange(200) % 4
    with pytest.raises(RelrepsError, match="method must be one of"):
        select_anchors([a, b], 5, "random")
    with pytest.raises(OptionError, match="reference space 'c' is not among"):
        select_anchors({"a": a, "b": b}, 5, "uniform", reference="c")
    with pytest.raises(RelrepsError, match="reference must be <= 1"):
        select_anchors([a, b], 5, "uniform", reference=2)
    with pytest.raises(InputTypeError, match="reference must be an integer"):
        select_anchors([a, b], 5, "uniform", reference=1.0)
    with pytest.raises(AnchorError, match="no spaces"):
        select_anchors([], 5, "uniform")
    # stratified is a single-space sampler too; named references work
    idx = select_anchors({"a": a, "b": b}, 8, "stratified", reference="b", y=y, random_state=0)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2, 2]


def test_sweep_validation():
    x = np.random.default_rng(0).normal(size=(30, 3))
    spaces = {"a": (x[:20], x[20:]), "b": (x[:20], x[20:])}
    y = np.arange(30) % 2
    for kwargs, err, msg in [({"counts": ()}, InputTypeError, "counts"),
                             ({"counts": (0,)}, RelrepsError, r"counts\[0\] must be >= 1"),
                             ({"counts": (True,)}, InputTypeError, "counts"),
                             ({"counts": (4,), "seeds": (-1,)}, RelrepsError, "seeds"),
                             ({"counts": (4,), "methods": "uniform"}, InputTypeError, "methods"),
                             ({"counts": (4,), "center": "auto?"}, RelrepsError, "center")]:
        with pytest.raises(err, match=msg):
            anchor_count_sweep(spaces, y[:20], y[20:], **kwargs)
    with pytest.raises(InputTypeError, match=r"spaces\['a'\] must be a \(train, test\) pair"):
        anchor_count_sweep({"a": x, "b": (x, x)}, y[:20], y[20:], counts=(4,))
    with pytest.raises(ShapeError, match="y_train has 19 labels for 20 samples"):
        anchor_count_sweep(spaces, y[:19], y[20:], counts=(4,))


def test_auto_centring_is_decided_from_the_candidates(spaces):
    a, b = spaces
    shifted = [a + 10.0, b + 10.0]  # anisotropic: auto centres, like center="anchors"
    np.testing.assert_array_equal(
        best_aligned_anchors(shifted, 8, center="auto", random_state=0),
        best_aligned_anchors(shifted, 8, center="anchors", random_state=0))
    # isotropic spaces: auto does not centre
    np.testing.assert_allclose(anchor_alignment_scores([a, b], center="auto", random_state=0),
                               anchor_alignment_scores([a, b], center=None, random_state=0))
