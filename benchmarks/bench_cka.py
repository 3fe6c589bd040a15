"""Linear CKA against its feature-space GEMM floor, measured in the same run on the same data.

Floor: the three bare float32 GEMMs linear CKA cannot avoid, X^T Y, X^T X and Y^T Y (torch, the
same threads). Goal (issue 13): ``cka`` within 1.2x of the floor at N=10,000 x d=768. Also
reported: the debiased estimator, torch input, the exact minibatch accumulator, dask input (if
installed), and the n x n Gram route for fewer samples than features against its own floor
(X X^T and Y Y^T).

Run: ``python benchmarks/bench_cka.py`` (N=10,000, d=768; needs ~0.3 GB). Smoke run:
``python benchmarks/bench_cka.py --n 2000 --d 128 --repeat 1``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import best_of, report
from relreps.metrics import CKAAccumulator, cka


def floor_feature(x: torch.Tensor, y: torch.Tensor) -> None:
    x.T @ y
    x.T @ x
    y.T @ y


def floor_gram(x: torch.Tensor, y: torch.Tensor) -> None:
    x @ x.T
    y @ y.T


def accumulate(x: np.ndarray, y: np.ndarray, batch: int) -> float:
    acc = CKAAccumulator()
    for s in range(0, len(x), batch):
        acc.update(x[s:s + batch], y[s:s + batch])
    return acc.compute()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--d2", type=int, default=None, help="width of the second space (default d)")
    p.add_argument("--batch", type=int, default=1024, help="accumulator batch rows")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    d2 = args.d2 or args.d
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    y = (x[:, :min(args.d, d2)] @ rng.standard_normal((min(args.d, d2), d2), dtype=np.float32)
         + rng.standard_normal((args.n, d2), dtype=np.float32))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    floor = best_of(lambda: floor_feature(xt, yt), args.repeat)
    rows = [(f"floor: X^T Y + X^T X + Y^T Y (torch float32, {torch.get_num_threads()} threads)",
             f"{floor:.3f} s  1.00x")]
    out: dict[str, float] = {"n": args.n, "d": args.d, "d2": d2, "floor_s": floor}
    for label, fn in (("cka numpy", lambda: cka(x, y)),
                      ("cka torch", lambda: cka(xt, yt)),
                      ("cka numpy debiased", lambda: cka(x, y, debiased=True)),
                      (f"CKAAccumulator, batches of {args.batch}",
                       lambda: accumulate(x, y, args.batch))):
        t = best_of(fn, args.repeat)
        rows.append((label, f"{t:.3f} s  {t / floor:.2f}x"))
        out[label] = t / floor
    try:
        import dask.array as da
    except ImportError:  # the 'dist' extra is optional
        rows.append(("cka dask", "dask not installed"))
    else:
        dx, dy = (da.from_array(a, chunks=(max(1, args.n // 4), -1)) for a in (x, y))
        t = best_of(lambda: cka(dx, dy), args.repeat)
        rows.append(("cka dask (4 row chunks, default scheduler)", f"{t:.3f} s  {t / floor:.2f}x"))
        out["cka dask"] = t / floor
    ref = cka(x.astype(np.float64), y.astype(np.float64))
    rows.append(("|cka float32 - cka float64|", f"{abs(cka(x, y) - ref):.1e}"))

    n_small = max(4, min(args.n, args.d) // 2)  # fewer samples than features: the Gram route
    xs, ys = xt[:n_small], yt[:n_small]
    floor_g = best_of(lambda: floor_gram(xs, ys), args.repeat)
    t = best_of(lambda: cka(xs, ys), args.repeat)
    rows += [(f"floor n={n_small}: X X^T + Y Y^T", f"{floor_g:.4f} s  1.00x"),
             (f"cka n={n_small} (Gram route)", f"{t:.4f} s  {t / floor_g:.2f}x")]
    out["gram route"] = t / floor_g
    report(f"linear CKA, N={args.n}, d={args.d} x {d2}, float32", rows)
    return out


if __name__ == "__main__":
    main()
