"""Zero-shot stitching: fit a head on one encoder's space, evaluate it on every other encoder's.

The same anchor samples (or parallel anchors) are embedded by each encoder; each space is
projected onto its own anchors, so a head trained on one relative space reads the others with no
training. Absolute heads are evaluated across spaces of equal width, as the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from relreps._backend import Array, to_numpy
from relreps.errors import AnchorError, RelrepsError
from relreps.projection import relative_projection
from relreps.report import fmt_mean_std, markdown_table
from relreps.validation import check_array

__all__ = ["stitching_matrix", "StitchingResult", "make_head", "score"]

AnchorSpec = Array | Mapping[str, Array]


def make_head(head: str | Callable[[int], Any], seed: int) -> Any:
    """A fresh classifier: ``"logreg"``, ``"mlp"`` (the paper's relative head) or a factory."""
    if callable(head):
        return head(seed)
    if head == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0,
                                                                  random_state=seed))
    if head == "mlp":
        from relreps.nn import TorchClassifier

        return TorchClassifier(random_state=seed)
    raise RelrepsError(f"head must be 'logreg', 'mlp' or a callable(seed), got {head!r}")


def score(y_true: Array, y_pred: Array, metric: str) -> float:
    from sklearn.metrics import accuracy_score, f1_score

    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric in ("f1_weighted", "f1_macro"):
        return float(f1_score(y_true, y_pred, average=metric.split("_")[1]))
    raise RelrepsError(f"unknown metric {metric!r}; use accuracy, f1_weighted or f1_macro")


@dataclass
class StitchingResult:
    """Scores of every (fit space, eval space, seed) combination."""

    rows: list[dict[str, Any]]
    names: list[str]
    space: str
    metrics: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def matrix(self, metric: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(names, mean, std): rows are fit spaces (decoders), columns eval spaces (encoders)."""
        metric = metric or self.metrics[0]
        n = len(self.names)
        vals: dict[tuple[int, int], list[float]] = {}
        pos = {s: i for i, s in enumerate(self.names)}
        for r in self.rows:
            vals.setdefault((pos[r["fit_space"]], pos[r["eval_space"]]), []).append(r[metric])
        mean = np.full((n, n), np.nan)
        std = np.full((n, n), np.nan)
        for (i, j), v in vals.items():
            mean[i, j], std[i, j] = np.mean(v), np.std(v)
        return list(self.names), mean, std

    def summary(self, metric: str | None = None) -> dict[str, float]:
        """Mean ± std over seeds and pairs of stitched vs non-stitched scores, and their ratio."""
        metric = metric or self.metrics[0]
        out: dict[str, float] = {}
        for flag, label in ((False, "non_stitched"), (True, "stitched")):
            per_seed: dict[Any, list[float]] = {}
            for r in self.rows:
                if r["stitched"] == flag:
                    per_seed.setdefault(r["seed"], []).append(r[metric])
            means = [np.mean(v) for v in per_seed.values()]
            out[f"{label}_mean"] = float(np.mean(means)) if means else float("nan")
            out[f"{label}_std"] = float(np.std(means)) if means else float("nan")
        out["ratio"] = out["stitched_mean"] / out["non_stitched_mean"] \
            if out["non_stitched_mean"] else float("nan")
        return out

    def to_markdown(self, metric: str | None = None, scale: float = 100.0, digits: int = 1
                    ) -> str:
        names, mean, std = self.matrix(metric)
        body = [[f"**{names[i]}**"] + [fmt_mean_std(mean[i, j], std[i, j], digits, scale)
                                      if not np.isnan(mean[i, j]) else "-"
                                      for j in range(len(names))] for i in range(len(names))]
        return markdown_table(["head fit on \\ evaluated on", *names], body)

    def heatmap(self, path: str | Path, metric: str | None = None, title: str | None = None,
                ax: Any = None) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names, mean, _ = self.matrix(metric)
        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 2))
        im = ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("evaluated on (encoder)")
        ax.set_ylabel("head fit on")
        for i in range(len(names)):
            for j in range(len(names)):
                if not np.isnan(mean[i, j]):
                    ax.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center",
                            color="w" if mean[i, j] < 0.6 else "k", fontsize=8)
        ax.set_title(title or f"{self.space} {metric or self.metrics[0]}")
        if own:
            fig.colorbar(im, ax=ax, fraction=0.046)
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return Path(path)


def _anchor_embeddings(spaces: Mapping[str, tuple[Array, Array]], anchors: AnchorSpec
                       ) -> dict[str, Array]:
    if isinstance(anchors, Mapping):
        missing = set(spaces) - set(anchors)
        if missing:
            raise AnchorError(f"no anchors given for space(s) {sorted(missing)}")
        out = {s: check_array(anchors[s], f"anchors[{s!r}]") for s in spaces}
    else:
        idx = np.asarray(to_numpy(anchors)).ravel()
        if idx.dtype.kind not in "iu":
            raise AnchorError("anchors must be an index array into the train rows or a mapping "
                              "space -> anchor embeddings")
        out = {}
        for s, (train, _) in spaces.items():
            bad = idx[(idx >= len(train)) | (idx < 0)]
            if bad.size:
                raise AnchorError(f"anchor index {bad[0]} out of range for space {s!r} with "
                                  f"{len(train)} train rows")
            out[s] = np.asarray(train)[idx]
    counts = {s: len(a) for s, a in out.items()}
    if len(set(counts.values())) != 1:
        raise AnchorError(f"anchor sets do not correspond across spaces: counts {counts}")
    return out


def stitching_matrix(spaces: Mapping[str, tuple[Array, Array]], y_train: Array,
                     y_test: Array | Mapping[str, Array], *,
                     anchors: AnchorSpec | Callable[[int], AnchorSpec] | None = None,
                     space: Literal["relative", "absolute"] = "relative",
                     similarity: str = "cosine", center: str | None = None,
                     head: str | Callable[[int], Any] = "logreg", seeds: Sequence[int] = (0, 1, 2),
                     metrics: Sequence[str] = ("accuracy", "f1_weighted"),
                     fit_spaces: Sequence[str] | None = None) -> StitchingResult:
    """Fit a head on each space (relative or absolute) and evaluate it on every space.

    Parameters
    ----------
    spaces : name -> (train embeddings, test embeddings). Row i of every train set is the same
        training sample (same label); test sets correspond likewise.
    y_train, y_test : labels (y_test may be a mapping name -> labels when test sets differ).
    anchors : index array into the train rows (the same samples in every space), a mapping
        name -> anchor embeddings (parallel anchors: row i corresponds across spaces), or a
        callable seed -> either of those (anchors resampled per seed). Unused for absolute.
    space : "relative" projects each space on its anchors first; "absolute" uses raw embeddings
        and evaluates only pairs of equal width.
    head : "logreg", "mlp" (the paper's head) or callable(seed) -> unfitted estimator.
    fit_spaces : spaces to fit heads on (default all).
    """
    if space not in ("relative", "absolute"):
        raise RelrepsError(f"space must be 'relative' or 'absolute', got {space!r}")
    if not spaces:
        raise RelrepsError("no spaces given")
    names = list(spaces)
    y_train = np.asarray(to_numpy(y_train)).ravel()
    for s, (tr, _te) in spaces.items():
        if len(tr) != len(y_train):
            raise RelrepsError(f"space {s!r} has {len(tr)} train rows for {len(y_train)} labels")
    y_tests = {s: np.asarray(to_numpy(y_test[s] if isinstance(y_test, Mapping) else y_test))
               .ravel() for s in names}
    for s, (_, te) in spaces.items():
        if len(te) != len(y_tests[s]):
            raise RelrepsError(f"space {s!r} has {len(te)} test rows for {len(y_tests[s])} labels")
    if space == "relative" and anchors is None:
        raise AnchorError("relative stitching needs anchors")
    unknown = set(fit_spaces or ()) - set(names)
    if unknown:
        raise RelrepsError(f"fit_spaces {sorted(unknown)} are not among the spaces {names}")
    rows: list[dict[str, Any]] = []
    cached: dict[str, tuple[Any, Any]] | None = None
    for seed in seeds:
        if space == "absolute":
            feats = cached = cached or {s: (np.asarray(a), np.asarray(b))
                                        for s, (a, b) in spaces.items()}
        elif callable(anchors) or cached is None:
            spec = anchors(seed) if callable(anchors) else anchors
            anc = _anchor_embeddings(spaces, spec)
            feats = {s: (relative_projection(np.asarray(tr), np.asarray(anc[s]),
                                             similarity=similarity, center=center),
                         relative_projection(np.asarray(te), np.asarray(anc[s]),
                                             similarity=similarity, center=center))
                     for s, (tr, te) in spaces.items()}
            if not callable(anchors):
                cached = feats
        else:
            feats = cached
        for fs in (fit_spaces or names):
            clf = make_head(head, seed).fit(feats[fs][0], y_train)
            for es in names:
                if feats[es][1].shape[1] != feats[fs][1].shape[1]:
                    continue  # absolute spaces of different widths cannot be stitched
                pred = clf.predict(feats[es][1])
                row = {"fit_space": fs, "eval_space": es, "seed": seed, "stitched": fs != es,
                       "space": space}
                row.update({m: score(y_tests[es], pred, m) for m in metrics})
                rows.append(row)
    return StitchingResult(rows=rows, names=names, space=space, metrics=tuple(metrics),
                           info={"similarity": similarity, "center": center})
