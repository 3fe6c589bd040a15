"""Anchors: which samples serve as anchors, how to choose them, and whether they are any good.

Samplers (:func:`sample_anchors`) take numpy arrays, ``np.memmap``, torch tensors (any device)
and dask arrays, and return numpy row indices. Inputs that may not fit in memory are read in
blocks of rows (:data:`BLOCK_BYTES` at a time; dask blocks are computed by dask's scheduler, on a
cluster when one is active):

- ``uniform`` and ``stratified`` only need the row count (and the labels) after one validating
  pass over the values;
- ``kmeans`` runs Lloyd's k-means in memory on up to :data:`LLOYD_MAX_ROWS` rows; above that it
  clusters a random sample in memory, refines the centroids with ``MiniBatchKMeans.partial_fit``
  over row blocks, and assigns real samples to centroids block by block with
  ``sklearn.metrics.pairwise_distances_argmin_min`` (never an n x k matrix);
- ``farthest_point`` keeps one running distance per row and updates it block by block.

Every sampler reads the same row blocks whatever the array kind, so numpy, memmap, torch and dask
inputs give the same anchors for the same seed. Inputs are rescaled by a power of two before any
distance is computed (exact), so samplers and :func:`diagnose` work at any magnitude.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import os
import tempfile
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relreps._backend import Array
from relreps.cache import current_umask
from relreps.errors import (
    AnchorError,
    DataNotFoundError,
    FormatError,
    InputTypeError,
    NumericalError,
    OptionError,
    RelrepsError,
    RunFolderError,
    ShapeError,
)
from relreps.validation import (
    array_kind,
    check_array,
    check_bool,
    check_choice,
    check_finite_rows,
    check_float,
    check_indices,
    check_int,
    check_labels,
    check_random_state,
    is_dask,
    is_torch,
)

__all__ = ["SAMPLERS", "sample_anchors", "parallel_anchors", "AnchorSet", "diagnose",
           "AnchorDiagnostics", "AnchorWarning", "uniform", "stratified", "kmeans",
           "farthest_point", "FORMAT_VERSION", "BLOCK_BYTES", "LLOYD_MAX_ROWS",
           "MAX_OUTSIDE_SPAN"]

#: Bytes of float64 data held per block of rows when reading memory-mapped, torch or dask input.
BLOCK_BYTES = 64 * 2**20
#: Above this many rows (or :data:`_LLOYD_MAX_BYTES` of float64 data) k-means anchors use the
#: sampled-init + minibatch path instead of Lloyd's algorithm on all rows.
LLOYD_MAX_ROWS = 20_000
_LLOYD_MAX_BYTES = 2**28
#: farthest_point keeps the prepared rows in memory up to this size instead of re-reading them
_FP_CACHE_BYTES = 2**28
#: `diagnose` warns when more than this fraction of a sample's direction lies outside the
#: anchors' span (below, the fact is reported as a note).
MAX_OUTSIDE_SPAN = 0.10
#: Version of the AnchorSet JSON format written by :meth:`AnchorSet.save`.
FORMAT_VERSION = 1


class AnchorWarning(UserWarning):
    """The anchors cannot represent the latent space well."""


# ------------------------------------------------------------------------------- row blocks

def _pow2(m: float) -> float:
    """A power of two >= m (1 for 0): dividing by it is exact and brings values into [-1, 1]."""
    import torch

    from relreps._numerics import pow2_global_scale

    return float(pow2_global_scale(torch.tensor([m], dtype=torch.float64)))


def _scan_block(start: int, block: Any, name: str) -> float:
    block = np.asarray(block)
    if block.dtype.kind != "f":
        block = block.astype(np.float64)
    check_finite_rows(block, name, offset=start)
    return float(np.abs(block).max(initial=0.0))


class _Rows:
    """A validated (n, d) numpy/memmap, torch or dask array read as numpy blocks of rows.

    Block boundaries depend only on (n, d, block_rows), never on the array kind, so every kind
    gives the same numbers.
    """

    def __init__(self, x: Any, name: str, block_rows: int | None = None) -> None:
        if isinstance(x, np.memmap) and x.ndim == 2 and x.dtype not in (np.float32, np.float64):
            # integer or float16 memory maps: validate the dtype on an empty view and convert
            # block by block, instead of converting (loading) the whole file
            check_array(x[:0], name, finite=False)
        else:
            x = check_array(x, name, finite=False, kinds=("numpy", "torch", "dask"))
        if is_dask(x) and any(math.isnan(c) for c in x.chunks[0]):
            x = x.compute_chunk_sizes()
        if is_torch(x) and x.is_meta:
            raise InputTypeError(f"{name} is on the meta device: it has no values to read")
        self.x, self.name, self.kind = x, name, array_kind(x)
        self.n, self.d = int(x.shape[0]), int(x.shape[1])
        rows = check_int(block_rows, "block_rows", min_value=1, allow_none=True)
        self.block_rows = rows if rows is not None else max(1, BLOCK_BYTES // (8 * self.d))

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.block_rows, self.n)) for s in range(0, self.n, self.block_rows)]

    def block(self, start: int, stop: int) -> np.ndarray:
        b = self.x[start:stop]
        if self.kind == "torch":
            return b.detach().cpu().numpy()
        if self.kind == "dask":
            return np.asarray(b.compute())
        return np.asarray(b)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """The rows `idx` (sorted or not), as numpy, reading only those rows."""
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        if self.kind == "torch":
            import torch

            got = self.x[torch.as_tensor(idx[order], device=self.x.device)].detach().cpu().numpy()
        elif self.kind == "dask":
            got = np.asarray(self.x[idx[order]].compute())
        else:
            got = np.asarray(self.x[idx[order]])
        out = np.empty_like(got)
        out[order] = got
        return out

    def map(self, fn: Callable[..., Any], *per_row: np.ndarray) -> list[Any]:
        """``fn(start, block, *slices)`` for every block (slices of the per-row arrays).

        numpy and torch blocks are read one at a time; dask blocks are computed by dask.
        """
        ranges = self.ranges()
        if self.kind != "dask":
            return [fn(s, self.block(s, e), *(a[s:e] for a in per_row)) for s, e in ranges]
        import dask

        tasks = [dask.delayed(fn)(s, self.x[s:e], *(a[s:e] for a in per_row))
                 for s, e in ranges]
        return list(dask.compute(*tasks))

    def map_reduce(self, fn: Callable[..., Any], combine: Callable[[Any, Any], Any],
                   *per_row: np.ndarray) -> Any:
        """Combine ``fn`` over all blocks, holding O(1) partial results (a tree under dask)."""
        ranges = self.ranges()
        if self.kind != "dask":
            acc = None
            for s, e in ranges:
                r = fn(s, self.block(s, e), *(a[s:e] for a in per_row))
                acc = r if acc is None else combine(acc, r)
            return acc
        import dask

        parts = [dask.delayed(fn)(s, self.x[s:e], *(a[s:e] for a in per_row))
                 for s, e in ranges]
        while len(parts) > 1:
            parts = [dask.delayed(combine)(parts[i], parts[i + 1]) if i + 1 < len(parts)
                     else parts[i] for i in range(0, len(parts), 2)]
        return parts[0].compute()

    def scan(self) -> float:
        """Check that every value is finite (naming the first bad rows); return max |x|."""
        if self.n == 0:
            return 0.0
        if self.kind == "torch":
            check_array(self.x, self.name)  # on the tensor's device
            return float(self.x.detach().abs().max())
        return float(self.map_reduce(functools.partial(_scan_block, name=self.name), max))

    def load(self, dtype: Any = np.float64) -> np.ndarray:
        """All rows in memory (for inputs known to be small)."""
        if self.n == 0:
            return np.zeros((0, self.d), dtype=dtype)
        return np.concatenate([self.block(s, e).astype(dtype, copy=False)
                               for s, e in self.ranges()])


# ------------------------------------------------------------------------------- argument checks

def _check_count(n: Any, n_samples: int, name: str = "n") -> int:
    n = check_int(n, name)
    if n < 1:
        raise AnchorError(f"{name} (the number of anchors) must be a positive integer, got {n}")
    if n > n_samples:
        raise AnchorError(f"asked for {n} anchors but only {n_samples} samples are available")
    return n


def _unit_rows_np(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, zero-row mask) of a float64 numpy array, exact at any magnitude."""
    import torch

    from relreps._numerics import unit_rows

    u, zero = unit_rows(torch.from_numpy(np.require(a, np.float64, ["C", "W"])))
    return u.numpy(), zero.numpy()


# ------------------------------------------------------------------------------- samplers

def uniform(x: Array, n: int, *, random_state: Any = None) -> np.ndarray:
    """`n` distinct rows drawn uniformly at random."""
    rows = _Rows(x, "x")
    n = _check_count(n, rows.n)
    rng = check_random_state(random_state)
    rows.scan()
    return rng.choice(rows.n, size=n, replace=False).astype(np.int64)


def stratified(x: Array, n: int, *, y: Any = None, random_state: Any = None) -> np.ndarray:
    """Class-balanced anchors: one random sample of each class in turn (round robin).

    Classes are visited in a random order; a class with no samples left is skipped, so every
    class gets ``n // n_classes`` or one more anchors unless it has fewer samples.
    """
    rows = _Rows(x, "x")
    n = _check_count(n, rows.n)
    if y is None:
        raise AnchorError("stratified anchor sampling needs the labels y")
    y = check_labels(y.compute() if is_dask(y) else y, "y", n=rows.n)
    rng = check_random_state(random_state)
    try:
        classes, inv = np.unique(y, return_inverse=True)
    except TypeError:
        raise InputTypeError("y mixes label types that cannot be compared (e.g. numbers and "
                             "strings); pass labels of one type") from None
    if n < len(classes):
        raise AnchorError(f"stratified sampling needs at least one anchor per class: asked for "
                          f"{n} anchors but there are {len(classes)} classes")
    rows.scan()
    order = rng.permutation(len(classes))
    members = np.split(np.argsort(inv.ravel(), kind="stable"),
                       np.cumsum(np.bincount(inv.ravel(), minlength=len(classes)))[:-1])
    picks, rounds, turn = [], [], []
    for position, c in enumerate(order):
        pool = rng.permutation(members[c])[::-1]  # round r takes the r-th from the end
        picks.append(pool)
        rounds.append(np.arange(len(pool)))
        turn.append(np.full(len(pool), position))
    picks_a, rounds_a, turn_a = (np.concatenate(v) for v in (picks, rounds, turn))
    first = np.lexsort((turn_a, rounds_a))[:n]
    return picks_a[first].astype(np.int64)


def _sq_dist(centers: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact squared distances (len(centers), len(points)), by differences (no cancellation)."""
    return ((centers[:, None, :] - points[None, :, :]) ** 2).sum(-1)


def _assign_block(start: int, block: Any, used: np.ndarray, centers: np.ndarray,
                  scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(squared distance, row) of each centroid's nearest unused row of the block."""
    from sklearn.metrics import pairwise_distances_argmin

    keep = np.flatnonzero(~used)
    if keep.size == 0:
        return None
    sub = np.asarray(block, dtype=np.float64)[keep] / scale
    j = pairwise_distances_argmin(centers, sub)
    d2 = ((centers - sub[j]) ** 2).sum(-1)  # exactly as _sq_dist computes it
    return d2, keep[j] + start


def _closer(a: Any, b: Any) -> Any:
    """Merge two (distance, row) candidates per centroid: the closer wins, ties the lower row."""
    if a is None or b is None:
        return b if a is None else a
    take_b = (b[0] < a[0]) | ((b[0] == a[0]) & (b[1] < a[1]))
    return np.where(take_b, b[0], a[0]), np.where(take_b, b[1], a[1])


def _nearest_distinct_rows(rows: _Rows, centers: np.ndarray, scale: float) -> np.ndarray:
    """Real rows for the centroids, each row used once: greedy by distance over all pairs.

    The result is the matching that takes the closest (centroid, row) pair, then the closest
    pair among the rest, and so on: no centroid prefers a row whose owner is farther from it.
    Each pass over the rows finds every pending centroid's nearest unused row (block by block,
    ``sklearn.metrics.pairwise_distances_argmin``); the pairs where the row's nearest pending
    centroid is that same centroid (mutual nearest pairs, which the greedy matching always
    contains) are kept, and the other centroids look again in the next pass. Usually one or
    two passes; memory O(n + k^2) at most, never an n x k matrix.
    """
    k = len(centers)
    chosen = np.full(k, -1, dtype=np.int64)
    used = np.zeros(rows.n, dtype=bool)
    pending = np.arange(k)
    while pending.size:
        c = centers[pending]
        d2, row = rows.map_reduce(functools.partial(_assign_block, centers=c, scale=scale),
                                  _closer, used)
        cand, back = np.unique(row, return_inverse=True)
        pts = rows.take(cand).astype(np.float64) / scale
        nearest = np.empty(len(cand), dtype=np.int64)  # nearest pending centroid of each row
        step = max(1, 2**24 // max(1, len(c) * rows.d))
        for s in range(0, len(cand), step):
            nearest[s:s + step] = np.argmin(_sq_dist(c, pts[s:s + step]), axis=0)
        mutual = nearest[back.ravel()] == np.arange(len(pending))
        if not mutual.any():  # only through rounding; the closest pair is always safe
            mutual[np.lexsort((np.arange(len(pending)), d2))[0]] = True
        chosen[pending[mutual]] = row[mutual]
        used[row[mutual]] = True
        pending = pending[~mutual]
    return chosen


def kmeans(x: Array, n: int, *, random_state: Any = None, algorithm: str = "auto",
           batch_size: int = 4096, n_epochs: int = 1, block_rows: int | None = None
           ) -> np.ndarray:
    """Real samples nearest to the `n` k-means centroids (each sample used at most once).

    Parameters
    ----------
    algorithm : ``"lloyd"`` (scikit-learn's KMeans on all rows, held in memory), ``"minibatch"``
        (KMeans on a random sample of ``max(LLOYD_MAX_ROWS, 10 n)`` rows, then `n_epochs` passes
        of ``MiniBatchKMeans.partial_fit`` over row blocks in random order, minibatches of
        `batch_size` rows) or ``"auto"`` (Lloyd up to :data:`LLOYD_MAX_ROWS` rows).
    block_rows : rows read at a time (default: :data:`BLOCK_BYTES` of float64).

    A centroid's anchor is its nearest real sample; when two centroids share a nearest sample,
    the closer centroid takes it and the other takes its nearest remaining sample.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    rows = _Rows(x, "x", block_rows)
    n = _check_count(n, rows.n)
    rng = check_random_state(random_state)
    algorithm = check_choice(algorithm, "algorithm", ("auto", "lloyd", "minibatch"))
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    n_epochs = check_int(n_epochs, "n_epochs", min_value=1)
    seed = int(rng.integers(2**31 - 1))
    scale = _pow2(rows.scan())
    if algorithm == "auto":
        small = rows.n <= LLOYD_MAX_ROWS and rows.n * rows.d * 8 <= _LLOYD_MAX_BYTES
        algorithm = "lloyd" if small else "minibatch"
    if algorithm == "lloyd":
        centers = KMeans(n_clusters=n, random_state=seed, n_init=1).fit(
            rows.load() / scale).cluster_centers_
    else:
        local = np.random.default_rng(seed)
        m = min(rows.n, max(n, min(max(LLOYD_MAX_ROWS, 10 * n), _LLOYD_MAX_BYTES // (8 * rows.d))))
        sample = rows.take(np.sort(local.choice(rows.n, size=m, replace=False)))
        sample = sample.astype(np.float64) / scale
        init = KMeans(n_clusters=n, random_state=seed, n_init=1).fit(sample).cluster_centers_
        mbk = MiniBatchKMeans(n_clusters=n, init=init, n_init=1, batch_size=batch_size,
                              random_state=seed, compute_labels=False)
        mbk.partial_fit(sample)  # centroid counts start from the sample's cluster sizes
        ranges = rows.ranges()
        for _ in range(n_epochs):
            for b in local.permutation(len(ranges)):
                blk = rows.block(*ranges[b]).astype(np.float64) / scale
                perm = local.permutation(len(blk))
                for i in range(0, len(blk), batch_size):
                    mbk.partial_fit(blk[perm[i:i + batch_size]])
        centers = mbk.cluster_centers_
    return _nearest_distinct_rows(rows, np.ascontiguousarray(centers, dtype=np.float64), scale)


def _fp_prepare(start: int, block: Any, metric: str, scale: float, name: str,
                prepared: bool = False) -> np.ndarray:
    """Rows as farthest-point sampling compares them: scaled, or unit rows for cosine."""
    if prepared:
        return block
    b = np.asarray(block, dtype=np.float64)
    if metric == "euclidean":
        return b / scale
    u, zero = _unit_rows_np(b)
    if zero.any():
        bad = ", ".join(str(int(i) + start) for i in np.flatnonzero(zero)[:5])
        raise RelrepsError(f"{name} has all-zero rows ({bad}); their cosine distance is "
                           "undefined: drop them or use metric='euclidean'")
    return u


def _fp_sq(start: int, block: Any, metric: str, scale: float, name: str,
           prepared: bool = False) -> np.ndarray:
    b = _fp_prepare(start, block, metric, scale, name, prepared)
    return np.einsum("ij,ij->i", b, b)


def _fp_dist(start: int, block: Any, sq: np.ndarray, p: np.ndarray, metric: str, scale: float,
             name: str, prepared: bool = False) -> np.ndarray:
    b = _fp_prepare(start, block, metric, scale, name, prepared)
    return sq - 2.0 * (b @ p) + p @ p


def farthest_point(x: Array, n: int, *, random_state: Any = None, metric: str = "euclidean",
                   block_rows: int | None = None) -> np.ndarray:
    """Greedy farthest-point sampling: each new anchor maximises its distance to the chosen ones.

    `metric` is ``"euclidean"`` or ``"cosine"`` (distance between unit vectors; all-zero rows
    are refused). The first anchor is random. Inputs up to 256 MiB (as float64) are prepared
    once and kept in memory; larger ones are read again, block by block, for every anchor.
    """
    rows = _Rows(x, "x", block_rows)
    n = _check_count(n, rows.n)
    rng = check_random_state(random_state)
    metric = check_choice(metric, "metric", ("euclidean", "cosine"))
    scale = _pow2(rows.scan())
    first = int(rng.integers(rows.n))
    opts = {"metric": metric, "scale": scale, "name": rows.name}

    def point(i: int) -> np.ndarray:
        return _fp_prepare(i, rows.take(np.array([i])), metric, scale, rows.name)[0]

    if rows.n * rows.d * 8 <= _FP_CACHE_BYTES:  # small enough: prepare the blocks once
        blocks = rows.map(functools.partial(_fp_prepare, metric=metric, scale=scale,
                                            name=rows.name, prepared=False))
        starts = [s for s, _ in rows.ranges()]

        def distances(p: np.ndarray, sq: np.ndarray) -> list[np.ndarray]:
            return [_fp_dist(s, b, sq[s:s + len(b)], p, prepared=True, **opts)
                    for s, b in zip(starts, blocks)]

        sq = np.concatenate([_fp_sq(s, b, prepared=True, **opts) for s, b in zip(starts, blocks)])
    else:
        def distances(p: np.ndarray, sq: np.ndarray) -> list[np.ndarray]:
            return rows.map(functools.partial(_fp_dist, p=p, **opts), sq)

        sq = np.concatenate(rows.map(functools.partial(_fp_sq, **opts)))  # finds zero rows
    chosen = [first]
    mind = np.full(rows.n, np.inf)
    while len(chosen) < n:
        mind = np.minimum(mind, np.concatenate(distances(point(chosen[-1]), sq)))
        mind[chosen[-1]] = -np.inf
        chosen.append(int(np.argmax(mind)))
    return np.asarray(chosen, dtype=np.int64)


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "uniform": uniform, "stratified": stratified, "kmeans": kmeans,
    "farthest_point": farthest_point}


def sample_anchors(x: Array, n: int, method: str = "uniform", *, y: Any = None,
                   random_state: Any = None, **options: Any) -> np.ndarray:
    """Indices (int64) of `n` distinct rows of `x` chosen as anchors by `method`.

    Parameters
    ----------
    x : (n_samples, d) numpy array, ``np.memmap``, torch tensor or dask array (read in blocks).
    n : number of anchors, 1 <= n <= n_samples.
    method : one of :data:`SAMPLERS`: ``"uniform"``, ``"stratified"`` (needs `y`),
        ``"kmeans"``, ``"farthest_point"``.
    y : labels, used by ``"stratified"`` only.
    random_state : None, a non-negative int or a ``numpy.random.Generator``.
    options : the sampler's own keyword options (e.g. ``metric`` for farthest_point,
        ``algorithm``/``batch_size``/``n_epochs``/``block_rows`` for kmeans); unknown ones are
        refused.
    """
    if not isinstance(method, str) or method not in SAMPLERS:
        raise RelrepsError(f"unknown anchor sampler {method!r}: method must be one of "
                           f"{', '.join(map(repr, SAMPLERS))}")
    fn = SAMPLERS[method]
    params = inspect.signature(fn).parameters
    allowed = [p for p, v in params.items()
               if v.kind is inspect.Parameter.KEYWORD_ONLY and p not in ("y", "random_state")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise OptionError(f"anchor sampler {method!r} has no option(s) {', '.join(unknown)}; "
                          f"its options: {', '.join(allowed) or 'none'}")
    if "y" in params:
        options["y"] = y
    return fn(x, n, random_state=random_state, **options)


# ------------------------------------------------------------------------------- parallel anchors

def _key_list(keys: Any, name: str) -> list[Hashable]:
    if keys is None or isinstance(keys, (str, bytes)) or not isinstance(keys, (Sequence,
                                                                               np.ndarray)):
        raise InputTypeError(f"{name} must be a sequence of keys (one per row), got "
                             f"{type(keys).__name__}")
    out = list(keys.tolist() if isinstance(keys, np.ndarray) else keys)
    for k in out:
        if not isinstance(k, Hashable):
            raise InputTypeError(f"{name} holds the unhashable key {k!r} ({type(k).__name__})")
    return out


def _key_positions(keys: Sequence[Hashable], name: str) -> dict[Hashable, int]:
    pos: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k in pos:
            raise AnchorError(f"{name} has the duplicate key {k!r}: keys must identify samples")
        pos[k] = i
    return pos


def _shared_pool(pos: Mapping[str, dict[Hashable, int]], first: Sequence[Hashable],
                 candidates: Any) -> list[Hashable]:
    pool = first if candidates is None else _key_list(candidates, "candidates")
    # a repeated candidate counts once
    return list(dict.fromkeys(k for k in pool if all(k in p for p in pos.values())))


def parallel_anchors(keys_a: Sequence[Hashable], keys_b: Sequence[Hashable], n: int, *,
                     random_state: Any = None, candidates: Sequence[Hashable] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """`n` anchors that exist in both spaces, matched by key (same word, aligned sentence id...).

    Returns (idx_a, idx_b): row i of space A at idx_a[i] and row i of space B at idx_b[i] are the
    same anchor. `candidates` restricts the pool (e.g. the most frequent words).
    """
    ka, kb = _key_list(keys_a, "keys_a"), _key_list(keys_b, "keys_b")
    n = check_int(n, "n")
    rng = check_random_state(random_state)
    pos = {"a": _key_positions(ka, "keys_a"), "b": _key_positions(kb, "keys_b")}
    pool = _shared_pool(pos, ka, candidates)
    if n >= 1 and len(pool) < n:
        raise AnchorError(f"only {len(pool)} keys are shared by both spaces; cannot pick {n} "
                          "parallel anchors")
    n = _check_count(n, len(pool))
    chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
    return (np.asarray([pos["a"][k] for k in chosen], dtype=np.int64),
            np.asarray([pos["b"][k] for k in chosen], dtype=np.int64))


# ------------------------------------------------------------------------------- AnchorSet

def _check_space_name(s: Any, where: str) -> str:
    if not isinstance(s, str) or not s:
        raise InputTypeError(f"{where}: space names must be non-empty strings, got {s!r}")
    return s


def _check_int_list(v: Any, name: str) -> None:
    """Plain Python sequences of indices must hold ints (a bool or 1.0 is not an index)."""
    if isinstance(v, (list, tuple)):
        for i in v:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise InputTypeError(f"{name} holds {i!r} ({type(i).__name__}); anchor indices "
                                     "are non-negative integers")


def _check_index_map(indices: Any) -> dict[str, np.ndarray]:
    if not isinstance(indices, Mapping):
        raise InputTypeError("AnchorSet indices must be a mapping space name -> row indices, got "
                             f"{type(indices).__name__}")
    out = {}
    for s, v in indices.items():
        _check_space_name(s, "AnchorSet indices")
        _check_int_list(v, f"indices[{s!r}]")
        out[s] = check_indices(v, f"indices[{s!r}]").copy()
    return out


def _check_keys(keys: Any) -> list[str] | None:
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (Sequence, np.ndarray)):
        raise InputTypeError(f"AnchorSet keys must be a list of strings or None, got "
                             f"{type(keys).__name__}")
    keys = list(keys.tolist() if isinstance(keys, np.ndarray) else keys)
    for k in keys:
        if not isinstance(k, str):
            raise InputTypeError(f"AnchorSet keys must be strings, got {k!r} "
                                 f"({type(k).__name__}); convert them with str()")
    return keys


def _check_meta(meta: Any) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InputTypeError(f"AnchorSet meta must be a dict, got {type(meta).__name__}")
    meta = dict(meta)
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputTypeError(f"AnchorSet meta must hold JSON values (str keys; str, int, float, "
                             f"bool, None, lists, dicts; finite floats): {e}") from None
    return meta


@dataclass(eq=False)
class AnchorSet:
    """Which samples are anchors in each space, and their correspondence.

    ``indices[space][i]`` is the row, in that space's data, of anchor ``i``; row ``i`` of every
    space is the same anchor (same sample, same word, or a translation). ``keys`` optionally names
    the anchors (strings), ``meta`` holds JSON-serialisable notes. Saved as plain JSON
    (:meth:`save`, :meth:`load`), format version :data:`FORMAT_VERSION`.

    Indices are validated: non-negative integers (a boolean mask, floats such as ``1.0`` and
    negative indices are refused), distinct within a space, the same count in every space.
    """

    indices: dict[str, np.ndarray]
    keys: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return len(next(iter(self.indices.values()))) if self.indices else 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnchorSet):
            return NotImplemented
        return (self.spaces == other.spaces and self.keys == other.keys
                and self.meta == other.meta
                and all(np.array_equal(self.indices[s], other.indices[s]) for s in self.spaces))

    __hash__ = None  # mutable

    @property
    def spaces(self) -> list[str]:
        return list(self.indices)

    def validate(self) -> None:
        """Check (and normalise to int64 arrays) the indices, keys and meta; raise if invalid."""
        self.indices = _check_index_map(self.indices)
        self.keys = _check_keys(self.keys)
        self.meta = _check_meta(self.meta)
        if not self.indices:
            raise AnchorError("an AnchorSet needs at least one space")
        sizes = {s: len(v) for s, v in self.indices.items()}
        if len(set(sizes.values())) != 1:
            raise AnchorError(f"anchor sets do not correspond across spaces: sizes {sizes}")
        if self.keys is not None and len(self.keys) != len(self):
            raise AnchorError(f"{len(self.keys)} keys for {len(self)} anchors")
        for s, v in self.indices.items():
            if len(np.unique(v)) != len(v):
                vals, counts = np.unique(v, return_counts=True)
                raise AnchorError(f"space {s!r} uses the same sample twice as an anchor "
                                  f"(row {int(vals[counts > 1][0])})")

    @classmethod
    def from_indices(cls, indices: Array, spaces: Sequence[str] = ("default",),
                     keys: Sequence[Any] | None = None) -> AnchorSet:
        """The same rows are the anchors in every space (spaces share their samples).

        `keys`, when given, names every row of the data (``keys[i]`` for row i); the anchors'
        keys are ``str(keys[i])`` of their rows.
        """
        _check_int_list(indices, "indices")
        idx = check_indices(indices, "indices")
        if isinstance(spaces, (str, bytes)) or not isinstance(spaces, Sequence) or not spaces:
            raise InputTypeError(f"spaces must be a non-empty sequence of names, got {spaces!r}")
        names = [_check_space_name(s, "spaces") for s in spaces]
        if len(set(names)) != len(names):
            raise AnchorError(f"spaces repeat a name: {names}")
        anchor_keys = None
        if keys is not None:
            if isinstance(keys, (str, bytes)) or not hasattr(keys, "__getitem__") \
                    or not hasattr(keys, "__len__"):
                raise InputTypeError("keys must be a sequence naming every row of the data")
            if idx.size and idx.max() >= len(keys):
                raise AnchorError(f"anchor index {int(idx.max())} has no key: keys name "
                                  f"{len(keys)} rows")
            anchor_keys = [str(keys[int(i)]) for i in idx]
        return cls({s: idx for s in names}, keys=anchor_keys)

    @classmethod
    def from_keys(cls, keys: Mapping[str, Sequence[Hashable]], n: int, *,
                  random_state: Any = None, candidates: Sequence[Hashable] | None = None
                  ) -> AnchorSet:
        """`n` anchors whose keys exist in every space (parallel anchors across many spaces)."""
        if not isinstance(keys, Mapping) or not keys:
            raise InputTypeError("keys must be a non-empty mapping space name -> keys of its rows")
        names = [_check_space_name(s, "keys") for s in keys]
        lists = {s: _key_list(keys[s], f"keys[{s!r}]") for s in names}
        n = check_int(n, "n")
        rng = check_random_state(random_state)
        pos = {s: _key_positions(lists[s], f"keys[{s!r}]") for s in names}
        pool = _shared_pool(pos, lists[names[0]], candidates)
        if n >= 1 and len(pool) < n:
            raise AnchorError(f"only {len(pool)} keys are shared by all spaces; cannot pick {n}")
        n = _check_count(n, len(pool))
        chosen = [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]
        return cls({s: [pos[s][k] for k in chosen] for s in names}, keys=[str(k) for k in chosen])

    def embeddings(self, space: str, x: Array) -> Array:
        """The anchor rows of `x`, the data of `space` (numpy, memmap, torch or dask; same kind)."""
        if not isinstance(space, str) or space not in self.indices:
            raise AnchorError(f"no anchors for space {space!r}; known: {self.spaces}")
        x = check_array(x, "x", finite=False, kinds=("numpy", "torch", "dask"))
        idx = self.indices[space]
        n = x.shape[0]
        if isinstance(n, (int, np.integer)) and idx.max() >= n:
            raise AnchorError(f"anchor index {int(idx.max())} out of range for space {space!r} "
                              f"with {n} rows")
        if is_torch(x):
            import torch

            out = x[torch.as_tensor(idx, device=x.device)]
        else:
            out = x[idx]
        if not is_dask(out):
            check_array(out, f"anchor embeddings of space {space!r}")
        return out

    # -------------------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written by :meth:`save`."""
        self.validate()
        return {"format": FORMAT_VERSION,
                "indices": {s: v.tolist() for s, v in self.indices.items()},
                "keys": self.keys, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "anchor set") -> AnchorSet:
        """Rebuild from :meth:`to_dict`'s document; any deviation is a FormatError naming `source`.

        Documents without ``"format"`` (written before version 1) are accepted.
        """
        def bad(msg: str) -> FormatError:
            return FormatError(f"{source}: {msg}")

        if not isinstance(data, dict):
            raise bad(f"expected a JSON object with 'indices', got {type(data).__name__}")
        unknown = sorted(set(data) - {"format", "indices", "keys", "meta"})
        if unknown:
            raise bad(f"unknown field(s) {', '.join(map(repr, unknown))}; an AnchorSet has "
                      "'format', 'indices', 'keys' and 'meta'")
        fmt = data.get("format", FORMAT_VERSION)
        if isinstance(fmt, bool) or not isinstance(fmt, int):
            raise bad(f"'format' must be an integer, got {fmt!r}")
        if fmt != FORMAT_VERSION:
            newer = " (written by a newer relreps)" if fmt > FORMAT_VERSION else ""
            raise bad(f"AnchorSet format {fmt}{newer}; this version reads format "
                      f"{FORMAT_VERSION}")
        if "indices" not in data:
            raise bad("missing the 'indices' field")
        indices = data["indices"]
        if not isinstance(indices, dict) or not indices:
            raise bad("'indices' must be a non-empty object mapping space names to lists of "
                      "row indices")
        for s, v in indices.items():
            if not isinstance(v, list):
                raise bad(f"indices[{s!r}] must be a list of row indices, got "
                          f"{type(v).__name__}")
            for i in v:
                if isinstance(i, bool) or not isinstance(i, int):
                    raise bad(f"indices[{s!r}] holds {i!r}; row indices are non-negative "
                              "integers")
                if not 0 <= i < 2**63:
                    raise bad(f"indices[{s!r}] holds the index {i}; row indices are in "
                              "[0, 2**63)")
        keys = data.get("keys")
        if keys is not None and (not isinstance(keys, list)
                                 or not all(isinstance(k, str) for k in keys)):
            raise bad("'keys' must be null or a list of strings")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise bad(f"'meta' must be an object, got {type(meta).__name__}")
        try:
            return cls({s: np.asarray(v, dtype=np.int64) for s, v in indices.items()},
                       keys=keys, meta=meta)
        except RelrepsError as e:
            raise bad(str(e)) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the anchor set as JSON (atomically: a crash never leaves a partial file)."""
        path = _check_path(path)
        text = json.dumps(self.to_dict(), indent=1)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.chmod(tmp, 0o666 & ~current_umask())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise RunFolderError(f"cannot write the anchor set to {path}: "
                                 f"{e.strerror or e}") from None
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnchorSet:
        """Read a file written by :meth:`save`; a missing file is a DataNotFoundError, anything
        else wrong with it (not JSON, truncated, wrong structure or types) a FormatError."""
        path = _check_path(path)
        if not path.exists():
            raise DataNotFoundError(f"anchor set file {path} does not exist")
        if not path.is_file():
            raise FormatError(f"{path} is not a file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{path} is not an AnchorSet JSON file (not UTF-8 text)") from None
        except OSError as e:
            raise FormatError(f"cannot read {path}: {e.strerror or e}") from None

        def no_constant(c: str) -> None:
            raise ValueError(f"{c} is not valid JSON")

        try:
            data = json.loads(text, parse_constant=no_constant)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column "
                              f"{e.colno}): truncated or not an AnchorSet file") from None
        except (ValueError, RecursionError) as e:
            raise FormatError(f"{path} is not an AnchorSet JSON file ({e})") from None
        return cls.from_dict(data, source=str(path))

    # persistence protocol of relreps.save / relreps.load (safetensors + JSON config)
    def _relreps_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        self.validate()
        config = {"format": FORMAT_VERSION, "spaces": self.spaces, "keys": self.keys,
                  "meta": self.meta}
        return config, {f"indices.{i}": v.copy() for i, v in enumerate(self.indices.values())}

    @classmethod
    def _relreps_from_state(cls, config: Mapping[str, Any], arrays: Mapping[str, Any]
                            ) -> AnchorSet:
        if not isinstance(config, Mapping) or not isinstance(config.get("spaces"), list):
            raise FormatError("AnchorSet state: config must hold the list 'spaces'")
        spaces = config["spaces"]
        if not all(isinstance(s, str) for s in spaces) or len(set(spaces)) != len(spaces):
            raise FormatError(f"AnchorSet state: space names must be distinct strings: {spaces}")
        expected = {f"indices.{i}" for i in range(len(spaces))}
        if set(arrays) != expected:
            raise FormatError(f"AnchorSet state: arrays {sorted(arrays)} do not match the "
                              f"{len(spaces)} space(s) {spaces}")
        data = {k: config[k] for k in ("format", "keys", "meta") if k in config}
        extra = sorted(set(config) - {"format", "spaces", "keys", "meta"})
        if extra:
            raise FormatError(f"AnchorSet state: unknown config field(s) {extra}")
        idx = {}
        for i, s in enumerate(spaces):
            a = np.asarray(arrays[f"indices.{i}"])
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise FormatError(f"AnchorSet state: indices of space {s!r} must be a 1-D "
                                  f"integer array, got {a.dtype} of shape {a.shape}")
            idx[s] = a.tolist()
        return cls.from_dict({**data, "indices": idx}, source="AnchorSet state")




def _check_path(path: Any) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if str(path) == "":
        raise InputTypeError("path is empty")
    return Path(path)


# ------------------------------------------------------------------------------- diagnose

@dataclass
class AnchorDiagnostics:
    """How well a set of anchor embeddings spans its latent space, with what it costs.

    Scale-free numbers (rank, condition number, effective dimension, anisotropy, fractions) are
    exact at any magnitude; `singular_values` are in the input's units.
    """

    n_anchors: int
    dim: int
    rank: int
    condition_number: float
    effective_dim: float  # participation ratio of the squared singular values (as centred)
    n_near_duplicates: int  # anchor pairs with cosine above the threshold
    singular_values: np.ndarray
    warnings: list[str]
    #: mean pairwise cosine of the (uncentred) anchors; None for a single anchor
    anisotropy: float | None = None
    #: centring the numbers refer to: None or "anchors" (after resolving "auto")
    center: str | None = None
    center_reason: str = ""
    effective_dim_plain: float = float("nan")
    effective_dim_centered: float = float("nan")
    #: mean fraction of a sample's (unit, centred when `center`) direction outside the span of
    #: the anchors: invisible to the relative representation
    outside_span_fraction: float = 0.0
    #: "data" (measured on the data passed as `x`), "leave-one-out" (estimated from the anchors:
    #: each anchor against the span of the others) or "full span" (the anchors span the space)
    outside_span_source: str = "full span"
    #: participation ratio of the data's direction second-moment spectrum (when `x` is given)
    data_effective_dim: float | None = None
    n_data: int | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        aniso = "n/a" if self.anisotropy is None else f"{self.anisotropy:.2f}"
        basis = "centred on the anchor mean" if self.center else "uncentred"
        lines = [f"{self.n_anchors} anchors in {self.dim}-d: rank {self.rank}, condition number "
                 f"{self.condition_number:.3g}, effective dim {self.effective_dim:.1f}, "
                 f"{self.n_near_duplicates} near-duplicate pair(s)",
                 f"anisotropy (mean pairwise cosine) {aniso}; effective dim "
                 f"{self.effective_dim_plain:.1f} plain vs {self.effective_dim_centered:.1f} "
                 f"centred; numbers above {basis}",
                 f"outside the anchors' span: {self.outside_span_fraction:.1%} of a sample's "
                 f"direction ({self.outside_span_source})"]
        return "\n".join(lines + [f"note: {m}" for m in self.notes]
                         + [f"warning: {w}" for w in self.warnings])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for reports)."""
        def num(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

        return {"n_anchors": self.n_anchors, "dim": self.dim, "rank": self.rank,
                "condition_number": num(self.condition_number),
                "effective_dim": num(self.effective_dim),
                "effective_dim_plain": num(self.effective_dim_plain),
                "effective_dim_centered": num(self.effective_dim_centered),
                "n_near_duplicates": self.n_near_duplicates, "anisotropy": self.anisotropy,
                "center": self.center, "center_reason": self.center_reason,
                "outside_span_fraction": self.outside_span_fraction,
                "outside_span_source": self.outside_span_source,
                "data_effective_dim": num(self.data_effective_dim), "n_data": self.n_data,
                "singular_values": [float(s) for s in self.singular_values],
                "warnings": list(self.warnings), "notes": list(self.notes)}


def _participation(s: np.ndarray) -> float:
    """(sum s^2)^2 / sum s^4 of singular values already scaled to max <= 1 (0 when all zero)."""
    if s.size == 0 or s.max() == 0:
        return 0.0
    p = (s / s.max()) ** 2
    return float(p.sum() ** 2 / (p**2).sum())


def _resolve_diag_center(center: Any, anchors: np.ndarray) -> tuple[str | None, str]:
    if center is None or center is False or (isinstance(center, np.bool_) and not center):
        return None, "no centring requested"
    if center is True or (isinstance(center, np.bool_) and center):
        return "anchors", "centring on the anchor mean requested"
    if isinstance(center, str) and center in ("none", "anchors", "auto"):
        if center == "auto" and len(anchors) < 2:
            raise AnchorError("center='auto' needs at least 2 anchors to measure anisotropy")
        from relreps.centering import resolve_center

        d = resolve_center(center, {"anchors": anchors} if center == "auto" else None)
        return d.center, d.reason
    raise RelrepsError(f"center must be False/None/'none', True/'anchors' or 'auto', got "
                       f"{center!r}")


def _moment_block(start: int, block: Any, mu: tuple[np.ndarray, float] | None, name: str
                  ) -> tuple[np.ndarray, int]:
    """(sum of u u^T, count) over the non-zero unit rows u of a block, centred on
    ``mu[0] * mu[1]`` (the anchor mean, given scaled to [-1, 1] and its power-of-two scale)."""
    import torch

    from relreps._numerics import pow2_scale, unit_rows

    b = np.asarray(block)
    check_finite_rows(b, name, offset=start)
    t = torch.from_numpy(np.require(b, np.float64, ["C", "W"]))
    if mu is not None:
        m, scale = torch.from_numpy(mu[0])[None], mu[1]
        s = torch.clamp(pow2_scale(t), min=scale)  # powers of two: exact, no overflow
        t = t / s - m * (torch.full_like(s, scale) / s)  # not scale / s: torch computes
        # a Python number over a tensor as a reciprocal, which overflows for subnormal s
    u, zero = unit_rows(t)
    u = u[~zero]
    return (u.T @ u).numpy(), int(u.shape[0])


def _add_moments(a: tuple[np.ndarray, int], b: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    return a[0] + b[0], a[1] + b[1]


def _leave_one_out_outside(w: np.ndarray, s: np.ndarray, r: int, m: np.ndarray,
                           centred: bool) -> float:
    """Mean share of anchor i's direction outside the span of the other anchors.

    Uncentred, `m` holds the anchors' unit rows and the squared distance of row i to the span of
    the others is ``1 / (G^+)_ii`` for the Gram ``G = m m^T``. Centred (`m` = anchors minus their
    mean), anchor i is seen centred on the others' mean, ``k/(k-1) m_i``, against the span of the
    others centred on that mean, and its squared distance to the others' affine hull is
    ``1 / (K^+)_ii`` for the centred Gram ``K``. With the thin SVD ``m = W diag(s) V^T`` both read
    ``1 / sum_j W_ij^2 / s_j^2``; a row that takes part in a linear (affine) dependency has
    distance 0 (its row of the Gram's null space, beyond the constant vector when centred, is
    not zero).
    """
    k = len(m)
    if r == 0:
        return 1.0
    wr = w[:, :r]
    free = 1.0 - (wr**2).sum(1) - (1.0 / k if centred else 0.0)
    dist2 = 1.0 / (wr**2 / s[:r] ** 2).sum(1)
    dist2[free > 1e-9] = 0.0
    norm2 = np.einsum("ij,ij->i", m, m) * ((k / (k - 1)) ** 2 if centred else 1.0)
    valid = norm2 > 0
    return float(np.clip(dist2[valid] / norm2[valid], 0.0, 1.0).mean()) if valid.any() else 1.0


def _count_duplicates(u: np.ndarray, threshold: float) -> int:
    """Pairs i < j with u_i . u_j > threshold, in blocks of rows (never a k x k matrix)."""
    k = len(u)
    step = max(1, 2**22 // max(k, 1))
    total = 0
    for s in range(0, k, step):
        c = u[s:s + step] @ u.T
        j = np.arange(k)[None, :]
        i = np.arange(s, min(s + step, k))[:, None]
        total += int(((c > threshold) & (j > i)).sum())
    return total


def diagnose(anchor_embeddings: Array, x: Array | None = None, *, center: Any = False,
             duplicate_cosine: float = 0.999, max_condition: float = 1e6,
             max_outside_span: float = MAX_OUTSIDE_SPAN, warn: bool = False,
             block_rows: int | None = None) -> AnchorDiagnostics:
    """Rank, conditioning, effective dimension, near-duplicates and anisotropy of the anchors,
    turned into advice: what each problem costs and what to do.

    Parameters
    ----------
    anchor_embeddings : (k, d) anchors (numpy, memmap, torch or dask; held in memory as float64).
    x : optional (n, d) data in the same space (numpy, memmap, torch or dask, read in blocks):
        the fraction of the data outside the anchors' span is then measured from a blockwise
        accumulation of the data's direction second moments, instead of estimated.
    center : False/None/"none", True/"anchors" (subtract the anchor mean, as
        ``relative_projection(center="anchors")`` does) or "auto" (decided from the anisotropy
        by :func:`relreps.centering.resolve_center`).
    duplicate_cosine : cosine above which two anchors count as near duplicates.
    max_condition : condition number above which the anchors are called ill conditioned.
    max_outside_span : fraction of a sample's direction outside the anchors' span above which
        "fewer anchors than dimensions" is a warning rather than a note.
    warn : also emit the warnings (AnchorWarning; AnisotropyWarning for plain cosine close to
        collapse).

    The outside-span fraction is the mean over samples of ``|(I - P) u|^2`` for each sample's
    unit (centred, with `center`) vector ``u`` and the projector ``P`` on the anchors' span: the
    part of each direction that cosine-type similarities to these anchors cannot see. Without
    `x` it is estimated by leave-one-out over the anchors (each anchor against the span of the
    others), which is unbiased for anchors drawn at random from the data (uniform, stratified)
    and only indicative for k-means or farthest-point anchors.
    """
    from relreps.centering import AUTO_THRESHOLD, COLLAPSE_THRESHOLD, AnisotropyWarning, anisotropy

    rows = _Rows(anchor_embeddings, "anchor_embeddings")
    duplicate_cosine = check_float(duplicate_cosine, "duplicate_cosine", min_value=-1.0,
                                   max_value=1.0)
    max_condition = check_float(max_condition, "max_condition", min_value=1.0)
    max_outside_span = check_float(max_outside_span, "max_outside_span", min_value=0.0,
                                   max_value=1.0)
    warn = check_bool(warn, "warn")
    block_rows = check_int(block_rows, "block_rows", min_value=1, allow_none=True)
    data = _Rows(x, "x", block_rows) if x is not None else None
    if rows.n < 1:
        raise AnchorError("no anchors to diagnose")
    if data is not None and data.d != rows.d:
        raise ShapeError(f"x has {data.d} features but the anchors have {rows.d}")
    scale = _pow2(rows.scan())
    a_scaled = rows.load() / scale  # exact; max |entry| <= 1
    k, d = a_scaled.shape
    center_used, reason = _resolve_diag_center(center, a_scaled)
    aniso = anisotropy(a_scaled) if k >= 2 else None
    mu_scaled = a_scaled.mean(0)
    centred = a_scaled - mu_scaled
    scale_c = _pow2(float(np.abs(centred).max(initial=0.0)))
    centred = centred / scale_c
    s_plain = np.linalg.svd(a_scaled, compute_uv=False)
    s_centred = np.linalg.svd(centred, compute_uv=False)
    eff_plain, eff_centred = _participation(s_plain), _participation(s_centred)
    a, s, unit_scale = ((centred, s_centred, scale * scale_c) if center_used
                        else (a_scaled, s_plain, scale))
    tol = s.max(initial=0.0) * max(k, d) * np.finfo(np.float64).eps
    rank = int((s > tol).sum())
    cond = float(s[0] / s[rank - 1]) if rank else float("inf")
    full = min(k - 1, d) if center_used else min(k, d)  # centring removes one dimension
    if rank < full:
        cond = float("inf")
    eff = _participation(s)
    with np.errstate(over="ignore"):
        singular_values = s * unit_scale
    if not np.isfinite(singular_values).all():
        raise NumericalError("the anchors' singular values exceed the float64 range; rescale "
                             "the anchors (every other number diagnose reports is scale-free)")

    u, zero = _unit_rows_np(a)
    n_dup = _count_duplicates(u, duplicate_cosine)

    # the span of the anchors (centred when `center`), and what of a sample lies outside it
    w, sm, vt = np.linalg.svd(u if center_used is None else a, full_matrices=False)
    r_m = int((sm > sm.max(initial=0.0) * max(k, d) * np.finfo(np.float64).eps).sum())
    data_eff = n_data = None
    if data is not None:
        mu = (mu_scaled, scale) if center_used else None
        moment, n_data = data.map_reduce(
            functools.partial(_moment_block, mu=mu, name="x"), _add_moments)
        if n_data == 0:
            raise AnchorError("x has no non-zero rows (after centring): nothing to measure")
        basis = vt[:r_m]
        inside = float(np.einsum("ij,jk,ik->", basis, moment, basis)) / n_data
        outside, source = min(1.0, max(0.0, 1.0 - inside)), "data"
        ev = np.clip(np.linalg.eigvalsh(moment), 0.0, None)
        data_eff = float(ev.sum() ** 2 / (ev**2).sum()) if ev.sum() > 0 else 0.0
    elif r_m >= d:
        outside, source = 0.0, "full span"
    else:
        outside, source = _leave_one_out_outside(w, sm, r_m, a if center_used else u,
                                                 center_used is not None), "leave-one-out"

    msgs: list[str] = []
    notes: list[str] = []
    collapse: str | None = None
    if zero.any():
        bad = ", ".join(str(int(i)) for i in np.flatnonzero(zero)[:5])
        msgs.append(f"anchor rows {bad} are zero{' after centring' if center_used else ''}: "
                    "cosine to them is undefined")
    if r_m < d:
        where = ("of the data" if source == "data" else
                 "of a typical sample (leave-one-out estimate over the anchors)")
        text = (f"{k} anchors span {r_m} of {d} dimensions: {outside:.1%} of the direction "
                f"{where} lies outside their span and is invisible to the relative "
                f"representation (anchors' effective dimension {eff:.1f}"
                f"{'' if data_eff is None else f', data {data_eff:.1f}'})")
        if outside > max_outside_span:
            msgs.append(text + f"; add anchors to bring it below {max_outside_span:.0%}"
                        + ("" if source == "data" else
                           " (pass the data as x to measure it instead of estimating)"))
        else:
            notes.append(text + f"; below the {max_outside_span:.0%} threshold")
    if rank < full:
        msgs.append(f"anchors are rank deficient (rank {rank} < {full}): nearly collinear "
                    "anchors collapse the relative space onto fewer coordinates than anchors")
    elif cond > max_condition:
        msgs.append(f"anchors are ill conditioned (condition number {cond:.3g} > "
                    f"{max_condition:.3g}): some relative coordinates are almost redundant")
    if n_dup:
        msgs.append(f"{n_dup} pair(s) of anchors are near duplicates (cosine > "
                    f"{duplicate_cosine}): wasted coordinates; drop one of each pair")
    if aniso is not None and center_used is None:
        if aniso > COLLAPSE_THRESHOLD:
            collapse = (f"anisotropic anchors: mean pairwise cosine {aniso:.2f} > "
                        f"{COLLAPSE_THRESHOLD}; plain cosine to these anchors is close to "
                        f"collapse (every sample gets nearly the same relative vector; effective "
                        f"dimension {eff_plain:.1f} plain vs {eff_centred:.1f} centred): use "
                        "center='anchors' (or 'auto')")
            msgs.append(collapse)
        elif aniso > AUTO_THRESHOLD:
            notes.append(f"mean pairwise anchor cosine {aniso:.2f} > {AUTO_THRESHOLD}: "
                         f"center='auto' would centre (effective dimension {eff_plain:.1f} "
                         f"plain vs {eff_centred:.1f} centred)")
    if warn:
        for m in msgs:
            warnings.warn(m, AnisotropyWarning if m is collapse else AnchorWarning,
                          stacklevel=2)
    return AnchorDiagnostics(
        n_anchors=k, dim=d, rank=rank, condition_number=cond, effective_dim=eff,
        n_near_duplicates=n_dup, singular_values=singular_values, warnings=msgs,
        anisotropy=aniso, center=center_used, center_reason=reason,
        effective_dim_plain=eff_plain, effective_dim_centered=eff_centred,
        outside_span_fraction=outside, outside_span_source=source,
        data_effective_dim=data_eff, n_data=n_data, notes=notes)
