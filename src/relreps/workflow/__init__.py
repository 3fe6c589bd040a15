"""From "I have two models" to an answer: compare embedding spaces, stitch classifiers across
encoders, embed texts. The command line's ``compare``, ``stitch`` and ``embed`` are thin layers
over these functions.

- :func:`relreps.workflow.compare.compare_spaces`: how alike are these spaces (a
  :class:`~relreps.workflow.compare.CompareReport`).
- :mod:`relreps.workflow.stitch`: fit a :class:`relreps.StitchedClassifier` on one encoder's
  embeddings and predict from another's.
- :func:`relreps.workflow.embed.embed_texts`: embed a text file, in partitions that a rerun
  resumes, optionally on a Dask cluster.

Submodules are imported on first use (``import relreps.workflow`` loads nothing heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["compare_spaces", "CompareReport", "embed_texts"]

_LAZY = {"compare_spaces": "relreps.workflow.compare", "CompareReport": "relreps.workflow.compare",
         "embed_texts": "relreps.workflow.embed"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
