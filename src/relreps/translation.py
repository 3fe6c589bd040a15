"""Latent space translation (Maiorca et al., NeurIPS 2023): map space A onto space B in closed form.

A translator is estimated from parallel anchors (row i of `X` and of `Y` is the same sample seen
by two encoders: `X` in space A, `Y` in space B). With ``std_scaling`` both spaces are first
standardised with their own anchor statistics (anchor mean subtracted, divided by one scalar:
the root-mean-square norm of the centred anchors, so angles are kept); the map is estimated
between the scaled anchors; translated vectors are finally scaled back with B's statistics. A
head trained on B's absolute space then reads translated A vectors with no training.

Methods (closed form):

- ``"orthogonal"``: orthogonal Procrustes (``scipy.linalg.orthogonal_procrustes``): the rotation
  (or reflection) that best aligns the anchors; keeps angles and norms. When the widths differ,
  the narrower space is zero-padded to the wider one first (the map is then an isometric
  embedding A -> B, or a projection that drops B's extra directions).
- ``"lstsq"``: the least-squares linear map ``R = argmin ||A R - B||`` (minimum norm when
  under-determined; ridge penalty `alpha`).
- ``"affine"``: least squares with a bias, ``[A, 1] [R; b] ~ B``. Under standard scaling both
  spaces are centred, so the bias is ~0 and it equals ``"lstsq"``; it differs without scaling.

:class:`LatentTranslator` is a scikit-learn estimator (a multi-output regressor and a
transformer): ``fit(X, Y)`` on parallel anchors, ``transform(X)`` / ``predict(X)``, ``score``
(R^2 of the translated vectors), ``clone``, ``GridSearchCV`` and :func:`relreps.save` work.

**Constant target features.** A feature that B's anchors never vary (all-MiniLM-L6-v2 has
three dead dimensions, |value| < 1e-7 for every text; all-mpnet-base-v2 four) keeps its anchor
value in the translation (``constant_features_``, threshold ``constant_rtol``). A rotation keeps
norms: unseen vectors would put ordinary values in those features (when B has fewer live
dimensions than A, or fewer anchors than dimensions leave the rotation undetermined), and a
head fitted on B that standardises its features (StandardScaler) divides them by a standard
deviation of ~1e-33, so every prediction collapses to one class. This was the cause of
orthogonal translation *into* MiniLM-L6 reading at chance; ``scripts/translation_repro.py``
reproduces it and ``docs/translation.md`` gives the numbers. Zero-padding (A wider than B)
is the same case: B's missing dimensions are constant zeros and are dropped.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    RegressorMixin,
    TransformerMixin,
)

from relreps._backend import Array, same_kind, to_numpy
from relreps._sklearn import check_is_fitted, validate_data
from relreps.errors import (
    AnchorError,
    FormatError,
    InputTypeError,
    NumericalError,
    ShapeError,
)
from relreps.validation import check_array, check_bool, check_choice, check_float, is_torch

__all__ = ["LatentTranslator", "TRANSLATION_METHODS", "CONSTANT_FEATURE_RTOL", "translate"]

TRANSLATION_METHODS = ("orthogonal", "lstsq", "affine")
Method = Literal["orthogonal", "lstsq", "affine"]
_STATE = ("matrix_", "bias_", "mean_a_", "mean_b_", "scale_a_", "scale_b_")


def _pow2(m: float) -> float:
    """A power of two close to `m` (1 for 0): exact rescaling keeps every digit."""
    return float(2.0 ** np.frexp(m)[1]) if m > 0 else 1.0


def _stats(t: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    """Anchor mean and RMS norm of the centred anchors, safe for any finite magnitude."""
    c = _pow2(float(np.abs(t).max()))  # bring the values near 1 (exact), then measure
    s = t / c
    mean = s.mean(0)
    scale = float(np.sqrt(np.square(s - mean).sum(1).mean()))
    if not scale > 0:
        raise AnchorError(f"the anchors in {name} are all identical: standard scaling is "
                          "undefined (the space carries no information at the anchors)")
    return mean * c, scale * c


def _n_rows(v: Any) -> int | None:
    shape = getattr(v, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    try:
        return len(v)
    except TypeError:
        return None


#: Default `constant_rtol`: a feature of B whose anchor standard deviation is below this
#: fraction of the RMS of B's per-feature standard deviations is constant (the dead units of
#: all-MiniLM-L6-v2 and all-mpnet-base-v2 sit at 1e-31 to 7e-6 of it, float32 rounding noise;
#: every live feature of the four text encoders here is above 0.3 of it).
CONSTANT_FEATURE_RTOL = 1e-4


def _constant_features(sb: np.ndarray, rtol: float) -> np.ndarray:
    std = sb.std(0)
    rms = float(np.sqrt(np.mean(np.square(std))))
    return np.flatnonzero(std <= rtol * rms).astype(np.int64)


class LatentTranslator(ClassNamePrefixFeaturesOutMixin, RegressorMixin, TransformerMixin,
                       BaseEstimator):
    """Closed-form translator from latent space A to latent space B, fitted on parallel anchors.

    Parameters
    ----------
    method : ``"orthogonal"``, ``"lstsq"`` or ``"affine"`` (see the module docstring).
    std_scaling : standard-scale each space with its anchors' statistics before estimating the
        map (subtract the anchor mean, divide by the root-mean-square norm of the centred
        anchors: one scalar, so angles are kept and zero-padding does not change it), and undo
        B's scaling after translating.
    alpha : ridge penalty for ``"lstsq"``/``"affine"`` (0: plain minimum-norm least squares;
        the bias is never penalised); ignored by ``"orthogonal"``.
    constant_rtol : B's features whose anchor standard deviation is at most this fraction of
        the RMS of B's per-feature standard deviations are constant: translated vectors keep
        them at their anchor value (see the module docstring). 0 turns this off.

    Attributes (after `fit`)
    ------------------------
    matrix_ : (n_features_in_, n_features_out_) map between the scaled spaces:
        ``T(x) = ((x - mean_a_) / scale_a_) @ matrix_ * scale_b_ + bias_ + mean_b_``.
    bias_ : (n_features_out_,) bias in B's units (zeros except for ``"affine"``).
    mean_a_, mean_b_ : anchor means (zeros without `std_scaling`).
    scale_a_, scale_b_ : anchor scales (without `std_scaling`: one common power of two, an
        exact rescaling that keeps the computation in range).
    constant_features_ : (m,) indices of B's features that are constant on the anchors
        (std at most `constant_rtol` times the typical feature's): translated
        vectors keep them at their anchor value instead of mapping A's variation into them.
    n_features_in_, n_features_out_ : widths of A and B.
    """

    def __init__(self, method: Method = "orthogonal", std_scaling: bool = True,
                 alpha: float = 0.0, constant_rtol: float = CONSTANT_FEATURE_RTOL) -> None:
        self.method = method
        self.std_scaling = std_scaling
        self.alpha = alpha
        self.constant_rtol = constant_rtol

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        # a rotation cannot fit a general linear target (e.g. a 1-d regression problem)
        tags.regressor_tags.poor_score = self.method == "orthogonal"
        return tags

    @property
    def _n_features_out(self) -> int:
        return self.n_features_out_

    # ----------------------------------------------------------------------------- fit
    def _check_params(self) -> None:
        check_choice(self.method, "method", TRANSLATION_METHODS)
        check_bool(self.std_scaling, "std_scaling")
        check_float(self.alpha, "alpha", min_value=0.0)
        check_float(self.constant_rtol, "constant_rtol", min_value=0.0, max_value=1.0)

    def fit(self, X: Array, Y: Array) -> LatentTranslator:
        """Estimate the map from parallel anchors: `X` (k, d_a) in A, `Y` (k, d_b) in B, row i
        the same sample in both (numpy or torch, both of one kind). A 1-D `Y` is one target
        feature (`predict` then returns 1-D values, like any scikit-learn regressor)."""
        self._check_params()
        if Y is None:
            raise InputTypeError("LatentTranslator requires y to be passed, but the target y "
                                 "is None (Y: the anchors' embeddings in space B)")
        same_kind(X, Y, names=("X", "Y"))
        n_x, n_y = _n_rows(X), _n_rows(Y)
        if n_x is not None and n_y is not None and n_x != n_y:
            raise AnchorError(f"anchors do not correspond: {n_x} rows in X (space A), {n_y} in "
                              "Y (space B); row i must be the same sample in both")
        if is_torch(X):
            X = validate_data(self, X, reset=True)
            y_1d = Y.ndim == 1
            Y = check_array(Y.reshape(-1, 1) if y_1d else Y, "Y")
        else:
            X, Y = validate_data(self, X, Y, reset=True, multi_output=True, y_numeric=True,
                                 ensure_min_samples=2)
            y_1d = np.ndim(Y) == 1
        a = to_numpy(X).astype(np.float64)
        b = to_numpy(Y).astype(np.float64)
        b = b.reshape(-1, 1) if y_1d else b
        if a.shape[0] < 2:
            raise AnchorError("a translator needs at least 2 parallel anchors (found 1 sample)")
        self._y_1d = bool(y_1d)
        d_a, d_b = a.shape[1], b.shape[1]
        if self.std_scaling:
            mean_a, scale_a = _stats(a, "space A (X)")
            mean_b, scale_b = _stats(b, "space B (Y)")
        else:  # one common power of two: exact, and keeps A^T B in range for huge inputs
            mean_a, mean_b = np.zeros(d_a), np.zeros(d_b)
            scale_a = scale_b = _pow2(max(float(np.abs(a).max()), float(np.abs(b).max())))
        sa = (a - mean_a) / scale_a
        sb = (b - mean_b) / scale_b
        bias = np.zeros(d_b)
        if self.method == "orthogonal":
            from scipy.linalg import orthogonal_procrustes

            d = max(d_a, d_b)
            pa = np.pad(sa, ((0, 0), (0, d - d_a)))
            pb = np.pad(sb, ((0, 0), (0, d - d_b)))
            rot, _ = orthogonal_procrustes(pa, pb)
            matrix = rot[:d_a, :d_b]  # rows beyond d_a only ever meet A's zero padding
        else:
            matrix, bias = self._least_squares(sa, sb)
        if not (np.isfinite(matrix).all() and np.isfinite(bias).all()):
            raise NumericalError("the translation map is not finite (degenerate anchors)")
        bias = bias * scale_b
        # B's constant features (e.g. the three dead dimensions of all-MiniLM-L6-v2) stay at
        # their anchor value: a rotation would fill them with A's energy, and a head that
        # standardises B's features would multiply that by 1/std (1e33 for MiniLM-L6).
        const = (_constant_features(sb, float(self.constant_rtol)) if self.constant_rtol > 0
                 else np.zeros(0, dtype=np.int64))
        if const.size:
            matrix = matrix.copy()
            matrix[:, const] = 0.0
            bias[const] = sb[:, const].mean(0) * scale_b  # output: B's anchor mean there
        self.constant_features_ = const
        self.matrix_, self.bias_ = matrix, bias
        self.mean_a_, self.mean_b_ = mean_a, mean_b
        self.scale_a_, self.scale_b_ = float(scale_a), float(scale_b)
        self.n_features_out_ = int(d_b)
        return self

    def _least_squares(self, sa: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import lstsq, solve

        design = sa
        if self.method == "affine":
            design = np.hstack([sa, np.ones((len(sa), 1))])
        if self.alpha > 0:
            gram = design.T @ design
            reg = float(self.alpha) * np.eye(gram.shape[0])
            if self.method == "affine":
                reg[-1, -1] = 0.0  # the bias is not penalised
            sol = solve(gram + reg, design.T @ sb, assume_a="pos")
        else:
            sol = lstsq(design, sb)[0]  # minimum-norm least squares
        if self.method == "affine":
            return sol[:-1], sol[-1]
        return sol, np.zeros(sb.shape[1])

    # ----------------------------------------------------------------------------- transform
    def transform(self, X: Array) -> Array:
        """Translate A vectors into B: numpy in, numpy out (float32 stays float32); torch in,
        torch out on X's device and dtype, differentiable. Always 2-D."""
        check_is_fitted(self, "matrix_")
        X = validate_data(self, X, reset=False)
        if is_torch(X):
            import torch

            p = {k: torch.as_tensor(getattr(self, k), device=X.device, dtype=X.dtype)
                 for k in _STATE}
            out = (((X - p["mean_a_"]) / p["scale_a_"]) @ p["matrix_"]) * p["scale_b_"] \
                + (p["bias_"] + p["mean_b_"])
            if not out.is_meta and not bool(torch.isfinite(out.detach()).all()):
                raise NumericalError(f"translated vectors exceed the range of {X.dtype}")
            return out
        dtype = np.result_type(X.dtype, np.float32)
        p = {k: np.asarray(getattr(self, k), dtype=dtype) for k in _STATE}
        with np.errstate(over="ignore", invalid="ignore"):
            out = ((np.asarray(X, dtype=dtype) - p["mean_a_"]) / p["scale_a_"]) @ p["matrix_"]
            out = out * p["scale_b_"] + (p["bias_"] + p["mean_b_"])
        if not np.isfinite(out).all():
            raise NumericalError(f"translated vectors exceed the range of {dtype}")
        return out

    def predict(self, X: Array) -> Array:
        """The translated vectors (as :meth:`transform`; 1-D when fitted on a 1-D target)."""
        out = self.transform(X)
        return out[:, 0] if getattr(self, "_y_1d", False) else out

    def residual(self, X: Array, Y: Array) -> float:
        """Relative error ``||T(X) - Y|| / ||Y - mean(Y)||`` on parallel vectors (0 is perfect)."""
        same_kind(X, Y, names=("X", "Y"))
        pred = to_numpy(self.transform(X)).astype(np.float64)
        b = to_numpy(check_array(Y, "Y", ndim=pred.ndim)).astype(np.float64)
        if b.shape != pred.shape:
            raise ShapeError(f"Y has shape {b.shape}; the translated X has {pred.shape}")
        c = _pow2(max(float(np.abs(b).max(initial=0.0)), float(np.abs(pred).max(initial=0.0))))
        pred, b = pred / c, b / c  # a common power of two: the ratio is exact and in range
        return float(np.linalg.norm(pred - b) / max(np.linalg.norm(b - b.mean(0)), 1e-300))

    # ----------------------------------------------------------------------------- persistence
    def _relreps_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(config, arrays) for :func:`relreps.save`."""
        check_is_fitted(self, "matrix_")
        config = {"params": {"method": str(self.method), "std_scaling": bool(self.std_scaling),
                             "alpha": float(self.alpha),
                             "constant_rtol": float(self.constant_rtol)},
                  "n_features_in": int(self.n_features_in_),
                  "n_features_out": int(self.n_features_out_),
                  "y_1d": bool(self._y_1d),
                  "constant_features": [int(i) for i in self.constant_features_],
                  "feature_names_in": (self.feature_names_in_.tolist()
                                       if hasattr(self, "feature_names_in_") else None)}
        arrays = {k.rstrip("_"): np.asarray(getattr(self, k), dtype=np.float64) for k in _STATE}
        return config, arrays

    @classmethod
    def _relreps_from_state(cls, config: dict[str, Any],
                            arrays: dict[str, np.ndarray]) -> LatentTranslator:
        """Rebuild a fitted translator from :meth:`_relreps_state` (validated: a wrong or
        tampered state is a :class:`~relreps.errors.FormatError`)."""
        try:
            tr = cls(**dict(config["params"]))
            tr._check_params()
            d_a, d_b = int(config["n_features_in"]), int(config["n_features_out"])
            if not (isinstance(config["n_features_in"], numbers.Integral)
                    and isinstance(config["n_features_out"], numbers.Integral)
                    and d_a >= 1 and d_b >= 1):
                raise FormatError("n_features_in and n_features_out must be positive integers")
            shapes = {"matrix": (d_a, d_b), "bias": (d_b,), "mean_a": (d_a,), "mean_b": (d_b,),
                      "scale_a": (), "scale_b": ()}
            if set(arrays) != set(shapes):
                raise FormatError(f"arrays must be {sorted(shapes)}, got {sorted(arrays)}")
            for k, shape in shapes.items():
                v = arrays[k]
                if not isinstance(v, np.ndarray) or v.shape != shape or v.dtype != np.float64 \
                        or not np.isfinite(v).all():
                    raise FormatError(f"array {k!r} must be finite float64 of shape {shape}")
            if not (arrays["scale_a"] > 0 and arrays["scale_b"] > 0):
                raise FormatError("scales must be positive")
            names = config.get("feature_names_in")
            y_1d = config["y_1d"]
            if not isinstance(y_1d, bool):
                raise FormatError("y_1d must be a boolean")
            const = config["constant_features"]
            if not isinstance(const, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < d_b
                    for i in const) or len(set(const)) != len(const):
                raise FormatError(f"constant_features must be distinct indices in [0, {d_b})")
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"invalid LatentTranslator state: {e}") from None
        for k in _STATE:
            v = np.array(arrays[k.rstrip("_")], dtype=np.float64)
            setattr(tr, k, float(v) if v.ndim == 0 else v)
        tr.n_features_in_, tr.n_features_out_, tr._y_1d = d_a, d_b, y_1d
        tr.constant_features_ = np.asarray(const, dtype=np.int64)
        if names is not None:
            tr.feature_names_in_ = np.asarray(names, dtype=object)
        return tr


def translate(x_a: Array, anchors_a: Array, anchors_b: Array, method: Method = "orthogonal",
              std_scaling: bool = True) -> Array:
    """One-shot: fit a :class:`LatentTranslator` on the anchors and translate `x_a` into B."""
    return LatentTranslator(method, std_scaling).fit(anchors_a, anchors_b).transform(x_a)

