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
from relreps.anchors import SAMPLERS, sample_anchors
from relreps.errors import AnchorError, InputTypeError, OptionError
from relreps.projection import relative_projection
from relreps.validation import (
    check_array,
    check_choice,
    check_float,
    check_indices,
    check_int,
    check_labels,
    check_random_state,
    check_same_rows,
)

__all__ = ["best_aligned_anchors", "anchor_alignment_scores", "select_anchors",
           "anchor_count_sweep", "SELECTION_METHODS"]

SELECTION_METHODS = ("uniform", "kmeans", "farthest_point", "best_aligned")


def _zcols(r: np.ndarray) -> np.ndarray:
    r = r - r.mean(0, keepdims=True)
    sd = r.std(0, keepdims=True)
    return r / np.where(sd > 0, sd, 1.0)


def _column_profiles(spaces: Sequence[np.ndarray], pool: np.ndarray, reference: np.ndarray,
                     similarity: str, center: str | None) -> list[np.ndarray]:
    """Per space: z-scored columns (|reference|, |pool|) of sim(reference sample, candidate).

    ``center="auto"`` is decided jointly for all spaces from the candidates' anisotropy.
    """
    if center == "auto":
        from relreps.centering import resolve_center

        center = resolve_center("auto", {str(i): np.asarray(x[pool], dtype=np.float64)
                                         for i, x in enumerate(spaces)}).center
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
    _check_projection(similarity, center)
    xs, pool, ref = _setup(spaces, candidates, n_reference, random_state)
    prof = _column_profiles(xs, pool, ref, similarity, center)
    return _pair_scores(prof)


def _pair_scores(prof: list[np.ndarray]) -> np.ndarray:
    pairs = [(i, j) for i in range(len(prof)) for j in range(i + 1, len(prof))]
    return np.mean([(prof[i] * prof[j]).mean(0) for i, j in pairs], axis=0)


def _space_list(spaces: Any) -> list[Any]:
    if isinstance(spaces, Mapping):
        return list(spaces.values())
    if isinstance(spaces, (str, bytes)) or not isinstance(spaces, Sequence):
        raise InputTypeError("spaces must be a sequence (or a mapping name -> array) of "
                             f"parallel embeddings, got {type(spaces).__name__}")
    return list(spaces)


def _check_projection(similarity: Any, center: Any) -> None:
    from relreps import similarity as _sim

    _sim.get(similarity)
    check_choice(center, "center", (None, "anchors", "auto"))


def _setup(spaces: Sequence[Array], candidates: Array | None, n_reference: int,
           random_state: Any) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    spaces = _space_list(spaces)
    if len(spaces) < 2:
        raise AnchorError("best-aligned selection needs at least two parallel spaces")
    n_reference = check_int(n_reference, "n_reference", min_value=3)
    rng = check_random_state(random_state)
    xs = [np.asarray(to_numpy(check_array(x, f"spaces[{i}]", min_rows=3)))
          for i, x in enumerate(spaces)]
    n = check_same_rows({f"spaces[{i}]": x for i, x in enumerate(xs)})
    pool = np.arange(n) if candidates is None else check_indices(candidates, "candidates", n=n,
                                                                 unique=True)
    ref = np.sort(rng.choice(n, size=min(n_reference, n), replace=False))
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
    similarity, center : the relative projection the anchors will be used with (center None,
        "anchors" or "auto": decided jointly from the candidates' anisotropy).
    redundancy : weight of the penalty for a candidate's largest |correlation| with the chosen
        anchors' columns (0: pick the n best-aligned candidates regardless of diversity).

    Returns
    -------
    (n,) row indices, in the order chosen (best first).
    """
    _check_projection(similarity, center)
    redundancy = check_float(redundancy, "redundancy", min_value=0.0)
    n = check_int(n, "n")
    xs, pool, ref = _setup(spaces, candidates, n_reference, random_state)
    if not 1 <= n <= len(pool):
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
    method = check_choice(method, "method", (*SELECTION_METHODS, *(m for m in SAMPLERS
                                                                  if m not in SELECTION_METHODS)))
    xs = _space_list(spaces)
    if not xs:
        raise AnchorError("no spaces given")
    if method == "best_aligned":
        return best_aligned_anchors(xs, n, random_state=random_state, **kwargs)
    if isinstance(reference, str):
        if not isinstance(spaces, Mapping) or reference not in spaces:
            known = list(spaces) if isinstance(spaces, Mapping) else f"0..{len(xs) - 1}"
            raise OptionError(f"reference space {reference!r} is not among the spaces ({known})")
        ref = spaces[reference]
    else:
        ref = xs[check_int(reference, "reference", min_value=0, max_value=len(xs) - 1)]
    return sample_anchors(ref, n, method=method, y=y, random_state=random_state, **kwargs)


def anchor_count_sweep(spaces: Mapping[str, tuple[Array, Array]], y_train: Array, y_test: Array,
                       counts: Sequence[int], *, methods: Sequence[str] = SELECTION_METHODS,
                       seeds: Sequence[int] = (0, 1, 2), similarity: str = "cosine",
                       center: str | None = "anchors",
                       head: str | Callable[[int], Any] | None = None,
                       metric: str = "accuracy") -> list[dict[str, Any]]:
    """Stitched score of relative stitching for each anchor choice, anchor count and seed.

    Anchors are chosen among the (parallel) train rows; single-space samplers run on the first
    space. `head` is passed to :func:`relreps.stitching.stitching_matrix` (None: its default
    head). Returns rows {method, n_anchors, seed, stitched, non_stitched, select_time_s}: the
    mean `metric` over ordered pairs of different spaces, and over each space on itself.
    """
    from relreps.stitching import stitching_matrix

    if not isinstance(spaces, Mapping) or len(spaces) < 2:
        raise InputTypeError("spaces must be a mapping name -> (train, test) embeddings with at "
                             "least two spaces")
    for name, pair in spaces.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputTypeError(f"spaces[{name!r}] must be a (train, test) pair of arrays")
    counts = _int_list(counts, "counts", 1)
    seeds = _int_list(seeds, "seeds", 0)
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise InputTypeError(f"methods must be a non-empty sequence of names, got {methods!r}")
    for m in methods:
        check_choice(m, "methods[...]", SELECTION_METHODS)
    _check_projection(similarity, center)
    train = {s: np.asarray(to_numpy(check_array(tr, f"spaces[{s!r}][0]")))
             for s, (tr, _) in spaces.items()}
    n_train = check_same_rows(train)
    check_labels(y_train, "y_train", n=n_train)
    extra = {} if head is None else {"head": head}
    rows = []
    for count in counts:
        for method in methods:
            for seed in seeds:
                t0 = time.perf_counter()
                idx = select_anchors(train, int(count), method, random_state=seed)
                dt = time.perf_counter() - t0
                res = stitching_matrix(spaces, y_train, y_test, anchors=idx,
                                       similarity=similarity, center=center,
                                       seeds=(seed,), metrics=(metric,), **extra)
                st = [r[metric] for r in res.rows if r["stitched"]]
                ns = [r[metric] for r in res.rows if not r["stitched"]]
                rows.append({"method": method, "n_anchors": int(count), "seed": seed,
                             "stitched": float(np.mean(st)), "non_stitched": float(np.mean(ns)),
                             "select_time_s": dt})
    return rows


def _int_list(values: Any, name: str, min_value: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)) \
            or len(values) == 0:
        raise InputTypeError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    return [check_int(v, f"{name}[{i}]", min_value=min_value) for i, v in enumerate(values)]
