"""Product of invariances (Cannistraci et al., ICLR 2024): several relative projections at once.

Each similarity (cosine, Euclidean, L1, L-infinity, ...) makes the relative space invariant to a
different class of transformations. Which class relates two real latent spaces is unknown in
advance, so the projections are computed side by side, each normalised so their scales are
comparable, and aggregated: concatenated (the head chooses), summed, or summed with learned
weights (one softmax weight per similarity, trained with the head).

Normalisations (per sample, over the anchors, so nothing depends on the batch):

- ``"standard"`` (default): subtract the row mean, divide by the row std. This also makes the
  distance-based similarities invariant to isotropic rescaling of the space.
- ``"l2"``: unit rows. ``"none"``: raw similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from relreps import similarity as _sim
from relreps._backend import Array, is_torch, same_kind
from relreps.errors import RelrepsError
from relreps.projection import relative_projection

__all__ = ["DEFAULT_SIMILARITIES", "product_projection", "normalize_rows",
           "ProductRelativeLayer", "AGGREGATIONS", "NORMALIZATIONS"]

DEFAULT_SIMILARITIES = ("cosine", "euclidean", "l1", "linf")
AGGREGATIONS = ("concat", "sum", "mean", "weighted")
NORMALIZATIONS = ("standard", "l2", "none")
Aggregation = Literal["concat", "sum", "mean", "weighted"]
Normalization = Literal["standard", "l2", "none"]


def normalize_rows(r: Array, normalization: Normalization = "standard", eps: float = 1e-8
                   ) -> Array:
    """Normalise each row of a relative representation (numpy or torch, differentiable)."""
    if normalization not in NORMALIZATIONS:
        raise RelrepsError(f"normalization must be one of {NORMALIZATIONS}, "
                           f"got {normalization!r}")
    if normalization == "none":
        return r
    t = r if is_torch(r) else torch.from_numpy(np.asarray(r))
    if normalization == "standard":
        t = t - t.mean(1, keepdim=True)
        if t.shape[1] > 1:
            t = t / (t.std(1, unbiased=False, keepdim=True) + eps)
    else:
        t = t / (torch.linalg.vector_norm(t, dim=1, keepdim=True) + eps)
    return t if is_torch(r) else t.numpy()


def _check(similarities: Sequence[str], aggregation: str) -> list[str]:
    sims = list(similarities)
    if not sims:
        raise RelrepsError("a product of invariances needs at least one similarity")
    if len(set(sims)) != len(sims):
        raise RelrepsError(f"similarities repeat: {sims}")
    for s in sims:
        _sim.get(s)
    if aggregation not in AGGREGATIONS:
        raise RelrepsError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    return sims


def product_projection(x: Array, anchors: Array, *,
                       similarities: Sequence[str] = DEFAULT_SIMILARITIES,
                       center: str | None = None, normalization: Normalization = "standard",
                       aggregation: Aggregation = "concat", weights: Sequence[float] | None = None,
                       chunk_size: int | None = None) -> Array:
    """Relative projections of `x` onto `anchors` under several similarities, aggregated.

    Returns (n, k * len(similarities)) for ``"concat"`` (blocks in the order of `similarities`),
    otherwise (n, k). ``"weighted"`` sums the normalised projections with `weights` (required,
    one per similarity). numpy in, numpy out; torch in, torch out (differentiable).
    """
    sims = _check(similarities, aggregation)
    same_kind(x, anchors, names=("x", "anchors"))
    parts = [normalize_rows(relative_projection(x, anchors, similarity=s, center=center,
                                                chunk_size=chunk_size), normalization)
             for s in sims]
    lib = torch if is_torch(x) else np
    if aggregation == "concat":
        return lib.concatenate(parts, 1) if lib is np else torch.cat(parts, 1)
    if aggregation == "weighted":
        if weights is None or len(weights) != len(sims):
            raise RelrepsError(f"aggregation='weighted' needs one weight per similarity "
                               f"({len(sims)}), got {weights!r}")
        w = [float(v) for v in weights]
    else:
        w = [1.0] * len(sims) if aggregation == "sum" else [1.0 / len(sims)] * len(sims)
    out = parts[0] * w[0]
    for p, wi in zip(parts[1:], w[1:]):
        out = out + p * wi
    return out


class ProductRelativeLayer(nn.Module):
    """`forward(x, anchors)`: the product-of-invariances relative representation as a layer.

    ``aggregation="weighted"`` learns one logit per similarity (softmax weights, initialised
    equal) trained with the rest of the network; ``"concat"`` returns
    ``n_anchors * len(similarities)`` features (see :attr:`out_features`).
    """

    def __init__(self, similarities: Sequence[str] = DEFAULT_SIMILARITIES,
                 aggregation: Aggregation = "concat", normalization: Normalization = "standard",
                 center: str | None = None, n_anchors: int | None = None,
                 anchor_grad: Literal["detach", "full"] = "detach") -> None:
        super().__init__()
        self.similarities = _check(similarities, aggregation)
        if normalization not in NORMALIZATIONS:
            raise RelrepsError(f"normalization must be one of {NORMALIZATIONS}, "
                               f"got {normalization!r}")
        if anchor_grad not in ("detach", "full"):
            raise RelrepsError(f"anchor_grad must be 'detach' or 'full', got {anchor_grad!r}")
        self.aggregation = aggregation
        self.normalization = normalization
        self.center = center
        self.n_anchors = n_anchors
        self.anchor_grad = anchor_grad
        self.logits = nn.Parameter(torch.zeros(len(self.similarities))) \
            if aggregation == "weighted" else None

    @property
    def out_features(self) -> int | None:
        if self.n_anchors is None:
            return None
        return self.n_anchors * (len(self.similarities) if self.aggregation == "concat" else 1)

    def weights(self) -> torch.Tensor:
        """Current aggregation weights, one per similarity."""
        n = len(self.similarities)
        if self.logits is not None:
            return torch.softmax(self.logits, 0)
        return torch.full((n,), 1.0 if self.aggregation == "sum" else 1.0 / n)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        if self.anchor_grad == "detach":
            anchors = anchors.detach()
        if self.n_anchors is not None and anchors.shape[0] != self.n_anchors:
            raise RelrepsError(f"layer was built for {self.n_anchors} anchors, got "
                               f"{anchors.shape[0]}")
        parts = [normalize_rows(relative_projection(x, anchors, similarity=s, center=self.center),
                                self.normalization) for s in self.similarities]
        if self.aggregation == "concat":
            return torch.cat(parts, 1)
        w = self.weights().to(dtype=parts[0].dtype, device=parts[0].device)
        return (torch.stack(parts, 0) * w[:, None, None]).sum(0)

    def extra_repr(self) -> str:
        return (f"similarities={self.similarities}, aggregation={self.aggregation!r}, "
                f"normalization={self.normalization!r}, center={self.center!r}")
