"""The main job at smoke scale: the paper's claim on two seeds of a digits MLP."""

from __future__ import annotations

import json

from relreps.cli import main
from relreps.experiments import run_experiment


def test_demo_smoke_shows_the_claim(tmp_path):
    res = run_experiment("demo", scale="smoke", seed=0, out=tmp_path)
    s = res.summary
    # absolute spaces of two seeds disagree, relative spaces agree
    assert s["absolute_mrr"] < 0.1 < 0.4 < s["relative_mrr"]
    assert s["relative_mean_cosine"] > 0.9 > 0.5 > s["absolute_mean_cosine"]
    # a relative head stitches zero-shot; an absolute one does not
    assert s["relative_stitched_acc"] > 0.85
    assert s["absolute_stitched_acc"] < 0.5
    assert s["claim_holds"] is True
    # one shared 2-D basis: the seeds' absolute coordinates disagree, the relative ones agree
    abs_corr, rel_corr = s["absolute_axis_corr"], s["relative_axis_corr"]
    assert len(abs_corr) == len(rel_corr) == 2
    assert min(rel_corr) > 0.95
    assert min(abs_corr) < 0.5 and sum(abs_corr) < sum(rel_corr) - 0.5
    for f in ("results.json", "results.md", "meta.json", "latent_spaces.png", "stitching.png"):
        assert (tmp_path / f).stat().st_size > 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["scale"] == "smoke" and data["rows"]
    # the stitching table reports every ordered pair of seeds, not only a mean
    pairs = [r for r in data["rows"] if r["table"] == "stitching_pairs"]
    assert sorted((r["fit_space"], r["eval_space"]) for r in pairs) == [
        ("seed 0", "seed 0"), ("seed 0", "seed 1"), ("seed 1", "seed 0"), ("seed 1", "seed 1")]
    for r in pairs:
        assert r["absolute_accuracy_std"] is None  # a deterministic head: a single replicate
        assert (r["relative_accuracy_mean"] > 0.85) and (
            r["absolute_accuracy_mean"] > 0.85) is not r["stitched"]
    basis = {r["space"]: r for r in data["rows"] if r["table"] == "shared_basis"}
    assert [basis["relative"]["axis1_corr"], basis["relative"]["axis2_corr"]] == rel_corr
    md = (tmp_path / "results.md").read_text()
    assert "nan" not in md.lower()
    assert "| seed 0 | seed 1 (zero-shot) |" in md and "| seed 1 | seed 0 (zero-shot) |" in md
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["wall_time_s"] > 0 and "torch" in meta["versions"]


def test_demo_is_deterministic(tmp_path):
    a = run_experiment("demo", scale="smoke", seed=3, out=tmp_path / "a").summary
    b = run_experiment("demo", scale="smoke", seed=3, out=tmp_path / "b").summary
    assert a == b


def test_cli_run_unknown_experiment_is_a_clear_error(capsys):
    assert main(["run", "no-such-experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err
