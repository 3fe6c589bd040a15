"""`relreps` command line: demo, list, run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from relreps.errors import RelrepsError


def _parse_options(items: Sequence[str]) -> dict:
    opts = {}
    for item in items:
        if "=" not in item:
            raise RelrepsError(f"--opt expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relreps", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="two seeds, absolute vs relative, zero-shot stitching")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--scale", choices=["smoke", "full"], default="full")

    sub.add_parser("list", help="list the experiments")

    run = sub.add_parser("run", help="run an experiment")
    run.add_argument("experiment")
    run.add_argument("--scale", choices=["smoke", "full"], default="smoke")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, default=None,
                     help="output folder (default runs/EXPERIMENT-SCALE)")
    run.add_argument("--method", default=None,
                     help="stitching method for experiments that compare methods")
    run.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                     help="experiment-specific option (value parsed as JSON when possible)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from relreps import experiments

    try:
        if args.command == "list":
            for name, desc in experiments.available().items():
                print(f"{name:20s} {desc}")
            return 0
        if args.command == "demo":
            name, scale, seed, out, opts = "demo", args.scale, args.seed, args.out, {}
        else:
            name, scale, seed = args.experiment, args.scale, args.seed
            out = args.out or Path("runs") / f"{name}-{scale}"
            opts = _parse_options(args.opt)
            if args.method:
                opts["method"] = args.method
        results = experiments.run_experiment(name, scale=scale, seed=seed, out=out, options=opts)
    except RelrepsError as e:
        print(f"relreps: error: {e}", file=sys.stderr)
        return 2
    for title, table in results.tables.items():
        print(f"\n## {title}\n\n{table}")
    if results.summary:
        print("\nSummary:")
        for k, v in results.summary.items():
            print(f"  {k}: {v}")
    n_fig = len(results.figures)
    print(f"\nWrote {out}/results.md, results.json, meta.json and {n_fig} figure(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
