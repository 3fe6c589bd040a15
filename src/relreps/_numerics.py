"""Norms and unit vectors that stay exact across the whole floating-point range.

A plain ``sqrt(sum(x**2))`` overflows for float32 entries above ~1e19 (squares exceed the dtype)
and loses precision below ~1e-19 (squares underflow to subnormals or zero). Rows whose norm is
not safely in range are rescaled by a power of two first (exact: only the exponent changes), so
norms, unit vectors and cosines are correct for any finite input. Rows in range (the usual case)
take the fast path with no extra pass beyond the norm itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["pow2_scale", "safe_row_norms", "unit_rows", "scaled_rows", "pow2_global_scale",
           "rowwise_dot", "host_matmul"]


def pow2_scale(t: torch.Tensor, dim: int | None = 1) -> torch.Tensor:
    """Per-row (or, with ``dim=None``, global) power of two s with max |t| / s in [1/2, 1)
    (1 where max is 0).

    Near the top of the dtype (max |t| >= 2**127 in float32) the next power of two is not
    representable, so s is the largest one and max |t| / s lies in [1, 2): still safe to square
    and sum, and never inf.
    """
    m = t.detach().abs().amax(dim=dim, keepdim=dim is not None) if dim is not None \
        else t.detach().abs().max()
    _, e = torch.frexp(m)
    # 2**e with e = frexp(finfo.max) overflows to inf: the largest power of two is 2**(e - 1)
    e = e.clamp(max=math.frexp(torch.finfo(m.dtype).max)[1] - 1)
    s = torch.ldexp(torch.ones_like(m), e)
    return torch.where(m > 0, s, torch.ones_like(m))


def pow2_global_scale(t: torch.Tensor) -> torch.Tensor:
    """A single power of two s ~ max |t| (see :func:`pow2_scale`; for quantities invariant to a
    common rescaling)."""
    return pow2_scale(t, dim=None)


def _unsafe(norms: torch.Tensor) -> torch.Tensor:
    fi = torch.finfo(norms.dtype)
    lo = (fi.tiny ** 0.5) / fi.eps  # below: squares of the largest entry may have underflowed
    return ~torch.isfinite(norms) | (norms < lo)


def scaled_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, norms): rows whose norm is out of safe range are divided by a power of two.

    The returned rows point in the same directions as `t` (exactly), and `norms` are their norms
    (finite and accurate for every non-zero row; 0 for zero rows). Differentiable.
    """
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    bad = _unsafe(norms.detach()).squeeze(1)
    if not bool(bad.any()):
        return t, norms
    s = pow2_scale(t[bad])
    t = t.clone()
    t[bad] = t[bad] / s
    norms = norms.clone()
    norms[bad] = torch.linalg.vector_norm(t[bad], dim=1, keepdim=True)
    return t, norms


def safe_row_norms(t: torch.Tensor) -> torch.Tensor:
    """Row norms (n, 1) in float64 for float32 input (no overflow) or rescaled for float64."""
    if t.dtype == torch.float32:
        return torch.linalg.vector_norm(t, dim=1, keepdim=True, dtype=torch.float64)
    s = pow2_scale(t)
    return torch.linalg.vector_norm(t / s, dim=1, keepdim=True) * s


def unit_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit rows, zero mask): rows divided by their norm, exact for any finite input.

    Zero rows come back as zeros, flagged in the (n,) boolean mask so callers can refuse them.
    """
    rows, norms = scaled_rows(t)
    zero = (norms.detach() == 0).squeeze(1)
    return rows / torch.where(norms == 0, torch.ones_like(norms), norms), zero


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products ``a[i] . b[i]`` (n,), by element-wise operations only: the
    products, then a fixed pairwise sum over the columns.

    Unlike a matrix product (whose kernel may round a row differently depending on its position
    in a tile) or a reduction kernel free to change its order, a row's value depends on nothing
    but its two rows: identical rows give identical values wherever they are, on any device.
    Error: at most log2(d) + 1 roundings of the dtype.
    """
    p = a * b
    while p.shape[1] > 1:
        h = p.shape[1] // 2
        head = p[:, :h] + p[:, h:2 * h]
        p = torch.cat([head, p[:, 2 * h:]], dim=1) if p.shape[1] % 2 else head
    return p[:, 0] if p.shape[1] else p.sum(dim=1)


#: Products of fewer multiply-adds stay in torch (see :func:`host_matmul`).
HOST_MATMUL_MIN_MACS = 1 << 31


def host_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``, computed by numpy's BLAS when both are real float32/float64 CPU tensors of one
    dtype outside autograd and the product is large (elsewhere by torch). numpy's BLAS computes
    ``X.T @ X`` with a symmetric rank-k update (half the work of a general product) and, on the
    AVX2 machine we measured, its float32 products beat torch's; values equal torch's up to
    rounding. Small products stay in torch: switching between torch's OpenMP threads (which
    keep spinning after each op) and the BLAS's threads costs ~2 ms a switch (measured: ten
    1,024 x 768 Gram products, 40% slower mixed than in one library)."""
    if (a.dim() == 2 and b.dim() == 2
            and a.shape[0] * a.shape[1] * b.shape[1] >= HOST_MATMUL_MIN_MACS
            and a.device.type == "cpu" and b.device.type == "cpu" and a.dtype == b.dtype
            and a.dtype in (torch.float32, torch.float64)
            and not (a.requires_grad or b.requires_grad) and not (a.is_meta or b.is_meta)
            and not (a.is_conj() or b.is_conj() or a.is_neg() or b.is_neg())):
        an, bn = a.numpy(), b.numpy()
        if not bn.flags.c_contiguous and a.data_ptr() != b.data_ptr():
            bn = np.ascontiguousarray(bn)  # a transposed view (anchors.T): read C-ordered
        return torch.from_numpy(np.matmul(an, bn))
    return a @ b
