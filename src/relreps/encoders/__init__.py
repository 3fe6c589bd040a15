"""Adapters that turn raw inputs (texts, words, images) into embeddings, with a disk cache."""

from relreps.encoders.base import Encoder, cached_encode

__all__ = ["Encoder", "cached_encode", "load_text_encoder", "TEXT_ENCODERS"]

_LAZY = {"load_text_encoder": "relreps.encoders.text", "TEXT_ENCODERS": "relreps.encoders.text"}


def __getattr__(name: str):
    """Import optional adapters on first use, so this package imports without their packages."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
