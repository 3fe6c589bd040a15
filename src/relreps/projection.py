"""The relative projection: every sample described by its similarities to a set of anchors."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from relreps import similarity as _sim
from relreps._backend import Array, same_kind
from relreps.errors import AnchorError, RelrepsError
from relreps.validation import check_array, check_finite_rows, is_torch

__all__ = ["relative_projection", "RelativeProjection"]

Center = str | Any | None


def _zero_rows(norms: torch.Tensor, ref: float, dtype: torch.dtype) -> torch.Tensor:
    return norms <= torch.finfo(dtype).eps * max(ref, torch.finfo(dtype).tiny)


def _check_nonzero(t: torch.Tensor, ref: float, name: str, offset: int, centred: bool) -> None:
    norms = torch.linalg.vector_norm(t.detach(), dim=1)
    bad = torch.nonzero(_zero_rows(norms, ref, t.dtype)).flatten()
    if bad.numel():
        rows = ", ".join(str(int(i) + offset) for i in bad[:5])
        more = f" (and {bad.numel() - 5} more)" if bad.numel() > 5 else ""
        why = " after centring on the anchor mean" if centred else ""
        raise RelrepsError(f"{name} has zero vectors{why} at rows {rows}{more}: cosine-type "
                           "similarities are undefined for them")


def _resolve_center(center: Center, anchors: Array, d: int) -> Array | None:
    if center is None:
        return None
    if isinstance(center, str):
        if center != "anchors":
            raise RelrepsError(f"center must be None, 'anchors' or a vector, got {center!r}")
        return anchors.mean(0, keepdim=True) if is_torch(anchors) else anchors.mean(0,
                                                                                      keepdims=True)
    vec = center if is_torch(center) else np.asarray(center, dtype=float)
    if tuple(vec.shape) not in ((d,), (1, d)):
        raise RelrepsError(f"center vector must have shape ({d},), got {tuple(vec.shape)}")
    if not bool((torch.isfinite(vec) if is_torch(vec) else np.isfinite(vec)).all()):
        raise RelrepsError("center vector contains NaN or inf values")
    return vec.reshape(1, d)


def _prepare(x: Array, anchors: Array, similarity: Any, center: Center):
    """Validate inputs and compute the anchor-side state. Returns torch-side pieces."""
    sim = _sim.get(similarity)
    torch_in = same_kind(x, anchors, names=("x", "anchors"))
    x = check_array(x, "x", finite=not isinstance(x, np.memmap))
    anchors = check_array(anchors, "anchors")
    n_anchors, d = anchors.shape
    if x.shape[1] != d:
        raise RelrepsError(f"dimension mismatch: x has {x.shape[1]} features, anchors have {d}; "
                           "anchors must be embedded in the same space as x")
    if n_anchors < max(1, sim.min_anchors):
        raise AnchorError(f"{sim.name} similarity needs at least {max(1, sim.min_anchors)} "
                          f"anchor(s), got {n_anchors}")
    if torch_in:
        if x.device != anchors.device:
            raise RelrepsError(f"x is on {x.device} but anchors are on {anchors.device}")
        dtype = torch.promote_types(x.dtype, anchors.dtype)
        a_t = anchors.to(dtype)
    else:
        dtype_np = np.result_type(x.dtype, anchors.dtype)
        a_t = torch.from_numpy(np.ascontiguousarray(anchors, dtype=dtype_np))
        dtype = a_t.dtype
    mu = _resolve_center(center, a_t, d)
    if mu is not None:
        mu = (mu if is_torch(mu) else torch.from_numpy(np.asarray(mu))).to(a_t.device, dtype)
        a_t = a_t - mu
    ref = float(torch.linalg.vector_norm(a_t.detach(), dim=1).mean()) if n_anchors else 1.0
    if sim.needs_nonzero:
        _check_nonzero(a_t, ref, "anchors", 0, mu is not None)
    state = sim.prepare(a_t)
    return sim, torch_in, x, dtype, mu, state, n_anchors


def _release_pages(arr: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped block from this process (best effort).

    Pages of a file mapping stay resident, and count as this process's memory, once touched;
    streaming a memmap larger than memory would otherwise grow to the file's size. The data stays
    in the OS page cache (and modified pages of a shared mapping are still written back).
    """
    mm = getattr(arr, "_mmap", None)
    if getattr(arr, "mode", None) in ("c", "copyonwrite"):
        return  # private mapping: dropping pages would discard the caller's changes
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        start = arr.ctypes.data - base
        end = start + arr.nbytes
        start -= start % mmap.PAGESIZE
        end -= end % mmap.PAGESIZE  # keep a partly used last page: the next block needs it
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (ValueError, OSError, TypeError, BufferError):
        pass


def _project_block(sim, block: torch.Tensor, mu, state, offset: int) -> torch.Tensor:
    if mu is not None:
        block = block - mu
        if sim.needs_nonzero:
            # A sample equal to the centre leaves rounding noise of a few ulps of |mu|, not an
            # exact zero: its "direction" is noise, and the output would be finite but arbitrary.
            ref = 64.0 * float(torch.linalg.vector_norm(mu.detach()))
            _check_nonzero(block, ref, "x", offset, True)
    r = sim.apply(block, state)
    if sim.needs_nonzero:
        # Inputs are finite, so a non-finite output row can only come from a zero vector.
        rd = r.detach()
        if bool(torch.isfinite(rd.sum()).item()):
            return r  # similarities of this kind are bounded: a finite total means all finite
        bad = ~torch.isfinite(rd).all(dim=1)
        if bool(bad.any()):
            _check_nonzero(block, 0.0, "x", offset, mu is not None)
            rows = (torch.nonzero(bad).flatten()[:5] + offset).tolist()
            raise RelrepsError(f"similarities overflowed to inf/NaN at rows {rows}: values of x "
                               "are too large for its dtype")
    return r


def relative_projection(x: Array, anchors: Array, *, similarity: str | _sim.Similarity = "cosine",
                        center: Center = None, chunk_size: int | None = None,
                        out: np.ndarray | None = None) -> Array:
    """Relative representation of every row of `x` with respect to the rows of `anchors`.

    Parameters
    ----------
    x : (n, d) array or tensor
        Samples, in the same latent space as the anchors. numpy (including ``np.memmap``) in,
        numpy out; torch in, torch out on the same device, differentiable.
    anchors : (k, d) array or tensor
        Anchor embeddings, of the same kind (numpy or torch) as `x`.
    similarity : name in :mod:`relreps.similarity` or a :class:`~relreps.similarity.Similarity`
    center : None, ``"anchors"`` or a (d,) vector
        ``"anchors"`` subtracts the anchor mean from samples and anchors first, which makes any
        similarity translation invariant and rescues very anisotropic encoders.
    chunk_size : int, optional
        Process `x` in blocks of this many rows (bounded memory for large or memory-mapped x).
    out : (n, k) numpy array, optional
        Where to write the result (e.g. an ``np.memmap``), for outputs larger than memory.

    Returns
    -------
    (n, k) array of the same kind as `x`, dtype the promotion of x's and anchors' float dtypes.
    """
    sim, torch_in, x, dtype, mu, state, k = _prepare(x, anchors, similarity, center)
    n = x.shape[0]
    if chunk_size is not None and chunk_size < 1:
        raise RelrepsError(f"chunk_size must be a positive integer, got {chunk_size}")
    step = chunk_size or max(n, 1)
    if torch_in:
        if out is not None:
            raise RelrepsError("out= is supported for numpy inputs only")
        x = x.to(dtype)
        blocks = [_project_block(sim, x[s:s + step], mu, state, s) for s in range(0, n, step)]
        return torch.cat(blocks) if blocks else x.new_zeros((0, k))
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    if out is None and step >= n and not isinstance(x, np.memmap):
        block = np.ascontiguousarray(x, dtype=np_dtype)  # one block: no output copy
        if not block.flags.writeable:
            block = block.copy()
        with torch.no_grad():
            return _project_block(sim, torch.from_numpy(block), mu, state, 0).numpy()
    if out is None:
        out = np.empty((n, k), dtype=np_dtype)
    elif tuple(out.shape) != (n, k):
        raise RelrepsError(f"out has shape {tuple(out.shape)}, expected {(n, k)}")
    with torch.no_grad():
        for s in range(0, n, step):
            block = np.asarray(x[s:s + step])
            if block.dtype != np_dtype or not block.flags.writeable or not block.flags.c_contiguous:
                block = np.array(block, dtype=np_dtype, order="C")
            if isinstance(x, np.memmap):
                check_finite_rows(block, "x", offset=s)
            out[s:s + step] = _project_block(sim, torch.from_numpy(block), mu, state, s).numpy()
            _release_pages(x[s:s + step])
            _release_pages(out[s:s + step])
    return out


class RelativeProjection(TransformerMixin, BaseEstimator):
    """Scikit-learn transformer: pick anchors from the training data, then project onto them.

    Parameters
    ----------
    n_anchors : number of anchors sampled from X in `fit` (ignored when `anchors` is given).
    similarity : similarity name (see :mod:`relreps.similarity`).
    center : None or ``"anchors"`` (subtract the anchor mean first).
    anchors : explicit anchor embeddings; `fit` then only validates them.
    sampler : ``"uniform"``, ``"stratified"`` (uses y), ``"kmeans"`` or ``"farthest_point"``.
    random_state : seed of the sampler.
    chunk_size : rows per block in `transform`.

    Attributes
    ----------
    anchors_ : (k, d) anchor embeddings used by `transform`.
    anchor_indices_ : (k,) rows of X chosen as anchors, or None for explicit anchors.
    n_features_in_ : latent width d.
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

    def fit(self, X: Array, y: Any = None) -> RelativeProjection:
        from relreps.anchors import sample_anchors

        _sim.get(self.similarity)
        if self.anchors is not None:
            anchors = check_array(self.anchors, "anchors")
            self.anchor_indices_ = None
        else:
            X2 = check_array(X, "X")
            idx = sample_anchors(X2, self.n_anchors, method=self.sampler, y=y,
                                 random_state=self.random_state)
            self.anchor_indices_ = idx
            anchors = X2[torch.as_tensor(idx)] if is_torch(X2) else np.asarray(X2[idx])
        self.anchors_ = anchors
        self.n_features_in_ = int(anchors.shape[1])
        return self

    def transform(self, X: Array) -> Array:
        if not hasattr(self, "anchors_"):
            raise RelrepsError("RelativeProjection is not fitted yet; call fit first")
        return relative_projection(X, self.anchors_, similarity=self.similarity,
                                   center=self.center, chunk_size=self.chunk_size)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray([f"anchor{i}" for i in range(len(self.anchors_))], dtype=object)
