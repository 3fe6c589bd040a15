"""Float64 reference implementations of the space-similarity metrics, written from their papers'
definitions with numpy/scipy (n x n Gram matrices, explicit covariance whitening, scipy's
Procrustes rotation, pdist + scipy.stats): slow, simple and independent of relreps' code."""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def correlated_pair(seed: int, n: int, d1: int, d2: int, shared: float = 1.0,
                    noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two spaces driven by 3 shared latent factors plus independent noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = shared * z @ rng.normal(size=(3, d1)) + noise * rng.normal(size=(n, d1))
    y = shared * z @ rng.normal(size=(3, d2)) + noise * rng.normal(size=(n, d2))
    return x, y


# ------------------------------------------------------------------------------- cosine, CKA

def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(unit(a) * unit(b), axis=1)))


def hsic(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    """HSIC from Gram matrices: trace(KHLH)/(n-1)^2, or Song et al.'s unbiased estimator."""
    n = len(K)
    if not debiased:
        H = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return float(np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                 - 2 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def rbf_gram(z: np.ndarray, sigma: float | None = None) -> np.ndarray:
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    if sigma is None:  # median of the off-diagonal squared distances (lower middle value)
        off = np.sort(d2[~np.eye(len(z), dtype=bool)])
        s2 = off[(len(off) - 1) // 2]
    else:
        s2 = sigma**2
    return np.exp(-d2 / (2 * s2))


def cka(x: np.ndarray, y: np.ndarray, kernel: str = "linear", debiased: bool = False,
        sigma: float | None = None) -> float:
    K, L = (x @ x.T, y @ y.T) if kernel == "linear" else (rbf_gram(x, sigma), rbf_gram(y, sigma))
    return hsic(K, L, debiased) / np.sqrt(hsic(K, K, debiased) * hsic(L, L, debiased))


def minibatch_cka(batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Nguyen et al. (2021): unbiased HSIC of each minibatch, averaged, then normalised."""
    used = [(x, y) for x, y in batches if len(x) >= 4]
    xy = np.mean([hsic(x @ x.T, y @ y.T, True) for x, y in used])
    xx = np.mean([hsic(x @ x.T, x @ x.T, True) for x, _ in used])
    yy = np.mean([hsic(y @ y.T, y @ y.T, True) for _, y in used])
    return float(xy / np.sqrt(xx * yy))


# ------------------------------------------------------------------------------- CCA

def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return v @ np.diag(w ** -0.5) @ v.T


def cca(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(canonical correlations, canonical variates of x as unit columns) by whitening the
    covariances: rho = svd(Cxx^-1/2 Cxy Cyy^-1/2). x and y must have full column rank."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    wx, wy = _inv_sqrt(xc.T @ xc), _inv_sqrt(yc.T @ yc)
    u, rho, _ = np.linalg.svd(wx @ xc.T @ yc @ wy)
    m = min(x.shape[1], y.shape[1])
    h = xc @ wx @ u[:, :m]
    return np.clip(rho[:m], 0, 1), h / np.linalg.norm(h, axis=0)


def svcca(x: np.ndarray, y: np.ndarray, ka: int, kb: int) -> float:
    def reduce(z, k):
        zc = z - z.mean(0)
        u, s, _ = np.linalg.svd(zc, full_matrices=False)
        return u[:, :k] * s[:k]

    return float(cca(reduce(x, ka), reduce(y, kb))[0].mean())


def pwcca(x: np.ndarray, y: np.ndarray) -> float:
    """Morcos et al. (2018): correlations weighted by alpha_i = sum_j |<h_i, x_j>|."""
    rho, h = cca(x, y)
    alpha = np.abs(h.T @ (x - x.mean(0))).sum(1)
    return float((alpha * rho).sum() / alpha.sum())


# ------------------------------------------------------------------------------- Procrustes, RSA

def procrustes(x: np.ndarray, y: np.ndarray, kind: str = "squared") -> float:
    """min_Q ||A - B Q||^2 with scipy's rotation, zero-padding the narrower space."""
    a, b = x - x.mean(0), y - y.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    d = max(a.shape[1], b.shape[1])
    A, B = np.zeros((len(a), d)), np.zeros((len(b), d))
    A[:, :a.shape[1]], B[:, :b.shape[1]] = a, b
    R, _ = orthogonal_procrustes(B, A)
    sq = float(np.sum((A - B @ R) ** 2))
    return sq if kind == "squared" else float(np.arccos(np.clip(1 - sq / 2, -1, 1)))


def rsa(x: np.ndarray, y: np.ndarray, metric: str = "correlation",
        method: str = "spearman") -> float:
    da, db = pdist(x, metric), pdist(y, metric)
    return float((spearmanr if method == "spearman" else pearsonr)(da, db)[0])
