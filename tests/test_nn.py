"""Torch modules: RelativeLayer, RelativeEncoder, BatchFeatureNorm, heads, TorchClassifier."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from relreps import relative_projection
from relreps.errors import AnchorError, InputTypeError, NonFiniteError, RelrepsError
from relreps.nn import (
    BatchFeatureNorm,
    RelativeClassifierHead,
    RelativeEncoder,
    RelativeLayer,
    TorchClassifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _latents(n: int = 16, k: int = 5, d: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)


# --------------------------------------------------------------------------- RelativeLayer

def test_layer_without_normalisation_is_the_projection():
    x, a = _latents()
    layer = RelativeLayer(similarity="euclidean", center="anchors")
    torch.testing.assert_close(layer(x, a), relative_projection(x, a, similarity="euclidean",
                                                                center="anchors"))
    assert "euclidean" in repr(layer) and "detach" in repr(layer)


def test_layer_l2_gives_unit_rows():
    x, a = _latents()
    r = RelativeLayer(similarity="inner", normalization="l2")(x, a)
    torch.testing.assert_close(r.norm(dim=1), torch.ones(len(x)))
    raw = relative_projection(x, a, similarity="inner")
    torch.testing.assert_close(r, raw / raw.norm(dim=1, keepdim=True))


def test_layer_layernorm_normalises_each_sample_over_the_anchors():
    x, a = _latents()
    layer = RelativeLayer(normalization="layernorm", n_anchors=5)
    r = layer(x, a)
    torch.testing.assert_close(r.mean(1), torch.zeros(len(x)), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.var(1, unbiased=False), torch.ones(len(x)), atol=1e-3, rtol=0)
    assert sum(p.numel() for p in layer.parameters()) == 10  # learnable affine per anchor


def test_layer_batchnorm_normalises_each_anchor_over_the_batch():
    x, a = _latents(n=32)
    layer = RelativeLayer(normalization="batchnorm", n_anchors=5).train()
    r = layer(x, a)
    torch.testing.assert_close(r.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.var(0, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)
    # In eval mode it uses its running statistics: a single sample works.
    layer.eval()
    assert layer(x[:1], a).shape == (1, 5)


def test_layer_argument_errors():
    with pytest.raises(RelrepsError, match="anchor_grad"):
        RelativeLayer(anchor_grad="stop")
    with pytest.raises(RelrepsError, match="normalization"):
        RelativeLayer(normalization="rms")
    with pytest.raises(RelrepsError, match="needs n_anchors"):
        RelativeLayer(normalization="layernorm")
    x, a = _latents()
    with pytest.raises(RelrepsError, match="built for 4 anchors, got 5"):
        RelativeLayer(normalization="batchnorm", n_anchors=4)(x, a)


@pytest.mark.parametrize("normalization", ["none", "l2", "layernorm", "batchnorm"])
def test_anchor_grad_policy(normalization):
    x, a = _latents()
    x.requires_grad_(True)
    a.requires_grad_(True)
    detach = RelativeLayer(normalization=normalization, n_anchors=5)
    detach(x, a).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert a.grad is None
    x.grad = None
    full = RelativeLayer(normalization=normalization, n_anchors=5, anchor_grad="full")
    full(x, a).square().sum().backward()
    assert x.grad is not None and a.grad is not None and a.grad.abs().sum() > 0


# --------------------------------------------------------------------------- RelativeEncoder

class CountingEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


@pytest.mark.parametrize("anchor_grad", ["detach", "full"])
def test_encoder_reencodes_anchors_every_forward(anchor_grad):
    torch.manual_seed(0)
    enc = CountingEncoder()
    anchor_inputs = torch.randn(6, 3)
    model = RelativeEncoder(enc, anchor_inputs, RelativeLayer(anchor_grad=anchor_grad))
    x = torch.randn(10, 3)
    out1 = model(x)
    assert out1.shape == (10, 6) and enc.calls == 2
    # The output is the projection onto the anchors encoded by the *current* encoder.
    torch.testing.assert_close(out1, relative_projection(enc.lin(x), enc.lin(anchor_inputs)))
    with torch.no_grad():
        enc.lin.weight.mul_(-2.0).add_(0.3)
    out2 = model(x)
    assert enc.calls == 4
    torch.testing.assert_close(out2, relative_projection(enc.lin(x), enc.lin(anchor_inputs)))
    assert not torch.allclose(out1, out2)
    # Anchor inputs are a buffer: they move with the module and are saved in its state.
    assert "anchor_inputs" in model.state_dict()


def test_encoder_gradients_through_anchor_path_only_with_full_policy():
    torch.manual_seed(0)
    anchor_inputs = torch.randn(6, 3)
    x = torch.randn(10, 3)
    grads = {}
    for policy in ("detach", "full"):
        torch.manual_seed(1)
        enc = nn.Linear(3, 4)
        model = RelativeEncoder(enc, anchor_inputs, RelativeLayer(anchor_grad=policy))
        model(x).sum().backward()
        grads[policy] = enc.weight.grad.clone()
    # Both train the encoder, but "full" also backpropagates through the anchors' encoding.
    assert grads["detach"].abs().sum() > 0
    assert not torch.allclose(grads["detach"], grads["full"])


def test_encoder_detach_policy_builds_no_graph_for_anchors():
    enc = nn.Linear(3, 4)
    model = RelativeEncoder(enc, torch.randn(5, 3))
    assert not model.encode_anchors().requires_grad
    full = RelativeEncoder(enc, torch.randn(5, 3), RelativeLayer(anchor_grad="full"))
    assert full.encode_anchors().requires_grad


# --------------------------------------------------------------------------- norm and head

def test_batch_feature_norm_standardises_with_the_batch_statistics():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=g) * torch.arange(1, 8) + 5
    norm = BatchFeatureNorm()
    for mode in (norm.train, norm.eval):  # no running statistics: same in both modes
        mode()
        y = norm(x)
        torch.testing.assert_close(y.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
        torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(7), atol=1e-4, rtol=0)
    # Each sample's output depends on the rest of the batch.
    assert not torch.allclose(norm(x[:10])[0], norm(x)[0])
    # A batch of one is only centred (there is no variance to divide by).
    torch.testing.assert_close(norm(x[:1]), torch.zeros(1, 7))
    assert list(norm.parameters()) == [] and list(norm.buffers()) == []


def test_classifier_head_shapes_and_structure():
    head = RelativeClassifierHead(n_anchors=12, n_classes=3, hidden=8)
    out = head(torch.randn(20, 12))
    assert out.shape == (20, 3)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.LayerNorm, nn.Linear, nn.Tanh, BatchFeatureNorm, nn.Linear]
    no_bn = RelativeClassifierHead(12, 3, hidden=8, batch_norm=False)
    assert isinstance(no_bn.net[3], nn.Identity)
    assert no_bn(torch.randn(1, 12)).shape == (1, 3)


# --------------------------------------------------------------------------- TorchClassifier

def _separable(seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    centers = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
    y = rng.integers(0, 3, size=n)
    return (centers[y] + 0.5 * rng.normal(size=(n, 4))).astype(np.float32), \
        np.array(["a", "b", "c"])[y]


def _small_head(d: int, c: int) -> nn.Module:
    return RelativeClassifierHead(d, c, hidden=16)


def test_torch_classifier_learns_a_separable_problem_deterministically():
    x, y = _separable(n=96)
    xt, yt = _separable(seed=1)
    kw = dict(module_factory=_small_head, epochs=8, batch_size=32, lr=1e-2)
    clf = TorchClassifier(random_state=0, **kw).fit(x, y)
    assert list(clf.classes_) == ["a", "b", "c"]
    pred = clf.predict(xt)
    assert (pred == yt).mean() > 0.95
    proba = clf.predict_proba(xt)
    assert proba.shape == (len(xt), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    again = TorchClassifier(random_state=0, **kw).fit(x, y)
    np.testing.assert_array_equal(again.predict_proba(xt), proba)
    other = TorchClassifier(random_state=1, **kw).fit(x, y)
    assert not np.array_equal(other.predict_proba(xt), proba)
    # The global torch RNG is left alone.
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    TorchClassifier(random_state=0, **{**kw, "epochs": 1}).fit(x, y)
    assert torch.equal(torch.rand(1), expected)


def test_torch_classifier_params_and_custom_module():
    built = []

    def factory(d, c):
        built.append((d, c))
        return nn.Linear(d, c)

    clf = TorchClassifier(module_factory=factory, epochs=3, lr=0.05)
    assert clf.get_params()["epochs"] == 3
    assert clf.set_params(epochs=20) is clf and clf.epochs == 20
    x, y = _separable()
    clf.fit(x, y)
    assert built == [(4, 3)]
    assert (clf.predict(x) == y).mean() > 0.9


# --------------------------------------------------------------------------- fixed anchors

def _fixed_layer(**kw):
    x, a = _latents(n=12, k=6, d=5)
    return x, a, RelativeLayer(anchors=a, **kw)


@pytest.mark.parametrize("center", [None, "anchors"])
def test_fixed_anchors_forward_needs_no_anchors(center):
    x, a, layer = _fixed_layer(center=center)
    torch.testing.assert_close(layer(x), relative_projection(x, a, center=center), rtol=0,
                               atol=0)
    assert layer.has_fixed_anchors and layer.n_anchors is None  # any count may follow
    keys = set(layer.state_dict())
    assert keys == ({"anchors", "center_vector"} if center else {"anchors"})
    if center == "anchors":
        torch.testing.assert_close(layer.center_vector, a.mean(0))
    # anchors are a detached copy: changing the caller's tensor changes nothing
    a.add_(1.0)
    torch.testing.assert_close(layer(x), relative_projection(x, a - 1.0, center=center))


def test_set_anchors_and_clear_anchors():
    x, a = _latents(k=5)
    layer = RelativeLayer(center="anchors")
    with pytest.raises(AnchorError, match="no anchors"):
        layer(x)
    assert layer.set_anchors(a) is layer and layer.has_fixed_anchors
    torch.testing.assert_close(layer(x), relative_projection(x, a, center="anchors"))
    # anchors passed to forward still win, centred on their own mean
    b = torch.randn(7, 4)
    torch.testing.assert_close(layer(x, b), relative_projection(x, b, center="anchors"))
    layer.clear_anchors()
    assert layer.anchors is None and layer.center_vector is None
    assert layer.state_dict() == {}
    with pytest.raises(AnchorError, match="built for 5 anchors"):
        RelativeLayer(normalization="layernorm", n_anchors=5).set_anchors(torch.randn(4, 4))


def test_fixed_anchors_with_layernorm_infers_n_anchors():
    x, a, layer = _fixed_layer(normalization="layernorm")
    assert isinstance(layer.norm, nn.LayerNorm) and layer.norm.normalized_shape == (6,)
    assert layer(x).shape == (12, 6)


def test_center_vector_is_a_buffer():
    x, a = _latents()
    vec = torch.randn(4)
    layer = RelativeLayer(center=vec, anchors=a)
    assert layer.center == "vector" and "center_vector" in layer.state_dict()
    torch.testing.assert_close(layer(x), relative_projection(x, a, center=vec))
    # the vector also applies to anchors passed to forward
    b = torch.randn(3, 4)
    torch.testing.assert_close(layer(x, b), relative_projection(x, b, center=vec))
    with pytest.raises(AnchorError, match="centre vector has 4"):
        layer.set_anchors(torch.randn(5, 3))


def test_center_auto_decides_once_on_the_fixed_anchors():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(50, 8, generator=g)
    aniso = iso + 6.0  # a common direction: mean pairwise cosine near 1
    x = torch.randn(10, 8, generator=g) + 6.0
    assert RelativeLayer(center="auto", anchors=iso).center_vector is None
    layer = RelativeLayer(center="auto", anchors=aniso)
    torch.testing.assert_close(layer.center_vector, aniso.mean(0))
    torch.testing.assert_close(layer(x), relative_projection(x, aniso, center="anchors"))
    # the decision is kept for anchors passed to forward
    torch.testing.assert_close(layer(x, aniso[:20]),
                               relative_projection(x, aniso[:20], center="anchors"))
    with pytest.raises(AnchorError, match="decided once on fixed anchors"):
        RelativeLayer(center="auto")(x, aniso)
    with pytest.raises(RelrepsError, match="meta tensors"):
        RelativeLayer(center="auto", anchors=aniso.to("meta"))


def _config_strategy():
    from hypothesis import strategies as st

    return st.fixed_dictionaries({
        "similarity": st.sampled_from(["cosine", "euclidean", "inner", "l1"]),
        "center": st.sampled_from([None, "anchors", "auto"]),
        "normalization": st.sampled_from(["none", "l2", "layernorm", "batchnorm"]),
        "seed": st.integers(0, 2**16), "k": st.integers(2, 9), "d": st.integers(1, 6),
        "offset": st.sampled_from([0.0, 5.0]),
    })


def test_state_dict_round_trip_into_a_fresh_layer_gives_identical_outputs():
    from hypothesis import given, settings

    @settings(max_examples=30, deadline=None)
    @given(cfg=_config_strategy())
    def check(cfg):
        g = torch.Generator().manual_seed(cfg["seed"])
        a = torch.randn(cfg["k"], cfg["d"], generator=g, dtype=torch.float64) + cfg["offset"]
        x = torch.randn(9, cfg["d"], generator=g, dtype=torch.float64) + cfg["offset"]
        kw = {k: cfg[k] for k in ("similarity", "center", "normalization")}
        layer = RelativeLayer(anchors=a, **kw).double()
        if layer.norm is not None:  # non-trivial learnable/running state
            with torch.no_grad():
                for p in layer.norm.parameters():
                    p.uniform_(-2, 2, generator=g)
            layer.train()(x)
        layer.eval()
        fresh = RelativeLayer(n_anchors=cfg["k"], **kw).double().eval()
        fresh.load_state_dict(layer.state_dict())
        assert torch.equal(fresh(x), layer(x))
        assert set(fresh.state_dict()) == set(layer.state_dict())

    check()


def test_load_state_dict_refuses_a_different_centring():
    x, a = _latents()
    centred = RelativeLayer(center="anchors", anchors=a).state_dict()
    with pytest.raises(RuntimeError, match="center_vector"):
        RelativeLayer(center=None).load_state_dict(centred)  # unexpected key
    plain = RelativeLayer(anchors=a).state_dict()
    with pytest.raises(RuntimeError, match="center_vector"):
        RelativeLayer(center="anchors").load_state_dict(plain)  # missing key


def test_to_moves_and_casts_every_buffer():
    x, a, layer = _fixed_layer(center="anchors", normalization="layernorm")
    layer = layer.to(torch.float64)
    assert layer.anchors.dtype == layer.center_vector.dtype == torch.float64
    meta = layer.to("meta")
    assert all(t.is_meta for t in meta.state_dict().values())


def _projection_supports_meta() -> bool:
    try:
        relative_projection(torch.empty(2, 3, device="meta"), torch.empty(4, 3, device="meta"))
        return True
    except Exception:  # noqa: BLE001 - a projection without meta support
        return False


@pytest.mark.skipif(not _projection_supports_meta(),
                    reason="relative_projection does not run on the meta device yet")
@pytest.mark.parametrize("center", [None, "anchors"])
def test_forward_on_meta_keeps_the_device(center):
    x, a, layer = _fixed_layer(center=center, normalization="layernorm")
    layer = layer.to("meta")
    out = layer(x.to("meta"))
    assert out.is_meta and out.shape == (12, 6)


def test_numpy_is_a_named_type_error_everywhere():
    x, a = _latents()
    layer = RelativeLayer()
    with pytest.raises(InputTypeError, match="torch.as_tensor"):
        layer(x.numpy(), a)
    with pytest.raises(InputTypeError, match="anchors is a numpy array"):
        layer(x, a.numpy())
    with pytest.raises(InputTypeError):
        layer.set_anchors(a.numpy())
    with pytest.raises(InputTypeError):
        RelativeLayer(anchors=a.numpy())
    with pytest.raises(InputTypeError, match="center"):
        RelativeLayer(center=np.zeros(4))
    enc = RelativeEncoder(nn.Linear(3, 4), torch.randn(5, 3))
    with pytest.raises(InputTypeError, match="RelativeEncoder"):
        enc(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(InputTypeError, match="anchor_inputs"):
        RelativeEncoder(nn.Linear(3, 4), np.zeros((5, 3)))
    with pytest.raises(InputTypeError, match="nn.Module"):
        RelativeEncoder(lambda t: t, torch.randn(5, 3))


def test_layer_validates_its_arguments():
    with pytest.raises(RelrepsError, match="unknown similarity"):
        RelativeLayer(similarity="cosyne")
    with pytest.raises(InputTypeError, match="n_anchors"):
        RelativeLayer(normalization="layernorm", n_anchors=2.5)
    with pytest.raises(InputTypeError, match="center"):
        RelativeLayer(center="mean")
    with pytest.raises(NonFiniteError):
        RelativeLayer(anchors=torch.tensor([[0.0, float("nan")]]))


# --------------------------------------------------------------------------- frozen encoder

def test_encoder_freeze_anchors_encodes_once_and_round_trips():
    torch.manual_seed(0)
    enc = CountingEncoder()
    anchor_inputs = torch.randn(6, 3)
    x = torch.randn(10, 3)
    model = RelativeEncoder(enc, anchor_inputs, RelativeLayer(center="anchors"))
    live = model(x)
    assert model.freeze_anchors() is model
    calls = enc.calls
    frozen = model(x)
    assert enc.calls == calls + 1  # only the batch is encoded
    torch.testing.assert_close(frozen, live)
    sd = model.state_dict()
    assert {"anchor_inputs", "layer.anchors", "layer.center_vector"} <= set(sd)
    # inference: a fresh encoder of the same architecture, no anchor inputs at hand
    fresh = RelativeEncoder(CountingEncoder(), layer=RelativeLayer(center="anchors"))
    with pytest.raises(AnchorError, match="neither anchor_inputs nor fixed anchors"):
        fresh(x)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(x), frozen)
    model.unfreeze_anchors()
    assert not model.layer.has_fixed_anchors
    torch.testing.assert_close(model(x), live)


def test_head_and_norm_validate_their_arguments():
    with pytest.raises(InputTypeError, match="hidden"):
        RelativeClassifierHead(4, 2, hidden=2.5)
    with pytest.raises(RelrepsError, match="n_classes"):
        RelativeClassifierHead(4, 0)
    with pytest.raises(RelrepsError, match="eps"):
        BatchFeatureNorm(eps=0.0)
    with pytest.raises(InputTypeError, match="BatchFeatureNorm"):
        BatchFeatureNorm()(np.zeros((3, 2)))


def test_the_collapse_warning_is_given_once_per_layer_not_per_forward():
    from relreps.centering import AnisotropyWarning

    g = torch.Generator().manual_seed(0)
    anchors = 5.0 + 0.1 * torch.randn(8, 4, generator=g, dtype=torch.float64)  # one direction
    layer = RelativeLayer(anchors=anchors)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with torch.no_grad():
            for _ in range(5):  # an evaluation loop: every batch has its own anisotropy text
                layer(torch.randn(3, 4, generator=g, dtype=torch.float64))
                RelativeLayer()(torch.randn(3, 4, generator=g, dtype=torch.float64),
                                anchors + 0.01 * torch.randn(8, 4, generator=g,
                                                             dtype=torch.float64))
        layer.set_anchors(anchors * 2)  # new anchors are checked again
        with torch.no_grad():
            layer(torch.randn(3, 4, generator=g, dtype=torch.float64))
            layer(torch.randn(3, 4, generator=g, dtype=torch.float64))
    n = sum(issubclass(w.category, AnisotropyWarning) for w in got)
    assert n == 1 + 5 + 1  # the fixed layer twice (once per set of anchors), 5 fresh layers
