"""The one input-validation layer of relreps: every public function checks its arguments here.

Each check returns the validated (and, where stated, converted) value or raises a
:class:`~relreps.errors.RelrepsError` subclass that names the argument and what was expected:

- :func:`check_array`: numpy (and ``np.memmap``), torch or dask arrays of the right rank, a
  numeric real dtype, finite values, enough rows and columns; the array kind and device are kept.
- :func:`check_int`, :func:`check_float`, :func:`check_bool`, :func:`check_choice`: scalars
  (booleans are never numbers; fractional values are never integers).
- :func:`check_random_state`: ``None``, a non-negative int or a ``numpy.random.Generator``.
- :func:`check_indices`: integer row indices in range (a boolean mask or float array is refused,
  not cast), optionally unique.
- :func:`check_labels`: one label per row, no missing values.
- :func:`check_same_rows`: arrays that must describe the same samples row by row.

Why not ``sklearn.utils.check_array``: it converts everything to numpy, which would move torch
tensors off their device, cut the autograd graph and load dask arrays into memory. The
scikit-learn estimators of relreps use scikit-learn's own ``validate_data`` (feature names, counts)
through :mod:`relreps._sklearn`, and this layer behind it.

Torch and dask are never imported here: an object can only be a tensor (a dask array) if its
library is already loaded.
"""

from __future__ import annotations

import math
import mmap
import numbers
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from relreps.errors import (
    InputTypeError,
    NonFiniteError,
    RelrepsError,
    ShapeError,
)

__all__ = ["is_torch", "is_dask", "array_kind", "float_dtype", "check_array", "check_finite_rows",
           "check_finite_block", "check_same_device", "check_int",
           "check_float", "check_bool", "check_choice", "check_random_state", "check_indices",
           "check_labels", "check_same_rows", "check_callable"]


# ------------------------------------------------------------------------------- array kinds

def is_torch(x: Any) -> bool:
    """True for a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_dask(x: Any) -> bool:
    """True for a ``dask.array.Array`` (without importing dask)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


def array_kind(x: Any) -> str:
    """``"torch"``, ``"dask"`` or ``"numpy"`` (anything else is converted to numpy)."""
    return "torch" if is_torch(x) else "dask" if is_dask(x) else "numpy"


def _is_sparse(x: Any) -> bool:
    sp = sys.modules.get("scipy.sparse")
    if sp is not None and sp.issparse(x):
        return True
    return is_torch(x) and x.layout != sys.modules["torch"].strided


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


# ------------------------------------------------------------------------------- arrays

def check_array(x: Any, name: str, *, ndim: int = 2, finite: bool = True, min_rows: int = 0,
                min_features: int = 1, kinds: Sequence[str] = ("numpy", "torch")) -> Any:
    """Validate a numeric real array; return it as float, keeping its kind and device.

    numpy-like input (lists, ``np.memmap``, pandas) comes back as an ndarray (a memmap stays a
    memmap, scanned in blocks of rows; streaming callers pass ``finite=False`` and check each
    block with :func:`check_finite_rows` as they read it); integer and boolean data become
    float64, float16 becomes float32 (see :func:`float_dtype`). A large integer or float16
    memmap is converted block by block into a temporary file-backed float memmap, so memory
    stays bounded.
    torch tensors stay on their device with their autograd graph; integer tensors become the
    default float dtype. dask arrays (accepted where `kinds` includes ``"dask"``) stay lazy: their
    values are checked block by block by the function that computes them.

    Raises
    ------
    InputTypeError : None, sparse, complex, string/object data, ragged nested lists, a kind not
        in `kinds`.
    ShapeError : wrong number of dimensions, fewer than `min_rows` rows or `min_features` columns.
    NonFiniteError : NaN or inf (with `finite=True`), naming the first offending rows.
    """
    if x is None:
        raise InputTypeError(f"{name} is required, got None")
    if _is_sparse(x):
        raise InputTypeError(f"{name} is a sparse matrix; sparse input is not supported: "
                             "convert it with .toarray() (or .to_dense() for torch)")
    kind = array_kind(x)
    if kind not in kinds:
        raise InputTypeError(f"{name} is a {kind} array; this function takes "
                             f"{' or '.join(kinds)} input")
    if kind == "torch":
        x = _check_torch(x, name)
    elif kind == "dask":
        x = _check_dask(x, name)
    else:
        x = _check_numpy(x, name)
    shape = tuple(int(s) if not _is_nan_size(s) else -1 for s in x.shape)
    if len(shape) != ndim:
        hint = (" (a single sample? use x.reshape(1, -1); a single feature? x.reshape(-1, 1))"
                if ndim == 2 and len(shape) == 1 else "")
        raise ShapeError(f"{name} must be {ndim}-D, got shape {_shape_text(shape)}{hint}")
    if ndim >= 1 and shape[0] >= 0 and shape[0] < min_rows:
        raise ShapeError(f"{name} has {shape[0]} row(s); at least {min_rows} needed")
    if ndim >= 2 and shape[1] < min_features:
        raise ShapeError(f"{name} has {shape[1]} feature(s) (shape {_shape_text(shape)}); at "
                         f"least {min_features} needed")
    if finite and kind == "numpy" and x.size:
        step = max(1, (1 << 24) // max(1, x.size // max(1, x.shape[0])))
        for s in range(0, x.shape[0], step):  # bounded memory for memory-mapped arrays
            block = x[s:s + step]
            check_finite_rows(block, name, offset=s)
            if isinstance(block, np.memmap):
                release_pages(block)  # a scan must not leave the whole file resident
    if finite and kind == "torch" and x.numel():
        check_finite_block(x, name)
    return x


def _is_nan_size(s: Any) -> bool:
    return isinstance(s, float) and math.isnan(s)


def _check_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.memmap):
        arr = x
    else:
        if isinstance(x, (str, bytes)):
            raise InputTypeError(f"{name} must be an array of numbers, got a string")
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as e:  # ragged nested lists, unconvertible objects
            raise InputTypeError(f"{name} cannot be read as an array ({e}); pass a rectangular "
                                 "array of numbers") from None
    k = arr.dtype.kind
    if k == "O":
        if any(isinstance(v, (str, bytes)) for v in arr.flat):
            raise InputTypeError(f"{name} holds strings (dtype object); expected numbers "
                                 "(parse them first, e.g. np.asarray(x, dtype=float))")
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError):
            raise InputTypeError(f"{name} holds non-numeric or ragged values (dtype object); "
                                 "pass a rectangular array of numbers") from None
        k = "f"
    if k == "c":
        raise InputTypeError(f"{name} is complex ({arr.dtype}). Complex data not supported: "
                             "relative representations need real embeddings (pass x.real, or "
                             "stack real and imaginary parts)")
    if k in "USVMm":
        raise InputTypeError(f"{name} has dtype {arr.dtype}; expected numbers")
    target = float_dtype(arr.dtype)
    if target != arr.dtype:
        arr = _convert_memmap(arr, target, name) if _convert_by_blocks(arr, target) \
            else arr.astype(target)
    return arr


def float_dtype(dtype: Any) -> np.dtype:
    """The float dtype :func:`check_array` computes numpy data of `dtype` in: integers and
    booleans become float64, float16 float32, longdouble float64; float32/float64 stay."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iub" or (dtype.kind == "f" and dtype.itemsize > 8):
        return np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


#: Memory maps whose converted copy would exceed this many bytes are converted block by block
#: into a temporary file-backed map (in ``tempfile.gettempdir()``, i.e. ``$TMPDIR``), never whole
#: in memory; smaller ones are converted in memory.
MEMMAP_CONVERT_BYTES = 1 << 26
#: Bytes read per block while converting a memory map.
MEMMAP_BLOCK_BYTES = 1 << 24


def _convert_by_blocks(arr: np.ndarray, target: np.dtype) -> bool:
    return (isinstance(arr, np.memmap) and arr.ndim >= 1 and arr.size > 0
            and arr.size * target.itemsize > MEMMAP_CONVERT_BYTES)


def release_pages(arr: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped block from this process (best effort).

    Pages of a file mapping stay resident, and count as this process's memory, once touched;
    streaming a memmap larger than memory would otherwise grow to the file's size. The data stays
    in the OS page cache (and modified pages of a shared mapping are still written back).
    """
    mm = getattr(arr, "_mmap", None)
    if getattr(arr, "mode", None) in ("c", "copyonwrite"):
        return  # private mapping: dropping pages would discard the caller's changes
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        start = arr.ctypes.data - base
        end = start + arr.nbytes
        start -= start % mmap.PAGESIZE
        end -= end % mmap.PAGESIZE  # keep a partly used last page: the next block needs it
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (ValueError, OSError, TypeError, BufferError):
        pass


def _convert_memmap(arr: np.memmap, target: np.dtype, name: str) -> np.memmap:
    """`arr` converted to `target` block by block into an anonymous temporary file mapping
    (deleted when the returned map is released): memory stays bounded by one block."""
    row_bytes = max(1, (arr.size // max(1, arr.shape[0])) * target.itemsize)
    step = max(1, MEMMAP_BLOCK_BYTES // row_bytes)
    try:
        with tempfile.TemporaryFile(prefix="relreps-") as f:
            out = np.memmap(f, dtype=target, mode="w+", shape=arr.shape)
        for s in range(0, arr.shape[0], step):
            src = arr[s:s + step]
            out[s:s + step] = src
            out.flush()
            release_pages(src)
            release_pages(out[s:s + step])
    except OSError as e:
        raise RelrepsError(f"{name} is a {arr.dtype} memory map that must be converted to "
                           f"{target} in a temporary file, which failed ({e}); free space in "
                           f"{tempfile.gettempdir()} (or set TMPDIR), or pass a {target} "
                           "file") from None
    return out


def _check_torch(x: Any, name: str) -> Any:
    import torch

    if x.is_complex():
        raise InputTypeError(f"{name} is a complex tensor ({x.dtype}); relative representations "
                             "need real embeddings (pass x.real)")
    if not torch.is_floating_point(x):
        x = x.to(torch.get_default_dtype())
    elif x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def _check_dask(x: Any, name: str) -> Any:
    k = np.dtype(x.dtype).kind
    if k == "c":
        raise InputTypeError(f"{name} is a complex dask array; real embeddings are needed")
    if k not in "fiub":
        raise InputTypeError(f"{name} has dtype {x.dtype}; expected numbers")
    if k != "f":
        x = x.astype(np.float64)
    elif x.dtype == np.float16:
        x = x.astype(np.float32)
    return x


def check_finite_rows(arr: np.ndarray, name: str, offset: int = 0) -> None:
    """Raise NonFiniteError naming the first rows of `arr` that hold NaN or inf.

    Row sums are checked first (one pass, no n x d temporary); only a non-finite sum, which may
    also be an overflow of huge finite values, triggers the exact element check.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sums = arr.sum(axis=tuple(range(1, arr.ndim))) if arr.ndim > 1 else arr
    if np.isfinite(sums).all():
        return
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad.size:
        rows = ", ".join(str(int(i) + offset) for i in bad[:5])
        raise NonFiniteError(f"{name} contains NaN or inf values (rows {rows}"
                             f"{' ...' if bad.size > 5 else ''})")


# ------------------------------------------------------------------------------- scalars

def _type_name(v: Any) -> str:
    return type(v).__name__


def check_int(value: Any, name: str, *, min_value: int | None = None,
              max_value: int | None = None, allow_none: bool = False) -> int | None:
    """An integer (Python or numpy; never a bool or a float such as 3.0) within the bounds."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an integer, got {value!r} ({_type_name(value)})")
    value = int(value)
    if min_value is not None and value < min_value:
        raise RelrepsError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise RelrepsError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_float(value: Any, name: str, *, min_value: float | None = None,
                max_value: float | None = None, min_inclusive: bool = True,
                max_inclusive: bool = True, allow_none: bool = False) -> float | None:
    """A finite real number (not a bool) within the bounds."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a number, got {value!r} ({_type_name(value)})")
    value = float(value)
    if not math.isfinite(value):
        raise RelrepsError(f"{name} must be finite, got {value}")
    if min_value is not None and (value < min_value or (not min_inclusive and value == min_value)):
        raise RelrepsError(f"{name} must be {'>=' if min_inclusive else '>'} {min_value}, "
                           f"got {value}")
    if max_value is not None and (value > max_value or (not max_inclusive and value == max_value)):
        raise RelrepsError(f"{name} must be {'<=' if max_inclusive else '<'} {max_value}, "
                           f"got {value}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A bool (Python or numpy), not a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    """One of `choices` (compared with ==; unhashable values are refused, not crashed on)."""
    try:
        ok = any(value == c and type(value) is type(c) or value is c for c in choices)
    except Exception:  # noqa: BLE001 - arrays and odd objects compare strangely
        ok = False
    if not ok:
        raise RelrepsError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; "
                           f"got {value!r}")
    return value


def check_callable(value: Any, name: str) -> Any:
    if not callable(value):
        raise InputTypeError(f"{name} must be callable, got {value!r}")
    return value


def check_random_state(random_state: Any, name: str = "random_state") -> np.random.Generator:
    """A numpy Generator from None (fresh entropy), a non-negative int, or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None:
        return np.random.default_rng()
    seed = check_int(random_state, name, min_value=0)
    return np.random.default_rng(seed)


# ------------------------------------------------------------------------------- indices, labels

def check_indices(idx: Any, name: str, *, n: int | None = None, unique: bool = False,
                  min_size: int = 1) -> np.ndarray:
    """1-D int64 row indices, each in ``[0, n)`` when `n` is given.

    A boolean mask, a float array (even of whole numbers) or negative indices are refused:
    negative indices would silently pick rows from the end, a mask would be read as 0/1 indices.
    Torch tensors are accepted (their values, not their device, matter).
    """
    if idx is None:
        raise InputTypeError(f"{name} is required, got None")
    if is_torch(idx):
        idx = idx.detach().cpu().numpy()
    if isinstance(idx, (str, bytes)):
        raise InputTypeError(f"{name} must be integer row indices, got a string")
    try:
        arr = np.asarray(idx)
    except (ValueError, TypeError):
        raise InputTypeError(f"{name} must be a 1-D array of integer row indices") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype == bool:
        raise InputTypeError(f"{name} is a boolean mask; pass row indices (np.flatnonzero(mask))")
    if arr.size and arr.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must hold integer row indices, got dtype {arr.dtype} "
                             "(cast deliberately with .astype(int) if the values are whole)")
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be 1-D, got shape {_shape_text(arr.shape)}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size < min_size:
        raise ShapeError(f"{name} holds {arr.size} index(es); at least {min_size} needed")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise RelrepsError(f"{name} holds the negative index {lo}; indices must be in "
                               f"[0, {n if n is not None else 'n'})")
        if n is not None and hi >= n:
            raise RelrepsError(f"{name} holds the index {hi}, out of range for {n} rows")
    if unique and np.unique(arr).size != arr.size:
        vals, counts = np.unique(arr, return_counts=True)
        raise RelrepsError(f"{name} repeats the index {int(vals[counts > 1][0])}; each row may "
                           "appear once")
    return arr


def check_labels(y: Any, name: str = "y", *, n: int | None = None) -> np.ndarray:
    """One label per sample as a 1-D numpy array (a column vector is flattened); no NaN/None."""
    if y is None:
        raise InputTypeError(f"{name} is required, got None")
    if is_torch(y):
        y = y.detach().cpu().numpy()
    try:
        arr = np.asarray(y)
    except (ValueError, TypeError):
        raise InputTypeError(f"{name} must be a 1-D sequence of labels") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise ShapeError(f"{name} must be 1-D (one label per sample), got shape "
                         f"{_shape_text(arr.shape)}")
    if n is not None and arr.shape[0] != n:
        raise ShapeError(f"{name} has {arr.shape[0]} labels for {n} samples")
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} holds NaN or inf labels (first at position "
                             f"{int(np.flatnonzero(~np.isfinite(arr))[0])})")
    if arr.dtype.kind == "c":
        raise InputTypeError(f"{name} holds complex labels")
    if arr.dtype == object:
        missing = [i for i, v in enumerate(arr.tolist())
                   if v is None or (isinstance(v, float) and math.isnan(v))]
        if missing:
            raise NonFiniteError(f"{name} has missing labels (None/NaN) at position {missing[0]}")
    return arr


def check_same_rows(arrays: Mapping[str, Any]) -> int:
    """The common number of rows of arrays that describe the same samples row by row."""
    sizes = {k: int(v.shape[0]) for k, v in arrays.items()}
    if len(set(sizes.values())) > 1:
        desc = ", ".join(f"{k} has {s}" for k, s in sizes.items())
        raise ShapeError(f"row counts differ ({desc}); row i must be the same sample in all")
    return next(iter(sizes.values())) if sizes else 0


def check_same_device(arrays: Mapping[str, Any]) -> str:
    """The common device (as text, numpy arrays count as ``"cpu"``) of arrays computed together.

    Raises InputTypeError naming each array's device when they differ: a metric or projection
    never moves data between devices behind the caller's back.
    """
    devices = {k: str(v.device) if is_torch(v) else "cpu" for k, v in arrays.items()}
    if len(set(devices.values())) > 1:
        desc = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise InputTypeError(f"inputs live on different devices ({desc}); move them to one "
                             "device first")
    return next(iter(devices.values()), "cpu")


def check_finite_block(x: Any, name: str, offset: int = 0) -> None:
    """Raise NonFiniteError naming the rows (numbered from `offset`) of a numpy or torch block
    that hold NaN or inf; for streamed inputs checked block by block. Meta tensors pass."""
    if not is_torch(x):
        check_finite_rows(np.asarray(x), name, offset=offset)
        return
    import torch

    xd = x.detach()
    if xd.is_meta or not xd.numel():
        return
    flat = xd.reshape(xd.shape[0], -1)
    if bool(torch.isfinite(flat.sum(1)).all()):
        return
    bad = torch.nonzero(~torch.isfinite(flat).all(1)).flatten()
    if bad.numel():
        rows = ", ".join(str(int(i) + offset) for i in bad[:5])
        raise NonFiniteError(f"{name} contains NaN or inf values (rows {rows}"
                             f"{' ...' if bad.numel() > 5 else ''})")


# ------------------------------------------------------------------------------- collections

__all__ += ["check_choices", "check_seeds", "check_texts"]


def check_choices(values: Any, name: str, choices: Sequence[Any], *, min_size: int = 1
                  ) -> tuple[Any, ...]:
    """A sequence of values from `choices` (a single string counts as one), in order, each
    once; at least `min_size` of them."""
    if isinstance(values, str):
        values = (values,)
    if isinstance(values, bytes) or not isinstance(values, (Sequence, np.ndarray)):
        raise InputTypeError(f"{name} must be a sequence of values from {list(choices)}, got "
                             f"{values!r}")
    out = tuple(values.tolist() if isinstance(values, np.ndarray) else values)
    for v in out:
        check_choice(v, f"each of {name}", choices)
    out = tuple(dict.fromkeys(out))
    if len(out) < min_size:
        allowed = ", ".join(repr(c) for c in choices)
        raise RelrepsError(f"{name} {'is empty' if not out else f'holds {len(out)} value(s)'}; "
                           f"at least {min_size} needed from {allowed}")
    return out


def check_seeds(seeds: Any, name: str = "seeds") -> tuple[int, ...]:
    """One or more distinct non-negative integer seeds, as a sequence.

    A bare int is refused: ``seeds=3`` reads as "three seeds" (as in the experiments' options)
    as easily as "seed 3", and either reading would silently run something else.
    """
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be a sequence of seeds, got the int {seeds!r}: pass "
                             f"{name}=({seeds},) for seed {seeds} or {name}=range({seeds}) for "
                             f"{seeds} seeds")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray, range)):
        raise InputTypeError(f"{name} must be a sequence of non-negative integers, got {seeds!r}")
    out = tuple(check_int(s, f"{name}[{i}]", min_value=0) for i, s in enumerate(seeds))
    if not out:
        raise RelrepsError(f"{name} is empty; give at least one seed")
    if len(set(out)) != len(out):
        raise RelrepsError(f"{name} repeats a value ({list(out)}); each seed is one replicate")
    return out


def check_texts(texts: Any, name: str, *, min_size: int = 1, unique: bool = False) -> list[str]:
    """A sequence of strings (a single string is refused: it is not a list of texts)."""
    if isinstance(texts, (str, bytes)):
        raise InputTypeError(f"{name} must be a sequence of texts, got a single string")
    if not isinstance(texts, (Sequence, np.ndarray)):
        raise InputTypeError(f"{name} must be a sequence of texts, got {type(texts).__name__}")
    out = list(texts.tolist() if isinstance(texts, np.ndarray) else texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise InputTypeError(f"{name}[{bad[0]}] is {type(out[bad[0]]).__name__}, not a string")
    if len(out) < min_size:
        raise ShapeError(f"{name} holds {len(out)} text(s); at least {min_size} needed")
    if unique and len(set(out)) != len(out):
        seen: set[str] = set()
        dup = next(t for t in out if t in seen or seen.add(t))
        raise RelrepsError(f"{name} repeats the text {dup[:60]!r}; each must be distinct")
    return out
