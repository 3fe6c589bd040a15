"""Every argument of relative_projection is validated: a named RelrepsError, never a raw
exception, never a silently reinterpreted value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relreps import relative_projection
from relreps import similarity as S
from relreps.errors import (
    AnchorError,
    InputTypeError,
    NonFiniteError,
    NumericalError,
    RelrepsError,
    ShapeError,
)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::relreps.centering.AnisotropyWarning")]


def _data(n: int = 20, k: int = 5, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(k, d))


@pytest.fixture()
def registry(monkeypatch):
    monkeypatch.setattr(S, "_REGISTRY", dict(S._REGISTRY))
    return S


# --------------------------------------------------------------------------- out=

@pytest.mark.parametrize("out, error, match", [
    (np.zeros((20, 5), dtype=np.int64), InputTypeError, "out has dtype int64; it must be a "
                                                         "floating-point array"),
    (np.zeros((20, 5), dtype=bool), InputTypeError, "floating-point"),
    (np.zeros((20, 5), dtype=np.complex128), InputTypeError, "floating-point"),
    (np.zeros((20, 4)), ShapeError, r"out has shape \(20, 4\), expected \(20, 5\)"),
    (np.zeros((5, 20)).T, None, None),  # a transposed view is a fine target
    ([[0.0] * 5] * 20, InputTypeError, "out must be a numpy array"),
    (torch.zeros(20, 5), InputTypeError, "out must be a numpy array"),
])
def test_out_must_be_a_writable_float_array_of_the_right_shape(out, error, match):
    x, a = _data()
    if error is None:
        got = relative_projection(x, a, out=out)
        assert got is out
        np.testing.assert_allclose(out, relative_projection(x, a), rtol=1e-12)
        return
    with pytest.raises(error, match=match):
        relative_projection(x, a, out=out)


def test_out_read_only_overlapping_or_too_narrow_is_named():
    x, a = _data()
    ro = np.zeros((20, 5))
    ro.flags.writeable = False
    with pytest.raises(RelrepsError, match="out is read-only"):
        relative_projection(x, a, out=ro)
    sq = np.random.default_rng(0).normal(size=(6, 6))
    with pytest.raises(RelrepsError, match="out overlaps x"):
        relative_projection(sq, sq, out=sq)
    with pytest.raises(InputTypeError, match="numpy inputs only"):
        relative_projection(torch.tensor(x), torch.tensor(a), out=np.zeros((20, 5)))
    # float16 out: fine while the values fit, a named error when they do not.
    half = np.zeros((20, 5), np.float16)
    np.testing.assert_allclose(relative_projection(x, a, out=half), relative_projection(x, a),
                               atol=1e-3)
    with pytest.raises(NumericalError, match="out has dtype float16, too narrow"):
        relative_projection(x * 1e3, a * 1e3, similarity="inner", out=half)


# --------------------------------------------------------------------------- scalars

@pytest.mark.parametrize("chunk, error", [(0, RelrepsError), (-3, RelrepsError),
                                          (2.5, InputTypeError), (3.0, InputTypeError),
                                          (True, InputTypeError), ("4", InputTypeError),
                                          (np.float64(2), InputTypeError)])
def test_chunk_size_must_be_a_positive_integer(chunk, error):
    x, a = _data()
    with pytest.raises(error, match="chunk_size"):
        relative_projection(x, a, chunk_size=chunk)
    with pytest.raises(error, match="chunk_size"):
        relative_projection(torch.tensor(x), torch.tensor(a), chunk_size=chunk)


def test_numpy_integer_chunk_size_is_accepted():
    x, a = _data()
    np.testing.assert_allclose(relative_projection(x, a, chunk_size=np.int64(3)),
                               relative_projection(x, a), rtol=1e-12)


@pytest.mark.parametrize("center, error, match", [
    ("mean", RelrepsError, "center must be None, 'none', 'anchors', 'auto' or a"),
    ("", RelrepsError, "center must be"),
    (True, InputTypeError, "center must be"),
    (3, InputTypeError, "center must be"),
    ({"a": 1}, InputTypeError, "center must be"),
    (np.zeros(3), ShapeError, r"center vector must have shape \(4,\), got \(3,\)"),
    (np.zeros((2, 4)), ShapeError, r"center vector must have shape \(4,\)"),
    (np.zeros((1, 1, 4)), ShapeError, "center vector must have shape"),
    (np.array([0, np.nan, 0, 0]), NonFiniteError, "center vector contains NaN or inf"),
    (np.array(["a", "b", "c", "d"]), InputTypeError, "center vector has dtype"),
    ([[0, 1], [2]], InputTypeError, "center vector cannot be read as an array"),
    (torch.zeros(4, dtype=torch.complex64), InputTypeError, "complex"),
])
def test_center_is_validated(center, error, match):
    x, a = _data()
    with pytest.raises(error, match=match):
        relative_projection(x, a, center=center)


def test_center_none_string_and_vector_kinds():
    x, a = _data()
    np.testing.assert_array_equal(relative_projection(x, a, center="none"),
                                  relative_projection(x, a))
    mu = a.mean(0)
    want = relative_projection(x, a, center="anchors")
    for vec in (mu, mu.reshape(1, -1), list(mu), torch.tensor(mu)):
        np.testing.assert_allclose(relative_projection(x, a, center=vec), want, rtol=1e-10)
    got = relative_projection(torch.tensor(x), torch.tensor(a), center=mu)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


# --------------------------------------------------------------------------- arrays

@pytest.mark.parametrize("x, error", [
    (None, InputTypeError), ("abc", InputTypeError), ([[1, 2], [3]], InputTypeError),
    (np.ones(4), ShapeError), (np.ones((2, 3, 4)), ShapeError),
    (np.array([[1 + 2j, 0, 0, 0]]), InputTypeError), (np.array([["a"] * 4]), InputTypeError),
    ({"x": 1}, InputTypeError),
])
def test_bad_x_is_named(x, error):
    _, a = _data()
    with pytest.raises(error):
        relative_projection(x, a)


def test_torch_complex_sparse_and_device_mismatch_are_named():
    x, a = _data()
    tx, ta = torch.tensor(x), torch.tensor(a)
    with pytest.raises(InputTypeError, match="complex"):
        relative_projection(tx.to(torch.complex128), ta)
    with pytest.raises(InputTypeError, match="complex"):
        relative_projection(tx, ta.to(torch.complex128))
    with pytest.raises(InputTypeError, match="sparse"):
        relative_projection(tx.to_sparse(), ta)
    with pytest.raises(InputTypeError, match="x is on meta but anchors are on cpu"):
        relative_projection(tx.to("meta"), ta)
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(InputTypeError, match="sparse"):
        relative_projection(sp.csr_matrix(x), a)


def test_integer_and_half_inputs_are_promoted_not_truncated():
    x, a = _data()
    xi = (x * 10).astype(np.int32)
    np.testing.assert_allclose(relative_projection(xi, a), relative_projection(
        xi.astype(np.float64), a), rtol=1e-12)
    h = relative_projection(torch.tensor(x, dtype=torch.float16), torch.tensor(
        a, dtype=torch.float16))
    assert h.dtype == torch.float32
    b = relative_projection(torch.tensor(x, dtype=torch.bfloat16), torch.tensor(a).float())
    assert b.dtype == torch.float32


def test_empty_x_gives_an_empty_result_of_every_kind():
    _, a = _data()
    assert relative_projection(np.empty((0, 4)), a).shape == (0, 5)
    assert relative_projection(torch.empty(0, 4, dtype=torch.float64),
                               torch.tensor(a)).shape == (0, 5)
    with pytest.raises(AnchorError, match="at least 1 anchor"):
        relative_projection(np.ones((3, 4)), np.empty((0, 4)))


# --------------------------------------------------------------------------- user similarities

@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_user_similarity_of_the_wrong_shape_is_refused_also_chunked(registry, chunk):
    registry.register("broadcasting", lambda x, a: (x @ a.T)[:, :1], invariances=())
    registry.register("transposed", lambda x, a: (x @ a.T).T, invariances=())
    registry.register("flat", lambda x, a: (x @ a.T).sum(1), invariances=())
    x, a = _data(n=7)
    for name in ("broadcasting", "transposed", "flat"):
        with pytest.raises(ShapeError, match=f"similarity '{name}' returned shape"):
            relative_projection(x, a, similarity=name, chunk_size=chunk)
        with pytest.raises(ShapeError, match="expected"):
            relative_projection(torch.tensor(x), torch.tensor(a), similarity=name,
                                chunk_size=chunk)


def test_user_similarity_of_the_wrong_type_or_values_is_refused(registry):
    registry.register("as_numpy", lambda x, a: (x @ a.T).numpy(), invariances=())
    registry.register("ints", lambda x, a: (x @ a.T).round().long(), invariances=())
    x, a = _data()
    marked = float(x[12, 0])  # the similarity fails on sample 12 only, wherever its block is
    registry.register("nan_row", lambda x, a: torch.where(x[:, :1] == marked, float("nan"),
                                                          x @ a.T), invariances=())
    registry.register("hides_nan", lambda x, a: torch.nan_to_num(x) @ a.T, invariances=())
    with pytest.raises(InputTypeError, match="returned a ndarray; it must return a torch"):
        relative_projection(x, a, similarity="as_numpy")
    with pytest.raises(InputTypeError, match="returned dtype torch.int64"):
        relative_projection(x, a, similarity="ints")
    with pytest.raises(NumericalError, match=r"'nan_row' returned NaN or inf for finite inputs "
                                             r"at rows 12"):
        relative_projection(x, a, similarity="nan_row", chunk_size=5)
    # A user similarity never sees NaN input: it would not tell (nan_to_num hides it).
    x[4, 1] = np.nan
    with pytest.raises(NonFiniteError, match=r"rows 4"):
        relative_projection(x, a, similarity="hides_nan")


def test_register_validates_its_arguments(registry):
    def f(x, a):
        return x @ a.T

    with pytest.raises(InputTypeError, match="non-empty string"):
        registry.register("", f, invariances=())
    with pytest.raises(InputTypeError, match="got the string 'orthogonal'"):
        registry.register("s1", f, invariances="orthogonal")
    with pytest.raises(InputTypeError, match="prepare must be callable"):
        registry.register("s2", f, invariances=(), prepare=3)
    with pytest.raises(InputTypeError, match="fn must be callable"):
        registry.register("s3", "not a function", invariances=())
    with pytest.raises(InputTypeError, match="needs_nonzero"):
        registry.register("s4", f, invariances=(), needs_nonzero="yes")
    with pytest.raises(RelrepsError, match="min_anchors"):
        registry.register("s5", f, invariances=(), min_anchors=0)
    assert not {"s1", "s2", "s3", "s4", "s5"} & set(registry.available())


# --------------------------------------------------------------------------- no raw errors

BAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
    st.text(max_size=3), st.lists(st.integers(), max_size=3),
    st.sampled_from([np.ones(3), np.ones((2, 2)), np.array([[np.inf]]), torch.ones(2, 2),
                     {"a": 1}, object(), np.ones((0, 4)), np.array([1 + 1j])]),
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(arg=st.sampled_from(["x", "anchors", "similarity", "center", "chunk_size", "out"]),
       value=BAD_VALUES, kind=st.sampled_from(["numpy", "torch"]))
def test_any_bad_argument_raises_a_relreps_error_never_a_raw_one(arg, value, kind):
    x, a = _data()
    if kind == "torch":
        x, a = torch.tensor(x), torch.tensor(a)
    kwargs = {"x": x, "anchors": a, "similarity": "cosine", "center": None, "chunk_size": None,
              "out": None}
    kwargs[arg] = value
    try:
        r = relative_projection(kwargs.pop("x"), kwargs.pop("anchors"), **kwargs)
    except RelrepsError:
        return
    # Accepted: then it must have been a legitimate value and the result must be right.
    assert r.shape[0] == len(kwargs.get("out") if kwargs.get("out") is not None else
                             (value if arg == "x" else x))
    assert np.isfinite(np.asarray(r.detach() if isinstance(r, torch.Tensor) else r)).all()


def test_read_only_input_is_shared_with_builtins_and_copied_for_user_code(registry, tmp_path):
    x, a = _data(50)
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_allclose(relative_projection(xm, a), relative_projection(x, a), rtol=1e-12)
    # A careless user similarity that writes to its input must not crash on read-only memory.
    registry.register("scribbles", lambda x, a: x.mul_(2.0) @ a.T, invariances=())
    got = relative_projection(xm, a, similarity="scribbles", chunk_size=16)
    np.testing.assert_allclose(got, 2 * x @ a.T, rtol=1e-12)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)
