#!/usr/bin/env python
"""Robustness sweep: hundreds of bad or edge inputs against relreps' public API and CLI.

Every case calls one public function (or the command line, in a subprocess) with one bad or edge
input and classifies what happened:

- ``named_error``: a :class:`relreps.errors.RelrepsError` subclass (for the CLI: exit status 2
  and a one-line message, no traceback);
- ``correct``: a result that matches a reference (float64/longdouble numpy, a brute-force
  search, or the same call at a safe scale for functions whose scaling law is known);
- ``silent_wrong``: a result for an input that must be refused, or one that differs from the
  reference;
- ``raw_traceback``: any other exception (TypeError, IndexError, ...), a crash of the process,
  or a CLI traceback;
- ``hang``: no answer within the time limit;
- ``skipped``: the function, parameter or optional package the case needs is absent (cases
  for APIs still being built are kept, guarded, and counted separately).

Input classes covered: magnitudes across the float32/float64 range, subnormals, NaN/inf, wrong
dtypes (int, bool, complex, object, string, float16), ragged lists, wrong ranks, rows and widths,
empty inputs, fractional/boolean/negative counts and seeds, boolean masks and floats as indices,
``out=`` of the wrong dtype or shape, zero/negative block sizes, numpy where torch is expected,
wrong kinds (dict, str, None, sparse), hostile files (pickles, truncated JSON) and CLI misuse.

Usage::

    PYTHONPATH=src python scripts/robustness_sweep.py [--out DIR] [--only AREA,...] [--no-cli]
        [--timeout S] [--list]

It runs against whatever ``relreps`` is importable, writes ``DIR/sweep.json`` (every case) and
``DIR/sweep.md`` (counts per outcome, per area and per input class, and every failure), and
exits 1 when any case is silent_wrong, raw_traceback or hang. Cases run in a worker process
(restarted after a hang or a crash); each case uses small arrays, so the sweep needs no more than
a few minutes of CPU, most of it in the CLI cases (``--no-cli`` skips them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("named_error", "correct", "silent_wrong", "raw_traceback", "hang", "skipped")
FAILURES = ("silent_wrong", "raw_traceback", "hang")
#: Areas whose modules belong to the cache/data/encoder layer (tests/test_sweep_smoke.py).
OWNED_AREAS = ("cache", "encoders", "datasets")
_PREFIX = "@@relreps-sweep@@"
_REPO = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """Raised by a case whose API, parameter or optional package is absent."""


@dataclass
class Case:
    """One call and what a correct outcome is.

    `check` is None when the input must be refused (any result is silent_wrong); otherwise it
    returns None for a correct result or a string saying what is wrong. A named error is always
    an acceptable outcome; for a `valid` input it is also listed as a refusal in the report.
    """

    id: str
    area: str
    kind: str
    call: Callable[[Ctx], Any]
    check: Callable[[Any], str | None] | None = None
    valid: bool = False
    requires: tuple[str, ...] = ()
    timeout: float | None = None
    cli: bool = False


@dataclass
class Ctx:
    """Per-worker state: a scratch folder and memoised data."""

    tmp: Path
    memo: dict[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.tmp / name


@dataclass
class CliResult:
    rc: int | None
    stdout: str
    stderr: str


# =========================================================================================
# requirements, data and references
# =========================================================================================


def _requirement_missing(req: str) -> str | None:
    """"module", "module:attr" or "module:attr(param)"; the missing part, or None."""
    mod, _, rest = req.partition(":")
    try:
        m = importlib.import_module(mod)
    except Exception:  # noqa: BLE001 - an optional package that fails to import is absent
        return mod
    if not rest:
        return None
    attr, _, param = rest.partition("(")
    obj: Any = m
    for part in attr.split("."):
        if not hasattr(obj, part):
            return f"{mod}.{attr}"
        obj = getattr(obj, part)
    if param:
        param = param.rstrip(")")
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            return None
        if param not in sig.parameters and not any(
                p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            return f"{mod}.{attr}({param}=...)"
    return None


def _torch():
    try:
        import torch
    except ImportError:
        raise Skip("torch is not installed") from None
    return torch


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def base_data() -> dict[str, np.ndarray]:
    rng = _rng(0)
    x = rng.normal(size=(40, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    y = np.repeat(np.arange(4), 10)
    rng.shuffle(y)
    return {"x": x, "a": x[:6].copy(), "xr": x @ q, "y": y, "z": rng.normal(size=(40, 5)),
            "u": rng.normal(size=(40, 8))}


D = base_data()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _dist(x: np.ndarray, a: np.ndarray, p: float) -> np.ndarray:
    diff = np.abs(x[:, None, :] - a[None, :, :])
    if p == 1:
        return diff.sum(-1)
    if p == np.inf:
        return diff.max(-1)
    return np.sqrt((diff ** 2).sum(-1))


def ref_similarity(name: str, x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Float64 numpy reference of each built-in similarity."""
    if name in ("cosine", "angular"):
        c = _unit(x) @ _unit(a).T
        return c if name == "cosine" else 1 - np.arccos(np.clip(c, -1, 1)) / np.pi
    if name == "inner":
        return x @ a.T
    if name == "euclidean":
        return -_dist(x, a, 2)
    if name == "l1":
        return -_dist(x, a, 1)
    if name == "linf":
        return -_dist(x, a, np.inf)
    if name == "rbf":
        da = _dist(a, a, 2)[np.triu_indices(len(a), 1)]
        sigma = np.median(da)
        return np.exp(-_dist(x, a, 2) ** 2 / (2 * sigma ** 2))
    if name == "basis":
        return x @ np.linalg.pinv(a)
    raise KeyError(name)


#: Homogeneity degree of each similarity: sim(c x, c a) = c^degree sim(x, a) for c > 0.
SIM_DEGREE = {"cosine": 0, "angular": 0, "inner": 2, "euclidean": 1, "l1": 1, "linf": 1,
              "rbf": 0, "basis": 0}


def ref_cka(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(0), y - y.mean(0)
    hxy = np.linalg.norm(xc.T @ yc) ** 2
    return float(hxy / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def ref_knn(q: np.ndarray, b: np.ndarray, k: int, exclude: np.ndarray | None = None
            ) -> np.ndarray:
    s = _unit(q) @ _unit(b).T
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def ref_retrieval(src: np.ndarray, tgt: np.ndarray, k: int, queries: np.ndarray | None = None
                  ) -> dict[str, float]:
    q = np.arange(len(src)) if queries is None else np.asarray(queries)
    n = len(q)
    S, T = ref_knn(src[q], tgt, k), ref_knn(tgt[q], tgt, k)
    hit = S == q[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    mrr = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).mean()
    inter = np.array([len(set(S[i]) & set(T[i])) for i in range(n)])
    return {"jaccard": float((inter / (2 * k - inter)).mean()), "mrr": float(mrr)}


def ref_mutual_knn(a: np.ndarray, b: np.ndarray, k: int) -> float:
    idx = np.arange(len(a))
    na, nb = ref_knn(a, a, k, idx), ref_knn(b, b, k, idx)
    return float(np.mean([len(set(na[i]) & set(nb[i])) / k for i in range(len(a))]))


def ref_effective_dim(a: np.ndarray) -> float:
    s = np.linalg.svd(a, compute_uv=False)
    p = s ** 2
    return float(p.sum() ** 2 / (p ** 2).sum())


def to_numpy(res: Any) -> np.ndarray:
    if hasattr(res, "detach"):
        res = res.detach().cpu().numpy()
    if hasattr(res, "compute") and hasattr(res, "chunks"):
        res = res.compute()
    return np.asarray(res)


def _describe(res: Any) -> str:
    if hasattr(res, "shape") and hasattr(res, "dtype"):
        return f"{type(res).__name__} {tuple(res.shape)} {res.dtype}"
    text = repr(res)
    return f"{type(res).__name__} {text[:80]}"


def close(expected: Any, rtol: float = 1e-5, atol: float = 1e-9, exact_shape: bool = True
          ) -> Callable[[Any], str | None]:
    """A check: the result equals `expected` within tolerance, with no NaN/inf."""
    exp = np.asarray(expected, dtype=np.float64)

    def check(res: Any) -> str | None:
        got = to_numpy(res)
        if got.dtype.kind not in "biuf":
            return f"result dtype {got.dtype}"
        got = got.astype(np.float64)
        if exact_shape and got.shape != exp.shape:
            return f"shape {got.shape}, expected {exp.shape}"
        if not np.isfinite(got).all():
            return "result holds NaN or inf"
        err = np.max(np.abs(got - exp)) if got.size else 0.0
        tol = atol + rtol * (np.max(np.abs(exp)) if exp.size else 0.0)
        if not err <= tol:
            return f"max error {err:.3g} > {tol:.3g} (reference max {np.max(np.abs(exp)):.3g})"
        return None

    return check


def equal(expected: Any) -> Callable[[Any], str | None]:
    exp = np.asarray(expected)

    def check(res: Any) -> str | None:
        got = to_numpy(res)
        if got.shape != exp.shape or not np.array_equal(got, exp):
            return f"got {_describe(got)} {got.ravel()[:6]}, expected {exp.ravel()[:6]}"
        return None

    return check


#: Similarities whose reference is ill-conditioned: arccos near +-1 turns a rounding error eps of
#: the cosine into an error sqrt(2 eps) of the angle.
SIM_RTOL = {"angular": lambda dt: 4 * math.sqrt(np.finfo(dt).eps)}


def scaled_check(reference: np.ndarray, e: int, degree: int, dtype: np.dtype,
                 rtol: float | None = None) -> Callable[[Any], str | None]:
    """Check a result at scale 2**e against the unit-scale reference times 2**(e*degree): it must
    be close where representable in `dtype`; where not, no result is correct (NumericalError)."""
    ref = np.asarray(reference, dtype=np.longdouble)
    expected = np.ldexp(ref, e * degree) if degree else ref
    fi = np.finfo(dtype)
    representable = bool(np.all(np.abs(expected) <= fi.max))
    rtol = rtol if rtol is not None else (2e-4 if dtype == np.float32 else 1e-9)
    atol = float(fi.smallest_subnormal) * 64 * 8

    def check(res: Any) -> str | None:
        if not representable:
            return (f"returned {_describe(res)} although the result (up to "
                    f"2^{int(np.log2(np.max(np.abs(expected)))) if expected.size else 0}) "
                    f"exceeds {np.dtype(dtype)}; expected a NumericalError")
        got = to_numpy(res)
        if got.shape != expected.shape:
            return f"shape {got.shape}, expected {expected.shape}"
        if got.dtype.kind != "f" and got.dtype.kind not in "iu":
            return f"dtype {got.dtype}"
        g = got.astype(np.longdouble)
        if not np.isfinite(g).all():
            return "result holds NaN or inf for finite, representable values"
        err = np.max(np.abs(g - expected)) if g.size else 0
        tol = atol + rtol * (np.max(np.abs(expected)) if expected.size else 0)
        if not err <= tol:
            return f"max error {float(err):.3g} > tolerance {float(tol):.3g}"
        return None

    return check


# Scales: (label, dtype, binary exponent). 2^100 ~ 1.3e30, 2^120 ~ 1.3e36 (float32 near max),
# 2^-100 ~ 7.9e-31, 2^-135 ~ 2.3e-41 (float32 subnormal), 2^1000 ~ 1.1e301, 2^-1060 (float64
# subnormal), 2^62 (inner products of float32 overflow).
SCALES = [("f32-1e30", np.float32, 100), ("f32-1e36", np.float32, 120),
          ("f32-1e19", np.float32, 62), ("f32-tiny", np.float32, -100),
          ("f32-subnormal", np.float32, -135), ("f64-1e301", np.float64, 1000),
          ("f64-1e154", np.float64, 512), ("f64-subnormal", np.float64, -1060)]


def at_scale(base: np.ndarray, dtype: Any, e: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored, exact): `base` times 2**e stored in `dtype`, and the stored values brought back
    to unit scale exactly in float64 (the reference input: subnormal rounding included)."""
    stored = np.ldexp(np.asarray(base, np.float64), e).astype(dtype)
    exact = np.ldexp(stored.astype(np.float64), -e)
    return stored, exact


# =========================================================================================
# bad and edge arrays
# =========================================================================================


def _with(base: np.ndarray, value: float) -> np.ndarray:
    out = np.array(base, dtype=np.float64)
    out[len(out) // 2, 0] = value
    return out


def bad_arrays(base: np.ndarray, *, torch_too: bool = True) -> list[tuple[str, str, Callable]]:
    """(input class, label, factory) of arrays any array argument must refuse."""
    b = np.asarray(base, np.float64)
    out: list[tuple[str, str, Callable]] = [
        ("nonfinite", "nan", lambda: _with(b, np.nan)),
        ("nonfinite", "inf", lambda: _with(b, np.inf)),
        ("nonfinite", "-inf", lambda: _with(b, -np.inf)),
        ("nonfinite", "nan-float32", lambda: _with(b, np.nan).astype(np.float32)),
        ("dtype", "complex", lambda: b + 1j),
        ("dtype", "complex-zero-imag", lambda: b.astype(np.complex128)),
        ("dtype", "strings", lambda: b.astype(str)),
        ("dtype", "object-strings", lambda: b.astype(str).astype(object)),
        ("dtype", "bytes", lambda: b.astype(bytes)),
        ("dtype", "datetime", lambda: np.zeros(b.shape, "datetime64[s]")),
        ("ragged", "ragged-list", lambda: [list(r) for r in b[:-1]] + [list(b[-1][:-1])]),
        ("ragged", "ragged-object", lambda: np.array([b[0], b[1][:-1]], dtype=object)),
        ("type", "none", lambda: None),
        ("type", "scalar", lambda: 3.0),
        ("type", "string", lambda: "embeddings.npy"),
        ("type", "dict", lambda: {"x": b}),
        ("shape", "1-D", lambda: b[0]),
        ("shape", "3-D", lambda: b[None]),
        ("shape", "0-D", lambda: np.float64(1.0)),
        ("shape", "zero-columns", lambda: b[:, :0]),
    ]
    with contextlib.suppress(ImportError):
        import scipy.sparse as sp

        out.append(("type", "scipy-sparse", lambda: sp.csr_matrix(b)))
    if torch_too:
        out.append(("dtype", "torch-complex", lambda: _torch().tensor(b, dtype=_torch().complex64)))
    return out


def valid_arrays(base: np.ndarray) -> list[tuple[str, str, Callable[[], tuple[Any, np.ndarray]]]]:
    """(class, label, factory -> (input, its float64 values)) that must be accepted."""
    b = np.asarray(base, np.float64)

    def memmap() -> tuple[Any, np.ndarray]:
        fd, name = tempfile.mkstemp(suffix=".npy")
        os.close(fd)
        np.save(name, b)
        return np.load(name, mmap_mode="r"), b

    def pandas() -> tuple[Any, np.ndarray]:
        try:
            import pandas as pd
        except ImportError:
            raise Skip("pandas is not installed") from None
        return pd.DataFrame(b), b

    ints = np.round(b * 3).astype(np.int64)
    return [
        ("dtype", "int64", lambda: (ints, ints.astype(np.float64))),
        ("dtype", "int8", lambda: (ints.clip(-100, 100).astype(np.int8),
                                   ints.clip(-100, 100).astype(np.float64))),
        ("dtype", "float16", lambda: (b.astype(np.float16), b.astype(np.float16).astype(float))),
        ("dtype", "float32", lambda: (b.astype(np.float32), b.astype(np.float32).astype(float))),
        ("type", "list-of-lists", lambda: (b.tolist(), b)),
        ("dtype", "object-floats", lambda: (b.astype(object), b)),
        ("type", "memmap", memmap),
        ("type", "pandas", pandas),
        ("type", "fortran-order", lambda: (np.asfortranarray(b), b)),
        ("type", "non-contiguous", lambda: (np.repeat(b, 2, axis=1)[:, ::2], b)),
        ("type", "read-only", lambda: (_readonly(b), b)),
    ]


def _readonly(b: np.ndarray) -> np.ndarray:
    c = b.copy()
    c.flags.writeable = False
    return c


#: Bad counts (n_anchors, k, ...): (label, value).
BAD_COUNTS = [("zero", 0), ("negative", -1), ("fraction", 2.5), ("whole-float", 3.0),
              ("bool", True), ("string", "3"), ("none", None), ("nan", float("nan")),
              ("huge", 10 ** 12), ("list", [3])]
#: Bad seeds / random_state values.
BAD_SEEDS = [("negative", -1), ("fraction", 0.5), ("bool", True), ("string", "0"),
             ("whole-float", 1.0), ("nan", float("nan"))]
#: Bad row indices (into 40 rows): (label, factory).
BAD_INDICES = [("bool-mask", lambda: np.arange(40) < 5), ("floats", lambda: np.arange(5.0)),
               ("negative", lambda: np.array([0, -1, 2])), ("out-of-range", lambda: [0, 1, 40]),
               ("2-D", lambda: np.arange(6).reshape(2, 3)), ("strings", lambda: ["0", "1"]),
               ("nan", lambda: np.array([0.0, np.nan])), ("empty", lambda: np.array([], int)),
               ("none-inside", lambda: [0, None, 2])]


# =========================================================================================
# cases: projection and similarities
# =========================================================================================


def _rp(x, a, **kw):
    from relreps import relative_projection

    return relative_projection(x, a, **kw)


def projection_cases() -> list[Case]:
    cases: list[Case] = []
    x, a = D["x"], D["a"]
    names = list(SIM_DEGREE)
    for sim in names:
        ref = ref_similarity(sim, x, a)
        tol = SIM_RTOL.get(sim, lambda dt: None)
        cases.append(Case(f"projection/{sim}/plain", "projection", "baseline",
                          lambda c, s=sim: _rp(x, a, similarity=s),
                          close(ref, tol(np.float64) or 1e-9), valid=True))
        for label, dt, e in SCALES:
            xs, xe = at_scale(x, dt, e)
            as_, ae = at_scale(a, dt, e)
            r = ref_similarity(sim, xe, ae)
            kind = "subnormal" if "subnormal" in label else "magnitude"
            cases.append(Case(f"projection/{sim}/scale-{label}", "projection", kind,
                              lambda c, s=sim, xs=xs, as_=as_: _rp(xs, as_, similarity=s),
                              scaled_check(r, e, SIM_DEGREE[sim], dt, tol(dt)), valid=True))
    # a user similarity (not registered): same range rules as the built-ins
    def user_inner(xs, as_):
        from relreps.similarity import Similarity

        s = Similarity(name="user-inner", apply=lambda t, st: t @ st.T, invariances=frozenset())
        return _rp(xs, as_, similarity=s)

    for label, dt, e in SCALES:
        xs, xe = at_scale(x, dt, e)
        as_, ae = at_scale(a, dt, e)
        cases.append(Case(f"projection/user-inner/scale-{label}", "projection", "magnitude",
                          lambda c, xs=xs, as_=as_: user_inner(xs, as_),
                          scaled_check(xe @ ae.T, e, 2, dt), valid=True,
                          requires=("relreps.similarity:Similarity",)))

    def wrong_shape_similarity(chunk):
        from relreps.similarity import Similarity

        s = Similarity(name="one-column", apply=lambda t, st: (t @ st.T)[:, :1],
                       invariances=frozenset())
        return _rp(x, a, similarity=s, chunk_size=chunk)

    for chunk in (None, 7):
        cases.append(Case(f"projection/user-wrong-shape/chunk-{chunk}", "projection", "shape",
                          lambda c, ch=chunk: wrong_shape_similarity(ch)))

    def nan_similarity():
        from relreps.similarity import Similarity

        s = Similarity(name="nan-sim", apply=lambda t, st: (t @ st.T) * float("nan"),
                       invariances=frozenset())
        return _rp(x, a, similarity=s)

    cases.append(Case("projection/user-nan-output", "projection", "nonfinite",
                      lambda c: nan_similarity()))
    # bad arrays for x and for anchors
    for arg in ("x", "anchors"):
        base = x if arg == "x" else a
        for kind, label, make in bad_arrays(base):
            def call(c, make=make, arg=arg):
                v = make()
                return _rp(v, a) if arg == "x" else _rp(x, v)

            cases.append(Case(f"projection/{arg}={label}", "projection", kind, call))
        for kind, label, make in valid_arrays(base):
            def vcall(c, make=make, arg=arg):
                v, _ = make()
                return _rp(v, a) if arg == "x" else _rp(x, v)

            v64 = None
            with contextlib.suppress(Skip):
                v64 = make()[1]
            if v64 is None:
                continue
            exp = ref_similarity("cosine", v64, a) if arg == "x" else \
                ref_similarity("cosine", x, v64)
            tol = 2e-3 if label == "float16" else 1e-5
            cases.append(Case(f"projection/{arg}={label}", "projection", kind, vcall,
                              close(exp, tol), valid=True))
    cases += [
        Case("projection/x=wider", "projection", "shape",
             lambda c: _rp(np.hstack([x, x[:, :1]]), a)),
        Case("projection/x=zero-row", "projection", "nonfinite",
             lambda c: _rp(np.vstack([x, np.zeros((1, 8))]), a)),
        Case("projection/anchors=zero-row", "projection", "nonfinite",
             lambda c: _rp(x, np.vstack([a, np.zeros((1, 8))]))),
        Case("projection/anchors=empty", "projection", "empty", lambda c: _rp(x, a[:0])),
        Case("projection/rbf/one-anchor", "projection", "shape",
             lambda c: _rp(x, a[:1], similarity="rbf")),
        Case("projection/rbf/duplicate-anchors", "projection", "degenerate",
             lambda c: _rp(x, np.vstack([a[:1], a[:1]]), similarity="rbf")),
        Case("projection/x=empty", "projection", "empty", lambda c: _rp(x[:0], a),
             lambda r: None if to_numpy(r).shape == (0, 6) else f"shape {to_numpy(r).shape}",
             valid=True),
        Case("projection/similarity=unknown", "projection", "option",
             lambda c: _rp(x, a, similarity="cosinus")),
        Case("projection/similarity=int", "projection", "type", lambda c: _rp(x, a, similarity=3)),
        Case("projection/similarity=none", "projection", "type",
             lambda c: _rp(x, a, similarity=None)),
        Case("projection/center=bogus", "projection", "option",
             lambda c: _rp(x, a, center="mean")),
        Case("projection/center=wrong-length", "projection", "shape",
             lambda c: _rp(x, a, center=np.zeros(7))),
        Case("projection/center=nan-vector", "projection", "nonfinite",
             lambda c: _rp(x, a, center=np.full(8, np.nan))),
        Case("projection/center=string-vector", "projection", "dtype",
             lambda c: _rp(x, a, center=["a"] * 8)),
        Case("projection/center=anchors", "projection", "baseline",
             lambda c: _rp(x, a, center="anchors"),
             close(ref_similarity("cosine", x - a.mean(0), a - a.mean(0)), 1e-9), valid=True),
        Case("projection/center=vector", "projection", "baseline",
             lambda c: _rp(x, a, center=np.ones(8)),
             close(ref_similarity("cosine", x - 1, a - 1), 1e-9), valid=True),
        Case("projection/center=auto", "projection", "baseline",
             lambda c: _rp(x, a, center="auto"), lambda r: None if to_numpy(r).shape == (40, 6)
             and np.isfinite(to_numpy(r)).all() else "bad result", valid=True,
             requires=("relreps.centering:resolve_center",)),
    ]
    for label, value in BAD_COUNTS + [("bool-false", False)]:
        if label in ("none", "huge"):
            continue
        cases.append(Case(f"projection/chunk_size={label}", "projection", "count",
                          lambda c, v=value: _rp(x, a, chunk_size=v)))
    for chunk in (1, 7, 39, 40, 1000, 10 ** 12):
        cases.append(Case(f"projection/chunk_size={chunk}", "projection", "count",
                          lambda c, ch=chunk: _rp(x, a, chunk_size=ch),
                          close(ref_similarity("cosine", x, a), 1e-9), valid=True))
    out_cases = [("int32", lambda: np.zeros((40, 6), np.int32)),
                 ("bool", lambda: np.zeros((40, 6), bool)),
                 ("complex", lambda: np.zeros((40, 6), complex)),
                 ("wrong-shape", lambda: np.zeros((40, 5))),
                 ("transposed", lambda: np.zeros((6, 40))),
                 ("read-only", lambda: _readonly(np.zeros((40, 6)))),
                 ("list", lambda: [[0.0] * 6] * 40),
                 ("torch", lambda: _torch().zeros(40, 6, dtype=_torch().float64))]
    for label, make in out_cases:
        def ocall(c, make=make):
            out = make()
            res = _rp(x, a, chunk_size=7, out=out)
            return res if not isinstance(out, np.ndarray) else out

        cases.append(Case(f"projection/out={label}", "projection", "out", ocall))
    # a narrower float out= stores the float64 result rounded to float32 (documented), and is
    # refused when a value overflows it
    def f32_check(r: Any) -> str | None:
        if getattr(r, "dtype", None) != np.float32:
            return f"got {_describe(r)}, expected the float32 out array"
        return close(ref_similarity("cosine", x, a), 4 * float(np.finfo(np.float32).eps))(r)

    cases.append(Case("projection/out=float32-for-float64", "projection", "out",
                      lambda c: _rp(x, a, chunk_size=7, out=np.zeros((40, 6), np.float32)),
                      f32_check, valid=True))
    cases.append(Case("projection/out=float32-overflow", "projection", "out",
                      lambda c: _rp(x * 1e30, a * 1e30, similarity="inner", chunk_size=7,
                                    out=np.zeros((40, 6), np.float32))))
    cases.append(Case("projection/out=float64", "projection", "out",
                      lambda c: _rp(x, a, chunk_size=7, out=np.zeros((40, 6))),
                      close(ref_similarity("cosine", x, a), 1e-9), valid=True))
    # kinds: torch, mixed, devices, dask
    def torch_pair(c):
        t = _torch()
        return _rp(t.tensor(x), t.tensor(a))

    cases += [
        Case("projection/torch", "projection", "kind", torch_pair,
             close(ref_similarity("cosine", x, a), 1e-9), valid=True),
        Case("projection/numpy-x-torch-anchors", "projection", "kind",
             lambda c: _rp(x, _torch().tensor(a))),
        Case("projection/torch-x-numpy-anchors", "projection", "kind",
             lambda c: _rp(_torch().tensor(x), a)),
        Case("projection/torch-int", "projection", "dtype",
             lambda c: _rp(_torch().tensor(np.round(x * 3).astype(int)),
                           _torch().tensor(np.round(a * 3).astype(int))),
             close(ref_similarity("cosine", np.round(x * 3), np.round(a * 3)), 1e-5),
             valid=True),
        Case("projection/torch-nan", "projection", "nonfinite",
             lambda c: _rp(_torch().tensor(_with(x, np.nan)), _torch().tensor(a))),
        Case("projection/torch-out", "projection", "out",
             lambda c: _rp(_torch().tensor(x), _torch().tensor(a), out=np.zeros((40, 6)))),
        Case("projection/dask", "projection", "kind", lambda c: _dask_projection(x, a),
             close(ref_similarity("cosine", x, a), 1e-9), valid=True, requires=("dask.array",)),
        Case("projection/dask-nan", "projection", "nonfinite",
             lambda c: to_numpy(_dask_projection(_with(x, np.nan), a)),
             requires=("dask.array",)),
    ]
    return cases


def _dask_projection(x, a):
    import dask.array as da

    res = _rp(da.from_array(x, chunks=(7, 8)), a)
    if not hasattr(res, "compute"):
        raise AssertionError("dask input did not give a lazy dask array")
    return res.compute()


def estimator_cases() -> list[Case]:
    x, y = D["x"], D["y"]

    def rp(**kw):
        from relreps import RelativeProjection

        return RelativeProjection(**kw)

    def fit_t(kw, X=x, yy=None):
        return rp(**kw).fit(X, yy).transform(X)

    cases = [
        Case("estimator/transform-before-fit", "estimator", "state",
             lambda c: rp(n_anchors=5).transform(x)),
        Case("estimator/fit-transform", "estimator", "baseline",
             lambda c: fit_t({"n_anchors": 5, "random_state": 0}),
             lambda r: None if to_numpy(r).shape == (40, 5) else "wrong shape", valid=True),
        Case("estimator/transform-wrong-width", "estimator", "shape",
             lambda c: rp(n_anchors=5, random_state=0).fit(x).transform(x[:, :7])),
        Case("estimator/sampler=unknown", "estimator", "option",
             lambda c: fit_t({"n_anchors": 5, "sampler": "best"})),
        Case("estimator/similarity=unknown", "estimator", "option",
             lambda c: fit_t({"n_anchors": 5, "similarity": "cosinus"})),
        Case("estimator/center=bogus", "estimator", "option",
             lambda c: fit_t({"n_anchors": 5, "center": "median"})),
        Case("estimator/n_anchors>rows", "estimator", "count",
             lambda c: fit_t({"n_anchors": 41})),
        Case("estimator/stratified-y=nan", "estimator", "nonfinite",
             lambda c: fit_t({"n_anchors": 8, "sampler": "stratified"},
                             yy=np.where(np.arange(40) == 3, np.nan, y.astype(float)))),
        Case("estimator/anchors=explicit-nan", "estimator", "nonfinite",
             lambda c: fit_t({"anchors": _with(D["a"], np.nan)})),
    ]
    for label, value in BAD_COUNTS:
        cases.append(Case(f"estimator/n_anchors={label}", "estimator", "count",
                          lambda c, v=value: fit_t({"n_anchors": v})))
    for label, value in BAD_SEEDS:
        cases.append(Case(f"estimator/random_state={label}", "estimator", "seed",
                          lambda c, v=value: fit_t({"n_anchors": 5, "random_state": v})))
    for kind, label, make in bad_arrays(x, torch_too=False):
        cases.append(Case(f"estimator/X={label}", "estimator", kind,
                          lambda c, make=make: fit_t({"n_anchors": 5}, X=make())))
    for label, dt, e in SCALES:
        xs, xe = at_scale(x, dt, e)

        def scaled(c, xs=xs):
            m = rp(n_anchors=5, random_state=0).fit(xs)
            return m.transform(xs), m.anchor_indices_

        def check(res, xe=xe):
            out, idx = res
            return close(ref_similarity("cosine", xe, xe[np.asarray(idx)]), 2e-4)(out)

        kind = "subnormal" if "subnormal" in label else "magnitude"
        cases.append(Case(f"estimator/scale-{label}", "estimator", kind, scaled, check,
                          valid=True))
    return cases


# =========================================================================================
# cases: metrics
# =========================================================================================


def _metric(name: str) -> Callable:
    import relreps.metrics as M

    if not hasattr(M, name):
        raise Skip(f"relreps.metrics.{name} is absent")
    return getattr(M, name)


def metric_cases() -> list[Case]:
    x, xr, z, u = D["x"], D["xr"], D["z"], D["u"]
    cases: list[Case] = []
    pairs = {  # name -> (call(a, b), reference(a64, b64), degree-0 scale invariant?)
        "mean_cosine": (lambda p, q: _metric("mean_cosine")(p, q),
                        lambda p, q: float(np.mean(np.sum(_unit(p) * _unit(q), 1)))),
        "cka": (lambda p, q: _metric("cka")(p, q), ref_cka),
        "jaccard_at_k": (lambda p, q: _metric("jaccard_at_k")(p, q, 5),
                         lambda p, q: ref_retrieval(p, q, 5)["jaccard"]),
        "mrr_at_k": (lambda p, q: _metric("mrr_at_k")(p, q, 5),
                     lambda p, q: ref_retrieval(p, q, 5)["mrr"]),
        "mutual_knn": (lambda p, q: _metric("mutual_knn")(p, q, 5),
                       lambda p, q: ref_mutual_knn(p, q, 5)),
    }
    for name, (fn, ref) in pairs.items():
        other = xr if name != "mean_cosine" else x + 0.3 * u
        cases.append(Case(f"metrics/{name}/plain", "metrics", "baseline",
                          lambda c, fn=fn, o=other: fn(x, o), close(ref(x, other), 0, 1e-9),
                          valid=True))
        cases.append(Case(f"metrics/{name}/unrelated", "metrics", "baseline",
                          lambda c, fn=fn: fn(x, u), close(ref(x, u), 0, 1e-9), valid=True))
        for label, dt, e in SCALES:
            ps, pe = at_scale(x, dt, e)
            qs, qe = at_scale(other, dt, e)
            kind = "subnormal" if "subnormal" in label else "magnitude"
            cases.append(Case(f"metrics/{name}/scale-{label}", "metrics", kind,
                              lambda c, fn=fn, ps=ps, qs=qs: fn(ps, qs),
                              close(ref(pe, qe), 0, 2e-5 if dt == np.float32 else 1e-9),
                              valid=True))
        ps, pe = at_scale(x, np.float32, 100)
        cases.append(Case(f"metrics/{name}/one-side-1e30", "metrics", "magnitude",
                          lambda c, fn=fn, ps=ps, o=other: fn(ps, o.astype(np.float32)),
                          close(ref(pe, other.astype(np.float32).astype(float)), 0, 2e-5),
                          valid=True))
        for kind, label, make in bad_arrays(x):
            cases.append(Case(f"metrics/{name}/a={label}", "metrics", kind,
                              lambda c, fn=fn, make=make, o=other: fn(make(), o)))
        cases.append(Case(f"metrics/{name}/rows-differ", "metrics", "shape",
                          lambda c, fn=fn, o=other: fn(x, o[:-1])))
        cases.append(Case(f"metrics/{name}/torch-vs-numpy", "metrics", "kind",
                          lambda c, fn=fn, o=other: fn(_torch().tensor(x), o),
                          close(ref(x, other), 0, 1e-9), valid=True))
        cases.append(Case(f"metrics/{name}/torch-complex", "metrics", "dtype",
                          lambda c, fn=fn, o=other: fn(_torch().tensor(x + 1j), o)))
    # widths differ: cka, mutual_knn accept; mean_cosine and retrieval (absolute) must refuse
    cases += [
        Case("metrics/cka/widths-differ", "metrics", "shape", lambda c: _metric("cka")(x, z),
             close(ref_cka(x, z), 0, 1e-9), valid=True),
        Case("metrics/mean_cosine/widths-differ", "metrics", "shape",
             lambda c: _metric("mean_cosine")(x, z)),
        Case("metrics/mrr_at_k/widths-differ", "metrics", "shape",
             lambda c: _metric("mrr_at_k")(x, z)),
        Case("metrics/mutual_knn/widths-differ", "metrics", "shape",
             lambda c: _metric("mutual_knn")(x, z, 5), close(ref_mutual_knn(x, z, 5), 0, 1e-9),
             valid=True),
        Case("metrics/cka/rbf-sigma=0", "metrics", "range",
             lambda c: _metric("cka")(x, xr, kernel="rbf", sigma=0)),
        Case("metrics/cka/rbf-sigma=-1", "metrics", "range",
             lambda c: _metric("cka")(x, xr, kernel="rbf", sigma=-1.0)),
        Case("metrics/cka/rbf-sigma=nan", "metrics", "range",
             lambda c: _metric("cka")(x, xr, kernel="rbf", sigma=float("nan"))),
        Case("metrics/cka/rbf-sigma=1e-300", "metrics", "range",
             lambda c: _metric("cka")(x, xr, kernel="rbf", sigma=1e-300),
             lambda r: None if np.isfinite(r) and -1e-9 <= r <= 1 + 1e-9 else f"cka={r}",
             valid=True),
        Case("metrics/cka/kernel=unknown", "metrics", "option",
             lambda c: _metric("cka")(x, xr, kernel="poly")),
        Case("metrics/cka/debiased=string", "metrics", "type",
             lambda c: _metric("cka")(x, xr, debiased="yes")),
        Case("metrics/cka/constant", "metrics", "degenerate",
             lambda c: _metric("cka")(np.ones((40, 8)), xr)),
        Case("metrics/cka/one-sample", "metrics", "shape",
             lambda c: _metric("cka")(x[:1], xr[:1])),
        Case("metrics/mean_cosine/zero-row", "metrics", "degenerate",
             lambda c: _metric("mean_cosine")(np.vstack([x, np.zeros((1, 8))]),
                                              np.vstack([xr, np.ones((1, 8))]))),
        Case("metrics/mean_cosine/empty", "metrics", "empty",
             lambda c: _metric("mean_cosine")(x[:0], xr[:0])),
        Case("metrics/mrr_at_k/empty", "metrics", "empty",
             lambda c: _metric("mrr_at_k")(x[:0], xr[:0])),
    ]
    for fname in ("jaccard_at_k", "mrr_at_k", "mutual_knn"):
        bad = [(lb, v) for lb, v in BAD_COUNTS if lb != "huge"] + [("rows+1", 41)]
        if fname == "mutual_knn":
            bad.append(("rows", 40))  # itself excluded: at most rows - 1 neighbours
        for label, value in bad:
            cases.append(Case(f"metrics/{fname}/k={label}", "metrics", "count",
                              lambda c, f=fname, v=value: _metric(f)(x, xr, k=v)))
    for fname in ("jaccard_at_k", "mrr_at_k"):
        key = fname.split("_")[0]
        cases.append(Case(f"metrics/{fname}/k=rows", "metrics", "count",
                          lambda c, f=fname: _metric(f)(x, xr, k=40),
                          close(ref_retrieval(x, xr, 40)[key], 0, 1e-9), valid=True))
    for label, make in BAD_INDICES:
        cases.append(Case(f"metrics/mrr_at_k/queries={label}", "metrics", "index",
                          lambda c, make=make: _metric("mrr_at_k")(x, xr, 5, queries=make())))
    cases.append(Case("metrics/mrr_at_k/queries=subset", "metrics", "index",
                      lambda c: _metric("mrr_at_k")(x, xr, 5, queries=np.arange(10)),
                      close(ref_retrieval(x, xr, 5, np.arange(10))["mrr"], 0, 1e-9),
                      valid=True))
    for label, value in [("zero", 0), ("negative", -3), ("fraction", 2.5), ("bool", True),
                         ("string", "8")]:
        for fname in ("mrr_at_k", "mutual_knn"):
            cases.append(Case(f"metrics/{fname}/block_size={label}", "metrics", "block",
                              lambda c, f=fname, v=value: _metric(f)(x, xr, k=5, block_size=v)))
    for bs in (1, 3, 1000):
        cases.append(Case(f"metrics/mrr_at_k/block_size={bs}", "metrics", "block",
                          lambda c, v=bs: _metric("mrr_at_k")(x, xr, k=5, block_size=v),
                          close(ref_retrieval(x, xr, 5)["mrr"], 0, 1e-9), valid=True))
    cases.append(Case("metrics/mrr_at_k/metric=unknown", "metrics", "option",
                      lambda c: _metric("mrr_at_k")(x, xr, 5, metric="l2")))
    # knn_indices against brute force
    cases += [
        Case("metrics/knn_indices/plain", "metrics", "baseline",
             lambda c: _metric("knn_indices")(x[:10], x, 4), equal(ref_knn(x[:10], x, 4)),
             valid=True),
        Case("metrics/knn_indices/exclude=bool", "metrics", "index",
             lambda c: _metric("knn_indices")(x, x, 4, exclude=np.ones(40, bool))),
        Case("metrics/knn_indices/exclude=float", "metrics", "index",
             lambda c: _metric("knn_indices")(x, x, 4, exclude=np.arange(40.0))),
        Case("metrics/knn_indices/exclude=negative", "metrics", "index",
             lambda c: _metric("knn_indices")(x, x, 4, exclude=-np.ones(40, int))),
        Case("metrics/knn_indices/scale-f32-1e36", "metrics", "magnitude",
             lambda c: _metric("knn_indices")(*[at_scale(v, np.float32, 120)[0]
                                                for v in (x[:10], x)], 4),
             equal(ref_knn(*[at_scale(v, np.float32, 120)[1] for v in (x[:10], x)], 4)),
             valid=True),
        Case("metrics/knn_indices/method=bogus", "metrics", "option",
             lambda c: _metric("knn_indices")(x, x, 4, method="annoy"),
             requires=("relreps.metrics:knn_indices(method)",)),
    ]
    def approx_check(r: Any) -> str | None:
        """Against the brute-force reference: equal where the measured recall is 1, otherwise
        within the share of neighbours missed."""
        if not isinstance(r, dict) or not {"jaccard", "mrr", "recall_at_k",
                                           "recall_queries"} <= set(r):
            return f"got {r!r}"
        recall, nq = float(r["recall_at_k"]), r["recall_queries"]
        if not 0 <= recall <= 1 or not isinstance(nq, (int, np.integer)) or not 0 < nq <= len(x):
            return f"recall_at_k {recall} / recall_queries {nq!r} out of range"
        ref = ref_retrieval(x, xr, 5)
        for key in ("jaccard", "mrr"):
            if not abs(float(r[key]) - ref[key]) <= (1 - recall) + 1e-12:
                return f"{key} {r[key]} vs exact {ref[key]} at recall {recall}"
        return None

    for method in ("ivf", "hnsw"):
        cases.append(Case(f"metrics/retrieval_metrics/method={method}", "metrics", "baseline",
                          lambda c, m=method: _metric("retrieval_metrics")(x, xr, 5, method=m),
                          approx_check, valid=True,
                          requires=("relreps.metrics:retrieval_metrics(method)",)))
    # new metrics, guarded: scale invariance against the same call at unit scale
    for name in ("svcca", "pwcca", "procrustes_distance", "rsa"):
        cases.append(Case(f"metrics/{name}/plain", "metrics", "baseline",
                          lambda c, n=name: _metric(n)(x, xr),
                          lambda r: None if np.all(np.isfinite(to_numpy(r))) else "not finite",
                          valid=True, requires=(f"relreps.metrics:{name}",)))
        for kind, label, make in bad_arrays(x)[:8]:
            cases.append(Case(f"metrics/{name}/a={label}", "metrics", kind,
                              lambda c, n=name, make=make: _metric(n)(make(), xr),
                              requires=(f"relreps.metrics:{name}",)))
        for label, dt, e in (SCALES[0], SCALES[4], SCALES[5]):
            def self_ref(r, n=name, dt=dt, e=e):
                base = _metric(n)(at_scale(x, dt, e)[1], at_scale(xr, dt, e)[1])
                return close(to_numpy(base), 0, 1e-4)(r)

            cases.append(Case(f"metrics/{name}/scale-{label}", "metrics", "magnitude",
                              lambda c, n=name, dt=dt, e=e: _metric(n)(at_scale(x, dt, e)[0],
                                                                      at_scale(xr, dt, e)[0]),
                              self_ref, valid=True, requires=(f"relreps.metrics:{name}",)))
    return cases


# =========================================================================================
# cases: anchors
# =========================================================================================


def _anchors():
    import relreps.anchors as A

    return A


def anchor_cases() -> list[Case]:
    x, y = D["x"], D["y"]
    cases: list[Case] = []
    methods = ("uniform", "stratified", "kmeans", "farthest_point")

    def sample(v, n, method, **kw):
        if method == "stratified":
            kw.setdefault("y", y)
        return _anchors().sample_anchors(v, n, method, **kw)

    def good_indices(n):
        def check(r):
            idx = to_numpy(r)
            if idx.dtype.kind not in "iu" or idx.shape != (n,) or len(set(idx.tolist())) != n \
                    or idx.min() < 0 or idx.max() >= 40:
                return f"not {n} distinct row indices: {_describe(idx)} {idx[:8]}"
            return None

        return check

    for m in methods:
        cases.append(Case(f"anchors/{m}/plain", "anchors", "baseline",
                          lambda c, m=m: sample(x, 8, m, random_state=0), good_indices(8),
                          valid=True))
        for label, value in BAD_COUNTS + [("more-than-rows", 41)]:
            cases.append(Case(f"anchors/{m}/n={label}", "anchors", "count",
                              lambda c, m=m, v=value: sample(x, v, m, random_state=0)))
        for label, value in BAD_SEEDS:
            cases.append(Case(f"anchors/{m}/random_state={label}", "anchors", "seed",
                              lambda c, m=m, v=value: sample(x, 8, m, random_state=v)))
        for kind, label, make in bad_arrays(x)[:12]:
            cases.append(Case(f"anchors/{m}/x={label}", "anchors", kind,
                              lambda c, m=m, make=make: sample(make(), 8, m, random_state=0)))
        for label, dt, e in (SCALES[1], SCALES[4], SCALES[5], SCALES[7]):
            xs, xe = at_scale(x, dt, e)

            def same_as_unit(r, m=m, xe=xe):
                return equal(sample(xe, 8, m, random_state=0))(r)

            cases.append(Case(f"anchors/{m}/scale-{label}", "anchors", "magnitude",
                              lambda c, m=m, xs=xs: sample(xs, 8, m, random_state=0),
                              same_as_unit, valid=True))
        cases.append(Case(f"anchors/{m}/torch", "anchors", "kind",
                          lambda c, m=m: sample(_torch().tensor(x), 8, m, random_state=0),
                          good_indices(8), valid=True))
    ynan = np.where(np.arange(40) == 5, np.nan, y.astype(float))
    cases += [
        Case("anchors/stratified/y=nan", "anchors", "nonfinite",
             lambda c: sample(x, 8, "stratified", y=ynan, random_state=0), timeout=30),
        Case("anchors/stratified/y=none", "anchors", "type",
             lambda c: _anchors().sample_anchors(x, 8, "stratified", random_state=0)),
        Case("anchors/stratified/y-short", "anchors", "shape",
             lambda c: sample(x, 8, "stratified", y=y[:-1], random_state=0)),
        Case("anchors/stratified/y-2d", "anchors", "shape",
             lambda c: sample(x, 8, "stratified", y=np.stack([y, y], 1), random_state=0)),
        Case("anchors/stratified/fewer-than-classes", "anchors", "count",
             lambda c: sample(x, 3, "stratified", random_state=0)),
        Case("anchors/method=unknown", "anchors", "option",
             lambda c: _anchors().sample_anchors(x, 8, "random")),
        Case("anchors/kmeans/constant-x", "anchors", "degenerate",
             lambda c: sample(np.ones((40, 8)), 8, "kmeans", random_state=0),
             good_indices(8), valid=True),
        Case("anchors/farthest_point/duplicate-rows", "anchors", "degenerate",
             lambda c: sample(np.repeat(x[:5], 8, axis=0), 8, "farthest_point", random_state=0),
             good_indices(8), valid=True),
    ]

    # AnchorSet
    def aset(idx):
        return _anchors().AnchorSet.from_indices(idx)

    for label, make in BAD_INDICES + [("duplicates", lambda: [1, 2, 2])]:
        cases.append(Case(f"anchors/AnchorSet/indices={label}", "anchors", "index",
                          lambda c, make=make: aset(make()).embeddings("default", x)))
    cases += [
        Case("anchors/AnchorSet/spaces-differ-in-size", "anchors", "shape",
             lambda c: _anchors().AnchorSet({"a": [0, 1, 2], "b": [0, 1]})),
        Case("anchors/AnchorSet/no-spaces", "anchors", "empty",
             lambda c: _anchors().AnchorSet({})),
        Case("anchors/AnchorSet/unknown-space", "anchors", "option",
             lambda c: aset([0, 1]).embeddings("other", x)),
        Case("anchors/AnchorSet/index-beyond-rows", "anchors", "index",
             lambda c: aset([0, 1, 39]).embeddings("default", x[:10])),
        Case("anchors/AnchorSet/round-trip", "anchors", "baseline",
             lambda c: _roundtrip_anchorset(c), equal([3, 1, 4]), valid=True),
    ]
    for label, content in [("truncated", '{"indices": {"default": [0, 1'),
                           ("not-json", "\x80\x02}q\x00."),
                           ("empty", ""),
                           ("list", "[1, 2, 3]"),
                           ("negative", '{"indices": {"default": [0, -1]}}'),
                           ("floats", '{"indices": {"default": [0.5, 1.5]}}'),
                           ("bools", '{"indices": {"default": [true, false]}}'),
                           ("strings", '{"indices": {"default": ["0", "1"]}}'),
                           ("nested", '{"indices": {"default": [[0, 1]]}}'),
                           ("missing-indices", '{"keys": ["a"]}'),
                           ("wrong-format-version",
                            '{"relreps_format": 99, "indices": {"default": [0, 1]}}'),
                           ("deep", "[" * 100000 + "]" * 100000)]:
        def load(c, content=content, label=label):
            p = c.path(f"anchorset-{label}.json")
            p.write_text(content)
            return _anchors().AnchorSet.load(p).embeddings("default", x)

        cases.append(Case(f"anchors/AnchorSet/load-{label}", "anchors", "file", load))
    cases.append(Case("anchors/AnchorSet/load-missing", "anchors", "file",
                      lambda c: _anchors().AnchorSet.load(c.path("nope.json"))))
    # diagnose
    a = D["a"]
    cases.append(Case("anchors/diagnose/plain", "anchors", "baseline",
                      lambda c: _anchors().diagnose(a).effective_dim,
                      close(ref_effective_dim(a), 1e-9), valid=True))
    for label, dt, e in SCALES:
        as_, ae = at_scale(np.vstack([a, x[6:14]]), dt, e)
        kind = "subnormal" if "subnormal" in label else "magnitude"
        cases.append(Case(f"anchors/diagnose/scale-{label}", "anchors", kind,
                          lambda c, as_=as_: _anchors().diagnose(as_).effective_dim,
                          close(ref_effective_dim(ae), 1e-4), valid=True))
    for kind, label, make in bad_arrays(a)[:14]:
        cases.append(Case(f"anchors/diagnose/anchors={label}", "anchors", kind,
                          lambda c, make=make: _anchors().diagnose(make())))
    cases += [
        Case("anchors/diagnose/empty", "anchors", "empty", lambda c: _anchors().diagnose(a[:0])),
        Case("anchors/diagnose/duplicate_cosine=2", "anchors", "range",
             lambda c: _anchors().diagnose(a, duplicate_cosine=2.0)),
        Case("anchors/diagnose/duplicate_cosine=nan", "anchors", "range",
             lambda c: _anchors().diagnose(a, duplicate_cosine=float("nan"))),
        Case("anchors/diagnose/center=string", "anchors", "type",
             lambda c: _anchors().diagnose(a, center="yes")),
    ]
    return cases


def _roundtrip_anchorset(c: Ctx) -> Any:
    A = _anchors()
    p = c.path("anchorset-ok.json")
    A.AnchorSet.from_indices([3, 1, 4]).save(p)
    return A.AnchorSet.load(p).indices["default"]


# =========================================================================================
# cases: stitching, translation, torch
# =========================================================================================


def _stitch():
    import relreps.stitching as S

    return S


def stitching_cases() -> list[Case]:
    x, xr, y = D["x"], D["xr"], D["y"]
    spaces = {"a": (x[:30], x[30:]), "b": (xr[:30], xr[30:])}
    ytr, yte = y[:30], y[30:]
    anchors = np.arange(8)

    def sm(**kw):
        args = {"anchors": anchors, "seeds": (0,), "head": "logreg"}
        args.update(kw)
        return _stitch().stitching_matrix(kw.pop("spaces", spaces), ytr, kw.pop("y_test", yte),
                                          **{k: v for k, v in args.items()
                                             if k not in ("spaces", "y_test")})

    def rows_ok(r):
        rows = getattr(r, "rows", None)
        if not rows or not all(0 <= row.get("accuracy", -1) <= 1 for row in rows):
            return f"unexpected result {_describe(r)}"
        return None

    cases = [
        Case("stitching/matrix/plain", "stitching", "baseline", lambda c: sm(), rows_ok,
             valid=True),
        Case("stitching/matrix/metrics=()", "stitching", "empty", lambda c: sm(metrics=())),
        Case("stitching/matrix/metrics=unknown", "stitching", "option",
             lambda c: sm(metrics=("auc",))),
        Case("stitching/matrix/seeds=()", "stitching", "empty", lambda c: sm(seeds=())),
        Case("stitching/matrix/seeds=negative", "stitching", "seed", lambda c: sm(seeds=(-1,))),
        Case("stitching/matrix/seeds=fraction", "stitching", "seed", lambda c: sm(seeds=(0.5,))),
        Case("stitching/matrix/seeds=int", "stitching", "type", lambda c: sm(seeds=3)),
        Case("stitching/matrix/space=bogus", "stitching", "option", lambda c: sm(space="both")),
        Case("stitching/matrix/head=bogus", "stitching", "option", lambda c: sm(head="svm")),
        Case("stitching/matrix/no-spaces", "stitching", "empty", lambda c: sm(spaces={})),
        Case("stitching/matrix/y_train-short", "stitching", "shape",
             lambda c: _stitch().stitching_matrix(spaces, ytr[:-1], yte, anchors=anchors)),
        Case("stitching/matrix/y_test-nan", "stitching", "nonfinite",
             lambda c: sm(y_test=np.where(np.arange(10) == 1, np.nan, yte.astype(float)))),
        Case("stitching/matrix/anchors=none", "stitching", "type", lambda c: sm(anchors=None)),
        Case("stitching/matrix/fit_spaces=unknown", "stitching", "option",
             lambda c: sm(fit_spaces=["c"])),
        Case("stitching/matrix/space-nan", "stitching", "nonfinite",
             lambda c: sm(spaces={"a": (_with(x[:30], np.nan), x[30:]), "b": spaces["b"]})),
        Case("stitching/matrix/space-ragged", "stitching", "ragged",
             lambda c: sm(spaces={"a": ([[1.0, 2.0]] * 29 + [[1.0]], x[30:]),
                                  "b": spaces["b"]})),
        Case("stitching/matrix/spaces-not-pairs", "stitching", "type",
             lambda c: sm(spaces={"a": x, "b": xr})),
    ]
    for label, make in BAD_INDICES:
        cases.append(Case(f"stitching/matrix/anchors={label}", "stitching", "index",
                          lambda c, make=make: sm(anchors=make())))
    for spec in ("logreg-c-1", "logreg-cabc", "logreg-c0", "logreg-cnan", "logreg-cinf", "",
                 "LOGREG", 3, None, "logreg-c1e400"):
        cases.append(Case(f"stitching/make_head/{spec!r}", "stitching", "option",
                          lambda c, s=spec: _stitch().make_head(s, 0)))
    for spec in ("logreg", "logreg-c0.01", "logreg-cv", "mlp"):
        cases.append(Case(f"stitching/make_head/{spec}", "stitching", "baseline",
                          lambda c, s=spec: _stitch().make_head(s, 0),
                          lambda r: None if hasattr(r, "fit") and hasattr(r, "predict")
                          else f"not an estimator: {_describe(r)}", valid=True))
    for label, value in BAD_SEEDS:
        cases.append(Case(f"stitching/make_head/seed={label}", "stitching", "seed",
                          lambda c, v=value: _stitch().make_head("logreg", v)))
    return cases


def translation_cases() -> list[Case]:
    x, xr = D["x"], D["xr"]

    def lt(*args, **kw):
        try:
            from relreps.translation import LatentTranslator
        except ImportError:
            raise Skip("relreps.translation is absent") from None
        return LatentTranslator(*args, **kw)

    cases = [
        Case("translation/orthogonal/rotation", "translation", "baseline",
             lambda c: lt("orthogonal").fit(x, xr).transform(x), close(xr, 1e-6), valid=True),
        Case("translation/transform-before-fit", "translation", "state",
             lambda c: lt().transform(x)),
        Case("translation/transform-wrong-width", "translation", "shape",
             lambda c: lt().fit(x, xr).transform(x[:, :5])),
        Case("translation/rows-differ", "translation", "shape", lambda c: lt().fit(x, xr[:-1])),
        Case("translation/one-row", "translation", "shape", lambda c: lt().fit(x[:1], xr[:1])),
        Case("translation/identical-anchors", "translation", "degenerate",
             lambda c: lt().fit(np.ones((10, 8)), xr[:10])),
        Case("translation/method=bogus", "translation", "option",
             lambda c: lt("svd").fit(x, xr)),
        Case("translation/alpha=-1", "translation", "range",
             lambda c: lt("lstsq", alpha=-1.0).fit(x, xr)),
        Case("translation/alpha=nan", "translation", "range",
             lambda c: lt("lstsq", alpha=float("nan")).fit(x, xr)),
        Case("translation/alpha=string", "translation", "type",
             lambda c: lt("lstsq", alpha="0.1").fit(x, xr)),
        Case("translation/std_scaling=string", "translation", "type",
             lambda c: lt("orthogonal", std_scaling="no").fit(x, xr)),
        Case("translation/numpy-and-torch", "translation", "kind",
             lambda c: lt().fit(x, _torch().tensor(xr))),
    ]
    for kind, label, make in bad_arrays(x)[:14]:
        cases.append(Case(f"translation/fit-a={label}", "translation", kind,
                          lambda c, make=make: lt().fit(make(), xr)))
        cases.append(Case(f"translation/transform={label}", "translation", kind,
                          lambda c, make=make: lt().fit(x, xr).transform(make())))
    for method in ("orthogonal", "lstsq", "affine"):
        for label, dt, e in (SCALES[0], SCALES[1], SCALES[4], SCALES[5], SCALES[7]):
            def scaled(c, m=method, dt=dt, e=e):
                xs, xrs = at_scale(x, dt, e)[0], at_scale(xr, dt, e)[0]
                return lt(m).fit(xs, xrs).transform(xs)

            def ref(r, m=method, dt=dt, e=e):
                xe, xre = at_scale(x, dt, e)[1], at_scale(xr, dt, e)[1]
                base = to_numpy(lt(m).fit(xe, xre).transform(xe))
                return scaled_check(base, e, 1, dt, rtol=1e-3)(r)

            kind = "subnormal" if "subnormal" in label else "magnitude"
            cases.append(Case(f"translation/{method}/scale-{label}", "translation", kind, scaled,
                              ref, valid=True))
    return cases


def torch_cases() -> list[Case]:
    x, a, y = D["x"], D["a"], D["y"]

    def layer(**kw):
        from relreps.nn import RelativeLayer

        return RelativeLayer(**kw)

    def tc(**kw):
        from relreps.nn import TorchClassifier

        return TorchClassifier(**kw)

    t = lambda v: _torch().tensor(v)  # noqa: E731
    cases = [
        Case("nn/RelativeLayer/plain", "nn", "baseline", lambda c: layer()(t(x), t(a)),
             close(ref_similarity("cosine", x, a), 1e-9), valid=True),
        Case("nn/RelativeLayer/numpy-input", "nn", "kind", lambda c: layer()(x, a)),
        Case("nn/RelativeLayer/numpy-anchors", "nn", "kind", lambda c: layer()(t(x), a)),
        Case("nn/RelativeLayer/nan-input", "nn", "nonfinite",
             lambda c: layer()(t(_with(x, np.nan)), t(a))),
        Case("nn/RelativeLayer/complex", "nn", "dtype",
             lambda c: layer()(t(x + 1j), t(a + 0j))),
        Case("nn/RelativeLayer/similarity=bogus", "nn", "option",
             lambda c: layer(similarity="cosinus")(t(x), t(a))),
        Case("nn/RelativeLayer/anchor_grad=bogus", "nn", "option",
             lambda c: layer(anchor_grad="none")),
        Case("nn/RelativeLayer/normalization=bogus", "nn", "option",
             lambda c: layer(normalization="group")),
        Case("nn/RelativeLayer/batchnorm-without-n", "nn", "option",
             lambda c: layer(normalization="batchnorm")),
        Case("nn/RelativeLayer/n_anchors=fraction", "nn", "count",
             lambda c: layer(normalization="layernorm", n_anchors=2.5)),
        Case("nn/RelativeLayer/wrong-anchor-count", "nn", "shape",
             lambda c: layer(normalization="layernorm", n_anchors=5)(t(x), t(a))),
        Case("nn/RelativeLayer/width-mismatch", "nn", "shape",
             lambda c: layer()(t(x), t(a[:, :5]))),
        Case("nn/TorchClassifier/predict-before-fit", "nn", "state",
             lambda c: tc().predict(x)),
    ]
    for label, dt, e in (SCALES[0], SCALES[4], SCALES[5]):
        xs, xe = at_scale(x, dt, e)
        as_, ae = at_scale(a, dt, e)
        cases.append(Case(f"nn/RelativeLayer/scale-{label}", "nn", "magnitude",
                          lambda c, xs=xs, as_=as_: layer()(t(xs), t(as_)),
                          scaled_check(ref_similarity("cosine", xe, ae), e, 0, dt), valid=True))
    fit_bad = [("X=nan", lambda: (_with(x, np.nan), y)), ("X=strings", lambda: (x.astype(str), y)),
               ("X=ragged", lambda: ([[1.0, 2.0], [1.0]], [0, 1])),
               ("X=complex", lambda: (x + 1j, y)), ("X=1-D", lambda: (x[0], y[:8])),
               ("y-short", lambda: (x, y[:-1])), ("y=nan", lambda: (x, np.full(40, np.nan))),
               ("y=none", lambda: (x, None)), ("X=empty", lambda: (x[:0], y[:0]))]
    for label, make in fit_bad:
        cases.append(Case(f"nn/TorchClassifier/fit-{label}", "nn", "input",
                          lambda c, make=make: tc(epochs=1).fit(*make())))
    for label, value in [("zero", 0), ("negative", -1), ("fraction", 2.5), ("bool", True)]:
        cases.append(Case(f"nn/TorchClassifier/epochs={label}", "nn", "count",
                          lambda c, v=value: tc(epochs=v).fit(x, y)))
        cases.append(Case(f"nn/TorchClassifier/batch_size={label}", "nn", "count",
                          lambda c, v=value: tc(epochs=1, batch_size=v).fit(x, y)))
    cases.append(Case("nn/TorchClassifier/lr=nan", "nn", "range",
                      lambda c: tc(epochs=1, lr=float("nan")).fit(x, y)))
    cases.append(Case("nn/TorchClassifier/predict-wrong-width", "nn", "shape",
                      lambda c: tc(epochs=1).fit(x, y).predict(x[:, :5])))
    return cases


# =========================================================================================
# cases: cache, encoders, data sets (the cache/data layer)
# =========================================================================================


def _cache():
    import relreps.cache as C

    return C


@contextlib.contextmanager
def _cache_root(c: Ctx):
    """Point RELREPS_CACHE at a fresh folder for one case."""
    old = os.environ.get("RELREPS_CACHE")
    root = Path(tempfile.mkdtemp(dir=c.tmp, prefix="cache-"))
    os.environ["RELREPS_CACHE"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("RELREPS_CACHE", None)
        else:
            os.environ["RELREPS_CACHE"] = old


def _evil_pickle(marker: Path) -> bytes:
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return pickle.dumps(Evil(), protocol=2)


def cache_cases() -> list[Case]:
    cases: list[Case] = []

    def ca(c, ns, key, compute, **kw):
        with _cache_root(c) as root:
            return _cache().cached_array(ns, key, compute, root=root, **kw)

    for label, ns, key in [("dotdot-namespace", "..", "k"), ("absolute-namespace", "/etc", "k"),
                           ("dotdot-key", "ok", "../k"), ("empty-key", "ok", ""),
                           ("slash-key", "ok", "a/b"), ("nested-dotdot", "a/../..", "k")]:
        cases.append(Case(f"cache/cached_array/{label}", "cache", "path",
                          lambda c, ns=ns, key=key: ca(c, ns, key, lambda: np.ones(2))))
    computed = [("nan", lambda: np.array([1.0, np.nan]), {}),
                ("inf", lambda: np.array([np.inf]), {}),
                ("strings", lambda: np.array(["a"]), {}),
                ("object", lambda: np.array([object()]), {}),
                ("ragged", lambda: [[1.0], [1.0, 2.0]], {}),
                ("complex", lambda: np.array([1j]), {}),
                ("wrong-shape", lambda: np.ones(3), {"shape": (2,)}),
                ("overflow-cast", lambda: np.array([1e300]), {"dtype": np.float32}),
                ("failed-check", lambda: np.ones(2), {"check": lambda v: False}),
                ("none", lambda: None, {})]
    for label, compute, kw in computed:
        cases.append(Case(f"cache/cached_array/computed-{label}", "cache", "input",
                          lambda c, f=compute, kw=kw: ca(c, "unit", "k", f, **kw)))
    cases.append(Case("cache/cached_array/compute-not-callable", "cache", "type",
                      lambda c: ca(c, "unit", "k", np.ones(2))))
    cases.append(Case("cache/cached_array/round-trip", "cache", "baseline",
                      lambda c: _twice(c, lambda: np.arange(6.0).reshape(2, 3)),
                      equal(np.arange(6.0).reshape(2, 3)), valid=True))
    # planted entries: each must be recomputed, never run, never used
    planted = {
        "pickle": lambda m, good: _evil_pickle(m),
        "object-npy": lambda m, good: _object_npy(m),
        "zero-bytes": lambda m, good: b"",
        "truncated": lambda m, good: good[: len(good) // 2],
        "wrong-shape": lambda m, good: _npy_bytes(np.zeros((3, 2))),
        "wrong-dtype": lambda m, good: _npy_bytes(np.zeros((2, 3), np.float32)),
        "nan": lambda m, good: _npy_bytes(np.full((2, 3), np.nan)),
        "huge-header-shape": lambda m, good: good.replace(b"(2, 3)", b"(2000000000, 3)"),
    }
    for label, make in planted.items():
        cases.append(Case(f"cache/cached_array/planted-{label}", "cache", "file",
                          lambda c, make=make: _planted(c, make),
                          equal(np.arange(6.0).reshape(2, 3)), valid=True))

    def ce(c, items, fn, **kw):
        from relreps.encoders import cached_encode

        with _cache_root(c):
            return cached_encode("sweep", items, fn, **kw)

    good_fn = lambda b: np.ones((len(b), 2))  # noqa: E731
    bad_encode = [("items=string", "abc", good_fn, {}), ("items=objects", [object()], good_fn, {}),
                  ("items=bools", [True], good_fn, {}), ("items=int", 5, good_fn, {}),
                  ("items=none", None, good_fn, {}),
                  ("fn-one-row", ["a", "b"], lambda b: np.ones((1, 2)), {}),
                  ("fn-1-D", ["a", "b"], lambda b: np.ones(len(b)), {}),
                  ("fn-nan", ["a", "b"], lambda b: np.full((len(b), 2), np.nan), {}),
                  ("fn-strings", ["a", "b"], lambda b: np.full((len(b), 2), "x"), {}),
                  ("fn-none", ["a", "b"], lambda b: None, {}),
                  ("fn-wrong-dim", ["a", "b"], good_fn, {"dim": 3}),
                  ("fn-not-callable", ["a"], "fn", {})]
    for label, value in BAD_COUNTS:
        if label != "huge":  # one batch: valid
            bad_encode.append((f"batch_size={label}", ["a", "b"], good_fn,
                               {"batch_size": value}))
    for label, value in [("string", "yes"), ("int", 1), ("none", None)]:
        bad_encode.append((f"use_cache={label}", ["a"], good_fn, {"use_cache": value}))
    for label, items, fn, kw in bad_encode:
        cases.append(Case(f"cache/cached_encode/{label}", "cache", "input",
                          lambda c, i=items, f=fn, kw=kw: ce(c, i, f, **kw)))
    cases.append(Case("cache/cached_encode/batch_size=huge", "cache", "count",
                      lambda c: ce(c, ["a", "b"], good_fn, batch_size=10 ** 12),
                      equal(np.ones((2, 2), np.float32)), valid=True))
    cases.append(Case("cache/cached_encode/empty-items", "cache", "empty",
                      lambda c: ce(c, [], good_fn, dim=2),
                      lambda r: None if to_numpy(r).shape == (0, 2) else f"shape {r.shape}",
                      valid=True))
    cases.append(Case("cache/cached_encode/arrays-as-items", "cache", "baseline",
                      lambda c: ce(c, [np.arange(2.0), np.arange(2.0) + 1],
                                   lambda b: np.stack(b)),
                      equal(np.array([[0, 1], [1, 2]], np.float32)), valid=True))

    def cenc(*args, **kw):
        from relreps.encoders import CachedEncoder

        return CachedEncoder(*args, **kw)

    for label, args, kw in [("encoder=int", (3, "n"), {}), ("name=empty", (good_fn, ""), {}),
                            ("name=int", (good_fn, 3), {}), ("batch_size=0", (good_fn, "n"),
                                                               {"batch_size": 0}),
                            ("dim=fraction", (good_fn, "n"), {"dim": 2.5})]:
        cases.append(Case(f"cache/CachedEncoder/{label}", "cache", "input",
                          lambda c, a=args, k=kw: cenc(*a, **k),
                          requires=("relreps.encoders:CachedEncoder",)))
    return cases


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _object_npy(marker: Path) -> bytes:
    import io
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    buf = io.BytesIO()
    arr = np.empty(1, dtype=object)
    arr[0] = Evil()
    np.save(buf, arr, allow_pickle=True)
    assert pickle  # (the object array's payload is a pickle)
    return buf.getvalue()


def _twice(c: Ctx, compute: Callable[[], np.ndarray]) -> np.ndarray:
    with _cache_root(c) as root:
        first = _cache().cached_array("unit", "k", compute, root=root)
        again = _cache().cached_array("unit", "k", lambda: np.zeros(1), root=root)
        if not np.array_equal(first, again):
            raise AssertionError("the cached value differs from the computed one")
        return again


def _planted(c: Ctx, make: Callable[[Path, bytes], bytes]) -> np.ndarray:
    marker = c.path(f"PWNED-{time.monotonic_ns()}")
    want = np.arange(6.0).reshape(2, 3)
    with _cache_root(c) as root:
        C = _cache()
        C.cached_array("unit", "k", lambda: want, root=root, shape=(2, 3), dtype=np.float64)
        path = root / "unit" / "k.npy"
        path.write_bytes(make(marker, path.read_bytes()))
        got = C.cached_array("unit", "k", lambda: want, root=root, shape=(2, 3),
                             dtype=np.float64)
    if marker.exists():
        raise AssertionError("a planted cache entry ran code")
    return got


def encoder_cases() -> list[Case]:
    def lte(name, **kw):
        from relreps.encoders import load_text_encoder

        return load_text_encoder(name, **kw)

    cases = []
    for label, name in [("int", 3), ("none", None), ("empty", ""), ("unknown", "bert-large"),
                        ("hub-id", "someone/model"), ("missing-folder", "./no/such/model"),
                        ("dotdot", "../../etc"), ("hf-missing", "hf:/no/such/folder")]:
        cases.append(Case(f"encoders/load_text_encoder/{label}", "encoders", "option",
                          lambda c, n=name: lte(n)))
    cases.append(Case("encoders/load_text_encoder/empty-folder", "encoders", "file",
                      lambda c: lte(str(c.tmp))))
    cases.append(Case("encoders/load_text_encoder/hf-pooling=max", "encoders", "option",
                      lambda c: lte("hf:" + str(c.tmp), pooling="max")))

    def effnet(images, **kw):
        from relreps.encoders.vision import EfficientNetLiteEncoder

        enc = EfficientNetLiteEncoder("lite0", resolution=32)
        enc._forward = lambda v: np.zeros((len(v), 1280), np.float32)  # no model needed
        return enc.encode(images, **kw)

    img = np.full((2, 3, 4, 4), 0.5, np.float32)
    bad_images = [("nan", lambda: np.where(np.arange(96).reshape(2, 3, 4, 4) == 5, np.nan, img)),
                  ("above-one", lambda: img * 255), ("negative", lambda: img - 1),
                  ("3-D", lambda: img[0]), ("one-channel", lambda: img[:, :1]),
                  ("strings", lambda: img.astype(str)), ("complex", lambda: img + 1j),
                  ("none", lambda: None), ("ragged", lambda: [[[[0.5]]], [[[0.5, 0.5]]]])]
    for label, make in bad_images:
        cases.append(Case(f"encoders/EfficientNetLite/images={label}", "encoders", "input",
                          lambda c, make=make: _in_cache(c, lambda: effnet(make()))))
    for label, kw in [("batch_size=0", {"batch_size": 0}), ("batch_size=2.5", {"batch_size": 2.5}),
                      ("use_cache=string", {"use_cache": "no"})]:
        cases.append(Case(f"encoders/EfficientNetLite/{label}", "encoders", "count",
                          lambda c, kw=kw: _in_cache(c, lambda: effnet(img, **kw))))
    cases.append(Case("encoders/EfficientNetLite/uint8", "encoders", "baseline",
                      lambda c: _in_cache(c, lambda: effnet((img * 255).astype(np.uint8))),
                      equal(np.zeros((2, 1280), np.float32)), valid=True))

    def words(*args, **kw):
        from relreps.encoders.words import WordVectors

        return WordVectors(*args, **kw)

    for label, args in [("nan", (["a", "b"], [[1.0, np.nan], [0, 1]])),
                        ("duplicates", (["a", "a"], [[1.0, 0], [0, 1]])),
                        ("rows-differ", (["a"], [[1.0, 0], [0, 1]])),
                        ("1-D", (["a", "b"], [1.0, 2.0])),
                        ("ragged", (["a", "b"], [[1.0], [1.0, 2.0]])),
                        ("strings", (["a", "b"], [["x", "y"], ["z", "w"]]))]:
        cases.append(Case(f"encoders/WordVectors/{label}", "encoders", "input",
                          lambda c, a=args: words(*a)))
    def w2v(c, corpus=None, **kw):
        from relreps.encoders.words import train_word2vec

        path = c.path("tiny-corpus.txt")
        if not path.exists():
            path.write_text("\n".join("the cat sat on the mat again" for _ in range(50)))
        with _cache_root(c):
            return train_word2vec(corpus or path, **{"vector_size": 4, "epochs": 1,
                                                     "min_count": 1, "workers": 1, **kw})

    for label, kw in [("vector_size=2.5", {"vector_size": 2.5}), ("epochs=0", {"epochs": 0}),
                      ("window=-1", {"window": -1}), ("alpha=nan", {"alpha": float("nan")}),
                      ("unknown-setting", {"bogus": 1}), ("seed=string", {"seed": "0"})]:
        cases.append(Case(f"encoders/train_word2vec/{label}", "encoders", "count",
                          lambda c, kw=kw: w2v(c, **kw), requires=("gensim",)))
    cases.append(Case("encoders/train_word2vec/missing-corpus", "encoders", "file",
                      lambda c: w2v(c, corpus=c.path("no-corpus.txt")), requires=("gensim",)))

    def enc_words(fn, words_in):
        from relreps.encoders.words import EncodedWords

        return EncodedWords("sweep-words", fn, dim=2).embed(words_in, use_cache=False)

    cases.append(Case("encoders/EncodedWords/nan-output", "encoders", "nonfinite",
                      lambda c: enc_words(lambda ws: np.full((len(ws), 2), np.nan), ["a"])))
    cases.append(Case("encoders/EncodedWords/wrong-width", "encoders", "shape",
                      lambda c: enc_words(lambda ws: np.ones((len(ws), 3)), ["a"])))
    cases.append(Case("encoders/load_word_space/unknown", "encoders", "option",
                      lambda c: __import__("relreps.encoders.words",
                                           fromlist=["x"]).load_word_space("bogus")))
    cases.append(Case("encoders/WordVectors/from_dict-strings", "encoders", "dtype",
                      lambda c: __import__("relreps.encoders.words", fromlist=["x"])
                      .WordVectors.from_dict({"a": ["x", "y"]})))
    cases.append(Case("encoders/WordVectors/words=string", "encoders", "type",
                      lambda c: words("ab", np.eye(2))))
    cases.append(Case("encoders/WordVectors/missing-word", "encoders", "input",
                      lambda c: words(["a", "b"], np.eye(2)).embed(["a", "zzz"])))
    cases.append(Case("encoders/as_word_space/int", "encoders", "type",
                      lambda c: __import__("relreps.encoders.words",
                                           fromlist=["x"]).as_word_space(3)))
    return cases


def _in_cache(c: Ctx, fn: Callable[[], Any]) -> Any:
    with _cache_root(c):
        return fn()


def dataset_cases() -> list[Case]:
    def im():
        import relreps.datasets.images as I

        return I

    y = np.repeat(np.arange(4), 10)
    cases = []
    for label, value in BAD_COUNTS:
        if label == "huge":
            continue
        cases.append(Case(f"datasets/stratified_subsample/n={label}", "datasets", "count",
                          lambda c, v=value: im().stratified_subsample(y, v)))
    for label, value in BAD_SEEDS:
        cases.append(Case(f"datasets/stratified_subsample/seed={label}", "datasets", "seed",
                          lambda c, v=value: im().stratified_subsample(y, 8, seed=v)))
    for label, make in [("nan", lambda: np.where(np.arange(40) == 3, np.nan, y)),
                        ("2-D", lambda: np.stack([y, y])), ("none", lambda: None),
                        ("string", lambda: "abc"), ("ragged", lambda: [[1], [1, 2]])]:
        cases.append(Case(f"datasets/stratified_subsample/y={label}", "datasets", "input",
                          lambda c, make=make: im().stratified_subsample(make(), 8)))
    cases.append(Case("datasets/stratified_subsample/y=empty", "datasets", "empty",
                      lambda c: im().stratified_subsample(np.array([], int), 8), equal(
                          np.array([], int)), valid=True))
    cases.append(Case("datasets/stratified_subsample/balanced", "datasets", "baseline",
                      lambda c: np.bincount(y[im().stratified_subsample(y, 8, seed=1)]),
                      equal([2, 2, 2, 2]), valid=True))
    for label, args in [("name", ("imagenet",)), ("split", ("digits", "valid")),
                        ("name-int", (3,))]:
        cases.append(Case(f"datasets/load_image_dataset/{label}", "datasets", "option",
                          lambda c, a=args: im().load_image_dataset(*a)))
    for label, n in [("n=0", 0), ("n=-5", -5), ("n=2.5", 2.5), ("n=true", True)]:
        cases.append(Case(f"datasets/load_digits_images/{label}", "datasets", "count",
                          lambda c, n=n: im().load_digits_images("train", n=n)))

    def graphs():
        try:
            import relreps.datasets.graphs as G
        except ImportError:
            raise Skip("torch_geometric is not installed") from None
        return G

    for label, kw in [("n_classes=1", {"n_classes": 1}), ("n_nodes=3", {"n_nodes": 3}),
                      ("n_nodes=2.5", {"n_nodes": 40.5}), ("p_in=2", {"p_in": 2.0}),
                      ("p_in=nan", {"p_in": float("nan")}), ("seed=-1", {"seed": -1}),
                      ("train_frac=1.5", {"train_frac": 1.5})]:
        cases.append(Case(f"datasets/synthetic_graph/{label}", "datasets", "count",
                          lambda c, kw=kw: graphs().synthetic_graph(**kw),
                          requires=("torch_geometric",)))
    for label, args in [("pubmed", ("PubMed",)), ("unknown", ("Reddit",)),
                        ("split", ("Cora", "random")), ("int", (3,))]:
        cases.append(Case(f"datasets/load_planetoid/{label}", "datasets", "option",
                          lambda c, a=args: graphs().load_planetoid(*a),
                          requires=("torch_geometric",)))

    def wds():
        import relreps.datasets.words as W

        return W

    def txt():
        import relreps.datasets.text as T

        return T

    cases += [
        Case("datasets/load_corpus/unknown", "datasets", "option",
             lambda c: wds().load_corpus("bogus")),
        Case("datasets/load_corpus/int", "datasets", "type", lambda c: wds().load_corpus(3)),
        Case("datasets/build_corpus/unknown-source", "datasets", "option",
             lambda c: _in_cache(c, lambda: wds().build_corpus(["bogus"]))),
        Case("datasets/build_corpus/string-sources", "datasets", "type",
             lambda c: _in_cache(c, lambda: wds().build_corpus("wordnet"))),
        Case("datasets/build_corpus/no-sources", "datasets", "empty",
             lambda c: _in_cache(c, lambda: wds().build_corpus([]))),
        Case("datasets/translate_texts/direction", "datasets", "option",
             lambda c: _in_cache(c, lambda: txt().translate_texts(["a"], direction="en-xx"))),
        Case("datasets/translate_texts/chunk_size=0", "datasets", "count",
             lambda c: _in_cache(c, lambda: txt().translate_texts(["a"], chunk_size=0))),
        Case("datasets/translate_texts/texts=string", "datasets", "type",
             lambda c: _in_cache(c, lambda: txt().translate_texts("a text"))),
        Case("datasets/load_text_dataset/unknown", "datasets", "option",
             lambda c: txt().load_text_dataset("imdb")),
        Case("datasets/load_graph/int", "datasets", "type",
             lambda c: graphs().load_graph(3), requires=("torch_geometric",)),
    ]

    def hostile_planetoid(c, part):
        import shutil

        from relreps.datasets import shared_data_dir

        G = graphs()
        try:
            src = shared_data_dir("planetoid/Cora/raw") / "planetoid" / "Cora" / "raw"
        except Exception:  # noqa: BLE001
            raise Skip("shared Planetoid data is not available") from None
        dst = c.path(f"planetoid-{part}") / "Cora" / "raw"
        if not dst.exists():
            shutil.copytree(src, dst)
        target = dst / f"ind.cora.{part}"
        target.chmod(0o644)
        marker = c.path(f"PWNED-planetoid-{part}")
        target.write_bytes(_evil_pickle(marker))
        try:
            return G.load_planetoid("Cora", source=dst.parent.parent)
        finally:
            if marker.exists():
                raise AssertionError("a hostile Planetoid file ran code")

    for part in ("x", "graph"):
        cases.append(Case(f"datasets/load_planetoid/hostile-{part}", "datasets", "file",
                          lambda c, p=part: hostile_planetoid(c, p),
                          requires=("torch_geometric",)))

    def hostile_mnist(c, payload_kind):
        import gzip

        I = im()
        marker = c.path("PWNED-mnist")
        path = c.path(f"mnist-{payload_kind}.pkl.gz")
        payload = _evil_pickle(marker) if payload_kind == "evil" else b"\x80\x02]q\x00("
        with gzip.open(path, "wb") as f:
            f.write(payload)
        old_path, old_memo = I.mnist_path, dict(I._MNIST_MEMO)
        I.mnist_path, I._MNIST_MEMO = (lambda: path), {}
        try:
            with _cache_root(c):
                return I.load_mnist("train")
        finally:
            I.mnist_path = old_path
            I._MNIST_MEMO.clear()
            I._MNIST_MEMO.update(old_memo)
            if marker.exists():
                raise AssertionError("a hostile MNIST file ran code")

    for kind in ("evil", "truncated"):
        cases.append(Case(f"datasets/load_mnist/hostile-{kind}", "datasets", "file",
                          lambda c, k=kind: hostile_mnist(c, k),
                          requires=("relreps.datasets.images:read_mnist_pickle",)))
    return cases


# =========================================================================================
# cases: command line
# =========================================================================================


def _cli(c: Ctx, args: Sequence[str], timeout: float, cwd: Path | None = None,
         env_extra: dict[str, str] | None = None) -> CliResult:
    env = dict(os.environ)
    env.setdefault("RELREPS_QUIET", "1")
    env["RELREPS_CACHE"] = str(c.path("cli-cache"))
    env.update(env_extra or {})
    env.setdefault("OMP_NUM_THREADS", "1")
    try:
        p = subprocess.run([sys.executable, "-m", "relreps", *args], capture_output=True,
                           text=True, timeout=timeout, cwd=cwd or c.path("cli-cwd"), env=env)
    except subprocess.TimeoutExpired as e:
        return CliResult(None, str(e.stdout or ""), str(e.stderr or ""))
    return CliResult(p.returncode, p.stdout, p.stderr)


def _cli_files(c: Ctx) -> dict[str, str]:
    """Small input files for the CLI cases (written once per worker)."""
    if "cli" in c.memo:
        return c.memo["cli"]
    d = c.path("cli-in")
    d.mkdir(exist_ok=True)
    c.path("cli-cwd").mkdir(exist_ok=True)
    rng = _rng(1)
    a = rng.normal(size=(120, 16)).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    files = {"A": d / "a.npy", "B": d / "b.npy", "short": d / "short.npy", "nan": d / "nan.npy",
             "labels": d / "y.npy", "labels_short": d / "y_short.npy", "idx": d / "idx.npy",
             "idx_neg": d / "idx_neg.npy", "idx_float": d / "idx_float.npy",
             "texts": d / "texts.txt", "csv": d / "a.csv", "pickle": d / "evil.npy",
             "txt": d / "a.txt", "empty": d / "empty.npy", "model_bad": d / "model.safetensors",
             "anchors_json": d / "anchors.json", "xyz": d / "a.xyz"}
    np.save(files["A"], a)
    np.save(files["B"], (a @ q).astype(np.float32))
    np.save(files["short"], a[:-1])
    bad = a.copy()
    bad[7, 3] = np.nan
    np.save(files["nan"], bad)
    np.save(files["labels"], np.arange(120) % 3)
    np.save(files["labels_short"], np.arange(100) % 3)
    np.save(files["idx"], np.arange(0, 120, 6))
    np.save(files["idx_neg"], np.array([0, -1, 5]))
    np.save(files["idx_float"], np.arange(0, 20, dtype=float))
    files["texts"].write_text("one text\nanother text\n")
    files["csv"].write_text("a,b\n1,x\n2,y\n")
    files["pickle"].write_bytes(_evil_pickle(c.path("PWNED-cli")))
    files["txt"].write_text("not an array\n")
    files["xyz"].write_bytes(files["A"].read_bytes())  # an .npy under an unknown suffix
    files["empty"].write_bytes(b"")
    files["model_bad"].write_bytes(b"\x00" * 16)
    files["anchors_json"].write_text('{"indices": {"default": [0, 1')
    c.memo["cli"] = {k: str(v) for k, v in files.items()}
    return c.memo["cli"]


def cli_cases() -> list[Case]:
    cases: list[Case] = []

    def add(cid: str, args_of: Callable[[dict[str, str], Ctx], list[str]], *, kind: str = "cli",
            check: Callable[[Any], str | None] | None = None, requires: str | None = None,
            timeout: float = 300):
        def call(c, args_of=args_of, timeout=timeout):
            f = _cli_files(c)
            if requires and "cli-help-" + requires not in c.memo:
                r = _cli(c, [*requires.split(), "--help"], 120)
                c.memo["cli-help-" + requires] = r.rc == 0
            if requires and not c.memo["cli-help-" + requires]:
                raise Skip(f"`relreps {requires}` is not available")
            got = args_of(f, c)  # a list of arguments, or (arguments, environment)
            args, env_extra = got if isinstance(got, tuple) else (got, None)
            res = _cli(c, args, timeout, env_extra=env_extra)
            if Path(c.path("PWNED-cli")).exists():
                raise AssertionError("a hostile input file ran code")
            return res

        cases.append(Case(f"cli/{cid}", "cli", kind, call, check, cli=True,
                          valid=check is not None, timeout=timeout + 30))

    def out_dir(c: Ctx, name: str) -> str:
        return str(c.path(f"cli-out-{name}-{time.monotonic_ns()}"))

    add("run/unknown-experiment", lambda f, c: ["run", "nosuchexperiment", "--scale", "smoke"])
    add("run/scale=huge", lambda f, c: ["run", "demo", "--scale", "huge"])
    add("run/seed=fraction", lambda f, c: ["run", "demo", "--scale", "smoke", "--seed", "2.5"])
    add("run/seed=negative", lambda f, c: ["run", "demo", "--scale", "smoke", "--seed", "-1",
                                           "--out", out_dir(c, "neg")])
    add("run/out=empty", lambda f, c: ["run", "demo", "--scale", "smoke", "--out", ""])
    add("run/opt-without-equals", lambda f, c: ["run", "demo", "--scale", "smoke",
                                                "--opt", "seeds"])
    add("run/opt-unknown-key", lambda f, c: ["run", "demo", "--scale", "smoke", "--opt",
                                             "no_such_option=3", "--out", out_dir(c, "opt")])
    add("run/out-is-a-file", lambda f, c: ["run", "demo", "--scale", "smoke", "--out", f["txt"]])
    cmp = "compare"
    # run folders: refused before any computation (tests/test_runs.py covers the runs that
    # complete: forced replacement, atomic commit, permissions)
    def another_run(c: Ctx) -> str:
        d = Path(out_dir(c, "prev"))
        d.mkdir()
        (d / ".relreps-run.json").write_text('{"status": "complete", "command": "demo"}')
        (d / "results.json").write_text("{}")
        (d / "figure.png").write_bytes(b"old")
        return str(d)

    def foreign(c: Ctx) -> str:
        d = Path(out_dir(c, "foreign"))
        d.mkdir()
        (d / "notes.txt").write_text("not a run")
        return str(d)

    for cmd in (["run", "demo"], ["demo"]):
        tag = "-".join(cmd)
        add(f"{tag}/out-is-another-run", lambda f, c, cmd=cmd: [
            *cmd, "--scale", "smoke", "--out", another_run(c)], kind="run-folder")
        add(f"{tag}/force-on-a-foreign-folder", lambda f, c, cmd=cmd: [
            *cmd, "--scale", "smoke", "--out", foreign(c), "--force"], kind="run-folder")
        add(f"{tag}/out=.", lambda f, c, cmd=cmd: [*cmd, "--scale", "smoke", "--out", "."],
            kind="run-folder")
        add(f"{tag}/out-under-a-file", lambda f, c, cmd=cmd: [
            *cmd, "--scale", "smoke", "--out", f["txt"] + "/run"], kind="run-folder")
        add(f"{tag}/cache-is-a-file", lambda f, c, cmd=cmd: (
            [*cmd, "--scale", "smoke", "--out", out_dir(c, "cache")],
            {"RELREPS_CACHE": f["txt"]}), kind="run-folder")
    add("run/method-not-taken", lambda f, c: ["run", "demo", "--scale", "smoke", "--method",
                                              "bogus", "--out", out_dir(c, "m")],
        kind="run-folder")
    add("compare/out-is-another-run", lambda f, c: [cmp, f["A"], f["B"], "--out",
                                                    another_run(c)], kind="run-folder",
        requires=cmp)
    add("unknown-command", lambda f, c: ["frobnicate"])
    add("compare/rows-differ", lambda f, c: [cmp, f["A"], f["short"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/nan-rows", lambda f, c: [cmp, f["A"], f["nan"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/missing-file", lambda f, c: [cmp, f["A"], f["A"] + ".missing",
                                              "--out", out_dir(c, "c")], requires=cmp)
    add("compare/unknown-format", lambda f, c: [cmp, f["A"], f["xyz"], "--out",
                                                out_dir(c, "c")], requires=cmp)
    add("compare/text-file", lambda f, c: [cmp, f["A"], f["txt"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/pickle-as-npy", lambda f, c: [cmp, f["A"], f["pickle"], "--out",
                                               out_dir(c, "c")], requires=cmp)
    add("compare/empty-npy", lambda f, c: [cmp, f["A"], f["empty"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/npz-missing-key", lambda f, c: [cmp, f["A"], _npz(c) + ":nokey",
                                                 "--out", out_dir(c, "c")], requires=cmp)
    add("compare/csv-missing-column", lambda f, c: [cmp, f["A"], f["csv"] + ":zzz",
                                                    "--out", out_dir(c, "c")], requires=cmp)
    add("compare/anchors=1", lambda f, c: [cmp, f["A"], f["B"], "--anchors", "1",
                                           "--out", out_dir(c, "c")], requires=cmp)
    add("compare/anchors=0", lambda f, c: [cmp, f["A"], f["B"], "--anchors", "0",
                                           "--out", out_dir(c, "c")], requires=cmp)
    add("compare/anchors>rows", lambda f, c: [cmp, f["A"], f["B"], "--anchors", "500",
                                              "--out", out_dir(c, "c")], requires=cmp)
    add("compare/k=0", lambda f, c: [cmp, f["A"], f["B"], "--k", "0", "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/k>rows", lambda f, c: [cmp, f["A"], f["B"], "--k", "500",
                                        "--out", out_dir(c, "c")], requires=cmp)
    add("compare/labels-short", lambda f, c: [cmp, f["A"], f["B"], "--labels",
                                              f["labels_short"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/anchor-index-negative", lambda f, c: [cmp, f["A"], f["B"], "--anchor-index",
                                                       f["idx_neg"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/anchor-index-float", lambda f, c: [cmp, f["A"], f["B"], "--anchor-index",
                                                    f["idx_float"], "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/anchor-index-truncated-json",
        lambda f, c: [cmp, f["A"], f["B"], "--anchor-index", f["anchors_json"],
                      "--out", out_dir(c, "c")], requires=cmp)
    add("compare/similarity-unknown", lambda f, c: [cmp, f["A"], f["B"], "--similarity",
                                                    "cosinus", "--out", out_dir(c, "c")],
        requires=cmp)
    add("compare/out-unwritable", lambda f, c: [cmp, f["A"], f["B"], "--out",
                                                "/proc/relreps-sweep/out"], requires=cmp)
    add("compare/one-space", lambda f, c: [cmp, f["A"], "--out", out_dir(c, "c")], requires=cmp)
    add("compare/ok", lambda f, c: [cmp, f["A"], f["B"], "--anchors", "20", "--k", "5",
                                    "--out", out_dir(c, "ok")],
        check=lambda r: None if r.rc == 0 else f"exit {r.rc}", requires=cmp)
    st = "stitch fit"
    add("stitch-fit/labels-short", lambda f, c: ["stitch", "fit", f["A"], "--labels",
                                                 f["labels_short"], "--anchor-index", f["idx"],
                                                 "--out", out_dir(c, "m") + ".safetensors"],
        requires=st)
    add("stitch-fit/head-unknown", lambda f, c: ["stitch", "fit", f["A"], "--labels",
                                                 f["labels"], "--anchor-index", f["idx"],
                                                 "--head", "svm",
                                                 "--out", out_dir(c, "m") + ".safetensors"],
        requires=st)
    add("stitch-fit/anchor-index-negative",
        lambda f, c: ["stitch", "fit", f["A"], "--labels", f["labels"], "--anchor-index",
                      f["idx_neg"], "--out", out_dir(c, "m") + ".safetensors"], requires=st)
    add("stitch-predict/missing-model",
        lambda f, c: ["stitch", "predict", f["A"] + ".nomodel", f["B"], "--anchor-embeddings",
                      f["A"]], requires="stitch predict")
    add("stitch-predict/corrupt-model",
        lambda f, c: ["stitch", "predict", f["model_bad"], f["B"], "--anchor-embeddings", f["A"]],
        requires="stitch predict")
    add("stitch-predict/pickle-model",
        lambda f, c: ["stitch", "predict", f["pickle"], f["B"], "--anchor-embeddings", f["A"]],
        requires="stitch predict")
    add("embed/unknown-encoder", lambda f, c: ["embed", "--encoder", "no-such-encoder",
                                               "--texts", f["texts"], "--out",
                                               out_dir(c, "e") + ".npy"], requires="embed")
    add("embed/missing-texts", lambda f, c: ["embed", "--encoder", "minilm-l3", "--texts",
                                             f["texts"] + ".missing", "--out",
                                             out_dir(c, "e") + ".npy"], requires="embed")
    add("embed/batch-size=0", lambda f, c: ["embed", "--encoder", "minilm-l3", "--texts",
                                            f["texts"], "--batch-size", "0", "--out",
                                            out_dir(c, "e") + ".npy"], requires="embed")
    return cases


def _npz(c: Ctx) -> str:
    p = c.path("cli-in") / "a.npz"
    if not p.exists():
        np.savez(p, x=np.ones((120, 4)))
    return str(p)


# =========================================================================================
# self-test cases (exercise the classifier and the hang detection)
# =========================================================================================


def selftest_cases() -> list[Case]:
    def named(c):
        from relreps.errors import RelrepsError

        raise RelrepsError("refused")

    return [
        Case("selftest/named", "selftest", "selftest", named),
        Case("selftest/raw", "selftest", "selftest", lambda c: [][1]),
        Case("selftest/silent", "selftest", "selftest", lambda c: 42),
        Case("selftest/wrong", "selftest", "selftest", lambda c: 41, lambda r: None if r == 42
             else f"{r} != 42", valid=True),
        Case("selftest/correct", "selftest", "selftest", lambda c: 42,
             lambda r: None if r == 42 else "no", valid=True),
        Case("selftest/hang", "selftest", "selftest", lambda c: time.sleep(3600), timeout=3),
        Case("selftest/crash", "selftest", "selftest", lambda c: os._exit(9)),
        Case("selftest/skip", "selftest", "selftest", lambda c: 1,
             requires=("relreps.no_such_module",)),
        Case("selftest/after-crash", "selftest", "selftest", lambda c: 42,
             lambda r: None if r == 42 else "no", valid=True),
    ]


AREAS: dict[str, Callable[[], list[Case]]] = {
    "projection": projection_cases, "estimator": estimator_cases, "metrics": metric_cases,
    "anchors": anchor_cases, "stitching": stitching_cases, "translation": translation_cases,
    "nn": torch_cases, "cache": cache_cases, "encoders": encoder_cases,
    "datasets": dataset_cases, "cli": cli_cases,
}


def build_cases(only: Iterable[str] | None = None, *, cli: bool = True,
                selftest: bool = False) -> list[Case]:
    """Every case of the selected areas (all by default), in a stable order with unique ids."""
    names = list(only) if only else [a for a in AREAS if cli or a != "cli"]
    unknown = set(names) - set(AREAS) - {"selftest"}
    if unknown:
        raise SystemExit(f"unknown area(s) {sorted(unknown)}; known: {', '.join(AREAS)}")
    cases: list[Case] = []
    for name in names:
        cases += selftest_cases() if name == "selftest" else AREAS[name]()
    if selftest and "selftest" not in names:
        cases += selftest_cases()
    seen = Counter(c.id for c in cases)
    dup = [k for k, v in seen.items() if v > 1]
    if dup:
        raise RuntimeError(f"duplicate case ids: {dup[:5]}")
    return cases


# =========================================================================================
# running and classifying
# =========================================================================================


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    frames = [f for f in tb if "robustness_sweep" not in f.filename] or list(tb)
    if not frames:
        return ""
    f = frames[-1]
    return f" at {Path(f.filename).name}:{f.lineno} ({f.name})"


def classify_cli(res: CliResult, case: Case) -> tuple[str, str]:
    if res.rc is None:
        return "hang", "the command did not finish in time"
    err = res.stderr.strip()
    if "Traceback (most recent call last)" in res.stderr:
        last = err.splitlines()[-1] if err else ""
        return "raw_traceback", f"exit {res.rc}: {last[:200]}"
    if res.rc == 0:
        if case.check is None:
            return "silent_wrong", "exit 0: the command accepted the input"
        why = case.check(res)
        return ("correct", "") if why is None else ("silent_wrong", why)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if res.rc == 2 and lines and ("error:" in lines[-1]):
        one_line = sum(1 for ln in lines if "error" in ln.lower()) <= 1
        detail = lines[-1][:200] + ("" if one_line else " (more than one error line)")
        return "named_error", detail
    return "raw_traceback", f"exit {res.rc}: {(lines[-1] if lines else '(no message)')[:200]}"


def classify(case: Case, ctx: Ctx) -> tuple[str, str]:
    """Run one case in this process and classify its outcome (never raises)."""
    for req in case.requires:
        missing = _requirement_missing(req)
        if missing:
            return "skipped", f"needs {missing}"
    try:
        from relreps.errors import RelrepsError
    except ImportError:  # pragma: no cover - the sweep needs relreps
        raise SystemExit("relreps is not importable: set PYTHONPATH=src") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = case.call(ctx)
    except Skip as e:
        return "skipped", str(e)
    except RelrepsError as e:
        return "named_error", f"{type(e).__name__}: {str(e)[:240]}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except _Alarm:
        return "hang", "no answer within the time limit"
    except BaseException as e:  # noqa: BLE001 - every other exception is a raw traceback
        return "raw_traceback", f"{type(e).__name__}: {str(e)[:200]}{_where(e)}"
    if case.cli:
        return classify_cli(result, case)
    if case.check is None:
        return "silent_wrong", f"returned {_describe(result)} instead of refusing the input"
    try:
        why = case.check(result)
    except Exception as e:  # noqa: BLE001 - a result the check cannot read is wrong
        why = f"the result could not be checked ({type(e).__name__}: {e})"
    return ("correct", "") if why is None else ("silent_wrong", why)


class _Alarm(BaseException):
    """Raised by SIGALRM in in-process mode when a case runs past its limit."""


def run_in_process(cases: Sequence[Case], timeout: float = 60.0,
                   tmp: Path | None = None) -> list[dict[str, Any]]:
    """Run cases in this process (hangs caught with SIGALRM; a crash ends the run)."""
    with tempfile.TemporaryDirectory(prefix="relreps-sweep-") as d:
        ctx = Ctx(Path(tmp or d))

        def alarm(*_):
            raise _Alarm()

        old = signal.signal(signal.SIGALRM, alarm)
        out = []
        try:
            for case in cases:
                t0 = time.perf_counter()
                signal.setitimer(signal.ITIMER_REAL, case.timeout or timeout)
                try:
                    outcome, detail = classify(case, ctx)
                except _Alarm:
                    outcome, detail = "hang", "no answer within the time limit"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                out.append(_record(case, outcome, detail, time.perf_counter() - t0))
        finally:
            signal.signal(signal.SIGALRM, old)
    return out


def _record(case: Case, outcome: str, detail: str, seconds: float) -> dict[str, Any]:
    return {"id": case.id, "area": case.area, "kind": case.kind, "valid_input": case.valid,
            "outcome": outcome, "detail": detail, "seconds": round(seconds, 3)}


# ---------------------------------------------------------------- worker processes


def _worker_main(only: list[str], cli: bool, selftest: bool) -> None:
    """Child process: read case ids on stdin, answer one JSON line per case on stdout."""
    cases = {c.id: c for c in build_cases(only or None, cli=cli, selftest=selftest)}
    out = sys.stdout
    sys.stdout = sys.stderr  # prints of the code under test do not mix with the answers
    heavy = {"projection", "estimator", "metrics", "anchors", "stitching", "translation", "nn"}
    if not only or heavy & set(only):
        with contextlib.suppress(Exception):  # warm up: heavy imports do not count as a hang
            import relreps.metrics  # noqa: F401
            import relreps.projection  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="relreps-sweep-") as d:
        ctx = Ctx(Path(d))
        out.write(_PREFIX + json.dumps({"ready": True}) + "\n")
        out.flush()
        for line in sys.stdin:
            cid = line.strip()
            if not cid:
                continue
            t0 = time.perf_counter()
            outcome, detail = classify(cases[cid], ctx)
            out.write(_PREFIX + json.dumps({"id": cid, "outcome": outcome, "detail": detail,
                                            "seconds": time.perf_counter() - t0}) + "\n")
            out.flush()


class _Worker:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                                      *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        self.buf = ""

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next answer, or None on timeout; raises EOFError if the worker died."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                if line.startswith(_PREFIX):
                    return json.loads(line[len(_PREFIX):])
            left = end - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                return None
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                raise EOFError(f"worker exited with status {self.proc.wait()}")
            self.buf += chunk

    def send(self, cid: str) -> None:
        self.proc.stdin.write(cid + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def stop(self, kill: bool = False) -> None:
        with contextlib.suppress(Exception):
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=30)
        with contextlib.suppress(Exception):
            self.proc.kill()
        self.log.close()


def run_in_workers(cases: Sequence[Case], worker_args: list[str], timeout: float, log: Path,
                   progress: bool = True) -> list[dict[str, Any]]:
    """Run cases in a worker process, restarted after a hang or a crash."""
    results: list[dict[str, Any]] = []
    worker: _Worker | None = None
    for i, case in enumerate(cases):
        if worker is None:
            worker = _Worker(worker_args, log)
            if worker.read(900) is None:
                raise RuntimeError(f"the sweep worker did not start; see {log}")
        t0 = time.perf_counter()
        worker.send(case.id)
        try:
            ans = worker.read(case.timeout or timeout)
        except EOFError as e:
            results.append(_record(case, "raw_traceback", f"the process crashed ({e})",
                                   time.perf_counter() - t0))
            worker.stop(kill=True)
            worker = None
            continue
        if ans is None:
            results.append(_record(case, "hang", f"no answer within "
                                   f"{case.timeout or timeout:.0f} s", time.perf_counter() - t0))
            worker.stop(kill=True)
            worker = None
            continue
        results.append(_record(case, ans["outcome"], ans["detail"], ans["seconds"]))
        if progress:
            print(f"\r[{i + 1}/{len(cases)}] {case.id[:70]:70s}", end="", file=sys.stderr,
                  flush=True)
    if worker is not None:
        worker.stop()
    if progress:
        print(file=sys.stderr)
    return results


# =========================================================================================
# reports
# =========================================================================================


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in results)
    by_area: dict[str, Counter] = {}
    by_kind: dict[str, Counter] = {}
    for r in results:
        by_area.setdefault(r["area"], Counter())[r["outcome"]] += 1
        by_kind.setdefault(r["kind"], Counter())[r["outcome"]] += 1
    tried = sum(v for k, v in counts.items() if k != "skipped")
    return {"cases": len(results), "tried": tried,
            "counts": {k: counts.get(k, 0) for k in OUTCOMES},
            "by_area": {a: {k: c.get(k, 0) for k in OUTCOMES} for a, c in by_area.items()},
            "by_input_class": {a: {k: c.get(k, 0) for k in OUTCOMES}
                               for a, c in sorted(by_kind.items())},
            "refused_valid_input": sum(1 for r in results
                                       if r["valid_input"] and r["outcome"] == "named_error")}


def _environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": sys.platform,
                            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    for mod in ("relreps", "numpy", "torch", "sklearn", "dask"):
        with contextlib.suppress(Exception):
            info[mod] = importlib.import_module(mod).__version__
    with contextlib.suppress(Exception):
        import relreps

        info["relreps_path"] = str(Path(relreps.__file__).parent)
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(relreps.__file__).parent, timeout=10).stdout.strip()
    return info


def write_reports(results: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    (out / "sweep.json").write_text(json.dumps({"meta": meta, "summary": summary,
                                                "cases": list(results)}, indent=1))
    c = summary["counts"]
    lines = ["# relreps robustness sweep", "",
             f"relreps {meta.get('relreps', '?')} at {meta.get('relreps_path', '?')} (commit "
             f"{meta.get('git_commit', '?')}), Python {meta.get('python')}, {meta.get('date')}.",
             "", f"**{summary['tried']} cases tried** ({c['skipped']} skipped: API or package "
             f"absent): {c['named_error']} named errors, {c['correct']} correct results, "
             f"**{c['silent_wrong']} silent wrong results**, **{c['raw_traceback']} raw "
             f"tracebacks**, **{c['hang']} hangs**. Valid inputs refused with a named error: "
             f"{summary['refused_valid_input']}.", "", "## By area", "",
             "| area | " + " | ".join(OUTCOMES) + " |",
             "|---|" + "---:|" * len(OUTCOMES)]
    for area, cc in summary["by_area"].items():
        lines.append(f"| {area} | " + " | ".join(str(cc[k]) for k in OUTCOMES) + " |")
    lines += ["", "## By input class", "", "| class | " + " | ".join(OUTCOMES) + " |",
              "|---|" + "---:|" * len(OUTCOMES)]
    for kind, cc in summary["by_input_class"].items():
        lines.append(f"| {kind} | " + " | ".join(str(cc[k]) for k in OUTCOMES) + " |")
    for outcome in FAILURES:
        bad = [r for r in results if r["outcome"] == outcome]
        lines += ["", f"## {outcome} ({len(bad)})", ""]
        lines += [f"- `{r['id']}`: {r['detail']}" for r in bad] or ["none"]
    refused = [r for r in results if r["valid_input"] and r["outcome"] == "named_error"]
    lines += ["", f"## Valid inputs refused with a named error ({len(refused)})", ""]
    lines += [f"- `{r['id']}`: {r['detail']}" for r in refused] or ["none"]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/robustness-sweep"),
                   help="folder for sweep.json and sweep.md (default runs/robustness-sweep)")
    p.add_argument("--only", default="", help="comma list of areas: " + ", ".join(AREAS))
    p.add_argument("--no-cli", action="store_true", help="skip the command-line cases")
    p.add_argument("--selftest", action="store_true", help="add cases that check the sweep")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    p.add_argument("--in-process", action="store_true",
                   help="run in this process (no crash isolation; hangs via SIGALRM)")
    p.add_argument("--list", action="store_true", help="list the case ids and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    only = [a for a in args.only.split(",") if a]
    if args.worker:
        _worker_main(only, not args.no_cli, args.selftest)
        return 0
    cases = build_cases(only or None, cli=not args.no_cli, selftest=args.selftest)
    if args.list:
        for c in cases:
            print(f"{c.area:12s} {c.kind:12s} {c.id}")
        print(f"{len(cases)} cases", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.in_process:
        results = run_in_process(cases, args.timeout)
    else:
        wargs = (["--only", ",".join(only)] if only else []) + \
            (["--no-cli"] if args.no_cli else []) + (["--selftest"] if args.selftest else [])
        results = run_in_workers(cases, wargs, args.timeout, args.out / "worker-stderr.log")
    meta = {**_environment(), "wall_seconds": round(time.perf_counter() - t0, 1),
            "timeout_seconds": args.timeout, "areas": only or list(AREAS)}
    s = write_reports(results, args.out, meta)
    c = s["counts"]
    print(f"{s['tried']} cases tried ({c['skipped']} skipped): {c['named_error']} named errors, "
          f"{c['correct']} correct, {c['silent_wrong']} silent wrong, {c['raw_traceback']} raw "
          f"tracebacks, {c['hang']} hangs -> {args.out}/sweep.md")
    return 1 if any(c[k] for k in FAILURES) else 0


if __name__ == "__main__":
    with contextlib.suppress(ImportError):  # run against the checkout when nothing is installed
        importlib.util.find_spec("relreps") or sys.path.insert(0, str(_REPO / "src"))
    sys.exit(main())
