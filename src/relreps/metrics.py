"""Comparing latent spaces: neighbourhood agreement (Jaccard@k, MRR@k), cosine, CKA, mutual kNN.

The neighbourhood metrics (``knn_indices``, ``retrieval_metrics``, ``jaccard_at_k``,
``mrr_at_k``, ``mutual_knn``) live in :mod:`relreps.neighbors` (exact, dask and approximate
search) and are re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from relreps._backend import Array
from relreps.errors import RelrepsError
from relreps.neighbors import (  # noqa: F401 - re-exported: neighbourhood metrics live there
    jaccard_at_k,
    knn_indices,
    mrr_at_k,
    mutual_knn,
    mutual_knn_metrics,
    retrieval_metrics,
)
from relreps.validation import check_array, is_torch

__all__ = ["knn_indices", "retrieval_metrics", "jaccard_at_k", "mrr_at_k", "mean_cosine",
           "cka", "mutual_knn", "mutual_knn_metrics"]


def _tensor(x: Array, name: str) -> torch.Tensor:
    x = check_array(x, name)
    t = x.detach() if is_torch(x) else torch.from_numpy(np.ascontiguousarray(x))
    if t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return t


def _pair(a: Array, b: Array, names: tuple[str, str], same_width: bool = True
          ) -> tuple[torch.Tensor, torch.Tensor]:
    ta, tb = _tensor(a, names[0]), _tensor(b, names[1])
    if ta.shape[0] != tb.shape[0]:
        raise RelrepsError(f"{names[0]} has {ta.shape[0]} rows but {names[1]} has {tb.shape[0]}; "
                           "rows must correspond (row i is the same sample in both)")
    if same_width and ta.shape[1] != tb.shape[1]:
        raise RelrepsError(f"{names[0]} has width {ta.shape[1]} but {names[1]} has {tb.shape[1]}: "
                           "searching one space's vectors in the other needs equal widths (compare "
                           "relative spaces with the same anchors, or use cka)")
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    return ta.to(dtype), tb.to(dtype)


def _unit(t: torch.Tensor, name: str) -> torch.Tensor:
    n = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if bool((n == 0).any()):
        rows = torch.nonzero(n.ravel() == 0)[:5].ravel().tolist()
        raise RelrepsError(f"{name} has zero vectors (rows {rows}): cosine neighbours are "
                           "undefined")
    return t / n


def mean_cosine(a: Array, b: Array) -> float:
    """Mean cosine similarity between corresponding rows of `a` and `b` (same width)."""
    ta, tb = _pair(a, b, ("a", "b"))
    return float((_unit(ta, "a") * _unit(tb, "b")).sum(1).mean())


def _hsic_linear(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    """HSIC with linear kernels computed in feature space (no n x n Gram matrices)."""
    n = x.shape[0]
    if not debiased:
        x = x - x.mean(0, keepdim=True)
        y = y - y.mean(0, keepdim=True)
        return (x.T @ y).square().sum() / (n - 1) ** 2
    if n < 4:
        raise RelrepsError("debiased CKA needs at least 4 samples")
    kd = x.square().sum(1)  # diag of K = X X^T
    ld = y.square().sum(1)
    tr_kl = (x.T @ y).square().sum() - (kd * ld).sum()  # tr(K~ L~), K~ = K with zero diagonal
    k1 = x @ x.sum(0) - kd  # K~ 1
    l1 = y @ y.sum(0) - ld
    s_k, s_l = k1.sum(), l1.sum()
    return (tr_kl + s_k * s_l / ((n - 1) * (n - 2)) - 2 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def _hsic_gram(K: torch.Tensor, L: torch.Tensor, debiased: bool) -> torch.Tensor:
    n = K.shape[0]
    if not debiased:
        H = torch.eye(n, dtype=K.dtype) - 1.0 / n
        return ((H @ K @ H) * L).sum() / (n - 1) ** 2
    if n < 4:
        raise RelrepsError("debiased CKA needs at least 4 samples")
    K = K.clone().fill_diagonal_(0)
    L = L.clone().fill_diagonal_(0)
    k1, l1 = K.sum(1), L.sum(1)
    return ((K * L).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2))
            - 2 * (k1 @ l1) / (n - 2)) / (n * (n - 3))


def _rbf_gram(x: torch.Tensor, sigma: float | None) -> torch.Tensor:
    d2 = torch.cdist(x, x).square()
    if sigma is None:
        med = d2[~torch.eye(len(x), dtype=torch.bool)].median().sqrt()
        sigma = float(med) if float(med) > 0 else 1.0
    return torch.exp(-d2 / (2 * sigma**2))


def cka(a: Array, b: Array, kernel: str = "linear", debiased: bool = False,
        sigma: float | None = None, max_samples_rbf: int = 10_000) -> float:
    """Centred kernel alignment between two representations of the same samples.

    Linear CKA is computed in feature space (any n); the RBF kernel (bandwidth `sigma`, default
    the median pairwise distance of each space) builds n x n Gram matrices, so n is capped.
    `debiased=True` uses the unbiased HSIC estimator (Song et al. 2012), near 0 for independent
    data where the biased estimator is inflated by the width-to-sample ratio.
    """
    x, y = _pair(a, b, ("a", "b"), same_width=False)
    x, y = x.double(), y.double()
    if x.shape[0] < 2:
        raise RelrepsError("CKA needs at least 2 samples")
    if kernel == "linear":
        hxy, hxx, hyy = (_hsic_linear(x, y, debiased), _hsic_linear(x, x, debiased),
                         _hsic_linear(y, y, debiased))
    elif kernel == "rbf":
        if x.shape[0] > max_samples_rbf:
            raise RelrepsError(f"rbf CKA builds n x n Gram matrices; n={x.shape[0]} exceeds "
                               f"max_samples_rbf={max_samples_rbf}: subsample first")
        K, L = _rbf_gram(x, sigma), _rbf_gram(y, sigma)
        hxy, hxx, hyy = _hsic_gram(K, L, debiased), _hsic_gram(K, K, debiased), \
            _hsic_gram(L, L, debiased)
    else:
        raise RelrepsError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")
    denom = torch.sqrt(hxx.clamp(min=0) * hyy.clamp(min=0))
    if float(denom) == 0:
        raise RelrepsError("CKA is undefined: one representation has no (estimated) variance: "
                           "it is constant, or too few samples for the debiased estimator")
    return float(hxy / denom)
