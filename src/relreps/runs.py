"""Run folders: where a command writes its results, so that no run overwrites or mislabels another.

A *run folder* holds one run's ``results.json``, ``results.md``, ``meta.json`` and figures. The
promises, for experiments (``relreps run``, ``relreps demo``) and ``relreps compare`` alike:

- **Fresh by default.** Without ``--out`` a run goes to ``runs/NAME``, or ``runs/NAME-2``,
  ``runs/NAME-3``, ... when that exists: default names never collide.
- **No silent overwrite.** An explicit ``--out`` must not exist, or be an empty folder. A
  non-empty one is refused unless ``--force`` is given, and even then only when it is a relreps
  run folder (it holds the ``.relreps-run.json`` marker or an older run's ``meta.json`` and
  ``results.json``): ``--force`` replaces that run *as a whole* (no old figure survives beside new
  results). ``--out ''`` and the current directory (or one of its parents) are refused.
- **Checked first.** The folder's parent (and ``$RELREPS_CACHE`` where the command caches) must be
  writable; this is checked before any computation, so a wrong path costs seconds, not a run.
- **Atomic commit.** Files are written into a hidden staging folder beside the destination
  (``.NAME.partial-XXXX``) and renamed into place when the run succeeds. Until then the
  destination holds only a ``RUN_INCOMPLETE`` file (and a marker saying so), so a crashed or
  interrupted run leaves a folder clearly marked incomplete; a replaced run stays intact until
  the new one is complete.
- **Consistent permissions.** Every file of a committed run (results and figures alike) gets the
  permissions the user's umask gives new files (``0644`` under the usual ``022``), folders
  likewise.

Usage::

    run = prepare_run(out, name="compare", force=force)   # checks, claims the folder
    with run:                                             # abort on error, commit on success
        run.started()                                     # from here, failures mark incomplete
        ... write into run.stage ...
    print(run.path)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from relreps.cache import current_umask
from relreps.errors import RunFolderError

__all__ = ["MARKER", "INCOMPLETE", "RunFolder", "prepare_run", "is_run_folder",
           "check_writable_dir", "check_cache_writable", "default_run_path"]

#: Hidden file that identifies a relreps run folder (JSON: status, command, time).
MARKER = ".relreps-run.json"
#: Visible file that marks a run that has not (or not yet) finished.
INCOMPLETE = "RUN_INCOMPLETE"


def is_run_folder(path: str | os.PathLike) -> bool:
    """True for a folder written by relreps (marker file, or an older run's results+meta)."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / MARKER).is_file():
        return True
    meta = p / "meta.json"
    if meta.is_file() and (p / "results.json").is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "versions" in data
    return False


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create `path` if needed and check that a file can be created in it (RunFolderError)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".relreps-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RunFolderError(f"{what} {p} is not writable ({e.strerror or e})") from None
    return p


def check_cache_writable() -> Path:
    """The cache folder ($RELREPS_CACHE or the default), checked to be writable."""
    root = os.environ.get("RELREPS_CACHE")
    if root is not None and not root.strip():
        raise RunFolderError("RELREPS_CACHE is set but empty; unset it or name a folder")
    if root:
        return check_writable_dir(root, "the cache folder RELREPS_CACHE")
    from relreps.cache import cache_dir

    try:
        return check_writable_dir(cache_dir(), "the cache folder")
    except OSError as e:
        raise RunFolderError(f"the cache folder is not writable ({e}); set RELREPS_CACHE to a "
                             "writable folder") from None


def default_run_path(name: str, root: str | os.PathLike = "runs") -> Path:
    """``root/name``, or ``root/name-2``, ``-3``, ... : the first that does not exist yet."""
    base = Path(root) / name
    if not base.exists() and not base.is_symlink():
        return base
    i = 2
    while True:
        p = Path(root) / f"{name}-{i}"
        if not p.exists() and not p.is_symlink():
            return p
        i += 1


class RunFolder:
    """A claimed output folder: write into :attr:`stage`, then :meth:`commit` to :attr:`path`.

    Used as a context manager: an exception before :meth:`started` removes everything the run
    created (a refused input leaves nothing behind); after it, the destination stays marked
    incomplete with the error recorded. Leaving the block normally commits.
    """

    def __init__(self, path: Path, stage: Path, *, replace: bool, command: str,
                 created: bool = True) -> None:
        self.path = path
        self.stage = stage
        self.replace = replace
        self.created = created
        self.command = command
        self.committed = False
        self._started = False
        self._t0 = time.time()

    # -------------------------------------------------------------- lifecycle
    def started(self) -> None:
        """Mark the start of the computation (from now on a failure leaves a marked folder)."""
        self._started = True

    def commit(self) -> Path:
        """Move the staged files into place atomically; return the run folder."""
        if self.committed:
            return self.path
        (self.stage / INCOMPLETE).unlink(missing_ok=True)
        _write_marker(self.stage, "complete", self.command, self.path)
        _fix_permissions(self.stage)
        if self.replace:
            trash = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                          suffix=".old"))
            os.replace(self.path, trash / "run")
            os.replace(self.stage, self.path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            for name in (INCOMPLETE, MARKER):
                (self.path / name).unlink(missing_ok=True)
            try:
                os.replace(self.stage, self.path)  # replaces the (now empty) claimed folder
            except OSError:  # e.g. a mount point: move the files in one by one, marker last
                for item in sorted(self.stage.iterdir(), key=lambda p: p.name == MARKER):
                    os.replace(item, self.path / item.name)
                shutil.rmtree(self.stage, ignore_errors=True)
        self.committed = True
        return self.path

    def abort(self, error: BaseException | None = None) -> None:
        """Give up: remove the staging folder; mark the destination incomplete (or remove it
        when the computation never started and this run created it)."""
        shutil.rmtree(self.stage, ignore_errors=True)
        if self.replace:
            return  # the previous run stays as it was
        if not self._started:
            for name in (INCOMPLETE, MARKER):
                (self.path / name).unlink(missing_ok=True)
            if self.created:
                try:
                    self.path.rmdir()
                except OSError:
                    pass
            return
        why = f"{type(error).__name__}: {error}" if error is not None else "stopped"
        try:
            (self.path / INCOMPLETE).write_text(
                f"This {self.command} run did not finish ({why}).\nNo results were written; "
                "run it again (with --force to reuse this folder).\n", encoding="utf-8")
            _write_marker(self.path, "failed", self.command, self.path, error=why)
        except OSError:
            pass

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort(exc)


def _write_marker(folder: Path, status: str, command: str, dest: Path, **extra: Any) -> None:
    data = {"relreps_run": 1, "status": status, "command": command, "path": str(dest),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def _fix_permissions(folder: Path) -> None:
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(root, f), 0o666 & ~mask)


def prepare_run(out: str | os.PathLike | None, *, name: str, force: bool = False,
                root: str | os.PathLike = "runs", check_cache: bool = False) -> RunFolder:
    """Check and claim the output folder of a run (see the module docstring for the rules).

    `out` None picks a fresh ``root/name[-N]``. Raises RunFolderError before anything is
    computed when the folder cannot be used.
    """
    if out is not None and not os.fspath(out).strip():
        raise RunFolderError("--out is empty; name a folder (or leave --out out for a fresh "
                             f"{Path(root) / name}[-N])")
    if check_cache:
        check_cache_writable()
    replace = False
    created = True
    if out is None:
        check_writable_dir(root, "the runs folder")
        path = None
        for _ in range(100):  # claim a fresh default folder; another process may race us
            cand = default_run_path(name, root)
            try:
                cand.mkdir()
                path = cand
                break
            except FileExistsError:
                continue
        if path is None:  # pragma: no cover - 100 concurrent claims
            raise RunFolderError(f"could not claim a fresh folder under {root}")
    else:
        path = Path(out)
        resolved = path.resolve()
        cwd = Path.cwd().resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise RunFolderError(f"--out {out} is the current folder (or one of its parents); "
                                 "name a new folder for the run")
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise RunFolderError(f"--out {out} exists and is not a folder")
            contents = [p.name for p in path.iterdir()]
            if contents:
                if not force:
                    what = "another relreps run" if is_run_folder(path) else "other files"
                    raise RunFolderError(
                        f"--out {out} is not empty (it holds {what}: "
                        f"{', '.join(sorted(contents)[:4])}{' ...' if len(contents) > 4 else ''}"
                        "); choose a new folder, or pass --force to replace that run")
                if not is_run_folder(path):
                    raise RunFolderError(f"--out {out} is not empty and is not a relreps run "
                                         "folder; --force only replaces relreps runs, so "
                                         "choose another folder")
                replace = True
            check_writable_dir(path, "--out")
        check_writable_dir(path.parent, "the parent folder of --out")
        created = not path.exists()
        if not replace:
            path.mkdir(exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    run = RunFolder(path, stage, replace=replace, command=name, created=created)
    note = (f"This {name} run has not finished; its files are being written to {stage.name} "
            "and appear here when it completes.\n")
    (stage / INCOMPLETE).write_text(note, encoding="utf-8")
    _write_marker(stage, "running", name, path)
    if not replace:
        (path / INCOMPLETE).write_text(note, encoding="utf-8")
        _write_marker(path, "running", name, path)
    return run
