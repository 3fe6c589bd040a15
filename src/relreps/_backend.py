"""Numpy/torch interoperability: validate inputs and return the caller's array kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from relreps.errors import RelrepsError

Array = Any  # np.ndarray | torch.Tensor


def is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def same_kind(*arrays: Any, names: tuple[str, ...] | None = None) -> bool:
    """Return True when all arrays are torch tensors, False when all are numpy-like.

    Raises RelrepsError on a mix: converting silently would move data between devices or lose
    the autograd graph.
    """
    kinds = [is_torch(a) for a in arrays]
    if all(kinds):
        return True
    if not any(kinds):
        return False
    names = names or tuple(f"argument {i}" for i in range(len(arrays)))
    desc = ", ".join(f"{n}={'torch' if k else 'numpy'}" for n, k in zip(names, kinds))
    raise RelrepsError(f"mixed numpy and torch inputs ({desc}); pass all as numpy arrays "
                       "or all as torch tensors")


def as_2d(x: Any, name: str, *, check_finite: bool = True) -> Any:
    """Validate a 2-D float array (numpy or torch); numpy input comes back as an ndarray."""
    if is_torch(x):
        if x.ndim != 2:
            raise RelrepsError(f"{name} must be 2-D (n_samples, n_features), got shape "
                               f"{tuple(x.shape)}")
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        if check_finite and x.numel() and not bool(torch.isfinite(x.detach().sum(1)).all()):
            bad = torch.nonzero(~torch.isfinite(x.detach()).all(1)).flatten()
            if bad.numel():
                raise RelrepsError(f"{name} contains NaN or inf values (rows "
                                   f"{', '.join(str(int(i)) for i in bad[:5])})")
        return x
    if isinstance(x, np.memmap):
        arr = x
    else:
        arr = np.asarray(x)
    if arr.dtype == object:
        raise RelrepsError(f"{name} has dtype object; expected a numeric array")
    if arr.ndim != 2:
        raise RelrepsError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise RelrepsError(f"{name} has dtype {arr.dtype}; expected floating point")
        arr = arr.astype(np.float64)
    if check_finite and arr.size:  # memmaps too: streaming callers pass check_finite=False
        check_finite_rows(arr, name)
    return arr


def check_finite_rows(arr: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise RelrepsError naming the first rows of `arr` that hold NaN or inf.

    Row sums are checked first (one pass, no n x d temporary); only a non-finite sum, which may
    also be an overflow of huge finite values, triggers the exact element check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sums = arr.sum(axis=1)
    if np.isfinite(sums).all():
        return
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        rows = ", ".join(str(int(i) + offset) for i in bad[:5])
        raise RelrepsError(f"{name} contains NaN or inf values (rows {rows}"
                           f"{' ...' if bad.size > 5 else ''})")


def to_numpy(x: Any) -> np.ndarray:
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_torch(x: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    if is_torch(x):
        return x if like is None else x.to(device=like.device, dtype=like.dtype)
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t if like is None else t.to(device=like.device, dtype=like.dtype)
