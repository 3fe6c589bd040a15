"""Projection of a large float32 Zarr array on a local Dask cluster vs the single-process path.

Goal (issue 13): an N x 768 float32 Zarr array (N = 4,000,000: 11.4 GiB) projected against 768
anchors on a ``LocalCluster`` of 2 workers x 1 thread with a 2 GB memory limit each completes,
writes its output to Zarr, equals the numpy path on a seeded sample of rows, and its throughput
is reported relative to the single-process chunked path (``np.memmap`` in, ``np.memmap`` out,
torch limited to the cluster's total thread count) on the same data in the same run.

The input is generated chunk by chunk (seeded per chunk) and written both as a Zarr store
(uncompressed by default, so that both paths measure the projection and the disk, not a codec)
and as a ``.npy`` file with the same bytes; no process ever holds it whole. Disk: about three
times the input (the ``.npy`` copy and the memmap output are deleted before the dask run).
Peak worker memory is each worker process's peak resident set (Linux ``VmHWM``; reset before
the run where the kernel allows it) and includes the interpreter, torch and the task buffers.

    python benchmarks/bench_dask_projection.py                   # N = 4M (lead, quiet machine)
    python benchmarks/bench_dask_projection.py --n 200000        # a few minutes on 2 cores
    python benchmarks/bench_dask_projection.py --scheduler tcp://HOST:8786 --dir /shared/tmp
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import report
from relreps import relative_projection
from relreps.distributed import client_info, get_client

TOLERANCE = 1e-5  # float32 cosines in [-1, 1]: blocking changes only the last bits


def _zarr_create(path: Path, shape: tuple[int, int], chunk_rows: int, compress: bool) -> Any:
    import zarr

    kwargs: dict[str, Any] = {} if compress else {"compressors": None}
    return zarr.create_array(store=str(path), shape=shape, chunks=(chunk_rows, shape[1]),
                             dtype="float32", **kwargs)


def make_data(folder: Path, n: int, d: int, chunk_rows: int, seed: int,
              compress: bool) -> tuple[Path, Path]:
    """Write the same seeded N x d float32 rows to ``x.zarr`` and ``x.npy``, chunk by chunk."""
    zpath, npath = folder / "x.zarr", folder / "x.npy"
    z = _zarr_create(zpath, (n, d), chunk_rows, compress)
    with open(npath, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": np.dtype(np.float32).str, "fortran_order": False, "shape": (n, d)})
        for i, s in enumerate(range(0, n, chunk_rows)):
            e = min(n, s + chunk_rows)
            block = np.random.default_rng([seed, i]).standard_normal((e - s, d),
                                                                     dtype=np.float32)
            z[s:e] = block
            f.write(block.tobytes())
    return zpath, npath


# _reset_peak/_peak/_status_kib run inside Dask worker processes, which cannot import
# benchmarks/_common (not on their path, possibly another machine); defined here, they travel
# with the task by value. _common.reset_peak_rss/peak_rss_kib are the same for this process.
def _reset_peak() -> int:
    """In a worker: import what the tasks import, reset the peak RSS; the RSS in KiB."""
    import relreps.projection  # noqa: F401  (torch: part of every worker's footprint)

    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def _peak() -> int:
    return _status_kib("VmHWM")


def _status_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(n, size), replace=False))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--anchors", type=int, default=768)
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per Zarr chunk (task)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--memory-limit", default="2GB", help="per worker")
    p.add_argument("--scheduler", default=None,
                   help="an existing cluster's address instead of a LocalCluster (then --dir "
                        "must be readable by every worker)")
    p.add_argument("--baseline-threads", type=int, default=None,
                   help="torch threads of the single-process path (default: workers x threads)")
    p.add_argument("--sample", type=int, default=2000, help="rows compared with the numpy path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compress", action="store_true", help="zstd-compressed Zarr chunks")
    p.add_argument("--dir", default=None, help="scratch folder (default: the system tmp dir)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (printed)")
    args = p.parse_args(argv)
    n, d, k = args.n, args.d, args.anchors
    if min(n, d, k, args.chunk_rows, args.workers, args.threads, args.sample) < 1 or k > n:
        p.error("sizes must be positive and --anchors at most --n")
    in_bytes, out_bytes = n * d * 4, n * k * 4
    tmp = Path(tempfile.mkdtemp(prefix="relreps-bench-dask-", dir=args.dir))
    need = 2 * in_bytes + out_bytes  # Zarr + .npy inputs and the memmap output, at the peak
    free = shutil.disk_usage(tmp).free
    if free < need * 1.05:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{tmp.parent} has {free / 2**30:.1f} GiB free; this run needs about "
                         f"{need / 2**30:.1f} GiB (pass --dir)")
    try:
        t0 = time.perf_counter()
        zpath, npath = make_data(tmp, n, d, args.chunk_rows, args.seed, args.compress)
        create_s = time.perf_counter() - t0
        import zarr

        zin = zarr.open_array(str(zpath), mode="r")
        anchor_rows = _sample_rows(n, k, args.seed + 1)
        anchors = np.asarray(zin.get_orthogonal_selection((anchor_rows, slice(None))))
        rows = _sample_rows(n, args.sample, args.seed + 2)
        ref = relative_projection(
            np.asarray(zin.get_orthogonal_selection((rows, slice(None)))), anchors)

        # single process: memmap in, memmap out, as many torch threads as the cluster has
        base_threads = args.baseline_threads or args.workers * args.threads
        saved = torch.get_num_threads()
        torch.set_num_threads(base_threads)
        try:
            xm = np.load(npath, mmap_mode="r")
            om = np.lib.format.open_memmap(tmp / "r.npy", mode="w+", dtype=np.float32,
                                           shape=(n, k))
            t0 = time.perf_counter()
            relative_projection(xm, anchors, out=om)
            om.flush()
            base_s = time.perf_counter() - t0
            base_err = float(np.abs(np.asarray(om[rows]) - ref).max())
            del xm, om
        finally:
            torch.set_num_threads(saved)
        npath.unlink()
        (tmp / "r.npy").unlink()

        import cloudpickle
        import dask.array as da

        if __name__ != "__main__":  # workers may not have benchmarks/ on their path
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
        logging.disable(logging.WARNING)  # dask's start/stop chatter (e.g. slow worker exits)
        try:
            t0 = time.perf_counter()
            if args.scheduler:
                client = get_client(args.scheduler, timeout=120.0)
            else:
                client = get_client(workers=args.workers, threads_per_worker=args.threads,
                                    memory_limit=args.memory_limit, timeout=120.0)
            with client:
                client.wait_for_workers(1 if args.scheduler else args.workers)
                start_s = time.perf_counter() - t0
                info = client_info(client)
                before = client.run(_reset_peak)
                ids = {w: s.get("id") for w, s in client.scheduler_info()["workers"].items()}
                t0 = time.perf_counter()
                out = relative_projection(da.from_zarr(str(zpath)), anchors)
                # Written like the input (same chunks, same codec), one task per chunk. Not into
                # a pre-created zarr.Array: dask then rechunks blocks larger than its
                # array.chunk-size to sizes that straddle the store's chunks, and tasks sharing
                # a chunk overwrite each other's rows (seen at 50,000 x 768).
                da.to_zarr(out, str(tmp / "r.zarr"),
                           **({} if args.compress else {"compressors": None}))
                dask_s = time.perf_counter() - t0
                after_ids = {w: s.get("id")
                             for w, s in client.scheduler_info()["workers"].items()}
                peaks = client.run(_peak)
        finally:
            logging.disable(logging.NOTSET)
        zout = zarr.open_array(str(tmp / "r.zarr"), mode="r")
        got = np.asarray(zout.get_orthogonal_selection((rows, slice(None))))
        dask_err = float(np.abs(got - ref).max())
        # every chunk written (a missing one would read as zeros, not fail)
        complete = (tuple(zout.shape) == (n, k) and zout.chunks[0] == args.chunk_rows
                    and getattr(zout, "nchunks_initialized", zout.nchunks) == zout.nchunks)
    finally:
        if args.keep:
            print(f"scratch folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    restarted = sorted(set(ids.items()) ^ set(after_ids.items()))
    peak_mib = {w: (v / 1024 if v >= 0 else None) for w, v in peaks.items()}
    above_mib = {w: ((peaks[w] - before[w]) / 1024 if peaks[w] >= 0 and before.get(w, -1) >= 0
                     else None) for w in peaks}
    known = [v for v in peak_mib.values() if v is not None]
    result = {
        "n": n, "d": d, "anchors": k, "chunk_rows": args.chunk_rows, "seed": args.seed,
        "compressed": args.compress, "input_gib": in_bytes / 2**30, "output_gib": out_bytes / 2**30,
        "create_s": create_s,
        "baseline": {"path": "np.memmap in, np.memmap out, one process",
                     "torch_threads": base_threads, "seconds": base_s,
                     "rows_per_s": n / base_s, "input_gb_per_s": in_bytes / base_s / 1e9,
                     "max_abs_err": base_err},
        "dask": {"path": "da.from_zarr -> relative_projection -> da.to_zarr",
                 "cluster": info, "scheduler_given": bool(args.scheduler),
                 "memory_limit": None if args.scheduler else args.memory_limit,
                 "threads_per_worker": args.threads, "cluster_start_s": start_s,
                 "seconds": dask_s, "rows_per_s": n / dask_s,
                 "input_gb_per_s": in_bytes / dask_s / 1e9, "max_abs_err": dask_err,
                 "peak_worker_rss_mib": peak_mib, "peak_worker_rss_above_start_mib": above_mib,
                 "max_peak_worker_rss_mib": max(known) if known else None,
                 "workers_replaced": len(restarted) // 2 if restarted else 0},
        "sample_rows": int(len(rows)), "tolerance": TOLERANCE,
        "completed": complete, "equal_on_sample": complete and dask_err <= TOLERANCE
        and base_err <= TOLERANCE,
        "throughput_vs_single_process": base_s / dask_s,
    }
    peak_text = (f"{result['dask']['max_peak_worker_rss_mib']:.0f} MiB (VmHWM, includes torch)"
                 if known else "not available")
    report(f"dask projection {n:,} x {d} float32 ({in_bytes / 2**30:.2f} GiB Zarr, chunks of "
           f"{args.chunk_rows:,} rows) -> {k} anchors", [
               ("cluster", f"{info['workers']} workers, {info['threads']} threads, "
                           f"{'given scheduler' if args.scheduler else args.memory_limit + ' each'}"
                           f" (started in {start_s:.1f} s)"),
               ("single process (memmap, baseline)",
                f"{base_s:.2f} s  {n / base_s:,.0f} rows/s  {in_bytes / base_s / 1e9:.3f} GB/s "
                f"({base_threads} torch threads)"),
               ("dask (Zarr in, Zarr out)",
                f"{dask_s:.2f} s  {n / dask_s:,.0f} rows/s  {in_bytes / dask_s / 1e9:.3f} GB/s"),
               ("throughput dask / single process", f"{base_s / dask_s:.2f}x"),
               ("peak worker memory", peak_text),
               ("workers replaced during the run", str(result["dask"]["workers_replaced"])),
               (f"max |out - numpy path| on {len(rows):,} sampled rows",
                f"dask {dask_err:.1e}, memmap {base_err:.1e} (tolerance {TOLERANCE:.0e})"),
           ])
    return result


if __name__ == "__main__":
    main()
