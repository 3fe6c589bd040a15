"""Run every benchmark of this folder and keep one record per run: results.json + results.md.

    python benchmarks/run_all.py --quick      # small sizes: minutes on 2 cores
    python benchmarks/run_all.py --full       # the sizes the goals are defined at (the default;
                                              # hours on 2 cores, ~40 GB of scratch disk)
    python benchmarks/run_all.py --quick --only projection cka

Each run goes to a fresh folder (``runs/benchmarks/MODE-DATE`` under the repository, or
``--out``, which must not exist or be empty): nothing is ever overwritten. It holds

- ``results.json``: the machine, load averages before and after, each benchmark's arguments,
  wall time, status and returned figures, and every goal of issue 13 with its measured value
  and pass/fail;
- ``results.md``: the same as tables;
- ``logs/NAME.log``: what each benchmark printed;
- ``neighbors_exact.json``, ``neighbors_approx.json``, ``neighbors_time_vs_n.png`` and
  ``scaling.md`` (a copy of docs/scaling.md with its results section filled in, figure in
  ``assets/``); to update the real page: ``python benchmarks/scaling_report.py --results RUN``.

Every benchmark runs in its own Python process (a clean peak-memory count, no thread settings
carried over), one after the other. Goals are judged only on ratios measured within the run;
a goal checked below the size it is defined at is marked as such, not as met. A failing
benchmark is recorded and the others still run; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ROOT = REPO / "runs" / "benchmarks"
PROFILES = ("tiny", "quick", "full")


@dataclass(frozen=True)
class Bench:
    """One benchmark: its module and its arguments per profile (``{out}``, ``{scratch}``)."""

    name: str
    module: str
    args: dict[str, list[str]]
    goal: str


BENCHMARKS: tuple[Bench, ...] = (
    Bench("projection", "bench_projection", {
        "tiny": ["--n", "2000", "--d", "64", "--anchors", "32", "--repeat", "1"],
        "quick": ["--n", "50000"],
        "full": []},
        "relative_projection within 1.05x of x @ anchors.T (numpy and torch), 200k x 768"),
    Bench("memmap", "bench_memmap", {
        "tiny": ["--n", "20000", "--d", "32", "--anchors", "16", "--chunk", "5000",
                 "--dir", "{scratch}"],
        "quick": ["--n", "200000", "--dir", "{scratch}"],
        "full": ["--dir", "{scratch}"]},
        "memmap 2M x 384 projected with peak memory < 1 GB"),
    Bench("metrics", "bench_metrics", {
        "tiny": ["--n", "700", "1500", "--d", "16", "--max-queries", "512", "--n-naive", "300",
                 "--out", "{out}"],
        "quick": ["--n", "10000", "30000", "--max-queries", "2048", "--n-naive", "2000",
                  "--out", "{out}"],
        "full": ["--out", "{out}"]},
        "exact Jaccard@5 + MRR@5 within 1.25x of the bare GEMMs, N 10k..1M, d=300"),
    Bench("cka", "bench_cka", {
        "tiny": ["--n", "500", "--d", "32", "--repeat", "1"],
        "quick": ["--repeat", "2"],
        "full": []},
        "linear CKA within 1.2x of its feature-space GEMM floor, 10k x 768"),
    Bench("neighbors_ann", "bench_neighbors_ann", {
        "tiny": ["--n", "1200", "--d", "16", "--recall-queries", "200", "--exact-queries",
                 "300", "--out", "{out}"],
        "quick": ["--n", "10000", "30000", "--recall-queries", "1000", "--exact-queries",
                  "1024", "--out", "{out}"],
        "full": ["--out", "{out}"]},
        "approximate recall@10 >= 0.95 at N=1M, d=300, 2,000 queries; speed-up over exact"),
    Bench("dask_projection", "bench_dask_projection", {
        "tiny": ["--n", "20000", "--d", "32", "--anchors", "16", "--chunk-rows", "5000",
                 "--sample", "300", "--dir", "{scratch}"],
        "quick": ["--n", "200000", "--dir", "{scratch}"],
        "full": ["--dir", "{scratch}"]},
        "4M x 768 Zarr on 2 workers x 1 thread x 2 GB: completes, equal on a sample, "
        "throughput vs one process"),
    Bench("scaling_report", "scaling_report", {
        p: ["--results", "{out}", "--doc", "{out}/scaling.md"] for p in PROFILES},
        "time against N (10k..1M) for exact and approximate search, tables for docs/scaling.md"),
)
NAMES = tuple(b.name for b in BENCHMARKS)


# ------------------------------------------------------------------------------------ goals

def _check(bench: str, measure: str, value: Any, goal: str, passed: bool | None,
           at_goal_size: bool) -> dict[str, Any]:
    return {"benchmark": bench, "measure": measure, "value": value, "goal": goal,
            "passed": None if passed is None else bool(passed),
            "at_goal_size": bool(at_goal_size)}


def _projection(r: dict) -> list[dict]:
    size = (r["n"], r["d"], r["anchors"]) == (200_000, 768, 768)
    return [_check("projection", f"cosine, {kind} input / {kind} x @ anchors.T",
                   r[f"ratio_{kind}"], "<= 1.05", r[f"ratio_{kind}"] <= 1.05, size)
            for kind in ("numpy", "torch")] + [
        _check("projection", f"{label} / numpy x @ anchors.T", r[key], "", None, size)
        for label, key in (("similarity='inner'", "ratio_inner"),
                           ("chunk_size=20000", "ratio_chunked"),
                           ("center='anchors'", "ratio_centred"),
                           ("memory-mapped input", "ratio_memmap"))]


def _memmap(r: dict) -> list[dict]:
    size = r["n"] >= 2_000_000 and r["d"] == 384 and r["anchors"] == 384
    return [_check("memmap", "peak memory above the interpreter (bytes)", r["peak_bytes"],
                   "< 1e9", r["peak_bytes"] < 1e9, size),
            _check("memmap", "time, memmap / in-memory chunked", r["ratio"], "", None, size)]


def _metrics(r: dict) -> list[dict]:
    out = [_check("metrics", "same values as a naive N x N computation",
                  r["same_values_as_naive"], "True", r["same_values_as_naive"] is True, True)]
    for row in r["rows"]:
        size = row["d"] == 300 and row["k"] == 5 and 10_000 <= row["n"] <= 1_000_000
        out.append(_check("metrics", f"N={row['n']:,}: time / bare GEMMs", row["ratio"],
                          "<= 1.25", row["ratio"] <= 1.25, size))
        out.append(_check("metrics", f"N={row['n']:,}: peak memory above the inputs (MiB)",
                          row["peak_extra_mib"], "O(N k)", None, size))
    return out


def _cka(r: dict) -> list[dict]:
    size = (r["n"], r["d"], r["d2"]) == (10_000, 768, 768)
    out = [_check("cka", f"{label} / floor", r[label], "<= 1.2", r[label] <= 1.2, size)
           for label in ("cka numpy", "cka torch")]
    out += [_check("cka", f"{label} / floor", v, "", None, size) for label, v in r.items()
            if label not in ("cka numpy", "cka torch", "n", "d", "d2", "floor_s")]
    return out


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares exponent b of y = a x^b (None for fewer than two distinct x)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return (sum((x - mx) * (y - my) for x, y in pts)
            / sum((x - mx) ** 2 for x, _ in pts))


def _neighbors_ann(r: dict) -> list[dict]:
    out = []
    for method in sorted({row["method"] for row in r["rows"]}):
        rows = sorted((row for row in r["rows"] if row["method"] == method),
                      key=lambda row: row["n"])
        big = rows[-1]
        size = (big["n"] >= 1_000_000 and big["d"] == 300 and big["k"] == 10
                and big["recall_queries"] >= 2000)
        out.append(_check("neighbors_ann",
                          f"{method}, N={big['n']:,}: recall@{big['k']} on "
                          f"{big['recall_queries']:,} queries", big["recall_at_k"], ">= 0.95",
                          big["recall_at_k"] >= 0.95, size))
        out.append(_check("neighbors_ann", f"{method}, N={big['n']:,}: speed-up over exact "
                          "(exact extrapolated from its timed queries)", big["speedup"], "",
                          None, size))
        ns = [row["n"] for row in rows]
        for what, key in (("exact", "exact_s_all_queries"), (method, "approx_s")):
            b = _slope(ns, [row[key] for row in rows])
            if b is not None:
                out.append(_check("neighbors_ann", f"{what} time ~ N^b over N={ns[0]:,}.."
                                  f"{ns[-1]:,} ({method} run): b", b, "", None, size))
        b_e = _slope(ns, [row["exact_s_all_queries"] for row in rows])
        b_a = _slope(ns, [row["approx_s"] for row in rows])
        if b_e is not None and b_a is not None and big["n"] < 1_000_000:
            # the measured curves, continued to the goal's N
            est = big["speedup"] * (1_000_000 / big["n"]) ** (b_e - b_a)
            out.append(_check("neighbors_ann", f"{method}: speed-up at N=1,000,000 "
                              "extrapolated from the fitted curves", est, "", None, False))
    return out


def _dask(r: dict) -> list[dict]:
    dk = r["dask"]
    size = (r["n"] >= 4_000_000 and r["d"] == 768 and r["anchors"] == 768
            and not dk["scheduler_given"] and dk["cluster"]["workers"] == 2
            and dk["threads_per_worker"] == 1 and str(dk["memory_limit"]).upper() == "2GB")
    peak = dk["max_peak_worker_rss_mib"]
    limit = dk["cluster"]["memory_limit_bytes"] / max(1, dk["cluster"]["workers"])
    return [
        _check("dask_projection", "completed, every output chunk written", r["completed"], "True",
               r["completed"] is True, size),
        _check("dask_projection", f"max |dask - numpy path| on {r['sample_rows']:,} rows",
               dk["max_abs_err"], f"<= {r['tolerance']:g}", r["equal_on_sample"], size),
        _check("dask_projection", "throughput dask / single process (same cores)",
               r["throughput_vs_single_process"], "", None, size),
        _check("dask_projection", "rows/s dask", dk["rows_per_s"], "", None, size),
        _check("dask_projection", "input GB/s dask", dk["input_gb_per_s"], "", None, size),
        _check("dask_projection", "peak worker memory (MiB)", peak,
               f"< the {limit / 2**20:,.0f} MiB limit" if limit else "",
               None if peak is None or not limit else peak * 2**20 < limit, size),
        _check("dask_projection", "workers replaced during the run", dk["workers_replaced"],
               "", None, size)]


def _scaling_report(r: dict, run: Path) -> list[dict]:
    fig = run / "neighbors_time_vs_n.png"
    ns = []
    for name in ("neighbors_exact.json", "neighbors_approx.json"):
        if (run / name).exists():
            ns += [row["n"] for row in json.loads((run / name).read_text())["rows"]]
    span = bool(ns) and min(ns) <= 10_000 and max(ns) >= 1_000_000
    text = f"N={min(ns):,}..{max(ns):,}" if ns else "no rows"
    return [_check("scaling_report", "time-vs-N figure written", text, "N 10k..1M",
                   fig.exists() and fig.stat().st_size > 0 and span, span)]


GOALS: dict[str, Callable[..., list[dict]]] = {
    "projection": _projection, "memmap": _memmap, "metrics": _metrics, "cka": _cka,
    "neighbors_ann": _neighbors_ann, "dask_projection": _dask}


def checks(name: str, result: Any, run: Path) -> list[dict[str, Any]]:
    """The goals of benchmark `name` judged on its returned `result` (see module docstring)."""
    if name == "scaling_report":
        return _scaling_report(result, run)
    return GOALS[name](result)


# ------------------------------------------------------------------------------- machine

def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("relreps", "numpy", "torch", "dask", "distributed", "zarr", "faiss-cpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _git() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], text=True, capture_output=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + (" (uncommitted changes)" if dirty else "")) or None


def machine() -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count()
    return {"platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "usable_cores": cores, "memory_gib": _meminfo_gib(), "versions": _versions(),
            "git": _git()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------- running

def _jsonable(o: Any) -> Any:
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 1) == 0:
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (Path, set, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    return str(o)


def _child(module: str, result_file: str, argv: list[str]) -> None:
    """In the benchmark's own process: run it and write what it returns as JSON."""
    import importlib

    sys.path.insert(0, str(HERE))
    result = importlib.import_module(module).main(argv)
    Path(result_file).write_text(json.dumps(result, indent=1, default=_jsonable))


def _env() -> dict[str, str]:
    """This process's environment, with the relreps it imports first on the child's path."""
    import relreps

    paths = [str(Path(relreps.__file__).resolve().parents[1]), str(HERE)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_one(bench: Bench, argv: list[str], stage: Path, echo: bool) -> dict[str, Any]:
    """Run one benchmark in a subprocess; its record (status, seconds, result or error)."""
    (stage / "logs").mkdir(exist_ok=True)
    log = stage / "logs" / f"{bench.name}.log"
    result_file = stage / "logs" / f".{bench.name}.result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", bench.module,
           str(result_file), *argv]
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=_env(), cwd=str(REPO))
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if echo:
                print(line, end="", flush=True)
        rc = proc.wait()
    seconds = time.perf_counter() - t0
    record: dict[str, Any] = {"module": f"benchmarks/{bench.module}.py", "args": argv,
                              "goal": bench.goal, "seconds": round(seconds, 2),
                              "log": str(log.relative_to(stage))}
    if rc == 0 and result_file.exists():
        record["status"] = "ok"
        record["result"] = json.loads(result_file.read_text())
        result_file.unlink()
    else:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        record["status"] = "error"
        record["error"] = f"exit status {rc}: " + " | ".join(tail)
    return record


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.3g}" if abs(v) < 0.01 else f"{v:.3f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def markdown(summary: dict[str, Any]) -> str:
    """results.md: the run's benchmarks and goals as tables."""
    m = summary["machine"]
    lines = [f"# Benchmarks, {summary['mode']} run of {summary['started']}", "",
             f"- machine: {m['processor'] or m['platform']}, {m['usable_cores']} usable cores "
             f"of {m['cpu_count']}, {_fmt(m['memory_gib'])} GiB; python {m['python']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
             f"- code: {m['git']}",
             f"- load average (1, 5, 15 min) before: {summary['load_before']}, after: "
             f"{summary['load_after']}; ratios are measured within the run, absolute times "
             "only mean something on an idle machine", "",
             "## Benchmarks", "", "| benchmark | status | wall time | arguments |",
             "|---|---|---|---|"]
    for name, rec in summary["benchmarks"].items():
        status = rec["status"] if rec["status"] == "ok" else f"**{rec['status']}**"
        lines.append(f"| {name} | {status} | {rec['seconds']:.1f} s | "
                     f"`{' '.join(rec['args']) or '(defaults)'}` |")
    errors = [(n, r["error"]) for n, r in summary["benchmarks"].items() if r["status"] != "ok"]
    for name, err in errors:
        lines += ["", f"{name} failed: {err}"]
    lines += ["", "## Goals (issue 13)", "",
              "| benchmark | measure | value | goal | status |", "|---|---|---|---|---|"]
    for c in summary["checks"]:
        status = {True: "pass", False: "**FAIL**", None: "info"}[c["passed"]]
        if not c["at_goal_size"] and c["passed"] is not None:
            status = f"{'pass' if c['passed'] else 'fail'}, below goal size"
        cells = (c["benchmark"], c["measure"], _fmt(c["value"]), c["goal"], status)
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    lines += ["", "*below goal size*: measured at a smaller size than the goal is defined at "
              "(run `--full` for those); *info*: reported, no threshold.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="mode",
                      help="small sizes, minutes")
    mode.add_argument("--full", action="store_const", const="full", dest="mode",
                      help="the documented sizes (default)")
    mode.add_argument("--tiny", action="store_const", const="tiny", dest="mode",
                      help="seconds per benchmark, for tests; the figures mean nothing")
    p.add_argument("--only", nargs="+", choices=NAMES, default=None, metavar="NAME",
                   help=f"run only these ({', '.join(NAMES)})")
    p.add_argument("--skip", nargs="+", choices=NAMES, default=(), metavar="NAME")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder (must not exist or be empty; default: a fresh folder "
                        "under --root)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--scratch", type=Path, default=None,
                   help="folder for the large temporary arrays (default: the system tmp dir)")
    p.add_argument("--quiet", action="store_true", help="do not echo the benchmarks' output")
    args = p.parse_args(argv)
    mode_name = args.mode or "full"
    selected = [b for b in BENCHMARKS if (args.only is None or b.name in args.only)
                and b.name not in args.skip]
    if not selected:
        p.error("nothing to run")

    from relreps.runs import prepare_run

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = prepare_run(args.out, name=f"{mode_name}-{stamp}", root=args.root)
    scratch = str(args.scratch) if args.scratch else None
    if scratch:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"benchmark_suite": "relreps benchmarks (issue 13)",
                               "mode": mode_name, "started": stamp, "machine": machine(),
                               "load_before": _load(), "benchmarks": {}, "checks": []}
    with run:
        run.started()
        stage = run.stage
        doc = REPO / "docs" / "scaling.md"
        if doc.exists():
            shutil.copyfile(doc, stage / "scaling.md")
        else:
            (stage / "scaling.md").write_text("<!-- results:begin -->\n<!-- results:end -->\n")
        for bench in selected:
            bargv = []
            for a in bench.args[mode_name]:
                if "{scratch}" in a:
                    if scratch is None:
                        bargv.pop()  # drop the option: the benchmark's own tmp default
                        continue
                    a = a.replace("{scratch}", scratch)
                bargv.append(a.replace("{out}", str(stage)))
            print(f"\n### {bench.name}: {bench.goal}", flush=True)
            rec = run_one(bench, bargv, stage, echo=not args.quiet)
            # paths inside the staging folder are recorded relative to the run folder
            rec["args"] = [a.replace(str(stage), "RUN") for a in rec["args"]]
            summary["benchmarks"][bench.name] = rec
            if rec["status"] == "ok":
                try:
                    summary["checks"] += checks(bench.name, rec["result"], stage)
                except (KeyError, TypeError, ValueError) as e:
                    rec["status"] = "error"
                    rec["error"] = f"its result lacks what the goals need: {e!r}"
            print(f"### {bench.name}: {rec['status']} in {rec['seconds']:.1f} s", flush=True)
        summary["load_after"] = _load()
        summary["finished"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        (stage / "results.json").write_text(json.dumps(summary, indent=1, default=_jsonable))
        (stage / "results.md").write_text(markdown(summary))
    summary["path"] = str(run.path)
    print(f"\n{markdown(summary)}\nrun folder: {run.path}")
    return summary


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        failed = [n for n, r in main()["benchmarks"].items() if r["status"] != "ok"]
        sys.exit(1 if failed else 0)
