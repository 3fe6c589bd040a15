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

Numerical range: the built-in similarities are exact to the dtype's precision for every finite
input, from subnormal values to the largest floats. Inputs outside a safe band are rescaled by
powers of two (only exponents change, so nothing is rounded) and the result is scaled back; a
result that truly exceeds the dtype's range (an inner product of two float32 vectors of norm
1e30, say) is reported as :class:`~relreps.errors.NumericalError` by the projection, never
returned as inf or NaN. User-registered similarities get the same guarantee from the other side:
their inputs are checked for NaN/inf and their outputs for shape, dtype and finiteness.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from relreps._numerics import host_matmul, pow2_global_scale, pow2_scale, scaled_rows
from relreps.errors import AnchorError, InputTypeError, RelrepsError
from relreps.validation import check_bool, check_callable, check_int

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
    ``self_checking`` marks the built-ins, which detect non-finite input rows and unrepresentable
    results themselves (see :class:`BadRows`); the projection checks the input and the output of
    every other similarity. ``degree`` (built-ins) lets the projection centre in a frame scaled by
    a power of two and scale the result back exactly.
    """

    name: str
    apply: Callable[[torch.Tensor, Any], torch.Tensor]
    invariances: frozenset[str]
    prepare: Callable[[torch.Tensor], Any] = _identity
    needs_nonzero: bool = False  # zero vectors have no direction (cosine, angular)
    min_anchors: int = 1
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    self_checking: bool = False
    degree: int | None = None  # sim(s x, s a) = s**degree sim(x, a) for s > 0 (None: unknown)

    def __call__(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.prepare(anchors))


class BadRows(Exception):  # noqa: N818 - a control-flow signal, caught by relreps.projection
    """Raised by a self-checking similarity for the rows of a block it cannot return finite.

    `rows` is a boolean mask over the block's rows. The projection turns it into a named error
    (NaN/inf input, a zero vector, or a result outside the dtype's range) with absolute row
    numbers; it never reaches the user.
    """

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__("rows that cannot be represented")
        self.rows = rows


_REGISTRY: dict[str, Similarity] = {}


def register(name: str, fn: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
             *, invariances: Iterable[str], prepare: Callable[[torch.Tensor], Any] | None = None,
             needs_nonzero: bool = False, min_anchors: int = 1, description: str = "",
             overwrite: bool = False) -> Any:
    """Register a similarity under `name`; usable as a decorator.

    `fn(x, state)` receives torch tensors: `x` (n, d) and `state = prepare(anchors)` (the anchors
    themselves when `prepare` is None), and returns an (n, k) tensor. Declare only invariances
    that hold: :func:`check_invariances` tests them on random data. The projection refuses NaN or
    inf input before calling `fn`, and a result of the wrong type, shape or device, or with NaN or
    inf values, after (:class:`~relreps.errors.NumericalError`).
    """
    if not isinstance(name, str) or not name:
        raise InputTypeError(f"similarity name must be a non-empty string, got {name!r}")
    if isinstance(invariances, str):
        raise InputTypeError(f"invariances must be a collection of class names, got the string "
                             f"{invariances!r} (write {{{invariances!r}}})")
    try:
        inv = frozenset(invariances)
    except TypeError:
        raise InputTypeError(f"invariances must be a collection of class names from "
                             f"{INVARIANCES}, got {invariances!r}") from None
    unknown = inv - set(INVARIANCES)
    if unknown:
        raise RelrepsError(f"unknown invariance class(es) {sorted(map(str, unknown))}; "
                           f"choose from {INVARIANCES}")
    if prepare is not None:
        check_callable(prepare, "prepare")
    check_bool(needs_nonzero, "needs_nonzero")
    check_int(min_anchors, "min_anchors", min_value=1)
    check_bool(overwrite, "overwrite")
    if not isinstance(description, str):
        raise InputTypeError(f"description must be a string, got {description!r}")

    def deco(f: Callable) -> Callable:
        check_callable(f, "fn")
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
    """Names of the registered similarities, sorted."""
    return sorted(_REGISTRY)


def invariances(similarity: str | Similarity, center: Any = None) -> frozenset[str]:
    """Invariance classes of a projection with this similarity and centring choice.

    ``center="anchors"`` adds translation. A fixed centre vector does not (it does not move with
    the space), and neither does ``"auto"``, whose decision depends on the anchors: the classes
    returned are the ones guaranteed whatever is decided.
    """
    inv = set(get(similarity).invariances)
    if isinstance(center, str) and center == "anchors":
        inv.add("translation")
    return frozenset(inv)


def random_transform(kind: str, d: int, generator: torch.Generator,
                     dtype: torch.dtype = torch.float64) -> Callable[[torch.Tensor], torch.Tensor]:
    """A random transformation of a d-dimensional space from invariance class `kind`."""
    d = check_int(d, "d", min_value=1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    if kind == "orthogonal":
        q, r = torch.linalg.qr(randn(d, d))
        q = (q * torch.sign(torch.diagonal(r))).to(dtype)
        return lambda x: x @ q
    if kind == "isotropic_scaling":
        s = float(torch.empty(1, dtype=torch.float64).uniform_(0.2, 5.0, generator=generator))
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
    from relreps.projection import _project
    from relreps.validation import check_float

    sim = get(similarity)
    n = check_int(n, "n", min_value=1)
    d = check_int(d, "d", min_value=1)
    n_anchors = check_int(n_anchors, "n_anchors", min_value=max(1, sim.min_anchors))
    trials = check_int(trials, "trials", min_value=1)
    rtol = check_float(rtol, "rtol", min_value=0.0)
    seed = check_int(seed, "seed", min_value=0)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for kind in INVARIANCES:
        ok = True
        for _ in range(trials):
            x = torch.randn(n, d, generator=gen, dtype=torch.float64)
            a = torch.randn(n_anchors, d, generator=gen, dtype=torch.float64)
            t = random_transform(kind, d, gen)
            # Translated random clouds are anisotropic: the collapse warning would be noise here.
            r0 = _project(x, a, similarity=sim, center=center, warn=False)
            r1 = _project(t(x), t(a), similarity=sim, center=center, warn=False)
            scale = float(r0.abs().max()) or 1.0
            ok &= float((r0 - r1).abs().max()) <= rtol * scale
        out[kind] = bool(ok)
    return out


# --------------------------------------------------------------------------- range-safe helpers
#
# Rows "in band" have norms where plain products, sums of squares and distances can neither
# overflow nor lose precision to underflow; they take the plain (fast) path. Anything else is
# computed on rows or frames rescaled by powers of two and scaled back exactly.

def _band(dtype: torch.dtype, d: int) -> tuple[float, float]:
    """(lo, hi): row norms in [lo, hi] (or 0) are safe for plain products of two such rows."""
    fi = torch.finfo(dtype)
    return 4.0 * math.sqrt(max(d, 1) * fi.tiny), math.sqrt(fi.max) / 4.0


def _in_band(norms: torch.Tensor, lo: float, hi: float) -> bool:
    """True when every norm is finite and in [lo, hi] or exactly zero (one device sync)."""
    return bool((torch.isfinite(norms) & (norms <= hi) & ((norms >= lo) | (norms == 0))).all())


def _exponent(s: torch.Tensor) -> torch.Tensor:
    """Integer e with s == 2**e, for powers of two s."""
    return torch.frexp(s)[1] - 1


def _times_pow2(y: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """y * 2**e (e integer, broadcastable), without overflowing on the way to a finite result."""
    e1 = torch.div(e, 2, rounding_mode="floor")
    one = torch.ones((), dtype=y.dtype, device=y.device)
    return y * torch.ldexp(one, e1) * torch.ldexp(one, e - e1)


def _row_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-row powers of two >= max |x_i| (1 for zero rows); BadRows for non-finite rows."""
    m = x.detach().abs().amax(1, keepdim=True) if x.shape[1] else x.new_zeros((len(x), 1))
    bad = ~torch.isfinite(m).squeeze(1)
    if bool(bad.any()):
        raise BadRows(bad)
    return pow2_scale(m)


def _check_rows(out: torch.Tensor) -> torch.Tensor:
    """`out`, or BadRows for its rows that overflowed to inf (or NaN)."""
    bad = ~torch.isfinite(out.detach()).all(1)
    if bool(bad.any()):
        raise BadRows(bad)
    return out


def _scale_out(t: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """t * f, in place when no gradient needs t's value."""
    return t * f if t.requires_grad else t.mul_(f)


# --------------------------------------------------------------------------- products

_NUMPY_PRODUCTS: contextvars.ContextVar[bool] = contextvars.ContextVar("relreps_numpy_products",
                                                                      default=False)


@contextlib.contextmanager
def numpy_products() -> Iterator[None]:
    """Within this context the built-in similarities compute their matrix products with numpy's
    BLAS (on CPU tensors outside autograd): numpy input gets numpy's BLAS and threads, as
    ``x @ anchors.T`` would; torch input keeps torch's."""
    token = _NUMPY_PRODUCTS.set(True)
    try:
        yield
    finally:
        _NUMPY_PRODUCTS.reset(token)


def _matmul(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x @ b``; with numpy's BLAS inside :func:`numpy_products`."""
    return host_matmul(x, b) if _NUMPY_PRODUCTS.get() else x @ b


# --------------------------------------------------------------------------- built-ins

def _register_builtin(name: str, fn: Callable, *, invariances: set[str], description: str,
                      degree: int, prepare: Callable | None = None, needs_nonzero: bool = False,
                      min_anchors: int = 1) -> None:
    _REGISTRY[name] = Similarity(name=name, apply=fn, invariances=frozenset(invariances),
                                 prepare=prepare or _identity, needs_nonzero=needs_nonzero,
                                 min_anchors=min_anchors, description=description,
                                 self_checking=True, degree=degree)


def _unit(t: torch.Tensor) -> torch.Tensor:
    if t.is_meta:
        return t / torch.linalg.vector_norm(t, dim=1, keepdim=True)
    rows, norms = scaled_rows(t)
    return rows / torch.where(norms == 0, torch.ones_like(norms), norms)


def _cosine(x: torch.Tensor, unit_anchors: torch.Tensor) -> torch.Tensor:
    if x.is_meta:
        return x @ unit_anchors.T
    # Divide the (n, k) products rather than normalising the (n, d) samples: one pass less.
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    fi = torch.finfo(x.dtype)
    if not bool((torch.isfinite(norms) & (norms >= math.sqrt(fi.tiny) / fi.eps)).all()):
        # Rows with norms that overflowed or lost precision are rescaled by a power of two;
        # rows that are zero or non-finite cannot be projected.
        x, norms = scaled_rows(x)
        bad = (~torch.isfinite(norms) | (norms == 0)).squeeze(1)
        if bool(bad.any()):
            raise BadRows(bad)
    return _matmul(x, unit_anchors.T).div_(norms)


_register_builtin("cosine", _cosine, prepare=_unit, needs_nonzero=True,
                  degree=0,
                  invariances={"orthogonal", "isotropic_scaling", "permutation"},
                  description="Cosine similarity (the paper's choice): angle between sample "
                              "and anchor.")


def _angular(x: torch.Tensor, unit_anchors: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps
    cos = _cosine(x, unit_anchors)
    exact = torch.arccos(cos.clamp(-1.0, 1.0))
    # arccos has infinite slope at +-1 (a sample equal to an anchor): the gradient is taken just
    # inside, the value is exact.
    inside = torch.arccos(cos.clamp(-1 + eps, 1 - eps))
    angle = inside + (exact - inside).detach()
    return 1.0 - angle / math.pi


_register_builtin("angular", _angular, prepare=_unit, needs_nonzero=True,
                  degree=0,
                  invariances={"orthogonal", "isotropic_scaling", "permutation"},
                  description="Angular similarity 1 - angle/pi, in [0, 1]; a metric version of "
                              "cosine.")


@dataclass
class _RowScaled:
    """Anchors with each row divided by a power of two (exponents kept)."""

    a: torch.Tensor          # (k, d) as given
    a_s: torch.Tensor        # (k, d) rows scaled into [-1, 1]
    e: torch.Tensor          # (1, k) exponents of the row scales
    in_band: bool


def _inner_prepare(anchors: torch.Tensor) -> _RowScaled:
    s = pow2_scale(anchors)
    lo, hi = _band(anchors.dtype, anchors.shape[1])
    ok = not anchors.is_meta and _in_band(torch.linalg.vector_norm(anchors.detach(), dim=1),
                                          lo, hi)
    return _RowScaled(anchors, anchors / s, _exponent(s).reshape(1, -1), ok)


def _inner(x: torch.Tensor, st: _RowScaled) -> torch.Tensor:
    if x.is_meta:
        return x @ st.a.T
    lo, hi = _band(x.dtype, x.shape[1])
    if st.in_band and _in_band(torch.linalg.vector_norm(x.detach(), dim=1), lo, hi):
        return _matmul(x, st.a.T)  # |x . a| <= |x| |a| <= hi^2: cannot overflow
    sx = _row_scale(x)
    return _check_rows(_times_pow2(_matmul(x / sx, st.a_s.T), _exponent(sx) + st.e))


_register_builtin("inner", _inner, prepare=_inner_prepare,
                  degree=2,
                  invariances={"orthogonal", "permutation"},
                  description="Inner product: keeps norms, so it is not scale invariant.")


@dataclass
class _Frame:
    """Anchors divided by one power of two s >= their largest magnitude (centred if asked)."""

    a_s: torch.Tensor             # (k, d) (anchors - mu) / s, entries in [-2, 2]
    mu_s: torch.Tensor | None     # (1, d) mu / s
    s: torch.Tensor               # 0-d power of two
    limit: float                  # rows of x with a larger norm do not fit in the frame
    zero: bool                    # every anchor is 0: distances are the rows' own norms
    sigma_s: torch.Tensor | None = None  # rbf bandwidth in the frame


def _frame(anchors: torch.Tensor, centre: bool) -> _Frame:
    s = pow2_global_scale(anchors)
    a_s = anchors / s
    mu_s = a_s.mean(0, keepdim=True) if centre else None
    d = anchors.shape[1]
    # In the frame, rows of x up to `limit / s` keep every square and product finite.
    limit = math.inf if anchors.is_meta else \
        math.sqrt(torch.finfo(anchors.dtype).max / max(d, 1)) / 8.0 * float(s)
    zero = not anchors.is_meta and not bool((anchors.detach() != 0).any())
    return _Frame(a_s - mu_s if centre else a_s, mu_s, s, limit, zero)


def _split_rows(x: torch.Tensor, st: _Frame) -> torch.Tensor | None:
    """Rows too large for the anchors' frame (mask), None when all fit; BadRows for NaN/inf.

    A row is too large when its norm exceeds ``limit`` (at least ~1e15 times the largest anchor
    entry): its distance to every anchor then equals its own norm to within a relative 1e-14,
    far below the dtype's precision, and is computed that way.
    """
    xd = x.detach()
    norms = torch.linalg.vector_norm(xd, dim=1)
    if not st.zero and bool((norms <= st.limit).all()):
        return None
    m = xd.abs().amax(1) if x.shape[1] else norms
    if not bool(torch.isfinite(m).all()):
        raise BadRows(~torch.isfinite(m))
    if st.zero:
        return torch.ones_like(norms, dtype=torch.bool)
    # An overflowed norm is at most max|x_i| sqrt(d): compare max|x_i| with limit / sqrt(d)
    # (a limit beyond the dtype's range becomes inf: no row exceeds it).
    return torch.where(torch.isfinite(norms), norms > st.limit,
                       m > st.limit / math.sqrt(x.shape[1]))


def _euclid(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Euclidean distances, accurate also for near-duplicate pairs.

    ``torch.cdist`` computes large blocks as ``sqrt(|x|^2 + |a|^2 - 2 x.a)``, whose cancellation
    leaves an absolute error of ~sqrt(eps (|x|^2 + |a|^2)) on a distance near 0 (6e-8 instead
    of 0 in float64 for a sample equal to an anchor). Pairs whose squared distance is within
    sqrt(eps) of that error scale are recomputed directly; the others are then exact to
    ~eps^(3/4) relative (a handful of pairs, usually none).
    """
    d = torch.cdist(x, a, p=2.0)
    if d.numel() == 0:
        return d
    scale = x.detach().square().sum(1, keepdim=True) + a.detach().square().sum(1)[None, :]
    eps = torch.finfo(d.dtype).eps
    near = d.detach().square() < 4.0 * math.sqrt(eps) * scale
    if bool(near.any()):
        i, j = near.nonzero(as_tuple=True)
        d = d.index_put((i, j), torch.linalg.vector_norm(x[i] - a[j], dim=1))
    return d


def _p_distance(p: float, centre: bool) -> Callable[[torch.Tensor, _Frame], torch.Tensor]:
    # Entries of the frame are within [-4, 4] (x) and [-2, 2] (anchors): distances stay below
    # this bound before the frame's scale is put back.
    def bound(d: int) -> float:
        return 8.0 * (d if p == 1.0 else math.sqrt(d) if p == 2.0 else 1.0)

    def apply(x: torch.Tensor, st: _Frame) -> torch.Tensor:
        if x.is_meta:
            return -torch.cdist(x, st.a_s, p=p)
        big = _split_rows(x, st)
        xs = x if big is None else torch.where(big[:, None], 0.0, x)
        xs = xs / st.s
        if st.mu_s is not None:
            xs = xs - st.mu_s
        dist = _euclid(xs, st.a_s) if p == 2.0 else torch.cdist(xs, st.a_s, p=p)
        out = _scale_out(dist, -st.s)
        if big is not None:
            sx = pow2_scale(torch.where(big[:, None], x.detach(), 1.0))
            own = -torch.linalg.vector_norm(torch.where(big[:, None], x, 0.0) / sx, ord=p,
                                            dim=1, keepdim=True) * sx
            out = torch.where(big[:, None], own.expand_as(out), out)
        if big is not None or float(st.s) * bound(x.shape[1]) > torch.finfo(x.dtype).max / 2:
            _check_rows(out)  # true distances may exceed the dtype's range
        return out

    return apply


_register_builtin("euclidean", _p_distance(2.0, True), prepare=lambda a: _frame(a, centre=True),
                  degree=1,
                  invariances={"orthogonal", "translation", "permutation"},
                  description="Negative Euclidean distance.")
_register_builtin("l1", _p_distance(1.0, False), prepare=lambda a: _frame(a, centre=False),
                  degree=1,
                  invariances={"translation", "permutation"},
                  description="Negative L1 (Manhattan) distance: axis-aligned, so not rotation "
                              "invariant.")
_register_builtin("linf", _p_distance(math.inf, False),
                  prepare=lambda a: _frame(a, centre=False),
                  degree=1,
                  invariances={"translation", "permutation"},
                  description="Negative L-infinity (Chebyshev) distance.")


def _rbf_prepare(anchors: torch.Tensor) -> _Frame:
    st = _frame(anchors, centre=True)
    k = anchors.shape[0]
    d = torch.cdist(st.a_s, st.a_s, p=2.0)
    iu = torch.triu_indices(k, k, offset=1, device=anchors.device)
    st.sigma_s = d[iu[0], iu[1]].median()
    if not anchors.is_meta and not bool(st.sigma_s > 0):
        raise AnchorError("rbf similarity: the median distance between anchors is 0 "
                          "(duplicate anchors); the bandwidth is undefined")
    return st


def _rbf(x: torch.Tensor, st: _Frame) -> torch.Tensor:
    if x.is_meta:
        return torch.exp(-torch.cdist(x, st.a_s).square())
    big = _split_rows(x, st)
    xs = (x if big is None else torch.where(big[:, None], 0.0, x)) / st.s - st.mu_s
    # distance / sigma, both in the anchors' frame. Beyond qmax the kernel is 0 in this dtype:
    # clamping there keeps the value exact and the gradient finite. Rows too large for the frame
    # are farther than qmax sigma from every anchor.
    fi = torch.finfo(x.dtype)
    qmax = math.sqrt(-2.0 * (math.log(fi.tiny) + math.log(fi.eps))) + 1.0
    q = (torch.cdist(xs, st.a_s, p=2.0) / st.sigma_s).clamp(max=qmax)
    if big is not None:
        q = torch.where(big[:, None], qmax, q)
    return torch.exp(-0.5 * q.square())


_register_builtin("rbf", _rbf, prepare=_rbf_prepare, min_anchors=2,
                  degree=0,
                  invariances={"orthogonal", "isotropic_scaling", "translation", "permutation"},
                  description="Gaussian kernel exp(-d^2 / 2 sigma^2), sigma = median distance "
                              "between anchors (so the kernel rescales with the space).")


@dataclass
class _Pinv:
    p_s: torch.Tensor            # (d, k) pseudo-inverse of anchors / s
    e: torch.Tensor              # exponent of s
    p: torch.Tensor | None       # (d, k) pseudo-inverse of the anchors, when representable
    x_max: float                 # largest row norm of x for which x @ p cannot overflow


def _basis_prepare(anchors: torch.Tensor) -> _Pinv:
    s = pow2_global_scale(anchors)
    p_s = torch.linalg.pinv(anchors / s)  # (d, k); pinv(a) = pinv(a / s) / s
    if anchors.is_meta:
        return _Pinv(p_s, _exponent(s), p_s, math.inf)
    lo, hi = _band(anchors.dtype, anchors.shape[1])
    p, x_max = None, 0.0
    if _in_band(torch.linalg.vector_norm(anchors.detach(), dim=1), lo, hi):
        p = p_s / s
        col = float(torch.linalg.vector_norm(p.detach(), dim=0).max()) if p.numel() else 0.0
        if math.isfinite(col):
            x_max = torch.finfo(anchors.dtype).max / 4 / max(col, 1e-300)
        else:
            p = None
    return _Pinv(p_s, _exponent(s), p, x_max)


def _basis(x: torch.Tensor, st: _Pinv) -> torch.Tensor:
    if x.is_meta:
        return x @ st.p_s
    if st.p is not None:
        lo, _ = _band(x.dtype, x.shape[1])
        if _in_band(torch.linalg.vector_norm(x.detach(), dim=1), lo, st.x_max):
            return _matmul(x, st.p)  # |(x p)_j| <= |x| |p_j| <= max / 4
    sx = _row_scale(x)
    return _check_rows(_times_pow2(_matmul(x / sx, st.p_s), _exponent(sx) - st.e))


_register_builtin("basis", _basis, prepare=_basis_prepare,
                  degree=0,
                  invariances={"orthogonal", "isotropic_scaling", "permutation", "linear"},
                  description="Change of basis: least-squares (minimum-norm) coordinates of x in "
                              "the anchor basis; invariant to any invertible linear map when the "
                              "anchors span the space.")


# --------------------------------------------------------------------------- whitened cosine

@dataclass
class _Whitening:
    mean: torch.Tensor        # (1, d) anchor mean, float64
    w: torch.Tensor           # (d, d) inverse square root of the shrunk anchor covariance
    unit_anchors: torch.Tensor  # (k, d) whitened anchors, unit rows, float64


def _ledoit_wolf(centred: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(shrunk covariance, shrinkage) of centred rows: the Ledoit-Wolf estimate.

    ``(1 - s) S + s (tr(S) / d) I`` with S the empirical covariance and s the shrinkage that
    minimises the expected squared error (Ledoit & Wolf 2004; the formula of scikit-learn's
    ``ledoit_wolf``). Needs no parameter, and gives an invertible matrix when there are fewer rows
    than dimensions.
    """
    n, d = centred.shape
    emp = centred.T @ centred / n
    mu = torch.diagonal(emp).sum() / d
    x2 = centred.square()
    beta_ = (x2.T @ x2).sum()
    delta_ = emp.square().sum()
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * torch.diagonal(emp).sum() + d * mu.square()) / d
    beta = torch.minimum(beta, delta)
    s = 0.0 if float(delta) == 0.0 else float(beta / delta)
    eye = torch.eye(d, dtype=centred.dtype, device=centred.device)
    return (1.0 - s) * emp + s * mu * eye, s


def _whiten_prepare(anchors: torch.Tensor) -> _Whitening:
    a = anchors.to(torch.float64)
    mean = a.mean(0, keepdim=True)
    if anchors.is_meta:  # shapes only
        return _Whitening(mean, a.new_empty((a.shape[1], a.shape[1])), a)
    # The whitening matrix is a constant for autograd (gradients reach the anchors through the
    # mean and the whitened anchors): eigh's gradient is undefined at repeated eigenvalues, which
    # the shrinkage and the floor below produce.
    cov, _ = _ledoit_wolf((a - mean).detach())
    vals, vecs = torch.linalg.eigh(cov)
    # Directions with no variance among the anchors (a shrinkage of 0 on anchors that do not span
    # the space): floored at the input dtype's resolution of the largest variance, not divided
    # by zero.
    floor = float(vals.max()) * torch.finfo(anchors.dtype).eps if len(vals) else 0.0
    vals = vals.clamp(min=floor) if floor > 0 else vals
    if not bool((vals > 0).all()):
        raise AnchorError("whitened_cosine: the anchors have no variance (all anchors are equal); "
                          "the whitening is undefined")
    w = (vecs * vals.rsqrt()) @ vecs.T
    aw = (a - mean) @ w
    norms = torch.linalg.vector_norm(aw, dim=1, keepdim=True)
    if not bool((norms > 0).all()):
        raise AnchorError("whitened_cosine: an anchor equals the anchor mean, so it has no "
                          "direction after whitening")
    return _Whitening(mean, w, aw / norms)


def _whitened_cosine(x: torch.Tensor, st: _Whitening) -> torch.Tensor:
    # A sample equal to the anchor mean has no direction after whitening: its row is 0.
    z = _matmul(x.to(torch.float64) - st.mean, st.w)
    norms = torch.linalg.vector_norm(z, dim=1, keepdim=True)
    out = _matmul(z, st.unit_anchors.T) / torch.where(norms == 0, torch.ones_like(norms), norms)
    return out.to(x.dtype)


register("whitened_cosine", _whitened_cosine, prepare=_whiten_prepare, min_anchors=2,
         invariances={"orthogonal", "isotropic_scaling", "translation", "permutation"},
         description="Cosine after whitening each space with its own anchors (anchor mean and "
                     "Ledoit-Wolf shrunk covariance): equalises the variance of every direction, "
                     "so anisotropic encoders compare like isotropic ones; close to invariant to "
                     "any linear map when there are many more anchors than dimensions.")
