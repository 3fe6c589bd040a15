"""Sparse top-k relative representations for large anchor banks (as in ASIF, Norelli et al. 2023).

With tens of thousands of anchors a dense (n, k) relative matrix no longer fits in memory, and
most of its entries (similarities to unrelated anchors) carry little signal. Keeping only each
sample's `k` largest similarities gives a sparse representation whose non-zero pattern names the
sample's nearest anchors. The anchor bank is processed in chunks with a running top-k, so memory
is O(chunk_size * (anchor_chunk_size + k)) whatever the bank size; the result is a SciPy CSR
matrix with exactly `k` stored entries per row (columns sorted), equal to the top-k of the dense
projection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from relreps import similarity as _sim
from relreps._backend import Array, to_numpy
from relreps._numerics import pow2_global_scale
from relreps.centering import resolve_center, warn_if_collapsing
from relreps.errors import AnchorError, InputTypeError, NumericalError, RelrepsError, ShapeError
from relreps.projection import _center_vector, _check_center_param, _project
from relreps.validation import check_array, check_finite_rows, check_int

__all__ = ["sparse_relative_projection", "CHUNKABLE_SIMILARITIES"]

#: Similarities whose value for one anchor does not depend on the other anchors, so the bank can
#: be split into chunks. ("rbf" sets its bandwidth and "basis" its coordinates from all anchors.)
CHUNKABLE_SIMILARITIES = ("cosine", "angular", "inner", "euclidean", "l1", "linf")


def _bank_mean(anchors: np.ndarray, step: int) -> np.ndarray:
    """Mean of the bank, read in chunks (finite check per chunk; no overflow at any scale)."""
    m = len(anchors)
    total = torch.zeros(anchors.shape[1], dtype=torch.float64)
    for s in range(0, m, step):
        chunk = np.asarray(anchors[s:s + step], dtype=np.float64)
        check_finite_rows(chunk, "anchors", offset=s)
        t = torch.from_numpy(chunk)
        scale = pow2_global_scale(t)
        total += (t / scale).sum(0) * (scale / m)
    return total.numpy()


def _sample_rows(bank: np.ndarray, n: int) -> np.ndarray:
    """At most `n` rows spread evenly over the bank (deterministic)."""
    idx = np.unique(np.linspace(0, len(bank) - 1, min(n, len(bank))).round().astype(np.int64))
    return np.asarray(bank[idx], dtype=np.float64)


def sparse_relative_projection(x: Array, anchors: Array, k: int, *, similarity: str = "cosine",
                               center: str | Array | None = None,
                               anchor_chunk_size: int = 8192, chunk_size: int = 4096,
                               dtype: Any = np.float32) -> Any:
    """Top-`k` relative representation: each row keeps its `k` largest similarities.

    Parameters
    ----------
    x : (n, d) samples (numpy, memmap or torch; computed on the CPU in float64).
    anchors : (m, d) anchor bank, possibly much larger than memory allows densely (a memmap).
    k : entries kept per row, 1 <= k <= m.
    similarity : a name in :data:`CHUNKABLE_SIMILARITIES` (any registered one when the whole bank
        fits in one chunk).
    center : None, ``"none"``, ``"anchors"`` (subtract the mean of the whole bank, computed in
        chunks), ``"auto"`` (centre when the bank is anisotropic, judged on at most
        `anchor_chunk_size` evenly spaced anchors) or a (d,) vector.
    anchor_chunk_size, chunk_size : anchors and samples per dense block.
    dtype : floating dtype of the stored values.

    Returns
    -------
    scipy.sparse.csr_matrix (n, m) with exactly k stored values per row (explicit zeros kept),
    columns sorted within each row.
    """
    from scipy import sparse

    sim = _sim.get(similarity)
    xs = check_array(to_numpy(x) if not isinstance(x, np.memmap) else x, "x", finite=False)
    bank = check_array(anchors if isinstance(anchors, np.memmap) else to_numpy(anchors),
                       "anchors", finite=False)
    n, m = xs.shape[0], bank.shape[0]
    if xs.shape[1] != bank.shape[1]:
        raise ShapeError(f"dimension mismatch: x has {xs.shape[1]} features, anchors have "
                         f"{bank.shape[1]}")
    k = check_int(k, "k")
    if not 1 <= k <= m:
        raise AnchorError(f"k must be between 1 and the number of anchors ({m}), got {k}")
    anchor_chunk_size = check_int(anchor_chunk_size, "anchor_chunk_size", min_value=1)
    chunk_size = check_int(chunk_size, "chunk_size", min_value=1)
    try:
        out_dtype = np.dtype(dtype)
    except TypeError:
        raise InputTypeError(f"dtype must be a floating-point dtype, got {dtype!r}") from None
    if out_dtype.kind != "f":
        raise InputTypeError(f"dtype must be a floating-point dtype, got {out_dtype}")
    if sim.name not in CHUNKABLE_SIMILARITIES and anchor_chunk_size < m:
        raise RelrepsError(f"the {sim.name!r} similarity depends on the whole anchor set; it "
                           f"cannot be chunked over anchors (use one of "
                           f"{CHUNKABLE_SIMILARITIES} or anchor_chunk_size >= {m})")
    _check_center_param(center)
    if center is None or isinstance(center, str):
        requested = center
        if isinstance(center, str) and center == "auto":
            sample = _sample_rows(bank, anchor_chunk_size)
            requested = resolve_center("auto", {"anchors": sample}).center if len(sample) > 1 \
                else None
        if requested is None or requested == "none":
            if sim.name in ("cosine", "angular") and center != "auto" and m > 1:
                warn_if_collapsing(_sample_rows(bank, anchor_chunk_size), None, sim.name,
                                   stacklevel=3)
            center = None
        else:
            center = _bank_mean(bank, anchor_chunk_size)
    else:
        center = np.asarray(to_numpy(_center_vector(center, xs.shape[1])), dtype=np.float64)
    values = np.empty((n, k), dtype=out_dtype)
    columns = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk_size):
        block = np.asarray(xs[s:s + chunk_size], dtype=np.float64)
        check_finite_rows(block, "x", offset=s)
        best_v: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for a in range(0, m, anchor_chunk_size):
            chunk = np.asarray(bank[a:a + anchor_chunk_size], dtype=np.float64)
            check_finite_rows(chunk, "anchors", offset=a)
            dense = torch.from_numpy(_project(block, chunk, similarity=sim, center=center,
                                              warn=False))
            idx = torch.arange(a, a + chunk.shape[0]).expand(dense.shape[0], -1)
            if best_v is not None:
                dense = torch.cat([best_v, dense], 1)
                idx = torch.cat([best_i, idx], 1)
            kk = min(k, dense.shape[1])
            top = torch.topk(dense, kk, dim=1, sorted=False)
            best_v, best_i = top.values, torch.gather(idx, 1, top.indices)
        order = torch.argsort(best_i, dim=1)
        with np.errstate(over="ignore"):
            v = torch.gather(best_v, 1, order).numpy().astype(out_dtype)
        if not np.isfinite(v).all():
            raise NumericalError(f"dtype {out_dtype} is too narrow for the similarities of rows "
                               f"{s}-{s + len(block) - 1}; use float32 or float64")
        values[s:s + len(block)] = v
        columns[s:s + len(block)] = torch.gather(best_i, 1, order).numpy()
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return sparse.csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(n, m))
