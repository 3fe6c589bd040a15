"""Choosing anchors across spaces, and sweeping anchor counts and choices.

:func:`best_aligned_anchors` picks, among candidate samples that exist in every space (parallel
rows), the anchors whose relative coordinate agrees most across the spaces. A head stitched from
space B onto space A reads anchor j's column of A's relative space as if it were B's, after
per-feature standardisation; it works when, over the data, ``sim_A(x, a_j)`` and
``sim_B(x, a_j)`` rise and fall together. The score of candidate j is the Pearson correlation of
those two columns over a reference sample, averaged over pairs of spaces. Selection is greedy:
each step takes the candidate with the best score minus a redundancy penalty (its largest
correlation with an already chosen anchor's column), so the anchors are aligned and diverse.

:func:`anchor_count_sweep` compares anchor choices (uniform, k-means, farthest point,
best-aligned) over anchor counts with zero-shot relative stitching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from relreps._backend import Array, to_numpy
from relreps.anchors import sample_anchors
from relreps.errors import AnchorError, RelrepsError
from relreps.projection import relative_projection
from relreps.validation import check_array

__all__ = ["best_aligned_anchors", "anchor_alignment_scores", "select_anchors",
           "anchor_count_sweep", "SELECTION_METHODS"]

SELECTION_METHODS = ("uniform", "kmeans", "farthest_point", "best_aligned")


def _zcols(r: np.ndarray) -> np.ndarray:
    r = r - r.mean(0, keepdims=True)
    sd = r.std(0, keepdims=True)
    return r / np.where(sd > 0, sd, 1.0)


def _column_profiles(spaces: Sequence[np.ndarray], pool: np.ndarray, reference: np.ndarray,
                     similarity: str, center: str | None) -> list[np.ndarray]:
    """Per space: z-scored columns (|reference|, |pool|) of sim(reference sample, candidate)."""
    out = []
    for x in spaces:
        cand = np.asarray(x[pool], dtype=np.float64)
        ctr = cand.mean(0) if center == "anchors" else None  # the pool mean stands in for the
        out.append(_zcols(relative_projection(np.asarray(x[reference], dtype=np.float64), cand,
                                              similarity=similarity, center=ctr)))  # anchors'
    return out


def anchor_alignment_scores(spaces: Sequence[Array], candidates: Array | None = None, *,
                            n_reference: int = 512, similarity: str = "cosine",
                            center: str | None = "anchors", random_state: Any = None
                            ) -> np.ndarray:
    """Cross-space agreement of each candidate anchor's relative column (mean Pearson over pairs).

    `spaces` are parallel embeddings (row i is the same sample in each); `candidates` are row
    indices (default all rows). Returns one score in [-1, 1] per candidate.
    """
    xs, pool, ref = _setup(spaces, candidates, n_reference, random_state)
    prof = _column_profiles(xs, pool, ref, similarity, center)
    return _pair_scores(prof)


def _pair_scores(prof: list[np.ndarray]) -> np.ndarray:
    pairs = [(i, j) for i in range(len(prof)) for j in range(i + 1, len(prof))]
    return np.mean([(prof[i] * prof[j]).mean(0) for i, j in pairs], axis=0)


def _setup(spaces: Sequence[Array], candidates: Array | None, n_reference: int,
           random_state: Any) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    if len(spaces) < 2:
        raise AnchorError("best-aligned selection needs at least two parallel spaces")
    xs = [np.asarray(to_numpy(check_array(x, f"spaces[{i}]"))) for i, x in enumerate(spaces)]
    n = len(xs[0])
    if any(len(x) != n for x in xs):
        raise AnchorError(f"spaces must be parallel (same rows): sizes {[len(x) for x in xs]}")
    pool = np.arange(n) if candidates is None else np.asarray(candidates, dtype=np.int64).ravel()
    if pool.size == 0 or pool.min() < 0 or pool.max() >= n:
        raise AnchorError(f"candidate indices must be rows 0..{n - 1}")
    if len(np.unique(pool)) != len(pool):
        raise AnchorError("candidate indices repeat")
    rng = np.random.default_rng(random_state)
    ref = np.sort(rng.choice(n, size=min(n_reference, n), replace=False))
    if len(ref) < 3:
        raise AnchorError("need at least 3 reference samples to correlate anchor columns")
    return xs, pool, ref


def best_aligned_anchors(spaces: Sequence[Array], n: int, *, candidates: Array | None = None,
                         n_reference: int = 512, similarity: str = "cosine",
                         center: str | None = "anchors", redundancy: float = 1.0,
                         random_state: Any = None) -> np.ndarray:
    """Greedily choose `n` parallel anchors whose relative columns agree most across `spaces`.

    Parameters
    ----------
    spaces : two or more parallel embeddings (row i is the same sample in each).
    n : number of anchors.
    candidates : rows eligible as anchors (default: all rows).
    n_reference : samples over which columns are correlated (drawn at random).
    similarity, center : the relative projection the anchors will be used with.
    redundancy : weight of the penalty for a candidate's largest |correlation| with the chosen
        anchors' columns (0: pick the n best-aligned candidates regardless of diversity).

    Returns
    -------
    (n,) row indices, in the order chosen (best first).
    """
    xs, pool, ref = _setup(spaces, candidates, n_reference, random_state)
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= len(pool):
        raise AnchorError(f"n must be between 1 and the {len(pool)} candidates, got {n!r}")
    prof = _column_profiles(xs, pool, ref, similarity, center)
    score = _pair_scores(prof)
    # one profile per candidate for redundancy: the spaces' columns averaged, re-normalised
    joint = _zcols(np.mean(prof, axis=0))
    m = len(ref)
    chosen: list[int] = []
    max_red = np.zeros(len(pool))
    avail = np.ones(len(pool), dtype=bool)
    for _ in range(n):
        gain = np.where(avail, score - redundancy * max_red, -np.inf)
        j = int(np.argmax(gain))
        chosen.append(j)
        avail[j] = False
        if redundancy:
            max_red = np.maximum(max_red, np.abs(joint.T @ joint[:, j]) / m)
    return pool[np.asarray(chosen)]


def select_anchors(spaces: Mapping[str, Array] | Sequence[Array], n: int, method: str, *,
                   reference: str | int = 0, y: Any = None, random_state: Any = None,
                   **kwargs: Any) -> np.ndarray:
    """Row indices of `n` parallel anchors chosen by `method` (see :data:`SELECTION_METHODS`).

    Single-space samplers (uniform, stratified, kmeans, farthest_point) run on the `reference`
    space; "best_aligned" uses all spaces.
    """
    xs = list(spaces.values()) if isinstance(spaces, Mapping) else list(spaces)
    if method == "best_aligned":
        return best_aligned_anchors(xs, n, random_state=random_state, **kwargs)
    if isinstance(spaces, Mapping) and isinstance(reference, str):
        ref = spaces[reference]
    else:
        ref = xs[int(reference)]
    return sample_anchors(ref, n, method=method, y=y, random_state=random_state, **kwargs)


def anchor_count_sweep(spaces: Mapping[str, tuple[Array, Array]], y_train: Array, y_test: Array,
                       counts: Sequence[int], *, methods: Sequence[str] = SELECTION_METHODS,
                       seeds: Sequence[int] = (0, 1, 2), similarity: str = "cosine",
                       center: str | None = "anchors",
                       head: str | Callable[[int], Any] = "logreg",
                       metric: str = "accuracy") -> list[dict[str, Any]]:
    """Stitched score of relative stitching for each anchor choice, anchor count and seed.

    Anchors are chosen among the (parallel) train rows; single-space samplers run on the first
    space. Returns rows {method, n_anchors, seed, stitched, non_stitched, select_time_s}: the mean
    `metric` over ordered pairs of different spaces, and over each space on itself.
    """
    from relreps.stitching import stitching_matrix

    for m in methods:
        if m not in SELECTION_METHODS:
            raise RelrepsError(f"unknown anchor selection {m!r}; choose from {SELECTION_METHODS}")
    train = {s: np.asarray(tr) for s, (tr, _) in spaces.items()}
    rows = []
    for count in counts:
        for method in methods:
            for seed in seeds:
                t0 = time.perf_counter()
                idx = select_anchors(train, int(count), method, random_state=seed)
                dt = time.perf_counter() - t0
                res = stitching_matrix(spaces, y_train, y_test, anchors=idx,
                                       similarity=similarity, center=center, head=head,
                                       seeds=(seed,), metrics=(metric,))
                st = [r[metric] for r in res.rows if r["stitched"]]
                ns = [r[metric] for r in res.rows if not r["stitched"]]
                rows.append({"method": method, "n_anchors": int(count), "seed": seed,
                             "stitched": float(np.mean(st)), "non_stitched": float(np.mean(ns)),
                             "select_time_s": dt})
    return rows
