"""Sparse top-k relative projection equals the dense top-k, whatever the chunking."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relreps.errors import AnchorError, RelrepsError
from relreps.projection import relative_projection
from relreps.sparse import sparse_relative_projection


def _dense_topk(x, a, k, **kw):
    d = relative_projection(x, a, **kw)
    out = np.zeros_like(d)
    idx = np.argsort(-d, axis=1, kind="stable")[:, :k]
    np.put_along_axis(out, idx, np.take_along_axis(d, idx, 1), 1)
    return out, idx


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), m=st.integers(1, 40),
       data=st.data(), sim=st.sampled_from(["cosine", "euclidean", "l1", "linf"]),
       center=st.sampled_from([None, "anchors"]))
def test_sparse_topk_equals_dense_topk(seed, n, m, data, sim, center):
    # A single anchor centred on itself is a zero vector: cosine refuses it (tested elsewhere).
    assume(not (m == 1 and center == "anchors" and sim == "cosine"))
    k = data.draw(st.integers(1, m))
    ac = data.draw(st.integers(1, m + 3))
    cs = data.draw(st.integers(1, n + 3))
    rng = np.random.default_rng(seed)
    x, a = rng.normal(size=(n, 4)), rng.normal(size=(m, 4))
    s = sparse_relative_projection(x, a, k, similarity=sim, center=center,
                                   anchor_chunk_size=ac, chunk_size=cs, dtype=np.float64)
    dense, idx = _dense_topk(x, a, k, similarity=sim, center=center)
    assert s.shape == (n, m) and s.nnz == n * k
    assert (np.diff(s.indptr) == k).all()
    for i in range(n):  # continuous random data: no ties, so the kept columns are the same
        assert set(s.indices[s.indptr[i]:s.indptr[i + 1]]) == set(idx[i])
    np.testing.assert_allclose(s.toarray(), dense, atol=1e-10)


def test_memmap_bank_and_torch_input(tmp_path):
    rng = np.random.default_rng(0)
    bank = np.lib.format.open_memmap(tmp_path / "bank.npy", mode="w+", dtype=np.float32,
                                     shape=(500, 8))
    bank[:] = rng.normal(size=(500, 8))
    bank.flush()
    x = rng.normal(size=(10, 8)).astype(np.float32)
    s = sparse_relative_projection(torch.tensor(x), bank, 5, anchor_chunk_size=64)
    dense, _ = _dense_topk(x, np.asarray(bank), 5)
    np.testing.assert_allclose(s.toarray(), dense, atol=1e-5)
    assert s.dtype == np.float32


def test_errors():
    x, a = np.ones((3, 2)), np.eye(2)
    with pytest.raises(AnchorError):
        sparse_relative_projection(x, a, 3)
    with pytest.raises(AnchorError):
        sparse_relative_projection(x, a, 0)
    with pytest.raises(RelrepsError):
        sparse_relative_projection(x, np.ones((2, 3)), 1)
    with pytest.raises(RelrepsError):
        sparse_relative_projection(x, np.random.default_rng(0).normal(size=(5, 2)), 2,
                                   similarity="rbf", anchor_chunk_size=2)
    # rbf is fine when the whole bank is one chunk
    s = sparse_relative_projection(x + np.arange(3)[:, None], np.random.default_rng(0)
                                   .normal(size=(5, 2)), 2, similarity="rbf")
    assert s.nnz == 6


def test_arguments_are_validated():
    from relreps.errors import InputTypeError, ShapeError

    rng = np.random.default_rng(0)
    x, a = rng.normal(size=(5, 3)), rng.normal(size=(9, 3))
    for kwargs, err in [(dict(k=2.5), InputTypeError), (dict(k=True), InputTypeError),
                        (dict(chunk_size=0), RelrepsError), (dict(chunk_size=1.5), InputTypeError),
                        (dict(anchor_chunk_size=-1), RelrepsError), (dict(dtype=np.int32),
                                                                     InputTypeError),
                        (dict(dtype="nonsense"), InputTypeError), (dict(center="mean"),
                                                                   RelrepsError),
                        (dict(center=np.zeros(2)), ShapeError)]:
        with pytest.raises(err):
            sparse_relative_projection(x, a, **{"k": 2, **kwargs})
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(RelrepsError, match=r"x contains NaN or inf values \(rows 3\)"):
        sparse_relative_projection(bad, a, 2, chunk_size=2)
    bank = a.copy()
    bank[7, 0] = np.nan
    with pytest.raises(RelrepsError, match=r"anchors contains NaN or inf values \(rows 7\)"):
        sparse_relative_projection(x, bank, 2, anchor_chunk_size=4)


def test_auto_centre_and_huge_values():
    rng = np.random.default_rng(1)
    x, a = rng.normal(size=(6, 4)) + 10, rng.normal(size=(30, 4)) + 10  # anisotropic
    auto = sparse_relative_projection(x, a, 3, center="auto", anchor_chunk_size=7,
                                      dtype=np.float64)
    centred = sparse_relative_projection(x, a, 3, center="anchors", anchor_chunk_size=7,
                                         dtype=np.float64)
    np.testing.assert_allclose(auto.toarray(), centred.toarray(), atol=1e-12)
    big = sparse_relative_projection(x * 1e300, a * 1e300, 3, similarity="euclidean",
                                     center="anchors", anchor_chunk_size=7, dtype=np.float64)
    ref = sparse_relative_projection(x, a, 3, similarity="euclidean", center="anchors",
                                     anchor_chunk_size=7, dtype=np.float64)
    np.testing.assert_allclose(big.toarray() / 1e300, ref.toarray(), rtol=1e-10)
    with pytest.raises(RelrepsError, match="too narrow"):
        sparse_relative_projection(x * 1e300, a * 1e300, 3, similarity="euclidean",
                                   dtype=np.float32)
