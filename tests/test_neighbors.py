"""Exact neighbour search and the neighbourhood metrics (in memory: numpy, memmap, torch).

Every search is checked against a brute-force N x N reference with a stable sort (ties: lowest
index first), with the automatic block plan and with tiny plans that force many tiles, the
sub-tile filter and the tie repair paths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from relreps import _kernels, metrics
from relreps import neighbors as N
from relreps._numerics import rowwise_dot
from relreps.errors import (
    InputTypeError,
    NonFiniteError,
    NumericalError,
    RelrepsError,
    ShapeError,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# the `plan` fixture only patches a constant, so sharing it between examples is intended
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
TINY_PLANS = [None, N.BlockPlan(3, 64, 64), N.BlockPlan(7, 128, 64), N.BlockPlan(64, 192, 64)]


@pytest.fixture(params=["compiled", "torch ops"])
def kernel(request, monkeypatch):
    """Both implementations of the product pass on CPU: the compiled loop (relreps._kernels)
    and the torch operations that GPUs run."""
    if request.param == "torch ops":
        monkeypatch.setenv("RELREPS_NO_KERNELS", "1")
    else:
        monkeypatch.delenv("RELREPS_NO_KERNELS", raising=False)
        assert _kernels.products_push() is not None, "numba is a dependency: kernel expected"
    return request.param


@pytest.fixture()
def plan(request, monkeypatch):
    """Force a block plan (None: the machine's plan)."""
    chosen = request.param
    if chosen is not None:
        monkeypatch.setattr(N, "plan_blocks", lambda *a, **kw: chosen)
    return chosen


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_knn(q, b, k, metric="cosine", exclude=None):
    """Full sort of the N x N similarities; values rounded to 1e-10 so that mathematically equal
    similarities (duplicate rows) tie exactly whatever the BLAS kernel's last bit."""
    sims = unit(q) @ unit(b).T if metric == "cosine" else q @ b.T
    sims = np.round(sims, 10)
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def brute_retrieval(src, tgt, k, queries=None):
    rows = np.arange(len(src)) if queries is None else np.asarray(queries)
    S = brute_knn(src[rows], tgt, k)
    T = brute_knn(tgt[rows], tgt, k)
    rr = [1.0 / (list(s).index(i) + 1) if i in s else 0.0 for s, i in zip(S, rows)]
    jac = [len(set(s) & set(t)) / len(set(s) | set(t)) for s, t in zip(S, T)]
    return float(np.mean(jac)), float(np.mean(rr))


def with_duplicates(rng, x, count):
    """Copy some rows over others: exactly equal similarities, resolved by index."""
    if len(x) > 2 and count:
        x[rng.integers(0, len(x), count)] = x[rng.integers(0, len(x), count)]
    return x


# --------------------------------------------------------------------------- exact search

@pytest.mark.parametrize("plan", TINY_PLANS, indirect=True)
@SETTINGS
@given(seed=st.integers(0, 10**6), nq=st.integers(1, 40), nb=st.integers(2, 700),
       d=st.integers(1, 12), k=st.integers(1, 9), metric=st.sampled_from(["cosine", "inner"]),
       exclude=st.booleans(), dups=st.integers(0, 30))
def test_knn_indices_equal_brute_force(kernel, plan, seed, nq, nb, d, k, metric, exclude, dups):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(nq, d))
    b = with_duplicates(rng, rng.normal(size=(nb, d)), dups)
    k = min(k, nb - 1)
    ex = rng.integers(0, nb, size=nq) if exclude else None
    got = N.knn_indices(q, b, k, metric=metric, exclude=ex)
    np.testing.assert_array_equal(got, brute_knn(q, b, k, metric, ex))
    assert got.dtype == np.int64
    if ex is not None:
        assert not (got == ex[:, None]).any()


@pytest.mark.parametrize("plan", TINY_PLANS, indirect=True)
def test_ties_rank_the_lowest_index_first(kernel, plan):
    # Many exact copies of a few directions: almost every similarity is tied.
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 5))[rng.integers(0, 4, size=500)]
    q = rng.normal(size=(30, 5))
    for k in (1, 5, 60):
        got = N.knn_indices(q, base, k)
        np.testing.assert_array_equal(got, brute_knn(q, base, k))
    same = np.ones((300, 3))  # all items tied for every query
    np.testing.assert_array_equal(N.knn_indices(q[:, :3], same, 7),
                                  np.tile(np.arange(7), (30, 1)))


def test_block_size_and_plan_do_not_change_results():
    rng = np.random.default_rng(1)
    q, b = rng.normal(size=(97, 6)), with_duplicates(rng, rng.normal(size=(1500, 6)), 50)
    ref = N.knn_indices(q, b, 8)
    for bs in (1, 2, 13, 97, 1000):
        np.testing.assert_array_equal(N.knn_indices(q, b, 8, block_size=bs), ref)


@pytest.fixture()
def position_dependent_mm(monkeypatch):
    """torch.mm as rounded by a kernel whose order depends on where a row sits: every entry
    moved by a different amount within the rigorous bound gamma_d * sum|q_i b_j| (so identical
    rows at two positions get different products, as on some AVX2 CPUs, by far more than one
    rounding)."""
    mm = torch.mm
    g = torch.Generator().manual_seed(0)

    def noisy(a, b, *, out=None):
        exact = mm(a.double(), b.double())
        u = torch.finfo(a.dtype).eps / 2
        gamma = a.shape[1] * u / (1 - a.shape[1] * u)
        bound = gamma * mm(a.double().abs(), b.double().abs())
        res = (exact + bound * (2 * torch.rand(exact.shape, generator=g, dtype=torch.float64)
                                - 1)).to(a.dtype)
        return res if out is None else out.copy_(res)

    monkeypatch.setattr(torch, "mm", noisy)


@pytest.mark.parametrize("plan", TINY_PLANS[:3], indirect=True)
def test_ties_survive_a_position_dependent_matrix_product(kernel, plan, position_dependent_mm):
    rng = np.random.default_rng(12)
    q = rng.normal(size=(25, 6))
    b = with_duplicates(rng, rng.normal(size=(400, 6)), 120)
    b[300:] = b[7]  # one row copied 100 times, at every position of the later tiles
    q[:5] = b[7]
    for dtype in (np.float64, np.float32):
        qd, bd = q.astype(dtype), b.astype(dtype)
        for metric in ("cosine", "inner"):
            for k in (1, 4, 9):
                ex = np.arange(25)
                np.testing.assert_array_equal(N.knn_indices(qd, bd, k, metric=metric),
                                              brute_knn(qd, bd, k, metric))
                np.testing.assert_array_equal(N.knn_indices(qd, bd, k, metric=metric, exclude=ex),
                                              brute_knn(qd, bd, k, metric, ex))


def test_rowwise_dot_does_not_depend_on_position():
    rng = np.random.default_rng(13)
    for d in (1, 2, 3, 7, 64, 65, 1000):
        a = torch.tensor(rng.normal(size=(1, d))).expand(300, d).contiguous()
        b = torch.tensor(rng.normal(size=(1, d))).expand(300, d).contiguous()
        got = rowwise_dot(a, b)
        assert got.dtype == torch.float64 and (got == got[0]).all()
        assert float(got[0]) == pytest.approx(float(a[0] @ b[0]), rel=1e-12, abs=1e-12)
        rows = torch.arange(300)
        got32 = N._rescore(a.float(), rows, b.float(), rows)  # exact products of float32 rows
        assert got32.dtype == torch.float64 and (got32 == got32[0]).all()
        assert float(got32[0]) == pytest.approx(float(a[0].float().double() @
                                                      b[0].float().double()), abs=1e-12)


@pytest.fixture()
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("plan", [None, N.BlockPlan(70, 128, 64)], indirect=True)
def test_parallel_query_blocks_give_the_same_results(plan, two_threads):
    # With several torch threads, query blocks run in parallel threads, one thread each.
    rng = np.random.default_rng(11)
    q = rng.normal(size=(700, 6))
    b = with_duplicates(rng, rng.normal(size=(900, 6)), 40)
    np.testing.assert_array_equal(N.knn_indices(q, b, 6, block_size=50), brute_knn(q, b, 6))
    src, tgt = q, q + rng.normal(size=q.shape)
    jac, mrr = brute_retrieval(src, tgt, 4)
    got = N.retrieval_metrics(src, tgt, 4, block_size=64)
    assert got["jaccard"] == pytest.approx(jac, abs=1e-12)
    assert got["mrr"] == pytest.approx(mrr, abs=1e-12)
    assert torch.get_num_threads() == 2  # restored after the parallel section
    bad = src.copy()
    bad[650] = 0
    with pytest.raises(NumericalError, match=r"rows \[650\]"):  # an error in one block
        N.retrieval_metrics(bad, tgt, 4, block_size=64)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("plan", TINY_PLANS, indirect=True)
@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(8, 300), d=st.integers(2, 10),
       k=st.integers(1, 8), noise=st.sampled_from([0.1, 0.5, 2.0]), subset=st.booleans())
def test_retrieval_metrics_equal_brute_force(kernel, plan, seed, n, d, k, noise, subset):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(n, d))
    tgt = with_duplicates(rng, src + noise * rng.normal(size=(n, d)), 3)
    k = min(k, n)
    queries = np.sort(rng.choice(n, size=max(1, n // 3), replace=False)) if subset else None
    jac, mrr = brute_retrieval(src, tgt, k, queries)
    got = N.retrieval_metrics(src, tgt, k, queries=queries)
    assert set(got) == {"jaccard", "mrr"}
    assert got["jaccard"] == pytest.approx(jac, abs=1e-12)
    assert got["mrr"] == pytest.approx(mrr, abs=1e-12)
    assert N.jaccard_at_k(src, tgt, k, queries=queries) == got["jaccard"]
    assert N.mrr_at_k(src, tgt, k, queries=queries) == got["mrr"]


def test_metric_values_do_not_depend_on_blocks():
    # Metrics come from integer histograms: identical floats whatever the blocking.
    rng = np.random.default_rng(2)
    src = rng.normal(size=(400, 7))
    tgt = src + rng.normal(size=(400, 7))
    ref = N.retrieval_metrics(src, tgt, 6)
    for bs in (1, 33, 400):
        assert N.retrieval_metrics(src, tgt, 6, block_size=bs) == ref


@pytest.mark.parametrize("plan", TINY_PLANS[:2], indirect=True)
def test_mutual_knn_equals_brute_force(plan):
    rng = np.random.default_rng(3)
    a = rng.normal(size=(150, 5))
    b = np.c_[a + 0.7 * rng.normal(size=(150, 5)), rng.normal(size=(150, 2))]
    for k in (1, 4, 149):
        na = brute_knn(a, a, k, exclude=np.arange(150))
        nb = brute_knn(b, b, k, exclude=np.arange(150))
        expected = np.mean([len(set(p) & set(q)) / k for p, q in zip(na, nb)])
        assert N.mutual_knn(a, b, k) == pytest.approx(expected, abs=1e-12)
    assert N.mutual_knn(a, a, 5) == 1.0
    assert N.mutual_knn_metrics(a, b, 5) == {"mutual_knn": N.mutual_knn(a, b, 5)}


def test_identical_spaces_and_known_values():
    x = np.random.default_rng(4).normal(size=(60, 4))
    assert N.retrieval_metrics(x, x, 5) == {"jaccard": 1.0, "mrr": 1.0}
    # 4 targets on the unit circle; sources at 10, 170, 185, 80 degrees (see test_metrics)
    tgt = np.c_[np.cos(np.radians([0, 90, 180, 270])), np.sin(np.radians([0, 90, 180, 270]))]
    src = np.c_[np.cos(np.radians([10, 170, 185, 80])), np.sin(np.radians([10, 170, 185, 80]))]
    assert N.retrieval_metrics(src, tgt, 1) == {"jaccard": 0.5, "mrr": 0.5}
    assert N.mrr_at_k(src, tgt, 2) == pytest.approx(2.5 / 4)


def test_metrics_module_reexports_the_same_functions():
    for name in ("knn_indices", "retrieval_metrics", "jaccard_at_k", "mrr_at_k", "mutual_knn"):
        assert getattr(metrics, name) is getattr(N, name)


# --------------------------------------------------------------------------- numerical range

@SETTINGS
@given(seed=st.integers(0, 10**6), exp=st.integers(-40, 38),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_any_magnitude_gives_the_float64_reference(seed, exp, dtype):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(60, 5))
    tgt = src + 0.4 * rng.normal(size=(60, 5))
    scale = 10.0 ** (exp * (8 if dtype == np.float64 else 1))  # up to 1e304 for float64
    s, t = (src * scale).astype(dtype), (tgt * scale).astype(dtype)
    if not (np.isfinite(s).all() and np.isfinite(t).all()) or (s == 0).all(1).any() \
            or (t == 0).all(1).any():
        return  # not representable in this dtype: nothing to compare
    # The reference: the same values brought back near 1 in float64 (rankings do not depend
    # on a common positive scale); float32 rounding may only swap near-ties, so each returned
    # item must be a true top-5 item within the float32 resolution.
    s64, t64 = s.astype(np.float64) / scale, t.astype(np.float64) / scale
    ref_s = unit(s64) @ unit(t64).T
    got = N.knn_indices(s, t, 5)
    kth = np.sort(ref_s, 1)[:, -5]
    assert (np.take_along_axis(ref_s, got, 1) >= kth[:, None] - 1e-5).all()
    ref_i = s64 @ t64.T
    inner = N.knn_indices(s, t, 5, metric="inner")
    kth_i = np.sort(ref_i, 1)[:, -5]
    tol = 1e-5 * np.abs(ref_i).max(1)
    assert (np.take_along_axis(ref_i, inner, 1) >= (kth_i - tol)[:, None]).all()


@SETTINGS
@given(seed=st.integers(0, 10**6), e32=st.integers(-100, 110), e64=st.integers(-1000, 1000))
def test_power_of_two_scales_change_nothing(seed, e32, e64):
    # Scaling by 2**e is exact (no rounding) while values stay normal and finite, so every
    # neighbour and metric must be bit-identical to the unscaled one, whatever the magnitude.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 6))
    y = x + 0.7 * rng.normal(size=(50, 6))
    for dtype, e in ((np.float32, e32), (np.float64, e64)):
        a, b = x.astype(dtype), y.astype(dtype)
        sa, sb = np.ldexp(a, e).astype(dtype), np.ldexp(b, e).astype(dtype)
        assert N.retrieval_metrics(sa, sb, 4) == N.retrieval_metrics(a, b, 4)
        assert N.mutual_knn(sa, np.ldexp(b, -e).astype(dtype), 3) == N.mutual_knn(a, b, 3)
        for metric in ("cosine", "inner"):
            np.testing.assert_array_equal(N.knn_indices(sa, sb, 5, metric=metric),
                                          N.knn_indices(a, b, 5, metric=metric))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_base_preparation_equals_unit_rows_bit_for_bit(dtype):
    # Items are normalised tile by tile from per-row norms; queries (and dask chunks) with
    # unit_rows: the two must agree exactly, down to subnormal and near-overflow rows.
    from relreps._numerics import unit_rows

    fi = torch.finfo(dtype)
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 7, generator=g, dtype=torch.float64)
    mags = torch.logspace(math.log10(fi.tiny) - 5, math.log10(fi.max) - 2, 64,
                          dtype=torch.float64)
    t = (t / t.abs().amax(1, keepdim=True) * mags[:, None]).to(dtype)
    t[3, :] = fi.max / 2  # a row whose norm overflows the dtype
    t = t[(t != 0).any(1)]
    np.testing.assert_array_equal(N._prep_base(t, "cosine", "x").numpy(),
                                  unit_rows(t)[0].numpy())


def test_huge_float32_inputs_keep_mrr_one():
    # The reported bug: float32 at 1e30 overflowed the norms and gave MRR 0.05 instead of 1.
    x = np.random.default_rng(5).normal(size=(200, 16)).astype(np.float32)
    assert N.mrr_at_k(x * np.float32(1e30), x * np.float32(3e29), 5) == 1.0
    assert N.mrr_at_k(x * np.float32(1e-30), x, 5) == 1.0  # subnormal-range squares
    assert N.mutual_knn(x * np.float32(1e30), x, 5) == 1.0
    np.testing.assert_array_equal(N.knn_indices(x * np.float32(1e30), x * np.float32(1e30), 3,
                                                metric="inner"),
                                  N.knn_indices(x, x, 3, metric="inner"))


# --------------------------------------------------------------------------- torch, memmap

def test_torch_inputs_agree_with_numpy_and_return_numpy():
    rng = np.random.default_rng(6)
    src, tgt = rng.normal(size=(80, 6)), rng.normal(size=(80, 6))
    got = N.knn_indices(torch.tensor(src), torch.tensor(tgt), 4)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, N.knn_indices(src, tgt, 4))
    assert N.retrieval_metrics(torch.tensor(src), torch.tensor(tgt), 3) == \
        N.retrieval_metrics(src, tgt, 3)
    t = torch.tensor(src, requires_grad=True)
    assert N.mutual_knn(t, torch.tensor(tgt), 3) == N.mutual_knn(src, tgt, 3)


class _DeviceDiscipline(TorchFunctionMode):
    """Records tensor factories called without a device and .numpy() on non-.cpu() tensors."""

    FACTORIES = {"full", "empty", "zeros", "ones", "arange", "tensor", "eye", "linspace", "rand",
                 "randn"}

    def __init__(self) -> None:
        super().__init__()
        self.cpu_copies: set[int] = set()
        self.problems: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.FACTORIES and "device" not in kwargs:
            self.problems.append(f"torch.{name} without device=")
        if name == "numpy" and args and id(args[0]) not in self.cpu_copies:
            self.problems.append(".numpy() on a tensor that was not copied with .cpu()")
        out = func(*args, **kwargs)
        if name == "cpu":
            self.cpu_copies.add(id(out))
        return out


@pytest.mark.parametrize("plan", TINY_PLANS[:2], indirect=True)
def test_torch_inputs_never_leave_their_device(plan):
    rng = np.random.default_rng(7)
    a = torch.tensor(rng.normal(size=(90, 5)))
    b = torch.tensor(rng.normal(size=(90, 5)))
    zeros = torch.zeros(3, 5, dtype=a.dtype, device=a.device)
    with _DeviceDiscipline() as mode:
        N.knn_indices(a, b, 3, exclude=torch.arange(90, device=a.device))
        N.retrieval_metrics(a, b, 4, queries=torch.arange(0, 90, 3, device=a.device))
        N.mrr_at_k(a, b, 2, metric="inner")
        N.mutual_knn(a, b, 3)
        with pytest.raises(NumericalError):
            N.knn_indices(zeros, b, 1)
    assert mode.problems == []
    with pytest.raises(InputTypeError, match="meta"):
        N.knn_indices(torch.empty(4, 5, device="meta"), torch.empty(4, 5, device="meta"), 1)


def test_the_base_is_prepared_tile_by_tile_never_copied(tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(700, 6)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                   shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    bases = []
    real = N._Base.__init__

    def spy(self, *a, **kw):
        real(self, *a, **kw)
        bases.append(self)

    monkeypatch.setattr(N._Base, "__init__", spy)
    np.testing.assert_array_equal(N.knn_indices(mm, mm, 5), N.knn_indices(x, x, 5))
    assert len(bases) == 2 and all(b.prepared is None for b in bases)  # O(N) prepass only
    assert bases[0].f.shape == (700,)
    bad = np.lib.format.open_memmap(tmp_path / "bad.npy", mode="w+", dtype=np.float32,
                                    shape=x.shape)
    bad[:] = x
    bad[650, 2] = np.nan
    bad.flush()
    with pytest.raises(NonFiniteError, match="rows 650"):
        N.knn_indices(x[:5], np.load(tmp_path / "bad.npy", mmap_mode="r"), 2)


# --------------------------------------------------------------------------- validation

X = np.random.default_rng(9).normal(size=(10, 4))


@pytest.mark.parametrize("bad, error, match", [
    (np.ones(10, dtype=bool), InputTypeError, "boolean mask"),
    (np.array([0.0, 1.0]), InputTypeError, "integer row indices"),
    ([-1], RelrepsError, r"queries must be row indices in \[0, 10\)"),
    ([10], RelrepsError, r"queries must be row indices in \[0, 10\)"),
    ([[0, 1]], ShapeError, r"queries must be row indices in \[0, 10\)"),
    ([], ShapeError, "no queries"),
    ("0", InputTypeError, "string"),
])
def test_queries_must_be_integer_indices(bad, error, match):
    with pytest.raises(error, match=match):
        N.retrieval_metrics(X, X, 3, queries=bad)
    with pytest.raises(error, match=match):
        N.mrr_at_k(X, X, 3, queries=bad)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"k": 0}, ShapeError, "k must be between 1 and 10"),
    ({"k": 11}, ShapeError, "k must be between 1 and 10"),
    ({"k": 2.0}, InputTypeError, "k must be an integer"),
    ({"k": True}, InputTypeError, "k must be an integer"),
    ({"k": "3"}, InputTypeError, "k must be an integer"),
    ({"block_size": 0}, RelrepsError, "block_size must be >= 1"),
    ({"block_size": -4}, RelrepsError, "block_size must be >= 1"),
    ({"block_size": 2.5}, InputTypeError, "block_size must be an integer"),
    ({"metric": "l2"}, RelrepsError, "metric must be one of"),
    ({"method": "annoy"}, RelrepsError, "method must be one of"),
])
def test_arguments_are_validated(kwargs, error, match):
    args = {"k": 3, **kwargs}
    with pytest.raises(error, match=match):
        N.retrieval_metrics(X, X, **args)
    with pytest.raises(error, match=match):
        N.knn_indices(X, X, **args)


def test_input_errors_are_named():
    with pytest.raises(ShapeError, match="rows must correspond"):
        N.jaccard_at_k(X, X[:9])
    with pytest.raises(ShapeError, match="needs equal widths"):
        N.mrr_at_k(X, X[:, :3])
    with pytest.raises(ShapeError, match="width"):
        N.knn_indices(X, X[:, :2], 1)
    z = X.copy()
    z[3] = 0
    with pytest.raises(NumericalError, match=r"zero vectors \(rows \[3\]\)"):
        N.jaccard_at_k(z, X)
    with pytest.raises(NumericalError, match=r"zero vectors \(rows \[3\]\)"):
        N.knn_indices(X, z, 2)
    assert N.knn_indices(X, z, 2, metric="inner").shape == (10, 2)  # fine for inner products
    nan = X.copy()
    nan[4, 1] = np.nan
    with pytest.raises(NonFiniteError, match="rows 4"):
        N.mutual_knn(X, nan)
    with pytest.raises(InputTypeError, match="complex"):
        N.knn_indices(X + 1j, X, 2)
    with pytest.raises(InputTypeError, match="mixed numpy and torch"):
        N.knn_indices(X, torch.tensor(X), 2)
    with pytest.raises(ShapeError, match="2-D"):
        N.knn_indices(X[0], X, 2)
    with pytest.raises(InputTypeError, match="None"):
        N.knn_indices(None, X, 2)
    with pytest.raises(ShapeError, match="k must be between 1 and 9"):
        N.mutual_knn(X, X, 10)


@pytest.mark.parametrize("bad, error, match", [
    (np.full(10, 10), RelrepsError, "exclude must hold one row index"),
    (np.arange(9), ShapeError, "exclude must hold one row index"),
    (np.arange(10.0), InputTypeError, "exclude must hold one row index"),
    (np.ones(10, dtype=bool), InputTypeError, "boolean mask"),
])
def test_exclude_is_validated(bad, error, match):
    with pytest.raises(error, match=match):
        N.knn_indices(X, X, 2, exclude=bad)


junk = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=3),
                 st.integers(-5, 0), st.lists(st.integers(-3, 3), max_size=3),
                 st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


junk_arrays = st.one_of(junk, st.just(np.ones((3, 4, 2))), st.just(np.array(["a", "b"])),
                        st.just(np.ones((0, 4))), st.just(np.full((10, 4), np.nan)),
                        st.just(torch.ones(10, 4, dtype=torch.complex64)),
                        st.just(np.ones((10, 4), dtype=object)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(k=junk, block=junk, queries=junk, metric=junk)
def test_junk_arguments_raise_named_errors_only(k, block, queries, metric):
    try:
        N.retrieval_metrics(X, X, k, block_size=block, queries=queries, metric=metric)
    except RelrepsError:
        pass  # expected for almost every draw; any other exception fails the test


# function -> (valid positional arguments, keyword arguments that junk may replace)
CALLS = {
    N.knn_indices: ([X, X, 3], ["metric", "exclude", "block_size", "method"]),
    N.retrieval_metrics: ([X, X, 3], ["queries", "metric", "block_size", "method"]),
    N.mrr_at_k: ([X, X, 3], ["queries", "metric", "block_size"]),
    N.jaccard_at_k: ([X, X, 3], ["queries", "metric"]),
    N.mutual_knn: ([X, X, 3], ["metric", "block_size"]),
    N.mutual_knn_metrics: ([X, X, 3], ["metric", "method"]),
    N.measure_recall: ([X, X, 2, np.zeros((10, 2), dtype=int)], ["metric", "exclude", "sample",
                                                                  "random_state"]),
    N.sample_queries: ([10, 3], ["random_state"]),
    N.plan_blocks: ([10, 10, 4, 3], ["itemsize", "query_block", "threads", "device"]),
}


@settings(max_examples=80, deadline=None, derandomize=True)
@given(fn=st.sampled_from(list(CALLS)), slot=st.integers(0, 20), value=junk_arrays)
def test_every_public_function_raises_only_named_errors(fn, slot, value):
    args, keywords = CALLS[fn]
    slot %= len(args) + len(keywords)
    kwargs = {}
    if slot < len(args):
        args = [*args[:slot], value, *args[slot + 1:]]
    else:
        kwargs = {keywords[slot - len(args)]: value}
    try:
        fn(*args, **kwargs)
    except RelrepsError:
        pass  # a named error (or a valid result): anything else fails the test


# --------------------------------------------------------------------------- helpers

@SETTINGS
@given(nq=st.integers(0, 10**7), ni=st.integers(0, 10**7), d=st.integers(1, 4096),
       k=st.integers(1, 2000), itemsize=st.sampled_from([4, 8]))
def test_plan_blocks_invariants(nq, ni, d, k, itemsize):
    p = N.plan_blocks(nq, ni, d, k, itemsize=itemsize)
    assert p.sub_tile >= 4 * (k + 1) and p.sub_tile & (p.sub_tile - 1) == 0
    assert p.item_block % p.sub_tile == 0 and p.item_block >= p.sub_tile
    assert 1 <= p.query_block <= max(1, min(nq, 2048))
    tile = p.query_block * p.item_block * itemsize
    assert tile <= max(64 << 20, 64 * p.sub_tile * itemsize * p.query_block)
    with pytest.raises(RelrepsError):
        N.plan_blocks(nq, ni, d, k, query_block=0)


def test_sample_queries():
    a = N.sample_queries(1000, 50, 3)
    assert a.dtype == np.int64 and len(np.unique(a)) == 50 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, N.sample_queries(1000, 50, 3))
    assert not np.array_equal(a, N.sample_queries(1000, 50, 4))
    np.testing.assert_array_equal(N.sample_queries(5, 50), np.arange(5))
    with pytest.raises(RelrepsError):
        N.sample_queries(10, 0)
    with pytest.raises(RelrepsError):
        N.sample_queries(10, 3, random_state=-1)


def test_product_pass_rescores_only_the_rows_it_cannot_prove(kernel, monkeypatch):
    """Distinct similarities: the order of the matrix products is proven right, nothing is
    rescored. Near-ties: only their band is rescored. Many exact copies: the row goes to the
    search that rescores as it goes. Every path gives the brute-force answer."""
    counts = {"rescored": 0, "exact_rows": 0, "wide_rows": 0}
    rescore, running, products = N._rescore, N._Running, N._Products

    def spy_rescore(Q, rows, items, cols):
        counts["rescored"] += int(rows.numel())
        return rescore(Q, rows, items, cols)

    class SpyRunning(running):
        def __init__(self, Q, *a, **kw):
            counts["exact_rows"] += int(Q.shape[0])
            super().__init__(Q, *a, **kw)

    class SpyProducts(products):
        def __init__(self, rows, K, sub, dtype, device):
            if dtype == torch.float64:
                counts["wide_rows"] += rows
            super().__init__(rows, K, sub, dtype, device)

    monkeypatch.setattr(N, "_rescore", spy_rescore)
    monkeypatch.setattr(N, "_Running", SpyRunning)
    monkeypatch.setattr(N, "_Products", SpyProducts)
    rng = np.random.default_rng(5)
    q, b = rng.normal(size=(200, 16)), rng.normal(size=(3000, 16))
    np.testing.assert_array_equal(N.knn_indices(q, b, 5), brute_knn(q, b, 5))
    assert counts["rescored"] == 0 and counts["exact_rows"] == 0
    b2 = b.copy()
    b2[1] = b2[0]  # one exact tie, inside a band of 2 items
    q2 = np.vstack([b2[0] + 1e-3 * rng.normal(size=16), q[:10]])
    np.testing.assert_array_equal(N.knn_indices(q2, b2, 5), brute_knn(q2, b2, 5))
    assert 0 < counts["rescored"] <= 5 + N._MARGIN and counts["exact_rows"] == 0
    # 200 float32 items at cosines 1 - j * 5e-7 from the query: distinct far beyond the
    # rounding of float32 unit rows (~1e-7), all within the float32 products' band (~5e-6 at
    # d=16): the band runs past the kept items, the float64 product pass separates them
    counts["wide_rows"] = 0  # float64 passes from here on are the second passes
    u = unit(rng.normal(size=(1, 16)))[0]
    w = rng.normal(size=(200, 16))
    w = unit(w - (w @ u)[:, None] * u)
    theta = np.arccos(1 - 5e-7 * rng.permutation(np.arange(1, 201)))
    b4 = b.astype(np.float32)
    b4[500:700] = (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * w).astype(np.float32)
    q4 = np.vstack([u, 1.5 * u]).astype(np.float32)
    got = N.knn_indices(q4, b4, 5)
    np.testing.assert_array_equal(got, brute_knn(q4.astype(np.float64), b4.astype(np.float64), 5))
    assert counts["exact_rows"] == 0 and counts["wide_rows"] == 2
    with monkeypatch.context() as m:  # past the size limit of the float64 pass: same answer
        m.setattr(N, "_WIDE_PASS_MAX_ITEMS", len(b4) - 1)
        np.testing.assert_array_equal(N.knn_indices(q4, b4, 5), got)
    assert counts["exact_rows"] == 2 and counts["wide_rows"] == 2
    counts["exact_rows"] = 0
    b3 = b.copy()
    b3[100:140] = b3[0]  # 41 copies: the band runs past the k + margin kept items
    q3 = np.vstack([b3[0], q[:10]])
    np.testing.assert_array_equal(N.knn_indices(q3, b3, 5), brute_knn(q3, b3, 5))
    assert counts["exact_rows"] == 1


def test_dask_tiles_return_rescored_values():
    rng = np.random.default_rng(6)
    q = torch.from_numpy(unit(rng.normal(size=(30, 8))).astype(np.float32))
    b = torch.from_numpy(unit(rng.normal(size=(500, 8))).astype(np.float32))
    base = N._Base(None, "inner", prepared=b)
    plan = N.plan_blocks(30, 500, 8, 4)
    v, i = N._search(q, base, 4, plan)
    ref = (q.double()[:, None, :] * b.double()[i]).sum(-1)
    torch.testing.assert_close(v, ref, rtol=0, atol=1e-15)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 9), K=st.integers(1, 12),
       tiles=st.integers(1, 5), levels=st.sampled_from([3, 50, 10**6]),
       holes=st.floats(0, 0.5), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_compiled_product_pass_equals_the_torch_operations(seed, rows, K, tiles, levels, holes,
                                                            dtype):
    """Same kept values and indices (ties: the smaller index) from the compiled loop and from
    the torch operations, on tiles with many exact ties, excluded items (-inf) and padding."""
    sub = 64
    runs = {}
    for name, env in (("compiled", "0"), ("ops", "1")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RELREPS_NO_KERNELS", env)
            runs[name] = _product_pass(seed, rows, K, sub, tiles, levels, holes, dtype)
    a, b = runs["compiled"], runs["ops"]
    torch.testing.assert_close(a.vals, b.vals, rtol=0, atol=0)
    np.testing.assert_array_equal(a.idx.numpy(), b.idx.numpy())
    assert (a.vals[:, :-1] >= a.vals[:, 1:]).all()  # descending


def _product_pass(seed, rows, K, sub, tiles, levels, holes, dtype):
    run = N._Products(rows, K, sub, dtype, torch.device("cpu"))
    start = 0
    for t in range(tiles):
        rng = np.random.default_rng([seed, t])
        width = int(rng.integers(1, 4 * sub))
        padded = -(-width // sub) * sub
        vals = rng.integers(0, levels, size=(rows, padded)).astype(np.float64) / levels
        vals[rng.random((rows, padded)) < holes] = -np.inf
        vals[:, width:] = -np.inf
        run.push(torch.tensor(vals, dtype=dtype), None, start, width)
        start += width
    return run
