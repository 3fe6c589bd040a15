"""relative_projection against the bare matrix product it needs, same run, same data.

Baseline: ``x @ anchors.T`` (numpy for numpy input, torch for torch input), the floor of any
projection onto k anchors. Goal (issue 13): cosine projection within 1.05x of it for numpy and
torch inputs at N=200,000 x d=768 against 768 anchors (float32). Also reported: chunked, centred,
memory-mapped input, and the in-memory cost of the range-safety machinery (one row-norm pass).
Ratios are only meaningful on a quiet machine; the script prints, never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import best_of, best_of_interleaved, report
from relreps import relative_projection


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--anchors", type=int, default=768)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    a = x[rng.choice(args.n, args.anchors, replace=False)].copy()
    xt, at = torch.from_numpy(x), torch.from_numpy(a)

    # the goal's pairs are timed round-robin: each ratio compares calls made side by side
    t = best_of_interleaved({"base_np": lambda: x @ a.T,
                             "ours": lambda: relative_projection(x, a),
                             "base_t": lambda: xt @ at.T,
                             "ours_t": lambda: relative_projection(xt, at)}, args.repeat)
    base_np, ours, base_t, ours_t = t["base_np"], t["ours"], t["base_t"], t["ours_t"]
    chunked = best_of(lambda: relative_projection(x, a, chunk_size=20_000), args.repeat)
    centred = best_of(lambda: relative_projection(x, a, center="anchors"), args.repeat)
    inner = best_of(lambda: relative_projection(x, a, similarity="inner"), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x)
        xm = np.load(path, mmap_mode="r")
        mapped = best_of(lambda: relative_projection(xm, a), args.repeat)
    err = float(np.abs(relative_projection(x[:1000], a).astype(np.float64) -
                       (x[:1000] / np.linalg.norm(x[:1000], axis=1, keepdims=True)).astype(
                           np.float64) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T).max())
    report(f"projection N={args.n} d={args.d} anchors={args.anchors} float32 "
           f"(torch threads {torch.get_num_threads()})", [
               ("numpy x @ anchors.T (baseline, numpy input)", f"{base_np:.3f} s  1.00x"),
               ("torch x @ anchors.T (baseline, torch input)", f"{base_t:.3f} s  1.00x"),
               ("relative_projection numpy (cosine)", f"{ours:.3f} s  {ours / base_np:.3f}x"),
               ("relative_projection torch (cosine)", f"{ours_t:.3f} s  {ours_t / base_t:.3f}x"),
               ("relative_projection numpy similarity='inner'",
                f"{inner:.3f} s  {inner / base_np:.3f}x"),
               ("relative_projection chunk_size=20000",
                f"{chunked:.3f} s  {chunked / base_np:.3f}x"),
               ("relative_projection center='anchors'",
                f"{centred:.3f} s  {centred / base_np:.3f}x"),
               ("relative_projection memory-mapped x (default blocks)",
                f"{mapped:.3f} s  {mapped / base_np:.3f}x"),
               ("max |ours - float64 cosine| (first 1000 rows)", f"{err:.2e}"),
           ])
    return {"n": args.n, "d": args.d, "anchors": args.anchors,
            "torch_threads": torch.get_num_threads(), "baseline_numpy_s": base_np,
            "baseline_torch_s": base_t, "numpy_s": ours, "torch_s": ours_t,
            "ratio_numpy": ours / base_np, "ratio_torch": ours_t / base_t,
            "ratio_inner": inner / base_np, "ratio_chunked": chunked / base_np,
            "ratio_centred": centred / base_np, "ratio_memmap": mapped / base_np,
            "max_abs_err_vs_float64": err}


if __name__ == "__main__":
    main()
