"""Approximate (faiss HNSW or IVF) against exact Jaccard@10 + MRR@10, N from 10k to 1M, d=300.

Goal (issue 13): at N = 1,000,000, recall@10 >= 0.95 against exact search on 2,000 queries, and
the speed-up over exact search.

Data: embedding-like float32 vectors (cluster centres in a 32-dimensional subspace of R^300 plus
isotropic noise; the target space is the source plus noise). Uniform Gaussian vectors in 300
dimensions have almost no neighbourhood structure and are not what encoders produce; the JSON
records the generator. The approximate run is the whole ``retrieval_metrics(method=...)`` call
over all N queries: index build, effort tuning to ``--target-recall`` on 1,000 seeded queries,
both searches, and the exact reference of the 2,000 reported queries. Exact search is timed on
a seeded subset of queries against all N items and extrapolated linearly to N queries.

    python benchmarks/bench_neighbors_ann.py                    # N = 10k ... 1M (lead)
    python benchmarks/bench_neighbors_ann.py --n 5000 --out /tmp/bench   # smoke
    python benchmarks/bench_neighbors_ann.py --exact-only --exact-queries 2048  # exact alone
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import machine_info, peak_rss_kib, report, reset_peak_rss
from relreps.neighbors import retrieval_metrics, sample_queries

RESULTS = Path(__file__).parent / "results"
GENERATOR = ("x = centre[c] + 0.5 * noise, centres = N(0, I_32) @ B (B: 32 x d Gaussian), "
             "c uniform over n/1000 clusters (at least 10); target = x + 0.3 * noise")


def embeddings(n: int, d: int, seed: int = 0, block: int = 100_000
               ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((32, d), dtype=np.float32) / np.float32(np.sqrt(32))
    centres = rng.standard_normal((max(10, n // 1000), 32), dtype=np.float32) @ basis
    src = np.empty((n, d), dtype=np.float32)
    tgt = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, block):
        e = min(n, s + block)
        c = rng.integers(0, len(centres), e - s)
        src[s:e] = centres[c] + np.float32(0.5 / np.sqrt(d)) * rng.standard_normal(
            (e - s, d), dtype=np.float32)
        tgt[s:e] = src[s:e] + np.float32(0.3 / np.sqrt(d)) * rng.standard_normal(
            (e - s, d), dtype=np.float32)
    return src, tgt


def run_one(n: int, d: int, k: int, method: str, recall_queries: int, target: float,
            exact_queries: int) -> dict:
    src, tgt = embeddings(n, d)
    before = reset_peak_rss()
    t0 = time.perf_counter()
    approx = retrieval_metrics(src, tgt, k, method=method, recall_queries=recall_queries,
                               target_recall=target)
    t_approx = time.perf_counter() - t0
    peak = (peak_rss_kib() - before) / 1024
    exact = exact_timing(src, tgt, k, exact_queries)
    return {"n": n, "d": d, "k": k, "method": method, "approx_s": t_approx,
            "recall_at_k": approx["recall_at_k"], "recall_queries": approx["recall_queries"],
            "target_recall": target, "approx_jaccard": approx["jaccard"],
            "approx_mrr": approx["mrr"], **exact,
            "speedup": exact["exact_s_all_queries"] / t_approx, "approx_peak_extra_mib": peak}


def exact_timing(src: np.ndarray, tgt: np.ndarray, k: int, exact_queries: int) -> dict:
    """Exact search on a seeded subset of queries against all items, extrapolated to N."""
    n = len(src)
    n_q = min(n, exact_queries)
    queries = None if n_q == n else sample_queries(n, n_q, random_state=7)
    t0 = time.perf_counter()
    exact = retrieval_metrics(src, tgt, k, queries=queries)
    t_exact = (time.perf_counter() - t0) * n / n_q
    return {"exact_s_all_queries": t_exact, "exact_queries_timed": n_q,
            "exact_extrapolated": n_q < n, "exact_jaccard_on_timed_queries": exact["jaccard"],
            "exact_mrr_on_timed_queries": exact["mrr"]}


def exact_only(args: argparse.Namespace) -> dict:
    """``--exact-only``: the exact timing alone, on the same data and queries."""
    retrieval_metrics(*embeddings(2000, args.d), args.k)  # compile the search's loops first
    rows = [{"n": n, "d": args.d, "k": args.k, **exact_timing(*embeddings(n, args.d), args.k,
                                                                args.exact_queries)}
            for n in args.n]
    result = {"benchmark": "exact retrieval metrics on the clustered data", "data": GENERATOR,
              "machine": machine_info(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "neighbors_exact_clustered.json").write_text(json.dumps(result, indent=2))
    report(f"exact Jaccard@{args.k} + MRR@{args.k} on clustered data, d={args.d} "
           f"(results in {args.out / 'neighbors_exact_clustered.json'})", [
               (f"N={r['n']:,}", f"all queries {r['exact_s_all_queries']:.1f} s"
                f"{' (extrapolated)' if r['exact_extrapolated'] else ''}") for r in rows])
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+",
                   default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    p.add_argument("--d", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--method", choices=["hnsw", "ivf"], nargs="+", default=["hnsw", "ivf"])
    p.add_argument("--recall-queries", type=int, default=2000)
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--exact-queries", type=int, default=4096,
                   help="query rows of the exact timing (seeded subset, extrapolated to N)")
    p.add_argument("--exact-only", action="store_true",
                   help="time only the exact search (neighbors_exact_clustered.json)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.exact_only:
        return exact_only(args)
    rows = [run_one(n, args.d, args.k, m, args.recall_queries, args.target_recall,
                    args.exact_queries) for n in args.n for m in args.method]
    result = {"benchmark": "approximate vs exact retrieval metrics", "data": GENERATOR,
              "machine": machine_info(),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "neighbors_approx.json").write_text(json.dumps(result, indent=2))
    report(f"approximate Jaccard@{args.k} + MRR@{args.k}, d={args.d} "
           f"(results in {args.out / 'neighbors_approx.json'})", [
               (f"N={r['n']:,} {r['method']}",
                f"{r['approx_s']:.1f} s, recall@{r['k']} {r['recall_at_k']:.3f} on "
                f"{r['recall_queries']} queries; exact {r['exact_s_all_queries']:.0f} s"
                f"{' (extrapolated)' if r['exact_extrapolated'] else ''}: "
                f"{r['speedup']:.1f}x faster; peak +{r['approx_peak_extra_mib']:.0f} MiB")
               for r in rows])
    return result


if __name__ == "__main__":
    main()
