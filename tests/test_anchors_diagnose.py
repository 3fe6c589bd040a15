"""diagnose turns anisotropy and missing directions into quantified advice (issue 10)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import anchors as A
from relreps.centering import AUTO_THRESHOLD, COLLAPSE_THRESHOLD, AnisotropyWarning, anisotropy
from relreps.errors import AnchorError, InputTypeError, RelrepsError, ShapeError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _anisotropic(k: int = 60, d: int = 32, offset: float = 3.0, seed: int = 0) -> np.ndarray:
    """A shared direction dominates (like multilingual-e5): high pairwise cosines."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d)
    common *= offset / np.linalg.norm(common)
    return common + rng.normal(size=(k, d)) / np.sqrt(d)


def _decaying(n: int, d: int = 384, seed: int = 0, power: float = 1.0) -> np.ndarray:
    """Embeddings with a power-law spectrum, as sentence encoders have."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * np.arange(1, d + 1) ** (-power / 2)) @ q


# --------------------------------------------------------------------------- anisotropy

def test_collapse_is_turned_into_advice():
    a = _anisotropic()
    diag = A.diagnose(a)
    assert diag.anisotropy == pytest.approx(anisotropy(a), abs=1e-12)
    assert diag.anisotropy > COLLAPSE_THRESHOLD
    advice = [w for w in diag.warnings if "use center='anchors' (or 'auto')" in w]
    assert len(advice) == 1
    assert f"{diag.anisotropy:.2f}" in advice[0]
    assert f"{diag.effective_dim_plain:.1f} plain vs {diag.effective_dim_centered:.1f}" \
        in advice[0]
    assert diag.effective_dim_plain < 1.5 < 10 < diag.effective_dim_centered
    # Centred (asked for or decided automatically), there is nothing to advise.
    for center in (True, "anchors", "auto"):
        d2 = A.diagnose(a, center=center)
        assert d2.center == "anchors" and not any("use center" in w for w in d2.warnings)
        assert d2.effective_dim == pytest.approx(diag.effective_dim_centered)
    assert "auto: centred" in A.diagnose(a, center="auto").center_reason


def test_collapse_warning_is_an_anisotropy_warning():
    with pytest.warns(AnisotropyWarning, match="close to collapse"):
        A.diagnose(_anisotropic(k=300, d=32), warn=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.diagnose(_anisotropic(k=300, d=32), warn=False)  # warn=False only reports


def test_moderate_anisotropy_is_a_note_and_isotropic_anchors_are_quiet():
    rng = np.random.default_rng(1)
    iso = rng.normal(size=(100, 16))
    diag = A.diagnose(iso, center="auto")
    assert abs(diag.anisotropy) < AUTO_THRESHOLD and diag.center is None
    assert diag.warnings == [] and not any("auto" in n for n in diag.notes)
    # Find an offset giving an anisotropy between the auto and collapse thresholds.
    for offset in np.linspace(0.3, 1.5, 25):
        mid = _anisotropic(k=100, d=16, offset=offset)
        if AUTO_THRESHOLD < anisotropy(mid) < COLLAPSE_THRESHOLD:
            break
    diag = A.diagnose(mid)
    assert not any("use center" in w for w in diag.warnings)
    assert any("center='auto' would centre" in n for n in diag.notes)


# --------------------------------------------------------------------------- outside the span

def test_readme_setting_is_quantified_not_scary():
    """300 anchors in 384-d (the README's example) on encoder-like data: a note with the share
    of each direction the relative space misses, no warning; 50 anchors: a warning."""
    x = _decaying(3300)
    anchors, data = x[:300], x[300:]
    est = A.diagnose(anchors)
    meas = A.diagnose(anchors, data)
    assert est.outside_span_source == "leave-one-out" and meas.outside_span_source == "data"
    assert 0 < meas.outside_span_fraction < A.MAX_OUTSIDE_SPAN
    assert est.outside_span_fraction == pytest.approx(meas.outside_span_fraction, abs=0.02)
    for diag in (est, meas):
        assert diag.warnings == []
        note = [m for m in diag.notes if "invisible to the relative representation" in m]
        assert len(note) == 1 and f"{diag.outside_span_fraction:.1%}" in note[0]
        assert "300 anchors span 300 of 384 dimensions" in note[0]
    few = A.diagnose(x[:50], data)
    assert few.outside_span_fraction > A.MAX_OUTSIDE_SPAN
    assert any("add anchors" in w and f"{few.outside_span_fraction:.1%}" in w
               for w in few.warnings)
    # The threshold is the caller's to set.
    assert A.diagnose(x[:50], data, max_outside_span=0.99).warnings == []


@pytest.mark.parametrize("center", [False, True])
def test_isotropic_data_miss_the_expected_share(center):
    rng = np.random.default_rng(3)
    k, d = 30, 60
    a, x = rng.normal(size=(k, d)), rng.normal(size=(4000, d))
    span = k - 1 if center else k
    expected = (d - span) / d
    assert A.diagnose(a, x, center=center).outside_span_fraction == pytest.approx(expected,
                                                                                   abs=0.02)
    assert A.diagnose(a, center=center).outside_span_fraction == pytest.approx(
        (d - span + 1) / d, abs=0.06)  # leave-one-out: k - 1 anchors


def test_data_inside_or_orthogonal_to_the_span():
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    inside, outside = q[:, :5], q[:, 5:]
    anchors = rng.normal(size=(8, 5)) @ inside.T
    assert A.diagnose(anchors, rng.normal(size=(50, 5)) @ inside.T).outside_span_fraction \
        == pytest.approx(0.0, abs=1e-12)
    assert A.diagnose(anchors, rng.normal(size=(50, 7)) @ outside.T).outside_span_fraction \
        == pytest.approx(1.0, abs=1e-12)
    # Anchors spanning the whole space: nothing outside, measured or not.
    full = rng.normal(size=(20, 12))
    assert A.diagnose(full).outside_span_source == "full span"
    assert A.diagnose(full).outside_span_fraction == 0.0
    assert A.diagnose(full, rng.normal(size=(30, 12))).outside_span_fraction < 1e-12


def _brute_loo(a: np.ndarray, center: bool) -> float:
    fr = []
    for i in range(len(a)):
        others = np.delete(a, i, axis=0)
        if center:
            mu = others.mean(0)
            basis, v = (others - mu).T, a[i] - mu
        else:
            norms = np.linalg.norm(others, axis=1, keepdims=True)
            basis, v = (others / np.where(norms > 0, norms, 1)).T, a[i]
        if not np.linalg.norm(v):
            continue
        coef, *_ = np.linalg.lstsq(basis, v, rcond=None)
        fr.append(np.sum((v - basis @ coef) ** 2) / np.sum(v**2))
    return float(np.mean(fr))


@SETTINGS
@given(k=st.integers(2, 12), d=st.integers(2, 14), rank=st.integers(1, 14),
       seed=st.integers(0, 2**32 - 1), center=st.booleans())
def test_leave_one_out_matches_brute_force(k, d, rank, seed, center):
    rng = np.random.default_rng(seed)
    rank = min(rank, d)
    a = rng.normal(size=(k, rank)) @ rng.normal(size=(rank, d)) + (2.0 if center else 0.0)
    diag = A.diagnose(a, center=center)
    if diag.outside_span_source == "full span":
        return
    assert 0.0 <= diag.outside_span_fraction <= 1.0
    assert diag.outside_span_fraction == pytest.approx(_brute_loo(a, center), abs=1e-6)


@SETTINGS
@given(k=st.integers(1, 10), d=st.integers(1, 10), seed=st.integers(0, 2**32 - 1),
       center=st.booleans())
def test_measured_share_matches_its_definition(k, d, seed, center):
    rng = np.random.default_rng(seed)
    a, x = rng.normal(size=(k, d)) + 1.0, rng.normal(size=(40, d)) + 1.0
    if center and k < 2:
        return
    diag = A.diagnose(a, x, center=center)
    mu = a.mean(0) if center else 0.0
    span = a - mu
    u = (x - mu) / np.linalg.norm(x - mu, axis=1, keepdims=True)
    coef, *_ = np.linalg.lstsq(span.T, u.T, rcond=None)
    resid = ((u.T - span.T @ coef) ** 2).sum(0)
    assert diag.outside_span_fraction == pytest.approx(resid.mean(), abs=1e-8)
    assert diag.n_data == 40


# --------------------------------------------------------------------------- other findings

def test_zero_anchor_rows_are_reported():
    a = np.vstack([np.eye(4), np.zeros((1, 4))])
    diag = A.diagnose(a)
    assert any("anchor rows 4 are zero" in w for w in diag.warnings)
    same = np.ones((3, 4))
    diag = A.diagnose(same, center=True)
    assert diag.rank == 0 and diag.outside_span_fraction == 1.0
    assert any("zero after centring" in w for w in diag.warnings)


def test_report_forms():
    diag = A.diagnose(_anisotropic(), _anisotropic(k=80, seed=1))
    data = diag.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["anisotropy"] == diag.anisotropy and data["outside_span_source"] == "data"
    text = str(diag)
    assert "anisotropy (mean pairwise cosine)" in text and "outside the anchors' span" in text
    assert all(f"warning: {w}" in text for w in diag.warnings)


def test_torch_anchors_and_data_on_their_device():
    a = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = A.diagnose(a.numpy(), x.numpy())
    got = A.diagnose(a, x)
    assert got.outside_span_fraction == pytest.approx(ref.outside_span_fraction, rel=1e-12)
    assert got.rank == ref.rank


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize(("kwargs", "err", "msg"), [
    ({"center": "mean"}, RelrepsError, "center must be"),
    ({"center": 1}, RelrepsError, "center must be"),
    ({"center": np.zeros(4)}, RelrepsError, "center must be"),
    ({"duplicate_cosine": 1.5}, RelrepsError, "duplicate_cosine must be <= 1"),
    ({"duplicate_cosine": float("nan")}, RelrepsError, "duplicate_cosine must be finite"),
    ({"duplicate_cosine": "0.9"}, InputTypeError, "duplicate_cosine must be a number"),
    ({"max_condition": 0.5}, RelrepsError, "max_condition must be >= 1"),
    ({"max_outside_span": -0.1}, RelrepsError, "max_outside_span must be >= 0"),
    ({"max_outside_span": True}, InputTypeError, "max_outside_span must be a number"),
    ({"warn": "yes"}, InputTypeError, "warn must be True or False"),
    ({"block_rows": 0}, RelrepsError, "block_rows must be >= 1"),
    ({"x": np.ones((5, 3))}, ShapeError, "x has 3 features but the anchors have 4"),
    ({"x": np.ones(4)}, ShapeError, "x must be 2-D"),
    ({"x": np.zeros((5, 4))}, AnchorError, "x has no non-zero rows"),
])
def test_bad_arguments(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        A.diagnose(np.eye(4), **kwargs)


def test_bad_anchors():
    with pytest.raises(AnchorError, match="no anchors"):
        A.diagnose(np.zeros((0, 4)))
    with pytest.raises(AnchorError, match="center='auto' needs at least 2 anchors"):
        A.diagnose(np.ones((1, 4)), center="auto")
    with pytest.raises(InputTypeError, match="complex"):
        A.diagnose(np.eye(3) * 1j)
    with pytest.raises(RelrepsError, match=r"NaN or inf values \(rows 1\)"):
        A.diagnose(np.array([[1.0, 2.0], [np.inf, 0.0]]))
    one = A.diagnose(np.ones((1, 3)))  # a single anchor: no anisotropy, nothing spanned but it
    assert one.anisotropy is None and one.outside_span_fraction == pytest.approx(1.0)
