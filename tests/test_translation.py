"""Latent space translation: exact recovery of known maps, shapes, scaling, numpy/torch."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps.errors import AnchorError, RelrepsError
from relreps.translation import LatentTranslator, translate


def _orthogonal(d, rng):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(2, 12), scale=st.floats(0.1, 10.0))
def test_orthogonal_recovers_exact_similarity_transform(seed, d, scale):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3 * d + 5, d))
    q = _orthogonal(d, rng)
    shift = rng.normal(size=d) * 3
    b = scale * a @ q + shift  # rotation, isotropic scale and shift: all undone by the method
    tr = LatentTranslator("orthogonal").fit(a, b)
    x = rng.normal(size=(7, d))
    np.testing.assert_allclose(tr.transform(x), scale * x @ q + shift, atol=1e-6)
    assert tr.residual(a, b) < 1e-8


@pytest.mark.parametrize("method", ["lstsq", "affine"])
def test_least_squares_recovers_general_linear_map(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 6))
    m = rng.normal(size=(6, 4))
    b = a @ m + np.array([1.0, -2.0, 0.5, 3.0])
    tr = LatentTranslator(method).fit(a, b)
    x = rng.normal(size=(5, 6))
    np.testing.assert_allclose(tr.transform(x), x @ m + np.array([1.0, -2.0, 0.5, 3.0]),
                               atol=1e-8)
    # orthogonal cannot represent a general linear map between widths 6 and 4
    assert LatentTranslator("orthogonal").fit(a, b).residual(a, b) > 0.05


def test_affine_without_scaling_learns_the_bias_lstsq_cannot():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    b = a + 10.0
    aff = LatentTranslator("affine", std_scaling=False).fit(a, b)
    lin = LatentTranslator("lstsq", std_scaling=False).fit(a, b)
    assert aff.residual(a, b) < 1e-8
    assert lin.residual(a, b) > 0.5
    np.testing.assert_allclose(aff.bias_, 10.0, atol=1e-8)


def test_zero_padding_between_widths_keeps_the_embedded_subspace():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 3))
    q = _orthogonal(5, rng)
    b = np.pad(a, ((0, 0), (0, 2))) @ q  # A isometrically embedded in a 5-d space
    tr = LatentTranslator("orthogonal").fit(a, b)
    assert tr.matrix_.shape == (3, 5)
    x = rng.normal(size=(4, 3))
    np.testing.assert_allclose(tr.transform(x), np.pad(x, ((0, 0), (0, 2))) @ q, atol=1e-6)
    # and back: 5 -> 3 drops the padding dimensions
    back = LatentTranslator("orthogonal").fit(b, a)
    np.testing.assert_allclose(back.transform(b[:4]), a[:4], atol=1e-6)


def test_torch_in_torch_out_and_differentiable():
    rng = np.random.default_rng(3)
    a, q = rng.normal(size=(30, 4)), _orthogonal(4, rng)
    tr = LatentTranslator().fit(torch.tensor(a), torch.tensor(a @ q))
    x = torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float32, requires_grad=True)
    y = tr.transform(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    np.testing.assert_allclose(y.detach().numpy(), x.detach().numpy() @ q, atol=1e-5)
    np.testing.assert_allclose(translate(a[:2], a, a @ q), a[:2] @ q, atol=1e-8)


def test_std_scaling_matters_when_scales_differ():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(50, 4))
    q = _orthogonal(4, rng)
    b = 100.0 * a @ q
    assert LatentTranslator("orthogonal", std_scaling=True).fit(a, b).residual(a, b) < 1e-8
    assert LatentTranslator("orthogonal", std_scaling=False).fit(a, b).residual(a, b) > 0.9


def test_errors():
    rng = np.random.default_rng(5)
    with pytest.raises(RelrepsError, match="method"):
        LatentTranslator("sgd").fit(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)))
    with pytest.raises(AnchorError):
        LatentTranslator().fit(rng.normal(size=(5, 2)), rng.normal(size=(6, 2)))
    with pytest.raises(RelrepsError):
        LatentTranslator().transform(np.zeros((2, 2)))
    tr = LatentTranslator().fit(rng.normal(size=(5, 2)), rng.normal(size=(5, 3)))
    with pytest.raises(RelrepsError):
        tr.transform(np.zeros((2, 3)))
    with pytest.raises(RelrepsError):
        LatentTranslator().fit(torch.zeros(5, 2), np.zeros((5, 2)))


@pytest.mark.parametrize("method", ["orthogonal", "lstsq", "affine"])
@pytest.mark.parametrize("std_scaling", [True, False])
def test_constant_target_features_keep_their_anchor_value(method, std_scaling):
    rng = np.random.default_rng(6)
    a = rng.normal(size=(20, 8))
    b = np.hstack([a @ _orthogonal(8, rng)[:, :6], np.full((20, 1), 0.25),
                   rng.normal(0, 1e-33, (20, 1))])  # a constant and a dead feature
    tr = LatentTranslator(method, std_scaling=std_scaling).fit(a, b)
    np.testing.assert_array_equal(tr.constant_features_, [6, 7])
    out = tr.transform(rng.normal(0, 3, size=(50, 8)))
    np.testing.assert_allclose(out[:, 6], 0.25, rtol=1e-12)
    assert np.abs(out[:, 7]).max() < 1e-32
    assert LatentTranslator(method).fit(a, b[:, :6]).constant_features_.size == 0
    off = LatentTranslator(method, std_scaling=std_scaling, constant_rtol=0.0).fit(a, b)
    assert off.constant_features_.size == 0
    # a small but live feature (1e-3 of the others) is translated, not held
    small = np.hstack([b[:, :6], 1e-3 * a[:, :1]])
    assert LatentTranslator(method).fit(a, small).constant_features_.size == 0


@pytest.mark.parametrize("filtered", [True, False])
def test_orthogonal_into_a_space_with_dead_features_keeps_its_head(filtered):
    """The minimal reproduction of issue 14.2 (scripts/translation_repro.py, part 1): B is a
    noisy rotation of A plus three dead features (as all-MiniLM-L6-v2); a standardising head
    fitted on B read orthogonally translated A at chance before the fix. The head is the
    protocol's (`make_head("logreg-cv")`, C cross-validated on B's fit rows) with and without
    its ConstantFeatureFilter: the dead features are noise around zero, not constant at float32
    resolution, so the filter keeps them and only the translator's fix protects the head."""
    from relreps.stitching import make_head

    rng = np.random.default_rng(0)
    d, n = 32, 1200
    y = rng.integers(0, 4, n)
    a = rng.normal(0, 0.4, (4, d))[y] + rng.normal(size=(n, d))
    b = np.zeros((n, d + 3))
    live = np.setdiff1d(np.arange(d + 3), [5, 17, 30])
    b[:, live] = a @ _orthogonal(d, rng) + 0.3 * rng.normal(size=(n, d))
    b[:, [5, 17, 30]] = rng.normal(0, 1e-33, (n, 3))
    head = make_head("logreg-cv") if filtered else make_head("logreg-cv")[1:]
    head.fit(b[:800], y[:800])
    if filtered:
        assert head[0].keep_.all()  # the dead features pass the filter
    own = (head.predict(b[800:]) == y[800:]).mean()
    anchors = rng.choice(800, 24, replace=False)  # fewer anchors than dimensions
    before = LatentTranslator("orthogonal", constant_rtol=0.0).fit(a[anchors], b[anchors])
    assert (head.predict(before.transform(a[800:])) == y[800:]).mean() < 0.35  # the failure
    tr = LatentTranslator("orthogonal").fit(a[anchors], b[anchors])
    stitched = (head.predict(tr.transform(a[800:])) == y[800:]).mean()
    assert stitched > own - 0.15 and stitched > 0.6  # chance is 0.25
