"""What the scikit-learn estimators of relreps share: fitted checks and input validation.

Imported only by modules that define estimators (it imports scikit-learn, which the light parts of
relreps, such as the command line's ``--help``, must not).

- :class:`NotFittedError` is both :class:`relreps.errors.NotFittedError` (a ``RelrepsError``) and
  scikit-learn's ``NotFittedError``: code that catches either gets it.
- :func:`check_is_fitted` is scikit-learn's, re-raised as that error.
- :func:`validate_data` is scikit-learn's ``validate_data`` (feature names, ``n_features_in_``,
  dtypes, empty and 1-D input), whose errors are re-raised as relreps errors with the same text;
  torch and dask inputs skip it and go through :func:`relreps.validation.check_array`, which keeps
  their kind and device (``n_features_in_`` is still checked).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError as _SkNotFittedError
from sklearn.utils.validation import check_is_fitted as _sk_check_is_fitted
from sklearn.utils.validation import validate_data as _sk_validate_data

from relreps import errors
from relreps.errors import InputTypeError, RelrepsError, ShapeError
from relreps.validation import array_kind, check_array

__all__ = ["NotFittedError", "check_is_fitted", "validate_data"]


class NotFittedError(errors.NotFittedError, _SkNotFittedError):
    """Raised when an estimator is used before `fit` (relreps' and scikit-learn's error)."""


def check_is_fitted(estimator: Any, attributes: Any = None) -> None:
    """scikit-learn's fitted check, raising :class:`NotFittedError`."""
    try:
        _sk_check_is_fitted(estimator, attributes)
    except _SkNotFittedError as e:
        raise NotFittedError(str(e)) from None


def _reraise(e: Exception) -> None:
    msg = str(e)
    if isinstance(e, TypeError) or "complex" in msg.lower() or "dtype" in msg.lower():
        raise InputTypeError(msg) from None
    # NaN first: scikit-learn's NaN message also mentions "samples" (drop samples with NaN)
    if "contains nan" in msg.lower() or "infinity" in msg.lower():
        raise errors.NonFiniteError(msg) from None
    if "dimension" in msg.lower() or "expected 2d" in msg.lower() or "features" in msg.lower() \
            or "sample" in msg.lower():
        raise ShapeError(msg) from None
    if "nan" in msg.lower():
        raise errors.NonFiniteError(msg) from None
    raise RelrepsError(msg) from None


def _numeric(X: Any, name: str) -> Any:
    """`X` unchanged, after refusing what scikit-learn would parse as numbers but relreps refuses
    everywhere: strings (also of digits, also in object arrays or DataFrame columns), bytes and
    datetimes. Everything else (ragged, 1-D, complex, ...) is left to scikit-learn's own checks
    and messages, which its estimator checks expect."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is not None and hasattr(dtypes, "items"):  # a DataFrame: one dtype per column
        for col, dt in dtypes.items():
            if _textual(getattr(dt, "kind", "O"), X[col]):
                raise InputTypeError(f"{name} column {col!r} has dtype {dt}; expected numbers")
        return X
    if isinstance(X, (str, bytes)):
        raise InputTypeError(f"{name} must be an array of numbers, got a string")
    try:
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
    except (ValueError, TypeError):
        return X  # ragged: scikit-learn names it
    if _textual(arr.dtype.kind, arr):
        raise InputTypeError(f"{name} has dtype {arr.dtype} (text or dates); expected numbers "
                             "(parse them first, e.g. np.asarray(x, dtype=float))")
    return X


def _textual(kind: str, values: Any) -> bool:
    if kind in "USVMm":
        return True
    if kind == "O":
        flat = values.flat if isinstance(values, np.ndarray) else values
        return any(isinstance(v, (str, bytes)) for v in flat)
    return False


def validate_data(estimator: Any, X: Any, y: Any = "no_validation", *, reset: bool,
                  kinds: tuple[str, ...] = ("numpy", "torch"), **check_params: Any) -> Any:
    """Validate `X` (and `y`) for `estimator` the scikit-learn way, as relreps errors.

    numpy-like input goes through scikit-learn's ``validate_data`` (``reset=True`` in `fit`
    records ``n_features_in_`` and ``feature_names_in_``; ``reset=False`` checks them). Torch and
    dask inputs keep their kind: they are checked by :func:`relreps.validation.check_array` and
    their width against ``n_features_in_``.
    """
    kind = array_kind(X)
    if kind != "numpy":
        X = check_array(X, "X", kinds=kinds, min_rows=1)
        if reset:
            estimator.n_features_in_ = int(X.shape[1])
            if hasattr(estimator, "feature_names_in_"):
                del estimator.feature_names_in_
        elif X.shape[1] != estimator.n_features_in_:
            raise ShapeError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                             f"expecting {estimator.n_features_in_} features as input")
        if isinstance(y, str) and y == "no_validation":
            return X
        return X, y
    check_params.setdefault("dtype", [np.float64, np.float32])
    # relreps' dtype rules before scikit-learn's: scikit-learn parses strings of digits (and
    # bytes, datetimes) as numbers, which relreps refuses everywhere else
    X = _numeric(X, "X")
    if check_params.get("y_numeric") and not (isinstance(y, str) and y == "no_validation"):
        y = _numeric(y, "y")
    try:
        return _sk_validate_data(estimator, X, y, reset=reset, **check_params)
    except (ValueError, TypeError) as e:
        if isinstance(e, RelrepsError):
            raise
        _reraise(e)
