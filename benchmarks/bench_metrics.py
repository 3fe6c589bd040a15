"""Blockwise Jaccard@k / MRR@k vs a naive implementation that builds the N x N matrix.

Goal: memory O(N*k) and faster than the naive version where it fits in memory. At N=100,000 the
naive N x N float32 matrix alone is 40 GB (does not fit in 24 GiB), so the naive baseline runs at
a smaller N in the same run, and the blockwise one at both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import peak_rss_kib, report, reset_peak_rss
from relreps.metrics import retrieval_metrics


def naive(source: np.ndarray, target: np.ndarray, k: int) -> dict[str, float]:
    s = source / np.linalg.norm(source, axis=1, keepdims=True)
    t = target / np.linalg.norm(target, axis=1, keepdims=True)
    st = s @ t.T
    S = np.argsort(-st, axis=1)[:, :k]
    del st
    tt = t @ t.T
    T = np.argsort(-tt, axis=1)[:, :k]
    n = len(s)
    hit = S == np.arange(n)[:, None]
    rank = np.where(hit.any(1), hit.argmax(1) + 1, 0)
    mrr = np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0).mean()
    inter = np.array([len(set(a) & set(b)) for a, b in zip(S, T)])
    return {"jaccard": float((inter / (2 * k - inter)).mean()), "mrr": float(mrr)}


def measure(fn, *args):
    before = reset_peak_rss()
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0, (peak_rss_kib() - before) / 1024


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--n-naive", type=int, default=10_000)
    p.add_argument("--d", type=int, default=300)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    src = rng.standard_normal((args.n, args.d), dtype=np.float32)
    tgt = src + 0.5 * rng.standard_normal((args.n, args.d), dtype=np.float32)
    small_s, small_t = src[: args.n_naive], tgt[: args.n_naive]
    naive_out, naive_t, naive_mem = measure(naive, small_s, small_t, args.k)
    ours_small, ours_small_t, ours_small_mem = measure(retrieval_metrics, small_s, small_t,
                                                       args.k)
    ours, ours_t, ours_mem = measure(retrieval_metrics, src, tgt, args.k)
    same = np.allclose([naive_out["jaccard"], naive_out["mrr"]],
                       [ours_small["jaccard"], ours_small["mrr"]])
    nn_gib = args.n**2 * 4 / 2**30
    report(f"Jaccard@{args.k} + MRR@{args.k}, d={args.d}", [
        (f"naive N x N, N={args.n_naive} (baseline)",
         f"{naive_t:.2f} s, peak +{naive_mem:.0f} MiB"),
        (f"blockwise, N={args.n_naive}", f"{ours_small_t:.2f} s ({ours_small_t / naive_t:.2f}x), "
                                         f"peak +{ours_small_mem:.0f} MiB "
                                         f"({ours_small_mem / max(naive_mem, 1):.2f}x)"),
        ("same values as naive", str(same)),
        (f"blockwise, N={args.n}", f"{ours_t:.1f} s, peak +{ours_mem:.0f} MiB "
                                   f"(an N x N float32 matrix would be {nn_gib:.1f} GiB)"),
        (f"values at N={args.n}", f"jaccard {ours['jaccard']:.4f}, mrr {ours['mrr']:.4f}"),
    ])
    return {"speedup_small": naive_t / ours_small_t, "peak_mib_large": ours_mem}


if __name__ == "__main__":
    main()
