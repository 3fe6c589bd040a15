"""scripts/select_compare_defaults.py: compare's defaults chosen on validation rows only.

The smoke run uses two synthetic spaces related by a strongly anisotropic linear map: whitened
cosine is (nearly) invariant to such a map and plain cosine is not, so validation must pick a
whitened candidate; compare's test rows must never reach the selection.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from relreps.workflow.compare import prepare_comparison
from script_loader import loaded_script


@pytest.fixture(scope="module")
def sel():
    with loaded_script("select_compare_defaults") as mod:
        yield mod


def _pair(n: int = 900, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.0, (3, d))
    y = rng.integers(0, 3, n)
    a = centers[y] + rng.normal(0, 0.9, (n, d))
    # B (width d + 2): A plus two faint extra features, scaled by 1 ... 50, then rotated
    ext = np.hstack([a, rng.normal(0, 0.05, (n, 2))])
    q, _ = np.linalg.qr(rng.normal(size=(d + 2, d + 2)))
    b = ext * np.logspace(0, 1.7, d + 2) @ q
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, y


def test_the_training_pool_is_everything_but_compares_test_rows(sel):
    spaces, y = _pair(300)
    for seed in (0, 1):
        pool = sel.training_pool(spaces, y, seed)
        test = prepare_comparison(spaces, y, seed=seed).test
        assert np.intersect1d(pool, test).size == 0
        assert np.union1d(pool, test).size == len(y)


def test_compare_never_sees_a_test_row(sel, monkeypatch):
    spaces, y = _pair(300)
    seen = []
    real = sel.compare_spaces

    def spy(sub, labels, **kw):
        seen.append(np.asarray(sub["a"]))
        return real(sub, labels, **kw)

    monkeypatch.setattr(sel, "compare_spaces", spy)
    cands = (sel.Candidate("cosine", "anchors", 20),)
    rows = sel.validation_runs(spaces, y, [0], cands, log=lambda m: None)
    test = prepare_comparison(spaces, y, seed=0).test
    got = {tuple(r) for r in seen[0]}
    assert not any(tuple(spaces["a"][i]) in got for i in test)
    assert len(got) == len(y) - len(test)
    assert len(rows) == 2 and {(r["source"], r["target"]) for r in rows} == {("a", "b"),
                                                                              ("b", "a")}
    # compare split the pool into fit / validation rows itself
    assert rows[0]["n_fit"] + rows[0]["n_eval"] == len(y) - len(test)


def test_the_rule_takes_the_best_mean_ratio_and_breaks_ties_by_accuracy(sel):
    s = {"x": {"mean_ratio": 0.90, "mean_stitched": 0.70},
         "y": {"mean_ratio": 0.9005, "mean_stitched": 0.60},
         "z": {"mean_ratio": 0.80, "mean_stitched": 0.95}}
    assert sel.choose(s) == "x"
    s["y"]["mean_ratio"] = 0.95
    assert sel.choose(s) == "y"
    joint = sel.choose_jointly({"d1": {"p": {"mean_ratio": 1.0, "mean_stitched": 0.5},
                                       "q": {"mean_ratio": 0.7, "mean_stitched": 0.5}},
                                "d2": {"p": {"mean_ratio": 0.6, "mean_stitched": 0.5},
                                       "q": {"mean_ratio": 0.85, "mean_stitched": 0.5}}})
    assert joint == "p"  # means 0.80 vs 0.775, though q wins on d2


def test_smoke_run_picks_whitened_cosine_for_an_anisotropic_linear_map(sel, tmp_path):
    spaces, y = _pair()
    np.save(tmp_path / "a.npy", spaces["a"])
    np.save(tmp_path / "b.npy", spaces["b"])
    (tmp_path / "y.txt").write_text("".join(f"{v}\n" for v in y))
    out = tmp_path / "out"
    assert sel.main(["--pair", "toy", f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.npy'}",
                     str(tmp_path / "y.txt"), "--seeds", "0", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    summ = res["summary"]["toy"]
    assert set(summ) == {c.label for c in sel.CANDIDATES}
    assert len(res["rows"]["toy"]) == 2 * len(sel.CANDIDATES)
    assert res["chosen"]["toy"].startswith("whitened_cosine/")
    best = summ[res["chosen"]["toy"]]
    assert best["mean_ratio"] > 0.95
    assert best["mean_ratio"] > summ["cosine/none/300"]["mean_ratio"] + 0.05
    assert "| toy | **whitened_cosine/" in (out / "results.md").read_text()
    # a rerun resumes from the saved cells (nothing recomputed) and gives the same choice
    cells = (out / "cells.jsonl").read_text()
    args = ["--pair", "toy", f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.npy'}",
            str(tmp_path / "y.txt"), "--seeds", "0", "--out", str(out)]
    assert sel.main([*args, "--cached-only"]) == 0
    assert (out / "cells.jsonl").read_text() == cells
    assert json.loads((out / "results.json").read_text())["chosen"] == res["chosen"]
    # --test: the chosen candidate the ordinary way (all items, compare's test rows)
    assert sel.main([*args, "--test", res["chosen"]["toy"]]) == 0
    test = json.loads((out / "test.json").read_text())
    n_test = len(prepare_comparison(spaces, y, seed=0).test)
    assert all(r["n_eval"] == n_test for r in test["rows"]["toy"])
    assert test["summary"]["toy"][res["chosen"]["toy"]]["mean_ratio"] > 0.9
