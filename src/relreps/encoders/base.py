"""The encoder contract and the on-disk embedding cache shared by every adapter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from relreps.cache import atomic_save_npy, cache_dir, content_key
from relreps.progress import progress


@runtime_checkable
class Encoder(Protocol):
    """Anything that maps a batch of inputs (texts, words, ...) to a float32 (n, dim) array.

    `name` is a stable identifier of the model (and its pooling/normalisation) used in cache keys.
    """

    name: str

    def encode(self, items: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def cached_encode(encoder_name: str, items: Sequence[str],
                  fn: Callable[[Sequence[str]], np.ndarray], *, batch_size: int = 64,
                  desc: str | None = None, use_cache: bool = True) -> np.ndarray:
    """Encode `items` with `fn` in batches, with a progress bar, cached on disk.

    The cache key is (encoder_name, the exact item contents in order); writes are atomic, so an
    interrupted run leaves no partial entry.
    """
    items = list(items)
    key = content_key("encode-v1", encoder_name, items)
    path = cache_dir() / "embeddings" / encoder_name.replace("/", "_") / f"{key}.npy"
    if use_cache and path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError):
            path.unlink(missing_ok=True)
    chunks = []
    starts = range(0, len(items), batch_size)
    for s in progress(starts, desc=desc or f"encode {encoder_name}", total=len(starts)):
        chunks.append(np.asarray(fn(items[s:s + batch_size]), dtype=np.float32))
    out = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, 0), np.float32)
    if use_cache:
        atomic_save_npy(path, out)
    return out
