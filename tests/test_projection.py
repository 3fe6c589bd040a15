"""relative_projection and RelativeProjection: values, array kinds, chunking, errors, sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from relreps import RelativeProjection, relative_projection
from relreps import similarity as S
from relreps.errors import AnchorError, RelrepsError

# Small positive integer data is anisotropic: the collapse warning is expected in places.
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::relreps.centering.AnisotropyWarning")]


def _data(seed: int = 0, n: int = 20, k: int = 5, d: int = 4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(k, d))


# --------------------------------------------------------------------------- known values

def test_cosine_against_hand_computed_values():
    x = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-3.0, 0.0]])
    anchors = np.array([[2.0, 0.0], [0.0, 0.5]])
    r = 1 / math.sqrt(2)
    expected = np.array([[1.0, 0.0], [r, r], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(relative_projection(x, anchors), expected, atol=1e-12)


def test_centred_cosine_against_hand_computed_values():
    x = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    anchors = np.array([[2.0, 0.0], [0.0, 2.0]])
    # Anchor mean (1, 1): anchors become (1, -1), (-1, 1); x becomes (1, -1), (0, 0), (-1, 2).
    with pytest.raises(RelrepsError, match="zero vectors after centring.*rows 1"):
        relative_projection(x, anchors, center="anchors")
    x = x[[0, 2]]
    c = (-1 * 1 + 2 * -1) / (math.sqrt(5) * math.sqrt(2))  # cos((-1, 2), (1, -1))
    expected = np.array([[1.0, -1.0], [c, -c]])
    np.testing.assert_allclose(relative_projection(x, anchors, center="anchors"), expected,
                               atol=1e-12)
    # An explicit centre vector does the same.
    np.testing.assert_allclose(relative_projection(x, anchors, center=np.array([1.0, 1.0])),
                               expected, atol=1e-12)


def test_center_must_be_anchors_or_a_vector():
    x, a = _data()
    with pytest.raises(RelrepsError, match="center"):
        relative_projection(x, a, center="mean")
    with pytest.raises(RelrepsError, match="center vector must have shape"):
        relative_projection(x, a, center=np.zeros(3))
    for bad in (np.nan, np.inf):
        with pytest.raises(RelrepsError, match="center vector contains NaN or inf"):
            relative_projection(x, a, similarity="euclidean", center=np.array([bad, 0, 0, 0]))
        with pytest.raises(RelrepsError, match="center vector contains NaN or inf"):
            relative_projection(torch.tensor(x), torch.tensor(a),
                                center=torch.tensor([0, bad, 0, 0]))


# --------------------------------------------------------------------------- array kinds

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(dtype):
    x, a = _data()
    out = relative_projection(x.astype(dtype), a.astype(dtype))
    assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == (20, 5)
    # Mixed float widths promote; integers are read as float64.
    assert relative_projection(x.astype(np.float32), a).dtype == np.float64
    xi = np.arange(12).reshape(4, 3) + 1
    out = relative_projection(xi, xi[:2])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, relative_projection(xi.astype(float), xi[:2].astype(float)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out_same_dtype_and_device(dtype):
    x, a = _data()
    tx, ta = torch.tensor(x, dtype=dtype), torch.tensor(a, dtype=dtype)
    out = relative_projection(tx, ta)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device == tx.device
    np.testing.assert_allclose(out.numpy(), relative_projection(x, a),
                               rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_cuda_stays_on_device():
    x, a = _data()
    tx, ta = torch.tensor(x, device="cuda"), torch.tensor(a, device="cuda")
    out = relative_projection(tx, ta, chunk_size=7)
    assert out.device == tx.device
    with pytest.raises(RelrepsError, match="x is on"):
        relative_projection(tx, ta.cpu())


@pytest.mark.parametrize("name", S.available())
def test_gradients_flow_to_x_and_to_anchors_unless_detached(name):
    x, a = _data(n=6, k=5)
    tx = torch.tensor(x, requires_grad=True)
    ta = torch.tensor(a, requires_grad=True)
    relative_projection(tx, ta, similarity=name).square().sum().backward()
    assert tx.grad is not None and tx.grad.abs().sum() > 0
    assert ta.grad is not None and ta.grad.abs().sum() > 0
    tx.grad = None
    ta.grad = None
    relative_projection(tx, ta.detach(), similarity=name).square().sum().backward()
    assert tx.grad is not None and tx.grad.abs().sum() > 0
    assert ta.grad is None


@pytest.mark.parametrize("name", ["cosine", "euclidean", "rbf", "basis"])
@pytest.mark.parametrize("center", [None, "anchors"])
def test_gradients_are_correct(name, center):
    x, a = _data(n=4, k=6, d=3)
    tx = torch.tensor(x, requires_grad=True)
    ta = torch.tensor(a, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda u, v: relative_projection(u, v, similarity=name, center=center), (tx, ta))


def test_gradients_finite_when_samples_are_their_own_anchors():
    # Batches usually contain the anchors themselves: zero distances must not give NaN.
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for name in S.available():
        x.grad = None
        relative_projection(x, x[:30], similarity=name).sum().backward()
        assert torch.isfinite(x.grad).all(), name


def test_mixed_numpy_and_torch_is_a_named_error():
    x, a = _data()
    with pytest.raises(RelrepsError, match="mixed numpy and torch"):
        relative_projection(x, torch.tensor(a))
    with pytest.raises(RelrepsError, match="mixed numpy and torch"):
        relative_projection(torch.tensor(x), a)


# --------------------------------------------------------------------------- chunking

@settings(max_examples=15, deadline=None, derandomize=True)
@given(n=st.integers(0, 40), chunk=st.integers(1, 50), seed=st.integers(0, 1000),
       name=st.sampled_from(["cosine", "euclidean", "rbf", "basis"]),
       center=st.sampled_from([None, "anchors"]))
def test_chunked_equals_unchunked(n, chunk, seed, name, center):
    x, a = _data(seed, n=n, k=6)
    full = relative_projection(x, a, similarity=name, center=center)
    assert full.shape == (n, 6)
    # Equal up to the last bits (BLAS may sum a block in another order than the whole).
    np.testing.assert_allclose(
        relative_projection(x, a, similarity=name, center=center, chunk_size=chunk), full,
        rtol=1e-12, atol=1e-12)
    tfull = relative_projection(torch.tensor(x), torch.tensor(a), similarity=name, center=center)
    tchunk = relative_projection(torch.tensor(x), torch.tensor(a), similarity=name,
                                 center=center, chunk_size=chunk)
    assert tchunk.shape == (n, 6)
    np.testing.assert_allclose(tchunk.numpy(), tfull.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tfull.numpy(), full, rtol=1e-12, atol=1e-12)


def test_chunks_are_bounded(monkeypatch):
    # The similarity only ever sees blocks of at most chunk_size rows.
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    seen = []

    def spy(x, unit_anchors):
        seen.append(x.shape[0])
        return S.get("cosine").apply(x, unit_anchors)

    S.register("spy", spy, prepare=S.get("cosine").prepare, invariances=())
    x, a = _data(n=23)
    np.testing.assert_allclose(relative_projection(x, a, similarity="spy", chunk_size=5),
                               relative_projection(x, a), rtol=1e-12, atol=1e-12)
    assert seen == [5, 5, 5, 5, 3]


def test_memmap_input_and_output(tmp_path):
    x, a = _data(n=103, k=7, d=5)
    x = x.astype(np.float32)
    a = a.astype(np.float32)
    src = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=x.shape)
    src[:] = x
    src.flush()
    del src
    xm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="r", shape=x.shape)
    out = np.memmap(tmp_path / "r.f32", dtype=np.float32, mode="w+", shape=(103, 7))
    got = relative_projection(xm, a, chunk_size=10, out=out, center="anchors")
    assert got is out
    out.flush()
    expected = relative_projection(x, a, center="anchors")
    np.testing.assert_allclose(np.memmap(tmp_path / "r.f32", dtype=np.float32, mode="r",
                                         shape=(103, 7)), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(RelrepsError, match="out has shape"):
        relative_projection(xm, a, out=np.empty((5, 7), np.float32))
    with pytest.raises(RelrepsError, match="out= is supported for numpy"):
        relative_projection(torch.tensor(x), torch.tensor(a), out=np.empty((103, 7)))


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_memmap_streaming_over_many_pages_keeps_every_value(tmp_path, mode):
    # Blocks span many pages, so the streaming path releases pages of x and of out as it goes;
    # the written results must all reach the file, and x must be unchanged.
    rng = np.random.default_rng(0)
    n, d, k = 3000, 48, 64
    x = rng.normal(size=(n, d)).astype(np.float32)
    a = x[rng.choice(n, k, replace=False)]
    mm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    xm = np.memmap(tmp_path / "x.f32", dtype=np.float32, mode=mode, shape=x.shape)
    out = np.memmap(tmp_path / "r.f32", dtype=np.float32, mode="w+", shape=(n, k))
    relative_projection(xm, a, chunk_size=257, out=out, center="anchors")
    out.flush()
    del out
    got = np.fromfile(tmp_path / "r.f32", dtype=np.float32).reshape(n, k)
    np.testing.assert_allclose(got, relative_projection(x, a, center="anchors"), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(xm), x)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "x.f32", dtype=np.float32), x.ravel())


def test_memmap_with_nan_in_a_later_chunk_is_a_named_error(tmp_path):
    x, a = _data(n=50)
    x[37, 2] = np.nan
    mm = np.memmap(tmp_path / "x.f64", dtype=np.float64, mode="w+", shape=x.shape)
    mm[:] = x
    with pytest.raises(RelrepsError, match=r"x contains NaN or inf values \(rows 37\)"):
        relative_projection(mm, a, chunk_size=10)
    with pytest.raises(RelrepsError, match="NaN or inf"):
        relative_projection(mm, a)


def test_memmap_anchors_and_other_inputs_are_checked_for_nan(tmp_path):
    # Only x is streamed (and checked chunk by chunk); a memmap anywhere else is checked whole.
    from relreps import metrics
    from relreps.anchors import diagnose, sample_anchors

    x, a = _data(n=12, k=5)
    a[2, 1] = np.nan
    am = np.memmap(tmp_path / "a.f64", dtype=np.float64, mode="w+", shape=a.shape)
    am[:] = a
    for name in ("euclidean", "cosine"):
        with pytest.raises(RelrepsError, match=r"anchors contains NaN or inf values \(rows 2\)"):
            relative_projection(x, am, similarity=name)
    with pytest.raises(RelrepsError, match="contains NaN or inf"):
        diagnose(am)
    with pytest.raises(RelrepsError, match="contains NaN or inf"):
        sample_anchors(am, 2, "kmeans")
    with pytest.raises(RelrepsError, match="contains NaN or inf"):
        metrics.mrr_at_k(am, np.ones_like(a), k=1)


def test_bad_chunk_size():
    x, a = _data()
    with pytest.raises(RelrepsError, match="chunk_size"):
        relative_projection(x, a, chunk_size=0)


# --------------------------------------------------------------------------- named errors

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "anchors"])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_non_finite_values_are_named(bad, where, kind):
    x, a = _data()
    (x if where == "x" else a)[2, 1] = bad
    if kind == "torch":
        x, a = torch.tensor(x), torch.tensor(a)
    with pytest.raises(RelrepsError, match=f"{where} contains NaN or inf"):
        relative_projection(x, a)


@pytest.mark.parametrize("name", ["cosine", "angular"])
def test_zero_vectors_under_cosine_are_named(name):
    x, a = _data()
    x[[3, 7]] = 0
    with pytest.raises(RelrepsError, match=r"x has zero vectors at rows 3, 7"):
        relative_projection(x, a, similarity=name)
    with pytest.raises(RelrepsError, match=r"x has zero vectors at rows 3, 7"):
        relative_projection(torch.tensor(x), torch.tensor(a), similarity=name)
    # Chunked, the first bad chunk is reported, with rows numbered in the whole input.
    with pytest.raises(RelrepsError, match=r"x has zero vectors at rows 3:"):
        relative_projection(torch.tensor(x), torch.tensor(a), similarity=name, chunk_size=2)
    with pytest.raises(RelrepsError, match=r"x has zero vectors at rows 2:"):
        relative_projection(x[5:], a, similarity=name, chunk_size=1)
    x, a = _data()
    a[1] = 0
    with pytest.raises(RelrepsError, match=r"anchors has zero vectors at rows 1"):
        relative_projection(x, a, similarity=name)
    # Similarities that do not need a direction accept zero vectors.
    a[1] = 0
    x[0] = 0
    assert np.isfinite(relative_projection(x, a, similarity="euclidean")).all()


def test_zero_after_centring_is_named():
    x, a = _data()
    x[4] = a.mean(0)
    with pytest.raises(RelrepsError, match="x has zero vectors after centring.*rows 4"):
        relative_projection(x, a, center="anchors")
    # Equal to the centre only up to rounding (means computed differently): still named.
    for dtype in (np.float32, np.float64):
        xs, anc = x.astype(dtype), (a * 1.1).astype(dtype)
        xs[4] = anc.astype(np.float64).mean(0)
        with pytest.raises(RelrepsError, match="x has zero vectors after centring.*rows 4"):
            relative_projection(xs, anc, center="anchors", chunk_size=3)
        with pytest.raises(RelrepsError, match="x has zero vectors after centring.*rows 4"):
            relative_projection(torch.tensor(xs), torch.tensor(anc), center="anchors",
                                similarity="angular")
    # A single anchor is zero after centring on itself.
    with pytest.raises(RelrepsError, match="anchors has zero vectors after centring"):
        relative_projection(x, a[:1], center="anchors")


def test_dimension_mismatch_is_named():
    x, a = _data()
    with pytest.raises(RelrepsError, match="dimension mismatch: x has 4 features, anchors have 3"):
        relative_projection(x, a[:, :3])
    with pytest.raises(RelrepsError, match="dimension mismatch"):
        relative_projection(torch.tensor(x), torch.tensor(a[:, :3]))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_non_2d_input_is_named(shape):
    _, a = _data()
    with pytest.raises(RelrepsError, match="must be 2-D"):
        relative_projection(np.ones(shape), a)


def test_zero_anchors_and_rbf_with_one_anchor_are_named():
    x, a = _data()
    with pytest.raises(AnchorError, match="at least 1 anchor"):
        relative_projection(x, a[:0])
    with pytest.raises(AnchorError, match="rbf similarity needs at least 2 anchor"):
        relative_projection(x, a[:1], similarity="rbf")
    with pytest.raises(AnchorError, match="duplicate anchors"):
        relative_projection(x, np.repeat(a[:1], 3, axis=0), similarity="rbf")


# --------------------------------------------------------------------------- RelativeProjection

def test_transformer_fit_transform_matches_function():
    x, _ = _data(n=50)
    rp = RelativeProjection(n_anchors=8, random_state=3).fit(x)
    assert rp.anchors_.shape == (8, 4) and rp.n_features_in_ == 4
    assert len(set(rp.anchor_indices_.tolist())) == 8
    np.testing.assert_array_equal(rp.anchors_, x[rp.anchor_indices_])
    np.testing.assert_allclose(rp.transform(x), relative_projection(x, x[rp.anchor_indices_]))
    # Deterministic under random_state, different for another seed.
    again = RelativeProjection(n_anchors=8, random_state=3).fit(x)
    np.testing.assert_array_equal(again.anchor_indices_, rp.anchor_indices_)
    other = RelativeProjection(n_anchors=8, random_state=4).fit(x)
    assert set(other.anchor_indices_.tolist()) != set(rp.anchor_indices_.tolist())
    assert list(rp.get_feature_names_out()) == [f"anchor{i}" for i in range(8)]


def test_transformer_torch_input():
    x, _ = _data(n=30)
    tx = torch.tensor(x, dtype=torch.float32)
    rp = RelativeProjection(n_anchors=5, random_state=0, similarity="inner").fit(tx)
    out = rp.transform(tx)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), relative_projection(
        x, x[rp.anchor_indices_], similarity="inner"), rtol=1e-5, atol=1e-5)


def test_transformer_params_and_clone():
    a = np.eye(3)
    rp = RelativeProjection(n_anchors=7, similarity="rbf", center="anchors", anchors=a,
                            sampler="kmeans", random_state=5)
    params = rp.get_params()
    for key, value in dict(n_anchors=7, similarity="rbf", center="anchors", sampler="kmeans",
                           random_state=5).items():
        assert params[key] == value
    assert params["anchors"] is a
    c = clone(rp)
    assert c is not rp and not hasattr(c, "anchors_")
    assert {k: v for k, v in c.get_params().items() if k != "anchors"} == \
        {k: v for k, v in params.items() if k != "anchors"}
    np.testing.assert_array_equal(c.get_params()["anchors"], a)
    rp.set_params(similarity="cosine", n_anchors=2)
    assert rp.similarity == "cosine" and rp.n_anchors == 2


def test_transformer_explicit_anchors_are_kept():
    x, a = _data(n=30, k=6)
    rp = RelativeProjection(n_anchors=100, anchors=a).fit(x)  # n_anchors is ignored
    assert rp.anchor_indices_ is None
    np.testing.assert_array_equal(rp.anchors_, a)
    np.testing.assert_allclose(rp.transform(x), relative_projection(x, a))


def test_transformer_stratified_uses_y():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [40, 5, 5])
    x = rng.normal(size=(50, 3))
    rp = RelativeProjection(n_anchors=6, sampler="stratified", random_state=0).fit(x, y)
    assert np.bincount(y[rp.anchor_indices_], minlength=3).tolist() == [2, 2, 2]
    with pytest.raises(AnchorError, match="needs the labels y"):
        RelativeProjection(n_anchors=6, sampler="stratified").fit(x)
    with pytest.raises(AnchorError, match="at least one anchor per class"):
        RelativeProjection(n_anchors=2, sampler="stratified").fit(x, y)


def test_transformer_errors():
    x, _ = _data(n=10)
    with pytest.raises(RelrepsError, match="not fitted"):
        RelativeProjection().transform(x)
    with pytest.raises(AnchorError, match="asked for 300 anchors but only 10 samples"):
        RelativeProjection().fit(x)
    with pytest.raises(RelrepsError, match="unknown anchor sampler"):
        RelativeProjection(n_anchors=3, sampler="best").fit(x)
    with pytest.raises(RelrepsError, match="unknown similarity"):
        RelativeProjection(n_anchors=3, similarity="cosin").fit(x)


def test_transformer_in_a_pipeline_with_logistic_regression():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=300, n_features=10, n_informative=6, n_classes=3,
                               random_state=0)
    pipe = Pipeline([("rel", RelativeProjection(n_anchors=30, sampler="stratified",
                                                random_state=0)),
                     ("clf", LogisticRegression(max_iter=1000))])
    pipe.fit(X[:200], y[:200])
    assert np.bincount(y[:200][pipe.named_steps["rel"].anchor_indices_]).tolist() == [10, 10, 10]
    acc = (pipe.predict(X[200:]) == y[200:]).mean()
    assert acc > 1 / 3 + 0.2  # clearly above chance
    # The pipeline clones and refits to the same result.
    pipe2 = clone(pipe).fit(X[:200], y[:200])
    np.testing.assert_array_equal(pipe2.predict(X[200:]), pipe.predict(X[200:]))
    # Its parameters are reachable the sklearn way.
    pipe2.set_params(rel__n_anchors=12)
    assert pipe2.fit(X[:200], y[:200]).named_steps["rel"].anchors_.shape == (12, 10)
