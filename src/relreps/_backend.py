"""Array kinds (numpy, torch, dask): conversions that keep the caller's kind and device.

Validation lives in :mod:`relreps.validation`; this module only moves data between kinds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from relreps.errors import InputTypeError
from relreps.validation import array_kind, is_dask, is_torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dask.array
    import torch

    Array = np.ndarray | torch.Tensor | dask.array.Array
else:
    Array = Any  # np.ndarray | torch.Tensor | dask.array.Array (resolved for type checkers)

__all__ = ["Array", "is_torch", "is_dask", "array_kind", "same_kind", "to_numpy", "to_torch"]


def same_kind(*arrays: Any, names: tuple[str, ...] | None = None) -> bool:
    """Return True when all arrays are torch tensors, False when none is.

    Raises InputTypeError on a mix: converting silently would move data between devices or lose
    the autograd graph.
    """
    kinds = [is_torch(a) for a in arrays]
    if all(kinds):
        return True
    if not any(kinds):
        return False
    names = names or tuple(f"argument {i}" for i in range(len(arrays)))
    desc = ", ".join(f"{n}={array_kind(a)}" for n, a in zip(names, arrays))
    raise InputTypeError(f"mixed numpy and torch inputs ({desc}); pass all as numpy arrays "
                         "or all as torch tensors")


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view or copy of `x` (torch tensors are detached and copied to the CPU)."""
    if is_torch(x):
        return x.detach().cpu().numpy()
    if is_dask(x):
        return np.asarray(x.compute())
    return np.asarray(x)


def to_torch(x: Any, like: Any = None) -> Any:
    """A tensor of `x` (on `like`'s device and dtype when given)."""
    import torch

    if is_torch(x):
        return x if like is None else x.to(device=like.device, dtype=like.dtype)
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t if like is None else t.to(device=like.device, dtype=like.dtype)
