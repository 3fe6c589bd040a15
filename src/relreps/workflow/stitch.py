"""``relreps stitch fit`` / ``relreps stitch predict``: zero-shot stitching from files.

``fit`` trains a :class:`relreps.StitchedClassifier` on one encoder's embeddings, with given rows
as anchors, and saves it with :func:`relreps.save` (one ``.safetensors`` file, no pickle).
``predict`` loads it and classifies another encoder's embeddings, given that encoder's
embeddings of the same anchors (in the same order), in blocks of rows (bounded memory for
memory-mapped inputs).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import FormatError, RelrepsError, RunFolderError, ShapeError
from relreps.workflow.compare import DEFAULT_SIMILARITY

__all__ = ["fit_from_files", "predict_from_files", "cli_fit", "cli_predict", "PREDICT_ROWS"]

#: Rows classified at once by ``predict`` (memory-mapped inputs are read block by block).
PREDICT_ROWS = 65_536


def _classifier_class() -> Any:
    try:
        from relreps.stitching import StitchedClassifier
    except ImportError:
        raise RelrepsError("relreps.StitchedClassifier is not available in this installation "
                           "(update relreps)") from None
    return StitchedClassifier


def _persistence() -> Any:
    try:
        from relreps import persistence
    except ImportError:
        raise RelrepsError("relreps.save/relreps.load are not available in this installation "
                           "(update relreps)") from None
    return persistence


def _check_new_file(path: Path, force: bool, what: str) -> None:
    from relreps.runs import check_writable_dir

    if not str(path).strip():
        raise RunFolderError(f"{what} is empty; name a file")
    if path.is_dir():
        raise RunFolderError(f"{what} {path} is a folder; name a file")
    if path.exists() and not force:
        raise RunFolderError(f"{what} {path} exists; pass --force to overwrite it")
    check_writable_dir(path.parent if str(path.parent) else Path("."), f"the folder of {what}")


def _atomic(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        from relreps.cache import current_umask

        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fit_from_files(space: str, labels: str, anchor_index: str, out: str | os.PathLike, *,
                   head: str = "logreg-cv", similarity: str = DEFAULT_SIMILARITY,
                   center: str = "auto",
                   seed: int = 0, force: bool = False) -> tuple[Any, Path]:
    """Fit a StitchedClassifier on the files and save it to `out`; return (model, path)."""
    from relreps.io import read_array, read_index, read_labels
    from relreps.validation import check_array, check_int

    seed = check_int(seed, "--seed", min_value=0)
    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(".safetensors")
    _check_new_file(path, force, "--out")
    x = check_array(read_array(space, mmap=True), space)
    y = read_labels(labels, n=x.shape[0])
    idx = read_index(anchor_index, n=x.shape[0])
    cls = _classifier_class()
    persistence = _persistence()
    clf = cls(head=head, similarity=similarity, center=None if center == "none" else center,
              anchor_index=idx, random_state=seed)
    clf.fit(np.asarray(x), y)
    _atomic(path, lambda tmp: persistence.save(clf, tmp))
    return clf, path


def predict_from_files(model: str | os.PathLike, space: str, *,
                       anchor_embeddings: str | None = None, anchor_index: str | None = None
                       ) -> np.ndarray:
    """Predictions of a saved StitchedClassifier for the embeddings in `space`."""
    from relreps.io import read_array, read_index
    from relreps.validation import check_array

    if (anchor_embeddings is None) == (anchor_index is None):
        raise RelrepsError("give exactly one of --anchor-embeddings and --anchor-index")
    if not Path(model).is_file():
        from relreps.errors import DataNotFoundError

        raise DataNotFoundError(f"model file not found: {model}")
    persistence = _persistence()
    clf = persistence.load(model)
    cls = _classifier_class()
    if not isinstance(clf, cls):
        raise FormatError(f"{model} holds a {type(clf).__name__}, not a StitchedClassifier")
    x = check_array(read_array(space, mmap=True), space)
    if anchor_embeddings is not None:
        anchors = check_array(read_array(anchor_embeddings, mmap=False), anchor_embeddings)
    else:
        idx = read_index(anchor_index, n=x.shape[0])
        anchors = np.asarray(x[np.sort(idx)])[np.argsort(np.argsort(idx))]
    if anchors.shape[1] != x.shape[1]:
        raise ShapeError(f"the anchor embeddings have width {anchors.shape[1]} but {space} has "
                         f"{x.shape[1]}: they must come from the same encoder")
    preds = [np.asarray(clf.predict(np.asarray(x[s:s + PREDICT_ROWS]),
                                    anchor_embeddings=anchors))
             for s in range(0, x.shape[0], PREDICT_ROWS)]
    return np.concatenate(preds) if preds else np.zeros(0)


def _write_predictions(path: Path, pred: np.ndarray) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        _atomic(path, lambda tmp: np.save(tmp, pred, allow_pickle=False))
    elif suffix == ".txt":
        text = "".join(f"{p}\n" for p in pred.tolist())
        _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    else:
        raise FormatError(f"--out {path}: predictions are written to .npy or .txt")


def cli_fit(args: Any) -> int:
    """``relreps stitch fit``."""
    clf, path = fit_from_files(args.space, args.labels, args.anchor_index, args.out,
                               head=args.head, similarity=args.similarity, center=args.center,
                               seed=args.seed, force=args.force)
    n_anchors = len(getattr(clf, "anchor_embeddings_", getattr(clf, "anchors_", [])))
    decision = getattr(clf, "center_", None)
    print(f"Fitted a StitchedClassifier on {args.space}: {len(getattr(clf, 'classes_', []))} "
          f"classes, {n_anchors} anchors, head {args.head}"
          + (f", centring {decision}" if decision is not None else ""))
    print(f"Wrote {path}")
    return 0


def cli_predict(args: Any) -> int:
    """``relreps stitch predict``."""
    from relreps.io import read_labels

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_new_file(out, args.force, "--out")
        if out.suffix.lower() not in (".npy", ".txt"):
            raise FormatError(f"--out {out}: predictions are written to .npy or .txt")
    pred = predict_from_files(args.model, args.space, anchor_embeddings=args.anchor_embeddings,
                              anchor_index=args.anchor_index)
    if args.labels:
        y = read_labels(args.labels, n=len(pred))
        known = set(np.unique(pred).tolist())
        if y.dtype.kind != pred.dtype.kind and not (y.dtype.kind in "iu" and pred.dtype.kind
                                                    in "iu"):
            raise FormatError(f"{args.labels} holds labels of type {y.dtype} but the model "
                              f"predicts {pred.dtype} classes ({sorted(known)[:5]} ...); use "
                              "labels of the kind the model was fitted with")
        acc = float(np.mean(pred == y))
        print(f"accuracy: {acc:.4f} ({int(np.sum(pred == y))} of {len(y)} items)")
    if out is not None:
        _write_predictions(out, pred)
        print(f"Wrote {len(pred)} predictions to {out}")
    elif not args.labels:
        sys.stdout.write("".join(f"{p}\n" for p in pred.tolist()))
    return 0
