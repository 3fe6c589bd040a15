"""Adapters that turn raw inputs (texts, words, images) into embeddings, with a disk cache."""

from relreps.encoders.base import Encoder, cached_encode

__all__ = ["Encoder", "cached_encode"]
