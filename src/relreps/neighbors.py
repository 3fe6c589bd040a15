"""Nearest neighbours at scale, and the neighbourhood metrics built on them.

:func:`knn_indices` finds each query's k most similar rows of a base set (cosine or inner
product); :func:`retrieval_metrics` (Jaccard@k and MRR@k, the paper's definitions),
:func:`jaccard_at_k`, :func:`mrr_at_k` and :func:`mutual_knn` compare two spaces through their
neighbourhoods. numpy (``np.memmap`` included), torch (any device) and ``dask.array`` inputs are
accepted.

Exact search (``method="exact"``)
    Query blocks x item tiles: each tile of similarities is one matrix product written into a
    reused buffer, then folded into a running top-k per query. A tile is cut into sub-tiles whose
    maxima are compared with each query's current k-th best similarity; only the few sub-tiles
    that can change a top-k are searched, so the cost is the matrix products plus one pass of
    maxima (no sort of whole rows, no N x N matrix). Block sizes follow the machine's caches and
    free memory (:func:`plan_blocks`); query blocks run in parallel threads. Memory: per
    thread a few tile buffers, plus O(n_queries * k) and one norm per item: the base is never
    copied (each tile is normalised as it is read, memory-mapped bases included).

    **Ties**: among equal similarities the lower item index ranks first, in every path
    (in-memory, dask, any block or chunk sizes). The matrix products only propose candidates:
    their last bits depend on where a row falls in a tile (on some CPUs identical rows get
    different products), so every candidate that can reach a top k (its product within a
    rigorous rounding bound of the k-th best, see :func:`_gemm_tolerance`) is rescored row by
    row in float64 (:func:`relreps._numerics.rowwise_dot`: element-wise operations only, so an
    item's score does not depend on its position, the tile or the path), and the top k is
    chosen by those scores.
    Exact duplicates therefore always resolve by index, and every path returns the same result.

Dask
    With a ``dask.array`` input, :func:`knn_indices` returns a lazy array: one task per pair of
    query and item chunks, the running top-k merged across workers by a tree reduction that
    applies the same tie rule. The metrics reduce each query chunk to a few numbers, so nothing
    of size N x N or N x d is gathered in one process. Run it on a cluster with
    :func:`relreps.distributed.get_client`; a worker lost mid-computation only costs its tasks,
    which dask recomputes.

Approximate search (``method="hnsw"`` or ``"ivf"``, needs ``faiss-cpu``)
    For millions of items. The index is built once, in the calling process, from blocks of the
    base (streamed from dask or a memmap). In the same pass over the base, a seeded sample of
    queries is searched exactly; the search effort (``efSearch`` / ``nprobe``) is doubled until
    the recall@k on half of that sample reaches `target_recall`, and the recall on the other,
    disjoint half is returned next to the metric (``recall_at_k``, ``recall_queries``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relreps import _kernels
from relreps._backend import Array, same_kind, to_dask
from relreps._numerics import (
    pow2_global_scale,
    pow2_scale,
    rowwise_dot,
    safe_row_norms,
    unit_rows,
)
from relreps.errors import (
    InputTypeError,
    MissingDependencyError,
    NonFiniteError,
    NumericalError,
    OptionError,
    RelrepsError,
    ShapeError,
)
from relreps.validation import (
    check_array,
    check_choice,
    check_finite_rows,
    check_float,
    check_indices,
    check_int,
    check_random_state,
    check_same_rows,
    is_dask,
    is_torch,
)

__all__ = ["knn_indices", "retrieval_metrics", "jaccard_at_k", "mrr_at_k", "mutual_knn",
           "mutual_knn_metrics", "measure_recall", "sample_queries", "plan_blocks", "BlockPlan"]

METRICS = ("cosine", "inner")
METHODS = ("exact", "ivf", "hnsw")
_SENTINEL = torch.iinfo(torch.int64).max  # the index of an empty slot of a running top-k
_MARGIN = 4  # items kept past the k-th by the product pass (see _Products)
_WIDE_PASS_MAX_ITEMS = 1 << 16  # up to this many items, open rows get a float64 pass (_search)
_READ_ELEMENTS = 1 << 24  # elements per block when a whole array is scanned once


# =============================================================================== block plan

@dataclass(frozen=True)
class BlockPlan:
    """How an exact search is cut: query rows per block, items per tile, items per sub-tile."""

    query_block: int
    item_block: int
    sub_tile: int


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip()
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


@functools.lru_cache(maxsize=1)
def _cache_sizes() -> tuple[int, int]:
    """(L2 bytes per core, last-level cache bytes) from sysfs; common sizes where unknown."""
    l2, llc = 1 << 20, 32 << 20
    found: dict[int, int] = {}
    try:
        for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (entry / "type").read_text().strip() == "Instruction":
                continue
            found[int((entry / "level").read_text())] = _parse_size((entry / "size").read_text())
    except (OSError, ValueError):
        found = {}
    l2 = found.get(2, l2)
    llc = found[max(found)] if found and max(found) >= 2 else llc
    return l2, max(llc, l2)


def _available_memory() -> int:
    """Bytes of memory available to this process now (best effort)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        return _available_memory()
    return 1 << 30  # other accelerators: a conservative budget


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, x))))


def plan_blocks(n_queries: int, n_items: int, d: int, k: int, *, itemsize: int = 4,
                device: str | torch.device = "cpu", query_block: int | None = None,
                threads: int | None = None) -> BlockPlan:
    """Block sizes of an exact search, from the machine's caches (CPU) or free memory (GPU).

    On a CPU, query blocks are searched in parallel, one per thread (`threads`, default torch's
    thread count), each single-threaded. A query block has enough rows (up to 2048) for the
    matrix product to run at full speed, and each thread's tile of similarities (query block x
    item tile) fills its share of half the last-level cache (at least four L2 caches, between 4
    and 64 MiB), so the pass of sub-tile maxima reads it from cache right after the product
    wrote it. On a GPU, tiles are as large as 1/16 of the free memory allows. Sub-tiles hold at
    least 4 (k + 1) items. Nothing exceeds 1/8 of the free memory.
    """
    n_queries = check_int(n_queries, "n_queries", min_value=0)
    n_items = check_int(n_items, "n_items", min_value=0)
    k = check_int(k, "k", min_value=1)
    query_block = check_int(query_block, "query_block", min_value=1, allow_none=True)
    threads = check_int(threads, "threads", min_value=1, allow_none=True)
    itemsize = check_int(itemsize, "itemsize", min_value=1)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputTypeError(f"device must be a torch device or its name, got {device!r}"
                             ) from None
    sub = max(64, _pow2_at_least(4 * (k + 1)))
    mem = _device_memory(device)
    if device.type == "cpu":
        l2, llc = _cache_sizes()
        workers = threads or max(1, torch.get_num_threads())
        tile_bytes = max(llc // (2 * workers), 4 * l2)
        tile_bytes = min(max(tile_bytes, 4 << 20), 64 << 20)
        rows_target = 2048
    else:
        tile_bytes, rows_target = min(mem // 16, 1 << 30), 8192
    tile_bytes = max(1 << 20, min(tile_bytes, mem // 8))
    elements = max(tile_bytes // itemsize, 64 * sub)
    qb = query_block or max(1, min(n_queries, rows_target))
    ib = max(sub, (elements // qb) // sub * sub)
    ib = min(ib, max(sub, -(-max(n_items, 1) // sub) * sub))
    return BlockPlan(query_block=int(qb), item_block=int(ib), sub_tile=int(sub))


def _splits(n: int, block: int) -> list[tuple[int, int]]:
    """Balanced [start, stop) ranges of at most `block` rows (sizes differ by at most one)."""
    if n <= 0:
        return []
    nb = -(-n // max(1, block))
    bounds = [(i * n) // nb for i in range(nb + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(nb)]


# =============================================================================== rows and prep

class _Rows:
    """Blocks of numpy (memmap), torch or dask rows as tensors of one dtype on one device."""

    def __init__(self, x: Any, name: str, dtype: torch.dtype, device: torch.device) -> None:
        self.x, self.name, self.dtype, self.device = x, name, dtype, device
        self.kind = "torch" if is_torch(x) else "dask" if is_dask(x) else "numpy"
        self.n, self.d = int(x.shape[0]), int(x.shape[1])
        # memmap and dask values were not scanned by check_array: check each block as it is read
        self.unchecked = isinstance(x, np.memmap) or self.kind == "dask"

    def _tensor(self, block: Any, offset: int | None, check: bool = True) -> torch.Tensor:
        if self.kind == "torch":
            return block.detach().to(dtype=self.dtype)
        block = np.asarray(block.compute() if self.kind == "dask" else block)
        if self.unchecked and check:
            check_finite_rows(block, self.name, offset=offset or 0)
        return _from_numpy(block).to(device=self.device, dtype=self.dtype)

    def get(self, start: int, stop: int, check: bool = True) -> torch.Tensor:
        return self._tensor(self.x[start:stop], start, check)

    def take(self, idx: np.ndarray) -> torch.Tensor:
        if self.kind == "torch":
            return self._tensor(self.x.index_select(0, torch.as_tensor(idx, device=self.device)),
                                None)
        block = self.x[idx]
        block = np.asarray(block.compute() if self.kind == "dask" else block)
        if self.unchecked:
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
            if bad.size:
                raise NonFiniteError(f"{self.name} contains NaN or inf values (rows "
                                     f"{', '.join(str(int(i)) for i in idx[bad[:5]])}"
                                     f"{' ...' if bad.size > 5 else ''})")
        return _from_numpy(block).to(device=self.device, dtype=self.dtype)

    def rows(self, start: int, stop: int, ids: np.ndarray | None) -> torch.Tensor:
        """Rows [start, stop), or the rows `ids` when given."""
        return self.get(start, stop) if ids is None else self.take(ids)

    def blocks(self, step: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(start, block) over all rows: dask chunks as they are, else blocks of `step` rows."""
        if self.kind == "dask":
            start = 0
            for size in self.x.chunks[0]:
                if size:
                    yield start, self.get(start, start + size)
                start += size
            return
        for s, e in _splits(self.n, step or max(1, _READ_ELEMENTS // max(self.d, 1))):
            yield s, self.get(s, e)


def _from_numpy(a: Any) -> torch.Tensor:
    """A CPU tensor sharing `a`'s memory (read-only arrays too: relreps never writes to them)."""
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def _zero_error(name: str, rows: Sequence[int], total: int) -> NumericalError:
    more = f" and {total - len(rows)} more" if total > len(rows) else ""
    return NumericalError(f"{name} has zero vectors (rows {list(rows)}{more}): cosine neighbours "
                          "are undefined (drop those rows, or use metric='inner')")


def _prep(t: torch.Tensor, metric: str, name: str, offset: int = 0,
          scale: torch.Tensor | None = None, row_ids: np.ndarray | None = None) -> torch.Tensor:
    """Rows ready for a plain matrix product: unit rows (cosine) or power-of-two scaled rows.

    Cosine: unit rows, exact for any finite magnitude (:func:`relreps._numerics.unit_rows`); zero
    rows are refused, named by their global row numbers (`offset` + position, or `row_ids`).
    Inner: base rows share one global power of two `scale` (their relative sizes matter); query
    rows (``scale=None``) get one each, which leaves every query's ranking unchanged. Either way
    all entries are at most 1 in magnitude, so no product can overflow.
    """
    if metric == "cosine":
        u, zero = unit_rows(t)
        if bool(zero.any()):
            bad = torch.nonzero(zero).flatten()
            pos = bad[:5].cpu().numpy()
            rows = row_ids[pos] if row_ids is not None else pos + offset
            raise _zero_error(name, [int(r) for r in rows], int(bad.numel()))
        return u
    return t / (pow2_scale(t) if scale is None else scale)


def _global_scale(rows: _Rows) -> tuple[torch.Tensor, float]:
    """(The power of two that scales every row for metric="inner", the largest norm of a
    scaled row), in one pass over the rows."""
    m = torch.zeros((), dtype=rows.dtype, device=rows.device)
    norm = torch.zeros((), dtype=torch.float64, device=rows.device)
    for _, blk in rows.blocks():
        m = torch.maximum(m, blk.abs().amax())
        norm = torch.maximum(norm, safe_row_norms(blk).amax().to(torch.float64))
    scale = pow2_global_scale(m)
    return scale, float(norm) / float(scale)  # a power of two: the division is exact


# =============================================================================== exact rescoring

def _score_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the rescored similarities: float64, except where the device has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def _gemm_unit_roundoff(dtype: torch.dtype, device: torch.device) -> float:
    """Unit roundoff of a matrix product of `dtype` on `device`, with torch's float32 matmul
    precision (TF32 or bfloat16 products where the user allowed them)."""
    u = torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        precision = torch.get_float32_matmul_precision()
        tf32 = device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
        if precision == "medium":
            u = 2.0 ** -8  # bfloat16
        elif precision == "high" or tf32:
            u = 2.0 ** -11  # TF32
    return u


def _gemm_tolerance(Q: torch.Tensor, item_norm: float) -> torch.Tensor:
    """Per query row, a bound of |matrix product - rescored similarity| for any item whose
    (prepared) norm is at most `item_norm`.

    Any order of summing d products errs by at most gamma_d * sum|q_i b_i| <= gamma_d |q| |b|
    (gamma_d = d u / (1 - d u), u the unit roundoff; Higham, Accuracy and Stability of Numerical
    Algorithms, 3.1); the float64 rescoring errs far less. The factor 2.5 covers the rescoring in
    the working dtype (where float64 is missing), and the rounding of norms and thresholds. Where
    d u is not small (reduced-precision products of long rows), the bound is the largest
    possible difference, 2 |q| |b|: every item is then rescored (correct, slow).
    """
    d = Q.shape[1]
    du = d * _gemm_unit_roundoff(Q.dtype, Q.device)
    factor = 2.5 * du / (1 - du) if du < 0.5 else 2.0
    # norms in the rows' own dtype (no float64 copy of Q), raised by their own error bound
    # (relative, below d eps; Higham 3.1): never below the true norms
    qn = torch.linalg.vector_norm(Q, dim=1).to(_score_dtype(Q.device))
    return qn * (factor * item_norm * (1 + d * torch.finfo(Q.dtype).eps))


def _rescore(Q: torch.Tensor, rows: torch.Tensor, items: torch.Tensor, cols: torch.Tensor
             ) -> torch.Tensor:
    """Rescored similarities of query rows ``Q[rows]`` with item rows ``items[cols]``: float64
    (the working dtype where the device has none) :func:`relreps._numerics.rowwise_dot`, whose
    value for an item does not depend on its position (float32 rows: exact products, a sum with
    error at most log2(d) float64 roundings); in chunks of bounded memory (a row of many tied
    items can have many candidates)."""
    dt = _score_dtype(Q.device)
    step = max(1, (1 << 22) // max(1, Q.shape[1]))
    if rows.numel() <= step:
        return rowwise_dot(Q[rows].to(dt), items[cols].to(dt))
    out = torch.empty(rows.shape, dtype=dt, device=Q.device)
    for s in range(0, rows.numel(), step):
        out[s:s + step] = rowwise_dot(Q[rows[s:s + step]].to(dt), items[cols[s:s + step]].to(dt))
    return out


# =============================================================================== running top-k

def _total_order(vals: torch.Tensor, idx: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of each row by (value descending, index ascending): the tie rule."""
    o = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, o), idx.gather(1, o)
    o = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
    return vals.gather(1, o), idx.gather(1, o)


def _kth_bound(maxima: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, a lower bound of the k-th largest value of a tile, from its sub-tile maxima.

    The k-th largest sub-tile maximum is one: k distinct values of the tile reach it. So is the
    k-th largest maximum of groups of sub-tiles, which is nearly as tight and needs a selection
    among a few values per row instead of all the maxima.
    """
    rows, m = maxima.shape
    groups = max(k, min(m, 4 * k, 32))
    if groups < m:
        per = -(-m // groups)
        if per * groups != m:
            pad = torch.full((rows, per * groups - m), -torch.inf, dtype=maxima.dtype,
                             device=maxima.device)
            maxima = torch.cat([maxima, pad], dim=1)
        maxima = maxima.view(rows, groups, per).amax(dim=2)
    return torch.topk(maxima, k, dim=1, sorted=False).values.amin(dim=1)


def _select(cand: torch.Tensor, index_of: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k of each row of candidate values under the tie rule.

    ``index_of(rows, positions)`` maps candidate positions to item indices (``_SENTINEL`` for
    padding). One ``topk`` finds the k + 1 largest values; only rows with an exact tie (at the
    k-th place: all candidates are sorted there; inside the top k: the k values are re-ordered)
    pay for a sort, so the common case costs one partial selection.
    """
    width = cand.shape[1]
    per = min(k + 1, width)
    tv, tp = torch.topk(cand, per, dim=1, sorted=True)
    rows = torch.arange(cand.shape[0], device=cand.device)
    ti = index_of(rows, tp)
    ti = torch.where(tv == -torch.inf, torch.full_like(ti, _SENTINEL), ti)
    if per > k:
        tied = tv[:, k] == tv[:, k - 1]
        tv, ti = tv[:, :k].clone(), ti[:, :k].clone()
        if bool(tied.any()):
            edge = torch.nonzero(tied).flatten()
            full = index_of(edge, torch.arange(width, device=cand.device).expand(edge.numel(), -1))
            cv = cand[edge]
            full = torch.where(cv == -torch.inf, torch.full_like(full, _SENTINEL), full)
            tv[edge], ti[edge] = _total_order(cv, full, k)
    if k > 1:
        tied = (tv[:, 1:] == tv[:, :-1]).any(dim=1)
        if bool(tied.any()):
            inner = torch.nonzero(tied).flatten()
            tv[inner], ti[inner] = _total_order(tv[inner], ti[inner], k)
    return tv, ti


def _gather_subtiles(subs: torch.Tensor, r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The sub-tiles ``subs[r, s]`` of a contiguous (rows, sub-tiles, width) view, as rows: a
    copy of contiguous runs (``index_select``), several times faster than advanced indexing."""
    flat = subs.view(-1, subs.shape[2])
    return flat.index_select(0, r * subs.shape[1] + s)


def _side_by_side(rows: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor
                  ) -> tuple[torch.Tensor, ...]:
    """Each row's kept values and indices laid out with room for its new candidates.

    `rows` (sorted) gives the row of every new candidate. Returns (urows, local, slot, cand_v,
    cand_i): the rows that have candidates, each candidate's position (local row, slot) in the
    (len(urows), width + most candidates) arrays, which hold the rows' `vals`/`idx` first and
    -inf / ``_SENTINEL`` in the candidates' slots until the caller fills them.
    """
    dev, width = vals.device, vals.shape[1]
    urows, counts = torch.unique_consecutive(rows, return_counts=True)
    nr, most = urows.numel(), int(counts.max())
    local = torch.repeat_interleave(torch.arange(nr, device=dev), counts)
    first = (torch.cumsum(counts, 0) - counts)[local]  # each candidate's row starts here
    slot = width + torch.arange(rows.numel(), device=dev) - first
    cand_v = torch.full((nr, width + most), -torch.inf, dtype=vals.dtype, device=dev)
    cand_i = torch.full((nr, width + most), _SENTINEL, dtype=torch.int64, device=dev)
    cand_v[:, :width], cand_i[:, :width] = vals[urows], idx[urows]
    return urows, local, slot, cand_v, cand_i


class _Running:
    """Exact running top-k of a block of query rows over tiles of items.

    `Q` holds the prepared query rows of the matrix products, `item_norm` bounds the norm of
    every prepared item row (it sets :func:`_gemm_tolerance`). The values kept are rescored
    similarities (:func:`_rescore`), never matrix products.
    """

    def __init__(self, Q: torch.Tensor, k: int, sub: int, item_norm: float) -> None:
        rows, dev = Q.shape[0], Q.device
        self.k, self.sub, self.empty = k, sub, True
        self.Q = Q.to(_score_dtype(dev))  # converted once, not per candidate
        self.tol = _gemm_tolerance(Q, item_norm)
        dt = self.tol.dtype
        self.vals = torch.full((rows, k), -torch.inf, dtype=dt, device=dev)
        self.idx = torch.full((rows, k), _SENTINEL, dtype=torch.int64, device=dev)
        self.tau = torch.full((rows,), -torch.inf, dtype=dt, device=dev)

    def push(self, tile: torch.Tensor, items: torch.Tensor, start: int, width: int) -> None:
        """Fold in the similarities of items [start, start + width) to the query rows.

        `tile` is contiguous, (rows, a multiple of the sub-tile size), the matrix product of
        the query rows with `items` (the prepared rows of those items); columns past `width`
        and excluded items hold -inf. Tiles must come in increasing item order (an item tying
        with the current k-th best comes later and cannot enter: the tie rule).

        A product differs from the rescored similarity by at most the row's tolerance t, so an
        item can enter the top k only if its product reaches (k-th best so far) - t: only the
        sub-tiles whose maximum reaches that are searched. Their passing values are cut again
        at L - t, L the k-th largest of the current values and the candidates' products minus
        t (a lower bound of the new k-th best); the rest are rescored and selected.
        """
        k, sub = self.k, self.sub
        rows, padded = tile.shape
        dev = tile.device
        subs = tile.view(rows, padded // sub, sub)
        maxima = subs.amax(dim=2)
        if self.empty:
            # First tile: the k-th largest sub-tile maximum of a row is a lower bound of its
            # k-th largest product, which is at most t above the k-th best similarity; an item
            # reaching that similarity has a product at least t below it.
            self.empty = False
            if maxima.shape[1] > k:
                low = _kth_bound(maxima, k).to(self.tol.dtype) - 2 * self.tol
            else:
                low = torch.full((rows,), -torch.inf, dtype=self.tol.dtype, device=dev)
        else:
            low = self.tau - self.tol
        # the threshold in the tile's dtype, rounded down: never above `low`
        thr = torch.nextafter(low.to(tile.dtype), torch.tensor(-torch.inf, dtype=tile.dtype,
                                                                device=dev))
        r, s = torch.nonzero(maxima >= thr[:, None], as_tuple=True)
        if r.numel() == 0:
            return
        # The values of flagged sub-tiles that pass the row's threshold: the only candidates.
        vals = _gather_subtiles(subs, r, s)
        fi, fj = torch.nonzero(vals >= thr[r][:, None], as_tuple=True)
        new_g = vals[fi, fj].to(self.tol.dtype)
        col = s[fi] * sub + fj
        # Lay each row's current top k and its new candidates side by side.
        urows, local, slot, cand_v, cand_i = _side_by_side(r[fi], self.vals, self.idx)
        tol = self.tol[urows]
        cand_v[local, slot] = new_g - tol[local]
        bound = torch.topk(cand_v, k, dim=1, sorted=False).values.amin(dim=1)
        keep = torch.nonzero((new_g >= bound[local] - tol[local]) & (new_g > -torch.inf)
                             ).flatten()
        new_v = torch.full_like(new_g, -torch.inf)
        new_v[keep] = _rescore(self.Q, urows[local[keep]], items, col[keep])
        new_i = torch.where(col < width, col + start, torch.full_like(col, _SENTINEL))
        cand_v[local, slot], cand_i[local, slot] = new_v, new_i
        v, i = _select(cand_v, lambda rr, pos: cand_i[rr[:, None], pos], k)
        self._store(urows, v, i)

    def _store(self, rows: torch.Tensor, v: torch.Tensor, i: torch.Tensor) -> None:
        self.vals[rows], self.idx[rows], self.tau[rows] = v, i, v[:, -1]


class _Products:
    """Running top-K of a block of query rows over tiles of items, by matrix product alone.

    The first pass of a search: no rescoring. It keeps more than k items per row (K = k +
    :data:`_MARGIN`),
    enough for :func:`_resolve` to prove, for nearly every row, that it holds every item that
    can be in the true top k. Ties of products go to the smaller index (tiles come in
    increasing item order, so an item equal to the K-th product never enters).
    """

    def __init__(self, rows: int, K: int, sub: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.K, self.sub, self.empty = K, sub, True
        self.vals = torch.full((rows, K), -torch.inf, dtype=dtype, device=device)
        self.idx = torch.full((rows, K), _SENTINEL, dtype=torch.int64, device=device)
        self.kernel = _kernels.products_push() if device.type == "cpu" else None

    def push(self, tile: torch.Tensor, items: torch.Tensor, start: int, width: int) -> None:
        """Fold in the products of items [start, start + width) (see :meth:`_Running.push` for
        the tile's layout); only sub-tiles whose maximum reaches the row's K-th product so far
        are searched."""
        K, sub = self.K, self.sub
        rows, padded = tile.shape
        dev = tile.device
        subs = tile.view(rows, padded // sub, sub)
        maxima = subs.amax(dim=2)
        first, self.empty = self.empty, False
        if first:  # nothing below the bound is in the row's top K
            low = _kth_bound(maxima, K) if maxima.shape[1] > K else \
                torch.full((rows,), -torch.inf, dtype=tile.dtype, device=dev)
        else:
            low = self.vals[:, -1]  # the K-th product so far
        if self.kernel is not None:  # one compiled loop, same result as the operations below
            # it admits products above max(K-th kept, floor): floor just below `low` (products
            # equal to the first tile's bound may enter; later, the K-th kept decides)
            floor = torch.nextafter(low, torch.full_like(low, -torch.inf))
            self.kernel(*(t.detach().cpu().numpy() for t in (tile, maxima)), width, start, sub,
                        *(t.cpu().numpy() for t in (self.vals, self.idx, floor)))  # no copies
            return
        r, s = torch.nonzero(maxima >= low[:, None], as_tuple=True)
        if r.numel() == 0:
            return
        vals = _gather_subtiles(subs, r, s)
        fi, fj = torch.nonzero(vals >= low[r][:, None], as_tuple=True)
        new_v = vals[fi, fj]
        col = s[fi] * sub + fj
        urows, local, slot, cand_v, cand_i = _side_by_side(r[fi], self.vals, self.idx)
        cand_v[local, slot] = new_v
        cand_i[local, slot] = torch.where(col < width, col + start,
                                          torch.full_like(col, _SENTINEL))
        v, i = _select(cand_v, lambda rr, pos: cand_i[rr[:, None], pos], K)
        self.vals[urows], self.idx[urows] = v, i


def _resolve(run: _Products, Q: torch.Tensor, base: _Base, k: int, values: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact top k from a product pass: (values, indices, rows still open).

    A product differs from the rescored similarity by at most the row's tolerance t
    (:func:`_gemm_tolerance`), so the true top k lies among the items whose product reaches
    (k-th largest product) - 2t: k items have similarities of at least (k-th product) - t, and
    such an item's similarity is below that. When the K kept products reach below that band,
    the band is complete. If it holds just k items whose products are more than 2t apart, their
    order is the true order: nothing is rescored unless `values` are wanted (the returned
    values are then the products). Otherwise the band's items are rescored (:func:`_rescore`,
    float64, position-free) and selected by the tie rule. Rows whose band runs past the K kept
    items (many items within rounding of each other) are returned open, for the exact search
    with rescoring.
    """
    tol = _gemm_tolerance(Q, base.item_norm)
    dt = tol.dtype
    pv, pi = run.vals.to(dt), run.idx
    thr = pv[:, k - 1] - 2 * tol
    last = pv[:, -1]
    open_rows = (last >= thr) & (last > -torch.inf)
    band = (pv >= thr[:, None]) & (pv > -torch.inf) & ~open_rows[:, None]
    if not values:
        gaps = pv[:, : k - 1] - pv[:, 1:k] if k > 1 else pv[:, :0]
        clear = (band.sum(1) == k) & (gaps > 2 * tol[:, None]).all(1)
        band &= ~clear[:, None]
    open_idx = torch.nonzero(open_rows).flatten()
    if not values:  # only the rows with a band are rescored and selected; the rest stand
        v, i = pv[:, :k], pi[:, :k].clone()
        sel = torch.nonzero(band.any(1)).flatten()
        if sel.numel() == 0:
            return v, i, open_idx
        band, pv, pi, Q = band[sel], pv[sel], pi[sel], Q[sel]
    r, c = torch.nonzero(band, as_tuple=True)
    vals = torch.full(pv.shape, -torch.inf, dtype=dt, device=pv.device)
    if r.numel():
        vals[r, c] = _rescore(Q, r, base.take(pi[r, c]),
                              torch.arange(r.numel(), device=r.device))
    bv, bi = _select(vals, lambda rr, pos: pi[rr[:, None], pos], k)
    if values:
        return bv, bi, open_idx
    v = v.clone()
    v[sel], i[sel] = bv, bi
    return v, i, open_idx


def _merge_topk(vals: torch.Tensor, idx: torch.Tensor, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge concatenated top-k lists (any item order) under the tie rule."""
    return _select(vals, lambda r, pos: idx[r[:, None], pos], k)


def _push_tile(run: _Running | _Products, Q: torch.Tensor, items: torch.Tensor, start: int,
               buf: torch.Tensor, exclude: torch.Tensor | None) -> None:
    """One matrix product into the reused buffer, exclusions masked, folded into `run`."""
    rows, w = Q.shape[0], items.shape[0]
    padded = -(-w // run.sub) * run.sub
    tile = buf[:rows * padded].view(rows, padded)  # contiguous whatever the width
    torch.mm(Q, items.T, out=tile[:, :w])
    with _bookkeeping_threads(tile.device):
        if w < padded:
            tile[:, w:].fill_(-torch.inf)
        if exclude is not None:
            hit = torch.nonzero((exclude >= start) & (exclude < start + w)).flatten()
            if hit.numel():
                tile[hit, exclude[hit] - start] = -torch.inf
        run.push(tile, items, start, w)


@contextlib.contextmanager
def _bookkeeping_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread for the passes after each matrix product.

    They are short, memory-bound passes and small index operations: with several threads they
    gain little on an idle machine and lose several-fold on a loaded one (each op waits for every
    thread). The products themselves keep all threads.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _item_tiles(n_items: int, plan: BlockPlan) -> list[tuple[int, int]]:
    """Item ranges of a search: balanced tiles of at most `plan.item_block` items."""
    return _splits(n_items, plan.item_block)


def _tile_buffer(rows: int, plan: BlockPlan, n_items: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    widest = max((e - s for s, e in _item_tiles(n_items, plan)), default=1)
    padded = -(-widest // plan.sub_tile) * plan.sub_tile
    return torch.empty((rows * padded,), dtype=dtype, device=device)


def _check_complete(idx: torch.Tensor | np.ndarray) -> None:
    if bool((idx == _SENTINEL).any()):  # unreachable when k <= the searchable items
        raise NumericalError("the search found fewer than k items with a finite similarity")


# =============================================================================== exact engine

def _unit_divisors(t: torch.Tensor, name: str, offset: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row divisors `D` with ``t / D[:, None]`` the unit rows of `t`, and the rows (`bad`)
    where `D` is not a normal number (norms beyond the dtype's range, subnormal rows), which
    :func:`_apply_unit` normalises with :func:`relreps._numerics.unit_rows` instead.

    ``D = |t|`` where that is safely in range (one pass), else ``s * |t / s|`` with `s` a power
    of two (the product is exact): either way ``t / D`` equals ``unit_rows(t)`` bit for bit (one
    correctly rounded division of the same number). Zero rows are refused (cosine is undefined
    for them), named by global row number.
    """
    norms = torch.linalg.vector_norm(t, dim=1)
    fi = torch.finfo(t.dtype)
    unsafe = ~torch.isfinite(norms) | (norms < fi.tiny ** 0.5 / fi.eps)  # as in _numerics
    if bool(unsafe.any()):
        rows = torch.nonzero(unsafe).flatten()
        s = pow2_scale(t[rows])
        norms[rows] = s.squeeze(1) * torch.linalg.vector_norm(t[rows] / s, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        bad = torch.nonzero(zero).flatten()
        rows = (bad[:5].cpu().numpy() + offset).tolist()
        raise _zero_error(name, [int(r) for r in rows], int(bad.numel()))
    bad = ~torch.isfinite(norms) | (norms < fi.tiny)
    return norms, bad


def _apply_unit(t: torch.Tensor, div: torch.Tensor, bad: torch.Tensor | None,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Unit rows of `t` from its :func:`_unit_divisors` (written into `out` when given)."""
    out = torch.div(t, div[:, None], out=out) if out is not None else t / div[:, None]
    if bad is not None and bool(bad.any()):
        rows = torch.nonzero(bad).flatten()
        out[rows] = unit_rows(t[rows])[0]
    return out


def _prep_base(t: torch.Tensor, metric: str, name: str, offset: int = 0,
               scale: torch.Tensor | None = None) -> torch.Tensor:
    """Base rows ready for the product, computed as the in-memory search computes each tile
    (so that dask chunks and in-memory tiles hold bit-identical values)."""
    if metric == "inner":
        return t / scale
    div, bad = _unit_divisors(t, name, offset)
    return _apply_unit(t, div, bad)


class _Base:
    """The items of a search, prepared tile by tile as the search reads them.

    A prepass computes, per row, the norm that makes it a unit vector (cosine; zero rows are
    refused there, before the long part) or the one power of two that scales every row (inner):
    O(N) memory, never a second copy of the items. Each tile is then prepared into a reused
    buffer with one division, a pass that costs a few percent of the tile's matrix product (it
    is shared by all the rows of a query block). `item_norm` bounds the norm of every prepared
    row (1 for unit rows), for :func:`_gemm_tolerance`.
    """

    def __init__(self, rows: _Rows | None, metric: str,
                 prepared: torch.Tensor | None = None) -> None:
        self.rows, self.metric, self.prepared = rows, metric, prepared
        self.scale: torch.Tensor | None = None
        self.f: torch.Tensor | None = None
        self.bad: torch.Tensor | None = None
        self.n = int(prepared.shape[0]) if prepared is not None else rows.n
        self.item_norm = 1.0
        if prepared is not None:
            self.item_norm = float(torch.linalg.vector_norm(prepared, dim=1).amax()) \
                if self.n else 0.0
            return
        if metric == "inner":
            self.scale, self.item_norm = _global_scale(rows)
            return
        f = torch.empty(rows.n, dtype=rows.dtype, device=rows.device)
        bad = torch.zeros(rows.n, dtype=torch.bool, device=rows.device)
        for s, blk in rows.blocks():
            f[s:s + blk.shape[0]], bad[s:s + blk.shape[0]] = _unit_divisors(blk, rows.name, s)
        self.f, self.bad = f, (bad if bool(bad.any()) else None)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """Prepared rows at the indices `idx` (1-d), bit-identical to those :meth:`tile` gives."""
        if self.prepared is not None:
            return self.prepared[idx]
        t = self.rows.take(idx.cpu().numpy())
        if self.metric == "inner":
            return t / self.scale
        return _apply_unit(t, self.f[idx], None if self.bad is None else self.bad[idx])

    def tile(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Prepared rows [start, stop), in `out` (a reused buffer of at least that many rows)."""
        if self.prepared is not None:
            return self.prepared[start:stop]
        t = self.rows.get(start, stop, check=False)  # the prepass checked every value
        dst = None if out is None else out[:stop - start]
        if self.metric == "inner":
            return torch.div(t, self.scale, out=dst) if dst is not None else t / self.scale
        return _apply_unit(t, self.f[start:stop],
                           None if self.bad is None else self.bad[start:stop], dst)


def _search(Q: torch.Tensor, base: _Base, k: int, plan: BlockPlan,
            exclude: torch.Tensor | None = None, buf: torch.Tensor | None = None,
            items: torch.Tensor | None = None, values: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (values, indices) of prepared query rows over all items of `base`.

    The values are rescored similarities when `values` is true; otherwise only the indices are
    meant (they are exact either way). Slots stay empty (index ``_SENTINEL``, value -inf) only
    when fewer than k items qualify.
    """
    if buf is None:
        buf = _tile_buffer(Q.shape[0], plan, base.n, Q.dtype, Q.device)
    tiles = _item_tiles(base.n, plan)
    if items is None and base.prepared is None:
        items = _item_buffer(plan, base.n, base.rows.d, Q.dtype, Q.device)
    K = max(k, min(k + _MARGIN, base.n))
    fast = _Products(Q.shape[0], K, plan.sub_tile, Q.dtype, Q.device)
    for s, e in tiles:
        _push_tile(fast, Q, base.tile(s, e, items), s, buf, exclude)
    vals, idx, open_rows = _resolve(fast, Q, base, k, values)
    wide = _score_dtype(Q.device)
    if open_rows.numel() and Q.dtype != wide and base.n <= _WIDE_PASS_MAX_ITEMS:
        # Items within float32 rounding of each other (dense clusters, near-duplicates): a
        # second product pass in float64 over those rows, whose rounding bound is ~1e9 times
        # smaller; the items' prepared rows are the same, converted exactly. It costs about
        # two float32 passes: cheaper than rescoring as the search goes (below) for up to
        # ~50k items, dearer beyond, where that search's bookkeeping is amortised.
        Qo = Q[open_rows].to(wide)
        ex = None if exclude is None else exclude[open_rows]
        again = _Products(Qo.shape[0], K, plan.sub_tile, wide, Q.device)
        buf64 = _tile_buffer(Qo.shape[0], plan, base.n, wide, Q.device)
        for s, e in tiles:
            _push_tile(again, Qo, base.tile(s, e, items).to(wide), s, buf64, ex)
        v, i, still = _resolve(again, Qo, base, k, values)
        vals[open_rows], idx[open_rows] = v, i
        open_rows = open_rows[still]
    if open_rows.numel():  # items within rounding of each other: rescore as the search goes
        Qo = Q[open_rows]
        ex = None if exclude is None else exclude[open_rows]
        run = _Running(Qo, k, plan.sub_tile, base.item_norm)
        for s, e in tiles:
            _push_tile(run, Qo, base.tile(s, e, items), s, buf, ex)
        vals[open_rows], idx[open_rows] = run.vals, run.idx
    return vals, idx


def _item_buffer(plan: BlockPlan, n_items: int, d: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    widest = max((e - s for s, e in _item_tiles(n_items, plan)), default=1)
    return torch.empty((widest, d), dtype=dtype, device=device)


# =============================================================================== validation

def _check_inputs(arrays: Mapping[str, Any]) -> tuple[list[Any], str]:
    """Validated arrays and their common kind ("numpy", "torch" or "dask")."""
    names = tuple(arrays)
    values = list(arrays.values())
    if any(is_dask(a) for a in values):
        if any(is_torch(a) for a in values):
            desc = ", ".join(f"{n}={'torch' if is_torch(a) else 'dask' if is_dask(a) else 'numpy'}"
                             for n, a in zip(names, values))
            raise InputTypeError(f"mixed dask and torch inputs ({desc}); pass dask and numpy "
                                 "arrays, or torch tensors only")
        kind = "dask"
    else:
        kind = "torch" if same_kind(*values, names=names) else "numpy"
    out = []
    for name, a in arrays.items():
        if is_dask(a) and any(math.isnan(c) for c in a.shape):
            raise ShapeError(f"{name} is a dask array of unknown chunk sizes; call "
                             f"{name}.compute_chunk_sizes() first")
        a = check_array(a, name, kinds=("numpy", "torch", "dask"),
                        finite=not isinstance(a, np.memmap), min_rows=1)
        if kind == "dask" and not is_dask(a):
            a = to_dask(a, max(1, _READ_ELEMENTS // max(1, a.shape[1])))
        out.append(a)
    if kind == "torch" and any(a.device.type == "meta" for a in out):
        raise InputTypeError("meta tensors hold no values to search; pass tensors with data")
    if kind == "torch" and len({str(a.device) for a in out}) > 1:
        raise InputTypeError(f"inputs are on different devices "
                             f"({', '.join(f'{n}={a.device}' for n, a in zip(names, out))}); "
                             "move them to one device")
    return out, kind


def _common_dtype(arrays: Sequence[Any]) -> torch.dtype:
    dts = [np.dtype(str(a.dtype).replace("torch.", "")) for a in arrays]
    return torch.float64 if np.result_type(*dts) == np.float64 else torch.float32


def _rows_for(arrays: Sequence[Any], names: Sequence[str]) -> list[_Rows]:
    dtype = _common_dtype(arrays)
    device = next((a.device for a in arrays if is_torch(a)), torch.device("cpu"))
    return [_Rows(a, n, dtype, device) for a, n in zip(arrays, names)]


def _check_k(k: Any, available: int, what: str) -> int:
    k = check_int(k, "k")
    if not 1 <= k <= available:
        raise ShapeError(f"k must be between 1 and {available} (the number of {what}), got {k}")
    return k


def _check_queries(queries: Any, n: int) -> np.ndarray | None:
    if queries is None:
        return None
    try:
        q = check_indices(queries, "queries", n=n, min_size=0)
    except RelrepsError as e:
        raise type(e)(f"queries must be row indices in [0, {n}): {e}") from None
    if q.size == 0:
        raise ShapeError(f"no queries: queries must hold at least one row index in [0, {n})")
    return q


def _check_exclude(exclude: Any, n_queries: int, n_base: int) -> np.ndarray | None:
    if exclude is None:
        return None
    try:
        ex = check_indices(exclude, "exclude", n=n_base, min_size=0)
    except RelrepsError as e:
        raise type(e)(f"exclude must hold one row index in [0, {n_base}) per query: {e}"
                      ) from None
    if ex.shape != (n_queries,):
        raise ShapeError(f"exclude must hold one row index in [0, {n_base}) per query: got "
                         f"{ex.size} for {n_queries} queries")
    return ex


def _check_options(metric: Any, method: Any, block_size: Any) -> tuple[str, str, int | None]:
    return (check_choice(metric, "metric", METRICS), check_choice(method, "method", METHODS),
            check_int(block_size, "block_size", min_value=1, allow_none=True))


def _check_ann_options(target_recall: Any, recall_queries: Any, ann_params: Any
                       ) -> tuple[float | None, int, dict[str, Any]]:
    target_recall = check_float(target_recall, "target_recall", min_value=0.0, max_value=1.0,
                                allow_none=True)
    recall_queries = check_int(recall_queries, "recall_queries", min_value=1)
    if ann_params is not None and not isinstance(ann_params, Mapping):
        raise InputTypeError(f"ann_params must be a dict of index settings, got {ann_params!r}")
    return target_recall, recall_queries, dict(ann_params or {})


# =============================================================================== in-memory paths

def _block_ranges(n: int, step: int, device: torch.device) -> list[tuple[int, int]]:
    """Balanced query blocks of at most `step` rows, as many as a multiple of the CPU threads
    (so that no thread idles at the end) when there are enough rows."""
    blocks = -(-n // max(1, step))
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads > 1 and blocks % threads and n >= 64 * threads:
        blocks += threads - blocks % threads
    return _splits(n, -(-n // blocks)) if n else []


def _run_blocks(fn: Any, ranges: Sequence[tuple[int, int]], device: torch.device) -> list[Any]:
    """`fn` on every query block: on a CPU, one block per thread, each thread single-threaded.

    Independent single-threaded searches keep every core busy through the matrix products and
    the passes after them alike, with no synchronisation between threads (which, on a loaded
    machine, makes short multi-threaded operations wait several-fold). Elsewhere (a GPU, one
    thread, one block) the blocks run in turn.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1 or len(ranges) < 2:
        return [fn(r) for r in ranges]

    def single(r: tuple[int, int]) -> Any:
        torch.set_num_threads(1)  # per thread for OpenMP; MKL's setting is global
        return fn(r)

    torch.set_num_threads(1)
    ex = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="relreps-knn")
    try:
        futures = [ex.submit(single, r) for r in ranges]
        return [f.result() for f in futures]
    finally:  # after an error (a zero vector, say), do not run the remaining blocks
        ex.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _thread_buffers(rows: int, plan: BlockPlan, base: _Base, dtype: torch.dtype,
                    device: torch.device, width: int = 0) -> Any:
    """A getter of per-thread reused buffers: (similarity tile, prepared item tile or None,
    query rows of `width` columns or None)."""
    local = threading.local()

    def get() -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if not hasattr(local, "bufs"):
            local.bufs = (_tile_buffer(rows, plan, base.n, dtype, device),
                          None if base.prepared is not None else
                          _item_buffer(plan, base.n, base.rows.d, dtype, device),
                          torch.empty((rows, width), dtype=dtype, device=device) if width
                          else None)
        return local.bufs

    return get


def _knn_local(qrows: _Rows, base: _Base, k: int, metric: str, plan: BlockPlan,
               exclude: np.ndarray | None) -> np.ndarray:
    out = np.empty((qrows.n, k), dtype=np.int64)
    ex_all = None if exclude is None else torch.as_tensor(exclude, device=qrows.device)
    ranges = _block_ranges(qrows.n, plan.query_block, qrows.device)
    bufs = _thread_buffers(max(e - s for s, e in ranges), plan, base, qrows.dtype,
                           qrows.device)

    def block(r: tuple[int, int]) -> None:
        s, e = r
        buf, items, _ = bufs()
        Q = _prep(qrows.get(s, e), metric, qrows.name, s)
        _, idx = _search(Q, base, k, plan, None if ex_all is None else ex_all[s:e], buf, items,
                         values=False)
        _check_complete(idx)
        out[s:e] = idx.cpu().numpy()

    _run_blocks(block, ranges, qrows.device)
    return out


def _pair_counts(S: np.ndarray, T: np.ndarray | None, qids: np.ndarray, k: int) -> np.ndarray:
    """Histograms over a block of queries: (2, k + 1) int64 counts of the rank of each query in
    its source neighbourhood S (0: absent) and of |S ∩ T| (0 to k).

    Integer counts add up exactly in any grouping, so every path (blocks, dask chunks) gives
    bit-identical metrics (:func:`_scores`).
    """
    hit = S == qids[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    out = np.zeros((2, k + 1), dtype=np.int64)
    out[0] = np.bincount(rank, minlength=k + 1)
    if T is not None:
        out[1] = np.bincount(_overlap(S, T), minlength=k + 1)
    return out


def _scores(counts: np.ndarray, k: int) -> tuple[float, float]:
    """(MRR, Jaccard) from the histograms of :func:`_pair_counts`."""
    n = int(counts[0].sum())
    r = np.arange(1, k + 1)
    i = np.arange(k + 1)
    mrr = float(np.sum(counts[0, 1:] / r)) / n
    jac = float(np.sum(counts[1] * (i / (2 * k - i)))) / n
    return mrr, jac


def _overlap(na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Per row, the number of shared entries of two index arrays (rows hold distinct indices)."""
    return (na[:, :, None] == nb[:, None, :]).any(-1).sum(-1)


def _retrieval_local(src: _Rows, tgt: _Rows, qidx: np.ndarray | None, k: int, metric: str,
                     block_size: int | None, need_t: bool) -> np.ndarray:
    base = _Base(tgt, metric)
    n_q = tgt.n if qidx is None else qidx.size
    sets = 2 if need_t else 1
    plan = plan_blocks(sets * n_q, base.n, tgt.d, k, itemsize=tgt.dtype.itemsize,
                       device=tgt.device,
                       query_block=None if block_size is None else sets * block_size)
    step = max(1, plan.query_block // sets)  # stacked source and target rows fill one block
    ranges = _block_ranges(n_q, step, tgt.device)
    bufs = _thread_buffers(sets * max(e - s for s, e in ranges), plan, base, tgt.dtype,
                           tgt.device, tgt.d)

    def block(r: tuple[int, int]) -> np.ndarray:
        s, e = r
        buf, items, qbuf = bufs()
        ids = np.arange(s, e) if qidx is None else qidx[s:e]
        sel, m = (None if qidx is None else ids), e - s
        qbuf[:m] = _prep(src.rows(s, e, sel), metric, src.name, row_ids=ids)
        if need_t:  # stacked: one product per tile serves both neighbourhoods
            qbuf[m:2 * m] = _prep(tgt.rows(s, e, sel), metric, tgt.name, row_ids=ids)
        _, idx = _search(qbuf[:sets * m], base, k, plan, buf=buf, items=items, values=False)
        _check_complete(idx)
        idx = idx.cpu().numpy()
        return _pair_counts(idx[:m], idx[m:] if need_t else None, ids, k)

    return np.sum(_run_blocks(block, ranges, tgt.device), axis=0)


# =============================================================================== dask paths

def _dask_prep_block(block: np.ndarray, scale: Any = None, *, metric: str, label: str,
                     base: bool, block_info: Any = None) -> np.ndarray:
    offset = int(block_info[0]["array-location"][0][0]) if block_info else 0
    check_finite_rows(block, label, offset=offset)
    t = _from_numpy(block)
    if not base:
        return _prep(t, metric, label, offset).numpy()
    sc = None if scale is None else torch.as_tensor(np.asarray(scale), dtype=t.dtype)
    return _prep_base(t, metric, label, offset, sc).numpy()


def _dask_scale_of(m: np.ndarray) -> np.ndarray:
    return pow2_global_scale(torch.as_tensor(np.asarray(m))).numpy()


def _dask_prepared(x: Any, metric: str, name: str, dtype: np.dtype, base: bool) -> Any:
    """Lazily validated and prepared rows of a dask array (errors name global rows)."""
    import dask.array as da

    x = x.astype(dtype).rechunk({1: -1})
    args = [x]
    if metric == "inner" and base:
        args.append(da.map_blocks(_dask_scale_of, da.abs(x).max(), dtype=dtype))
    return da.map_blocks(_dask_prep_block, *args, metric=metric, label=name, base=base,
                         dtype=dtype)


def _tile_task(qs: list[np.ndarray], b: np.ndarray, b_start: int, ex: np.ndarray | None,
               k: int, query_block: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of one query chunk (query sets stacked) in one item chunk, global indices."""
    Q = _from_numpy(np.concatenate(qs) if len(qs) > 1 else qs[0])
    base = _Base(None, "inner", prepared=_from_numpy(b))
    plan = plan_blocks(Q.shape[0], base.n, Q.shape[1], k, itemsize=Q.element_size(),
                       query_block=query_block)
    ex_t = None if ex is None else _from_numpy(np.concatenate([ex] * len(qs)) - b_start)
    vals, idx = [], []
    buf = _tile_buffer(min(plan.query_block, Q.shape[0]), plan, base.n, Q.dtype, Q.device)
    for s, e in _splits(Q.shape[0], plan.query_block):
        v, i = _search(Q[s:e], base, k, plan, None if ex_t is None else ex_t[s:e], buf)
        vals.append(v)
        idx.append(torch.where(i == _SENTINEL, i, i + b_start))
    return torch.cat(vals).numpy(), torch.cat(idx).numpy()


def _merge_task(parts: list[tuple[np.ndarray, np.ndarray]], k: int
                ) -> tuple[np.ndarray, np.ndarray]:
    v = torch.cat([_from_numpy(p[0]) for p in parts], 1)
    i = torch.cat([_from_numpy(p[1]) for p in parts], 1)
    v, i = _merge_topk(v, i, k)
    return v.numpy(), i.numpy()


def _idx_task(res: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    _check_complete(res[1])
    return res[1]


def _scores_task(res: tuple[np.ndarray, np.ndarray], qids: np.ndarray, k: int,
                 need_t: bool) -> np.ndarray:
    idx = res[1]
    _check_complete(idx)
    m = qids.shape[0]
    return _pair_counts(idx[:m], idx[m:] if need_t else None, qids, k)[None]


def _starts(chunks: Sequence[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _dask_topk(qsets: list[Any], base: Any, k: int, exclude: np.ndarray | None,
               query_block: int | None, finish: Any, finish_args: Any, out_chunks: Any,
               dtype: Any, split_every: int = 8) -> Any:
    """Lazy array: per query chunk i, ``finish(top-k of chunk i, *finish_args(i))``.

    Tiles (query chunk i, item chunk j) run anywhere; for each i their running top-k are merged
    by a tree reduction of width `split_every`, under the tie rule.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "relreps-knn-" + tokenize(*qsets, base, k, exclude, query_block, finish,
                                     [finish_args(i) for i in range(len(qsets[0].chunks[0]))])
    q_keys = [q.__dask_keys__() for q in qsets]
    b_keys = base.__dask_keys__()
    b_starts, q_starts = _starts(base.chunks[0]), _starts(qsets[0].chunks[0])
    dsk: dict[Any, Any] = {}
    for i in range(len(qsets[0].chunks[0])):
        ex_key = None
        if exclude is not None:
            ex_key = (f"{name}-exclude", i)
            dsk[ex_key] = exclude[q_starts[i]:q_starts[i + 1]]
        level = []
        for j in range(len(base.chunks[0])):
            key = (f"{name}-tile", i, j)
            dsk[key] = (_tile_task, [qk[i][0] for qk in q_keys], b_keys[j][0], int(b_starts[j]),
                        ex_key, k, query_block)
            level.append(key)
        depth = 0
        while len(level) > 1:
            nxt = []
            for g in range(0, len(level), split_every):
                key = (f"{name}-merge{depth}", i, g // split_every)
                dsk[key] = (_merge_task, level[g:g + split_every], k)
                nxt.append(key)
            level, depth = nxt, depth + 1
        dsk[(name, i) + (0,) * (len(out_chunks) - 1)] = (finish, level[0], *finish_args(i))
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[*qsets, base])
    return da.Array(graph, name, chunks=out_chunks, dtype=dtype)


def _gathered(q: Any) -> Any:
    """A query set of a dask array, computed now into one in-memory chunk when it is small
    (at most one read block). Rows gathered from all over an array depend on every block of it;
    left lazy, the scheduler prepares the (cheap, ready) item blocks while it waits for them and
    holds them all, which is a copy of the whole item array in memory."""
    if q.size > _READ_ELEMENTS or any(math.isnan(c) for c in q.shape):
        return q
    return to_dask(np.asarray(q.compute()), max(1, q.shape[0]))


def _dask_knn(queries: Any, base: Any, k: int, metric: str, block_size: int | None,
              exclude: np.ndarray | None) -> Any:
    dtype = np.result_type(queries.dtype, base.dtype)
    bp = _dask_prepared(base, metric, "base", dtype, True)
    # Few, large query chunks: every query chunk visits every item chunk, so a prepared item
    # chunk stays in memory until the last query chunk has used it (a query set drawn with
    # fancy indexing arrives in one small chunk per item chunk, which would hold all of them).
    rows = min(queries.shape[0], max(max(queries.chunks[0], default=1),
                                     _READ_ELEMENTS // max(1, queries.shape[1])))
    qp = _dask_prepared(queries.rechunk({0: max(1, rows)}), metric, "queries", dtype, False)
    return _dask_topk([qp], bp, k, exclude, block_size, _idx_task, lambda i: (),
                      (qp.chunks[0], (k,)), np.int64)


def _dask_retrieval(source: Any, target: Any, qidx: np.ndarray | None, k: int, metric: str,
                    block_size: int | None, need_t: bool) -> np.ndarray:
    dtype = np.result_type(source.dtype, target.dtype)
    bp = _dask_prepared(target, metric, "target", dtype, True)
    ids = np.arange(target.shape[0]) if qidx is None else qidx
    qs, qt = (source, target) if qidx is None else \
        (_gathered(source[qidx]), _gathered(target[qidx]) if need_t else None)
    rows = block_size or (max(target.chunks[0]) if qidx is None else
                          max(1, min(ids.size, _READ_ELEMENTS // max(1, target.shape[1]))))
    sets = [_dask_prepared(qs.rechunk({0: rows}), metric, "source", dtype, False)]
    if need_t:
        sets.append(_dask_prepared(qt.rechunk({0: sets[0].chunks[0]}), metric, "target", dtype,
                                   False))
    starts = _starts(sets[0].chunks[0])
    scores = _dask_topk(sets, bp, k, None, None, _scores_task,
                        lambda i: (ids[starts[i]:starts[i + 1]], k, need_t),
                        ((1,) * len(starts[:-1]), (2,), (k + 1,)), np.int64)
    return np.asarray(scores.sum(axis=0).compute())


def _overlap_task(na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    return _overlap(na, nb)[:, None]


def _dask_mutual(x: Any, y: Any, k: int, metric: str, block_size: int | None) -> float:
    import dask.array as da

    n = x.shape[0]
    na = _dask_knn(x, x, k, metric, block_size, np.arange(n))
    y_q = y.rechunk({0: x.chunks[0]})
    nb = _dask_knn(y_q, y, k, metric, block_size, np.arange(n))
    inter = da.map_blocks(_overlap_task, na, nb, dtype=np.int64, chunks=(na.chunks[0], (1,)))
    return int(inter.sum().compute()) / (n * k)


# =============================================================================== approximate

def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("faiss-cpu", "approximate neighbour search "
                                     "(method='ivf' or 'hnsw')",
                                     "pip install 'relreps[dist]'  (or pip install faiss-cpu)"
                                     ) from None
    return faiss


_ANN_KEYS = {"hnsw": ("M", "ef_construction", "ef_search", "max_ef_search"),
             "ivf": ("nlist", "nprobe", "train_size")}


class _AnnIndex:
    """A faiss index over prepared base rows (inner product), with a tunable search effort."""

    def __init__(self, method: str, d: int, n: int, k: int, params: Mapping[str, Any],
                 seed: int) -> None:
        faiss = _faiss()
        self.method = method
        unknown = sorted(set(params) - set(_ANN_KEYS[method]))
        if unknown:
            raise OptionError(f"ann_params has unknown key(s) {unknown} for method={method!r}; "
                              f"known: {', '.join(_ANN_KEYS[method])}")

        def opt(key: str, default: int, lo: int = 1, hi: int | None = None) -> int:
            return check_int(params.get(key, default), f"ann_params['{key}']", min_value=lo,
                             max_value=hi)

        ip = faiss.METRIC_INNER_PRODUCT
        if method == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, opt("M", 32, 2), ip)
            self.index.hnsw.efConstruction = opt("ef_construction", 100)
            self.effort = max(opt("ef_search", max(64, 2 * (k + 1))), k + 1)
            self.max_effort = max(opt("max_ef_search", 4096), self.effort)
            self.train_size = 0
        else:
            nlist = opt("nlist", int(min(max(1, n // 39), max(1, round(4 * math.sqrt(n))))),
                        1, n)
            self.quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(self.quantizer, d, nlist, ip)
            self.index.cp.seed = seed
            self.effort = opt("nprobe", max(1, nlist // 64), 1, nlist)
            self.max_effort = nlist
            self.train_size = opt("train_size", min(n, 64 * nlist), nlist, n)

    def add(self, x: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(x, dtype=np.float32))

    def _set_effort(self, effort: int) -> None:
        if self.method == "hnsw":
            self.index.hnsw.efSearch = int(effort)
        else:
            self.index.nprobe = int(effort)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        q = np.ascontiguousarray(q, dtype=np.float32)
        self._set_effort(self.effort)
        _, idx = self.index.search(q, k)
        missing = (idx < 0).any(1)
        if missing.any():  # too little effort to find k items: search those queries harder
            self._set_effort(self.max_effort)
            idx[missing] = self.index.search(q[missing], k)[1]
            if (idx < 0).any():
                raise NumericalError(f"the {self.method} index returned fewer than {k} "
                                     "neighbours even at its largest search effort")
        return idx.astype(np.int64)

    def raise_effort(self) -> bool:
        if self.effort >= self.max_effort:
            return False
        self.effort = min(self.max_effort, 2 * self.effort)
        return True


def _recall(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Per row, the fraction of the exact top-k found by the approximate search."""
    k = exact.shape[1]
    return _overlap(approx[:, :k], exact) / k


def _drop_excluded(idx: np.ndarray, exclude: np.ndarray | None, k: int) -> np.ndarray:
    if exclude is None:
        return idx[:, :k]
    order = np.argsort(idx == exclude[:, None], axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, order, 1)


def sample_queries(n: int, size: int, random_state: Any = 0) -> np.ndarray:
    """A seeded sample of `size` distinct row indices out of `n`, sorted (all rows if fewer)."""
    n = check_int(n, "n", min_value=1)
    size = check_int(size, "size", min_value=1)
    rng = check_random_state(random_state)
    if size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


@dataclass
class _QuerySet:
    rows: _Rows
    ids: np.ndarray | None  # row ids of the queries (None: all rows in order)
    exclude: np.ndarray | None  # per query, a base row it may not return

    @property
    def n(self) -> int:
        return self.rows.n if self.ids is None else int(self.ids.size)

    def ids_of(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.ids is None else self.ids[pos]

    def ex_of(self, pos: np.ndarray) -> np.ndarray | None:
        return None if self.exclude is None else self.exclude[pos]


def _ann_run(sets: Mapping[str, _QuerySet], base: _Rows, k: int, metric: str, method: str,
             params: dict[str, Any], target_recall: float | None, recall_queries: int,
             random_state: Any, block_size: int | None
             ) -> tuple[dict[str, np.ndarray], float, int]:
    """Approximate top-k of every query set in one index over `base`, and the measured recall.

    One pass over the base adds each block to the index and searches it exactly for the sampled
    queries (tuning and reporting samples, disjoint when there are enough queries).
    """
    for qs in (*[s.rows for s in sets.values()], base):
        if qs.kind == "torch" and qs.device.type != "cpu":
            raise InputTypeError(f"method={method!r} runs on the CPU (faiss-cpu) but {qs.name} "
                                 f"is on {qs.device}; pass {qs.name}.cpu() deliberately, or use "
                                 "method='exact', which runs on the tensor's device")
    rng = check_random_state(random_state)
    seed = int(rng.integers(0, 2**31 - 1))
    n_q = next(iter(sets.values())).n
    order = rng.permutation(n_q)
    # tuning and reporting samples are disjoint (unless there is a single query)
    n_tune = 0 if target_recall is None else max(1, min(recall_queries // 2, n_q // 2))
    tune_pos = np.sort(order[:n_tune])
    report_pos = np.sort(order[n_tune:n_tune + recall_queries] if n_q > n_tune
                         else order[:recall_queries])
    index = _AnnIndex(method, base.d, base.n, k, params, seed)
    scale, item_norm = _global_scale(base) if metric == "inner" else (None, 1.0)
    if index.train_size:
        tr = sample_queries(base.n, index.train_size, seed)
        index.index.train(_prep(base.take(tr), metric, base.name, scale=scale,
                                row_ids=tr).numpy().astype(np.float32))
    # exact references of the sampled queries, computed while the index is filled
    refs: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None, _Running]] = {}
    for key, qs in sets.items():
        for tag, pos in (("tune", tune_pos), ("report", report_pos)):
            if pos.size:
                ids = qs.ids_of(pos)
                Q = _prep(qs.rows.take(ids), metric, qs.rows.name, row_ids=ids)
                ex = qs.ex_of(pos)
                refs[key, tag] = (Q, None if ex is None else _from_numpy(ex),
                                  _Running(Q, k, max(64, _pow2_at_least(4 * (k + 1))),
                                           item_norm))
    for start, blk in base.blocks():
        p = _prep_base(blk, metric, base.name, start, scale)
        index.add(p.numpy())
        for Q, ex, run in refs.values():
            plan = plan_blocks(Q.shape[0], p.shape[0], p.shape[1], k, itemsize=p.element_size())
            buf = _tile_buffer(Q.shape[0], plan, p.shape[0], p.dtype, p.device)
            for s, e in _item_tiles(p.shape[0], plan):
                _push_tile(run, Q, p[s:e], start + s, buf, ex)
    exact = {key: run.idx.numpy() for key, (_, _, run) in refs.items()}
    for v in exact.values():
        _check_complete(v)

    def approx(qs: _QuerySet, Q: np.ndarray, pos: np.ndarray) -> np.ndarray:
        extra = 0 if qs.exclude is None else 1
        return _drop_excluded(index.search(Q, k + extra), qs.ex_of(pos), k)

    while n_tune and target_recall is not None:  # raise the effort until the target is reached
        rec = np.concatenate([_recall(approx(qs, refs[key, "tune"][0].numpy(), tune_pos),
                                      exact[key, "tune"]) for key, qs in sets.items()])
        if float(rec.mean()) >= target_recall or not index.raise_effort():
            break
    out: dict[str, np.ndarray] = {}
    step = block_size or 65536
    for key, qs in sets.items():
        res = np.empty((qs.n, k), dtype=np.int64)
        for s, e in _splits(qs.n, step):
            pos = np.arange(s, e)
            ids = qs.ids_of(pos)
            blk = qs.rows.rows(s, e, None if qs.ids is None else ids)
            res[s:e] = approx(qs, _prep(blk, metric, qs.rows.name, row_ids=ids).numpy(), pos)
        out[key] = res
    recall = np.concatenate([_recall(out[key][report_pos], exact[key, "report"])
                             for key in sets])
    return out, float(recall.mean()), int(report_pos.size)


# =============================================================================== public API

def knn_indices(queries: Array, base: Array, k: int, *, metric: str = "cosine",
                exclude: Array | None = None, block_size: int | None = None,
                method: str = "exact", ann_params: Mapping[str, Any] | None = None,
                target_recall: float | None = 0.95, recall_queries: int = 1000,
                random_state: Any = 0) -> Any:
    """Indices (n_queries, k) of each query's k most similar rows of `base`, most similar first.

    Parameters
    ----------
    queries, base : (n, d) and (m, d) arrays: numpy (``np.memmap`` included), torch (one
        device; the search runs there) or dask (numpy arrays may be mixed with dask ones).
    k : neighbours per query, 1 <= k <= m (m - 1 with `exclude`).
    metric : ``"cosine"`` (zero vectors are refused) or ``"inner"`` (inner product).
    exclude : optional (n_queries,) integer row indices: row ``exclude[i]`` of `base` may not be
        returned for query i (its own position when a set is searched in itself).
    block_size : query rows per block (default: :func:`plan_blocks`).
    method : ``"exact"``, or ``"hnsw"`` / ``"ivf"`` (approximate, faiss, CPU).
    ann_params : ``hnsw``: ``M`` (32), ``ef_construction`` (100), ``ef_search`` (64),
        ``max_ef_search`` (4096); ``ivf``: ``nlist`` (about 4 sqrt(m)), ``nprobe``
        (nlist / 64), ``train_size`` (64 nlist).
    target_recall : approximate methods double their search effort until the recall@k measured
        on ``recall_queries // 2`` seeded queries reaches this (None: keep the given effort).
        :func:`measure_recall` or :func:`retrieval_metrics` report a recall.
    random_state : seed of the sampled queries (and of the IVF training sample).

    Returns
    -------
    int64 indices: a numpy array (also for torch input: the small result is copied to the CPU
    at the end), or a lazy dask array chunked like `queries` for dask input and
    ``method="exact"``. Ties: the lower index first.
    """
    metric, method, block_size = _check_options(metric, method, block_size)
    (q, b), kind = _check_inputs({"queries": queries, "base": base})
    if q.shape[1] != b.shape[1]:
        raise ShapeError(f"queries have width {q.shape[1]}, base has {b.shape[1]}: both must "
                         "be embedded in the same space")
    ex = _check_exclude(exclude, int(q.shape[0]), int(b.shape[0]))
    k = _check_k(k, int(b.shape[0]) - (ex is not None), "base rows that a query may return")
    if method != "exact":
        target_recall, recall_queries, params = _check_ann_options(target_recall,
                                                                   recall_queries, ann_params)
        qrows, brows = _rows_for([q, b], ["queries", "base"])
        out, _, _ = _ann_run({"q": _QuerySet(qrows, None, ex)}, brows, k, metric, method,
                             params, target_recall, recall_queries, random_state, block_size)
        return out["q"]
    if kind == "dask":
        return _dask_knn(q, b, k, metric, block_size, ex)
    qrows, brows = _rows_for([q, b], ["queries", "base"])
    with torch.no_grad():
        base_ = _Base(brows, metric)
        plan = plan_blocks(qrows.n, brows.n, brows.d, k, itemsize=qrows.dtype.itemsize,
                           device=qrows.device, query_block=block_size)
        return _knn_local(qrows, base_, k, metric, plan, ex)


def _pair_inputs(source: Any, target: Any, names: tuple[str, str], same_width: bool
                 ) -> tuple[Any, Any, str]:
    (s, t), kind = _check_inputs({names[0]: source, names[1]: target})
    try:
        check_same_rows({names[0]: s, names[1]: t})
    except ShapeError as e:
        raise ShapeError(f"{e}; rows must correspond (row i is the same sample in both)"
                         ) from None
    if same_width and s.shape[1] != t.shape[1]:
        raise ShapeError(f"{names[0]} has width {s.shape[1]} but {names[1]} has {t.shape[1]}: "
                         "searching one space's vectors in the other needs equal widths (compare "
                         "relative spaces with the same anchors, or use cka / mutual_knn)")
    return s, t, kind


def _retrieval(source: Any, target: Any, k: Any, queries: Any, metric: Any, block_size: Any,
               method: Any, ann_params: Any, target_recall: Any, recall_queries: Any,
               random_state: Any, need_t: bool) -> dict[str, float]:
    metric, method, block_size = _check_options(metric, method, block_size)
    s, t, kind = _pair_inputs(source, target, ("source", "target"), True)
    n = int(t.shape[0])
    qidx = _check_queries(queries, n)
    k = _check_k(k, n, "target rows")
    if method != "exact":
        target_recall, recall_queries, params = _check_ann_options(target_recall,
                                                                   recall_queries, ann_params)
        srows, trows = _rows_for([s, t], ["source", "target"])
        sets = {"s": _QuerySet(srows, qidx, None)}
        if need_t:
            sets["t"] = _QuerySet(trows, qidx, None)
        res, recall, n_rec = _ann_run(sets, trows, k, metric, method, params, target_recall,
                                      recall_queries, random_state, block_size)
        ids = np.arange(n) if qidx is None else qidx
        mrr, jac = _scores(_pair_counts(res["s"], res.get("t"), ids, k), k)
        return {"jaccard": jac, "mrr": mrr, "recall_at_k": recall, "recall_queries": n_rec}
    if kind == "dask":
        counts = _dask_retrieval(s, t, qidx, k, metric, block_size, need_t)
    else:
        srows, trows = _rows_for([s, t], ["source", "target"])
        with torch.no_grad():
            counts = _retrieval_local(srows, trows, qidx, k, metric, block_size, need_t)
    mrr, jac = _scores(counts, k)
    return {"jaccard": jac, "mrr": mrr}


def retrieval_metrics(source: Array, target: Array, k: int = 5, *,
                      queries: Array | None = None, metric: str = "cosine",
                      block_size: int | None = None, method: str = "exact",
                      ann_params: Mapping[str, Any] | None = None,
                      target_recall: float | None = 0.95, recall_queries: int = 1000,
                      random_state: Any = 0) -> dict[str, float]:
    """Jaccard@k and MRR@k of `source` searched in `target` (the paper's definitions).

    For each query sample i, its source vector is searched among all target vectors (top k, set
    S_i). MRR@k: mean of 1/rank of i in S_i (0 when absent). Jaccard@k: mean of
    |S_i ∩ T_i| / |S_i ∪ T_i| where T_i are the top k targets of i's own target vector (i itself
    included). Both searches share one pass over the target: each tile of target rows is
    multiplied once by the stacked source and target query vectors (approximate methods: one
    index over the target serves both).

    Parameters
    ----------
    source, target : (n, d) arrays of the same samples (row i is sample i in both): numpy, torch
        (one device) or dask (numpy may be mixed with dask).
    k : neighbourhood size.
    queries : optional integer row indices (not a mask) of the samples used as queries; all rows
        are still searched (:func:`sample_queries` draws a seeded sample).
    metric, block_size, method, ann_params, target_recall, random_state : see
        :func:`knn_indices`.
    recall_queries : approximate methods: the number of seeded queries on which recall@k
        against exact search is measured and reported (``recall_queries // 2`` more, disjoint
        from them, tune the search effort when `target_recall` is set).

    Returns
    -------
    ``{"jaccard", "mrr"}``; approximate methods add ``"recall_at_k"`` (mean over the sampled
    queries of both searches) and ``"recall_queries"``.
    """
    return _retrieval(source, target, k, queries, metric, block_size, method, ann_params,
                      target_recall, recall_queries, random_state, True)


def jaccard_at_k(source: Array, target: Array, k: int = 5, **kwargs: Any) -> float:
    """Mean Jaccard similarity of neighbourhoods (see :func:`retrieval_metrics`)."""
    return retrieval_metrics(source, target, k, **kwargs)["jaccard"]


def mrr_at_k(source: Array, target: Array, k: int = 5, *, queries: Array | None = None,
             metric: str = "cosine", block_size: int | None = None, method: str = "exact",
             ann_params: Mapping[str, Any] | None = None, target_recall: float | None = 0.95,
             recall_queries: int = 1000, random_state: Any = 0) -> float:
    """Mean reciprocal rank of each sample among its source vector's top-k targets.

    Only the source-to-target search runs (the target's own neighbourhoods are not needed);
    arguments as in :func:`retrieval_metrics`.
    """
    return _retrieval(source, target, k, queries, metric, block_size, method, ann_params,
                      target_recall, recall_queries, random_state, False)["mrr"]


def mutual_knn_metrics(a: Array, b: Array, k: int = 10, *, metric: str = "cosine",
                       block_size: int | None = None, method: str = "exact",
                       ann_params: Mapping[str, Any] | None = None,
                       target_recall: float | None = 0.95, recall_queries: int = 1000,
                       random_state: Any = 0) -> dict[str, float]:
    """``{"mutual_knn"}`` (see :func:`mutual_knn`); approximate methods add ``"recall_at_k"``
    (over both spaces' sampled queries) and ``"recall_queries"``."""
    metric, method, block_size = _check_options(metric, method, block_size)
    x, y, kind = _pair_inputs(a, b, ("a", "b"), False)
    n = int(x.shape[0])
    k = _check_k(k, n - 1, "other rows: a sample is not its own neighbour")
    self_idx = np.arange(n)
    if method != "exact":
        target_recall, recall_queries, params = _check_ann_options(target_recall,
                                                                   recall_queries, ann_params)
        found, recalls, n_rec = [], [], 0
        for arr, name in ((x, "a"), (y, "b")):
            (rows,) = _rows_for([arr], [name])
            res, rec, n_rec = _ann_run({"q": _QuerySet(rows, None, self_idx)}, rows, k, metric,
                                       method, params, target_recall, recall_queries,
                                       random_state, block_size)
            found.append(res["q"])
            recalls.append(rec)
        return {"mutual_knn": int(_overlap(*found).sum()) / (n * k),
                "recall_at_k": float(np.mean(recalls)), "recall_queries": n_rec}
    if kind == "dask":
        return {"mutual_knn": _dask_mutual(x, y, k, metric, block_size)}
    outs = []
    with torch.no_grad():
        for rows in _rows_for([x, y], ["a", "b"]):
            plan = plan_blocks(n, n, rows.d, k, itemsize=rows.dtype.itemsize, device=rows.device,
                               query_block=block_size)
            outs.append(_knn_local(rows, _Base(rows, metric), k, metric, plan, self_idx))
    return {"mutual_knn": int(_overlap(*outs).sum()) / (n * k)}


def mutual_knn(a: Array, b: Array, k: int = 10, *, metric: str = "cosine",
               block_size: int | None = None, **kwargs: Any) -> float:
    """Mean fraction of each sample's k nearest neighbours (itself excluded) shared by a and b.

    `a` and `b` describe the same samples row by row and may have different widths. Other
    keyword arguments as in :func:`mutual_knn_metrics` (``method``, ``ann_params``, ...), which
    also returns the recall of an approximate method.
    """
    return mutual_knn_metrics(a, b, k, metric=metric, block_size=block_size,
                              **kwargs)["mutual_knn"]


def measure_recall(queries: Array, base: Array, k: int, indices: Any, *,
                   metric: str = "cosine", exclude: Array | None = None,
                   sample: int = 1000, random_state: Any = 0) -> dict[str, float]:
    """Recall@k of `indices` (e.g. an approximate search's result) against exact search.

    Exact neighbours are computed for a seeded sample of `sample` queries (all if fewer).
    Returns ``{"recall_at_k", "recall_queries"}``.
    """
    metric = check_choice(metric, "metric", METRICS)
    sample = check_int(sample, "sample", min_value=1)
    (q, b), _ = _check_inputs({"queries": queries, "base": base})
    n_q = int(q.shape[0])
    ex = _check_exclude(exclude, n_q, int(b.shape[0]))
    k = _check_k(k, int(b.shape[0]) - (ex is not None), "base rows that a query may return")
    idx = indices.compute() if is_dask(indices) else (
        indices.detach().cpu().numpy() if is_torch(indices) else np.asarray(indices))
    if idx.ndim != 2 or idx.shape[0] != n_q or idx.shape[1] < k or idx.dtype.kind not in "iu":
        raise ShapeError(f"indices must be integer indices of shape ({n_q}, >= {k}), got shape "
                         f"{idx.shape} of dtype {idx.dtype}")
    pos = sample_queries(n_q, sample, random_state)
    sel = torch.as_tensor(pos, device=q.device) if is_torch(q) else pos
    exact = knn_indices(q[sel], b, k, metric=metric, exclude=None if ex is None else ex[pos])
    exact = exact.compute() if is_dask(exact) else exact
    return {"recall_at_k": float(_recall(idx[pos, :k], exact).mean()),
            "recall_queries": int(pos.size)}
