"""relreps: relative representations (Moschella et al., ICLR 2023).

A sample's relative representation is its similarity to a set of anchor samples embedded in the
same latent space. It is invariant to the transformations the similarity is invariant to (angles:
rotations, reflections, rescaling), which makes latent spaces of different models comparable and
lets heads trained on one model's relative space work zero-shot on another's.

Submodules and names are imported on first use, so ``import relreps`` (and the command line's
``--help``) does not load torch or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from relreps.errors import AnchorError, MissingDependencyError, RelrepsError

__version__ = "0.2.0"

# public name -> module that defines it
_LAZY = {
    "relative_projection": "relreps.projection",
    "RelativeProjection": "relreps.projection",
    "StitchedClassifier": "relreps.stitching",
    "LatentTranslator": "relreps.translation",
    "AnchorSet": "relreps.anchors",
    "save": "relreps.persistence",
    "load": "relreps.persistence",
    "compare_spaces": "relreps.workflow.compare",
}
_SUBMODULES = ("anchors", "centering", "metrics", "neighbors", "similarity", "projection",
               "stitching", "translation", "nn", "io", "runs", "persistence", "validation",
               "errors", "workflow", "distributed", "cache", "encoders", "datasets", "experiments")

__all__ = ["__version__", "RelrepsError", "AnchorError", "MissingDependencyError",
           *_LAZY, *_SUBMODULES]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from relreps import anchors, metrics, similarity  # noqa: F401
    from relreps.projection import RelativeProjection, relative_projection  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"relreps.{name}")
    else:
        raise AttributeError(f"module 'relreps' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
