"""relreps: relative representations (Moschella et al., ICLR 2023).

A sample's relative representation is its similarity to a set of anchor samples embedded in the
same latent space. It is invariant to the transformations the similarity is invariant to (angles:
rotations, reflections, rescaling), which makes latent spaces of different models comparable and
lets heads trained on one model's relative space work zero-shot on another's.
"""

from relreps import anchors, metrics, similarity
from relreps.errors import AnchorError, MissingDependencyError, RelrepsError
from relreps.projection import RelativeProjection, relative_projection

__version__ = "0.1.0"

__all__ = ["relative_projection", "RelativeProjection", "similarity", "anchors", "metrics",
           "RelrepsError", "AnchorError", "MissingDependencyError", "__version__"]
