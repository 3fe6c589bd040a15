"""Run folders (relreps.runs): fresh, never silently overwritten, checked first, atomic."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from relreps.errors import RunFolderError
from relreps.runs import (
    INCOMPLETE,
    MARKER,
    check_cache_writable,
    default_run_path,
    is_run_folder,
    prepare_run,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _finish(run, files=("results.json", "fig.png")):
    with run:
        run.started()
        for f in files:
            (run.stage / f).write_text(f)
    return run.path


def test_default_names_never_collide(tmp_path):
    root = tmp_path / "runs"
    paths = [_finish(prepare_run(None, name="exp", root=root)) for _ in range(3)]
    assert [p.name for p in paths] == ["exp", "exp-2", "exp-3"]
    assert default_run_path("exp", root).name == "exp-4"
    for p in paths:
        assert (p / "results.json").read_text() == "results.json"
        assert is_run_folder(p) and not (p / INCOMPLETE).exists()
        assert json.loads((p / MARKER).read_text())["status"] == "complete"
    # no staging folders left behind
    assert sorted(p.name for p in root.iterdir()) == ["exp", "exp-2", "exp-3"]


def test_explicit_out_rules(tmp_path):
    new = tmp_path / "a" / "b"
    assert _finish(prepare_run(new, name="x")) == new
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _finish(prepare_run(empty, name="x")) == empty
    with pytest.raises(RunFolderError, match="not empty .*another relreps run.*--force"):
        prepare_run(new, name="x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="other files"):
        prepare_run(other, name="x")
    with pytest.raises(RunFolderError, match="not a relreps run folder"):
        prepare_run(other, name="x", force=True)
    assert (other / "thesis.tex").read_text() == "precious"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        prepare_run(afile, name="x")


@pytest.mark.parametrize("out", ["", "   "])
def test_empty_out_is_refused(out):
    with pytest.raises(RunFolderError, match="--out is empty"):
        prepare_run(out, name="x")


def test_current_folder_and_its_parents_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(work)):
        with pytest.raises(RunFolderError, match="current folder"):
            prepare_run(out, name="x", force=True)


def test_force_replaces_a_run_as_a_whole(tmp_path):
    out = tmp_path / "run"
    _finish(prepare_run(out, name="x"), files=("results.json", "old_figure.png"))
    _finish(prepare_run(out, name="x", force=True), files=("results.json", "new_figure.png"))
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new_figure.png", "results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_legacy_run_folders_are_recognised(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text("{}")
    (old / "meta.json").write_text(json.dumps({"versions": {"numpy": "1"}}))
    assert is_run_folder(old)
    (old / "meta.json").write_text("[]")
    assert not is_run_folder(old)
    assert not is_run_folder(tmp_path / "missing")


def test_failure_before_the_computation_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    run = prepare_run(out, name="x")
    assert (out / INCOMPLETE).exists()  # claimed at once, marked incomplete
    with pytest.raises(ValueError), run:
        raise ValueError("bad input")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ValueError), prepare_run(kept, name="x"):
        raise ValueError("bad input")
    assert kept.is_dir() and list(kept.iterdir()) == []  # the user's empty folder stays


def test_failure_during_the_computation_marks_the_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), prepare_run(out, name="exp") as run:
        run.started()
        (run.stage / "figure.png").write_text("partial")
        raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, INCOMPLETE]
    assert "RuntimeError: boom" in (out / INCOMPLETE).read_text()
    assert json.loads((out / MARKER).read_text())["status"] == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # staging removed
    # an incomplete run may be replaced with --force
    _finish(prepare_run(out, name="exp", force=True))
    assert not (out / INCOMPLETE).exists()


def test_failed_replacement_keeps_the_old_run(tmp_path):
    out = tmp_path / "run"
    _finish(prepare_run(out, name="x"), files=("results.json",))
    with pytest.raises(RuntimeError), prepare_run(out, name="x", force=True) as run:
        run.started()
        (run.stage / "new.png").write_text("new")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "results.json"]
    assert json.loads((out / MARKER).read_text())["status"] == "complete"


def test_killed_run_leaves_a_folder_marked_incomplete(tmp_path):
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os
        from relreps.runs import prepare_run
        run = prepare_run({str(out)!r}, name="exp")
        run.started()
        (run.stage / "results.json").write_text("half")
        os._exit(9)
    """)
    env = dict(os.environ, PYTHONPATH=SRC)
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 9
    assert sorted(p.name for p in out.iterdir()) == [MARKER, INCOMPLETE]
    assert not (out / "results.json").exists()
    assert json.loads((out / MARKER).read_text())["status"] == "running"


def test_unwritable_places_are_refused_first(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="not writable"):
        prepare_run(blocker / "sub" / "run", name="x")
    with pytest.raises(RunFolderError, match="runs folder .* not writable"):
        prepare_run(None, name="x", root=blocker / "runs")
    monkeypatch.setenv("RELREPS_CACHE", str(blocker / "cache"))
    with pytest.raises(RunFolderError, match="RELREPS_CACHE .* not writable"):
        prepare_run(tmp_path / "ok", name="x", check_cache=True)
    assert not (tmp_path / "ok").exists()
    monkeypatch.setenv("RELREPS_CACHE", "")
    with pytest.raises(RunFolderError, match="RELREPS_CACHE is set but empty"):
        check_cache_writable()


def test_committed_files_share_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = _finish(prepare_run(tmp_path / "run", name="x"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
