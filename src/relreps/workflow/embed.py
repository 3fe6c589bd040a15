"""``relreps embed``: texts in, embeddings out (``.npy`` or ``.zarr``), resumable, optionally on a
Dask cluster.

The texts are cut into partitions of ``partition_size`` consecutive texts. For a ``.zarr`` output
each partition is one chunk of rows of the store, written by whichever process embeds it (a
worker of the cluster, or this process), and recorded as finished by a marker file written only
after its rows are stored. A later run with the same texts, encoder and partition size skips the
finished partitions, so a run cut short (a killed worker is simply rescheduled by Dask; a killed
client leaves its finished partitions on disk) is resumed without recomputing them. The store's
attributes say what it holds (``relreps_embed``: encoder, number of texts, a hash of the texts,
whether it is complete). With a cluster on several machines the store must be on a filesystem
they share.

A ``.npy`` output is written at the end, atomically; its partitions are cached by the encoders of
:mod:`relreps.encoders` in ``$RELREPS_CACHE``, so a rerun also skips the work already done.

Encoders: the names of :func:`relreps.encoders.load_text_encoder` (``minilm-l6``, ``mpnet``,
``minilm-l3``, ``e5-small``, ``hf:<folder>``), a local sentence-transformers folder, an object
with ``name`` and ``encode(texts, batch_size)``, or ``hash:<dim>``: :class:`HashingEncoder`, a
dependency-free bag-of-words baseline for trying the tools out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import FormatError, OptionError, RelrepsError, RunFolderError

__all__ = ["HashingEncoder", "resolve_encoder", "embed_texts", "EmbedReport", "cli_embed",
           "DEFAULT_PARTITION", "DONE_DIR"]

#: Texts per partition (one task, one chunk of the Zarr store).
DEFAULT_PARTITION = 4096
#: Folder inside a Zarr store holding one marker per finished partition.
DONE_DIR = ".relreps-done"
_ATTR = "relreps_embed"


class HashingEncoder:
    """Bag of words and word pairs hashed into `dim` signed buckets, L2-normalised (float32).

    Deterministic across processes and machines (blake2b, not Python's salted ``hash``), no
    model and no dependency: a baseline and a stand-in for trying the tools. `delay` (seconds
    per batch) only exists to make tests of long runs possible.
    """

    def __init__(self, dim: int = 256, delay: float = 0.0) -> None:
        from relreps.validation import check_float, check_int

        self.dim = check_int(dim, "dim", min_value=2)
        self.delay = check_float(delay, "delay", min_value=0.0)
        self.name = f"hash-{self.dim}"

    def _vector(self, text: str) -> np.ndarray:
        words = re.findall(r"\w+", text.lower())
        feats = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        v = np.zeros(self.dim, dtype=np.float64)
        for f in feats:
            h = int.from_bytes(hashlib.blake2b(f.encode("utf-8"), digest_size=8).digest(),
                               "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        norm = np.linalg.norm(v)
        if norm == 0:
            v[0] = 1.0  # an empty text gets a fixed unit vector, never a zero row
            norm = 1.0
        return v / norm

    def encode(self, texts: Sequence[str], batch_size: int = 64, **_: Any) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), max(1, batch_size)):
            if self.delay:
                time.sleep(self.delay)
            for i, t in enumerate(texts[s:s + batch_size], start=s):
                out[i] = self._vector(str(t))
        return out

    def __repr__(self) -> str:
        return f"HashingEncoder(dim={self.dim})"


_ENCODERS: dict[str, Any] = {}


def resolve_encoder(spec: Any) -> Any:
    """An encoder object for `spec` (a name, a folder, ``hash:<dim>``, or an encoder object).

    Loaded encoders are kept per process (a Dask worker loads each model once).
    """
    if not isinstance(spec, str):
        if not (hasattr(spec, "encode") and hasattr(spec, "name")):
            raise OptionError(f"encoder must be a name, a folder or an object with 'name' and "
                              f"'encode', got {spec!r}")
        return spec
    if spec in _ENCODERS:
        return _ENCODERS[spec]
    if spec.startswith("hash:"):
        try:
            enc: Any = HashingEncoder(int(spec[5:]))
        except ValueError:
            raise OptionError(f"hash encoder needs a width, e.g. hash:256; got {spec!r}") \
                from None
    elif Path(spec).is_dir():
        if (Path(spec) / "modules.json").exists():
            from relreps.encoders.text import SentenceTransformerEncoder

            enc = SentenceTransformerEncoder(spec, name=f"st-{Path(spec).resolve().name}")
        else:
            from relreps.encoders.text import load_text_encoder

            enc = load_text_encoder(f"hf:{spec}")
    else:
        from relreps.encoders.text import load_text_encoder

        enc = load_text_encoder(spec)
    _ENCODERS[spec] = enc
    return enc


def _encode(enc: Any, texts: Sequence[str], batch_size: int, use_cache: bool) -> np.ndarray:
    import inspect

    try:
        params = inspect.signature(enc.encode).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs: dict[str, Any] = {}
    if "use_cache" in params:
        kwargs["use_cache"] = use_cache
    out = np.asarray(enc.encode(list(texts), batch_size=batch_size, **kwargs))
    if out.ndim != 2 or out.shape[0] != len(texts):
        raise RelrepsError(f"encoder {getattr(enc, 'name', enc)!r} returned shape {out.shape} "
                           f"for {len(texts)} texts")
    if not np.isfinite(out).all():
        raise RelrepsError(f"encoder {getattr(enc, 'name', enc)!r} returned NaN or inf values")
    return out.astype(np.float32, copy=False)


def _embed_partition(store: str, encoder: Any, texts: list[str], start: int, index: int,
                     batch_size: int) -> int:
    """Embed one partition into rows [start, start + len(texts)) of the Zarr `store`, then
    write its marker. Runs on a Dask worker or in this process."""
    import zarr

    emb = _encode(resolve_encoder(encoder), texts, batch_size, use_cache=False)
    arr = zarr.open_array(store, mode="r+")
    if emb.shape[1] != arr.shape[1]:
        raise RelrepsError(f"the encoder returned width {emb.shape[1]}, the store has "
                           f"{arr.shape[1]}")
    arr[start:start + len(texts)] = emb
    done = Path(store) / DONE_DIR
    done.mkdir(exist_ok=True)
    tmp = done / f".{index}.tmp-{os.getpid()}"
    tmp.write_text(f"{start} {len(texts)}\n")
    os.replace(tmp, done / str(index))
    return index


@dataclass
class EmbedReport:
    """What :func:`embed_texts` did."""

    path: Path
    n_texts: int
    dim: int
    encoder: str
    computed: list[int] = field(default_factory=list)  # partitions embedded by this run
    skipped: list[int] = field(default_factory=list)  # partitions found finished
    seconds: float = 0.0


def _texts_key(texts: Sequence[str]) -> str:
    from relreps.cache import content_key

    return content_key("texts-v1", list(texts))


def embed_texts(texts: Sequence[str], encoder: Any, out: str | os.PathLike, *,
                batch_size: int = 64, partition_size: int | None = None, client: Any = None,
                force: bool = False, log: Callable[[str], None] | None = None) -> EmbedReport:
    """Embed `texts` with `encoder` into `out` (``.npy`` or ``.zarr``); see the module docstring.

    With a Dask `client` the partitions run on its workers and `out` must be a ``.zarr`` store.
    A ``.zarr`` store left by an earlier run on the same texts, encoder and partition size is
    resumed (finished partitions skipped) unless `force`, which starts over. An existing
    ``.npy`` is replaced only with `force`.
    """
    from relreps.validation import check_int

    if log is None:
        def log(msg: str) -> None:
            return None
    t0 = time.perf_counter()
    texts = [str(t) for t in texts]
    if not texts:
        raise FormatError("no texts to embed")
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    partition_size = check_int(partition_size if partition_size is not None
                               else DEFAULT_PARTITION, "partition_size", min_value=1)
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".zarr"):
        raise FormatError(f"--out {out}: embeddings are written to .npy or .zarr")
    if client is not None and suffix != ".zarr":
        raise OptionError("with --workers/--scheduler the output must be a .zarr store (the "
                          "workers write their partitions into it)")
    from relreps.runs import check_writable_dir

    check_writable_dir(path.parent if str(path.parent) else Path("."), "the folder of --out")
    enc = resolve_encoder(encoder)
    name = str(getattr(enc, "name", encoder))
    starts = list(range(0, len(texts), partition_size))
    if suffix == ".npy":
        if path.exists() and not force:
            raise RunFolderError(f"--out {path} exists; pass --force to overwrite it")
        from relreps.cache import atomic_save_npy
        from relreps.progress import progress

        parts = [_encode(enc, texts[s:s + partition_size], batch_size, use_cache=True)
                 for s in progress(starts, desc=f"embed {name}", total=len(starts))]
        emb = np.concatenate(parts)
        atomic_save_npy(path, emb)
        return EmbedReport(path, len(texts), int(emb.shape[1]), name,
                           computed=list(range(len(starts))), seconds=time.perf_counter() - t0)

    meta = {"encoder": name, "n_texts": len(texts), "partition_size": partition_size,
            "texts_sha256": _texts_key(texts), "complete": False}
    store, dim, done = _open_store(path, meta, enc, texts, batch_size, force, log)
    if done is None:  # complete already
        return EmbedReport(store, len(texts), dim, name, computed=[],
                           skipped=list(range(len(starts))), seconds=time.perf_counter() - t0)
    todo = [i for i in range(len(starts)) if i not in done]
    log(f"{len(starts)} partition(s) of {partition_size} texts: {len(done)} finished earlier, "
        f"{len(todo)} to embed")
    payload = encoder if isinstance(encoder, str) else enc
    if client is None:
        from relreps.progress import progress

        for i in progress(todo, desc=f"embed {name}", total=len(todo)):
            s = starts[i]
            _embed_partition(str(store), payload, texts[s:s + partition_size], s, i, batch_size)
    else:
        from distributed import as_completed

        if not isinstance(payload, str):  # ship an encoder object to each worker once
            payload = client.scatter(payload, broadcast=True, hash=False)
        futures = [client.submit(_embed_partition, str(store.resolve()), payload,
                                 texts[starts[i]:starts[i] + partition_size], starts[i], i,
                                 batch_size, pure=False)
                   for i in todo]
        finished = 0
        try:
            for fut in as_completed(futures):
                fut.result()
                finished += 1
                log(f"partition {finished}/{len(todo)} done")
        finally:
            for fut in futures:
                fut.cancel()
    missing = [i for i in range(len(starts)) if not (store / DONE_DIR / str(i)).exists()]
    if missing:
        raise RelrepsError(f"{len(missing)} partition(s) were not written (first: {missing[0]});"
                           " run the same command again to finish")
    import zarr

    arr = zarr.open_array(str(store), mode="r+")
    arr.attrs[_ATTR] = dict(meta, complete=True)
    shutil.rmtree(store / DONE_DIR, ignore_errors=True)
    return EmbedReport(store, len(texts), dim, name, computed=todo, skipped=sorted(done),
                       seconds=time.perf_counter() - t0)


def _open_store(path: Path, meta: dict[str, Any], enc: Any, texts: list[str], batch_size: int,
                force: bool, log: Callable[[str], None]) -> tuple[Path, int, set[int] | None]:
    """The Zarr store to fill: (path, width, finished partitions, or None when it is complete).
    Creates it, resumes it, or refuses a store that holds something else."""
    import zarr

    if path.exists():
        old = None
        try:
            arr = zarr.open_array(str(path), mode="r")
            old = dict(arr.attrs.get(_ATTR) or {})
        except Exception:  # noqa: BLE001 - not a Zarr array: refused below
            arr = None
        if force:
            if old is None and any(path.iterdir()) and not (path / "zarr.json").exists():
                raise RunFolderError(f"--out {path} exists and is not a Zarr store written by "
                                     "relreps embed; refusing to overwrite it")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif old is None:
            raise RunFolderError(f"--out {path} exists and is not a store written by relreps "
                                 "embed; choose another path (or --force to overwrite)")
        else:
            same = all(old.get(k) == meta[k] for k in ("encoder", "n_texts", "partition_size",
                                                       "texts_sha256"))
            if not same:
                raise RunFolderError(f"--out {path} holds embeddings of other texts or another "
                                     f"encoder ({old.get('encoder')}, {old.get('n_texts')} "
                                     "texts); choose another path or pass --force to start over")
            if old.get("complete"):
                log(f"{path} is already complete")
                return path, int(arr.shape[1]), None
            done_dir = path / DONE_DIR
            done = {int(p.name) for p in done_dir.iterdir() if p.name.isdigit()} \
                if done_dir.is_dir() else set()
            return path, int(arr.shape[1]), done
    probe = _encode(enc, texts[:1], batch_size, use_cache=False)
    dim = int(probe.shape[1])
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        arr = zarr.create_array(store=str(tmp / "s.zarr"), shape=(meta["n_texts"], dim),
                                chunks=(meta["partition_size"], dim), dtype="float32")
        arr.attrs[_ATTR] = meta
        os.replace(tmp / "s.zarr", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path, dim, set()


def cli_embed(args: Any) -> int:
    """``relreps embed``."""
    from relreps.distributed import cluster_client
    from relreps.io import read_texts
    from relreps.progress import quiet
    from relreps.runs import check_cache_writable
    from relreps.validation import check_int

    def log(msg: str) -> None:
        if not quiet():
            print(f"relreps embed: {msg}", file=sys.stderr, flush=True)

    if args.workers is not None:
        check_int(args.workers, "--workers", min_value=1)
    path = Path(args.out)
    if path.suffix.lower() not in (".npy", ".zarr"):
        raise FormatError(f"--out {args.out}: embeddings are written to .npy or .zarr")
    if (args.workers is not None or args.scheduler) and path.suffix.lower() != ".zarr":
        raise OptionError("with --workers/--scheduler the output must be a .zarr store")
    if path.suffix.lower() == ".npy" and path.exists() and not args.force:
        raise RunFolderError(f"--out {path} exists; pass --force to overwrite it")
    if not args.encoder.startswith("hash:"):
        check_cache_writable()
    texts = read_texts(args.texts)
    with cluster_client(args.scheduler, args.workers) as client:
        rep = embed_texts(texts, args.encoder, path, batch_size=args.batch_size,
                          partition_size=args.partition_size, client=client, force=args.force,
                          log=log)
    extra = f"; {len(rep.skipped)} partition(s) were already done" if rep.skipped else ""
    print(f"Wrote {rep.path}: {rep.n_texts:,} x {rep.dim} embeddings from {rep.encoder} "
          f"({len(rep.computed)} partition(s) embedded{extra})")
    return 0
