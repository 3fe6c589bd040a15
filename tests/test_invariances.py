"""Product of invariances: shapes, normalisation, aggregation, declared invariances, nn.Module."""

import numpy as np
import pytest
import torch

from relreps.errors import RelrepsError
from relreps.invariances import ProductRelativeLayer, normalize_rows, product_projection
from relreps.projection import relative_projection


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(20, 5)), rng.normal(size=(7, 5))


def test_concat_blocks_are_the_normalised_single_projections(data):
    x, a = data
    r = product_projection(x, a, similarities=("cosine", "l1"))
    assert r.shape == (20, 14)
    np.testing.assert_allclose(r[:, 7:], normalize_rows(relative_projection(x, a,
                                                                            similarity="l1")))
    np.testing.assert_allclose(r.mean(1), 0, atol=1e-10)
    np.testing.assert_allclose(r[:, :7].std(1), 1, atol=1e-6)


def test_sum_mean_weighted(data):
    x, a = data
    parts = product_projection(x, a, similarities=("cosine", "euclidean"))
    s = product_projection(x, a, similarities=("cosine", "euclidean"), aggregation="sum")
    np.testing.assert_allclose(s, parts[:, :7] + parts[:, 7:])
    m = product_projection(x, a, similarities=("cosine", "euclidean"), aggregation="mean")
    np.testing.assert_allclose(m, s / 2)
    w = product_projection(x, a, similarities=("cosine", "euclidean"), aggregation="weighted",
                           weights=[1.0, 0.0])
    np.testing.assert_allclose(w, parts[:, :7])
    with pytest.raises(RelrepsError):
        product_projection(x, a, aggregation="weighted")


def test_standardised_euclidean_becomes_scale_invariant_but_raw_is_not(data):
    x, a = data
    r1 = product_projection(x, a, similarities=("euclidean", "l1", "linf"))
    r2 = product_projection(3.7 * x, 3.7 * a, similarities=("euclidean", "l1", "linf"))
    np.testing.assert_allclose(r1, r2, atol=1e-8)
    raw = product_projection(3.7 * x, 3.7 * a, similarities=("euclidean",), normalization="none")
    assert not np.allclose(raw, product_projection(x, a, similarities=("euclidean",),
                                                   normalization="none"))


def test_product_keeps_only_the_shared_invariance(data):
    """Rotation: the cosine and euclidean blocks are invariant, the L1 block is not."""
    x, a = data
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))
    sims = ("cosine", "euclidean", "l1")
    r1, r2 = product_projection(x, a, similarities=sims), \
        product_projection(x @ q, a @ q, similarities=sims)
    np.testing.assert_allclose(r1[:, :14], r2[:, :14], atol=1e-8)
    assert not np.allclose(r1[:, 14:], r2[:, 14:], atol=1e-3)
    # translation is shared by all three once centred on the anchors
    t = np.arange(5.0)
    np.testing.assert_allclose(product_projection(x, a, similarities=sims, center="anchors"),
                               product_projection(x + t, a + t, similarities=sims,
                                                  center="anchors"), atol=1e-8)


def test_layer_learns_its_weights_and_matches_functional(data):
    x, a = data
    xt, at = torch.tensor(x, dtype=torch.float32), torch.tensor(a, dtype=torch.float32)
    layer = ProductRelativeLayer(aggregation="weighted", n_anchors=7)
    assert layer.out_features == 7
    w0 = layer.weights().detach().numpy()
    np.testing.assert_allclose(w0, 0.25)
    np.testing.assert_allclose(layer(xt, at).detach().numpy(),
                               product_projection(x, a, aggregation="mean"), atol=1e-5)
    # push the weight of the cosine block up by fitting its output
    target = torch.tensor(product_projection(x, a, similarities=("cosine",)), dtype=torch.float32)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(50):
        loss = (layer(xt, at) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert layer.weights()[0] > 0.5
    concat = ProductRelativeLayer(n_anchors=7)
    assert concat(xt, at).shape == (20, 28) and concat.out_features == 28


def test_errors(data):
    x, a = data
    with pytest.raises(RelrepsError):
        product_projection(x, a, similarities=())
    with pytest.raises(RelrepsError):
        product_projection(x, a, similarities=("cosine", "cosine"))
    with pytest.raises(RelrepsError):
        product_projection(x, a, aggregation="attention")
    with pytest.raises(RelrepsError):
        normalize_rows(x, "zscore")
    with pytest.raises(RelrepsError):
        ProductRelativeLayer(n_anchors=3)(torch.zeros(2, 5) + 1, torch.ones(4, 5))


def test_arguments_are_validated_with_named_errors(data):
    from relreps.errors import InputTypeError

    x, a = data
    with pytest.raises(InputTypeError, match="similarities must be a sequence"):
        product_projection(x, a, similarities="cosine")
    with pytest.raises(RelrepsError, match="unknown similarity"):
        product_projection(x, a, similarities=("cosine", "cosin"))
    with pytest.raises(RelrepsError, match="weights\\[1\\] must be finite"):
        product_projection(x, a, similarities=("cosine", "l1"), aggregation="weighted",
                           weights=[1.0, float("nan")])
    with pytest.raises(InputTypeError, match="weights\\[0\\] must be a number"):
        product_projection(x, a, similarities=("cosine", "l1"), aggregation="weighted",
                           weights=["a", 1.0])
    with pytest.raises(RelrepsError, match="only used with aggregation='weighted'"):
        product_projection(x, a, weights=[1, 1, 1, 1])
    with pytest.raises(RelrepsError, match="chunk_size"):
        product_projection(x, a, chunk_size=2.5)
    with pytest.raises(RelrepsError, match="eps must be >= 0"):
        normalize_rows(x, eps=-1.0)
    with pytest.raises(RelrepsError, match="NaN or inf"):
        normalize_rows(np.array([[1.0, np.nan]]))
    layer = ProductRelativeLayer(n_anchors=7)
    with pytest.raises(InputTypeError, match="x must be a torch tensor"):
        layer(x, torch.tensor(a))
    for bad in (dict(anchor_grad="some"), dict(normalization="z"), dict(n_anchors=2.5),
                dict(aggregation="max")):
        with pytest.raises(RelrepsError):
            ProductRelativeLayer(**bad)


def test_normalisation_is_scale_free_across_the_float_range():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(4, 6))
    for norm in ("standard", "l2"):
        want = normalize_rows(r, norm)
        for scale in (1e-300, 1e-30, 1e30, 1e300):
            np.testing.assert_allclose(normalize_rows(r * scale, norm), want, rtol=1e-7,
                                       atol=1e-7)
        got32 = normalize_rows((r * 1e30).astype(np.float32), norm)
        assert np.isfinite(got32).all()
        np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-5)


def test_product_with_auto_centre_equals_the_decided_centring(data):
    x, a = data
    shifted_x, shifted_a = x + 8.0, a + 8.0  # anisotropic: auto centres
    np.testing.assert_allclose(product_projection(shifted_x, shifted_a, center="auto"),
                               product_projection(shifted_x, shifted_a, center="anchors"))
