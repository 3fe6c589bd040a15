"""Conv AE/VAE and CNN (absolute and relative) and the frozen EfficientNet-Lite encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relreps.datasets.images import load_digits_images, stratified_subsample
from relreps.models import vision as mv

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    tr = load_digits_images("train", n=400, seed=0)
    te = load_digits_images("test", n=100, seed=0)
    anchors = tr.x[stratified_subsample(tr.y, 40, seed=0)]
    return tr, te, anchors


def _rotate_encoder_output(model: torch.nn.Module, seed: int = 0) -> None:
    """Apply a random orthogonal map to the encoder's output (its last linear layer)."""
    last = model.encoder.net[-1]
    d = last.out_features
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        last.weight.copy_(q @ last.weight)
        last.bias.copy_(q @ last.bias)


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("relative", [False, True])
def test_autoencoder_shapes_and_range(digits, variational, relative):
    tr, _, anchors = digits
    torch.manual_seed(0)
    m = mv.ImageAutoencoder(1, 8, latent_dim=8, variational=variational, relative=relative,
                            n_anchors=len(anchors))
    m.set_anchors(anchors)
    m.train()
    with torch.no_grad():
        recon, mu, logvar = m(torch.as_tensor(tr.x[:16]))
    assert recon.shape == (16, 1, 8, 8)
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    assert mu.shape == (16, 8)
    assert (logvar is not None) == variational
    out = mv.reconstruct(m, tr.x[:16])
    assert out.shape == (16, 1, 8, 8) and np.isfinite(out).all()


def test_relative_model_needs_anchors(digits):
    tr, _, _ = digits
    m = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=True, n_anchors=40)
    with pytest.raises(RuntimeError, match="set_anchors"):
        m(torch.as_tensor(tr.x[:4]))


def test_no_gradient_flows_through_the_anchors(digits):
    tr, _, anchors = digits
    torch.manual_seed(0)
    m = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=True, n_anchors=len(anchors))
    m.set_anchors(anchors)
    assert not m.anchor_latents().requires_grad
    x = torch.as_tensor(tr.x[:8])
    recon, _, _ = m(x)
    ((recon - x) ** 2).mean().backward()
    g_full = [p.grad.clone() for p in m.encoder.parameters()]
    # the same loss with anchor latents computed outside the graph gives the same gradient
    m.zero_grad()
    z = m.latent(x)
    a = m.latent(m.anchor_images).detach()
    recon2 = m.decode_from(z, a)
    ((recon2 - x) ** 2).mean().backward()
    for g1, p in zip(g_full, m.encoder.parameters()):
        assert torch.allclose(g1, p.grad, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in g_full)


def test_relative_decoder_is_invariant_to_rotating_the_encoder(digits):
    """Zero-shot stitching's premise: an angle-preserving change of the latent space does not
    change what the relative decoder sees; the absolute decoder breaks."""
    _, te, anchors = digits
    for relative in (True, False):
        torch.manual_seed(1)
        m = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=relative, n_anchors=len(anchors))
        m.set_anchors(anchors)
        rotated = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=relative,
                                      n_anchors=len(anchors))
        rotated.set_anchors(anchors)
        rotated.load_state_dict(m.state_dict())
        _rotate_encoder_output(rotated)
        same = mv.reconstruct(m, te.x)
        stitched = mv.stitch_reconstruct(rotated, m, te.x)
        diff = np.abs(same - stitched).max()
        if relative:
            assert diff < 1e-4
        else:
            assert diff > 1e-3


def test_stitching_requires_matching_kinds(digits):
    _, te, anchors = digits
    a = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=True, n_anchors=len(anchors))
    a.set_anchors(anchors)
    b = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=False)
    with pytest.raises(ValueError):
        mv.stitch_reconstruct(a, b, te.x)


def test_training_reduces_reconstruction_error(digits):
    tr, te, anchors = digits
    torch.manual_seed(0)
    m = mv.ImageAutoencoder(1, 8, latent_dim=8, relative=True, n_anchors=len(anchors))
    m.set_anchors(anchors)
    before = mv.reconstruction_mse(mv.reconstruct(m, te.x), te.x)
    hist = mv.train_autoencoder(m, tr.x, mv.TrainConfig(epochs=6, batch_size=32, lr=3e-3))
    after = mv.reconstruction_mse(mv.reconstruct(m, te.x), te.x)
    assert hist[-1] < hist[0]
    assert after < 0.8 * before
    assert not m.training


def test_vae_training_is_deterministic_given_seed(digits):
    tr, te, _ = digits
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = mv.ImageAutoencoder(1, 8, latent_dim=4, variational=True)
        mv.train_autoencoder(m, tr.x[:128], mv.TrainConfig(epochs=1, batch_size=32, seed=3))
        outs.append(mv.reconstruct(m, te.x[:8]))
    assert np.array_equal(outs[0], outs[1])


def test_cnn_learns_digits_and_relative_head_is_rotation_invariant(digits):
    tr, te, anchors = digits
    torch.manual_seed(0)
    m = mv.CNNClassifier(1, 8, 10, latent_dim=16, relative=True, n_anchors=len(anchors))
    m.set_anchors(anchors)
    mv.train_classifier(m, tr.x, tr.y, mv.TrainConfig(epochs=8, batch_size=32, lr=3e-3))
    acc = float((mv.predict_logits(m, te.x).argmax(1) == te.y).mean())
    assert acc > 0.5  # chance is 0.1
    rotated = mv.CNNClassifier(1, 8, 10, latent_dim=16, relative=True, n_anchors=len(anchors))
    rotated.set_anchors(anchors)
    rotated.load_state_dict(m.state_dict())
    _rotate_encoder_output(rotated, seed=5)
    np.testing.assert_allclose(mv.stitch_logits(rotated, m, te.x), mv.predict_logits(m, te.x),
                               rtol=1e-3, atol=1e-3)
    rel = mv.relative_latents(m, te.x)
    assert rel.shape == (len(te), len(anchors)) and np.abs(rel).max() <= 1 + 1e-5


# ---------------------------------------------------------------- EfficientNet-Lite encoders

def _encoder_or_skip(variant, resolution):
    pytest.importorskip("geffnet")
    from relreps.encoders.vision import EfficientNetLiteEncoder
    from relreps.errors import DataNotFoundError

    enc = EfficientNetLiteEncoder(variant, resolution=resolution)
    try:
        _ = enc.model
    except DataNotFoundError as e:
        pytest.skip(str(e))
    return enc


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_efficientnet_features_cached_per_image(variant, tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _encoder_or_skip(variant, 64)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    f = enc.encode(imgs)
    assert f.shape == (3, 1280) and f.dtype == np.float32 and np.isfinite(f).all()
    assert f.min() >= 0 and f.max() <= 6.0 + 1e-4  # pooled ReLU6 activations
    assert len(list((tmp_path / "embeddings" / enc.name).glob("*.npy"))) == 3
    # a reordered subset comes from the cache and matches; floats in [0, 1] give the same key
    sub = enc.encode(imgs[[2, 0]].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(sub, f[[2, 0]])
    np.testing.assert_allclose(enc.encode(imgs[:1], use_cache=False), f[:1], atol=1e-5)
    assert not np.allclose(f[0], f[1])


def test_efficientnet_weights_are_pretrained():
    """ImageNet weights, not a random init: BN running statistics differ from the defaults."""
    enc = _encoder_or_skip("lite0", 64)
    bn = enc.model.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    from relreps.encoders.vision import load_efficientnet_lite
    from relreps.errors import RelrepsError

    with pytest.raises(RelrepsError):
        load_efficientnet_lite("lite7")
