"""center="auto" and the collapse warning of plain cosine on anisotropic anchors (issue 10)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import relative_projection
from relreps.centering import AUTO_THRESHOLD, AnisotropyWarning, anisotropy

pytestmark = pytest.mark.usefixtures("one_thread")


def _space(offset: float, n: int = 200, d: int = 24, seed: int = 0):
    """Gaussian cloud shifted along one common direction: anisotropy grows with the offset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + offset * np.ones(d) / np.sqrt(d) * 4
    return x, x[rng.choice(n, 30, replace=False)]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_auto_centres_anisotropic_anchors_only(kind):
    for offset, centred in ((0.0, False), (6.0, True)):
        x, a = _space(offset)
        assert (anisotropy(a) > AUTO_THRESHOLD) == centred
        if kind == "torch":
            x, a = torch.tensor(x), torch.tensor(a)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto never warns: it centres instead
            got = relative_projection(x, a, center="auto")
        want = relative_projection(x, a, center="anchors" if centred else None)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_auto_with_a_single_anchor_does_not_centre():
    x, a = _space(6.0)
    np.testing.assert_array_equal(relative_projection(x, a[:1], center="auto"),
                                  relative_projection(x, a[:1]))


def test_plain_cosine_on_anisotropic_anchors_warns_at_the_callers_line():
    x, a = _space(6.0)
    with pytest.warns(AnisotropyWarning, match=r"mean pairwise cosine 0\.\d\d .*center='auto'") \
            as rec:
        relative_projection(x, a)
    assert rec[0].filename == __file__
    with pytest.warns(AnisotropyWarning):
        relative_projection(x, a, similarity="angular")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relative_projection(x, a, center="anchors")
        relative_projection(x, a, similarity="euclidean")  # distances do not collapse
        relative_projection(*_space(0.0))  # isotropic: nothing to say


def test_no_warning_while_building_an_autograd_graph():
    x, a = _space(6.0)
    tx = torch.tensor(x, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relative_projection(tx, torch.tensor(a)).sum().backward()  # a training step
    with torch.no_grad(), pytest.warns(AnisotropyWarning):
        relative_projection(tx, torch.tensor(a))  # inference: warned


def test_centring_rescues_the_collapsed_space():
    """The reason for the warning: plain cosine nearly constant, centred cosine informative."""
    x, a = _space(12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnisotropyWarning)
        plain = relative_projection(x, a)
    centred = relative_projection(x, a, center="auto")
    assert plain.std(1).mean() < 0.1 < centred.std(1).mean()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(offset=st.floats(0, 20), seed=st.integers(0, 1000),
       t=st.lists(st.floats(-50, 50), min_size=24, max_size=24))
def test_auto_decision_is_the_documented_rule_and_anchors_centring_is_translation_free(
        offset, seed, t):
    x, a = _space(offset, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnisotropyWarning)
        got = relative_projection(x, a, center="auto")
        rule = "anchors" if anisotropy(a) > AUTO_THRESHOLD else None
        np.testing.assert_array_equal(got, relative_projection(x, a, center=rule))
    shift = np.asarray(t)
    np.testing.assert_allclose(relative_projection(x + shift, a + shift, center="anchors"),
                               relative_projection(x, a, center="anchors"), atol=1e-9)
