"""On-disk cache for computed arrays (embeddings, trained models), keyed by content, atomic."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir() -> Path:
    """Cache root: $RELREPS_CACHE, else $XDG_CACHE_HOME/relreps, else ~/.cache/relreps."""
    root = os.environ.get("RELREPS_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        path = Path(base) / "relreps"
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def cached_array(namespace: str, key: str, compute: Callable[[], np.ndarray],
                 root: Path | None = None) -> np.ndarray:
    """Load `namespace/key.npy` from the cache, or compute it, save it atomically and return it."""
    path = (root or cache_dir()) / namespace / f"{key}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # a corrupt entry is recomputed
    value = np.asarray(compute())
    atomic_save_npy(path, value)
    return value
