"""Compiled loops of the exact nearest-neighbour search on CPU.

The running top-K of :class:`relreps.neighbors._Products` visits, per query row, the few
sub-tiles of a tile of matrix products that can hold a new entrant. In torch that is a dozen
array operations per tile (gathers, comparisons, index lists), which cost 20-30 % of the matrix
product at N = 10,000 items; one compiled loop does the same in a few percent.

The loops are compiled by numba at first use, in memory: nothing compiled is read from or written
to disk. Without numba (or with ``RELREPS_NO_KERNELS=1``), the search runs the torch operations
instead, with the same results.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.Lock()
_compiled: dict[str, Any] = {}


def _build() -> Any:
    import numba

    @numba.njit(nogil=True, boundscheck=False)
    def products_push(tile: Any, maxima: Any, width: int, start: int, sub: int,
                      vals: Any, idx: Any, low: Any) -> None:  # pragma: no cover (compiled)
        rows, K, nsub = tile.shape[0], vals.shape[1], maxima.shape[1]
        for r in range(rows):
            t = max(vals[r, K - 1], low[r])
            for s in range(nsub):
                if maxima[r, s] > t:
                    stop = min((s + 1) * sub, width)
                    for j in range(s * sub, stop):
                        v = tile[r, j]
                        if v > t:
                            p = K - 1
                            while p > 0 and vals[r, p - 1] < v:
                                vals[r, p] = vals[r, p - 1]
                                idx[r, p] = idx[r, p - 1]
                                p -= 1
                            vals[r, p] = v
                            idx[r, p] = start + j
                            t = max(vals[r, K - 1], low[r])

    return products_push


def products_push() -> Any | None:
    """The compiled running top-K update, or None where numba is missing or disabled.

    ``products_push(tile, maxima, width, start, sub, vals, idx, low)`` folds the products of
    items [start, start + width) (tile columns [0, width)) into each row's descending top-K
    (`vals`, `idx`, updated in place). A product enters when it exceeds both the row's K-th
    kept product and `low` (a value below which no product can be in the row's top K); only
    sub-tiles (`sub` columns each) whose maximum in `maxima` exceeds that are read. Ties with
    the K-th product do not enter.
    """
    if os.environ.get("RELREPS_NO_KERNELS", "") not in ("", "0"):
        return None
    with _lock:
        if "push" not in _compiled:
            try:
                _compiled["push"] = _build()
            except ImportError:
                _compiled["push"] = None
        return _compiled["push"]
