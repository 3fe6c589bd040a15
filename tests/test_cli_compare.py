"""`relreps compare` on files: formats, run folders, figures, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from relreps.cli import main
from relreps.runs import MARKER

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 150, 8
    y = np.arange(n) % 3
    a = (rng.normal(size=(3, d))[y] * 3 + rng.normal(size=(n, d))).astype(np.float32)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = (a @ q).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "b.npz", emb=b, other=b[:3])
    np.savetxt(tmp_path / "y.txt", y, fmt="%d")
    return tmp_path


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("relreps: error: "), err
    return err[0]


def test_compare_two_files(files, capsys):
    out = files / "run"
    assert main(["compare", str(files / "a.npy"), f"{files / 'b.npz'}:emb", "--k", "5",
                 "--anchors", "30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a vs b:emb" in printed and f"Wrote {out}/results.md" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "meta.json", "results.json", "results.md", "neighbourhoods.png",
         "spaces_2d.png"])
    s = json.loads((out / "results.json").read_text())["summary"]
    assert s["relative_mrr"] > 0.95 and s["absolute_mrr"] < 0.2 and s["n_anchors"] == 30
    assert s["k"] == 5 and s["center"] in ("none", "anchors")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["spaces"]["a"]["shape"] == [150, 8] and meta["spaces"]["b:emb"]["key"] == "emb"
    assert meta["settings"]["sampler"] == "uniform"
    # the same command again: refused, the first run untouched; --force replaces it
    assert main(["compare", str(files / "a.npy"), f"{files / 'b.npz'}:emb", "--out",
                 str(out)]) == 2
    assert "--force" in _one_error_line(capsys)
    assert main(["compare", str(files / "a.npy"), f"{files / 'b.npz'}:emb", "--k", "3",
                 "--anchors", "30", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "results.json").read_text())["summary"]["k"] == 3


def test_compare_with_labels_and_anchor_index(files, capsys, monkeypatch):
    from relreps.anchors import AnchorSet

    AnchorSet.from_indices(np.arange(0, 150, 5), spaces=("a", "b")).save(files / "anchors.json")
    monkeypatch.chdir(files)
    assert main(["compare", "a.npy", "b.npz:emb", "--labels", "y.txt", "--anchor-index",
                 "anchors.json", "--k", "5", "--names", "A,B"]) == 0
    out = files / "runs" / "compare"  # the default run folder
    assert (out / "stitching.png").exists()
    data = json.loads((out / "results.json").read_text())
    s = data["summary"]
    assert (s["source"], s["target"], s["n_anchors"]) == ("A", "B", 30)
    assert s["relative_stitched_accuracy"] > 0.9 and s["translation_method"]
    assert data["settings"]["sampler"] == "index"
    printed = capsys.readouterr().out
    assert "relative_stitched_accuracy" in printed


def test_compare_bad_input_is_one_line_and_leaves_nothing(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    np.save("short.npy", np.zeros((149, 8), np.float32))
    nan = np.load("a.npy")
    nan[[3, 9]] = np.nan
    np.save("nan.npy", nan)
    np.savetxt("y_short.txt", np.zeros(10), fmt="%d")
    Path("blocker").write_text("x")
    (files / "weird.h5").write_bytes(b"x")
    cases = [
        (["a.npy", "short.npy"], "row counts differ"),
        (["a.npy", "nan.npy"], "NaN or inf values (rows 3, 9)"),
        (["a.npy", "weird.h5"], "unknown array format '.h5'"),
        (["a.npy", "b.npz:nokey"], "no key 'nokey'; available: emb, other"),
        (["a.npy", "b.npz"], "several keys"),
        (["a.npy", "b.npz:emb", "--anchors", "1"], "at least 2 anchors"),
        (["a.npy", "b.npz:emb", "--anchors", "1000"], "only 150 items"),
        (["a.npy", "b.npz:emb", "--labels", "y_short.txt"], "10 labels for 150"),
        (["a.npy", "b.npz:emb", "--out", "blocker/run"], "not writable"),
        (["a.npy", "b.npz:emb", "--out", ""], "--out is empty"),
        (["a.npy", "b.npz:emb", "--k", "0"], "k must be >= 1"),
        (["a.npy", "b.npz:emb", "--names", "x"], "--names needs 2"),
        (["a.npy", "b.npz:emb", "--similarity", "nope"], "nope"),
        (["a.npy", "b.npz:emb", "--workers", "0"], "--workers must be >= 1"),
        (["a.npy", "b.npz:emb", "--anchors", "5", "--anchor-index", "x.npy"],
         "not allowed with argument"),
        (["a.npy"], "at least two"),
        (["a.npy", "missing.npy"], "file not found: missing.npy"),
    ]
    for args, expected in cases:
        assert main(["compare", *args]) == 2, args
        line = _one_error_line(capsys)
        assert expected in line, (args, line)
    assert not Path("runs").exists() or list(Path("runs").iterdir()) == []


@pytest.mark.slow
def test_compare_on_a_local_dask_cluster(files, capsys):
    out = files / "dist"
    assert main(["compare", str(files / "a.npy"), f"{files / 'b.npz'}:emb", "--k", "5",
                 "--anchors", "20", "--workers", "1", "--out", str(out)]) == 0
    s = json.loads((out / "results.json").read_text())["summary"]
    assert s["relative_mrr"] > 0.95
    assert json.loads((out / "meta.json").read_text())["workers"] == 1
