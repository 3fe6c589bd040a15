"""relreps.report: the shared 2-D basis (demo and compare figures) and table formatting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps.errors import InputTypeError, RelrepsError, ShapeError
from relreps.projection import relative_projection
from relreps.report import fmt_mean_std, pivot_table, plot_shared_bases, shared_basis

pytestmark = pytest.mark.usefixtures("one_thread")


def _space(n=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    # anisotropic, so that the principal axes are well defined
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_a_rotation_shows_in_absolute_coordinates_not_in_relative_ones():
    x = _space()
    # a rotation within the plane of the two leading axes (and a random one of the rest)
    c, s = np.cos(1.2), np.sin(1.2)
    q = np.eye(8)
    q[:2, :2] = [[c, -s], [s, c]]
    q[2:, 2:] = _rotation(6, 3)
    y = x @ q
    absolute = shared_basis({"a": x, "b": y})
    anchors = np.arange(0, 200, 5)
    relative = shared_basis({"a": relative_projection(x, x[anchors]),
                             "b": relative_projection(y, y[anchors])})
    assert absolute["reference"] == relative["reference"] == "a"
    abs_corr, rel_corr = absolute["correlation"]["b"], relative["correlation"]["b"]
    assert list(absolute["correlation"]) == ["b"]  # the reference is not compared to itself
    assert max(abs_corr) < 0.5  # rotated by 69 degrees: each axis moves to the other
    assert min(rel_corr) > 0.999
    assert absolute["coords"]["a"].shape == (200, 2)
    np.testing.assert_allclose(relative["coords"]["a"], relative["coords"]["b"], atol=1e-9)


def test_same_space_and_other_width():
    x = _space()
    res = shared_basis({"a": x, "copy": x + 1e-9, "wide": _space(d=10)}, reference="a",
                       n_components=3)
    assert res["coords"]["wide"] is None and "wide" not in res["correlation"]
    assert res["coords"]["a"].shape == (200, 3)
    np.testing.assert_allclose(res["correlation"]["copy"], 1.0, atol=1e-9)
    # the basis is the reference's: its coordinates are uncorrelated across axes
    xy = res["coords"]["a"]
    assert abs(np.corrcoef(xy[:, 0], xy[:, 1])[0, 1]) < 1e-9
    other_ref = shared_basis({"a": x, "b": x[:, ::-1].copy()}, reference="b")
    assert other_ref["reference"] == "b" and list(other_ref["correlation"]) == ["a"]


def test_a_constant_axis_has_no_correlation():
    x = _space(d=3)
    flat = x.copy()
    res = shared_basis({"a": x, "flat": np.zeros_like(flat)})
    assert res["correlation"]["flat"] == [None, None]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3), shift=st.floats(-10, 10))
def test_relative_agreement_is_invariant_to_rotation_scale_and_shift(seed, scale, shift):
    x = _space(n=60, d=5, seed=seed)
    y = x @ _rotation(5, seed + 1) * scale
    anchors = np.arange(0, 60, 3)
    res = shared_basis({"a": relative_projection(x, x[anchors]),
                        "b": relative_projection(y, y[anchors]) + 0.0})
    assert min(res["correlation"]["b"]) > 0.999
    shifted = shared_basis({"a": x, "b": x + shift})
    np.testing.assert_allclose(shifted["correlation"]["b"], 1.0, atol=1e-9)


@pytest.mark.parametrize("spaces, kw, error", [
    ({}, {}, InputTypeError),
    ([np.zeros((3, 2))], {}, InputTypeError),
    ({"a": np.zeros((4, 2))}, {"reference": "z"}, InputTypeError),
    ({"a": np.zeros(4)}, {}, ShapeError),
    ({"a": np.ones((4, 2)), "b": np.ones((5, 2))}, {}, ShapeError),
    ({"a": np.ones((1, 2))}, {}, ShapeError),
    ({"a": np.ones((4, 2))}, {"n_components": 3}, ShapeError),
    ({"a": np.ones((4, 2))}, {"n_components": 0}, RelrepsError),
    ({"a": np.ones((4, 2))}, {"n_components": 1.5}, InputTypeError),
    ({"a": np.array([[1.0, np.nan], [0.0, 1.0]])}, {}, RelrepsError),
    ({"a": "not an array"}, {}, RelrepsError),
])
def test_bad_inputs_are_named_errors(spaces, kw, error):
    with pytest.raises(error):
        shared_basis(spaces, **kw)


def test_plot_shared_bases_titles_each_panel_with_its_correlation():
    from matplotlib.figure import Figure

    x = _space()
    y = x @ _rotation(8, 4)
    bases = {"absolute": shared_basis({"s0": x, "s1": y}),
             "relative": shared_basis({"s0": x, "s1": x * 2})}
    fig = Figure()
    axes = plot_shared_bases(fig, bases, np.arange(200) % 3)
    assert axes.shape == (2, 2)
    assert "reference" in axes[0, 0].get_title()
    c = bases["absolute"]["correlation"]["s1"]
    assert axes[0, 1].get_title() == f"absolute: s1\naxis corr {c[0]:.2f} / {c[1]:.2f}"
    assert axes[1, 1].get_title().endswith("axis corr 1.00 / 1.00")
    with pytest.raises(InputTypeError):
        plot_shared_bases(Figure(), {}, np.zeros(3))


def test_a_single_value_has_no_spread_printed():
    assert fmt_mean_std(0.5, float("nan"), 1, 100) == "50.0"
    assert fmt_mean_std(0.5, None) == "0.50"
    assert fmt_mean_std(0.5, 0.01, 1, 100) == "50.0 ± 1.0"
    assert fmt_mean_std(float("nan"), 0.1) == "-"
    table = pivot_table([{"m": "a", "k": "x", "v": 1.0}], "m", "k", "v")
    assert "nan" not in table and "1.00" in table
