"""Save and load fitted relreps objects: one safetensors file, never pickle.

Format (``relreps_format`` 1)
-----------------------------
A `safetensors <https://huggingface.co/docs/safetensors>`_ file. Its tensors are the object's
numeric state (anchor embeddings, head weights, ...), stored with their dtypes; its metadata key
``"relreps"`` is a JSON object::

    {"relreps_format": 1, "class": "StitchedClassifier", "relreps_version": "0.2.0",
     "sha256": "<digest of every array's name, dtype, shape and bytes>", "config": {...}}

An :class:`~relreps.anchors.AnchorSet` may also be saved as JSON (a path ending in ``.json``):
its own document (``AnchorSet.save`` / ``AnchorSet.load``, ``{"format": 1, "indices": {space:
[rows]}, "keys": ..., "meta": ...}``), which :func:`load` recognises by its first byte.

What loading guarantees
-----------------------
- No code from the file runs: safetensors holds only numbers and a JSON header; the class to
  build is looked up by name in :data:`ALLOWLIST` (a fixed mapping to relreps modules), never
  imported from a name in the file; pickle, zip (``torch.save``) and ``.npy`` files are refused
  by their magic bytes before anything is parsed.
- A file that is not what it claims (wrong magic, truncated, corrupt header or arrays (checked
  against the header's sha256), metadata missing,
  a format version this relreps does not read, a class outside the allowlist, missing or extra
  arrays, wrong shapes or dtypes, NaN in JSON) raises :class:`~relreps.errors.FormatError`.
- A loaded object gives bit-identical outputs to the saved one, in any process: every array is
  stored exactly and the object is rebuilt from it (the tests check this in a new process).

How a class takes part
----------------------
It implements ``_relreps_state(self) -> (config: dict, arrays: dict[str, np.ndarray])`` (JSON
config, numeric arrays) and ``@classmethod _relreps_from_state(cls, config, arrays)``, which
validates what it reads (raising any :class:`~relreps.errors.RelrepsError`, reported as a
``FormatError``), and is listed in :data:`ALLOWLIST`. The helpers :func:`expect`,
:func:`head_state` / :func:`head_from_state` and :func:`labels_state` / :func:`labels_from_state`
serve those methods.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import (
    DataNotFoundError,
    FormatError,
    InputTypeError,
    RelrepsError,
    RunFolderError,
)

__all__ = ["save", "load", "ALLOWLIST", "FORMAT_VERSION", "expect", "head_state",
           "head_from_state", "labels_state", "labels_from_state"]

#: The format version written by this relreps (and the only one it reads).
FORMAT_VERSION = 1
#: Classes that can be saved and loaded: class name -> module defining it.
ALLOWLIST: dict[str, str] = {
    "StitchedClassifier": "relreps.stitching",
    "AnchorSet": "relreps.anchors",
    "RelativeProjection": "relreps.projection",
    "LatentTranslator": "relreps.translation",
    "TorchClassifier": "relreps.nn",
}
_META_KEY = "relreps"
_MAGIC = {b"\x80": "a Python pickle", b"PK\x03\x04": "a zip archive (torch.save / .npz)",
          b"\x93NUMPY": "a .npy array"}


# ---------------------------------------------------------------------------------- public API


def save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Save a fitted relreps object to `path` (safetensors; ``.json`` for an AnchorSet).

    Writes atomically (a reader sees the old file or the whole new one). Raises
    :class:`~relreps.errors.InputTypeError` for an object of another class,
    :class:`~relreps.errors.NotFittedError` for an unfitted estimator and
    :class:`~relreps.errors.FormatError` for a state the format cannot hold (a callable head, an
    unsupported head type, labels that are neither numbers nor strings).
    """
    path = _check_path(path)
    name = type(obj).__name__
    if name not in ALLOWLIST or type(obj) is not _resolve_class(name):
        raise InputTypeError(f"save takes a {', '.join(ALLOWLIST)}; got {type(obj).__module__}."
                             f"{type(obj).__qualname__}")
    if path.suffix.lower() == ".json":
        if name != "AnchorSet":
            raise FormatError(f"only an AnchorSet can be saved as JSON; save the {name} to a "
                              ".safetensors path")
        if path.is_dir():
            raise RunFolderError(f"{path} is a folder; give a file path")
        return obj.save(path)  # the AnchorSet's own JSON document, which AnchorSet.load reads
    config, arrays = _state_of(obj, name)
    _write(path, _pack(name, config, arrays))
    return path


def load(path: str | os.PathLike[str], *, expected: type | str | None = None) -> Any:
    """Load an object saved by :func:`save`; no code from the file runs.

    expected : a class (or class name) the file must hold; another class is a FormatError.

    Raises :class:`~relreps.errors.DataNotFoundError` when `path` does not exist and
    :class:`~relreps.errors.FormatError` for anything else wrong with the file.
    """
    path = _check_path(path)
    if not path.exists():
        raise DataNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise FormatError(f"{path} is not a file")
    with open(path, "rb") as f:
        start = f.read(16)
    # A safetensors file starts with its header's length (8 bytes, little-endian), then "{": a
    # length whose first byte is 0x80 would otherwise read as a pickle's opcode.
    header = int.from_bytes(start[:8], "little")
    safetensors_like = start[8:9] == b"{" and 8 + header <= path.stat().st_size
    for magic, what in _MAGIC.items():
        if not safetensors_like and start.startswith(magic):
            raise FormatError(f"{path} is {what}, not a relreps file; relreps never loads "
                              "pickled or zipped objects (they can run code)")
    want = None if expected is None else expected if isinstance(expected, str) else \
        getattr(expected, "__name__", None)
    if start.lstrip()[:1] == b"{":  # JSON: only an AnchorSet is stored that way
        if want not in (None, "AnchorSet"):
            raise FormatError(f"{path} is JSON (an AnchorSet file), expected a {want}")
        return _resolve_class("AnchorSet").load(path)
    envelope, arrays = _read_safetensors(path)
    name = envelope["class"]
    if want is not None and want != name:
        raise FormatError(f"{path} holds a {name}, expected a {want}")
    cls = _resolve_class(name)
    try:
        return _from_state(cls, name, envelope["config"], arrays)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    except RelrepsError as e:
        raise FormatError(f"{path}: invalid {name} state: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise FormatError(f"{path}: inconsistent {name} state ({type(e).__name__}: {e})") \
            from None


# ---------------------------------------------------------------------------------- helpers for
# classes that implement _relreps_state / _relreps_from_state


def expect(config: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """``config[key]``, which must be of type `kind` (a bool is never an int), else
    FormatError."""
    if not isinstance(config, dict):
        raise FormatError(f"config must be a JSON object, got {type(config).__name__}")
    if key not in config:
        raise FormatError(f"config has no {key!r}")
    v = config[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise FormatError(f"config[{key!r}] is {v!r}; expected {want}")
    return v


def labels_state(labels: Any, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Class labels as (config, arrays): numbers and booleans as an array, strings in JSON."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise FormatError(f"{name} must be 1-D")
    if arr.dtype.kind in "biuf":
        return {"kind": "array"}, {name: _c_order(arr)}
    values = arr.tolist()
    if arr.dtype.kind in "UO" and all(isinstance(v, str) for v in values):
        return {"kind": "str", "values": values, "object": arr.dtype.kind == "O"}, {}
    raise FormatError(f"{name} must be numbers, booleans or strings to be saved, got dtype "
                      f"{arr.dtype} ({type(values[0]).__name__ if values else 'empty'})")


def labels_from_state(config: Any, arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The labels written by :func:`labels_state` (taken out of `arrays`)."""
    kind = expect(config, "kind", str)
    if kind == "array":
        if name not in arrays:
            raise FormatError(f"array {name!r} is missing")
        arr = arrays.pop(name)
        if arr.ndim != 1 or arr.dtype.kind not in "biuf" or not arr.size:
            raise FormatError(f"{name} must be a non-empty 1-D array of numbers")
        return arr
    if kind == "str":
        values = expect(config, "values", list)
        if not values or not all(isinstance(v, str) for v in values):
            raise FormatError(f"{name} must be a non-empty list of strings")
        return np.asarray(values, dtype=object if config.get("object") else None)
    raise FormatError(f"{name}: unknown label storage {kind!r}")


def head_state(head: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A fitted classifier head as (config, arrays).

    Supported: the pipelines of :func:`relreps.stitching.make_head` (ConstantFeatureFilter,
    optional, + StandardScaler + LogisticRegression or CVLogisticRegression) and any allowlisted
    object with its own ``_relreps_state`` (:class:`relreps.nn.TorchClassifier`, the ``"mlp"``
    head). Anything else is a FormatError: it would need pickle.
    """
    own = getattr(head, "_relreps_state", None)
    name = type(head).__name__
    if callable(own) and name in ALLOWLIST and type(head) is _resolve_class(name):
        cfg, arrays = own()
        return {"kind": "object", "class": name, "config": cfg}, arrays
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from relreps.stitching import ConstantFeatureFilter, CVLogisticRegression

    steps = [step for _, step in head.steps] if isinstance(head, Pipeline) else []
    filt = steps.pop(0) if steps and type(steps[0]) is ConstantFeatureFilter else None
    if len(steps) == 2 and type(steps[0]) is StandardScaler \
            and type(steps[1]) in (LogisticRegression, CVLogisticRegression):
        scaler, final = steps
        if not (scaler.with_mean and scaler.with_std):
            raise FormatError("only a StandardScaler with mean and std can be saved")
        arrays = {"scaler.mean": scaler.mean_, "scaler.scale": scaler.scale_,
                  "scaler.var": scaler.var_}
        if filt is not None:
            arrays["filter.keep"] = np.asarray(filt.keep_, dtype=bool)
        cfg: dict[str, Any] = {"n_samples_seen": int(np.max(scaler.n_samples_seen_))}
        if type(final) is CVLogisticRegression:
            params = final.get_params()
            params["Cs"] = None if final.Cs is None else [float(c) for c in final.Cs]
            cfg.update(kind="logreg-cv", params={k: v if k == "Cs" else _json_scalar(v)
                                                 for k, v in params.items()},
                       C=float(final.C_), n_folds=int(final.n_folds_))
            arrays.update({"cv.Cs": final.Cs_, "cv.scores": final.cv_scores_,
                           "cv.std": final.cv_std_})
            lr = final.estimator_
        else:
            cfg["kind"] = "logreg"
            lr = final
        if lr.penalty not in ("l2", "deprecated") or getattr(lr, "l1_ratio", 0.0) not in (0, None):
            raise FormatError("only L2 logistic regression heads can be saved")
        cfg["lr"] = {"C": float(lr.C), "max_iter": int(lr.max_iter), "tol": float(lr.tol),
                     "fit_intercept": bool(lr.fit_intercept),
                     "random_state": lr.random_state if isinstance(lr.random_state, int)
                     else None}
        arrays.update({"lr.coef": lr.coef_, "lr.intercept": lr.intercept_,
                       "lr.n_iter": np.asarray(lr.n_iter_, dtype=np.int64)})
        return cfg, {k: _c_order(v) for k, v in arrays.items()}
    raise FormatError(f"a head of type {type(head).__module__}.{type(head).__qualname__} cannot "
                      "be saved (it would need pickle); supported heads: 'logreg-cv', 'logreg', "
                      "'logreg-c<C>', 'mlp'")


def head_from_state(config: Any, arrays: dict[str, np.ndarray], *, n_features: int,
                    classes: np.ndarray) -> Any:
    """Rebuild a head written by :func:`head_state`, checking every shape against
    `n_features` and `classes`."""
    kind = expect(config, "kind", str)
    if kind == "object":
        name = expect(config, "class", str)
        if name not in ALLOWLIST:
            raise FormatError(f"head class {name!r} is not loadable")
        head = _from_state(_resolve_class(name), name, expect(config, "config", dict),
                           dict(arrays))
        arrays.clear()
        if getattr(head, "n_features_in_", n_features) != n_features or not np.array_equal(
                np.asarray(getattr(head, "classes_", classes)), classes):
            raise FormatError(f"the {name} head does not match the model (features "
                              f"{getattr(head, 'n_features_in_', None)} vs {n_features}, or "
                              "other classes)")
        return head
    if kind in ("logreg", "logreg-cv"):
        return _logreg_from_state(config, arrays, kind, n_features, classes)
    raise FormatError(f"unknown head kind {kind!r}")


# ---------------------------------------------------------------------------------- internals


def _pack(name: str, config: dict[str, Any], arrays: Any) -> bytes:
    """The bytes of a relreps safetensors file holding (config, arrays) of class `name`."""
    from safetensors.numpy import save as st_save

    clean = _check_arrays(arrays, name)
    envelope = {"relreps_format": FORMAT_VERSION, "class": name, "relreps_version": _version(),
                "sha256": _digest(clean), "config": config}
    try:
        return st_save(clean, metadata={_META_KEY: _dumps(envelope)})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise FormatError(f"cannot write the state of the {name}: {e}") from None


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over every array's name, dtype, shape and bytes (safetensors has no checksum)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = _c_order(arrays[k])
        h.update(json.dumps([k, a.dtype.str, list(a.shape)]).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def _c_order(a: Any) -> np.ndarray:
    """`a` as a C-contiguous array of the same shape (``np.ascontiguousarray`` would turn a
    0-d array into shape (1,))."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _version() -> str:
    from relreps import __version__

    return __version__


def _resolve_class(name: str) -> type:
    return getattr(importlib.import_module(ALLOWLIST[name]), name)


def _check_path(path: Any) -> Path:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise InputTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if str(path) == "":
        raise InputTypeError("path is empty")
    return Path(path)


def _dumps(obj: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(obj, allow_nan=False, indent=indent)
    except (TypeError, ValueError) as e:
        raise FormatError(f"the object's configuration cannot be written as JSON: {e}") from None


def _reject_constant(c: str) -> Any:
    raise FormatError(f"the JSON holds {c}, which is not valid JSON")


def _loads(text: str | bytes, where: Path) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except FormatError as e:
        raise FormatError(f"{where}: {e}") from None
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise FormatError(f"{where}: the relreps header is not valid JSON ({e})") from None


def _write(path: Path, data: bytes) -> None:
    from relreps.cache import atomic_write_bytes

    if path.exists() and path.is_dir():
        raise RunFolderError(f"{path} is a folder; give a file path")
    try:
        atomic_write_bytes(path, data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)  # like open(): temporary files are created 0600
    except PermissionError as e:
        raise RunFolderError(f"cannot write {path}: {e.strerror}") from None
    except OSError as e:
        raise RunFolderError(f"cannot write {path}: {e}") from None


def _check_arrays(arrays: Any, name: str) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict):
        raise FormatError(f"the state of {name} must give a dict of arrays")
    out = {}
    for k, v in arrays.items():
        if not isinstance(k, str):
            raise FormatError(f"array names must be strings, got {k!r}")
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise FormatError(f"array {k!r} of {name} has dtype {a.dtype}; only numbers and "
                              "booleans can be saved")
        out[k] = _c_order(a)
    return out


def _envelope(obj: Any, where: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: the relreps header must be a JSON object")
    version = obj.get("relreps_format")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"{where}: no valid 'relreps_format' in the header; not a relreps file")
    if version != FORMAT_VERSION:
        newer = " (written by a newer relreps: upgrade relreps)" if version > FORMAT_VERSION \
            else ""
        raise FormatError(f"{where}: relreps_format {version} is not supported; this relreps "
                          f"reads format {FORMAT_VERSION}{newer}")
    name = obj.get("class")
    if not isinstance(name, str) or name not in ALLOWLIST:
        raise FormatError(f"{where}: class {name!r} cannot be loaded; loadable classes: "
                          f"{', '.join(ALLOWLIST)}")
    return obj


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            arrays = {k: np.array(f.get_tensor(k), copy=True) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors' own error types (header, bounds, dtype)
        raise FormatError(f"{path} is not a valid safetensors file (truncated or corrupt?): "
                          f"{e}") from None
    if _META_KEY not in meta:
        raise FormatError(f"{path} has no relreps metadata: it was not written by relreps.save")
    env = _envelope(_loads(meta[_META_KEY], path), path)
    if not isinstance(env.get("config"), dict):
        raise FormatError(f"{path}: the header's 'config' must be a JSON object")
    if env.get("sha256") != _digest(arrays):
        raise FormatError(f"{path}: the arrays do not match the checksum in the header (the "
                          "file is corrupt or was altered)")
    return env, arrays


def _state_of(obj: Any, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    own = getattr(obj, "_relreps_state", None)
    if callable(own):
        state = own()
    else:
        raise FormatError(f"this version of relreps cannot save a {name} yet (it has no "
                          "_relreps_state)")
    if not (isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict)):
        raise FormatError(f"{name}._relreps_state must return (config dict, arrays dict)")
    return state


def _from_state(cls: type, name: str, config: dict[str, Any], arrays: dict[str, np.ndarray]
                ) -> Any:
    own = getattr(cls, "_relreps_from_state", None)
    if callable(own):
        return own(config, arrays)
    raise FormatError(f"this version of relreps cannot load a {name} (it has no "
                      "_relreps_from_state)")


def _json_scalar(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if v is None or isinstance(v, str):
        return v
    raise FormatError(f"parameter value {v!r} cannot be saved")


# ---------------------------------------------------------------------------------- heads


def _array(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...],
           kind: str = "f") -> np.ndarray:
    if key not in arrays:
        raise FormatError(f"array {key!r} is missing")
    a = arrays.pop(key)
    if a.shape != shape or a.dtype.kind not in kind:
        raise FormatError(f"array {key!r} has shape {a.shape} ({a.dtype}); expected {shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise FormatError(f"array {key!r} holds NaN or inf")
    return a


def _logreg_from_state(config: dict[str, Any], arrays: dict[str, np.ndarray], kind: str,
                       d: int, classes: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from relreps.stitching import ConstantFeatureFilter, CVLogisticRegression
    from relreps.validation import check_float, check_int

    filt = None
    if "filter.keep" in arrays:  # heads saved before the filter existed have none
        keep = arrays.pop("filter.keep")
        if keep.shape != (d,) or keep.dtype.kind != "b" or not keep.any():
            raise FormatError(f"array 'filter.keep' has shape {keep.shape} ({keep.dtype}); "
                              f"expected ({d},) booleans, at least one True")
        filt = ConstantFeatureFilter()
        filt.keep_ = keep
        filt.n_features_in_ = d
        d = int(keep.sum())
    scaler = StandardScaler()
    scaler.mean_ = _array(arrays, "scaler.mean", (d,))
    scaler.scale_ = _array(arrays, "scaler.scale", (d,))
    scaler.var_ = _array(arrays, "scaler.var", (d,))
    scaler.n_features_in_ = d
    scaler.n_samples_seen_ = expect(config, "n_samples_seen", int)
    lr_cfg = expect(config, "lr", dict)
    rs = lr_cfg.get("random_state")
    lr = LogisticRegression(
        C=check_float(expect(lr_cfg, "C", (int, float)), "C", min_value=0, min_inclusive=False),
        max_iter=check_int(expect(lr_cfg, "max_iter", int), "max_iter", min_value=1),
        tol=check_float(expect(lr_cfg, "tol", (int, float)), "tol", min_value=0),
        fit_intercept=expect(lr_cfg, "fit_intercept", bool),
        random_state=check_int(rs, "random_state", min_value=0, allow_none=True))
    rows = 1 if len(classes) == 2 else len(classes)
    if len(classes) < 2:
        raise FormatError("a classifier needs at least 2 classes")
    lr.coef_ = _array(arrays, "lr.coef", (rows, d))
    lr.intercept_ = _array(arrays, "lr.intercept", (rows,))
    n_iter = arrays.pop("lr.n_iter", None)
    if n_iter is None or n_iter.dtype.kind not in "iu" or n_iter.ndim != 1:
        raise FormatError("array 'lr.n_iter' is missing or not 1-D integers")
    lr.n_iter_ = n_iter
    lr.classes_ = classes
    lr.n_features_in_ = d
    final: Any = lr
    if kind == "logreg-cv":
        p = expect(config, "params", dict)
        names = CVLogisticRegression().get_params()
        if not set(p) <= set(names):  # parameters added later take their defaults
            raise FormatError(f"CVLogisticRegression parameters {sorted(p)}; expected "
                              f"{sorted(names)}")
        final = CVLogisticRegression(**p)
        cs = final._check_params()[0]
        final.Cs_ = _array(arrays, "cv.Cs", (len(cs),))
        final.cv_scores_ = _array_nan_ok(arrays, "cv.scores", (len(cs),))
        final.cv_std_ = _array_nan_ok(arrays, "cv.std", (len(cs),))
        final.C_ = float(expect(config, "C", (int, float)))
        if final.C_ != lr.C:
            raise FormatError(f"the chosen C ({final.C_}) differs from the fitted model's "
                              f"({lr.C})")
        final.n_folds_ = expect(config, "n_folds", int)
        final.estimator_ = lr
        final.classes_ = classes
        final.n_features_in_ = d
    return make_pipeline(scaler, final) if filt is None else make_pipeline(filt, scaler, final)


def _array_nan_ok(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise FormatError(f"array {key!r} is missing")
    a = arrays.pop(key)
    if a.shape != shape or a.dtype.kind != "f":
        raise FormatError(f"array {key!r} has shape {a.shape} ({a.dtype}); expected {shape}")
    return a
