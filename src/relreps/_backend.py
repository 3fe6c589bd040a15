"""Array kinds (numpy, torch, dask): conversions that keep the caller's kind and device.

Validation lives in :mod:`relreps.validation`; this module only moves data between kinds.
"""

from __future__ import annotations

import os
from pathlib import Path
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

__all__ = ["Array", "is_torch", "is_dask", "array_kind", "same_kind", "to_numpy", "to_torch",
           "to_dask"]

#: Bytes per row block of :func:`to_dask` when no block size is given.
DASK_BLOCK_BYTES = 64 << 20


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


class FileRows:
    """Rows of a C-ordered array stored raw in a file (a ``.npy`` body, a memory map): a small,
    picklable stand-in for ``dask.array.from_array``. Each read maps the file where the task
    runs, copies only the requested rows and releases the mapped pages, so neither the graph nor
    the process's resident memory holds the whole array."""

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...],
                 dtype: Any) -> None:
        self.path = str(Path(path).resolve())
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.itemsize = self.dtype.itemsize

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        st = os.stat(self.path)
        return ("relreps-file-rows", self.path, self.offset, self.shape, str(self.dtype),
                st.st_mtime_ns, st.st_size)

    def __getitem__(self, item: Any) -> np.ndarray:
        from relreps.validation import release_pages

        view = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape)[item]
        out = np.array(view)
        release_pages(view)
        return out


class _MemoryRows:
    """An in-memory array behind ``dask.array.from_array`` without the up-front copy dask
    makes of numpy inputs (each task copies its own rows)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("relreps-memory-rows", id(self.arr), self.arr.__array_interface__["data"][0],
                self.shape, str(self.dtype))

    def __getitem__(self, item: Any) -> np.ndarray:
        return np.array(self.arr[item])


def _file_rows(x: np.memmap) -> FileRows | None:
    """A :class:`FileRows` reading the same bytes as the memory map `x`, or None when `x` is
    not a C-contiguous view of a file mapping."""
    import mmap

    mm = getattr(x, "_mmap", None)
    name = getattr(x, "filename", None)
    if mm is None or name is None or not x.flags.c_contiguous or x.size == 0:
        return None
    if getattr(x, "mode", None) in ("c", "copyonwrite"):
        return None  # private changes are not in the file
    try:
        mm_start = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):
        return None
    start = int(x.offset) - int(x.offset) % mmap.ALLOCATIONGRANULARITY
    return FileRows(name, start + (x.ctypes.data - mm_start), x.shape, x.dtype)


def to_dask(x: Any, block_rows: int | None = None) -> Any:
    """A lazy ``dask.array.Array`` over the rows of `x` (returned unchanged when it is one).

    Nothing is copied up front: a memory-mapped array is read from its file block by block (its
    pages released after each block, so resident memory stays at one block per task, and the
    graph stays small enough for a distributed cluster); an in-memory numpy array is sliced per
    task. Blocks hold `block_rows` rows (default: about 64 MiB) and all columns.
    """
    import dask.array as da

    if is_dask(x):
        return x
    if is_torch(x):
        x = to_numpy(x)
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if block_rows is None:
        row_bytes = max(1, x.itemsize * int(np.prod(x.shape[1:] or (1,))))
        block_rows = max(1, DASK_BLOCK_BYTES // row_bytes)
    src: Any = _file_rows(x) if isinstance(x, np.memmap) else None
    if src is None:
        src = _MemoryRows(x)
    return da.from_array(src, chunks=(int(block_rows),) + tuple(x.shape[1:]), asarray=False)
