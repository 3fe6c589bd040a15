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
from relreps.errors import AnchorError, RelrepsError
from relreps.projection import relative_projection
from relreps.validation import check_array, is_torch

__all__ = ["sparse_relative_projection", "CHUNKABLE_SIMILARITIES"]

#: Similarities whose value for one anchor does not depend on the other anchors, so the bank can
#: be split into chunks. ("rbf" sets its bandwidth and "basis" its coordinates from all anchors.)
CHUNKABLE_SIMILARITIES = ("cosine", "angular", "inner", "euclidean", "l1", "linf")


def _bank_mean(anchors: np.ndarray, step: int) -> np.ndarray:
    total = np.zeros(anchors.shape[1], dtype=np.float64)
    for s in range(0, len(anchors), step):
        total += np.asarray(anchors[s:s + step], dtype=np.float64).sum(0)
    return total / len(anchors)


def sparse_relative_projection(x: Array, anchors: Array, k: int, *, similarity: str = "cosine",
                               center: str | Array | None = None,
                               anchor_chunk_size: int = 8192, chunk_size: int = 4096,
                               dtype: Any = np.float32) -> Any:
    """Top-`k` relative representation: each row keeps its `k` largest similarities.

    Parameters
    ----------
    x : (n, d) samples (numpy, memmap or torch; converted to numpy).
    anchors : (m, d) anchor bank, possibly much larger than memory allows densely (a memmap).
    k : entries kept per row, 1 <= k <= m.
    similarity : a name in :data:`CHUNKABLE_SIMILARITIES` (any registered one when the whole bank
        fits in one chunk).
    center : None, ``"anchors"`` (subtract the mean of the whole bank, computed in chunks) or a
        (d,) vector.
    anchor_chunk_size, chunk_size : anchors and samples per dense block.

    Returns
    -------
    scipy.sparse.csr_matrix (n, m) with exactly k stored values per row (explicit zeros kept),
    columns sorted within each row.
    """
    from scipy import sparse

    sim = _sim.get(similarity)
    xs = x.detach().cpu().numpy() if is_torch(x) else x
    bank = anchors.detach().cpu().numpy() if is_torch(anchors) else anchors
    xs = check_array(xs, "x", finite=not isinstance(xs, np.memmap))
    bank = check_array(bank, "anchors", finite=not isinstance(bank, np.memmap))
    n, m = xs.shape[0], bank.shape[0]
    if xs.shape[1] != bank.shape[1]:
        raise RelrepsError(f"dimension mismatch: x has {xs.shape[1]} features, anchors have "
                           f"{bank.shape[1]}")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= m:
        raise AnchorError(f"k must be an integer between 1 and the number of anchors ({m}), "
                          f"got {k!r}")
    for name, v in (("anchor_chunk_size", anchor_chunk_size), ("chunk_size", chunk_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise RelrepsError(f"{name} must be a positive integer, got {v!r}")
    if sim.name not in CHUNKABLE_SIMILARITIES and anchor_chunk_size < m:
        raise RelrepsError(f"the {sim.name!r} similarity depends on the whole anchor set; it "
                           f"cannot be chunked over anchors (use one of "
                           f"{CHUNKABLE_SIMILARITIES} or anchor_chunk_size >= {m})")
    if isinstance(center, str):
        if center != "anchors":
            raise RelrepsError(f"center must be None, 'anchors' or a vector, got {center!r}")
        center = _bank_mean(bank, anchor_chunk_size)
    elif center is not None:
        center = np.asarray(to_numpy(center), dtype=np.float64).ravel()
    out_dtype = np.dtype(dtype)
    values = np.empty((n, k), dtype=out_dtype)
    columns = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk_size):
        block = np.asarray(xs[s:s + chunk_size], dtype=np.float64)
        best_v: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for a in range(0, m, anchor_chunk_size):
            chunk = np.asarray(bank[a:a + anchor_chunk_size], dtype=np.float64)
            dense = torch.from_numpy(relative_projection(block, chunk, similarity=sim,
                                                         center=center))
            idx = torch.arange(a, a + chunk.shape[0]).expand(dense.shape[0], -1)
            if best_v is not None:
                dense = torch.cat([best_v, dense], 1)
                idx = torch.cat([best_i, idx], 1)
            kk = min(k, dense.shape[1])
            top = torch.topk(dense, kk, dim=1, sorted=False)
            best_v, best_i = top.values, torch.gather(idx, 1, top.indices)
        order = torch.argsort(best_i, dim=1)
        values[s:s + len(block)] = torch.gather(best_v, 1, order).numpy()
        columns[s:s + len(block)] = torch.gather(best_i, 1, order).numpy()
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return sparse.csr_matrix((values.ravel(), columns.ravel(), indptr), shape=(n, m))
