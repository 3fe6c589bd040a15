"""The neighbour benchmarks and their report run end to end at smoke size (values, not speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_benchmarks_write_results_and_the_report_fills_the_doc(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_metrics
    import bench_neighbors_ann
    import scaling_report

    exact = bench_metrics.main(["--n", "700", "1500", "--max-queries", "512", "--n-naive", "300",
                                "--d", "16", "--out", str(tmp_path)])
    assert exact["same_values_as_naive"] is True
    small, large = exact["rows"]
    assert not small["extrapolated"] or small["queries_timed"] == 512
    assert large["extrapolated"] and large["queries_timed"] == 512
    assert large["metrics_s_all_queries"] == pytest.approx(large["metrics_s"] * 1500 / 512)
    approx = bench_neighbors_ann.main(["--n", "1200", "--d", "16", "--recall-queries", "200",
                                       "--exact-queries", "300", "--out", str(tmp_path)])
    assert {r["method"] for r in approx["rows"]} == {"hnsw", "ivf"}
    assert all(0.5 <= r["recall_at_k"] <= 1 for r in approx["rows"])
    assert json.loads((tmp_path / "neighbors_approx.json").read_text()) == approx
    alone = bench_neighbors_ann.main(["--exact-only", "--n", "1200", "--d", "16",
                                      "--exact-queries", "300", "--out", str(tmp_path)])
    (row,) = alone["rows"]
    assert row["exact_extrapolated"] and row["exact_queries_timed"] == 300
    same = [r for r in approx["rows"] if r["method"] == "hnsw"][0]  # same data and queries
    assert row["exact_jaccard_on_timed_queries"] == same["exact_jaccard_on_timed_queries"]

    doc = tmp_path / "docs" / "scaling.md"
    doc.parent.mkdir()
    doc.write_text("# t\n\n<!-- results:begin -->\nold\n<!-- results:end -->\ntail\n")
    scaling_report.main(["--results", str(tmp_path), "--doc", str(doc)])
    text = doc.read_text()
    assert "old" not in text and text.endswith("<!-- results:end -->\ntail\n")
    assert "| 1,500 | 16 | 512 (subset) |" in text and "| 1,200 | hnsw |" in text
    assert (doc.parent / "assets" / "neighbors_time_vs_n.png").stat().st_size > 1000
