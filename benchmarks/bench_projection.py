"""relative_projection (cosine) vs a bare normalise-and-matmul in numpy, same run, same data.

Goal: within 1.2x of the bare numpy baseline at N=200,000 x d=768 against 768 anchors (float32).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import best_of, report
from relreps import relative_projection


def numpy_baseline(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    return xn @ an.T


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--anchors", type=int, default=768)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    a = x[rng.choice(args.n, args.anchors, replace=False)].copy()
    base = best_of(lambda: numpy_baseline(x, a), args.repeat)
    ours = best_of(lambda: relative_projection(x, a), args.repeat)
    centred = best_of(lambda: relative_projection(x, a, center="anchors"), args.repeat)
    xt, at = torch.from_numpy(x), torch.from_numpy(a)
    ours_t = best_of(lambda: relative_projection(xt, at), args.repeat)
    chunked = best_of(lambda: relative_projection(x, a, chunk_size=20_000), args.repeat)
    err = float(np.abs(relative_projection(x[:1000], a) - numpy_baseline(x[:1000], a)).max())
    report(f"projection N={args.n} d={args.d} anchors={args.anchors} float32 "
           f"(torch threads {torch.get_num_threads()})", [
               ("numpy normalise+matmul (baseline)", f"{base:.3f} s  1.00x"),
               ("relative_projection numpy", f"{ours:.3f} s  {ours / base:.2f}x"),
               ("relative_projection torch", f"{ours_t:.3f} s  {ours_t / base:.2f}x"),
               ("relative_projection chunk_size=20000", f"{chunked:.3f} s  {chunked / base:.2f}x"),
               ("relative_projection center='anchors'", f"{centred:.3f} s  {centred / base:.2f}x"),
               ("max |ours - baseline| (first 1000 rows)", f"{err:.2e}"),
           ])
    return {"ratio_numpy": ours / base, "ratio_torch": ours_t / base}


if __name__ == "__main__":
    main()
