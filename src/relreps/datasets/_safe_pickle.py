"""Read the pickled data files that some data sets ship in (MNIST's ``mnist.pkl.gz``, the
Planetoid ``ind.*`` files) without executing code.

A pickle can call any importable function while it loads. :func:`load_data_pickle` uses a
``pickle.Unpickler`` whose ``find_class`` resolves only a few names to harmless stand-ins:

- numpy arrays: ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
  (only to build an empty ``ndarray`` whose state is then set), ``numpy.ndarray`` (only as that
  argument), ``numpy.dtype`` (never an object dtype), ``_codecs.encode`` (only str -> latin-1
  bytes) and ``bytes()`` (only empty), how Python 3 writes bytes in protocol 2;
- with ``sparse=True``, ``scipy.sparse.csr(.)csr_matrix`` is read as a plain record of its arrays
  (``data``, ``indices``, ``indptr``, ``shape``), turned into a validated ``csr_matrix`` afterwards;
- with ``containers=True``, ``collections.defaultdict`` (read as a plain dict) and ``list``.

Every other global (``os.system``, ``builtins.eval``, ...), persistent ids and extension codes
raise :class:`~relreps.errors.FormatError`; so do object arrays in the result.
"""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

import numpy as np

from relreps.errors import FormatError

__all__ = ["load_data_pickle"]

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}
_CSR = {("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
        ("scipy.sparse", "csr_matrix")}


class _NdarrayType:
    """Stands for ``numpy.ndarray`` in a pickle: usable only as `_reconstruct`'s first argument."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise FormatError("the pickle calls numpy.ndarray directly; only numpy's own array "
                          "reconstruction is allowed")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NdarrayType:
        raise FormatError("the pickle reconstructs an array of a type other than numpy.ndarray")
    if not isinstance(shape, tuple) or shape != (0,):
        raise FormatError("the pickle reconstructs an array with an unexpected initial shape")
    if not isinstance(dtype, (bytes, str)) or dtype not in (b"b", "b"):
        raise FormatError("the pickle reconstructs an array with an unexpected initial dtype")
    return np.ndarray((0,), dtype=np.uint8)


def _dtype(*args: Any) -> np.dtype:
    if not args or not isinstance(args[0], str) or not all(isinstance(a, (int, bool))
                                                           for a in args[1:]):
        raise FormatError("the pickle builds a numpy dtype from unexpected arguments")
    try:
        dt = np.dtype(args[0])
    except TypeError as e:
        raise FormatError(f"the pickle holds an unknown numpy dtype ({e})") from None
    if dt.hasobject or dt.kind not in "biuf":
        raise FormatError(f"the pickle holds arrays of dtype {dt}; only numbers are read")
    return dt


class _SparseRecord:
    """What a pickled ``csr_matrix`` holds (its attribute dict), with no scipy code involved."""

    def __init__(self) -> None:
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise FormatError("a pickled sparse matrix has an unexpected state")
        self.state = state


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """How protocol-2 pickles written by Python 3 spell bytes: encode(str, "latin1")."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FormatError("the pickle calls _codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    """How protocol-2 pickles written by Python 3 spell empty bytes: bytes()."""
    if args:
        raise FormatError("the pickle calls bytes() with arguments")
    return b""


def _defaultdict(factory: Any = None) -> dict:
    if factory is not None and factory is not list:
        raise FormatError("a pickled defaultdict has an unexpected default factory")
    return {}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, sparse: bool, containers: bool) -> None:
        super().__init__(file, encoding="latin1")
        self._sparse = sparse
        self._containers = containers

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECONSTRUCT:
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NdarrayType
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        if (module, name) == ("_codecs", "encode"):
            return _codecs_encode
        if module in ("__builtin__", "builtins") and name == "bytes":
            return _bytes
        if self._sparse and (module, name) in _CSR:
            return _SparseRecord
        if self._containers and (module, name) == ("collections", "defaultdict"):
            return _defaultdict
        if self._containers and module in ("__builtin__", "builtins") and name == "list":
            return list
        raise FormatError(f"the pickle refers to {module}.{name}, which a data file has no "
                          "reason to use; it was not loaded (it could run code)")

    def persistent_load(self, pid: Any) -> Any:
        raise FormatError("the pickle uses persistent ids; it was not loaded")


def _finish(obj: Any, depth: int = 0) -> Any:
    """Turn sparse records into csr matrices and check that no array holds objects."""
    if depth > 20:
        raise FormatError("the pickled data is nested too deeply")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.kind not in "biuf":
            raise FormatError(f"the pickle holds an array of dtype {obj.dtype}; only numbers "
                              "are read")
        return obj
    if isinstance(obj, _SparseRecord):
        return _csr(obj.state)
    if isinstance(obj, tuple):
        return tuple(_finish(o, depth + 1) for o in obj)
    if isinstance(obj, list):
        return [_finish(o, depth + 1) for o in obj]
    if isinstance(obj, dict):
        return {k: _finish(v, depth + 1) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise FormatError(f"the pickle holds a {type(obj).__name__}; only arrays, numbers, "
                      "strings, lists and dicts are read")


def _csr(state: dict) -> Any:
    import scipy.sparse as sp

    try:
        data, indices, indptr = (state[k] for k in ("data", "indices", "indptr"))
        shape = state.get("_shape", state.get("shape"))
        shape = (int(shape[0]), int(shape[1]))
    except (KeyError, TypeError, IndexError, ValueError):
        raise FormatError("a pickled sparse matrix lacks data, indices, indptr or shape") from None
    arrays = [data, indices, indptr]
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in arrays):
        raise FormatError("a pickled sparse matrix has malformed arrays")
    if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise FormatError("a pickled sparse matrix has non-integer indices")
    try:
        m = sp.csr_matrix((data, indices, indptr), shape=shape)
        m.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as e:
        raise FormatError(f"a pickled sparse matrix is inconsistent ({e})") from None
    return m


def load_data_pickle(file: IO[bytes] | bytes, *, sparse: bool = False,
                     containers: bool = False, what: str = "the data file") -> Any:
    """Load a pickle that may contain only numeric numpy arrays (and, as enabled, csr matrices
    and dicts of lists) inside tuples, lists and dicts, without running any of its code.

    Raises FormatError naming `what` for anything else, and for a corrupt or truncated pickle.
    """
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    try:
        obj = _RestrictedUnpickler(file, sparse=sparse, containers=containers).load()
        return _finish(obj)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError, OSError) as e:
        raise FormatError(f"{what} is not a readable data pickle ({type(e).__name__}: {e})"
                          ) from None
