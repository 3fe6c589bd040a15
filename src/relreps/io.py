"""Reading and writing embeddings, labels, anchor indices and texts from the files people have.

A file is named by a *spec*: ``"FILE"`` or ``"FILE:KEY"``, where KEY picks one array of a
multi-array file (``.npz``, ``.safetensors``, a ``.pt`` dict, a Zarr group), one column of a table
(``.parquet``, ``.csv``, ``.tsv``) or one space of an ``AnchorSet`` JSON. A path that exists as
given is never split, so file names that contain ``:`` work.

Embeddings (:func:`read_array`):

- ``.npy``: memory-mapped (nothing is loaded until rows are used); never unpickled.
- ``.npz``, ``.safetensors``: ``FILE:KEY`` (the key may be left out when the file holds one array).
- ``.pt`` / ``.pth``: a tensor, or a dict of tensors (``FILE:KEY``), loaded with
  ``torch.load(weights_only=True)``: no pickled code runs.
- ``.parquet``, ``.csv``, ``.tsv``: ``FILE:COLUMN`` for a column whose cells are vectors (a
  parquet list column, or JSON lists such as ``"[0.1, 0.2]"`` in a CSV); without a column, the
  only list column if there is exactly one, else all floating-point columns (integer columns,
  such as ids or labels, are left out when floating-point columns exist). A CSV without a header
  row is recognised.
- ``.zarr``: an array, or ``FILE:KEY`` inside a group; loaded, or lazily as a dask array with
  ``as_dask=True``.

Labels (:func:`read_labels`): ``.npy``, ``.txt`` (one per line), a table column, or any array
file above. Anchor indices (:func:`read_index`): ``.npy``, ``.txt`` (integers), an ``AnchorSet``
JSON (``FILE:SPACE`` when it holds several spaces). Texts (:func:`read_texts`): ``.txt`` (one per
line), a ``.csv``/``.tsv``/``.parquet`` column (default ``text``), ``.jsonl`` (default key
``text``, or one JSON string per line).

Every problem is a named error: :class:`~relreps.errors.DataNotFoundError` for a missing file,
:class:`~relreps.errors.FormatError` naming the file and key (with the available keys listed)
for anything unreadable, :class:`~relreps.errors.MissingDependencyError` when pandas, pyarrow or
zarr is needed and absent. Pandas, pyarrow, zarr, dask and torch are imported only when a file
needs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import DataNotFoundError, FormatError, MissingDependencyError
from relreps.validation import check_indices, check_labels, is_dask, is_torch

__all__ = ["ARRAY_FORMATS", "split_spec", "read_array", "write_array", "read_labels",
           "read_index", "read_texts", "array_info"]

#: File suffixes :func:`read_array` reads.
ARRAY_FORMATS = (".npy", ".npz", ".safetensors", ".pt", ".pth", ".parquet", ".csv", ".tsv",
                 ".zarr")
_TABLES = (".parquet", ".csv", ".tsv")
_INT_RE = re.compile(r"^[+-]?\d+$")


# ----------------------------------------------------------------------------------- specs

def split_spec(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """(path, key) of ``"FILE"`` or ``"FILE:KEY"``; a path that exists as given is not split.

    Raises DataNotFoundError when neither the whole spec nor any ``FILE`` part before a ``:``
    exists.
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise FormatError(f"a file name is expected, got {spec!r} ({type(spec).__name__})")
    if not spec:
        raise FormatError("a file name is expected, got an empty string")
    path = Path(spec)
    if path.exists():
        return path, None
    pos = len(spec)
    while True:
        pos = spec.rfind(":", 0, pos)
        if pos <= 0:
            break
        head, key = spec[:pos], spec[pos + 1:]
        if Path(head).exists():
            if not key:
                raise FormatError(f"{spec}: empty key after ':'")
            return Path(head), key
    head = spec.split(":", 1)[0] if ":" in spec else spec
    if head != spec and Path(head).suffix.lower() in ARRAY_FORMATS + (".json", ".jsonl", ".txt"):
        raise DataNotFoundError(f"file not found: {head} (from {spec})")
    raise DataNotFoundError(f"file not found: {spec}")


def _suffix(path: Path) -> str:
    if path.is_dir():
        if path.suffix.lower() == ".zarr" or any((path / m).exists() for m in
                                                 ("zarr.json", ".zarray", ".zgroup")):
            return ".zarr"
        raise FormatError(f"{path} is a folder, not a Zarr store or a file")
    return path.suffix.lower()


def _unknown(path: Path, what: str, formats: Sequence[str]) -> FormatError:
    return FormatError(f"{path}: unknown {what} format {path.suffix or '(no suffix)'!r}; "
                       f"supported: {', '.join(formats)}")


def _pick_key(path: Path, key: str | None, keys: Sequence[str], what: str = "key") -> str:
    keys = list(keys)
    if key is None:
        if len(keys) == 1:
            return keys[0]
        if not keys:
            raise FormatError(f"{path} holds no arrays")
        raise FormatError(f"{path} holds several {what}s ({', '.join(keys)}); name one as "
                          f"{path}:{what.upper()}")
    if key not in keys:
        raise FormatError(f"{path} has no {what} {key!r}; available: {', '.join(keys) or 'none'}")
    return key


def _no_key(path: Path, key: str | None, kind: str) -> None:
    if key is not None:
        raise FormatError(f"{path}: a {kind} file holds one array; remove ':{key}'")


# ----------------------------------------------------------------------------------- arrays

def read_array(spec: str | os.PathLike, *, mmap: bool = True, as_dask: bool = False) -> Any:
    """The array named by `spec` (see the module docstring for the formats).

    With `mmap` (the default) ``.npy`` files are memory-mapped and ``.pt`` files mapped where
    torch can; with `as_dask` the result is a lazy ``dask.array.Array`` (Zarr stores are read
    chunk by chunk, other formats wrap the (memory-mapped) array in row blocks). The values are
    not validated here (see :func:`relreps.validation.check_array`).
    """
    path, key = split_spec(spec)
    suffix = _suffix(path)
    if suffix == ".zarr":
        arr = _read_zarr(path, key, as_dask)
        return arr
    if suffix == ".npy":
        _no_key(path, key, ".npy")
        arr = _read_npy(path, mmap or as_dask)  # as_dask: tasks read their rows from the file
    elif suffix == ".npz":
        arr = _read_npz(path, key)
    elif suffix == ".safetensors":
        arr = _read_safetensors(path, key)
    elif suffix in (".pt", ".pth"):
        arr = _read_torch(path, key, mmap)
    elif suffix in _TABLES:
        arr = _table_array(path, key)
    else:
        raise _unknown(path, "array", ARRAY_FORMATS)
    if as_dask:
        _require("dask.array", "dask[array]", "reading arrays lazily (as_dask=True)")
        from relreps._backend import to_dask

        return to_dask(arr)
    return arr


def array_info(spec: str | os.PathLike) -> dict[str, Any]:
    """``{"spec", "path", "key", "shape", "dtype"}`` of an array file (for reports)."""
    path, key = split_spec(spec)
    arr = read_array(spec, mmap=True, as_dask=_suffix(path) == ".zarr")
    return {"spec": os.fspath(spec), "path": str(path), "key": key,
            "shape": [int(s) for s in arr.shape], "dtype": str(arr.dtype)}


def _require(module: str, package: str, feature: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(package, feature, "pip install 'relreps[io]'") from e


def _read_npy(path: Path, mmap: bool) -> np.ndarray:
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty (0 bytes), not a .npy file")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "python objects" in str(e).lower():
            raise FormatError(f"{path} holds pickled data (an object array or not a .npy "
                              "file); relreps never unpickles files") from None
        raise FormatError(f"{path} is not a valid .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise FormatError(f"{path} is not a valid .npy file ({e})") from None
    if not isinstance(arr, np.ndarray):  # np.load returns an NpzFile for zip content
        raise FormatError(f"{path} is a .npz archive named .npy; rename it to .npz")
    return arr


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if isinstance(z, np.ndarray):  # .npy content under an .npz name
                _no_key(path, key, ".npy")
                return z
            name = _pick_key(path, key, z.files)
            return z[name]
    except FormatError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise FormatError(f"{path}:{key or ''} holds pickled data (an object array); "
                              "relreps never unpickles files") from None
        raise FormatError(f"{path} is not a valid .npz file ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise FormatError(f"{path} is not a valid .npz file ({type(e).__name__}: {e})") from None


def _read_safetensors(path: Path, key: str | None) -> np.ndarray:
    try:
        from safetensors import safe_open
    except ImportError as e:  # pragma: no cover - safetensors is a core dependency
        raise MissingDependencyError("safetensors", "reading .safetensors files") from e
    try:
        with safe_open(str(path), framework="numpy") as f:
            name = _pick_key(path, key, list(f.keys()))
            try:
                return f.get_tensor(name)
            except (TypeError, ValueError):  # a dtype numpy lacks (bfloat16): read via torch
                pass
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor(name).float().numpy()
    except FormatError:
        raise
    except Exception as e:  # safetensors raises its own SafetensorError for bad headers
        raise FormatError(f"{path} is not a valid .safetensors file ({type(e).__name__}: "
                          f"{e})") from None


def _read_torch(path: Path, key: str | None, mmap: bool) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # legacy (non-zip) format cannot be mapped
            return _read_torch(path, key, False)
        raise FormatError(f"{path} is not a readable tensor file ({e})".splitlines()[0]) \
            from None
    except Exception as e:  # pickle.UnpicklingError for anything but plain tensors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{path} cannot be loaded without running pickled code (only tensors "
                          f"and dicts of tensors are read): {first}") from None
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        name = _pick_key(path, key, keys)
        obj = obj[next(k for k in obj if str(k) == name)]
    elif key is not None:
        raise FormatError(f"{path} holds a single {type(obj).__name__}, not a dict; remove "
                          f":{key}")
    if not isinstance(obj, torch.Tensor):
        raise FormatError(f"{path}{':' + key if key else ''} holds a {type(obj).__name__}, "
                          "not a tensor")
    if obj.layout != torch.strided:
        raise FormatError(f"{path}: sparse tensors are not supported; save a dense tensor")
    t = obj.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def _zarr_mod() -> Any:
    return _require("zarr", "zarr", "reading and writing Zarr stores")


def _read_zarr(path: Path, key: str | None, as_dask: bool) -> Any:
    zarr = _zarr_mod()
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise FormatError(f"{path} is not a readable Zarr store ({type(e).__name__}: {e})") \
            from None
    if hasattr(node, "array_keys"):  # a group
        name = _pick_key(path, key, sorted(node.array_keys()))
        node = node[name]
    elif key is not None:
        raise FormatError(f"{path} is a single Zarr array, not a group; remove ':{key}'")
    if as_dask:
        da = _require("dask.array", "dask[array]", "reading Zarr stores lazily")
        return da.from_zarr(node)
    return node[...]


# ----------------------------------------------------------------------------------- tables

def _pandas() -> Any:
    return _require("pandas", "pandas", "reading .csv/.tsv/.parquet files")


def _read_table(path: Path, columns: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame of a .parquet/.csv/.tsv file (CSV without a header recognised)."""
    pd = _pandas()
    suffix = _suffix(path)
    try:
        if suffix == ".parquet":
            _require("pyarrow", "pyarrow", "reading .parquet files")
            return pd.read_parquet(path, columns=list(columns) if columns else None)
        sep = "\t" if suffix == ".tsv" else ","
        df = pd.read_csv(path, sep=sep)
        if len(df.columns) and all(_is_number(c) for c in df.columns):
            df = pd.read_csv(path, sep=sep, header=None)  # no header row: numbers only
            df.columns = [str(c) for c in df.columns]
        return df
    except MissingDependencyError:
        raise
    except Exception as e:  # pandas/pyarrow parser errors, empty files, bad encodings
        raise FormatError(f"{path} is not a readable {suffix} file ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _is_number(s: Any) -> bool:
    try:
        float(str(s))
        return True
    except ValueError:
        return False


class _Table:
    """A .parquet/.csv/.tsv file: columns from the parquet schema (nothing loaded) or from one
    read of the CSV (kept for the other questions)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parquet = _suffix(path) == ".parquet"
        self._df: Any = None
        if self.parquet:
            pq = _require("pyarrow.parquet", "pyarrow", "reading .parquet files")
            try:
                self.schema = pq.read_schema(path)
            except Exception as e:
                raise FormatError(f"{path} is not a readable .parquet file ({e})") from None
            self.columns = [str(c) for c in self.schema.names]
        else:
            self._df = _read_table(path)
            self.columns = [str(c) for c in self._df.columns]

    def frame(self, columns: Sequence[str] | None = None) -> Any:
        if self._df is not None:
            return self._df if columns is None else self._df[list(columns)]
        return _read_table(self.path, columns)

    def is_list(self, name: str) -> bool:
        if self.parquet:
            pa = _require("pyarrow", "pyarrow", "reading .parquet files")
            t = self.schema.field(name).type
            return pa.types.is_list(t) or pa.types.is_large_list(t) or \
                pa.types.is_fixed_size_list(t)
        col = self._df[name]
        return _is_text(col) and len(col) > 0 and all(
            isinstance(c, str) and c.lstrip().startswith("[") for c in col.head(20))

    def vectors(self, name: str) -> np.ndarray:
        """A column of vectors as a 2-D array."""
        path = self.path
        if self.parquet:
            pa = _require("pyarrow", "pyarrow", "reading .parquet files")
            pq = _require("pyarrow.parquet", "pyarrow", "reading .parquet files")
            import pyarrow.compute as pc

            try:
                col = pq.read_table(path, columns=[name]).column(0).combine_chunks()
            except Exception as e:
                raise FormatError(f"{path} is not a readable .parquet file ({e})") from None
            if col.null_count:
                raise FormatError(f"{path}:{name} has {col.null_count} missing vector(s)")
            n = len(col)
            lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
            if n and (lengths != lengths[0]).any():
                i = int(np.flatnonzero(lengths != lengths[0])[0])
                raise FormatError(f"{path}:{name}: vectors have different lengths (row 0 has "
                                  f"{lengths[0]}, row {i} has {lengths[i]})")
            values = col.flatten()
            if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
                raise FormatError(f"{path}:{name} holds lists of {values.type}, not numbers")
            width = int(lengths[0]) if n else 0
            return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(n, width)
        try:
            rows = [json.loads(c) for c in self._df[name].tolist()]
        except (json.JSONDecodeError, TypeError) as e:
            raise FormatError(f"{path}:{name}: a cell is not a JSON list of numbers ({e})") \
                from None
        lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
        if len(lengths) != 1 or -1 in lengths:
            raise FormatError(f"{path}:{name}: cells must be lists of numbers of one length "
                              f"(lengths seen: {sorted(lengths)})")
        try:
            return np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise FormatError(f"{path}:{name}: cells must be lists of numbers") from None


def _is_text(col: Any) -> bool:
    """A column of strings or Python objects (pandas >= 3 gives strings their own dtype)."""
    pd = _pandas()
    return bool(pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col))


def _table_array(path: Path, key: str | None) -> np.ndarray:
    table = _Table(path)
    if key is not None:
        _pick_key(path, key, table.columns, "column")
        if table.is_list(key):
            return table.vectors(key)
        values = table.frame([key])[key]
        return np.asarray(_numeric_column(path, key, values).to_numpy())[:, None]
    list_cols = [c for c in table.columns if table.is_list(c)]
    if len(list_cols) == 1:
        return table.vectors(list_cols[0])
    if len(list_cols) > 1:
        raise FormatError(f"{path} has several vector columns ({', '.join(list_cols)}); name one "
                          f"as {path}:COLUMN")
    df = table.frame()
    kinds = {str(c): df[c].dtype.kind for c in df.columns}
    for c in df.columns:  # a column of numbers with a few bad cells must not vanish silently
        if kinds[str(c)] == "O":
            _numeric_column(path, str(c), df[c], lenient=True)
    floats = [c for c in df.columns if kinds[str(c)] == "f"]
    ints = [c for c in df.columns if kinds[str(c)] in "iu"]
    use = floats or ints
    if not use:
        raise FormatError(f"{path} has no numeric columns (columns: "
                          f"{', '.join(map(str, df.columns))}); name a vector column as "
                          f"{path}:COLUMN")
    return df[use].to_numpy(dtype=np.float64 if not floats else None)


def _numeric_column(path: Path, name: str, values: Any, lenient: bool = False) -> Any:
    """`values` as numbers; FormatError naming the first bad cell (with `lenient`, a column of
    mostly non-numbers, such as texts, is left alone and returned as is)."""
    pd = _pandas()
    if values.dtype.kind in "fiu":
        return values
    if values.dtype.kind == "b":
        raise FormatError(f"{path}:{name} holds booleans, not numbers")
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna() & values.notna()
    if lenient and bad.mean() > 0.5:
        return values
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise FormatError(f"{path}:{name} holds a non-numeric value {values.iloc[i]!r} at row "
                          f"{i}")
    return parsed


# ----------------------------------------------------------------------------------- writing

def write_array(path: str | os.PathLike, array: Any, *, chunk_rows: int | None = None) -> Path:
    """Write `array` to ``.npy`` (atomically) or ``.zarr`` (staged, then renamed into place).

    numpy arrays and torch tensors (copied to the CPU) go to either format; dask arrays are
    written block by block without being loaded whole (``.npy`` through a memory map).
    An existing file or store at `path` is replaced.
    """
    from relreps.cache import atomic_save_npy, current_umask

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".zarr"):
        raise FormatError(f"{path}: cannot write {suffix or '(no suffix)'!r}; use .npy or .zarr")
    if is_torch(array):
        array = array.detach().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        if is_dask(array):
            _write_dask_npy(path, array)
        else:
            atomic_save_npy(path, np.asarray(array))
        os.chmod(path, 0o666 & ~current_umask())  # a user's output, not a private temporary file
        return path
    zarr = _zarr_mod()
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        store = tmp / "data.zarr"
        shape = tuple(int(s) for s in array.shape)
        row_bytes = max(1, np.dtype(array.dtype).itemsize * int(np.prod(shape[1:] or (1,))))
        rows = chunk_rows or max(1, min(shape[0] if shape else 1, (64 << 20) // row_bytes))
        if is_dask(array):
            array.rechunk((rows,) + shape[1:]).to_zarr(str(store))
        else:
            arr = np.asarray(array)
            z = zarr.create_array(store=str(store), shape=shape, dtype=arr.dtype,
                                  chunks=(rows,) + shape[1:] if shape else ())
            z[...] = arr
        _replace_dir(store, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_dask_npy(path: Path, array: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        import dask

        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=array.dtype,
                                        shape=tuple(int(s) for s in array.shape))
        # Blocks come back to this process (whatever the scheduler: a distributed worker could
        # not write into this process's memory map) a few at a time: bounded memory.
        bounds = np.cumsum((0,) + tuple(array.chunks[0]))
        spans = list(zip(bounds[:-1], bounds[1:]))
        for i in range(0, len(spans), 4):
            group = spans[i:i + 4]
            for (s, e), block in zip(group, dask.compute(*(array[s:e] for s, e in group))):
                out[s:e] = block
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace_dir(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing what is there (a file or a folder)."""
    if dst.is_dir() and not dst.is_symlink():
        old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".old"))
        os.replace(dst, old / "x")
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        os.replace(src, dst)


# ----------------------------------------------------------------------------------- labels

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path} is not UTF-8 text ({e})") from None


def _text_lines(path: Path, what: str) -> list[str]:
    text = _read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not lines:
        raise FormatError(f"{path} is empty: one {what} per line expected")
    return lines


def read_labels(spec: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """One label per item: ``.txt`` (one per line), ``.npy``, a table column, or an array file.

    Labels that are all integers come back as int64, others as strings. `n` (the number of
    items) is checked. Raises FormatError, DataNotFoundError or ShapeError.
    """
    path, key = split_spec(spec)
    suffix = _suffix(path)
    name = os.fspath(spec)
    if suffix == ".txt":
        _no_key(path, key, ".txt")
        lines = _text_lines(path, "label")
        empty = [i for i, s in enumerate(lines) if not s.strip()]
        if empty:
            raise FormatError(f"{path}: line {empty[0] + 1} is empty (one label per line "
                              "expected; a label may not be blank)")
        arr = _maybe_ints([s.strip() for s in lines])
    elif suffix in _TABLES:
        table = _Table(path)
        columns = table.columns
        col = _pick_key(path, key, columns, "column") if key or len(columns) == 1 else next(
            (c for c in ("label", "labels", "y", "target") if c in columns), None)
        if col is None:
            raise FormatError(f"{path} has several columns ({', '.join(columns)}); name the "
                              f"label column as {path}:COLUMN")
        values = table.frame([col])[col]
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise FormatError(f"{path}:{col} has a missing label at row {i}")
        arr = values.to_numpy()
        if arr.dtype == object or _is_text(values):
            arr = _maybe_ints([str(v) for v in arr])
    elif suffix == ".npy":
        _no_key(path, key, ".npy")
        arr = np.asarray(_read_npy(path, mmap=False))
    else:
        arr = np.asarray(read_array(spec, mmap=False))
    if arr.dtype.kind == "f" and arr.size and np.isfinite(arr).all() \
            and (arr == np.round(arr)).all():
        arr = arr.astype(np.int64)  # whole-number float labels (e.g. from a CSV) are classes
    return check_labels(arr, name, n=n)


def _maybe_ints(values: list[str]) -> np.ndarray:
    if values and all(_INT_RE.match(v) for v in values):
        return np.asarray([int(v) for v in values], dtype=np.int64)
    return np.asarray(values, dtype=str)


# ----------------------------------------------------------------------------------- indices

def read_index(spec: str | os.PathLike, n: int | None = None) -> np.ndarray:
    """Row indices (int64, unique, in ``[0, n)`` when `n` is given) of anchors.

    ``.npy`` (integers), ``.txt`` (integers separated by newlines, spaces or commas) or an
    ``AnchorSet`` JSON (``FILE:SPACE`` picks a space when the set holds several with different
    rows).
    """
    path, key = split_spec(spec)
    suffix = _suffix(path)
    name = os.fspath(spec)
    if suffix == ".npy":
        _no_key(path, key, ".npy")
        arr = np.asarray(_read_npy(path, mmap=False))
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.ravel()
    elif suffix == ".txt":
        _no_key(path, key, ".txt")
        tokens = [t for t in re.split(r"[\s,]+", _read_text(path)) if t]
        bad = next((t for t in tokens if not _INT_RE.match(t)), None)
        if bad is not None:
            raise FormatError(f"{path}: {bad!r} is not an integer row index")
        if not tokens:
            raise FormatError(f"{path} holds no indices")
        arr = np.asarray([int(t) for t in tokens], dtype=np.int64)
    elif suffix == ".json":
        arr = _anchorset_indices(path, key)
    else:
        raise _unknown(path, "anchor index", (".npy", ".txt", ".json (AnchorSet)"))
    return check_indices(arr, name, n=n, unique=True)


def _anchorset_indices(path: Path, key: str | None) -> np.ndarray:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path} is not valid JSON ({e})") from None
    indices = data.get("indices") if isinstance(data, dict) else None
    if not isinstance(indices, dict) or not indices:
        raise FormatError(f"{path} is not an AnchorSet JSON (no 'indices' object mapping each "
                          "space to its anchor rows)")
    try:
        from relreps.anchors import AnchorSet

        aset = AnchorSet(indices, keys=data.get("keys"), meta=data.get("meta") or {})
    except (TypeError, ValueError, KeyError) as e:
        raise FormatError(f"{path} is not a valid AnchorSet ({e})") from None
    spaces = list(aset.indices)
    if key is None:
        first = aset.indices[spaces[0]]
        if all(np.array_equal(first, aset.indices[s]) for s in spaces):
            return first
    return aset.indices[_pick_key(path, key, spaces, "space")]


# ----------------------------------------------------------------------------------- texts

def read_texts(spec: str | os.PathLike) -> list[str]:
    """Texts, one per item: ``.txt`` (one per line), ``.jsonl`` or a table column.

    For tables and ``.jsonl`` objects the column/key is ``FILE:KEY``, default ``text`` (or the
    only string column).
    """
    path, key = split_spec(spec)
    suffix = _suffix(path)
    if suffix == ".txt":
        _no_key(path, key, ".txt")
        return _text_lines(path, "text")
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(_text_lines(path, "JSON record"), 1):
            if not line.strip():
                raise FormatError(f"{path}: line {i} is empty")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{path}: line {i} is not valid JSON ({e})") from None
            if isinstance(rec, str) and key is None:
                out.append(rec)
            elif isinstance(rec, dict):
                k = key or "text"
                if k not in rec or not isinstance(rec[k], str):
                    raise FormatError(f"{path}: line {i} has no string field {k!r} (fields: "
                                      f"{', '.join(rec) or 'none'}); name it as {path}:FIELD")
                out.append(rec[k])
            else:
                raise FormatError(f"{path}: line {i} is neither a JSON string nor an object")
        return out
    if suffix in _TABLES:
        table = _Table(path)
        columns = table.columns
        if key is not None or "text" in columns:
            col = _pick_key(path, key or "text", columns, "column")
        else:
            df = table.frame()
            strings = [str(c) for c in df.columns if _is_text(df[c])]
            col = _pick_key(path, None, strings, "column") if strings else None
            if col is None:
                raise FormatError(f"{path} has no text column (columns: {', '.join(columns)})")
        values = table.frame([col])[col]
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise FormatError(f"{path}:{col} has a missing text at row {i}")
        return [str(v) for v in values.tolist()]
    raise _unknown(path, "text", (".txt", ".jsonl", ".csv", ".tsv", ".parquet"))
