"""The paper's experiments, one module each, discovered by name (see `base` for the contract).

Discovery reads each module's ``NAME``, ``DESCRIPTION`` and ``OPTIONS`` literals from its source
without importing it, so ``relreps list`` and ``relreps run EXP --help`` load neither torch nor
scikit-learn, and unknown options are refused before anything is computed.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from relreps.errors import OptionError, RelrepsError
from relreps.experiments.base import SCALES, Results, RunContext, seed_everything, write_results

__all__ = ["available", "get", "options", "check_options", "run_experiment", "RunContext",
           "Results", "SCALES"]

_SKIP = {"base"}


def _constants(path: Path) -> dict[str, Any]:
    """Module-level literals NAME, DESCRIPTION (strings) and OPTIONS (a dict of strings), read
    without importing the module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            target, value = node.target.id, node.value
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name)):
            target, value = node.targets[0].id, node.value
        else:
            continue
        if target in ("NAME", "DESCRIPTION"):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[target] = value.value
        elif target == "OPTIONS":
            try:
                opts = ast.literal_eval(value)
            except ValueError:
                raise RelrepsError(f"{path.name}: OPTIONS must be a literal dict of "
                                   "{'name': 'help'} strings") from None
            if not (isinstance(opts, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in opts.items())):
                raise RelrepsError(f"{path.name}: OPTIONS must map option names to help texts")
            out["OPTIONS"] = opts
    return out


def _modules() -> dict[str, tuple[str, dict[str, Any]]]:
    """Map experiment NAME -> (module name, its literals), without importing the modules."""
    out = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name in _SKIP or info.name.startswith("_") or info.ispkg:
            continue
        consts = _constants(Path(__path__[0]) / f"{info.name}.py")
        if "NAME" in consts:
            out[consts["NAME"]] = (f"{__name__}.{info.name}", consts)
    return out


def _entry(name: str) -> tuple[str, dict[str, Any]]:
    mods = _modules()
    if name not in mods:
        raise OptionError(f"unknown experiment {name!r}; available: {', '.join(sorted(mods))}")
    return mods[name]


def available() -> dict[str, str]:
    """NAME -> one-line description of every experiment."""
    return {name: c.get("DESCRIPTION", "") for name, (_, c) in sorted(_modules().items())}


def options(name: str) -> dict[str, str]:
    """The options experiment `name` reads (``--opt KEY=VALUE``): name -> help (defaults)."""
    return dict(_entry(name)[1].get("OPTIONS", {}))


def check_options(name: str, opts: dict[str, Any]) -> None:
    """Refuse options that experiment `name` does not declare (OptionError listing the known)."""
    known = options(name)
    unknown = [k for k in opts if k not in known]
    if not unknown:
        return
    if "method" in unknown and "method" not in known:
        listed = f"its options: {', '.join(known)}" if known else "it takes no options"
        raise OptionError(f"experiment {name!r} does not take --method ({listed})")
    listed = f"known: {', '.join(known)}" if known else "it takes no options"
    raise OptionError(f"unknown option {unknown[0]!r} for experiment {name!r} ({listed}); see "
                      f"relreps run {name} --help")


def get(name: str) -> ModuleType:
    """The module of experiment `name` (imported now)."""
    return importlib.import_module(_entry(name)[0])


def run_experiment(name: str, scale: str = "full", seed: int = 0,
                   out: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
                   *, force: bool = False) -> Results:
    """Run experiment `name`; write results.json, results.md, figures and meta.json.

    The output folder follows :mod:`relreps.runs`: `out` None picks a fresh ``runs/NAME-SCALE``
    (or ``-2``, ...); a non-empty `out` is refused unless it is a relreps run and `force` is set.
    The name, scale, seed, options and folders are all checked before the experiment starts;
    its files appear in `out` only when it has finished. The folder is ``results.out``.
    """
    from relreps.runs import prepare_run
    from relreps.validation import check_int

    if not isinstance(scale, str) or scale not in SCALES:
        raise OptionError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    seed = check_int(seed, "seed", min_value=0)
    opts = dict(options or {})
    check_options(name, opts)
    run = prepare_run(out, name=f"{name}-{scale}", force=force, check_cache=True)
    with run:
        module = get(name)
        run.started()
        ctx = RunContext(scale=scale, seed=seed, out=run.stage, options=opts)
        seed_everything(ctx.seed)
        t0 = time.perf_counter()
        results = module.run(ctx)
        write_results(ctx, name, results, time.perf_counter() - t0)
    results.out = run.path
    return results
