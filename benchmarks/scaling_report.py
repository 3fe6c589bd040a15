"""Turn the neighbour benchmarks' JSON into docs/scaling.md tables and a time-vs-N figure.

Reads ``neighbors_exact.json`` (bench_metrics.py) and ``neighbors_approx.json``
(bench_neighbors_ann.py) from ``--results`` (default ``benchmarks/results``), writes
``neighbors_time_vs_n.png`` there and into the doc's ``assets/`` folder, and replaces the text
between the ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers of ``--doc``
(default ``docs/scaling.md``).

    python benchmarks/bench_metrics.py && python benchmarks/bench_neighbors_ann.py
    python benchmarks/scaling_report.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _secs(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 100:
        return f"{s / 60:.0f} min"
    return f"{s:.1f} s"


def exact_table(res: dict) -> list[str]:
    k = res["rows"][0]["k"]
    lines = [f"Exact Jaccard@{k} + MRR@{k} against the bare GEMMs they need "
             f"(machine: {res['machine']['processor'] or res['machine']['platform']}, "
             f"{res['machine']['torch_threads']} threads; values equal a naive N x N run: "
             f"{res['same_values_as_naive']}).", "",
             "| N | d | queries timed | metrics | bare GEMMs | ratio | all N queries (est.) "
             "| peak memory above inputs |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        timed = f"{r['queries_timed']:,}" + (" (subset)" if r["extrapolated"] else " (all)")
        lines.append(f"| {r['n']:,} | {r['d']} | {timed} | {_secs(r['metrics_s'])} | "
                     f"{_secs(r['gemm_s'])} ({r['gemm_gflops']:.0f} GFLOP/s) | "
                     f"**{r['ratio']:.2f}x** | {_secs(r['metrics_s_all_queries'])} | "
                     f"+{r['peak_extra_mib']:.0f} MiB |")
    lines += ["", "Rows marked *subset* timed a seeded sample of query rows against all N items; "
              "the last columns extrapolate linearly to N queries (both the metrics and the "
              "GEMMs), which is exact up to timing noise: every query row costs the same."]
    return lines


def approx_table(res: dict) -> list[str]:
    k = res["rows"][0]["k"]
    lines = [f"Approximate Jaccard@{k} + MRR@{k} (all N queries; data: {res['data']}).", "",
             f"| N | method | recall@{k} (queries) | approximate | exact, all queries (est.) | "
             "speed-up | Jaccard approx / exact | MRR approx / exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['n']:,} | {r['method']} | {r['recall_at_k']:.3f} "
                     f"({r['recall_queries']:,}) | {_secs(r['approx_s'])} | "
                     f"{_secs(r['exact_s_all_queries'])} | **{r['speedup']:.1f}x** | "
                     f"{r['approx_jaccard']:.3f} / {r['exact_jaccard_on_timed_queries']:.3f} | "
                     f"{r['approx_mrr']:.3f} / {r['exact_mrr_on_timed_queries']:.3f} |")
    lines += ["", "Exact values are on the seeded subset of queries that was timed; approximate "
              "values on all queries."]
    return lines


def plot(exact: dict | None, approx: dict | None, out: Path) -> Path:
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend switch

    del matplotlib
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    if exact:
        rows = exact["rows"]
        n = [r["n"] for r in rows]
        ax.loglog(n, [r["metrics_s_all_queries"] for r in rows], "o-",
                  label=f"exact (relreps, k={rows[0]['k']})")
        ax.loglog(n, [r["gemm_s_all_queries"] for r in rows], "k--", label="bare GEMMs")
    if approx:
        for method in sorted({r["method"] for r in approx["rows"]}):
            rows = [r for r in approx["rows"] if r["method"] == method]
            ax.loglog([r["n"] for r in rows], [r["approx_s"] for r in rows], "s-",
                      label=f"approximate ({method}, k={rows[0]['k']})")
        rows = [r for r in approx["rows"] if r["method"] == approx["rows"][0]["method"]]
        ax.loglog([r["n"] for r in rows], [r["exact_s_all_queries"] for r in rows], "o:",
                  label=f"exact (relreps, k={rows[0]['k']})")
    ax.set_xlabel("N (items = queries)")
    ax.set_ylabel("time for Jaccard@k + MRR@k (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "neighbors_time_vs_n.png"
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--doc", type=Path, default=HERE.parent / "docs" / "scaling.md")
    args = p.parse_args(argv)
    exact = _load(args.results / "neighbors_exact.json")
    approx = _load(args.results / "neighbors_approx.json")
    if not exact and not approx:
        raise SystemExit(f"no neighbors_exact.json or neighbors_approx.json in {args.results}")
    png = plot(exact, approx, args.results)
    body: list[str] = []
    if exact:
        body += exact_table(exact) + [""]
    if approx:
        body += approx_table(approx) + [""]
    # the figure goes beside the page too: a documentation site serves only the docs folder
    assets = args.doc.parent / "assets"
    assets.mkdir(exist_ok=True)
    shutil.copyfile(png, assets / png.name)
    body += [f"![time against N](assets/{png.name})", ""]
    text = args.doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.doc} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.doc.write_text(head + BEGIN + "\n" + "\n".join(body) + END + tail)
    print(f"updated {args.doc} and wrote {png}")
    return "\n".join(body)


if __name__ == "__main__":
    main()
