"""Adapters that turn raw inputs (texts, words, images) into embeddings, with a disk cache.

`CachedEncoder(fn_or_encoder, name)` / `cached_encode(name, items, fn)` cache any encoder's
embeddings on disk; `load_text_encoder(name_or_folder)` loads the offline text encoders.
"""

from relreps.encoders.base import CachedEncoder, Encoder, cached_encode

__all__ = ["Encoder", "CachedEncoder", "cached_encode", "load_text_encoder", "TEXT_ENCODERS"]

_LAZY = {"load_text_encoder": "relreps.encoders.text", "TEXT_ENCODERS": "relreps.encoders.text"}


def __getattr__(name: str):
    """Import optional adapters on first use, so this package imports without their packages."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
