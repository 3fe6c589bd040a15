"""The experiment runner contract: discovery, RunContext, results files, and the CLI."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import relreps
from relreps import cli, experiments
from relreps.cache import cache_dir
from relreps.errors import OptionError, RelrepsError, RunFolderError
from relreps.experiments import Results, RunContext
from relreps.experiments.base import write_results
from relreps.runs import INCOMPLETE, MARKER

SRC = str(Path(__file__).resolve().parents[1] / "src")

DUMMY = '''
"""A dummy experiment for the runner tests."""
import numpy as np

from relreps.experiments import Results

NAME = "dummy-exp"
DESCRIPTION = "A dummy experiment that records its context."
OPTIONS = {"k": "a number (2)", "name": "a name", "method": "a method", "fail": "1 raises",
           "figure": "figure name (line)"}


def run(ctx):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    open(ctx.out.parent / "dummy-ran", "a").write("x")
    draw = float(np.random.rand())  # the runner seeds the global generators
    fig, ax = plt.subplots()
    ax.plot([0, 1], [draw, draw])
    fig.savefig(ctx.figure_path(ctx.options.get("figure", "line")))
    plt.close(fig)
    if ctx.options.get("fail"):
        raise RuntimeError("experiment failed half-way")
    rows = [{"seed": s, "scale": ctx.scale, "value": np.float64(s + draw)} for s in ctx.seeds(3)]
    return Results(rows=rows, tables={"Values": "| a |\\n|---|\\n| 1 |"},
                   figures=["line.png"], summary={"draw": draw, "options": ctx.options},
                   notes=["a note"])
'''


def _strict_json(path: Path):
    """Parse JSON rejecting the non-standard NaN/Infinity tokens."""
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(path.read_text(), parse_constant=reject)


@pytest.fixture()
def dummy_experiments(tmp_path, monkeypatch):
    """Point experiment discovery at a folder holding only the dummy experiment."""
    pkg = tmp_path / "exp_pkg"
    pkg.mkdir()
    (pkg / "dummy.py").write_text(textwrap.dedent(DUMMY))
    (pkg / "_private.py").write_text('NAME = "hidden"\n')
    (pkg / "bare.py").write_text('NAME = "bare-exp"\nDESCRIPTION = "no OPTIONS"\n'
                                 'def run(ctx):\n    raise AssertionError("must not run")\n')
    (pkg / "helper.py").write_text('"""no NAME: not an experiment"""\nX = 1\n')
    monkeypatch.setattr(experiments, "__path__", [str(pkg)])
    monkeypatch.delitem(sys.modules, "relreps.experiments.dummy", raising=False)
    yield pkg
    sys.modules.pop("relreps.experiments.dummy", None)


# --------------------------------------------------------------------------- RunContext

def test_run_context(tmp_path):
    ctx = RunContext(scale="smoke", seed=7, out=tmp_path / "out", options={"k": 3})
    assert ctx.smoke and not RunContext("full", 0, tmp_path).smoke
    assert ctx.seeds(3) == [7, 8, 9] and ctx.seeds(0) == []
    p = ctx.figure_path("fig")
    assert p == tmp_path / "out" / "fig.png" and p.parent.is_dir()
    assert ctx.figure_path("x.png").name == "x.png"
    assert ctx.cache == cache_dir()


def test_run_context_log_goes_to_stderr(tmp_path, capsys):
    RunContext("smoke", 0, tmp_path).log("hello")
    captured = capsys.readouterr()
    assert captured.err == "hello\n" and captured.out == ""


# --------------------------------------------------------------------------- write_results

def test_write_results_files(tmp_path):
    ctx = RunContext(scale="full", seed=3, out=tmp_path / "run", options={"method": "x"})
    rows = [{"seed": np.int64(3), "acc": np.float32(0.5), "ok": np.bool_(True),
             "vec": np.arange(2), "path": Path("a/b")}]
    res = Results(rows=rows, tables={"Main": "| h |\n|---|\n| 1 |"}, figures=["f.png"],
                  summary={"acc": 0.5, "goal_met": True}, notes=["caveat one"])
    write_results(ctx, "my-exp", res, wall_time=1.234)
    data = _strict_json(ctx.out / "results.json")
    assert data["experiment"] == "my-exp" and data["scale"] == "full" and data["seed"] == 3
    assert data["summary"] == {"acc": 0.5, "goal_met": True}
    assert data["rows"] == [{"seed": 3, "acc": 0.5, "ok": True, "vec": [0, 1], "path": "a/b"}]
    md = (ctx.out / "results.md").read_text()
    assert md.startswith("# my-exp (full scale, seed 3)")
    for piece in ("## Main", "| h |", "## Summary", "- **acc**: 0.5", "## Notes",
                  "- caveat one", "![f.png](f.png)", "_Wall time: 1.2 s._"):
        assert piece in md, piece
    meta = _strict_json(ctx.out / "meta.json")
    assert meta["seed"] == 3 and meta["scale"] == "full" and meta["experiment"] == "my-exp"
    assert meta["options"] == {"method": "x"} and meta["wall_time_s"] == 1.234
    assert meta["figures"] == ["f.png"]
    assert meta["versions"]["numpy"] == np.__version__
    assert "torch" in meta["versions"] and "python" in meta["versions"]
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in ctx.out.iterdir()) == ["meta.json", "results.json",
                                                          "results.md"]


def test_write_results_keeps_json_standard_with_nan_and_inf(tmp_path):
    ctx = RunContext(scale="smoke", seed=0, out=tmp_path)
    res = Results(rows=[{"a": float("nan"), "b": np.float64("nan"), "c": np.float32("inf"),
                         "d": -math.inf, "e": 1.5}],
                  summary={"ratio": np.float64("nan")})
    write_results(ctx, "nan-exp", res, 0.0)
    data = _strict_json(tmp_path / "results.json")
    assert data["rows"] == [{"a": None, "b": None, "c": None, "d": None, "e": 1.5}]
    assert data["summary"] == {"ratio": None}


def test_write_results_minimal(tmp_path):
    ctx = RunContext(scale="smoke", seed=0, out=tmp_path / "new" / "dir")
    write_results(ctx, "empty", Results(), 0.0)
    md = (ctx.out / "results.md").read_text()
    assert "## Summary" not in md and "## Notes" not in md and "## Figures" not in md
    assert _strict_json(ctx.out / "results.json")["rows"] == []


# --------------------------------------------------------------------------- discovery

def test_available_lists_the_real_experiments_without_importing_them():
    found = experiments.available()
    assert isinstance(found, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in found.items())
    assert list(found) == sorted(found)
    for name in found:
        assert name not in ("base",)
    with pytest.raises(RelrepsError, match="unknown experiment 'no-such-experiment'"):
        experiments.get("no-such-experiment")
    with pytest.raises(RelrepsError, match="scale must be one of"):
        experiments.run_experiment(next(iter(found), "x"), scale="huge")
    with pytest.raises(RelrepsError, match="seed must be >= 0"):
        experiments.run_experiment(next(iter(found), "x"), seed=-1)


def test_discovery_reads_name_and_description(dummy_experiments):
    assert experiments.available() == {
        "bare-exp": "no OPTIONS", "dummy-exp": "A dummy experiment that records its context."}
    assert "relreps.experiments.dummy" not in sys.modules  # listed without importing
    module = experiments.get("dummy-exp")
    assert module.NAME == "dummy-exp" and callable(module.run)
    with pytest.raises(RelrepsError, match="available: bare-exp, dummy-exp"):
        experiments.get("hidden")
    assert experiments.options("dummy-exp")["k"] == "a number (2)"
    assert experiments.options("bare-exp") == {}


def test_run_experiment_writes_everything_and_is_seeded(dummy_experiments, tmp_path):
    out = tmp_path / "out"
    res = experiments.run_experiment("dummy-exp", scale="smoke", seed=5, out=out,
                                     options={"k": 2})
    assert isinstance(res, Results)
    for name in ("results.json", "results.md", "meta.json", "line.png"):
        assert (out / name).exists(), name
    data = _strict_json(out / "results.json")
    assert [r["seed"] for r in data["rows"]] == [5, 6, 7]
    assert data["summary"]["options"] == {"k": 2}
    assert 0.0 <= data["summary"]["draw"] < 1.0
    meta = _strict_json(out / "meta.json")
    assert meta["seed"] == 5 and meta["wall_time_s"] >= 0
    # The same seed gives the same draw; another seed another.
    again = experiments.run_experiment("dummy-exp", seed=5, out=tmp_path / "again")
    other = experiments.run_experiment("dummy-exp", seed=6, out=tmp_path / "other")
    assert again.summary["draw"] == res.summary["draw"] != other.summary["draw"]
    assert res.out == out and again.out == tmp_path / "again"


def test_default_output_folders_are_fresh(dummy_experiments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = experiments.run_experiment("dummy-exp", scale="smoke")
    b = experiments.run_experiment("dummy-exp", scale="smoke")
    assert (a.out, b.out) == (Path("runs/dummy-exp-smoke"), Path("runs/dummy-exp-smoke-2"))
    assert (b.out / "results.json").exists()


def test_unknown_options_are_refused_before_anything_runs(dummy_experiments, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OptionError, match="unknown option 'kk' .*known: k, name, method, fail"):
        experiments.run_experiment("dummy-exp", out=out, options={"kk": 1})
    with pytest.raises(OptionError, match="does not take --method .*it takes no options"):
        experiments.run_experiment("bare-exp", out=out, options={"method": "m"})
    with pytest.raises(OptionError, match="unknown option 'x' .*it takes no options"):
        experiments.run_experiment("bare-exp", out=out, options={"x": 1})
    assert not out.exists() and not (tmp_path / "dummy-ran").exists()


def test_run_folder_rules_for_experiments(dummy_experiments, tmp_path):
    out = tmp_path / "run"
    experiments.run_experiment("dummy-exp", seed=0, out=out, options={"figure": "seed0"})
    with pytest.raises(RunFolderError, match="not empty"):
        experiments.run_experiment("dummy-exp", seed=5, out=out)
    # a run that fails half-way leaves the previous results untouched and no new figure
    with pytest.raises(RuntimeError, match="half-way"):
        experiments.run_experiment("dummy-exp", seed=5, out=out, force=True,
                                   options={"fail": 1, "figure": "seed5"})
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "meta.json", "results.json",
                                                     "results.md", "seed0.png"]
    assert _strict_json(out / "meta.json")["seed"] == 0
    # --force replaces the whole run: no old figure beside the new results
    experiments.run_experiment("dummy-exp", seed=5, out=out, force=True,
                               options={"figure": "seed5"})
    assert "seed0.png" not in {p.name for p in out.iterdir()}
    assert _strict_json(out / "meta.json")["seed"] == 5
    # a fresh folder whose run fails is clearly marked incomplete
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        experiments.run_experiment("dummy-exp", out=fresh, options={"fail": 1})
    assert sorted(p.name for p in fresh.iterdir()) == [MARKER, INCOMPLETE]


def test_unwritable_cache_fails_before_the_run(dummy_experiments, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RELREPS_CACHE", str(blocker / "cache"))
    with pytest.raises(RunFolderError, match="RELREPS_CACHE"):
        experiments.run_experiment("dummy-exp", out=tmp_path / "out")
    assert not (tmp_path / "dummy-ran").exists()


# --------------------------------------------------------------------------- OPTIONS literals

def _module_config_keys() -> dict[str, set[str]]:
    """The option keys each real experiment's code accepts (from its configuration tables)."""
    from relreps.experiments import compare, graphs, images, text, word_embeddings

    benches = ("digits", "ag_news", "trec", "images")
    return {
        "text": set(text.SIZES["full"]) | {"only_encode"},
        "images": set(images.CONFIGS["full"]) | {"parts"},
        "word-embeddings": set(word_embeddings.CONFIG["full"]) - {"train"}
        | set(word_embeddings.TRAIN_KEYS),
        "graphs": set(graphs._PLANS["full"]) | {"threads"},
        "compare": {"benchmarks", "seeds", "sweep", "sweep_spaces", "text_encoders",
                    "images_source"} | {f"{b}_anchors" for b in benches}
        | {f"{b}_C" for b in benches if b in compare._SETTINGS["full"]},
        "demo": set(),
    }


def test_every_experiment_declares_the_options_it_reads():
    declared = {name: set(experiments.options(name)) for name in experiments.available()}
    assert declared == _module_config_keys()
    for name in declared:  # a literal: readable without importing the module
        src = Path(experiments.__file__).parent
        mod = next(p for p in src.glob("*.py") if f'NAME = "{name}"' in p.read_text())
        tree = ast.parse(mod.read_text())
        node = next(n for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    and getattr(n, "target", getattr(n, "targets", [None])[0]).id == "OPTIONS")
        assert isinstance(ast.literal_eval(node.value), dict)


# --------------------------------------------------------------------------- CLI

def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.available():
        assert name in out


def test_cli_list_and_run_dummy(dummy_experiments, tmp_path, capsys):
    assert cli.main(["list"]) == 0
    assert "dummy-exp" in capsys.readouterr().out
    out = tmp_path / "cli"
    code = cli.main(["run", "dummy-exp", "--seed", "2", "--out", str(out), "--opt", "k=3",
                     "--opt", "name=abc", "--method", "relative"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "## Values" in printed and f"Wrote {out}" in printed and "1 figure" in printed
    meta = _strict_json(out / "meta.json")
    assert meta["options"] == {"k": 3, "name": "abc", "method": "relative"}
    assert meta["seed"] == 2 and meta["scale"] == "full"  # run and demo default to full


def test_cli_run_help_lists_the_options(dummy_experiments, capsys):
    assert cli.main(["run", "dummy-exp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "options of dummy-exp" in out and "a number (2)" in out and "--scale" in out
    assert "dummy-exp" in out and "bare-exp" in out  # the experiments are listed
    assert cli.main(["run", "-h"]) == 0
    assert "experiments:" in capsys.readouterr().out
    assert cli.main(["run", "bare-exp", "-h"]) == 0
    assert "(none: its sizes are fixed per scale)" in capsys.readouterr().out
    assert cli.main(["run", "nope", "--help"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_cli_defaults_and_help_texts():
    parser = cli.build_parser()
    for cmd in ("run", "demo"):
        sub = parser.parse_args([cmd, "x"] if cmd == "run" else [cmd])
        assert sub.scale == "full" and sub.seed == 0
    text = cli.build_parser().format_help()
    for cmd in ("compare", "stitch", "embed", "demo", "list", "run"):
        assert cmd in text
    helps = {a.dest: a.help for a in cli.build_parser().commands["run"]._actions}
    assert "30 min" in helps["scale"] and "seed" in helps["seed"]


def test_cli_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"relreps {relreps.__version__}"


def _run_cli(args, env=None):
    code = ("import sys; from relreps.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'sklearn') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    full_env = dict(os.environ, PYTHONPATH=SRC, **(env or {}))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "text", "--help"],
                                  ["run", "--help"], ["--version"], ["compare", "--help"]])
def test_quick_commands_import_neither_torch_nor_sklearn(args):
    r = _run_cli(args)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr, r.stderr


def test_cli_errors_are_one_line(tmp_path):
    cases = [(["run", "demo", "--opt", "epochs=3", "--out", str(tmp_path / "o")],
              "unknown option 'epochs'"),
             (["run", "demo", "--method", "x", "--out", str(tmp_path / "o")], "--method"),
             (["run", "demo", "--out", ""], "--out is empty"),
             (["run", "demo", "--scale", "huge"], "invalid choice"),
             (["run", "demo", "--seed", "1.5"], "invalid int value"),
             ([], "COMMAND"),
             (["compare", "missing.npy", "other.npy"], "file not found: missing.npy")]
    for args, expected in cases:
        r = _run_cli(args)
        lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("HEAVY")]
        assert r.returncode == 2, (args, r.stderr)
        assert len(lines) == 1 and lines[0].startswith("relreps: error: "), (args, lines)
        assert expected in lines[0], (args, lines)


def test_unexpected_errors_exit_1_with_the_traceback_only_on_request(dummy_experiments,
                                                                      tmp_path, capsys,
                                                                      monkeypatch):
    out = tmp_path / "o"
    assert cli.main(["run", "dummy-exp", "--opt", "fail=1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected RuntimeError: experiment failed half-way" in err[0]
    assert "RELREPS_DEBUG=1" in err[0]
    monkeypatch.setenv("RELREPS_DEBUG", "1")
    assert cli.main(["run", "dummy-exp", "--opt", "fail=1", "--out", str(out),
                     "--force"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cli_errors(dummy_experiments, tmp_path, capsys):
    assert cli.main(["run", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert cli.main(["run", "dummy-exp", "--opt", "novalue", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["run", "dummy-exp", "--scale", "huge"]) == 2
    assert capsys.readouterr().err.startswith("relreps: error: argument --scale")
    assert cli.main(["run"]) == 2
    assert "EXPERIMENT is required" in capsys.readouterr().err


def test_package_exports():
    for name in ("relative_projection", "RelativeProjection", "similarity", "anchors",
                 "metrics", "RelrepsError", "AnchorError", "MissingDependencyError"):
        assert hasattr(relreps, name), name
    assert issubclass(relreps.AnchorError, relreps.RelrepsError)
    assert issubclass(relreps.RelrepsError, ValueError)


# --------------------------------------------------------------------------- report tables

def test_aggregate_mean_std_over_seeds():
    from relreps.report import aggregate

    rows = [{"m": "rel", "s": s, "acc": v} for s, v in enumerate([0.8, 0.9, 1.0])]
    rows += [{"m": "abs", "s": 0, "acc": np.float32(0.25)}]
    out = aggregate(rows, by=["m"], value="acc")
    assert [r["m"] for r in out] == ["rel", "abs"]  # first-seen order
    assert out[0]["mean"] == pytest.approx(0.9) and out[0]["n"] == 3
    assert out[0]["std"] == pytest.approx(np.std([0.8, 0.9, 1.0]))
    assert out[1] == {"m": "abs", "mean": 0.25, "std": 0.0, "n": 1}


def test_pivot_table_and_formatting():
    from relreps.report import fmt_mean_std, markdown_table, pivot_table

    rows = [{"enc": e, "head": h, "seed": s, "acc": a}
            for e, h, s, a in [("A", "x", 0, 0.5), ("A", "x", 1, 0.7), ("A", "y", 0, 0.9),
                               ("B", "y", 0, 0.1)]]
    md = pivot_table(rows, index="enc", columns="head", value="acc", digits=1, scale=100)
    lines = md.splitlines()
    assert lines[0] == "| enc \\ head | x | y |"
    assert lines[2] == f"| A | {fmt_mean_std(0.6, np.std([0.5, 0.7]), 1, 100)} | 90.0 |"
    assert lines[3] == "| B | - | 10.0 |"  # missing cell; one value shows no ± std
    assert fmt_mean_std(0.123456, 0.01) == "0.12 ± 0.01"
    assert fmt_mean_std(float("nan"), 0.1) == "-"
    assert fmt_mean_std(None) == "-"
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
