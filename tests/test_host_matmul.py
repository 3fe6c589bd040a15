"""Which BLAS computes the large products: numpy's for numpy input (and for the metrics' CPU
products), torch's for torch input and for anything autograd must see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from relreps import _numerics, relative_projection
from relreps.metrics import cka


class _Spy:
    """numpy, with np.matmul counted."""

    def __init__(self) -> None:
        self.calls = 0

    def matmul(self, *a, **k):
        self.calls += 1
        return np.matmul(*a, **k)

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def spy(monkeypatch):
    s = _Spy()
    monkeypatch.setattr(_numerics, "np", s)
    monkeypatch.setattr(_numerics, "HOST_MATMUL_MIN_MACS", 1)
    return s


def _data(n=300, d=24, k=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, x[rng.choice(n, k, replace=False)].copy()


def test_values_match_torch_and_gram_products_are_symmetric(spy):
    a = torch.randn(500, 64)
    for left, right in ((a, a.T), (a.T, a), (a, torch.randn(64, 7))):
        got = _numerics.host_matmul(left, right)
        assert isinstance(got, torch.Tensor) and got.dtype == left.dtype
        torch.testing.assert_close(got, left @ right, rtol=1e-5, atol=1e-4)
    assert spy.calls == 3
    g = _numerics.host_matmul(a.T, a)
    assert torch.equal(g, g.T)


def test_torch_keeps_autograd_small_products_and_other_dtypes(spy, monkeypatch):
    a = torch.randn(50, 8, requires_grad=True)
    out = _numerics.host_matmul(a, a.detach().T)
    out.sum().backward()
    assert a.grad is not None and spy.calls == 0
    _numerics.host_matmul(torch.ones(4, 4, dtype=torch.float16), torch.ones(4, 4,
                                                                           dtype=torch.float16))
    _numerics.host_matmul(torch.ones(4, 4, dtype=torch.int64), torch.ones(4, 4, dtype=torch.int64))
    _numerics.host_matmul(torch._neg_view(torch.ones(4, 4)), torch.ones(4, 4))
    assert spy.calls == 0
    monkeypatch.setattr(_numerics, "HOST_MATMUL_MIN_MACS", 10**9)
    _numerics.host_matmul(torch.ones(40, 40), torch.ones(40, 40))
    assert spy.calls == 0


@pytest.mark.parametrize("similarity", ["cosine", "inner", "basis", "whitened_cosine"])
def test_numpy_input_uses_numpys_blas_and_torch_input_torchs(spy, similarity):
    x, a = _data()
    r = relative_projection(x, a, similarity=similarity)
    assert spy.calls >= 1
    n = spy.calls
    rt = relative_projection(torch.from_numpy(x), torch.from_numpy(a), similarity=similarity)
    assert spy.calls == n
    np.testing.assert_allclose(r, rt.numpy(), atol=1e-5)


def test_chunked_and_memmapped_numpy_input_use_numpys_blas(spy, tmp_path):
    x, a = _data()
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = relative_projection(xm, a, chunk_size=64)
    assert spy.calls == 5
    np.testing.assert_allclose(got, relative_projection(x, a), atol=1e-6)


def test_cka_products_on_cpu_use_numpys_blas_with_the_same_value(spy):
    x, _ = _data(n=400, d=30)
    y = x @ np.random.default_rng(1).standard_normal((30, 20)).astype(np.float32)
    v = cka(x, y)
    assert spy.calls == 3  # X^T X, Y^T Y, X^T Y
    ref = cka(x.astype(np.float64), y.astype(np.float64))
    assert abs(v - ref) < 1e-5
