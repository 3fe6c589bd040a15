"""Comparing latent spaces: how alike are two representations of the same samples?

Neighbourhood agreement lives in :mod:`relreps.neighbors` (exact, dask and approximate
search) and is re-exported here: :func:`knn_indices`, :func:`retrieval_metrics`,
:func:`jaccard_at_k`, :func:`mrr_at_k`, :func:`mutual_knn`, :func:`mutual_knn_metrics`.

Similarity of spaces (this module; definitions, invariances and references in
``docs/metrics.md``):

- :func:`mean_cosine`: mean cosine between corresponding rows (same width).
- :func:`cka`: centred kernel alignment, linear or RBF kernel, biased or debiased HSIC; numpy,
  torch (on its device), ``np.memmap`` (streamed) and dask (blockwise) input for the linear kernel.
- :class:`CKAAccumulator`: linear CKA over minibatches: the exact full-data value from
  feature-space statistics, or the minibatch estimator of Nguyen et al. (2021).
- :func:`svcca`, :func:`pwcca`: canonical correlation analyses (Raghu et al. 2017; Morcos et al.
  2018).
- :func:`procrustes_distance`: orthogonal Procrustes distance (Ding et al. 2021; angular form of
  Williams et al. 2021).
- :func:`rsa`: representational similarity analysis (Kriegeskorte et al. 2008).
- :func:`compare_layers`: CKA between every pair of layers of two torch models over a DataLoader,
  as a :class:`LayerComparison` with a heatmap.

Every function validates its arguments through :mod:`relreps.validation` and raises a named
:mod:`relreps.errors` class. Results are Python floats computed on the input's device; the only
device-to-host transfer is that of the final scalars. Inputs are rescaled by powers of two
(exact) before any product, so values are correct across the whole float32/float64 range,
subnormal to near the dtype's maximum.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from relreps._backend import Array, same_kind, to_dask
from relreps._numerics import host_matmul, pow2_global_scale, pow2_scale, rowwise_dot
from relreps.errors import (
    InputTypeError,
    NonFiniteError,
    NumericalError,
    RelrepsError,
    ShapeError,
)
from relreps.neighbors import (  # noqa: F401 - re-exported: the neighbourhood metrics live there
    jaccard_at_k,
    knn_indices,
    mrr_at_k,
    mutual_knn,
    mutual_knn_metrics,
    retrieval_metrics,
)
from relreps.validation import (
    check_array,
    check_bool,
    check_callable,
    check_choice,
    check_finite_rows,
    check_float,
    check_int,
    check_random_state,
    check_same_device,
    check_same_rows,
    is_dask,
    is_torch,
)

__all__ = ["knn_indices", "retrieval_metrics", "jaccard_at_k", "mrr_at_k", "mutual_knn",
           "mutual_knn_metrics", "mean_cosine", "cka", "CKAAccumulator", "svcca", "pwcca",
           "procrustes_distance", "rsa", "compare_layers", "LayerComparison", "CCAWarning",
           "RSA_MAX_SAMPLES", "RBF_MAX_SAMPLES"]

RBF_MAX_SAMPLES = 10_000  # rbf CKA builds n x n float64 Gram matrices (0.8 GB each at this n)
RSA_MAX_SAMPLES = 4_000   # rsa above this n: a seeded subsample of rows (8M pairs per RDM)
_SHIFT_SAMPLE_ROWS = 2048  # rows (evenly spaced) whose mean is the shift of the linear CKA pass
_BLOCK_ELEMENTS_LINEAR = 1 << 24  # entries of one row block in the linear CKA pass (64 MiB f32)
_EXACT_MAX_ELEMENTS = 1 << 27  # float64 accumulator entries compare_layers may hold (1 GiB)


class CCAWarning(RuntimeWarning):
    """CCA dimensions so large for the number of samples that correlations are trivially 1."""


# --------------------------------------------------------------------------------- inputs

def _refuse_meta(x: Any, name: str) -> None:
    if is_torch(x) and x.is_meta:
        raise InputTypeError(f"{name} is a meta tensor: it has a shape but no values, so no "
                             "metric value can be computed from it")


def _inputs(a: Any, b: Any, *, min_rows: int = 2, same_width: bool = False,
            kinds: Sequence[str] = ("numpy", "torch"), names: tuple[str, str] = ("a", "b")
            ) -> tuple[Any, Any]:
    """Validated pair of representations of the same samples (same kind, device and rows)."""
    x = check_array(a, names[0], min_rows=min_rows, kinds=kinds)
    y = check_array(b, names[1], min_rows=min_rows, kinds=kinds)
    same_kind(x, y, names=names)
    check_same_device({names[0]: x, names[1]: y})
    for arr, name in ((x, names[0]), (y, names[1])):
        if is_dask(arr) and math.isnan(arr.shape[0]):
            raise ShapeError(f"{name} is a dask array with unknown chunk sizes; call "
                             f"{name}.compute_chunk_sizes() first")
    check_same_rows({names[0]: x, names[1]: y})
    if same_width and x.shape[1] != y.shape[1]:
        raise ShapeError(f"{names[0]} has width {x.shape[1]} but {names[1]} has {y.shape[1]}; "
                         "this metric compares corresponding coordinates, so widths must match "
                         "(cka, svcca, pwcca, procrustes_distance and rsa accept any widths)")
    _refuse_meta(x, names[0])
    _refuse_meta(y, names[1])
    return x, y


def _torch(x: Any) -> torch.Tensor:
    """A tensor view of validated input (torch: detached, same device; numpy: zero-copy CPU)."""
    if is_torch(x):
        return x.detach()
    arr = np.ascontiguousarray(x)
    if not arr.flags.writeable:  # read-only memmaps: torch refuses to wrap them without a copy
        arr = arr.copy()
    return torch.from_numpy(arr)


def _common(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _row_blocks(n: int, width: int) -> Iterable[tuple[int, int]]:
    step = max(256, _BLOCK_ELEMENTS_LINEAR // max(width, 1))
    for s in range(0, n, step):
        yield s, min(n, s + step)


def _values(*tensors: torch.Tensor) -> list[float]:
    """The final scalars as Python floats: the one device-to-host transfer of a metric."""
    return torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist()


def _zero_rows(x: Any, name: str, what: str) -> RelrepsError:
    t = _torch(x)
    rows = torch.nonzero(~(t != 0).any(1))[:5].ravel().tolist()
    return RelrepsError(f"{name} has zero vectors (rows {rows}): {what}")


# --------------------------------------------------------------------------------- numerics

def _max_abs(t: torch.Tensor) -> torch.Tensor:
    """max |t| (0-dim; one pass without a temporary, faster than an inf-norm reduction)."""
    lo, hi = torch.aminmax(t)
    return torch.maximum(-lo, hi)


def _safe_mean(t: torch.Tensor) -> torch.Tensor:
    """Column means of `t` in its dtype without overflow (summed after a power-of-two
    rescaling). Used as a shift: any value near the mean serves, so the sum stays in t's dtype."""
    s = pow2_global_scale(_max_abs(t))
    m = (t / s).sum(0).to(torch.float64) / max(t.shape[0], 1)
    return (m * s.double()).to(t.dtype)


def _scaled_centered(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows centred and divided by a power of two s, s). Exact rescaling; entries in (-2, 2)."""
    s = pow2_global_scale(_max_abs(t))
    xt = t / s
    xt -= xt.mean(0, dtype=torch.float64).to(xt.dtype)
    return xt, s


def _unit_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit rows, zero-row mask) for any finite input: each row is first divided by its own
    power of two (exact), so squares neither overflow nor underflow. No host synchronisation
    (unlike :func:`relreps._numerics.unit_rows`, whose fast path checks the norms on the host)."""
    ts = t / pow2_scale(t)
    norms = torch.linalg.vector_norm(ts, dim=1, keepdim=True)
    zero = norms.squeeze(1) == 0
    return ts / torch.where(norms == 0, torch.ones_like(norms), norms), zero


def _center_gram(K: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Double-centred (HKH) or U-centred Gram matrix in float64.

    U-centring (Szekely & Rizzo 2014): with K~ = K with a zero diagonal,
    U_ij = K~_ij - r_i / (n-2) - r_j / (n-2) + sum(K~) / ((n-1)(n-2)) off the diagonal, 0 on it;
    <U(K), U(L)> / (n (n-3)) is the unbiased HSIC estimator of Song et al. (2012).
    Works in place when K is already float64 (callers pass temporaries).
    """
    n = K.shape[0]
    K = K.to(torch.float64)
    if unbiased:
        K.fill_diagonal_(0)
        r = K.sum(0)
        K -= r[:, None] / (n - 2)
        K -= r[None, :] / (n - 2)
        K += r.sum() / ((n - 1) * (n - 2))
        K.fill_diagonal_(0)
    else:
        r = K.mean(0)
        K -= r[:, None]
        K -= r[None, :]
        K += r.mean()
    return K


def _gram_terms(K: torch.Tensor, L: torch.Tensor, debiased: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(HSIC(K, L), HSIC(K, K), HSIC(L, L)) up to a common positive factor."""
    Kc, Lc = _center_gram(K, debiased), _center_gram(L, debiased)
    kc, lc = Kc.reshape(-1), Lc.reshape(-1)  # inner products without n x n temporaries
    return kc @ lc, kc @ kc, lc @ lc


# --------------------------------------------------------------------------------- mean cosine

def mean_cosine(a: Array, b: Array) -> float:
    """Mean cosine similarity between corresponding rows of `a` and `b` (same width).

    Exact across the float range (rows are rescaled by powers of two before the norms);
    memory-mapped input is read in blocks of rows. Zero rows raise :class:`RelrepsError`.
    """
    x, y = _inputs(a, b, min_rows=1, same_width=True)
    total, zeros_a, zeros_b = _mean_cosine_terms(x, y)
    value, za, zb = _values(total, zeros_a, zeros_b)
    for arr, name, count in ((x, "a", za), (y, "b", zb)):
        if count:
            raise _zero_rows(arr, name, "the cosine of a zero vector is undefined")
    return value / x.shape[0]


def _mean_cosine_terms(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    total = zeros_a = zeros_b = None
    for s, e in _row_blocks(x.shape[0], x.shape[1]):
        ua, za = _unit_rows(_torch(x[s:e]))
        ub, zb = _unit_rows(_torch(y[s:e]))
        ua, ub = _common(ua, ub)
        part = (ua * ub).sum(1).clamp(-1, 1).sum(dtype=torch.float64)
        total = part if total is None else total + part
        zeros_a = za.sum() if zeros_a is None else zeros_a + za.sum()
        zeros_b = zb.sum() if zeros_b is None else zeros_b + zb.sum()
    return total, zeros_a, zeros_b


# --------------------------------------------------------------------------------- linear CKA
#
# Linear HSIC from feature-space statistics: with K = X X^T and L = Y Y^T,
#   biased:   HSIC_0 ~ ||Xc^T Yc||_F^2 (Xc, Yc: column-centred),
#   debiased: HSIC_1 ~ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2 (K~ 1).(L~ 1) / (n-2),
# where K~ is K with a zero diagonal. HSIC_1 is invariant to translations of either space, so
# it can be evaluated on shifted rows x_i - c, whose terms are sums over rows:
#   tr(K~ L~)   = ||X^T Y||^2 - sum_i kd_i ld_i          (kd_i = |x_i|^2, ld_i = |y_i|^2)
#   1^T K~ 1    = |sum_i x_i|^2 - sum_i kd_i
#   (K~1).(L~1) = sx^T (X^T Y) sy - sx . sum_i ld_i x_i - sy . sum_i kd_i y_i + sum_i kd_i ld_i.
# Everything is a sum over rows, so blocks of rows, minibatches and dask chunks are accumulated
# exactly and merged. Each block is rescaled by a power of two (x_i - c) / s_block before its
# GEMMs (run in the input's dtype), and the float64 running sums are kept in the units of the
# largest scale seen (a statistic of degree p in x is multiplied by (s_block / S)^p: exact).

_SPACE_POWERS = {"sum": 1, "C": 2, "skd": 2, "skd2": 4, "vkd": 3}
_CROSS_POWERS = {"C": (1, 1), "skdld": (2, 2), "vldx": (1, 2), "vkdy": (2, 1)}


class _ExactLinear:
    """Running feature-space statistics of several representations of the same rows and the
    cross statistics of chosen pairs; gives the exact (full-data) linear HSIC of each pair."""

    def __init__(self, n_spaces: int, pairs: Sequence[tuple[int, int]], debiased: bool,
                 shifts: Sequence[torch.Tensor | None] | None = None) -> None:
        self.debiased = debiased
        self.pairs = [tuple(p) for p in pairs]
        self.n = 0
        self.shifts: list[torch.Tensor | None] = list(shifts) if shifts is not None \
            else [None] * n_spaces
        self.scales: list[torch.Tensor | None] = [None] * n_spaces
        self.space: list[dict[str, torch.Tensor]] = [{} for _ in range(n_spaces)]
        self.cross: dict[tuple[int, int], dict[str, torch.Tensor]] = {p: {} for p in self.pairs}

    # one space's rows, shifted and rescaled (done as soon as a batch arrives: see compare_layers)
    def prepare(self, k: int, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self.shifts[k] is None:
            self.shifts[k] = _safe_mean(x)
        c = self.shifts[k].to(x.dtype)
        s = pow2_global_scale(torch.maximum(_max_abs(x), _max_abs(c)))
        xt = torch.addcdiv(-c / s, x, s)  # (x - c) / s in one pass; neither term can overflow
        kd = torch.linalg.vector_norm(xt, dim=1, dtype=torch.float64).square() \
            if self.debiased else None
        return xt, s.to(torch.float64), kd

    def update(self, xs: Sequence[torch.Tensor]) -> None:
        self.update_prepared([self.prepare(k, x) for k, x in enumerate(xs)])

    def update_prepared(self, prepped: Sequence[tuple[torch.Tensor, torch.Tensor, Any]]) -> None:
        rows = {int(p[0].shape[0]) for p in prepped}
        if len(rows) != 1:
            raise ShapeError(f"one batch holds different row counts per representation: {rows}")
        f_old, f_new = [], []
        for k, (_, s, _) in enumerate(prepped):
            S = self.scales[k] if self.scales[k] is not None else torch.zeros_like(s)
            S_new = torch.maximum(S, s)
            f_old.append(S / S_new)
            f_new.append(s / S_new)
            self.scales[k] = S_new
        for k, (xt, _, kd) in enumerate(prepped):
            # Column sums in the input dtype, like the GEMM's own sums: over one block of rows
            # of (-2, 2) entries the error is far below the cross-product terms they correct.
            batch = {"sum": xt.sum(0).double(), "C": host_matmul(xt.T, xt).double()}
            if self.debiased:
                batch.update(skd=kd.sum(), skd2=kd.square().sum(),
                             vkd=(kd.to(xt.dtype) @ xt).double())
            _merge(self.space[k], batch, {n: (p,) for n, p in _SPACE_POWERS.items()},
                   (f_old[k],), (f_new[k],))
        for i, j in self.pairs:
            if i == j:
                continue
            (xa, _, kda), (xb, _, kdb) = prepped[i], prepped[j]
            xa, xb = _common(xa, xb.to(xa.device))
            batch = {"C": host_matmul(xa.T, xb).double()}
            if self.debiased:
                kdb = kdb.to(xa.device)
                batch.update(skdld=(kda * kdb).sum(), vldx=(kdb.to(xa.dtype) @ xa).double(),
                             vkdy=(kda.to(xa.dtype) @ xb).double())
            _merge(self.cross[(i, j)], batch, _CROSS_POWERS, (f_old[i], f_old[j]),
                   (f_new[i], f_new[j].to(f_old[i].device)))
        self.n += rows.pop()

    def merged(self, other: _ExactLinear) -> _ExactLinear:
        """A new accumulator of both one's rows (same spaces, pairs and shifts); neither input
        changes (a dask task that is retried sees its inputs intact)."""
        if other.n == 0 or self.n == 0:
            return self if other.n == 0 else other
        out = _ExactLinear(len(self.space), self.pairs, self.debiased, self.shifts)
        out.n = self.n + other.n
        out.space = [dict(d) for d in self.space]
        out.cross = {p: dict(d) for p, d in self.cross.items()}
        f_old, f_new = [], []
        for k in range(len(self.scales)):
            S_new = torch.maximum(self.scales[k], other.scales[k])
            f_old.append(self.scales[k] / S_new)
            f_new.append(other.scales[k] / S_new)
            out.scales[k] = S_new
        for k in range(len(out.space)):
            _merge(out.space[k], other.space[k], {n: (p,) for n, p in _SPACE_POWERS.items()},
                   (f_old[k],), (f_new[k],))
        for i, j in out.pairs:
            if i != j:
                _merge(out.cross[(i, j)], other.cross[(i, j)], _CROSS_POWERS,
                       (f_old[i], f_old[j]), (f_new[i], f_new[j]))
        return out

    def _cross_stats(self, i: int, j: int) -> dict[str, torch.Tensor]:
        if i != j:
            return self.cross[(i, j)]
        sp = self.space[i]
        out = {"C": sp["C"]}
        if self.debiased:
            out.update(skdld=sp["skd2"], vldx=sp["vkd"], vkdy=sp["vkd"])
        return out

    def hsic(self, i: int, j: int) -> torch.Tensor:
        """HSIC of spaces i and j up to a positive factor common to all pairs (float64)."""
        n, si, sj = self.n, self.space[i], self.space[j]
        cr = self._cross_stats(i, j)
        sx, sy = si["sum"], sj["sum"].to(si["sum"].device)
        if not self.debiased:
            return torch.linalg.vector_norm(cr["C"] - torch.outer(sx, sy) / n).square()
        tr = torch.linalg.vector_norm(cr["C"]).square() - cr["skdld"]
        sk = sx @ sx - si["skd"]
        sl = sy @ sy - sj["skd"].to(sk.device)
        k1l1 = sx @ cr["C"] @ sy - sx @ cr["vldx"] - sy @ cr["vkdy"] + cr["skdld"]
        return tr + sk * sl / ((n - 1) * (n - 2)) - 2 * k1l1 / (n - 2)


def _merge(acc: dict[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
           powers: Mapping[str, tuple[int, ...]], f_old: Sequence[torch.Tensor],
           f_new: Sequence[torch.Tensor]) -> None:
    """acc = acc * prod(f_old^p) + batch * prod(f_new^p), statistic by statistic (exact up to
    underflow of terms negligible against the largest scale)."""
    # the common case (the scale did not grow) skips the rescaling; meta tensors have no values
    unit_new = all(not f.is_meta and bool(f == 1) for f in f_new)
    unit_old = all(not f.is_meta and bool(f == 1) for f in f_old)
    for name, value in batch.items():
        p = powers[name]
        new = value if unit_new else value * math.prod(f ** q for f, q in zip(f_new, p))
        if name not in acc:
            acc[name] = new
        elif unit_old:
            acc[name] = acc[name] + new
        else:
            acc[name] = acc[name] * math.prod(f ** q for f, q in zip(f_old, p)) + new


def _use_gram(n: int, d1: int, d2: int) -> bool:
    """The n x n Gram route costs n^2 (d1 + d2) flops, the feature route n (d1 d2 + d1^2 +
    d2^2): take the cheaper one (the Gram one only for fewer samples than features)."""
    return n * (d1 + d2) < d1 * d1 + d1 * d2 + d2 * d2


def _linear_terms(x: Any, y: Any, debiased: bool, route: str = "auto"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(HSIC(x, y), HSIC(x, x), HSIC(y, y)) up to a common factor, for in-memory x and y."""
    n, d1, d2 = x.shape[0], x.shape[1], y.shape[1]
    if route == "gram" or (route == "auto" and _use_gram(n, d1, d2)):
        xt, _ = _scaled_centered(_torch(x))
        yt, _ = _scaled_centered(_torch(y))
        return _gram_terms(xt @ xt.T, yt @ yt.T, debiased)
    step = max(1, n // _SHIFT_SAMPLE_ROWS)
    shifts = [_safe_mean(_torch(x[::step][:_SHIFT_SAMPLE_ROWS])),
              _safe_mean(_torch(y[::step][:_SHIFT_SAMPLE_ROWS]))]
    acc = _ExactLinear(2, [(0, 1)], debiased, shifts)
    for s, e in _row_blocks(n, max(d1, d2)):
        acc.update(_common(_torch(x[s:e]), _torch(y[s:e])))
    return acc.hsic(0, 1), acc.hsic(0, 0), acc.hsic(1, 1)


def _dask_linear_terms(x: Any, y: Any, debiased: bool
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear HSIC terms of dask arrays: one accumulator per row chunk, merged in a tree."""
    import dask

    xa, ya = to_dask(x), to_dask(y)
    xa = xa.rechunk({1: -1})
    ya = ya.rechunk({0: xa.chunks[0], 1: -1})
    first = [np.asarray(v) for v in dask.compute(xa.blocks[0], ya.blocks[0])]
    shifts = [_safe_mean(_torch(first[0])), _safe_mean(_torch(first[1]))]
    offsets = np.concatenate([[0], np.cumsum(xa.chunks[0])[:-1]]).tolist()
    parts = [dask.delayed(_chunk_accumulator)(bx, by, int(o), shifts, debiased)
             for bx, by, o in zip(xa.to_delayed().ravel(), ya.to_delayed().ravel(), offsets)]
    while len(parts) > 1:  # pairwise tree reduction of the chunk statistics
        parts = [dask.delayed(_ExactLinear.merged)(parts[i], parts[i + 1])
                 if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    (acc,) = dask.compute(parts[0])
    return acc.hsic(0, 1), acc.hsic(0, 0), acc.hsic(1, 1)


def _chunk_accumulator(bx: np.ndarray, by: np.ndarray, offset: int,
                       shifts: list[torch.Tensor], debiased: bool) -> _ExactLinear:
    acc = _ExactLinear(2, [(0, 1)], debiased, shifts)
    for arr, name in ((bx, "a"), (by, "b")):
        check_finite_rows(arr, name, offset=offset)
    for s, e in _row_blocks(len(bx), max(bx.shape[1], by.shape[1])):
        acc.update(_common(_torch(bx[s:e]), _torch(by[s:e])))
    return acc


# --------------------------------------------------------------------------------- rbf CKA

def _rbf_gram(xt: torch.Tensor, sigma2: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Gaussian Gram matrix in float64, the squared bandwidth used) of centred, rescaled rows.

    Without a bandwidth: the median of the off-diagonal squared distances (lower middle value).
    """
    n = xt.shape[0]
    d2 = (xt @ xt.T).double()  # becomes the squared distances, then the kernel, in place
    sq = torch.diagonal(d2).clone()
    d2.mul_(-2).add_(sq[:, None]).add_(sq[None, :]).clamp_min_(0).fill_diagonal_(0)
    if sigma2 is None:
        off = d2.reshape(-1)[1:].view(n - 1, n + 1)[:, :-1]  # all off-diagonal entries
        sigma2 = off.median()
    safe = torch.where(sigma2 > 0, sigma2, torch.ones_like(sigma2))
    return d2.div_(-2 * safe).exp_(), sigma2


def _rbf_terms(x: Any, y: Any, debiased: bool, sigma: float | None
               ) -> tuple[torch.Tensor, ...]:
    out, bandwidths = [], []
    for t in (x, y):
        xt, s = _scaled_centered(_torch(t))
        s2 = None if sigma is None else \
            (torch.as_tensor(sigma, dtype=torch.float64, device=xt.device) / s.double()) ** 2
        K, used = _rbf_gram(xt, s2)
        out.append(K)
        bandwidths.append(used)
    return (*_gram_terms(out[0], out[1], debiased), *bandwidths)


# --------------------------------------------------------------------------------- cka

def cka(a: Array, b: Array, kernel: str = "linear", debiased: bool = False,
        sigma: float | None = None, max_samples_rbf: int = RBF_MAX_SAMPLES) -> float:
    """Centred kernel alignment (Kornblith et al. 2019) between two representations of the same
    samples (rows), of any widths.

    Parameters
    ----------
    a, b : (n, d_a) and (n, d_b) arrays: numpy (``np.memmap`` is streamed in blocks), torch (on
        any device, computed there) or, for the linear kernel, dask (blockwise, one pass).
    kernel : ``"linear"`` or ``"rbf"`` (Gaussian).
    debiased : use the unbiased HSIC estimator (Song et al. 2012), near 0 for independent data
        where the biased one is inflated by the width-to-sample ratio. Needs n >= 4.
    sigma : rbf bandwidth in the inputs' units, shared by both spaces; default: each space's
        median pairwise distance (then CKA is invariant to rescaling either space).
    max_samples_rbf : the rbf kernel builds n x n float64 Gram matrices; more rows raise
        :class:`ShapeError` (subsample first).

    Linear CKA runs in feature space (X^T Y, X^T X, Y^T Y in the inputs' dtype, accumulated in
    float64 over blocks of rows; large products of CPU data by numpy's BLAS, which computes
    X^T X as a symmetric rank-k update), or on n x n Gram matrices when there are fewer samples
    than features (cheaper). Invariant to orthogonal maps, isotropic scaling and translation of
    either space; exact across the float range.
    """
    kernel = check_choice(kernel, "kernel", ("linear", "rbf"))
    debiased = check_bool(debiased, "debiased")
    sigma = check_float(sigma, "sigma", min_value=0.0, min_inclusive=False, allow_none=True)
    max_samples_rbf = check_int(max_samples_rbf, "max_samples_rbf", min_value=4)
    if sigma is not None and kernel != "rbf":
        raise RelrepsError(f"sigma is the rbf kernel's bandwidth; kernel={kernel!r} has none "
                           "(pass kernel='rbf' or drop sigma)")
    kinds = ("numpy", "torch", "dask") if kernel == "linear" else ("numpy", "torch")
    x, y = _inputs(a, b, min_rows=2, kinds=kinds)
    n = x.shape[0]
    if debiased and n < 4:
        raise ShapeError(f"debiased CKA needs at least 4 samples, got {n}")
    if kernel == "rbf" and n > max_samples_rbf:
        raise ShapeError(f"rbf CKA builds n x n Gram matrices; n={n} exceeds "
                         f"max_samples_rbf={max_samples_rbf}: subsample first")
    if kernel == "rbf":
        hxy, hxx, hyy, bw_a, bw_b = _values(*_rbf_terms(x, y, debiased, sigma))
        for bw, name in ((bw_a, "a"), (bw_b, "b")):
            if bw <= 0:
                raise RelrepsError(f"the median pairwise distance of {name} is 0 (over half of "
                                   "its pairs are duplicates): pass an explicit sigma")
    elif is_dask(x) or is_dask(y):
        hxy, hxx, hyy = _values(*_dask_linear_terms(x, y, debiased))
    else:
        hxy, hxx, hyy = _values(*_linear_terms(x, y, debiased))
    hint = "; or sigma is far from the scale of its distances" if kernel == "rbf" else ""
    return _cka_ratio(hxy, hxx, hyy, ("a", "b"), debiased, hint)


def _cka_ratio(hxy: float, hxx: float, hyy: float, names: tuple[str, str],
               debiased: bool, hint: str = "") -> float:
    for h, name in ((hxx, names[0]), (hyy, names[1])):
        if not h > 0:
            why = ("it is constant, or too few distinct samples for the debiased estimator"
                   if debiased else "it is constant")
            raise RelrepsError(f"CKA is undefined: {name} has no (estimated) variance: "
                               f"{why}{hint}")
    value = hxy / math.sqrt(hxx) / math.sqrt(hyy)
    if not math.isfinite(value):
        raise NumericalError(f"CKA of {names[0]} and {names[1]} is not representable")
    return max(-1.0, min(1.0, value))


# --------------------------------------------------------------------------------- minibatch

class _MinibatchLinear:
    """Minibatch CKA of Nguyen et al. (2021) for several representations at once: the unbiased
    HSIC of each minibatch's linear Gram matrices, summed over minibatches. Entry (i, j) of the
    running matrix is sum_b HSIC_1(K_i^b, K_j^b) in the units of each space's largest scale."""

    def __init__(self, n_spaces: int) -> None:
        self.n_spaces = n_spaces
        self.G: torch.Tensor | None = None
        self.scales: torch.Tensor | None = None
        self.n = 0
        self.n_batches = 0
        self.skipped = 0

    def prepare(self, k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        b = x.shape[0]
        if b < 4:  # the unbiased estimator needs 4 rows; the batch is counted as skipped
            return None
        s = pow2_global_scale(x)
        xs = x / s
        xs -= xs.mean(0, dtype=torch.float64).to(xs.dtype)  # HSIC_1 is translation invariant
        return _center_gram(xs @ xs.T, True).reshape(-1), s.to(torch.float64)

    def update(self, xs: Sequence[torch.Tensor]) -> None:
        self.update_prepared([self.prepare(k, x) for k, x in enumerate(xs)],
                             int(xs[0].shape[0]))

    def update_prepared(self, prepped: Sequence[Any], rows: int) -> None:
        if any(p is None for p in prepped):
            self.skipped += rows
            return
        device = prepped[0][0].device
        F = torch.stack([p[0].to(device) for p in prepped])
        s = torch.stack([p[1].to(device) for p in prepped])
        Gb = (F @ F.T) / (rows * (rows - 3))
        S = self.scales if self.scales is not None else torch.zeros_like(s)
        S_new = torch.maximum(S, s)
        f_old, f_new = (S / S_new).square(), (s / S_new).square()
        Gb = Gb * torch.outer(f_new, f_new)
        self.G = Gb if self.G is None else self.G * torch.outer(f_old, f_old) + Gb
        self.scales = S_new
        self.n += rows
        self.n_batches += 1

    def hsic(self, i: int, j: int) -> torch.Tensor:
        return self.G[i, j]


class CKAAccumulator:
    """Linear CKA between two representations, accumulated over minibatches of paired rows.

    ``estimator="exact"`` (default): feature-space statistics (X^T Y, X^T X, Y^T Y, column sums
    and, if debiased, row-norm terms) are summed over batches in float64, so :meth:`compute`
    equals ``cka(all_a, all_b, debiased=debiased)`` over all rows seen, whatever the batch
    sizes. Memory: (d_a + d_b)^2 float64 numbers.

    ``estimator="minibatch"``: the estimator of Nguyen et al. (2021): the unbiased HSIC of each
    minibatch's b x b Gram matrices, averaged over minibatches. Memory O(b^2) whatever the widths
    (wide convolutional features); it always uses the unbiased HSIC (``debiased`` must be True)
    and its value depends on the batch size. Batches of fewer than 4 rows cannot be used; they
    are skipped and counted in :attr:`skipped_samples`.

    Batches are numpy arrays or torch tensors (computed on their device; every batch of one
    accumulator on the same device); the widths are fixed by the first batch.

    Example
    -------
    >>> acc = CKAAccumulator()
    >>> for xa, xb in batches:          # doctest: +SKIP
    ...     acc.update(xa, xb)
    >>> acc.compute()                   # doctest: +SKIP
    """

    def __init__(self, estimator: str = "exact", *, debiased: bool | None = None) -> None:
        self.estimator = check_choice(estimator, "estimator", ("exact", "minibatch"))
        debiased = estimator == "minibatch" if debiased is None else debiased
        self.debiased = check_bool(debiased, "debiased")
        if estimator == "minibatch" and not self.debiased:
            raise RelrepsError("the minibatch estimator uses the unbiased HSIC of each batch "
                               "(the biased one depends on the batch size): pass debiased=True "
                               "or estimator='exact'")
        self.reset()

    def reset(self) -> CKAAccumulator:
        """Forget every batch seen."""
        self._acc: _ExactLinear | _MinibatchLinear | None = None
        self._widths: tuple[int, int] | None = None
        self._device: str | None = None
        return self

    @property
    def n_samples(self) -> int:
        """Rows accumulated (for the minibatch estimator, rows of the batches used)."""
        return 0 if self._acc is None else self._acc.n

    @property
    def skipped_samples(self) -> int:
        """Rows of batches too small for the minibatch estimator (always 0 for exact)."""
        return getattr(self._acc, "skipped", 0)

    def update(self, a: Array, b: Array) -> CKAAccumulator:
        """Add a batch: rows of `a` and `b` are the same samples."""
        x = check_array(a, "a", min_rows=1)
        y = check_array(b, "b", min_rows=1)
        same_kind(x, y, names=("a", "b"))
        device = check_same_device({"a": x, "b": y})
        check_same_rows({"a": x, "b": y})
        widths = (int(x.shape[1]), int(y.shape[1]))
        if self._acc is None:
            self._widths, self._device = widths, device
            self._acc = _ExactLinear(2, [(0, 1)], self.debiased) \
                if self.estimator == "exact" else _MinibatchLinear(2)
        if widths != self._widths:
            raise ShapeError(f"batch widths {widths} differ from the first batch's "
                             f"{self._widths}")
        if device != self._device:
            raise InputTypeError(f"batch on {device}, earlier batches on {self._device}: keep "
                                 "one accumulator's batches on one device")
        if self.estimator == "minibatch":
            self._acc.update(list(_common(_torch(x), _torch(y))))
        else:
            for s, e in _row_blocks(x.shape[0], max(widths)):
                self._acc.update(list(_common(_torch(x[s:e]), _torch(y[s:e]))))
        return self

    def _terms(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        acc = self._acc
        return acc.hsic(0, 1), acc.hsic(0, 0), acc.hsic(1, 1)

    def compute(self) -> float:
        """The CKA of all batches so far."""
        acc = self._acc
        if acc is None or acc.n == 0:
            raise RelrepsError("no batch accumulated yet" if acc is None else
                               f"no batch of at least 4 rows yet ({self.skipped_samples} rows "
                               "skipped): the minibatch estimator needs batches of >= 4 rows")
        if self._device == "meta":
            raise InputTypeError("the batches were meta tensors: they have no values")
        need = 4 if self.debiased and self.estimator == "exact" else 2
        if acc.n < need:
            raise ShapeError(f"{'debiased ' if self.debiased else ''}CKA needs at least {need} "
                             f"samples, got {acc.n}")
        return _cka_ratio(*_values(*self._terms()), ("a", "b"), self.debiased)


# --------------------------------------------------------------------------------- CCA

def _check_keep(keep: Any, name: str) -> tuple[int | float, int | float]:
    """keep: a variance fraction in (0, 1] or a number of components, or a pair of them."""
    if isinstance(keep, (list, tuple)):
        if len(keep) != 2:
            raise RelrepsError(f"{name} must be one value or a pair (for a, for b), got "
                               f"{len(keep)} values")
        return _check_keep(keep[0], f"{name}[0]")[0], _check_keep(keep[1], f"{name}[1]")[0]
    if isinstance(keep, numbers.Integral) and not isinstance(keep, (bool, np.bool_)):
        k = check_int(keep, name, min_value=1)
        return k, k
    if isinstance(keep, numbers.Real) and not isinstance(keep, (bool, np.bool_)):
        f = check_float(keep, name, min_value=0.0, max_value=1.0, min_inclusive=False)
        return f, f
    raise InputTypeError(f"{name} must be a fraction of variance in (0, 1], a number of "
                         f"components, or a pair of them; got {keep!r}")


def _cca_basis(x: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, Vh) of the centred data, truncated to its numerical rank (float64, on device).

    The rank tolerance uses the input dtype's epsilon: directions below it are rounding noise.
    """
    t = _torch(x)
    eps = torch.finfo(t.dtype).eps
    xt, _ = _scaled_centered(t.to(torch.float64))
    U, S, Vh = torch.linalg.svd(xt, full_matrices=False)
    rank = int((S > S[0] * max(xt.shape) * eps).sum())
    if rank == 0:
        raise RelrepsError(f"{name} is constant (no variance): CCA is undefined")
    return U[:, :rank], S[:rank], Vh[:rank]


def _n_components(S: torch.Tensor, keep: int | float, name: str) -> int:
    rank = S.shape[0]
    if isinstance(keep, int):
        if keep > rank:
            raise RelrepsError(f"{name} has numerical rank {rank} after centring: it cannot keep "
                               f"{keep} components (keep at most {rank}, or a variance "
                               "fraction)")
        return keep
    var = S.square()
    frac = torch.cumsum(var, 0) / var.sum()
    return min(rank, int((frac < keep * (1 - 1e-12)).sum()) + 1)


def _warn_cca(ka: int, kb: int, n: int) -> None:
    if ka + kb > n - 1:
        warnings.warn(CCAWarning(
            f"CCA of {ka} and {kb} dimensions on {n} samples: the centred data live in {n - 1} "
            f"dimensions, so at least {ka + kb - (n - 1)} canonical correlations are 1 whatever "
            "the data; use more samples or fewer dimensions"), stacklevel=3)


def svcca(a: Array, b: Array, keep: int | float | tuple[int | float, int | float] = 0.99
          ) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation after an SVD reduction of each space.

    Each space is centred and reduced to its top singular directions: `keep` is the fraction of
    variance kept (float in (0, 1]; 0.99 as in the paper) or a number of components (int), for
    both spaces or as a pair (for a, for b). CCA between the reduced spaces gives min(k_a, k_b)
    canonical correlations; their mean is returned (in [0, 1]).

    Invariant to invertible linear maps of the kept subspaces; in particular to orthogonal
    maps, isotropic scaling and translation of either space. With k_a + k_b >= n the
    correlations are trivially 1 (a :class:`CCAWarning` says so). Memory: an n x min(n, d)
    float64 basis per space (0.6 GB at 100,000 x 768): subsample rows beyond that.
    """
    ka, kb = _check_keep(keep, "keep")
    x, y = _inputs(a, b, min_rows=2)
    Ua, Sa, _ = _cca_basis(x, "a")
    Ub, Sb, _ = _cca_basis(y, "b")
    ka, kb = _n_components(Sa, ka, "a"), _n_components(Sb, kb, "b")
    _warn_cca(ka, kb, x.shape[0])
    rho = _canonical_correlations(Ua[:, :ka], Ub[:, :kb])
    return _values(rho.mean())[0]


def _canonical_correlations(Qa: torch.Tensor, Qb: torch.Tensor) -> torch.Tensor:
    """Canonical correlations of two spaces given orthonormal bases of their centred columns:
    the singular values of Qa^T Qb (the cosines of the principal angles)."""
    return torch.linalg.svdvals(Qa.T @ Qb).clamp(0, 1)


def pwcca(a: Array, b: Array, *, weight_by: str = "a") -> float:
    """Projection-weighted CCA (Morcos et al. 2018).

    CCA between the centred spaces (each truncated to its numerical rank) gives canonical
    correlations rho_i and canonical variates h_i of the weighting space; PWCCA is
    sum_i alpha_i rho_i / sum_i alpha_i with alpha_i = sum_j |<h_i, z_j>|, z_j the centred
    activations of its neuron (column) j: directions that account for more of the space weigh
    more, so noise directions that CCA matches by chance weigh little.

    It is asymmetric: `weight_by` is ``"a"`` (the paper's definition, weights from the first
    argument), ``"b"``, or ``"smaller"`` (the space of lower numerical rank, a on ties, as in the
    authors' reference code). Invariant to isotropic scaling and translation of either space,
    to permutations of neurons, and to any invertible linear map of the space that does not
    weigh. Returns a value in [0, 1].
    """
    weight_by = check_choice(weight_by, "weight_by", ("a", "b", "smaller"))
    x, y = _inputs(a, b, min_rows=2)
    Ua, Sa, Vha = _cca_basis(x, "a")
    Ub, Sb, Vhb = _cca_basis(y, "b")
    _warn_cca(Ua.shape[1], Ub.shape[1], x.shape[0])
    P, rho, Rh = torch.linalg.svd(Ua.T @ Ub, full_matrices=False)
    side = weight_by if weight_by != "smaller" else ("a" if Ua.shape[1] <= Ub.shape[1] else "b")
    # h_i^T Z (canonical variates against the centred neurons): for Z = U S Vh and h = U p,
    # h^T Z = p^T S Vh, so no n-row product is needed.
    W = (P.T * Sa) @ Vha if side == "a" else (Rh * Sb) @ Vhb
    alpha = W.abs().sum(1)
    return _values((alpha * rho.clamp(0, 1)).sum() / alpha.sum())[0]


# --------------------------------------------------------------------------------- Procrustes

def procrustes_distance(a: Array, b: Array, *, kind: str = "squared") -> float:
    """Orthogonal Procrustes distance between two representations of the same samples.

    Both spaces are centred and scaled to unit Frobenius norm (A, B); the narrower one is padded
    with zero columns. ``kind="squared"`` (default; Ding et al. 2021) returns
    min over orthogonal Q of ||A - B Q||_F^2 = 2 - 2 ||A^T B||_*, in [0, 2];
    ``kind="angular"`` (Williams et al. 2021, a metric) returns arccos ||A^T B||_*, in
    [0, pi/2]. 0 means equal up to rotation, reflection, isotropic scaling and translation.
    """
    kind = check_choice(kind, "kind", ("squared", "angular"))
    x, y = _inputs(a, b, min_rows=2)
    nuc, nx, ny = _values(*_procrustes_terms(x, y))
    for v, name in ((nx, "a"), (ny, "b")):
        if not v > 0:
            raise RelrepsError(f"{name} is constant (no variance after centring): the Procrustes "
                               "distance is undefined")
    nuc = min(1.0, max(0.0, nuc))
    return 2.0 - 2.0 * nuc if kind == "squared" else math.acos(nuc)


def _procrustes_terms(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(||A^T B||_* for the normalised spaces, ||Xc||, ||Yc|| in rescaled units).

    The nuclear-norm identity is used instead of ``scipy.linalg.orthogonal_procrustes``: the
    distance needs only the singular values of A^T B (not the rotation), it runs on the input's
    device, and zero-padding the narrower space adds only zero singular values, so no padded
    copy is made. With fewer samples than features, A^T B = Qa (Ra Rb^T) Qb^T (QR of A^T and
    B^T) has the singular values of the n x n matrix Ra Rb^T: cheaper.
    """
    xt, _ = _scaled_centered(_torch(x))
    yt, _ = _scaled_centered(_torch(y))
    xt, yt = _common(xt, yt)
    nx = torch.linalg.vector_norm(xt, dtype=torch.float64)
    ny = torch.linalg.vector_norm(yt, dtype=torch.float64)
    n, d1, d2 = xt.shape[0], xt.shape[1], yt.shape[1]
    if n < min(d1, d2):
        ra = torch.linalg.qr(xt.T.to(torch.float64), mode="r").R
        rb = torch.linalg.qr(yt.T.to(torch.float64), mode="r").R
        core = ra @ rb.T
    else:
        core = (xt.T @ yt).to(torch.float64)
    safe = torch.where(nx * ny > 0, nx * ny, torch.ones_like(nx))
    return torch.linalg.matrix_norm(core, ord="nuc") / safe, nx, ny


# --------------------------------------------------------------------------------- RSA

def rsa(a: Array, b: Array, *, metric: str = "correlation", method: str = "spearman",
        max_samples: int | None = RSA_MAX_SAMPLES, random_state: Any = 0) -> float:
    """Representational similarity analysis (Kriegeskorte et al. 2008).

    Each space's representational dissimilarity matrix (RDM) holds the dissimilarity of every
    pair of samples: ``metric="correlation"`` (1 - Pearson correlation of the two rows, the RSA
    default), ``"cosine"`` (1 - cosine) or ``"euclidean"``. RSA is the correlation of the two
    RDMs' upper triangles: ``method="spearman"`` (ranks, ties averaged; the default) or
    ``"pearson"``. Returns a value in [-1, 1].

    The RDMs are n x n (float64): above `max_samples` rows (default :data:`RSA_MAX_SAMPLES`,
    4,000: 8 million pairs), the same seeded random subset of `max_samples` rows is used in both
    spaces (`random_state`); ``max_samples=None`` uses all rows.

    Invariances of either space: ``"euclidean"``: orthogonal maps, isotropic scaling,
    translation; ``"cosine"``: orthogonal maps, scaling of each sample's vector;
    ``"correlation"``: shifting and scaling each sample's vector, permuting the features (not
    general rotations: the correlation centres each vector over its features). With
    ``"spearman"``, also any monotone change of the dissimilarities.

    The dissimilarities come from float64 matrix products (relative error ~1e-15, on the
    input's device), made symmetric exactly. Duplicated samples are tied exactly (their
    dissimilarities are copied from the first copy, and 0 between copies); other pairs whose
    dissimilarities are equal in exact arithmetic (lattice data) may be separated by rounding
    instead of tied, as in scipy's pair-by-pair ``pdist``; this matters for Spearman only when
    such ties are common.
    """
    metric = check_choice(metric, "metric", ("correlation", "cosine", "euclidean"))
    method = check_choice(method, "method", ("spearman", "pearson"))
    max_samples = check_int(max_samples, "max_samples", min_value=3, allow_none=True)
    rng = check_random_state(random_state)
    x, y = _inputs(a, b, min_rows=3)
    if metric == "correlation" and min(x.shape[1], y.shape[1]) < 2:
        raise ShapeError("the correlation distance needs at least 2 features per sample (one "
                         "feature has no correlation); use metric='euclidean'")
    n = x.shape[0]
    if max_samples is not None and n > max_samples:
        idx = np.sort(rng.choice(n, size=max_samples, replace=False))
        x, y = _take(x, idx), _take(y, idx)
    r, sa, sb, za, zb = _values(*_rsa_terms(x, y, metric, method))
    what = "the correlation distance of a constant vector is undefined" \
        if metric == "correlation" else "the cosine of a zero vector is undefined"
    for arr, name, zeros in ((x, "a", za), (y, "b", zb)):
        if zeros:
            if metric == "correlation":
                t = _torch(arr)
                rows = torch.nonzero(t.amax(1) == t.amin(1))[:5].ravel().tolist()
                raise RelrepsError(f"{name} has constant rows (rows {rows}): {what}")
            raise _zero_rows(arr, name, what)
    for s, name in ((sa, "a"), (sb, "b")):
        if not s > 0:
            raise RelrepsError(f"the RDM of {name} is constant (all pairs equally dissimilar): "
                               "its correlation with another RDM is undefined")
    return max(-1.0, min(1.0, r))


def _take(x: Any, idx: np.ndarray) -> Any:
    if is_torch(x):
        return x[torch.as_tensor(idx, device=x.device)]
    return x[idx]


def _rdm(t: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(off-diagonal dissimilarities in float64 (each pair twice), count of unusable rows).

    Duplicated rows are exactly tied: each row takes the dissimilarities of the first row equal
    to it, and a duplicate pair's dissimilarity is exactly 0 (a matrix product may round a row
    differently at different positions, which would split such ties, and gives sqrt(rounding)
    instead of 0 for euclidean).
    """
    n = t.shape[0]
    t = t.to(torch.float64)
    D, bad = _dissimilarities(t, metric)
    rep = _first_equal_rows(t)
    D = D.index_select(0, rep).index_select(1, rep)
    D.masked_fill_(rep[:, None] == rep[None, :], 0.0)
    # A matrix product need not be symmetric: on some CPUs entries (i, j) and (j, i) round
    # differently (the kernel's order depends on a row's position in a tile). Each pair must
    # appear with one value, else its two copies rank apart and move Spearman RSA (by ~1e-6
    # against scipy's pdist); the mean of the two is symmetric exactly (+ commutes).
    D = (D + D.T).mul_(0.5)
    # The off-diagonal entries as one vector without an index array: drop the first element of
    # the flattened matrix, then every (n+1)-th one is a diagonal entry. Each pair appears twice
    # with one value, which changes neither a Pearson correlation nor one of tie-averaged ranks.
    return D.reshape(-1)[1:].view(n - 1, n + 1)[:, :-1].reshape(-1), bad.sum()


def _first_equal_rows(t: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the first row equal to it (its own index if none), on t's device
    with no data-dependent shape (no host synchronisation).

    Rows are grouped by a position-independent hash (:func:`relreps._numerics.rowwise_dot` with
    fixed weights) in a stable sort; a row whose group's first row is not equal to it (a hash
    collision) keeps its own index.
    """
    n, d = t.shape
    pos = torch.arange(n, device=t.device)
    w = (torch.arange(d, dtype=t.dtype, device=t.device) * 0.6180339887498949).frac_() + 0.5
    h = rowwise_dot(t, w.expand(n, d))
    hs, order = torch.sort(h, stable=True)
    start = torch.ones(n, dtype=torch.bool, device=t.device)
    start[1:] = hs[1:] != hs[:-1]
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values
    rep = torch.empty_like(order).scatter_(0, order, order[first])
    return torch.where((t == t[rep]).all(1), rep, pos)


def _dissimilarities(t: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n x n dissimilarities of float64 rows, per row: unusable (zero or constant) or not)."""
    if metric == "euclidean":
        xt, _ = _scaled_centered(t)
        G = xt @ xt.T
        sq = torch.diagonal(G)
        D = (sq[:, None] + sq[None, :] - 2 * G).clamp_min_(0).sqrt_()
        return D, torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
    const = torch.zeros(t.shape[0], dtype=torch.bool, device=t.device)
    if metric == "correlation":
        const = t.amax(1) == t.amin(1)  # exact test: a centred constant row may not be 0
        t = t / pow2_scale(t)
        t = t - t.mean(1, keepdim=True)
    u, zero = _unit_rows(t)
    return 1 - u @ u.T, zero | const


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based, float64) with ties given their average rank, computed on v's device
    (scipy.stats.rankdata would move the data to the host)."""
    s, order = torch.sort(v)
    m = v.shape[0]
    pos = torch.arange(m, dtype=torch.float64, device=v.device)
    change = s[1:] != s[:-1]
    true = torch.ones(1, dtype=torch.bool, device=v.device)
    starts = torch.cat([true, change])  # first element of a run of equal values
    ends = torch.cat([change, true])    # last element of a run
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
    last = torch.cummin(torch.where(ends, pos, torch.full_like(pos, m)).flip(0), 0).values.flip(0)
    return torch.empty_like(pos).scatter_(0, order, (first + last) / 2 + 1)


def _pearson(v: torch.Tensor, w: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    vc, wc = v - v.mean(), w - w.mean()
    nv, nw = torch.linalg.vector_norm(vc), torch.linalg.vector_norm(wc)
    safe = torch.where(nv * nw > 0, nv * nw, torch.ones_like(nv))
    return (vc @ wc) / safe, nv, nw


def _rsa_terms(x: Any, y: Any, metric: str, method: str) -> tuple[torch.Tensor, ...]:
    da, za = _rdm(_torch(x), metric)
    db, zb = _rdm(_torch(y), metric)
    if method == "spearman":
        da, db = _average_ranks(da), _average_ranks(db)
    r, sa, sb = _pearson(da, db)
    return r, sa, sb, za, zb


# --------------------------------------------------------------------------------- layers

@dataclass(eq=False)  # a generated == would compare numpy matrices ambiguously
class LayerComparison:
    """Linear CKA between every layer of model a (rows) and every layer of model b (columns)."""

    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    n_samples: int
    n_batches: int
    estimator: str
    debiased: bool
    skipped_samples: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (the matrix as nested lists)."""
        return {"matrix": self.matrix.tolist(), "layers_a": list(self.layers_a),
                "layers_b": list(self.layers_b), "n_samples": self.n_samples,
                "n_batches": self.n_batches, "estimator": self.estimator,
                "debiased": self.debiased, "skipped_samples": self.skipped_samples,
                **self.meta}

    def heatmap(self, ax: Any = None, *, cmap: str = "magma", annotate: bool | None = None,
                colorbar: bool = True, title: str | None = None) -> Any:
        """Draw the matrix (model a's layers upwards, model b's rightwards) into `ax`.

        Without `ax`, a new figure is made with ``matplotlib.pyplot.subplots`` (the current
        backend is left as it is). `annotate` writes the values in the cells (default: up to
        12 x 12 layers). Returns the axes.
        """
        annotate = check_bool(annotate, "annotate") if annotate is not None else \
            max(self.matrix.shape) <= 12
        colorbar = check_bool(colorbar, "colorbar")
        if ax is None:
            import matplotlib.pyplot as plt

            na, nb = self.matrix.shape
            _, ax = plt.subplots(figsize=(min(3 + 0.45 * nb, 16), min(2.5 + 0.45 * na, 16)))
        elif not hasattr(ax, "imshow"):
            raise InputTypeError(f"ax must be matplotlib Axes, got {type(ax).__name__}")
        low = min(0.0, float(self.matrix.min())) if self.matrix.size else 0.0
        im = ax.imshow(self.matrix, origin="lower", cmap=cmap, vmin=low, vmax=1.0,
                       aspect="auto", interpolation="nearest")
        for labels, set_ticks in ((self.layers_b, ax.set_xticks), (self.layers_a, ax.set_yticks)):
            if len(labels) <= 60:
                set_ticks(range(len(labels)), labels=labels,
                          **({"rotation": 90} if set_ticks == ax.set_xticks else {}))
        for set_label, key in ((ax.set_xlabel, "model_b"), (ax.set_ylabel, "model_a")):
            kind = self.meta.get(key)
            set_label(f"{key} layer" + (f" ({kind})" if kind else ""))
        ax.set_title(title if title is not None else
                     f"{'debiased ' if self.debiased else ''}linear CKA "
                     f"({self.estimator}, n={self.n_samples})")
        if annotate:
            for i in range(self.matrix.shape[0]):
                for j in range(self.matrix.shape[1]):
                    v = self.matrix[i, j]
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if v > 0.6 else "white")
        if colorbar:
            ax.figure.colorbar(im, ax=ax)
        return ax


def _resolve_layers(model: torch.nn.Module, layers: Any, name: str) -> list[str]:
    modules = dict(model.named_modules())
    if layers is None:
        leaves = [k for k, m in modules.items() if k and next(m.children(), None) is None]
        return leaves or [""]  # a model without submodules: compare its output
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence):
        raise InputTypeError(f"{name} must be a list of module names (see "
                             f"model.named_modules()), got {type(layers).__name__}")
    out: list[str] = []
    for layer in layers:
        if not isinstance(layer, str):
            raise InputTypeError(f"{name} holds {layer!r}; module names are strings")
        if layer not in modules:
            known = [k for k in modules if k]
            shown = ", ".join(repr(k) for k in known[:20]) + (" ..." if len(known) > 20 else "")
            raise RelrepsError(f"{name}: {type(model).__name__} has no module named {layer!r} "
                               f"(modules: {shown}; '' is the whole model)")
        if layer in out:
            raise RelrepsError(f"{name} names {layer!r} twice")
        out.append(layer)
    if not out:
        raise RelrepsError(f"{name} is empty; pass None for every leaf module")
    return out


def _model_device(model: torch.nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _default_forward(model: torch.nn.Module, batch: Any) -> Any:
    """Run `model` on a batch: a tensor, the first element of a (inputs, targets, ...) tuple or
    list, or a mapping of keyword arguments; tensors are moved to the model's device."""
    device = _model_device(model)

    def move(v: Any) -> Any:
        return v.to(device) if device is not None and is_torch(v) else v

    if is_torch(batch):
        return model(move(batch))
    if isinstance(batch, Mapping):
        return model(**{k: move(v) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)) and batch:
        return model(move(batch[0]))
    raise InputTypeError(f"cannot feed a batch of type {type(batch).__name__} to the model: "
                         "pass forward=lambda model, batch: model(...)")


def _first_tensor(out: Any, label: str) -> torch.Tensor:
    if is_torch(out):
        return out
    if isinstance(out, (list, tuple)):
        for v in out:
            if is_torch(v):
                return v
    raise InputTypeError(f"layer {label} returned {type(out).__name__}, not a tensor (or a "
                         "tuple starting with one): its output cannot be compared")


def compare_layers(model_a: torch.nn.Module, model_b: torch.nn.Module, loader: Iterable[Any],
                   layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None,
                   *, estimator: str = "minibatch", debiased: bool | None = None,
                   forward: Callable[[torch.nn.Module, Any], Any] | None = None,
                   max_batches: int | None = None) -> LayerComparison:
    """Linear CKA between every named layer of `model_a` and every named layer of `model_b`.

    Forward hooks on the named modules (``model.named_modules()`` names; default: every leaf
    module) record each layer's output (the first tensor of a tuple output), flattened to one row
    per sample, while both models run on the same batches of `loader` (a DataLoader or any
    iterable of batches) in eval mode without gradients; the modules' train/eval flags and hooks
    are restored afterwards. Each output is processed as soon as it is produced, so in-place
    operations later in the forward pass (``ReLU(inplace=True)``) do not alter it.

    `estimator`: ``"minibatch"`` (default; Nguyen et al. 2021: unbiased HSIC per minibatch,
    memory O(batch^2) per layer whatever its width, batches of fewer than 4 rows skipped) or
    ``"exact"`` (full-data linear CKA from feature-space statistics, biased unless
    ``debiased=True``; memory (sum of widths)^2 float64 numbers, refused above 2^27).
    `forward(model, batch)` runs a model on a batch (default: a tensor, the first element of a
    tuple/list, or a mapping of keyword arguments, moved to the model's device). `model_b` may be
    `model_a` (one forward pass per batch). Computed on model a's device.
    """
    nn = torch.nn
    for m, name in ((model_a, "model_a"), (model_b, "model_b")):
        if not isinstance(m, nn.Module):
            raise InputTypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    if is_torch(loader) or isinstance(loader, (str, bytes, np.ndarray)) or \
            not isinstance(loader, Iterable):
        raise InputTypeError(f"loader must be a DataLoader or an iterable of batches, got "
                             f"{type(loader).__name__}")
    estimator = check_choice(estimator, "estimator", ("minibatch", "exact"))
    debiased = estimator == "minibatch" if debiased is None else check_bool(debiased, "debiased")
    if estimator == "minibatch" and not debiased:
        raise RelrepsError("the minibatch estimator uses the unbiased HSIC of each batch: pass "
                           "debiased=True (the default) or estimator='exact'")
    call = _default_forward if forward is None else check_callable(forward, "forward")
    max_batches = check_int(max_batches, "max_batches", min_value=1, allow_none=True)
    names_a = _resolve_layers(model_a, layers_a, "layers_a")
    names_b = _resolve_layers(model_b, layers_b, "layers_b")
    same = model_b is model_a

    spaces: list[tuple[str, str]] = []  # (model tag, layer name), one per distinct layer

    def index(key: tuple[str, str]) -> int:
        if key not in spaces:
            spaces.append(key)
        return spaces.index(key)

    ia = [index(("a", n)) for n in names_a]
    ib = [index(("a" if same else "b", n)) for n in names_b]
    labels = [f"{'model_a' if tag == 'a' else 'model_b'}.{n or '<output>'}" for tag, n in spaces]
    pairs = [(i, j) for i in ia for j in ib]
    acc: _ExactLinear | _MinibatchLinear = _ExactLinear(len(spaces), pairs, debiased) \
        if estimator == "exact" else _MinibatchLinear(len(spaces))
    current: list[Any] = [None] * len(spaces)
    rows: list[int | None] = [None] * len(spaces)

    def make_hook(k: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if rows[k] is not None:
                raise RelrepsError(f"layer {labels[k]} ran more than once in one forward pass; "
                                   "compare modules that run once per batch")
            t = _first_tensor(output, labels[k]).detach()
            if t.ndim == 0:
                raise ShapeError(f"layer {labels[k]} returned a scalar, not one row per sample")
            t = t.reshape(t.shape[0], -1)
            if not torch.is_floating_point(t) or t.dtype in (torch.float16, torch.bfloat16):
                t = t.float()
            rows[k] = int(t.shape[0])
            current[k] = acc.prepare(k, t)

        return hook

    modules = {"a": dict(model_a.named_modules()), "b": dict(model_b.named_modules())}
    flags = [(m, m.training) for m in {*model_a.modules(), *model_b.modules()}]
    handles = [modules[tag][n].register_forward_hook(make_hook(k))
               for k, (tag, n) in enumerate(spaces)]
    n_seen = 0
    try:
        model_a.eval()
        model_b.eval()
        with torch.no_grad():
            for bi, batch in enumerate(loader):
                if max_batches is not None and bi >= max_batches:
                    break
                current[:] = [None] * len(spaces)
                rows[:] = [None] * len(spaces)
                call(model_a, batch)
                if not same:
                    call(model_b, batch)
                missing = [labels[k] for k in range(len(spaces)) if rows[k] is None]
                if missing:
                    raise RelrepsError(f"layers {missing} produced no output for batch {bi}: "
                                       "they are not used in the forward pass")
                if len(set(rows)) > 1:
                    desc = ", ".join(f"{labels[k]}: {rows[k]}" for k in range(len(spaces)))
                    raise ShapeError(f"the layers disagree on the number of samples in batch "
                                     f"{bi} ({desc}): every compared output must have the "
                                     "samples on its first dimension")
                if estimator == "exact" and n_seen == 0:
                    _check_exact_budget([p[0].shape[1] for p in current], pairs)
                if estimator == "exact":
                    acc.update_prepared(current)
                else:
                    acc.update_prepared(current, rows[0])
                n_seen += 1
    finally:
        for h in handles:
            h.remove()
        for m, mode in flags:  # each module's own flag: train() would recurse into children
            m.training = mode
    return _layer_result(acc, ia, ib, names_a, names_b, labels, estimator, debiased, n_seen,
                         model_a, model_b)


def _check_exact_budget(widths: Sequence[int], pairs: Sequence[tuple[int, int]]) -> None:
    total = sum(w * w for w in widths) + sum(widths[i] * widths[j] for i, j in pairs if i != j)
    if total > _EXACT_MAX_ELEMENTS:
        raise RelrepsError(f"the exact estimator would hold {total:,} float64 statistics "
                           f"(limit {_EXACT_MAX_ELEMENTS:,}) for layers this wide: use "
                           "estimator='minibatch'")


def _layer_result(acc: Any, ia: list[int], ib: list[int], names_a: list[str],
                  names_b: list[str], labels: list[str], estimator: str, debiased: bool,
                  n_batches: int, model_a: Any, model_b: Any) -> LayerComparison:
    if n_batches == 0:
        raise RelrepsError("loader yielded no batches")
    if acc.n == 0:
        raise RelrepsError(f"no batch of at least 4 samples ({acc.skipped} samples skipped): the "
                           "minibatch estimator needs batches of >= 4 rows")
    need = 4 if debiased and estimator == "exact" else 2
    if acc.n < need:
        raise ShapeError(f"CKA needs at least {need} samples, got {acc.n}")
    n_sp = len(labels)
    selfs = [acc.hsic(k, k) for k in range(n_sp)]
    cross = [acc.hsic(i, j) for i in ia for j in ib]
    dev = selfs[0].device
    values = torch.stack([t.reshape(()).to(dev, torch.float64) for t in (*selfs, *cross)])
    if values.is_meta:
        raise InputTypeError("the models ran on the meta device: their outputs have no values")
    vals = values.tolist()
    h_self, h_cross = vals[:n_sp], vals[n_sp:]
    bad = [labels[k] for k in range(n_sp) if not math.isfinite(h_self[k])]
    if bad or not all(math.isfinite(v) for v in h_cross):
        raise NonFiniteError(f"the outputs of {bad or 'some layers'} hold NaN or inf values")
    flat = [labels[k] for k in range(n_sp) if not h_self[k] > 0]
    if flat:
        raise RelrepsError(f"CKA is undefined for {flat}: constant output over the data (or too "
                           "few samples for the debiased estimator)")
    matrix = np.empty((len(ia), len(ib)), dtype=np.float64)
    for r, i in enumerate(ia):
        for c, j in enumerate(ib):
            v = h_cross[r * len(ib) + c] / math.sqrt(h_self[i]) / math.sqrt(h_self[j])
            matrix[r, c] = max(-1.0, min(1.0, v))
    return LayerComparison(matrix=matrix, layers_a=list(names_a), layers_b=list(names_b),
                           n_samples=acc.n, n_batches=n_batches, estimator=estimator,
                           debiased=debiased, skipped_samples=getattr(acc, "skipped", 0),
                           meta={"model_a": type(model_a).__name__,
                                 "model_b": type(model_b).__name__})
