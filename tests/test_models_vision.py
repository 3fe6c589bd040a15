"""Conv AE/VAE and CNN (absolute and relative) and the frozen EfficientNet-Lite encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _aes(n, anchors, variational=False, relative=True):
    out = []
    for s in range(n):
        torch.manual_seed(s)
        m = mv.ImageAutoencoder(1, 8, latent_dim=8, variational=variational, relative=relative,
                                n_anchors=len(anchors))
        m.set_anchors(anchors)
        out.append(m)
    return out


def _val_loss(m, x, kl_weight):
    with torch.no_grad():
        return mv._mean_over_batches(lambda sl: mv._ae_loss(m, torch.as_tensor(x[sl]),
                                                            kl_weight), len(x))


@pytest.mark.parametrize("variational", [False, True])
def test_early_stopping_restores_the_best_validation_epoch(digits, variational):
    tr, te, anchors = digits
    models = _aes(2, anchors, variational=variational)
    cfg = mv.TrainConfig(epochs=12, batch_size=32, lr=2e-2, kl_weight=0.05, patience=2)
    hists = mv.train_autoencoders(models, tr.x[:200], cfg, seeds=[0, 1], x_val=tr.x[200:300])
    for m, h in zip(models, hists):
        assert len(h.val_loss) == len(h.train_loss) == h.epochs_run <= 12
        assert h.best_epoch == int(np.argmin(h.val_loss)) + 1
        # the model holds the weights of its best validation epoch
        assert np.isclose(_val_loss(m, tr.x[200:300], 0.05), min(h.val_loss), rtol=1e-5)
        assert not m.training
    run = hists[0].epochs_run
    assert all(h.epochs_run == run for h in hists)
    assert run == 12 or all(run - h.best_epoch >= 2 for h in hists)


def test_group_training_equals_training_alone(digits):
    tr, te, anchors = digits
    cfg = mv.TrainConfig(epochs=2, batch_size=32, kl_weight=0.05)
    group = _aes(2, anchors, variational=True)
    mv.train_autoencoders(group, tr.x[:128], cfg, seeds=[4, 5], x_val=tr.x[128:160])
    alone = _aes(2, anchors, variational=True)[1]
    mv.train_autoencoders([alone], tr.x[:128], cfg, seeds=[5], x_val=tr.x[128:160])
    np.testing.assert_array_equal(mv.reconstruct(group[1], te.x[:8]),
                                  mv.reconstruct(alone, te.x[:8]))


def test_stitching_mse_matrix_matches_stitch_reconstruct(digits):
    tr, te, anchors = digits
    models = _aes(2, anchors)
    mse = mv.stitching_mse_matrix(models, te.x)
    for i in range(2):
        for j in range(2):
            ref = mv.reconstruction_mse(mv.stitch_reconstruct(models[i], models[j], te.x), te.x)
            assert np.isclose(mse[i, j], ref, rtol=1e-5)


def test_cnn_group_early_stopping(digits):
    tr, te, anchors = digits
    models = []
    for s in range(2):
        torch.manual_seed(s)
        m = mv.CNNClassifier(1, 8, 10, latent_dim=16, relative=True, n_anchors=len(anchors))
        m.set_anchors(anchors)
        models.append(m)
    hists = mv.train_classifiers(models, tr.x[:300], tr.y[:300],
                                 mv.TrainConfig(epochs=6, batch_size=32, lr=3e-3, patience=2),
                                 seeds=[0, 1], x_val=tr.x[300:], y_val=tr.y[300:])
    for h in hists:
        assert h.best_epoch == int(np.argmin(h.val_loss)) + 1
        assert h.val_loss[-1] < np.log(10)  # better than uniform guessing


def test_training_input_validation(digits):
    from relreps.errors import OptionError, RelrepsError, ShapeError

    tr, _, anchors = digits
    models = _aes(1, anchors)
    with pytest.raises(OptionError, match="x_val"):
        mv.train_autoencoders(models, tr.x[:64], mv.TrainConfig(epochs=1, patience=1))
    with pytest.raises(ShapeError):
        mv.train_autoencoders(models, tr.x[:64], mv.TrainConfig(epochs=1),
                              x_val=tr.x[:8, :, :4, :4])
    with pytest.raises(ShapeError):
        mv.train_autoencoders(models, tr.x[:64], mv.TrainConfig(epochs=1), seeds=[0, 1])
    with pytest.raises(ShapeError):
        mv.train_autoencoders(models, tr.x[0], mv.TrainConfig(epochs=1))
    with pytest.raises(RelrepsError):
        mv.train_classifiers([], tr.x[:64], tr.y[:64], mv.TrainConfig(epochs=1))


@given(epochs=st.integers(-5, 0), patience=st.one_of(st.none(), st.integers(-3, 0)))
@settings(max_examples=20, deadline=None)
def test_train_config_rejects_non_positive_counts(epochs, patience):
    from relreps.errors import RelrepsError

    with pytest.raises(RelrepsError):
        mv.TrainConfig(epochs=epochs, patience=patience).check()
    if patience is not None:
        with pytest.raises(RelrepsError, match="patience"):
            mv.TrainConfig(epochs=1, patience=patience).check()


def test_centred_relative_autoencoder_is_invariant_to_a_latent_shift():
    import torch

    from relreps.models.vision import ImageAutoencoder

    torch.manual_seed(0)
    z, anchors = torch.randn(6, 8), torch.randn(12, 8)
    shift = 5.0 * torch.randn(1, 8)
    cen = ImageAutoencoder(1, 28, latent_dim=8, relative=True, n_anchors=12, center="anchors")
    plain = ImageAutoencoder(1, 28, latent_dim=8, relative=True, n_anchors=12)
    cen.eval(), plain.eval()
    with torch.no_grad():
        a, b = cen.decode_from(z, anchors), cen.decode_from(z + shift, anchors + shift)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert a.shape == (6, 1, 28, 28)
        p, q = plain.decode_from(z, anchors), plain.decode_from(z + shift, anchors + shift)
        assert (p - q).abs().max() > 1e-3  # plain cosine is not shift-invariant
