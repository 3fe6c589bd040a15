"""Similarity functions for relative projections, each with its declared invariance classes.

A similarity maps samples ``x`` (n, d) and anchors ``a`` (k, d) to an (n, k) matrix. Each entry of
the registry declares which transformations ``T`` of the latent space leave
``sim(T(x), T(a))`` unchanged; the test suite proves every declared invariance and shows every
undeclared one failing.

Invariance classes (the transformation is applied to samples and anchors alike):

- ``orthogonal``: ``x -> x Q`` for any orthogonal ``Q`` (rotations and reflections);
- ``isotropic_scaling``: ``x -> s x`` for any ``s > 0``;
- ``translation``: ``x -> x + t`` for any vector ``t``;
- ``permutation``: ``x -> x P`` for a permutation ``P`` of the coordinates;
- ``linear``: ``x -> x M`` for any invertible ``M`` (holds when the anchors span the space).

Centring on the anchor mean (``center="anchors"`` in :func:`relreps.relative_projection`) adds
``translation`` to any similarity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from relreps.errors import AnchorError, RelrepsError

INVARIANCES = ("orthogonal", "isotropic_scaling", "translation", "permutation", "linear")

__all__ = ["INVARIANCES", "Similarity", "register", "get", "available", "invariances",
           "random_transform", "check_invariances"]


def _identity(anchors: torch.Tensor) -> torch.Tensor:
    return anchors


@dataclass(frozen=True)
class Similarity:
    """A similarity function with its declared invariances.

    ``prepare(anchors)`` computes whatever depends on the anchors alone (once per projection, so a
    chunked projection pays for it once); ``apply(x, state)`` returns the (n, k) similarities.
    """

    name: str
    apply: Callable[[torch.Tensor, Any], torch.Tensor]
    invariances: frozenset[str]
    prepare: Callable[[torch.Tensor], Any] = _identity
    needs_nonzero: bool = False  # zero vectors have no direction (cosine, angular)
    min_anchors: int = 1
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.prepare(anchors))


_REGISTRY: dict[str, Similarity] = {}


def register(name: str, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
             *, invariances: Iterable[str], prepare: Callable[[torch.Tensor], Any] | None = None,
             needs_nonzero: bool = False, min_anchors: int = 1, description: str = "",
             overwrite: bool = False) -> Any:
    """Register a similarity under `name`; usable as a decorator.

    `fn(x, state)` receives torch tensors: `x` (n, d) and `state = prepare(anchors)` (the anchors
    themselves when `prepare` is None), and returns an (n, k) tensor. Declare only invariances
    that hold: :func:`check_invariances` tests them on random data.
    """
    inv = frozenset(invariances)
    unknown = inv - set(INVARIANCES)
    if unknown:
        raise RelrepsError(f"unknown invariance class(es) {sorted(unknown)}; "
                           f"choose from {INVARIANCES}")

    def deco(f: Callable) -> Callable:
        if name in _REGISTRY and not overwrite:
            raise RelrepsError(f"similarity {name!r} is already registered "
                               "(pass overwrite=True to replace it)")
        _REGISTRY[name] = Similarity(name=name, apply=f, invariances=inv,
                                     prepare=prepare or _identity, needs_nonzero=needs_nonzero,
                                     min_anchors=min_anchors,
                                     description=description or (f.__doc__ or "").strip())
        return f

    return deco(fn) if fn is not None else deco


def get(similarity: str | Similarity) -> Similarity:
    """The registered similarity called `similarity` (a Similarity passes through)."""
    if isinstance(similarity, Similarity):
        return similarity
    try:
        return _REGISTRY[similarity]
    except (KeyError, TypeError):
        raise RelrepsError(f"unknown similarity {similarity!r}; available: "
                           f"{', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def invariances(similarity: str | Similarity, center: Any = None) -> frozenset[str]:
    """Invariance classes of a projection with this similarity and centring choice."""
    inv = set(get(similarity).invariances)
    if isinstance(center, str) and center == "anchors":
        inv.add("translation")
    return frozenset(inv)


def random_transform(kind: str, d: int, generator: torch.Generator,
                     dtype: torch.dtype = torch.float64) -> Callable[[torch.Tensor], torch.Tensor]:
    """A random transformation of a d-dimensional space from invariance class `kind`."""
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    if kind == "orthogonal":
        q, r = torch.linalg.qr(randn(d, d))
        q = (q * torch.sign(torch.diagonal(r))).to(dtype)
        return lambda x: x @ q
    if kind == "isotropic_scaling":
        s = float(torch.empty(1).uniform_(0.2, 5.0, generator=generator))
        return lambda x: x * s
    if kind == "translation":
        t = randn(d).to(dtype) * 2.0
        return lambda x: x + t
    if kind == "permutation":
        p = torch.randperm(d, generator=generator)
        while d > 1 and bool((p == torch.arange(d)).all()):
            p = torch.randperm(d, generator=generator)
        return lambda x: x[:, p]
    if kind == "linear":
        m = (randn(d, d) + 0.5 * torch.eye(d, dtype=torch.float64)).to(dtype)
        return lambda x: x @ m
    raise RelrepsError(f"unknown invariance class {kind!r}; choose from {INVARIANCES}")


def check_invariances(similarity: str | Similarity, center: Any = None, *, n: int = 40,
                      d: int = 6, n_anchors: int = 12, trials: int = 3, rtol: float = 1e-6,
                      seed: int = 0) -> dict[str, bool]:
    """Which invariance classes hold empirically for `similarity` (float64 random data).

    For each class, random transformations are applied to samples and anchors alike; the class
    holds when every projection changes by at most `rtol` of its scale. Use it to check the
    declaration of a similarity you register.
    """
    from relreps.projection import relative_projection

    gen = torch.Generator().manual_seed(seed)
    out = {}
    for kind in INVARIANCES:
        ok = True
        for _ in range(trials):
            x = torch.randn(n, d, generator=gen, dtype=torch.float64)
            a = torch.randn(n_anchors, d, generator=gen, dtype=torch.float64)
            t = random_transform(kind, d, gen)
            r0 = relative_projection(x, a, similarity=similarity, center=center)
            r1 = relative_projection(t(x), t(a), similarity=similarity, center=center)
            scale = float(r0.abs().max()) or 1.0
            ok &= float((r0 - r1).abs().max()) <= rtol * scale
        out[kind] = bool(ok)
    return out


# --------------------------------------------------------------------------- built-ins

def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / torch.linalg.vector_norm(t, dim=1, keepdim=True)


def _cosine(x: torch.Tensor, unit_anchors: torch.Tensor) -> torch.Tensor:
    # Divide the (n, k) products rather than normalising the (n, d) samples: one pass less.
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    # A norm that overflowed to inf (huge finite x) would give a silent 0: make the row NaN so
    # relative_projection reports it.
    norms = norms.masked_fill(torch.isinf(norms), float("nan"))
    return (x @ unit_anchors.T).div_(norms)


register("cosine", _cosine, prepare=_unit, needs_nonzero=True,
         invariances={"orthogonal", "isotropic_scaling", "permutation"},
         description="Cosine similarity (the paper's choice): angle between sample and anchor.")


def _angular(x: torch.Tensor, unit_anchors: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps
    cos = _cosine(x, unit_anchors).clamp(-1 + eps, 1 - eps)
    return 1.0 - torch.arccos(cos) / math.pi


register("angular", _angular, prepare=_unit, needs_nonzero=True,
         invariances={"orthogonal", "isotropic_scaling", "permutation"},
         description="Angular similarity 1 - angle/pi, in [0, 1]; a metric version of cosine.")


def _inner(x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    return x @ anchors.T


register("inner", _inner, invariances={"orthogonal", "permutation"},
         description="Inner product: keeps norms, so it is not scale invariant.")


def _euclidean(x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(x, anchors, p=2.0)


register("euclidean", _euclidean, invariances={"orthogonal", "translation", "permutation"},
         description="Negative Euclidean distance.")


def _l1(x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(x, anchors, p=1.0)


register("l1", _l1, invariances={"translation", "permutation"},
         description="Negative L1 (Manhattan) distance: axis-aligned, so not rotation invariant.")


def _linf(x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    return -torch.cdist(x, anchors, p=float("inf"))


register("linf", _linf, invariances={"translation", "permutation"},
         description="Negative L-infinity (Chebyshev) distance.")


def _rbf_prepare(anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = anchors.shape[0]
    d = torch.cdist(anchors, anchors, p=2.0)
    iu = torch.triu_indices(k, k, offset=1, device=anchors.device)
    sigma = d[iu[0], iu[1]].median()
    if not bool(sigma > 0):
        raise AnchorError("rbf similarity: the median distance between anchors is 0 "
                          "(duplicate anchors); the bandwidth is undefined")
    return anchors, sigma


def _rbf(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    anchors, sigma = state
    return torch.exp(-torch.cdist(x, anchors, p=2.0).square() / (2 * sigma.square()))


register("rbf", _rbf, prepare=_rbf_prepare, min_anchors=2,
         invariances={"orthogonal", "isotropic_scaling", "translation", "permutation"},
         description="Gaussian kernel exp(-d^2 / 2 sigma^2), sigma = median distance between "
                     "anchors (so the kernel rescales with the space).")


def _basis_prepare(anchors: torch.Tensor) -> torch.Tensor:
    return torch.linalg.pinv(anchors)  # (d, k)


def _basis(x: torch.Tensor, pinv: torch.Tensor) -> torch.Tensor:
    return x @ pinv


register("basis", _basis, prepare=_basis_prepare,
         invariances={"orthogonal", "isotropic_scaling", "permutation", "linear"},
         description="Change of basis: least-squares (minimum-norm) coordinates of x in the "
                     "anchor basis; invariant to any invertible linear map when the anchors span "
                     "the space.")
