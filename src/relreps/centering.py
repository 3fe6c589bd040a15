"""Centring decisions: when plain cosine to anchors collapses, and what ``center="auto"`` does.

Many encoders are *anisotropic*: their embeddings share a large common direction, so every pair
has a high cosine (multilingual-e5-small: 0.7-0.9). Plain cosine to anchors then gives nearly the
same value for every anchor (relative entries 0.76 ± 0.02) and the relative space carries almost
no information; a head trained on another encoder predicts one class for everything. Subtracting
the anchor mean first (``center="anchors"``) removes the common direction.

The anisotropy of a set of anchor embeddings is their mean pairwise cosine (computed in O(k d)
from the mean of the unit vectors). ``center="auto"`` centres when any space taking part has an
anisotropy above :data:`AUTO_THRESHOLD`; the decision is taken jointly for all spaces that must
stay comparable (a head fitted on one and evaluated on another), because a centred space and an
uncentred one are not comparable. Below the threshold the anchor mean is small against the
embeddings' norms and centring changes little either way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from relreps.errors import RelrepsError

__all__ = ["AUTO_THRESHOLD", "COLLAPSE_THRESHOLD", "AnisotropyWarning", "anisotropy",
           "CenterDecision", "resolve_center", "warn_if_collapsing"]

#: Mean pairwise anchor cosine above which ``center="auto"`` centres.
AUTO_THRESHOLD = 0.2
#: Mean pairwise anchor cosine above which plain cosine is warned about (near collapse).
COLLAPSE_THRESHOLD = 0.5


class AnisotropyWarning(UserWarning):
    """Plain cosine on a strongly anisotropic space: the relative space is close to collapse."""


def anisotropy(anchor_embeddings: Any) -> float:
    """Mean pairwise cosine of the anchors (i != j): ~0 for isotropic spaces, -> 1 at collapse.

    Computed from the mean of the unit vectors u: ``(k |mean(u)|^2 - 1) / (k - 1)``, exact and
    O(k d). numpy or torch input; needs at least 2 anchors.
    """
    import torch

    from relreps._numerics import unit_rows
    from relreps.validation import check_array, is_torch

    a = check_array(anchor_embeddings, "anchor_embeddings", min_rows=2)
    t = a.detach() if is_torch(a) else torch.from_numpy(np.asarray(a))
    t = t.to(torch.float64)
    u, _ = unit_rows(t)
    k = t.shape[0]
    m = u.mean(0)
    return float((k * float(m @ m) - 1.0) / (k - 1))


@dataclass
class CenterDecision:
    """The centring applied to all spaces, and why (recorded in reports and saved models)."""

    center: str | None  # None or "anchors"
    requested: Any
    anisotropy: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"center": self.center, "requested": self.requested if isinstance(
            self.requested, (str, type(None))) else "vector", "anisotropy": self.anisotropy,
                "reason": self.reason}


def resolve_center(center: Any, anchor_sets: dict[str, Any] | None = None,
                   threshold: float = AUTO_THRESHOLD) -> CenterDecision:
    """Turn ``center`` (None, "none", "anchors", "auto") into one decision for all spaces.

    `anchor_sets` maps a space name to its anchor embeddings; it is needed for ``"auto"``, which
    centres every space when any of them has an anisotropy above `threshold`.
    """
    if center is None or (isinstance(center, str) and center == "none"):
        return CenterDecision(None, center, reason="no centring requested")
    if isinstance(center, str) and center == "anchors":
        return CenterDecision("anchors", center, reason="centring on the anchor mean requested")
    if not (isinstance(center, str) and center == "auto"):
        raise RelrepsError(f"center must be None, 'none', 'anchors' or 'auto', got {center!r}")
    if not anchor_sets:
        raise RelrepsError("center='auto' needs the anchor embeddings of every space")
    aniso = {name: anisotropy(a) for name, a in anchor_sets.items()}
    worst = max(aniso, key=aniso.get)
    if aniso[worst] > threshold:
        return CenterDecision("anchors", center, aniso,
                              f"auto: centred, anisotropy of {worst} is {aniso[worst]:.2f} "
                              f"> {threshold}")
    return CenterDecision(None, center, aniso,
                          f"auto: not centred, every anisotropy <= {threshold} "
                          f"(max {aniso[worst]:.2f}, {worst})")


def warn_if_collapsing(anchor_embeddings: Any, center: Any, similarity: str, *,
                       name: str = "anchors", stacklevel: int = 3) -> float | None:
    """Warn (AnisotropyWarning) when plain cosine-type similarity meets anisotropic anchors.

    Returns the anisotropy when it was measured (cosine/angular without centring), else None.
    """
    if center is not None or similarity not in ("cosine", "angular"):
        return None
    if anchor_embeddings.shape[0] < 2:
        return None
    a = anisotropy(anchor_embeddings)
    if a > COLLAPSE_THRESHOLD:
        warnings.warn(f"{name}: mean pairwise cosine {a:.2f} (anisotropic space): plain "
                      f"{similarity} to anchors is close to collapse (every sample gets nearly "
                      "the same relative vector); use center='anchors' or center='auto'",
                      AnisotropyWarning, stacklevel=stacklevel)
    return a
