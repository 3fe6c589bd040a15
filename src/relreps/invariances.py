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
from relreps._numerics import pow2_scale
from relreps.errors import InputTypeError, RelrepsError
from relreps.projection import _project
from relreps.validation import check_array, check_choice, check_float, check_int

__all__ = ["DEFAULT_SIMILARITIES", "product_projection", "normalize_rows",
           "ProductRelativeLayer", "AGGREGATIONS", "NORMALIZATIONS"]

DEFAULT_SIMILARITIES = ("cosine", "euclidean", "l1", "linf")
AGGREGATIONS = ("concat", "sum", "mean", "weighted")
NORMALIZATIONS = ("standard", "l2", "none")
Aggregation = Literal["concat", "sum", "mean", "weighted"]
Normalization = Literal["standard", "l2", "none"]


def normalize_rows(r: Array, normalization: Normalization = "standard", eps: float = 1e-8
                   ) -> Array:
    """Normalise each row of a relative representation (numpy or torch, differentiable).

    Rows are divided by a power of two of their magnitude (exact) before and after centring, so
    the normalisation is the same at any scale and offset of the similarities, from subnormal to
    the largest floats; `eps` guards constant rows.
    """
    check_choice(normalization, "normalization", NORMALIZATIONS)
    eps = check_float(eps, "eps", min_value=0.0)
    r = check_array(r, "r", min_features=1)
    if normalization == "none":
        return r
    t = r if is_torch(r) else torch.from_numpy(np.asarray(r))
    if not t.is_meta and t.numel():
        t = t / pow2_scale(t)
    if normalization == "standard":
        t = t - t.mean(1, keepdim=True)
        if not t.is_meta and t.numel():
            # rescale the centred rows too: `eps` is then relative to each row's spread, not
            # to its offset (a row 50 + 0.01 * z kept eps at ~1e-4 of its std: ~1e-4 error)
            t = t / pow2_scale(t)
        if t.shape[1] > 1:
            t = t / (t.std(1, unbiased=False, keepdim=True) + eps)
    else:
        t = t / (torch.linalg.vector_norm(t, dim=1, keepdim=True) + eps)
    return t if is_torch(r) else t.numpy()


def _check(similarities: Sequence[str], aggregation: str) -> list[str]:
    if isinstance(similarities, str) or not isinstance(similarities, Sequence):
        raise InputTypeError(f"similarities must be a sequence of similarity names, got "
                             f"{similarities!r}")
    sims = list(similarities)
    if not sims:
        raise RelrepsError("a product of invariances needs at least one similarity")
    names = [_sim.get(s).name for s in sims]
    if len(set(names)) != len(names):
        raise RelrepsError(f"similarities repeat: {names}")
    check_choice(aggregation, "aggregation", AGGREGATIONS)
    return sims


def product_projection(x: Array, anchors: Array, *,
                       similarities: Sequence[str] = DEFAULT_SIMILARITIES,
                       center: str | None = None, normalization: Normalization = "standard",
                       aggregation: Aggregation = "concat", weights: Sequence[float] | None = None,
                       chunk_size: int | None = None) -> Array:
    """Relative projections of `x` onto `anchors` under several similarities, aggregated.

    Returns (n, k * len(similarities)) for ``"concat"`` (blocks in the order of `similarities`),
    otherwise (n, k). ``"weighted"`` sums the normalised projections with `weights` (required,
    one finite number per similarity). numpy in, numpy out; torch in, torch out (differentiable).
    `center` is any value :func:`relreps.relative_projection` takes (``"auto"`` decides once from
    the anchors, the same for every similarity).
    """
    sims = _check(similarities, aggregation)
    check_choice(normalization, "normalization", NORMALIZATIONS)
    same_kind(x, anchors, names=("x", "anchors"))
    w: list[float] | None = None
    if aggregation == "weighted":
        if weights is None or isinstance(weights, str) or not hasattr(weights, "__len__") \
                or len(weights) != len(sims):
            raise RelrepsError(f"aggregation='weighted' needs one weight per similarity "
                               f"({len(sims)}), got {weights!r}")
        w = [check_float(v, f"weights[{i}]") for i, v in enumerate(weights)]
    elif weights is not None:
        raise RelrepsError(f"weights are only used with aggregation='weighted', not "
                           f"{aggregation!r}")
    parts = [normalize_rows(_project(x, anchors, similarity=s, center=center,
                                     chunk_size=chunk_size, warn=i == 0, stacklevel=4),
                            normalization) for i, s in enumerate(sims)]
    if aggregation == "concat":
        return torch.cat(parts, 1) if is_torch(x) else np.concatenate(parts, 1)
    if w is None:
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
        check_choice(normalization, "normalization", NORMALIZATIONS)
        check_choice(anchor_grad, "anchor_grad", ("detach", "full"))
        check_int(n_anchors, "n_anchors", min_value=1, allow_none=True)
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

    def weights(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Current aggregation weights, one per similarity (learned ones on their device)."""
        n = len(self.similarities)
        if self.logits is not None:
            return torch.softmax(self.logits, 0)
        return torch.full((n,), 1.0 if self.aggregation == "sum" else 1.0 / n, device=device)

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        for name, t in (("x", x), ("anchors", anchors)):
            if not is_torch(t):
                raise InputTypeError(f"{name} must be a torch tensor (this is a torch module), "
                                     f"got {type(t).__name__}; use product_projection for numpy")
        if self.anchor_grad == "detach":
            anchors = anchors.detach()
        if self.n_anchors is not None and anchors.shape[0] != self.n_anchors:
            raise RelrepsError(f"layer was built for {self.n_anchors} anchors, got "
                               f"{anchors.shape[0]}")
        parts = [normalize_rows(_project(x, anchors, similarity=s, center=self.center,
                                         warn=False), self.normalization)
                 for s in self.similarities]
        if self.aggregation == "concat":
            return torch.cat(parts, 1)
        w = self.weights(parts[0].device).to(dtype=parts[0].dtype, device=parts[0].device)
        return (torch.stack(parts, 0) * w[:, None, None]).sum(0)

    def extra_repr(self) -> str:
        return (f"similarities={self.similarities}, aggregation={self.aggregation!r}, "
                f"normalization={self.normalization!r}, center={self.center!r}")
