"""`relreps run graphs --scale smoke` end to end on the synthetic graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch_geometric")

from relreps.experiments import available, run_experiment  # noqa: E402


def test_graphs_is_discoverable():
    assert "graphs" in available()


@pytest.mark.slow
def test_graphs_smoke_run(tmp_path):
    res = run_experiment("graphs", scale="smoke", out=tmp_path)
    for f in ("results.json", "results.md", "meta.json", *res.figures):
        assert (tmp_path / f).is_file(), f
    assert {"graphs_stitching.png", "graphs_anchor_counts.png",
            "graphs_similarity_scatter.png", "graphs_similarity_curves.png"} <= set(res.figures)
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    parts = {r["part"] for r in rows}
    assert parts == {"classification", "stitching", "anchors", "sweep", "correlation"}

    cls = [r for r in rows if r["part"] == "classification"]
    assert len(cls) == 2 * 3  # absolute + relative, 3 seeds
    acc = {m: np.mean([r["test_acc"] for r in cls if r["mode"] == m])
           for m in ("absolute", "relative")}
    assert acc["absolute"] > 0.6 and acc["relative"] > 0.6  # 5 classes: chance 0.2

    st = [r for r in rows if r["part"] == "stitching"]
    mean = {(m, s): np.mean([r["test_acc"] for r in st if r["mode"] == m and r["stitched"] == s])
            for m in ("absolute", "relative") for s in (False, True)}
    assert mean[("relative", True)] > mean[("absolute", True)] + 0.2

    anc = [r for r in rows if r["part"] == "anchors" and r["method"] != "absolute"]
    assert {r["method"] for r in anc} == {"uniform", "kmeans", "farthest_point"}
    for r in anc:
        assert 0 <= r["test_acc"] <= 1 and r["rank"] <= min(r["n_anchors"], r["latent_dim"])
    one = np.mean([r["test_acc"] for r in anc if r["n_anchors"] == 1])
    most = np.mean([r["test_acc"] for r in anc if r["n_anchors"] == max(a["n_anchors"]
                                                                         for a in anc)])
    assert most > one + 0.1  # more anchors help

    sweep = [r for r in rows if r["part"] == "sweep"]
    assert len({r["model"] for r in sweep}) == 10
    corr = {r["measure"]: r for r in rows if r["part"] == "correlation" and r["scope"] == "all"}
    rel, ab = corr["relative: mean cosine"], corr["absolute: mean cosine"]
    assert rel["n_points"] == len(sweep)
    assert rel["pearson"] > 0.6 and rel["pearson"] > ab["pearson"] + 0.3
    assert rel["pearson_boot_lo"] <= rel["pearson"] <= rel["pearson_boot_hi"]
    md = (tmp_path / "results.md").read_text()
    assert "Similarity to the reference" in md and "Stitching" in md
