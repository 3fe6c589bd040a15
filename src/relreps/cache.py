"""On-disk cache for computed arrays (embeddings, features, trained models), keyed by content.

Threat model (see docs/reliability.md): whoever can write to the cache folder
(``$RELREPS_CACHE``) can change what a later run reads, but cannot make relreps run code.
Entries are plain data (``.npy`` read with ``allow_pickle=False``, ``.safetensors``, JSON); every
entry is checked against what the caller expects (shape, dtype, finiteness, a custom check) before
it is used, and an entry that fails (empty, truncated, wrong shape or dtype, NaN, a pickle, not a
regular file) is deleted and recomputed, never used and never fatal. Writes are atomic (a
temporary file renamed into place), so readers see an old entry or a whole new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, RunFolderError, ShapeError

__all__ = ["CacheWarning", "cache_dir", "ensure_cache_writable", "content_key",
           "atomic_write_bytes", "atomic_save_npy", "load_entry", "save_entry", "validate_value",
           "cached_array", "safe_name", "regular_file", "discard_entry"]

#: Shape expectation: a tuple of sizes where None matches any size.
ShapeSpec = Sequence[int | None]


class CacheWarning(RuntimeWarning):
    """The cache could not be used (unwritable, shared with other users); work goes on without."""


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, CacheWarning, stacklevel=3)


def cache_dir() -> Path:
    """Cache root: $RELREPS_CACHE, else $XDG_CACHE_HOME/relreps, else ~/.cache/relreps.

    The folder is created if missing. Raises RunFolderError (naming the variable) when it cannot
    be created; warns once (CacheWarning) when any user may write to it, since whoever writes to
    the cache decides what later runs read.
    """
    root = os.environ.get("RELREPS_CACHE")
    if root:
        path = Path(root).expanduser()
        source = "RELREPS_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        path = Path(base) / "relreps"
        source = "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the home folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create the relreps cache folder {path} (from {source}): "
                             f"{e.strerror or e}; set RELREPS_CACHE to a writable folder") from None
    if not path.is_dir():
        raise RunFolderError(f"the relreps cache {path} (from {source}) is not a folder; set "
                             "RELREPS_CACHE to a writable folder")
    try:
        mode = path.stat().st_mode
    except OSError:  # pragma: no cover - removed between the calls
        mode = 0
    if mode & stat.S_IWOTH:  # (even with the sticky bit: others can pre-create the subfolders)
        _warn_once(f"world:{path}", f"the relreps cache {path} is writable by every user: "
                   "anyone can plant entries that later runs read (data only, never code). "
                   "Use a private folder (chmod o-w) or set RELREPS_CACHE.")
    return path


def ensure_cache_writable() -> Path:
    """The cache root, after checking that a file can be created in it (RunFolderError if not).

    Commands call this before long computations, so an unwritable cache fails at once.
    """
    path = cache_dir()
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RunFolderError(f"the relreps cache {path} is not writable ({e.strerror or e}); set "
                             "RELREPS_CACHE to a writable folder") from None
    return path


_SAFE = re.compile(r"[^A-Za-z0-9_.+@-]")


def safe_name(name: str) -> str:
    """`name` as one path component: characters outside [A-Za-z0-9_.+@-] become "_", and leading
    dots are removed, so no name can leave its cache folder ("..", "/", absolute paths)."""
    if not isinstance(name, str):
        raise InputTypeError(f"a cache name must be a string, got {type(name).__name__}")
    out = _SAFE.sub("_", name).lstrip(".")
    return out[:200] or "_"


def _json_default(o: Any) -> Any:
    """JSON stand-in for a dict value: arrays by their full content (str() elides elements)."""
    if isinstance(o, np.ndarray) or (hasattr(o, "detach") and hasattr(o, "numpy")):
        return {"__array_content_key__": content_key(o)}
    return str(o)


def content_key(*parts: Any) -> str:
    """A sha256 hex digest over the parts (strings, numbers, arrays, iterables of texts, dicts)."""
    h = hashlib.sha256()

    def feed(p: Any) -> None:
        if hasattr(p, "detach") and hasattr(p, "numpy"):  # a torch tensor: hash its values
            p = p.detach().cpu().numpy()
        if isinstance(p, np.ndarray):
            h.update(b"nd" + str(p.dtype).encode() + str(p.shape).encode())
            if p.dtype == object:  # the bytes of an object array are pointers, not content
                feed(p.ravel().tolist())
            else:
                h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, (bytes, bytearray)):
            h.update(b"b" + bytes(p))
        elif isinstance(p, str):
            h.update(b"s" + p.encode("utf-8") + b"\x00")
        elif isinstance(p, dict):
            h.update(b"d" + json.dumps(p, sort_keys=True, default=_json_default).encode())
        elif isinstance(p, (list, tuple)) or (isinstance(p, Iterable) and not isinstance(p, str)):
            h.update(b"[")
            for q in p:
                feed(q)
            h.update(b"]")
        else:
            h.update(b"r" + repr(p).encode())

    for part in parts:
        feed(part)
    return h.hexdigest()


def current_umask() -> int:
    """The process's file-creation mask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes so that readers see the old file or the whole new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save `array` as .npy (never pickled) atomically: the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------- reading


def regular_file(path: Path) -> bool:
    """True when `path` is (or links to) a regular file: never a FIFO, device or folder, which
    could block a reader forever or feed it endless bytes."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def discard_entry(path: Path) -> None:
    """Remove a bad cache entry: a file, a link (not what it points to) or a folder planted in
    its place. Failures are ignored (the entry is then recomputed without being cached)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _shape_ok(shape: tuple[int, ...], spec: ShapeSpec | None) -> bool:
    if spec is None:
        return True
    spec = tuple(spec)
    return len(shape) == len(spec) and all(s is None or int(s) == n for s, n in zip(spec, shape))


def _spec_text(spec: ShapeSpec) -> str:
    return "(" + ", ".join("*" if s is None else str(int(s)) for s in spec) + \
        ("," if len(tuple(spec)) == 1 else "") + ")"


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of an .npy file; ValueError when it is not a plain one."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(s) for s in shape), np.dtype(dtype), f.tell()


def _problem(arr: np.ndarray, shape: ShapeSpec | None, dtype: Any, finite: bool,
             check: Callable[[np.ndarray], Any] | None) -> str | None:
    """Why `arr` does not meet the expectation, or None."""
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        return f"dtype {arr.dtype} is not numeric"
    if dtype is not None and arr.dtype != np.dtype(dtype):
        return f"dtype {arr.dtype}, expected {np.dtype(dtype)}"
    if not _shape_ok(arr.shape, shape):
        return f"shape {arr.shape}, expected {_spec_text(shape)}"  # type: ignore[arg-type]
    if finite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        return "NaN or inf values"
    if check is not None:
        try:
            ok = check(arr)
        except RelrepsError as e:
            return str(e)
        if ok is not None and not ok:
            return "the caller's check failed"
    return None


def load_entry(path: str | Path, *, shape: ShapeSpec | None = None, dtype: Any = None,
               finite: bool = True, check: Callable[[np.ndarray], Any] | None = None
               ) -> np.ndarray | None:
    """A validated .npy cache entry, or None when it is missing or bad (a bad one is deleted).

    The header is read first, so a file whose shape, dtype or size is wrong is rejected before
    its data is read; pickled content is never loaded (``allow_pickle=False``). `shape` may hold
    None for any size; `check` is called on the array and may return False or raise a
    RelrepsError to reject it.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return None
    if not regular_file(path):
        discard_entry(path)
        return None
    try:
        hshape, hdtype, offset = _npy_header(path)
        if hdtype.hasobject:
            raise ValueError("object arrays are never loaded")
        if not _shape_ok(hshape, shape) or (dtype is not None and hdtype != np.dtype(dtype)):
            raise ValueError("unexpected shape or dtype")
        if os.path.getsize(path) != offset + math.prod(hshape) * hdtype.itemsize:
            raise ValueError("truncated or padded file")
        arr = np.load(path, allow_pickle=False)
        if not isinstance(arr, np.ndarray) or _problem(arr, shape, dtype, finite, check):
            raise ValueError("bad content")
    except Exception:  # noqa: BLE001 - any unreadable entry is recomputed; loading runs no code
        discard_entry(path)
        return None
    return arr


def validate_value(value: Any, what: str, *, shape: ShapeSpec | None = None, dtype: Any = None,
                   finite: bool = True, check: Callable[[np.ndarray], Any] | None = None
                   ) -> np.ndarray:
    """A computed value about to be cached, as an ndarray meeting the same expectation that a
    cache entry must meet (cast to `dtype` when that loses no kind); a named error otherwise."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise InputTypeError(f"{what}: the computed value ({type(value).__name__}) is not a "
                             "rectangular array") from None
    cast = ""
    if dtype is not None and arr.dtype != np.dtype(dtype):
        cast = f" (after conversion from {arr.dtype} to {np.dtype(dtype)})"
        if arr.dtype.hasobject or not np.can_cast(arr.dtype, np.dtype(dtype), "same_kind"):
            raise InputTypeError(f"{what}: computed dtype {arr.dtype}, expected "
                                 f"{np.dtype(dtype)}")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            arr = arr.astype(dtype)
    if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
        raise InputTypeError(f"{what}: computed dtype {arr.dtype} is not numeric")
    if not _shape_ok(arr.shape, shape):
        raise ShapeError(f"{what}: computed shape {arr.shape}, expected "
                         f"{_spec_text(shape)}")  # type: ignore[arg-type]
    if finite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise NonFiniteError(f"{what}: the computed values hold NaN or inf{cast}")
    problem = _problem(arr, None, None, False, check)
    if problem:
        raise RelrepsError(f"{what}: {problem}")
    return arr


def save_entry(path: Path, value: np.ndarray | bytes) -> bool:
    """Save a cache entry (an array as .npy, or bytes as they are) atomically; on failure
    (read-only cache, full disk) warn once and return False: a cache that cannot be written
    never stops the computation."""
    try:
        if isinstance(value, (bytes, bytearray)):
            atomic_write_bytes(path, bytes(value))
        else:
            atomic_save_npy(path, value)
        return True
    except OSError as e:
        _warn_once(f"write:{Path(path).parent}", f"could not write the cache entry {path} "
                   f"({e.strerror or e}); results are computed but not cached")
        return False


_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def _entry_path(root: Path, namespace: str, key: str) -> Path:
    parts = [*str(namespace).split("/"), str(key)]
    for p in parts:
        if not _SEGMENT.match(p):
            raise RelrepsError(f"cache namespace/key {namespace!r}/{key!r}: each part must match "
                               "[A-Za-z0-9_][A-Za-z0-9_.+-]* (no '..', no absolute paths)")
    return root.joinpath(*parts[:-1], parts[-1] + ".npy")


def cached_array(namespace: str, key: str, compute: Callable[[], Any],
                 root: Path | None = None, *, shape: ShapeSpec | None = None, dtype: Any = None,
                 finite: bool = True, check: Callable[[np.ndarray], Any] | None = None
                 ) -> np.ndarray:
    """Load `namespace/key.npy` from the cache, or compute it, save it atomically and return it.

    The entry must match `shape` (None for any size), `dtype` and, with `finite=True` (the
    default), hold no NaN/inf, and pass `check`; one that does not is deleted and recomputed.
    The computed value is held to the same expectation (a named error if it fails) before it is
    saved.
    """
    if not callable(compute):
        raise InputTypeError(f"compute must be a callable returning the array, got "
                             f"{type(compute).__name__}")
    path = _entry_path(Path(root) if root is not None else cache_dir(), namespace, key)
    got = load_entry(path, shape=shape, dtype=dtype, finite=finite, check=check)
    if got is not None:
        return got
    value = validate_value(compute(), f"cache entry {namespace}/{key}", shape=shape, dtype=dtype,
                           finite=finite, check=check)
    save_entry(path, value)
    return value
