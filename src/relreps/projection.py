"""The relative projection: every sample described by its similarities to a set of anchors.

:func:`relative_projection` is the function, :class:`RelativeProjection` the scikit-learn
transformer. Both take numpy arrays (``np.memmap`` included, streamed in blocks), torch tensors
(results stay on the tensor's device and in its autograd graph) and dask arrays (the result is a
lazy dask array, one task per row block). Every value is checked on the way: NaN or inf inputs,
zero vectors under cosine, results outside the dtype's range and a misbehaving user similarity
are named errors, never a silent wrong number.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from relreps import similarity as _sim
from relreps._backend import Array, to_numpy
from relreps._numerics import pow2_global_scale, safe_row_norms
from relreps._sklearn import check_is_fitted, validate_data
from relreps.centering import (
    COLLAPSE_THRESHOLD,
    CenterDecision,
    resolve_center,
    warn_if_collapsing,
)
from relreps.errors import (
    AnchorError,
    FormatError,
    InputTypeError,
    NumericalError,
    RelrepsError,
    ShapeError,
)
from relreps.validation import (
    array_kind,
    check_array,
    check_finite_block,
    check_int,
    check_labels,
    is_dask,
    is_torch,
    release_pages,
)

__all__ = ["relative_projection", "RelativeProjection"]

Center = str | Any | None

#: Elements per block when memory must stay bounded (memory-mapped x, ``out=``, dask blocks)
#: and no ``chunk_size`` is given: 2**24 (64 MiB of float32) for the larger of a block's input
#: and output.
BLOCK_ELEMENTS = 1 << 24

_CENTER_WORDS = ("none", "anchors", "auto")


# --------------------------------------------------------------------------- the plan

@dataclass
class _Plan:
    """Everything a block needs: validated once per projection, shared by all blocks."""

    sim: _sim.Similarity
    dtype: torch.dtype
    mu: torch.Tensor | None  # (1, d) centre (in the frame's units), on the computation's device
    scale: torch.Tensor | None  # power of two of the frame when centring in one
    out_e: int               # results are multiplied by 2**out_e (a framed similarity's degree)
    state: Any               # sim.prepare(centred anchors)
    k: int
    d: int
    name: str
    decision: CenterDecision
    graph: bool              # anchors or centre carry an autograd graph

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(str(self.dtype).removeprefix("torch."))


def _rows_text(idx: torch.Tensor, offset: int) -> str:
    idx = idx.flatten().tolist()
    rows = ", ".join(str(int(i) + offset) for i in idx[:5])
    return rows + (f" (and {len(idx) - 5} more)" if len(idx) > 5 else "")


def _safe_mean(a: torch.Tensor) -> torch.Tensor:
    """(1, d) mean of the rows, without overflow for any finite input (power-of-two scaling)."""
    s = pow2_global_scale(a)
    return (a / s).mean(0, keepdim=True) * s


def _frame_scale(sim: _sim.Similarity, a_t: torch.Tensor, mu: torch.Tensor) -> torch.Tensor | None:
    """Power of two to centre in ((x - mu) / s), or None to centre in the data's units.

    Centring subtracts nearly equal numbers: for anchors near the subnormal range the differences
    lose bits, near the largest floats they overflow. In a frame where the anchors are ~1 neither
    happens, and similarities of known degree are scaled back exactly. Samples must then fit in
    that frame (within the dtype's range of the anchors' magnitude).
    """
    if sim.degree is None or a_t.is_meta:
        return None
    s = torch.maximum(pow2_global_scale(a_t), pow2_global_scale(mu))
    fi = torch.finfo(a_t.dtype)
    return None if fi.tiny / fi.eps**2 <= float(s) <= fi.max * fi.eps else s


def _zero_rows(vc: torch.Tensor, mu: torch.Tensor | None) -> torch.Tensor:
    """Rows without a direction: exactly zero, or (after centring on `mu`) within the rounding
    noise of the centre (norm <= 64 eps |mu|). Range-safe; NaN rows are not flagged."""
    vd = vc.detach()
    md = None if mu is None else mu.detach()
    if md is None or not bool((md != 0).any()):
        return (vd == 0).all(1)
    fi = torch.finfo(vd.dtype)
    mn = float(torch.linalg.vector_norm(md))
    if math.isfinite(mn) and mn >= math.sqrt(fi.tiny) / fi.eps:
        # In the dtype, no copy: a norm that overflows is not noise, one that underflows is
        # far below the threshold anyway.
        return torch.linalg.vector_norm(vd, dim=1) <= 64 * fi.eps * mn
    s = pow2_global_scale(md)
    ref = 64 * fi.eps * safe_row_norms(md / s).reshape(())
    return safe_row_norms(vd / s).squeeze(1) <= ref


def _center_vector(center: Any, d: int) -> Any:
    """A validated (d,) centre vector (numpy or torch, as given)."""
    nd = center.ndim if hasattr(center, "ndim") else None
    if nd is None:
        try:
            nd = np.ndim(center)
        except (ValueError, TypeError):
            nd = 1  # ragged: check_array names the problem
    if nd not in (1, 2):
        raise ShapeError(f"center vector must have shape ({d},), got a {nd}-D value; use None, "
                         "'none', 'anchors', 'auto' or a vector")
    vec = check_array(center, "center vector", ndim=nd, min_features=0)
    if tuple(vec.shape) not in ((d,), (1, d)):
        raise ShapeError(f"center vector must have shape ({d},), got {tuple(vec.shape)}")
    return vec.reshape(d)


def _check_center_param(center: Any) -> None:
    """Type-level check of a `center` argument (values are checked against the anchors)."""
    if center is None or (hasattr(center, "shape") or isinstance(center, (list, tuple))):
        return
    if isinstance(center, str):
        if center not in _CENTER_WORDS:
            raise RelrepsError(f"center must be None, 'none', 'anchors', 'auto' or a (d,) "
                               f"vector; got {center!r}")
        return
    raise InputTypeError(f"center must be None, 'none', 'anchors', 'auto' or a (d,) vector; "
                         f"got {center!r} ({type(center).__name__})")


def _decide_center(center: Any, a_t: torch.Tensor, sim: _sim.Similarity, *, warn: bool,
                   training: bool, stacklevel: int) -> tuple[CenterDecision, torch.Tensor | None]:
    """The centring decision for these anchors and the centre vector it implies."""
    _check_center_param(center)
    d = a_t.shape[1]
    if center is None or isinstance(center, str):
        if isinstance(center, str) and center == "auto" and (a_t.is_meta or len(a_t) < 2):
            why = "meta tensors carry no values" if a_t.is_meta else "a single anchor"
            decision = CenterDecision("anchors" if a_t.is_meta else None, center,
                                      reason=f"auto: {why}, "
                                             f"{'centred' if a_t.is_meta else 'not centred'}")
        else:
            decision = resolve_center(center, {"anchors": a_t})
        if warn and decision.center is None and center != "auto" and not a_t.is_meta \
                and not training and sim.name in ("cosine", "angular"):
            warn_if_collapsing(a_t.detach(), None, sim.name, stacklevel=stacklevel + 1)
        mu = _safe_mean(a_t) if decision.center == "anchors" else None
        return decision, mu
    vec = _center_vector(center, d)
    mu = (vec if is_torch(vec) else torch.from_numpy(np.asarray(vec)))
    mu = mu.to(device=a_t.device, dtype=a_t.dtype).reshape(1, d)
    return CenterDecision("vector", "vector", reason="centred on the given vector"), mu


def _may_collapse(sim: _sim.Similarity, state: Any) -> bool:
    """False when the prepared unit anchors of the built-in cosine/angular are clearly isotropic
    (their mean pairwise cosine, from the mean unit vector, well below the warning threshold):
    saves the full measurement on every call of a batch loop."""
    if not sim.self_checking or len(state) < 2:
        return True
    k = len(state)
    m = state.detach().mean(0)
    return (k * float(m @ m) - 1.0) / (k - 1) > COLLAPSE_THRESHOLD - 0.01


def _plan(x: Any, anchors: Any, similarity: Any, center: Any, *, name: str, warn: bool,
          stacklevel: int = 3) -> tuple[_Plan, Any, str]:
    """Validate everything but x's values (checked block by block) and prepare the anchors."""
    sim = _sim.get(similarity)
    kind = array_kind(x)
    if kind == "dask":
        if is_torch(anchors):
            raise InputTypeError(f"{name} is a dask array but anchors are a torch tensor; pass "
                                 "numpy (or dask) anchors with dask input")
        if is_dask(anchors):
            anchors = anchors.compute()
    elif is_torch(x) != is_torch(anchors):
        raise InputTypeError(f"mixed numpy and torch inputs ({name}={array_kind(x)}, "
                             f"anchors={array_kind(anchors)}); pass both as numpy arrays or both "
                             "as torch tensors")
    x = check_array(x, name, finite=False, kinds=("numpy", "torch", "dask"))
    anchors = check_array(anchors, "anchors", kinds=("numpy", "torch"))
    n_anchors, d = anchors.shape
    if x.shape[1] != d:
        raise ShapeError(f"dimension mismatch: {name} has {x.shape[1]} features, anchors have "
                         f"{d}; anchors must be embedded in the same space as {name}")
    if n_anchors < sim.min_anchors:
        raise AnchorError(f"{sim.name} similarity needs at least {sim.min_anchors} "
                          f"anchor(s), got {n_anchors}")
    if kind == "torch":
        if x.device != anchors.device:
            raise InputTypeError(f"{name} is on {x.device} but anchors are on {anchors.device}; "
                                 "move them to one device")
        dtype = torch.promote_types(x.dtype, anchors.dtype)
        a_t = anchors.to(dtype)
        training = torch.is_grad_enabled() and (x.requires_grad or a_t.requires_grad)
    else:
        np_dtype = np.result_type(x.dtype, anchors.dtype)
        if kind == "dask":  # the result is lazy: later changes to the caller's arrays must
            a_t = torch.from_numpy(np.array(anchors, dtype=np_dtype, order="C"))  # not reach it
            center = center.copy() if isinstance(center, np.ndarray) else \
                center.detach().clone() if is_torch(center) else center
        else:
            a_t = _as_tensor(np.asarray(anchors), np_dtype, sim.self_checking)
        dtype = a_t.dtype
        training = False
    decision, mu = _decide_center(center, a_t, sim, warn=False, training=training,
                                  stacklevel=stacklevel + 1)
    known = not a_t.is_meta
    scale, out_e = None, 0
    if mu is not None:
        s = _frame_scale(sim, a_t, mu)
        if s is not None:
            scale = s  # divide: 1 / s may overflow (subnormal anchors)
            mu = (a_t / s).mean(0, keepdim=True) if decision.center == "anchors" else mu / s
            a_t = torch.addcdiv(-mu, a_t, s)
            out_e = 0 if a_t.is_meta else sim.degree * int(torch.frexp(s)[1]) - sim.degree
        else:
            a_t = a_t - mu
        if known and not bool(torch.isfinite(a_t.detach()).all()):
            raise NumericalError(f"anchors minus the centre overflow {dtype} (values near the "
                                 "dtype's limit); cast x and anchors to float64")
    if known and sim.needs_nonzero:
        zero = _zero_rows(a_t, mu)
        if bool(zero.any()):
            why = "" if mu is None else " after centring" + (
                " on the anchor mean" if decision.center == "anchors" else " on the given centre")
            raise AnchorError(f"anchors has zero vectors{why} at rows "
                              f"{_rows_text(torch.nonzero(zero), 0)}: {sim.name} similarity is "
                              "undefined for them")
    state = sim.prepare(a_t)
    if warn and decision.center is None and center != "auto" and known and not training \
            and sim.name in ("cosine", "angular") and _may_collapse(sim, state):
        warn_if_collapsing(a_t.detach(), None, sim.name, stacklevel=stacklevel + 1)
    graph = a_t.requires_grad or (mu is not None and mu.requires_grad)
    return _Plan(sim, dtype, mu, scale, out_e, state, n_anchors, d, name, decision, graph), x, kind


# --------------------------------------------------------------------------- one block

def _diagnose(plan: _Plan, block: torch.Tensor, xc: torch.Tensor, rows: torch.Tensor,
              offset: int) -> None:
    """Raise the named error for the rows of a block whose similarities are not finite."""
    check_finite_block(block, plan.name, offset)
    rows = rows.detach().reshape(-1)
    if plan.mu is not None:
        over = ~torch.isfinite(xc.detach()).all(1)
        if bool(over.any()):
            why = ("values near the dtype's limit" if plan.scale is None else
                   "the anchors are near the dtype's limits and these rows are too far from "
                   "their magnitude")
            raise NumericalError(f"{plan.name} minus the centre overflows {plan.dtype} at rows "
                                 f"{_rows_text(torch.nonzero(over), offset)} ({why}); cast to "
                                 "float64")
    if plan.sim.needs_nonzero:
        zero = (xc.detach() == 0).all(1) & rows
        if bool(zero.any()):
            why = "" if plan.mu is None else " after centring"
            raise RelrepsError(f"{plan.name} has zero vectors{why} at rows "
                               f"{_rows_text(torch.nonzero(zero), offset)}: cosine-type "
                               "similarities are undefined for them")
    where = _rows_text(torch.nonzero(rows), offset)
    if plan.sim.self_checking:
        hint = "cast to float64 or rescale" if plan.dtype != torch.float64 else "rescale"
        raise NumericalError(f"{plan.sim.name} similarities of {plan.name} at rows {where} "
                             f"exceed the range of {plan.dtype} (their true values cannot be "
                             f"represented): {hint} the embeddings")
    raise NumericalError(f"similarity {plan.sim.name!r} returned NaN or inf for finite inputs "
                         f"at rows {where}")


def _check_result(plan: _Plan, r: Any, block: torch.Tensor, xc: torch.Tensor,
                  offset: int) -> torch.Tensor:
    name = plan.sim.name
    if not is_torch(r):
        raise InputTypeError(f"similarity {name!r} returned a {type(r).__name__}; it must "
                             "return a torch tensor")
    n = block.shape[0]
    if tuple(r.shape) != (n, plan.k):
        raise ShapeError(f"similarity {name!r} returned shape {tuple(r.shape)} for {n} rows and "
                         f"{plan.k} anchors; expected {(n, plan.k)}")
    if r.device != block.device:
        raise InputTypeError(f"similarity {name!r} returned a tensor on {r.device} for input "
                             f"on {block.device}")
    if r.is_complex() or not r.is_floating_point():
        raise InputTypeError(f"similarity {name!r} returned dtype {r.dtype}; expected a real "
                             "floating-point tensor")
    r = r.to(plan.dtype)
    if not plan.sim.self_checking and not r.is_meta and n:
        bad = _nonfinite_rows(r)
        if bad is not None:
            _diagnose(plan, block, xc, bad, offset)
    return r


def _nonfinite_rows(t: torch.Tensor) -> torch.Tensor | None:
    """Mask of the rows holding NaN or inf, None when there are none (one reduction when all are
    finite: a finite total proves it; an overflowing total of finite values is checked)."""
    td = t.detach()
    if bool(torch.isfinite(td.sum())):
        return None
    bad = ~torch.isfinite(td).all(1)
    return bad if bool(bad.any()) else None


def _apply_block(plan: _Plan, block: torch.Tensor, offset: int) -> torch.Tensor:
    """Similarities of one block of rows (numbered from `offset` in messages)."""
    known = not block.is_meta
    if plan.mu is None:
        xc = block
    elif plan.scale is None:
        xc = block - plan.mu
    else:
        xc = torch.addcdiv(-plan.mu, block, plan.scale)  # (block - centre) / s in one pass
    if known and not plan.sim.self_checking and len(block):
        bad = _nonfinite_rows(xc)  # a user similarity never sees NaN or inf
        if bad is not None:
            _diagnose(plan, block, xc, bad, offset)
    if known and plan.mu is not None and plan.sim.needs_nonzero:
        zero = _zero_rows(xc, plan.mu)
        if bool(zero.any()):
            raise RelrepsError(f"{plan.name} has zero vectors after centring at rows "
                               f"{_rows_text(torch.nonzero(zero), offset)}: their direction is "
                               "rounding noise of the centre, so cosine-type similarities are "
                               "undefined for them")
    try:
        r = plan.sim.apply(xc, plan.state)
        if plan.out_e and known:
            r = _sim._check_rows(_sim._times_pow2(r, torch.tensor(plan.out_e, device=r.device)))
    except _sim.BadRows as e:
        _diagnose(plan, block, xc, e.rows, offset)
    return _check_result(plan, r, block, xc, offset)


# --------------------------------------------------------------------------- array kinds

def _default_step(plan: _Plan) -> int:
    return max(1, BLOCK_ELEMENTS // max(plan.k, plan.d, 1))


def _as_tensor(block: np.ndarray, np_dtype: np.dtype, trusted: bool = True) -> torch.Tensor:
    """The block as a CPU tensor, sharing memory when its dtype and layout allow. Read-only
    memory (``np.load(mmap_mode="r")``) is shared only with the built-ins (`trusted`), which never
    write to their input; a user similarity gets a copy (writing to it would crash)."""
    if block.dtype != np_dtype or not (block.flags.c_contiguous or block.flags.f_contiguous) \
            or not (trusted or block.flags.writeable):
        block = np.array(block, dtype=np_dtype, order="C")
    if block.flags.writeable:
        return torch.from_numpy(block)
    try:  # DLPack shares read-only memory (np.load(mmap_mode="r")) without torch's warning
        return torch.from_dlpack(block)
    except (BufferError, RuntimeError, TypeError, ValueError):
        return torch.from_numpy(np.array(block, order="C"))


def _check_out(out: Any, kind: str, x: Any, shape: tuple[int, int]) -> np.ndarray:
    if kind != "numpy":
        raise InputTypeError(f"out= is supported for numpy inputs only; {kind} input returns "
                             f"a {kind} result")
    if not isinstance(out, np.ndarray):
        raise InputTypeError(f"out must be a numpy array (or np.memmap), got "
                             f"{type(out).__name__}")
    if out.dtype.kind != "f":
        raise InputTypeError(f"out has dtype {out.dtype}; it must be a floating-point array "
                             "(integers would truncate the similarities)")
    if tuple(out.shape) != shape:
        raise ShapeError(f"out has shape {tuple(out.shape)}, expected {shape}")
    if not out.flags.writeable:
        raise RelrepsError("out is read-only; pass a writable array")
    if np.may_share_memory(out, x):
        raise RelrepsError("out overlaps x; the projection would overwrite rows it has not "
                           "read yet: pass a separate array")
    return out


def _project_numpy(plan: _Plan, x: np.ndarray, step: int | None, out: np.ndarray | None,
                   base: int = 0) -> np.ndarray:
    n = x.shape[0]
    np_dtype = plan.np_dtype
    streamed = isinstance(x, np.memmap) or out is not None
    if step is None:
        step = _default_step(plan) if streamed else max(n, 1)
    if out is None and step >= n and not isinstance(x, np.memmap):
        if n == 0:
            return np.empty((0, plan.k), dtype=np_dtype)
        with torch.no_grad(), _sim.numpy_products():  # one block: returned as computed
            return _apply_block(plan, _as_tensor(x, np_dtype, plan.sim.self_checking),
                                base).numpy()
    res = np.empty((n, plan.k), dtype=np_dtype) if out is None else out
    narrow = res.dtype.itemsize < np_dtype.itemsize
    with torch.no_grad(), _sim.numpy_products():
        for s in range(0, n, step):
            src = x[s:s + step]
            r = _apply_block(plan, _as_tensor(np.asarray(src), np_dtype,
                                              plan.sim.self_checking), base + s).numpy()
            if narrow:
                with np.errstate(over="ignore"):  # checked on the next line
                    r = r.astype(res.dtype)
                bad = ~np.isfinite(r).all(1)
                if bad.any():
                    raise NumericalError(f"out has dtype {res.dtype}, too narrow for the "
                                         f"similarities at rows "
                                         f"{_rows_text(torch.from_numpy(np.flatnonzero(bad)), s)}"
                                         f"; pass a {np_dtype} array")
            res[s:s + step] = r
            if isinstance(x, np.memmap):
                release_pages(src)
            if isinstance(res, np.memmap):
                release_pages(res[s:s + step])
    return res


def _project_torch(plan: _Plan, x: torch.Tensor, step: int | None) -> torch.Tensor:
    x = x.to(plan.dtype)
    n = x.shape[0]
    if n == 0:
        return x.new_zeros((0, plan.k))
    if step is None or step >= n:
        return _apply_block(plan, x, 0)  # one block: returned as computed, no copy
    if torch.is_grad_enabled() and (x.requires_grad or plan.graph):
        return torch.cat([_apply_block(plan, x[s:s + step], s) for s in range(0, n, step)])
    out = torch.empty((n, plan.k), dtype=plan.dtype, device=x.device)
    for s in range(0, n, step):
        out[s:s + step] = _apply_block(plan, x[s:s + step], s)
    return out


def _dask_block(block: np.ndarray, plan: _Plan, step: int | None,
                block_info: dict | None = None) -> np.ndarray:
    base = int(block_info[0]["array-location"][0][0]) if block_info else 0
    return _project_numpy(plan, block, step or _default_step(plan), None, base)


def _project_dask(plan: _Plan, x: Any, step: int | None) -> Any:
    import dask
    import dask.array as da

    if any(math.isnan(c) for c in x.chunks[0]):
        raise ShapeError(f"{plan.name} has row blocks of unknown size; call "
                         f"{plan.name}.compute_chunk_sizes() first")
    if len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})  # each task needs whole rows
    token = uuid.uuid4().hex
    # One graph key holds the prepared anchors; every block task depends on it.
    shared = dask.delayed(plan, name=f"relreps-projection-anchors-{token}", pure=True)
    return da.map_blocks(_dask_block, x, shared, step, dtype=plan.np_dtype,
                         chunks=(x.chunks[0], (plan.k,)),
                         meta=np.empty((0, 0), dtype=plan.np_dtype),
                         name=f"relative-projection-{token}")


def _run(plan: _Plan, x: Any, kind: str, chunk_size: int | None, out: Any) -> Any:
    if out is not None:
        out = _check_out(out, kind, x, (x.shape[0], plan.k))
    if kind == "torch":
        return _project_torch(plan, x, chunk_size)
    if kind == "dask":
        return _project_dask(plan, x, chunk_size)
    return _project_numpy(plan, x, chunk_size, out)


def relative_projection(x: Array, anchors: Array, *, similarity: str | _sim.Similarity = "cosine",
                        center: Center = None, chunk_size: int | None = None,
                        out: np.ndarray | None = None) -> Array:
    """Relative representation of every row of `x` with respect to the rows of `anchors`.

    Parameters
    ----------
    x : (n, d) array, tensor or dask array
        Samples, in the same latent space as the anchors. numpy (including ``np.memmap``,
        streamed block by block) in, numpy out, the products computed by numpy's BLAS (large
        ones; :func:`relreps._numerics.host_matmul`); torch in, torch out on the same device,
        differentiable; dask in, a lazy dask array out (one task per row block of `x`, the
        prepared anchors shared by all tasks).
    anchors : (k, d) array or tensor
        Anchor embeddings: torch with torch `x` (same device), numpy (or dask) otherwise.
    similarity : name in :mod:`relreps.similarity` or a :class:`~relreps.similarity.Similarity`
    center : None, ``"none"``, ``"anchors"``, ``"auto"`` or a (d,) vector
        ``"anchors"`` subtracts the anchor mean from samples and anchors first, which makes any
        similarity translation invariant and rescues anisotropic encoders. ``"auto"`` centres
        when the anchors are anisotropic (:func:`relreps.centering.resolve_center`). With plain
        cosine or angular similarity (``None``) on strongly anisotropic anchors an
        :class:`~relreps.centering.AnisotropyWarning` is issued (not while building an autograd
        graph: training loops call this every step).
    chunk_size : int, optional
        Rows per block (bounded memory). Memory-mapped `x`, ``out=`` and dask blocks use blocks of
        about :data:`BLOCK_ELEMENTS` elements when it is not given.
    out : (n, k) floating-point numpy array, optional
        Where to write the result (e.g. an ``np.memmap``), for outputs larger than memory.

    Returns
    -------
    (n, k) array of the same kind as `x`, dtype the promotion of x's and anchors' float dtypes.

    Raises
    ------
    NonFiniteError : NaN or inf in `x` (naming the rows) or in `anchors`.
    NumericalError : similarities whose true values exceed the dtype's range, or a user
        similarity that returns NaN/inf for finite inputs.
    RelrepsError : zero vectors under cosine/angular, bad arguments (see :mod:`relreps.errors`).
    """
    return _project(x, anchors, similarity=similarity, center=center, chunk_size=chunk_size,
                    out=out, stacklevel=4)


def _project(x: Any, anchors: Any, *, similarity: Any = "cosine", center: Any = None,
             chunk_size: Any = None, out: Any = None, name: str = "x", warn: bool = True,
             stacklevel: int = 3) -> Any:
    """:func:`relative_projection` for relreps' own callers: the argument's name in messages,
    and the collapse warning optional (callers that project many anchor chunks warn once)."""
    chunk_size = check_int(chunk_size, "chunk_size", min_value=1, allow_none=True)
    plan, x, kind = _plan(x, anchors, similarity, center, name=name, warn=warn,
                          stacklevel=stacklevel)
    return _run(plan, x, kind, chunk_size, out)


# --------------------------------------------------------------------------- estimator

def _take_rows(X: Any, idx: np.ndarray) -> Any:
    if is_torch(X):
        return X.detach()[torch.as_tensor(idx, device=X.device)]
    if is_dask(X):
        return np.asarray(X[idx].compute())
    return np.array(X[idx])


class RelativeProjection(TransformerMixin, BaseEstimator):
    """Scikit-learn transformer: pick anchors from the training data, then project onto them.

    Parameters
    ----------
    n_anchors : number of anchors sampled from X in `fit` (ignored when `anchors` is given).
    similarity : similarity name (see :mod:`relreps.similarity`).
    center : None, ``"none"``, ``"anchors"``, ``"auto"`` (decided from the fitted anchors'
        anisotropy) or a (d,) vector.
    anchors : explicit anchor embeddings; `fit` then only validates them.
    sampler : ``"uniform"``, ``"stratified"`` (uses y), ``"kmeans"`` or ``"farthest_point"``.
    random_state : seed of the sampler.
    chunk_size : rows per block in `transform`.

    Attributes
    ----------
    anchors_ : (k, d) anchor embeddings used by `transform`.
    anchor_indices_ : (k,) rows of X chosen as anchors, or None for explicit anchors.
    center_ : the centring applied: None, ``"anchors"`` or the centre vector.
    center_decision_ : :class:`~relreps.centering.CenterDecision` (with ``"auto"``: the anchors'
        anisotropy and the reason).
    n_features_in_ : latent width d.
    feature_names_in_ : column names of a DataFrame X (only when X had string column names).

    `transform` accepts numpy, torch (any device: the anchors follow the input) and dask input
    and returns the same kind. ``set_output(transform="pandas")`` wraps numpy results.
    """

    def __init__(self, n_anchors: int = 300, similarity: str = "cosine", center: Center = None,
                 anchors: Array | None = None, sampler: str = "uniform",
                 random_state: int | None = None, chunk_size: int | None = None) -> None:
        self.n_anchors = n_anchors
        self.similarity = similarity
        self.center = center
        self.anchors = anchors
        self.sampler = sampler
        self.random_state = random_state
        self.chunk_size = chunk_size

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.target_tags.required = isinstance(self.sampler, str) and self.sampler == "stratified"
        return tags

    def fit(self, X: Array, y: Any = None) -> RelativeProjection:
        """Sample (or validate) the anchors and decide the centring."""
        from relreps.anchors import sample_anchors

        sim = _sim.get(self.similarity)
        n_anchors = check_int(self.n_anchors, "n_anchors", min_value=1)
        check_int(self.chunk_size, "chunk_size", min_value=1, allow_none=True)
        _check_center_param(self.center)
        X = validate_data(self, X, reset=True, kinds=("numpy", "torch", "dask"))
        n = X.shape[0]
        if self.anchors is not None:
            anchors = check_array(self.anchors, "anchors", kinds=("numpy", "torch"), min_rows=1)
            if anchors.shape[1] != X.shape[1]:
                raise ShapeError(f"anchors have {anchors.shape[1]} features but X has "
                                 f"{X.shape[1]}")
            if is_torch(X) != is_torch(anchors):
                anchors = (torch.as_tensor(np.asarray(anchors), device=X.device) if is_torch(X)
                           else to_numpy(anchors))
            self.anchor_indices_ = None
        else:
            if n_anchors > n:
                raise AnchorError(f"asked for {n_anchors} anchors but only {n} samples are "
                                  "available in X (n_anchors must be <= the number of samples)")
            if y is not None and isinstance(self.sampler, str) and self.sampler == "stratified":
                y = check_labels(y, "y", n=n)
            idx = sample_anchors(X, n_anchors, method=self.sampler, y=y,
                                 random_state=self.random_state)
            self.anchor_indices_ = np.asarray(idx)
            anchors = _take_rows(X, self.anchor_indices_)
        a_t = anchors.detach() if is_torch(anchors) else torch.from_numpy(np.asarray(anchors))
        decision, _ = _decide_center(self.center, a_t, sim, warn=True, training=False,
                                     stacklevel=3)
        if decision.center == "vector":
            self.center_ = _center_vector(self.center, X.shape[1])
        else:
            self.center_ = decision.center
        self.center_decision_ = decision
        self.anchors_ = anchors.detach() if is_torch(anchors) else anchors
        return self

    def _anchors_like(self, X: Any) -> Any:
        a = self.anchors_
        if is_torch(X):
            return a.to(X.device) if is_torch(a) else torch.as_tensor(np.asarray(a),
                                                                       device=X.device)
        return to_numpy(a) if is_torch(a) else a

    def _check_output_container(self, kind: str) -> None:
        if kind == "numpy":
            return
        from sklearn.utils._set_output import _get_output_config

        dense = _get_output_config("transform", self)["dense"]
        if dense != "default":
            raise InputTypeError(f"set_output(transform={dense!r}) wraps numpy results only; "
                                 f"{kind} input gives a {kind} result (use "
                                 "set_output(transform='default') for it)")

    def transform(self, X: Array) -> Array:
        """Relative representation of X: (n, n_anchors), of X's kind (and device)."""
        check_is_fitted(self, "anchors_")
        kind = array_kind(X)
        self._check_output_container(kind)
        original = X
        X = validate_data(self, X, reset=False, kinds=("numpy", "torch", "dask"),
                          ensure_all_finite=False)
        if isinstance(original, np.memmap) and X.dtype == original.dtype:
            X = original  # keep the mapping: it is streamed block by block
        chunk_size = check_int(self.chunk_size, "chunk_size", min_value=1, allow_none=True)
        plan, X, kind = _plan(X, self._anchors_like(X), self.similarity, self.center_,
                              name="X", warn=False)
        return _run(plan, X, kind, chunk_size, None)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``anchor0``, ``anchor1``, ...: one output column per anchor."""
        from sklearn.utils.validation import _check_feature_names_in

        check_is_fitted(self, "anchors_")
        try:
            _check_feature_names_in(self, input_features, generate_names=False)
        except ValueError as e:
            raise RelrepsError(str(e)) from None
        return np.asarray([f"anchor{i}" for i in range(len(self.anchors_))], dtype=object)

    # ----------------------------------------------------------------------- persistence

    def _relreps_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON config, arrays) for :func:`relreps.save`."""
        check_is_fitted(self, "anchors_")
        arrays: dict[str, np.ndarray] = {"anchors_": np.ascontiguousarray(to_numpy(self.anchors_))}
        sim = self.similarity if isinstance(self.similarity, str) else _sim.get(
            self.similarity).name
        rs = self.random_state
        params: dict[str, Any] = {
            "n_anchors": int(self.n_anchors), "similarity": sim, "sampler": self.sampler,
            "random_state": int(rs) if isinstance(rs, (int, np.integer)) and not isinstance(
                rs, bool) else None,
            "chunk_size": None if self.chunk_size is None else int(self.chunk_size),
            "center": self.center if self.center is None or isinstance(self.center, str)
            else "vector", "anchors": self.anchors is not None}
        if params["center"] == "vector":
            arrays["center"] = np.ascontiguousarray(to_numpy(self.center))
        if self.anchors is not None:
            arrays["anchors"] = np.ascontiguousarray(to_numpy(self.anchors))
        fitted: dict[str, Any] = {
            "n_features_in_": int(self.n_features_in_),
            "center_": self.center_ if self.center_ is None or isinstance(self.center_, str)
            else "vector",
            "center_decision_": self.center_decision_.to_dict(),
            "anchor_indices_": self.anchor_indices_ is not None}
        if fitted["center_"] == "vector":
            arrays["center_"] = np.ascontiguousarray(to_numpy(self.center_))
        if self.anchor_indices_ is not None:
            arrays["anchor_indices_"] = np.asarray(self.anchor_indices_, dtype=np.int64)
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(f) for f in self.feature_names_in_]
        return {"params": params, "fitted": fitted}, arrays

    @classmethod
    def _relreps_from_state(cls, config: dict[str, Any],
                            arrays: dict[str, np.ndarray]) -> RelativeProjection:
        """Rebuild a fitted transformer from :meth:`_relreps_state` output (validated)."""
        try:
            params = dict(config["params"])
            fitted = dict(config["fitted"])
            anchors_ = check_array(arrays["anchors_"], "anchors_", min_rows=1)
            if params.pop("center") == "vector":
                params["center"] = check_array(arrays["center"], "center", ndim=1)
            else:
                params["center"] = config["params"]["center"]
            params["anchors"] = arrays["anchors"] if params.pop("anchors") else None
            unknown = set(params) - set(cls().get_params())
            if unknown:
                raise FormatError(f"unknown RelativeProjection parameters {sorted(unknown)}")
            est = cls(**params)
            _sim.get(est.similarity)
            _check_center_param(est.center)
            d = int(fitted["n_features_in_"])
            if anchors_.shape[1] != d:
                raise FormatError(f"anchors_ have {anchors_.shape[1]} features, the config says "
                                  f"{d}")
            center_ = fitted["center_"]
            if center_ == "vector":
                center_ = _center_vector(arrays["center_"], d)
            elif center_ not in (None, "anchors"):
                raise FormatError(f"center_ must be null, 'anchors' or 'vector', got {center_!r}")
            dec = fitted["center_decision_"]
            decision = CenterDecision(dec["center"], dec["requested"],
                                      {str(k): float(v) for k, v in dec["anisotropy"].items()},
                                      str(dec["reason"]))
            idx = None
            if fitted["anchor_indices_"]:
                idx = np.asarray(arrays["anchor_indices_"])
                if idx.dtype.kind not in "iu" or idx.shape != (anchors_.shape[0],):
                    raise FormatError("anchor_indices_ must be one integer per anchor")
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"not a valid RelativeProjection state ({type(e).__name__}: {e})"
                              ) from None
        est.anchors_ = anchors_
        est.anchor_indices_ = idx
        est.center_ = center_
        est.center_decision_ = decision
        est.n_features_in_ = d
        if "feature_names_in_" in fitted:
            names = np.asarray([str(f) for f in fitted["feature_names_in_"]], dtype=object)
            if names.shape != (d,):
                raise FormatError("feature_names_in_ must hold one name per feature")
            est.feature_names_in_ = names
        return est
