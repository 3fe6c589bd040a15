"""The encoder contract and the on-disk embedding cache shared by every adapter.

`cached_encode` (a function) and `CachedEncoder` (a wrapper object) cache ANY encoder's
embeddings on disk, keyed by a name you choose and the exact items in order::

    from relreps.encoders import CachedEncoder
    enc = CachedEncoder(my_model.encode, name="my-model-v3")   # or CachedEncoder(obj_with_encode)
    x = enc.encode(texts)        # computed once, then read back from $RELREPS_CACHE

The name stands for the model: give a new name whenever the model (weights, pooling,
preprocessing) changes, or the cache returns the old model's embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from relreps.cache import (
    cache_dir,
    content_key,
    load_entry,
    safe_name,
    save_entry,
    validate_value,
)
from relreps.errors import InputTypeError, RelrepsError
from relreps.progress import progress
from relreps.validation import check_bool, check_callable, check_int, is_torch

__all__ = ["Encoder", "cached_encode", "CachedEncoder"]


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps a batch of inputs (texts, words, ...) to a float32 (n, dim) array.

    `name` is a stable identifier of the model (and its pooling/normalisation) used in cache keys.
    """

    name: str

    def encode(self, items: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def _check_name(name: Any, arg: str = "name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputTypeError(f"{arg} must be a non-empty string naming the model (it keys the "
                             f"cache), got {name!r}")
    return name


def _check_items(items: Any) -> list:
    """Items as a list; each must be hashable by content (str, bytes, a number or an array)."""
    if isinstance(items, (str, bytes)):
        raise InputTypeError("items must be a sequence of inputs (e.g. a list of texts), got a "
                             "single string")
    if is_torch(items) or isinstance(items, np.ndarray):
        items = list(items)
    try:
        items = list(items)
    except TypeError:
        raise InputTypeError(f"items must be a sequence of inputs, got "
                             f"{type(items).__name__}") from None
    for i, it in enumerate(items):
        ok = isinstance(it, (str, bytes, int, float, np.ndarray, np.generic)) or is_torch(it)
        if not ok or isinstance(it, bool) or (isinstance(it, np.ndarray) and it.dtype.hasobject):
            raise InputTypeError(
                f"items[{i}] is a {type(it).__name__}; cached encoding needs items whose content "
                "can be hashed: strings, bytes, numbers or numeric arrays")
    return items


def cached_encode(encoder_name: str, items: Sequence[Any],
                  fn: Callable[[Sequence[Any]], Any], *, batch_size: int = 64,
                  desc: str | None = None, use_cache: bool = True,
                  dim: int | None = None) -> np.ndarray:
    """Encode `items` with `fn` in batches, with a progress bar, cached on disk.

    Returns float32 (len(items), dim). The cache key is (encoder_name, the exact item contents in
    order); writes are atomic, so an interrupted run leaves no partial entry. A cached entry is
    used only if it has exactly one finite float32 row per item and, when `dim` is given, `dim`
    columns (pass `dim` whenever the width is known: without it a cached entry's width cannot be
    checked); anything else is recomputed. `fn` must return one finite row per item
    (NonFiniteError, ShapeError otherwise).
    """
    _check_name(encoder_name, "encoder_name")
    check_callable(fn, "fn")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    use_cache = check_bool(use_cache, "use_cache")
    dim = check_int(dim, "dim", min_value=1, allow_none=True)
    items = _check_items(items)
    n = len(items)
    shape = (n, dim)
    path = None
    if use_cache:
        key = content_key("encode-v1", encoder_name, items)
        path = cache_dir() / "embeddings" / safe_name(encoder_name) / f"{key}.npy"
        got = load_entry(path, shape=shape, dtype=np.float32)
        if got is not None:
            return got
    chunks: list[np.ndarray] = []
    width = dim
    starts = range(0, n, batch_size)
    for s in progress(starts, desc=desc or f"encode {encoder_name}", total=len(starts)):
        batch = items[s:s + batch_size]
        out = fn(batch)
        if is_torch(out):
            out = out.detach().cpu().numpy()
        try:
            arr = np.asarray(out)
        except (TypeError, ValueError):
            raise InputTypeError(f"{encoder_name}: the encoder returned a "
                                 f"{type(out).__name__}, not an array") from None
        if arr.ndim != 2 or arr.shape[0] != len(batch):
            raise RelrepsError(f"{encoder_name}: the encoder returned shape {arr.shape} for "
                               f"{len(batch)} items; expected one row per item (2-D)")
        chunk = validate_value(arr, f"{encoder_name} embeddings", dtype=np.float32,
                               shape=(len(batch), width))
        width = int(chunk.shape[1])
        chunks.append(chunk)
    if chunks:
        out = np.concatenate(chunks, axis=0)
    else:
        out = np.zeros((0, dim or 0), np.float32)
    out = validate_value(out, f"{encoder_name} embeddings", shape=shape, dtype=np.float32)
    if path is not None:
        save_entry(path, out)
    return out


class CachedEncoder:
    """Any encoder with an on-disk cache of its embeddings.

    Parameters
    ----------
    encoder : a callable ``fn(batch) -> (len(batch), dim)`` array, or an object with
        ``encode(batch)`` (a sentence-transformers model, a relreps encoder, ...).
    name : identifies the model in the cache key; change it whenever the model changes.
    batch_size : items passed to the encoder at once.
    dim : the embedding width, when known (checked against the encoder's output).

    ``encode(items)`` returns float32 (len(items), dim), computed once per distinct list of items
    and read back from ``$RELREPS_CACHE`` afterwards (validated; a bad entry is recomputed).
    """

    def __init__(self, encoder: Any, name: str, *, batch_size: int = 64,
                 dim: int | None = None) -> None:
        if callable(getattr(encoder, "encode", None)):
            fn = encoder.encode
        elif callable(encoder):
            fn = encoder
        else:
            raise InputTypeError(f"encoder must be a callable or have an encode() method, got "
                                 f"{type(encoder).__name__}")
        self.encoder = encoder
        self.name = _check_name(name)
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self._dim = check_int(dim, "dim", min_value=1, allow_none=True)
        self._fn = fn

    @property
    def dim(self) -> int | None:
        """The embedding width (known after the first encode, or from `dim`)."""
        return self._dim

    def encode(self, items: Sequence[Any], batch_size: int | None = None, *,
               use_cache: bool = True, desc: str | None = None) -> np.ndarray:
        """float32 (len(items), dim) embeddings of `items`, cached on disk by content."""
        bs = self.batch_size if batch_size is None else check_int(batch_size, "batch_size",
                                                                   min_value=1)
        out = cached_encode(self.name, items, self._fn, batch_size=bs, desc=desc,
                            use_cache=use_cache, dim=self._dim)
        if self._dim is None and out.shape[0]:
            self._dim = int(out.shape[1])
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return f"CachedEncoder(name={self.name!r}, dim={self._dim})"
