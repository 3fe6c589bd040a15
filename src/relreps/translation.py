"""Latent space translation (Maiorca et al., NeurIPS 2023): map space A onto space B in closed form.

A translator is estimated from parallel anchors (row i of `anchors_a` and of `anchors_b` is the
same sample seen by two encoders). Both spaces are first standard-scaled with their own anchor
statistics (anchor mean subtracted, divided by the anchor scale); when the widths differ both are
zero-padded to the larger one (orthogonal method); the map is estimated between the scaled anchors;
translated vectors are finally scaled back with B's statistics. A head trained on B's absolute
space then reads translated A vectors with no training.

Methods (closed form):

- ``"orthogonal"``: orthogonal Procrustes, ``R = U V^T`` from the SVD of ``A^T B``: the rotation
  (or reflection) that best aligns the anchors; keeps angles and norms.
- ``"lstsq"``: the least-squares linear map ``R = argmin ||A R - B||`` (minimum norm when
  under-determined, optional ridge `alpha`).
- ``"affine"``: least squares with a bias, ``[A, 1] [R; b] ~ B``. Under standard scaling both
  spaces are centred, so the bias is ~0 and it equals ``"lstsq"``; it differs without scaling.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch

from relreps._backend import Array, same_kind
from relreps.errors import AnchorError, RelrepsError
from relreps.validation import check_array, is_torch

__all__ = ["LatentTranslator", "TRANSLATION_METHODS", "translate"]

TRANSLATION_METHODS = ("orthogonal", "lstsq", "affine")
Method = Literal["orthogonal", "lstsq", "affine"]


def _t64(x: Array) -> torch.Tensor:
    return (x.detach() if is_torch(x) else torch.from_numpy(np.asarray(x))).to(
        device="cpu", dtype=torch.float64)


def _pad(t: torch.Tensor, d: int) -> torch.Tensor:
    return t if t.shape[1] == d else torch.nn.functional.pad(t, (0, d - t.shape[1]))


class LatentTranslator:
    """Closed-form translator from latent space A to latent space B, fitted on parallel anchors.

    Parameters
    ----------
    method : ``"orthogonal"``, ``"lstsq"`` or ``"affine"`` (see the module docstring).
    std_scaling : standard-scale each space with its anchors' statistics before estimating the
        map (subtract the anchor mean, divide by the root-mean-square norm of the centred anchors:
        one scalar, so angles are kept and zero-padding does not change it), and undo B's
        scaling after translating.
    alpha : ridge penalty for ``"lstsq"``/``"affine"`` (0: plain minimum-norm least squares).

    Attributes (after `fit`)
    ------------------------
    matrix_ : (d, d_b) map applied to the scaled (and, for orthogonal, zero-padded) A vectors.
    bias_ : (d_b,) bias added after the map (zeros except for ``"affine"``).
    mean_a_, mean_b_, scale_a_, scale_b_ : anchor statistics of each space.
    dim_a_, dim_b_ : widths of the two spaces.
    fit_time_ : seconds spent in `fit`.
    """

    def __init__(self, method: Method = "orthogonal", std_scaling: bool = True,
                 alpha: float = 0.0) -> None:
        if method not in TRANSLATION_METHODS:
            raise RelrepsError(f"method must be one of {TRANSLATION_METHODS}, got {method!r}")
        if alpha < 0:
            raise RelrepsError(f"alpha must be >= 0, got {alpha}")
        self.method = method
        self.std_scaling = std_scaling
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return (f"LatentTranslator(method={self.method!r}, std_scaling={self.std_scaling}, "
                f"alpha={self.alpha})")

    @staticmethod
    def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = t.mean(0)
        scale = (t - mean).square().sum(1).mean().sqrt()
        if not bool(scale > 0):
            raise AnchorError("anchors are all identical in one space: standard scaling is "
                              "undefined")
        return mean, scale

    def fit(self, anchors_a: Array, anchors_b: Array) -> LatentTranslator:
        """Estimate the map from parallel anchors: row i of both is the same sample."""
        t0 = time.perf_counter()
        same_kind(anchors_a, anchors_b, names=("anchors_a", "anchors_b"))
        a = _t64(check_array(anchors_a, "anchors_a"))
        b = _t64(check_array(anchors_b, "anchors_b"))
        if a.shape[0] != b.shape[0]:
            raise AnchorError(f"anchors do not correspond: {a.shape[0]} rows in A, "
                              f"{b.shape[0]} in B (row i must be the same sample in both)")
        if a.shape[0] < 2:
            raise AnchorError("a translator needs at least 2 parallel anchors")
        self.dim_a_, self.dim_b_ = int(a.shape[1]), int(b.shape[1])
        if self.std_scaling:
            self.mean_a_, self.scale_a_ = self._stats(a)
            self.mean_b_, self.scale_b_ = self._stats(b)
        else:
            self.mean_a_, self.mean_b_ = torch.zeros(self.dim_a_, dtype=torch.float64), \
                torch.zeros(self.dim_b_, dtype=torch.float64)
            self.scale_a_ = self.scale_b_ = torch.ones((), dtype=torch.float64)
        sa = (a - self.mean_a_) / self.scale_a_
        sb = (b - self.mean_b_) / self.scale_b_
        bias = torch.zeros(self.dim_b_, dtype=torch.float64)
        if self.method == "orthogonal":
            d = max(self.dim_a_, self.dim_b_)
            u, _, vh = torch.linalg.svd(_pad(sa, d).T @ _pad(sb, d))
            matrix = (u @ vh)[:, :self.dim_b_]  # rows beyond d_a only ever meet zero padding
        else:
            design = sa
            if self.method == "affine":
                design = torch.cat([sa, torch.ones(len(sa), 1, dtype=sa.dtype)], 1)
            if self.alpha > 0:
                gram = design.T @ design
                reg = self.alpha * torch.eye(gram.shape[0], dtype=gram.dtype)
                if self.method == "affine":
                    reg[-1, -1] = 0.0  # the bias is not penalised
                sol = torch.linalg.solve(gram + reg, design.T @ sb)
            else:
                sol = torch.linalg.pinv(design) @ sb  # minimum-norm least squares
            if self.method == "affine":
                matrix, bias = sol[:-1], sol[-1]
            else:
                matrix = sol
        self.matrix_ = matrix[:self.dim_a_]
        self.bias_ = bias
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _check(self, x: Array) -> None:
        if not hasattr(self, "matrix_"):
            raise RelrepsError("LatentTranslator is not fitted yet; call fit first")
        if x.shape[1] != self.dim_a_:
            raise RelrepsError(f"x has {x.shape[1]} features; the translator was fitted on a "
                               f"{self.dim_a_}-d source space")

    def transform(self, x_a: Array) -> Array:
        """Translate A vectors into B (numpy in, numpy out; torch in, torch out, differentiable)."""
        x_a = check_array(x_a, "x_a")
        self._check(x_a)
        if is_torch(x_a):
            p = {k: getattr(self, k).to(device=x_a.device, dtype=x_a.dtype)
                 for k in ("mean_a_", "scale_a_", "matrix_", "bias_", "mean_b_", "scale_b_")}
            return (((x_a - p["mean_a_"]) / p["scale_a_"]) @ p["matrix_"] + p["bias_"]) \
                * p["scale_b_"] + p["mean_b_"]
        dtype = np.result_type(x_a.dtype, np.float32)
        p = {k: getattr(self, k).numpy().astype(dtype, copy=False)
             for k in ("mean_a_", "scale_a_", "matrix_", "bias_", "mean_b_", "scale_b_")}
        xa = np.asarray(x_a, dtype=dtype)
        return ((xa - p["mean_a_"]) / p["scale_a_"]) @ p["matrix_"] * p["scale_b_"] \
            + (p["bias_"] * p["scale_b_"] + p["mean_b_"])

    def fit_transform(self, anchors_a: Array, anchors_b: Array) -> Array:
        """Fit on the anchors and return them translated into B."""
        return self.fit(anchors_a, anchors_b).transform(anchors_a)

    def residual(self, anchors_a: Array, anchors_b: Array) -> float:
        """Relative error ||T(A) - B|| / ||B - mean(B)|| on parallel vectors (0 is perfect)."""
        pred = np.asarray(self.transform(np.asarray(anchors_a) if not is_torch(anchors_a)
                                         else anchors_a.detach().cpu().numpy()), dtype=np.float64)
        b = np.asarray(anchors_b.detach().cpu().numpy() if is_torch(anchors_b) else anchors_b,
                       dtype=np.float64)
        return float(np.linalg.norm(pred - b) / max(np.linalg.norm(b - b.mean(0)), 1e-300))

    def get_state(self) -> dict[str, Any]:
        """The fitted parameters as numpy arrays (for saving with np.savez)."""
        if not hasattr(self, "matrix_"):
            raise RelrepsError("LatentTranslator is not fitted yet; call fit first")
        return {k: getattr(self, k).numpy() for k in ("matrix_", "bias_", "mean_a_", "mean_b_",
                                                       "scale_a_", "scale_b_")}


def translate(x_a: Array, anchors_a: Array, anchors_b: Array, method: Method = "orthogonal",
              std_scaling: bool = True) -> Array:
    """One-shot: fit a :class:`LatentTranslator` on the anchors and translate `x_a` into B."""
    return LatentTranslator(method, std_scaling).fit(anchors_a, anchors_b).transform(x_a)
