"""The paper's experiments, one module each, discovered by name (see `base` for the contract)."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from relreps.errors import RelrepsError
from relreps.experiments.base import SCALES, Results, RunContext, seed_everything, write_results

__all__ = ["available", "get", "run_experiment", "RunContext", "Results"]

_SKIP = {"base"}


def _constants(path: Path) -> dict[str, str]:
    """Module-level string constants (NAME, DESCRIPTION) read without importing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            out[node.targets[0].id] = node.value.value
    return out


def _modules() -> dict[str, tuple[str, str]]:
    """Map experiment NAME -> (module name, description), without importing the modules."""
    out = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _SKIP or info.name.startswith("_") or info.ispkg:
            continue
        consts = _constants(Path(__path__[0]) / f"{info.name}.py")
        if "NAME" in consts:
            out[consts["NAME"]] = (f"{__name__}.{info.name}", consts.get("DESCRIPTION", ""))
    return out


def available() -> dict[str, str]:
    """NAME -> one-line description of every experiment."""
    return {name: desc for name, (_, desc) in sorted(_modules().items())}


def get(name: str) -> ModuleType:
    mods = _modules()
    if name not in mods:
        raise RelrepsError(f"unknown experiment {name!r}; available: {', '.join(sorted(mods))}")
    return importlib.import_module(mods[name][0])


def run_experiment(name: str, scale: str = "smoke", seed: int = 0, out: str | Path = "runs",
                   options: dict[str, Any] | None = None) -> Results:
    """Run experiment `name` and write results.json, results.md, figures and meta.json to `out`."""
    if scale not in SCALES:
        raise RelrepsError(f"scale must be one of {SCALES}, got {scale!r}")
    module = get(name)
    ctx = RunContext(scale=scale, seed=int(seed), out=Path(out), options=dict(options or {}))
    ctx.out.mkdir(parents=True, exist_ok=True)
    seed_everything(ctx.seed)
    t0 = time.perf_counter()
    results = module.run(ctx)
    write_results(ctx, name, results, time.perf_counter() - t0)
    return results
