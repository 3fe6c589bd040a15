"""Chunked projection of a large float32 memmap into a memmap output: peak memory stays bounded.

Goal: 2,000,000 x 384 float32 (2.9 GiB on disk) against 384 anchors, peak resident memory under
1 GB above the interpreter (measured as VmHWM after resetting it, Linux). The output (2.9 GiB)
goes to a memmap too. Baseline in the same run: the same chunked projection of an in-memory
array of a tenth of the rows, for time per row.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import peak_rss_kib, report, reset_peak_rss
from relreps import relative_projection


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--anchors", type=int, default=384)
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--dir", default=None, help="folder for the memmap files (default: a tmp dir)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src = Path(tmp) / "x.npy"
        x = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=(args.n, args.d))
        rng = np.random.default_rng(0)
        for s in range(0, args.n, 200_000):
            x[s:s + 200_000] = rng.standard_normal((min(200_000, args.n - s), args.d),
                                                   dtype=np.float32)
        x.flush()
        del x
        x = np.load(src, mmap_mode="r")
        anchors = np.array(x[rng.choice(args.n, args.anchors, replace=False)])
        out = np.lib.format.open_memmap(Path(tmp) / "r.npy", mode="w+", dtype=np.float32,
                                        shape=(args.n, args.anchors))
        before = reset_peak_rss()
        t0 = time.perf_counter()
        relative_projection(x, anchors, chunk_size=args.chunk, out=out)
        out.flush()
        elapsed = time.perf_counter() - t0
        peak = peak_rss_kib() - before
        check_rows = rng.choice(args.n, 1000, replace=False)
        ref = relative_projection(np.asarray(x[np.sort(check_rows)]), anchors)
        err = float(np.abs(np.asarray(out[np.sort(check_rows)]) - ref).max())
        small = np.array(x[: args.n // 10])
        t1 = time.perf_counter()
        relative_projection(small, anchors, chunk_size=args.chunk)
        in_mem = (time.perf_counter() - t1) * 10
    gib = args.n * args.d * 4 / 2**30
    report(f"memmap projection {args.n} x {args.d} float32 ({gib:.2f} GiB) -> "
           f"{args.anchors} anchors, chunk {args.chunk}", [
               ("peak memory above interpreter", f"{peak / 2**20:.3f} GiB "
                                                 f"({peak / 1024:.0f} MiB; goal < 1 GB)"),
               ("wall time, memmap in/out", f"{elapsed:.1f} s"),
               ("in-memory chunked, per-row time scaled to N (baseline)", f"{in_mem:.1f} s"),
               ("ratio memmap / in-memory", f"{elapsed / in_mem:.2f}x"),
               ("max error on 1000 checked rows", f"{err:.2e}"),
           ])
    return {"n": args.n, "d": args.d, "anchors": args.anchors, "chunk": args.chunk,
            "input_gib": gib, "peak_gib": peak / 2**20, "peak_bytes": peak * 1024,
            "seconds": elapsed, "in_memory_scaled_s": in_mem, "ratio": elapsed / in_mem,
            "max_abs_err": err}


if __name__ == "__main__":
    main()
