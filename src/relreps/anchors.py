"""Anchors: which samples serve as anchors, how to choose them, and whether they are any good."""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relreps._backend import Array, to_numpy
from relreps.errors import AnchorError, RelrepsError
from relreps.validation import check_array

__all__ = ["SAMPLERS", "sample_anchors", "parallel_anchors", "AnchorSet", "diagnose",
           "AnchorDiagnostics", "AnchorWarning", "uniform", "stratified", "kmeans",
           "farthest_point"]


class AnchorWarning(UserWarning):
    """The anchors cannot represent the latent space well."""


def _rng(random_state: Any) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else \
        np.random.default_rng(random_state)


def _check_count(n: int, n_samples: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise AnchorError(f"number of anchors must be a positive integer, got {n!r}")
    if n > n_samples:
        raise AnchorError(f"asked for {n} anchors but only {n_samples} samples are available")


def uniform(x: Array, n: int, *, random_state: Any = None, **_: Any) -> np.ndarray:
    """`n` distinct rows drawn uniformly at random."""
    _check_count(n, len(x))
    return _rng(random_state).choice(len(x), size=n, replace=False)


def stratified(x: Array, n: int, *, y: Any = None, random_state: Any = None, **_: Any
               ) -> np.ndarray:
    """Class-balanced anchors: one random sample of each class in turn (round robin)."""
    if y is None:
        raise AnchorError("stratified anchor sampling needs the labels y")
    y = to_numpy(y).ravel()
    if len(y) != len(x):
        raise RelrepsError(f"y has {len(y)} labels but x has {len(x)} rows")
    _check_count(n, len(x))
    rng = _rng(random_state)
    classes = np.unique(y)
    if n < len(classes):
        raise AnchorError(f"stratified sampling needs at least one anchor per class: asked for "
                          f"{n} anchors but there are {len(classes)} classes")
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in rng.permutation(classes)]
    out: list[int] = []
    while len(out) < n:
        for pool in pools:
            if pool and len(out) < n:
                out.append(int(pool.pop()))
    return np.asarray(out)


def kmeans(x: Array, n: int, *, random_state: Any = None, **_: Any) -> np.ndarray:
    """Real samples nearest to the `n` k-means centroids (each sample used at most once)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    _check_count(n, len(x))
    xn = np.asarray(to_numpy(x), dtype=np.float64)
    seed = int(_rng(random_state).integers(2**31 - 1))
    if len(xn) > 20_000:
        km = MiniBatchKMeans(n_clusters=n, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=n, random_state=seed, n_init=1)
    km.fit(xn)
    centers = km.cluster_centers_
    d2 = ((xn**2).sum(1)[:, None] - 2 * xn @ centers.T + (centers**2).sum(1)[None, :])
    chosen: list[int] = []
    used = np.zeros(len(xn), dtype=bool)
    for c in range(n):
        order = np.argsort(d2[:, c], kind="stable")
        pick = next(int(i) for i in order if not used[i])
        used[pick] = True
        chosen.append(pick)
    return np.asarray(chosen)


def farthest_point(x: Array, n: int, *, random_state: Any = None, metric: str = "euclidean",
                   **_: Any) -> np.ndarray:
    """Greedy farthest-point sampling: each new anchor maximises its distance to the chosen ones.

    `metric` is ``"euclidean"`` or ``"cosine"`` (distance 1 - cosine). The first anchor is random.
    """
    _check_count(n, len(x))
    xn = np.asarray(to_numpy(x), dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(xn, axis=1, keepdims=True)
        xn = xn / np.where(norms == 0, 1, norms)
    elif metric != "euclidean":
        raise RelrepsError(f"farthest_point metric must be 'euclidean' or 'cosine', got {metric!r}")
    sq = (xn**2).sum(1)
    first = int(_rng(random_state).integers(len(xn)))
    chosen = [first]
    mind = sq - 2 * xn @ xn[first] + sq[first]
    for _ in range(1, n):
        mind[chosen[-1]] = -np.inf
        nxt = int(np.argmax(mind))
        chosen.append(nxt)
        mind = np.minimum(mind, sq - 2 * xn @ xn[nxt] + sq[nxt])
    return np.asarray(chosen)


SAMPLERS = {"uniform": uniform, "stratified": stratified, "kmeans": kmeans,
            "farthest_point": farthest_point}


def sample_anchors(x: Array, n: int, method: str = "uniform", *, y: Any = None,
                   random_state: Any = None, **kwargs: Any) -> np.ndarray:
    """Indices of `n` rows of `x` chosen as anchors by `method` (see `SAMPLERS`)."""
    if method not in SAMPLERS:
        raise RelrepsError(f"unknown anchor sampler {method!r}; available: {', '.join(SAMPLERS)}")
    x = check_array(x, "x")
    return SAMPLERS[method](x, n, y=y, random_state=random_state, **kwargs)


def parallel_anchors(keys_a: Sequence[Hashable], keys_b: Sequence[Hashable], n: int, *,
                     random_state: Any = None, candidates: Sequence[Hashable] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """`n` anchors that exist in both spaces, matched by key (same word, aligned sentence id...).

    Returns (idx_a, idx_b): row i of space A at idx_a[i] and row i of space B at idx_b[i] are the
    same anchor. `candidates` restricts the pool (e.g. the most frequent words).
    """
    pos_a = _key_positions(keys_a, "keys_a")
    pos_b = _key_positions(keys_b, "keys_b")
    pool = list(dict.fromkeys(k for k in (candidates if candidates is not None else keys_a)
                              if k in pos_a and k in pos_b))  # a repeated candidate counts once
    if len(pool) < n:
        raise AnchorError(f"only {len(pool)} keys are shared by both spaces; cannot pick {n} "
                          "parallel anchors")
    _check_count(n, len(pool))
    pick = _rng(random_state).choice(len(pool), size=n, replace=False)
    chosen = [pool[i] for i in pick]
    return (np.asarray([pos_a[k] for k in chosen]), np.asarray([pos_b[k] for k in chosen]))


def _key_positions(keys: Sequence[Hashable], name: str) -> dict[Hashable, int]:
    pos: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k in pos:
            raise AnchorError(f"{name} has the duplicate key {k!r}: keys must identify samples")
        pos[k] = i
    return pos


@dataclass
class AnchorSet:
    """Which samples are anchors in each space, and their correspondence.

    ``indices[space][i]`` is the row, in that space's data, of anchor ``i``; row ``i`` of every
    space is the same anchor (same sample, same word, or a translation). ``keys`` optionally names
    the anchors. Saved as plain JSON.
    """

    indices: dict[str, np.ndarray]
    keys: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = {s: np.asarray(v, dtype=np.int64).ravel() for s, v in self.indices.items()}
        self.validate()

    def __len__(self) -> int:
        return len(next(iter(self.indices.values()))) if self.indices else 0

    @property
    def spaces(self) -> list[str]:
        return list(self.indices)

    def validate(self) -> None:
        if not self.indices:
            raise AnchorError("an AnchorSet needs at least one space")
        sizes = {s: len(v) for s, v in self.indices.items()}
        if len(set(sizes.values())) != 1:
            raise AnchorError(f"anchor sets do not correspond across spaces: sizes {sizes}")
        if self.keys is not None and len(self.keys) != len(self):
            raise AnchorError(f"{len(self.keys)} keys for {len(self)} anchors")
        for s, v in self.indices.items():
            if len(np.unique(v)) != len(v):
                raise AnchorError(f"space {s!r} uses the same sample twice as an anchor")

    @classmethod
    def from_indices(cls, indices: Array, spaces: Sequence[str] = ("default",),
                     keys: Sequence[Any] | None = None) -> AnchorSet:
        """The same rows are the anchors in every space (spaces share their samples)."""
        idx = np.asarray(indices)
        return cls({s: idx for s in spaces}, keys=None if keys is None else
                   [str(keys[i]) for i in idx])

    @classmethod
    def from_keys(cls, keys: Mapping[str, Sequence[Hashable]], n: int, *,
                  random_state: Any = None, candidates: Sequence[Hashable] | None = None
                  ) -> AnchorSet:
        """`n` anchors whose keys exist in every space (parallel anchors across many spaces)."""
        names = list(keys)
        pos = {s: _key_positions(keys[s], f"keys[{s!r}]") for s in names}
        pool = list(dict.fromkeys(k for k in (candidates if candidates is not None
                                              else keys[names[0]])
                                  if all(k in pos[s] for s in names)))
        if len(pool) < n:
            raise AnchorError(f"only {len(pool)} keys are shared by all spaces; cannot pick {n}")
        _check_count(n, len(pool))
        chosen = [pool[i] for i in _rng(random_state).choice(len(pool), size=n, replace=False)]
        return cls({s: [pos[s][k] for k in chosen] for s in names}, keys=[str(k) for k in chosen])

    def embeddings(self, space: str, x: Array) -> Array:
        """The anchor rows of `x`, the data of `space`."""
        if space not in self.indices:
            raise AnchorError(f"no anchors for space {space!r}; known: {self.spaces}")
        idx = self.indices[space]
        if len(idx) and idx.max() >= len(x):
            raise AnchorError(f"anchor index {idx.max()} out of range for space {space!r} "
                              f"with {len(x)} rows")
        return x[idx]

    def save(self, path: str | Path) -> None:
        data = {"indices": {s: v.tolist() for s, v in self.indices.items()},
                "keys": self.keys, "meta": self.meta}
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> AnchorSet:
        data = json.loads(Path(path).read_text())
        return cls(data["indices"], keys=data.get("keys"), meta=data.get("meta", {}))


@dataclass
class AnchorDiagnostics:
    """How well a set of anchor embeddings spans its latent space."""

    n_anchors: int
    dim: int
    rank: int
    condition_number: float
    effective_dim: float  # participation ratio of the squared singular values
    n_near_duplicates: int  # anchor pairs with cosine above the threshold
    singular_values: np.ndarray
    warnings: list[str]

    def __str__(self) -> str:
        lines = [f"{self.n_anchors} anchors in {self.dim}-d: rank {self.rank}, condition number "
                 f"{self.condition_number:.3g}, effective dim {self.effective_dim:.1f}, "
                 f"{self.n_near_duplicates} near-duplicate pair(s)"]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def diagnose(anchor_embeddings: Array, *, center: bool = False, duplicate_cosine: float = 0.999,
             max_condition: float = 1e6, warn: bool = False) -> AnchorDiagnostics:
    """Numerical rank, conditioning, effective dimensionality and near-duplicates of the anchors.

    Warns (in `.warnings`, and as `AnchorWarning` when `warn=True`) when the anchors cannot span
    the latent space: fewer anchors than dimensions, rank deficiency (nearly collinear anchors
    collapse the relative space), ill conditioning or duplicated anchors.
    """
    a = np.asarray(to_numpy(check_array(anchor_embeddings, "anchor_embeddings")), dtype=np.float64)
    k, d = a.shape
    if k < 1:
        raise AnchorError("no anchors to diagnose")
    if center:
        a = a - a.mean(0, keepdims=True)
    s = np.linalg.svd(a, compute_uv=False)
    tol = s.max(initial=0.0) * max(k, d) * np.finfo(np.float64).eps
    rank = int((s > tol).sum())
    cond = float(s[0] / s[rank - 1]) if rank else float("inf")
    if rank < min(k, d):
        cond = float("inf")
    p = s**2
    eff = float(p.sum() ** 2 / (p**2).sum()) if p.sum() > 0 else 0.0
    norms = np.linalg.norm(a, axis=1)
    u = a / np.where(norms == 0, 1, norms)[:, None]
    cos = u @ u.T
    n_dup = int((cos[np.triu_indices(k, 1)] > duplicate_cosine).sum())
    msgs = []
    if k < d:
        msgs.append(f"fewer anchors ({k}) than latent dimensions ({d}): the relative space "
                    f"cannot tell apart directions outside the {rank}-d anchor span")
    if rank < min(k, d):
        msgs.append(f"anchors are rank deficient (rank {rank} < {min(k, d)}): nearly collinear "
                    "anchors collapse the relative space")
    elif cond > max_condition:
        msgs.append(f"anchors are ill conditioned (condition number {cond:.3g})")
    if n_dup:
        msgs.append(f"{n_dup} pair(s) of anchors are near duplicates (cosine > {duplicate_cosine})")
    if warn:
        for m in msgs:
            warnings.warn(m, AnchorWarning, stacklevel=2)
    return AnchorDiagnostics(k, d, rank, cond, eff, n_dup, s, msgs)
