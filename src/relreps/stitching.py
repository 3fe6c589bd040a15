"""Zero-shot stitching: a head fitted on one encoder's relative space reads any other encoder's.

The same anchor samples (or parallel anchors: the same word, a translation) are embedded by each
encoder; each space is projected onto its own anchors, so a head trained on one relative space
reads the others with no training.

- :class:`StitchedClassifier`: the product. A scikit-learn classifier fitted on one encoder's
  embeddings and its anchors, that predicts from any other encoder's embeddings given that
  encoder's embeddings of the same anchors (or, for text, from raw texts and any encoder).
- :func:`stitching_matrix`: the experiment. A head on every space, evaluated on every space.
- :func:`make_head`: the classifier heads, by name: ``"logreg-cv"`` (default), ``"logreg"``,
  ``"logreg-c<C>"``, ``"mlp"``, or a callable ``seed -> estimator``.

Why the default head cross-validates its regularisation: relative features are wide (one per
anchor) and strongly correlated. With C=1 a logistic regression fits directions of the source
space that other encoders do not share; stitched accuracy then drops by 10-15 points while
non-stitched accuracy barely moves. ``"logreg-cv"`` chooses C on the fit space only (stratified
k-fold), and among the values whose cross-validated score is within one standard error of the best
takes the strongest regularisation (the "one standard error" rule): when the source accuracy is
flat over C, the head that transfers best is the most regularised one.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.metaestimators import available_if

from relreps._backend import Array, to_numpy
from relreps._sklearn import check_is_fitted, validate_data
from relreps._threads import threads_for
from relreps.centering import (
    AUTO_THRESHOLD,
    AnisotropyWarning,
    CenterDecision,
    anisotropy,
    resolve_center,
)
from relreps.errors import (
    AnchorError,
    FormatError,
    InputTypeError,
    OptionError,
    RelrepsError,
    ShapeError,
)
from relreps.projection import relative_projection
from relreps.report import fmt_mean_std, markdown_table
from relreps.validation import (
    check_array,
    check_callable,
    check_choice,
    check_choices,
    check_float,
    check_indices,
    check_int,
    check_labels,
    check_random_state,
    check_seeds,
    check_texts,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["StitchedClassifier", "CVLogisticRegression", "ConstantFeatureFilter",
           "stitching_matrix", "StitchingResult",
           "make_head", "check_head", "head_is_deterministic", "score", "HEADS", "METRICS",
           "DEFAULT_CS"]

#: Head names accepted by :func:`make_head` (besides ``"logreg-c<C>"`` and callables).
HEADS = ("logreg-cv", "logreg", "mlp")
#: Metrics accepted by :func:`score` and :func:`stitching_matrix`.
METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro")
#: The grid of C searched by ``"logreg-cv"``: 1e-4 ... 1e2, two values per decade.
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
#: Seed of the cross-validation folds of ``"logreg-cv"``: fixed, so that the chosen C depends on
#: the data only and the head is deterministic.
CV_SEED = 0

#: A feature whose range over the fit rows is at most this many float32 epsilons times its
#: magnitude is constant for :class:`ConstantFeatureFilter`.
CONSTANT_ULPS = 16

CENTERS = (None, "none", "anchors", "auto")
AnchorSpec = Any  # index array | mapping space -> anchor embeddings | AnchorSet
_LOGREG_C = re.compile(r"logreg-c(.+)")


# ---------------------------------------------------------------------------------- heads


class CVLogisticRegression(ClassifierMixin, BaseEstimator):
    """L2 logistic regression whose C is chosen by stratified k-fold cross-validation on `fit`'s
    data only.

    The grid is searched from the strongest regularisation (smallest C) up, each fold's model
    warm-started from its solution at the previous C. The search stops early once `patience`
    consecutive values of C score below the one-standard-error bar of the best so far: the score
    of a logistic regression over C rises to a peak and then declines as it overfits, and the
    weakly regularised end of the grid is by far the slowest to fit. (scikit-learn's
    ``LogisticRegressionCV`` walks the whole grid, and its ``refit=False`` C is an average of the
    per-fold best values rather than the best average; hence this estimator.)

    Parameters
    ----------
    Cs : candidate values of C (default :data:`DEFAULT_CS`, 1e-4 ... 1e2).
    cv : number of folds (fewer when the smallest class has fewer samples; with a class of a
        single sample there is nothing to cross-validate and C=1 is used, with a warning).
    scoring : ``"accuracy"`` or ``"neg_log_loss"``, the cross-validated score.
    rule : ``"one_se"`` (default): the smallest C whose mean score is within one standard error
        of the best mean score; ``"best"``: the C of the best mean score.
    patience : stop after this many consecutive values of C below the bar (None: whole grid).
    search_rows : the search runs on a seeded, stratified sample of at most this many rows
        (None: all rows); the final fit uses every row. Accuracy over C is flat near its peak,
        and the search costs (folds x values of C) fits, so this bounds the cost on large inputs.
    search_tol : tolerance of the lbfgs fits of the search (looser than `tol`: the fits only
        rank values of C).
    max_iter, tol : of the lbfgs solver.
    random_state : seed of the fold shuffling.

    Attributes
    ----------
    C_ : the chosen C.
    Cs_ : the grid, ascending.
    cv_scores_, cv_std_ : mean and standard deviation over folds of the score of each C (NaN
        beyond an early stop).
    n_folds_ : folds used (0: no cross-validation).
    n_search_rows_ : rows the search ran on.
    estimator_ : the ``LogisticRegression(C=C_)`` refitted on all the data.
    classes_, coef_, intercept_, n_iter_, n_features_in_ : as in ``LogisticRegression``.
    """

    def __init__(self, Cs: Sequence[float] | None = None, cv: int = 5,
                 scoring: str = "accuracy", rule: str = "one_se", patience: int | None = 2,
                 search_rows: int | None = 2000, search_tol: float = 1e-3,
                 max_iter: int = 2000, tol: float = 1e-4,
                 random_state: int | None = CV_SEED) -> None:
        self.Cs = Cs
        self.cv = cv
        self.search_rows = search_rows
        self.search_tol = search_tol
        self.scoring = scoring
        self.rule = rule
        self.patience = patience
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _grid(self) -> np.ndarray:
        if self.Cs is None:
            return np.asarray(DEFAULT_CS)
        if isinstance(self.Cs, (str, bytes)) or not isinstance(self.Cs, Sequence | np.ndarray):
            raise InputTypeError(f"Cs must be a sequence of positive numbers, got {self.Cs!r}")
        cs = [check_float(c, f"Cs[{i}]", min_value=0.0, min_inclusive=False)
              for i, c in enumerate(self.Cs)]
        if not cs:
            raise RelrepsError("Cs must hold at least one value of C")
        return np.unique(np.asarray(cs, dtype=np.float64))

    def _check_params(self) -> tuple[np.ndarray, int, int | None, int, float, int | None]:
        """The validated parameters: (grid, folds, patience, max_iter, tol, seed)."""
        cs = self._grid()
        n_splits = check_int(self.cv, "cv", min_value=2)
        check_choice(self.scoring, "scoring", ("accuracy", "neg_log_loss"))
        check_choice(self.rule, "rule", ("one_se", "best"))
        patience = check_int(self.patience, "patience", min_value=1, allow_none=True)
        max_iter = check_int(self.max_iter, "max_iter", min_value=1)
        tol = check_float(self.tol, "tol", min_value=0.0, min_inclusive=False)
        seed = check_int(self.random_state, "random_state", min_value=0, allow_none=True)
        return cs, n_splits, patience, max_iter, tol, seed

    def fit(self, X: Any, y: Any) -> CVLogisticRegression:
        """Choose C by cross-validation on (X, y), then fit on all of it with that C."""
        from sklearn.linear_model import LogisticRegression

        cs, n_splits, patience, max_iter, tol, seed = self._check_params()
        X, y = validate_data(self, X, y, reset=True)
        y = _classification_targets(y)
        classes, counts = np.unique(y, return_counts=True)
        _check_two_classes(classes)
        folds = min(n_splits, int(counts.min()))
        self.Cs_ = cs
        self.cv_scores_ = np.full(len(cs), np.nan)
        self.cv_std_ = np.full(len(cs), np.nan)
        self.n_folds_ = 0
        self.n_search_rows_ = 0
        if folds >= 2 and len(cs) > 1:
            rows = check_int(self.search_rows, "search_rows", min_value=2, allow_none=True)
            stol = check_float(self.search_tol, "search_tol", min_value=0.0,
                               min_inclusive=False)
            Xs, ys = X, y
            if rows is not None and len(y) > rows and rows >= folds * len(classes):
                from sklearn.model_selection import StratifiedShuffleSplit

                pick, _ = next(StratifiedShuffleSplit(1, train_size=rows, random_state=seed)
                               .split(X, y))
                Xs, ys = X[np.sort(pick)], y[np.sort(pick)]
                folds = min(folds, int(np.unique(ys, return_counts=True)[1].min()))
            self.n_search_rows_ = int(len(ys))
        if folds >= 2 and len(cs) > 1:
            with threads_for(Xs.size):
                scores = self._path(Xs, ys, cs, folds, patience, max_iter, stol, seed)
            done = ~np.isnan(scores[0])
            self.cv_scores_[done] = scores[:, done].mean(0)
            self.cv_std_[done] = scores[:, done].std(0)
            self.C_ = float(cs[self._choose(self.cv_scores_, self.cv_std_, folds)])
            self.n_folds_ = folds
        else:
            self.C_ = 1.0 if len(cs) > 1 else float(cs[0])
            if folds < 2 and len(cs) > 1:
                warnings.warn(f"the smallest class has {int(counts.min())} sample(s): too few to "
                              "cross-validate C; using C=1", UserWarning, stacklevel=2)
        with threads_for(X.size):
            self.estimator_ = LogisticRegression(C=self.C_, max_iter=max_iter, tol=tol,
                                                 random_state=seed).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def _choose(self, mean: np.ndarray, std: np.ndarray, folds: int) -> int:
        best = int(np.nanargmax(mean))  # ties: the smallest C
        if self.rule == "best":
            return best
        bar = mean[best] - std[best] / math.sqrt(folds)
        return int(np.flatnonzero(mean >= bar)[0])  # NaN compares False

    def _path(self, X: np.ndarray, y: np.ndarray, cs: np.ndarray, folds: int,
              patience: int | None, max_iter: int, tol: float, seed: int | None) -> np.ndarray:
        """(folds, len(cs)) scores, NaN for the values of C skipped by the early stop."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedKFold

        splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))
        models = [LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True,
                                     random_state=seed) for _ in splits]
        scores = np.full((folds, len(cs)), np.nan)
        below = 0
        for j, c in enumerate(cs):
            for f, (tr, te) in enumerate(splits):
                m = models[f].set_params(C=float(c))
                with warnings.catch_warnings():
                    # An extreme C may stop at max_iter on one fold; only the final fit counts.
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    m.fit(X[tr], y[tr])
                scores[f, j] = m.score(X[te], y[te]) if self.scoring == "accuracy" else \
                    -log_loss(y[te], m.predict_proba(X[te]), labels=m.classes_)
            if patience is None:
                continue
            mean = scores[:, :j + 1].mean(0)
            best = int(np.argmax(mean))
            bar = mean[best] - scores[:, best].std() / math.sqrt(folds)
            below = below + 1 if j > best and mean[j] < bar else 0
            if below >= patience:
                break
        return scores

    @property
    def coef_(self) -> np.ndarray:
        return self.estimator_.coef_

    @property
    def intercept_(self) -> np.ndarray:
        return self.estimator_.intercept_

    @property
    def n_iter_(self) -> np.ndarray:
        return self.estimator_.n_iter_

    def _x(self, X: Any) -> Any:
        check_is_fitted(self, "estimator_")
        return validate_data(self, X, reset=False)

    def decision_function(self, X: Any) -> np.ndarray:
        X = self._x(X)
        return self.estimator_.decision_function(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._x(X)
        return self.estimator_.predict_proba(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        X = self._x(X)
        return self.estimator_.predict_log_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        X = self._x(X)
        return self.estimator_.predict(X)


class ConstantFeatureFilter(TransformerMixin, BaseEstimator):
    """Drops the features that are constant on the fit data in float32 precision.

    A feature whose range over the fit rows is at most :data:`CONSTANT_ULPS` float32 machine
    epsilons times its largest magnitude (a few units in the last place: what a constant computed
    in float32 differs by from row to row) carries no information, and a scaler would divide its
    rounding noise by a standard deviation of the order of that noise, turning it into a feature
    of unit variance that rules the head on new rows (a relative feature constant on the training
    rows, e.g. the cosine to an anchor orthogonal to every training sample, is one). The heads of
    :func:`make_head` put this filter before their scaler. When every feature is constant, the
    one with the largest range is kept, so that the classifier still has an input.

    Attributes
    ----------
    keep_ : boolean mask of the kept features.
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """

    def fit(self, X: Any, y: Any = None) -> ConstantFeatureFilter:
        """Find the features that vary over the rows of `X`."""
        X = validate_data(self, X, reset=True, kinds=("numpy",))
        lo, hi = X.min(axis=0), X.max(axis=0)
        spread = hi.astype(np.float64) - lo
        size = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
        keep = spread > CONSTANT_ULPS * np.finfo(np.float32).eps * size
        if not keep.any():
            keep[int(np.argmax(spread))] = True
        self.keep_ = keep
        return self

    def transform(self, X: Any) -> np.ndarray:
        """`X` without the features found constant by :meth:`fit`."""
        check_is_fitted(self, "keep_")
        X = validate_data(self, X, reset=False, kinds=("numpy",))
        return X[:, self.keep_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the kept features."""
        from sklearn.utils.validation import _check_feature_names_in

        check_is_fitted(self, "keep_")
        return np.asarray(_check_feature_names_in(self, input_features))[self.keep_]


def _classification_targets(y: Any) -> np.ndarray:
    from sklearn.utils.multiclass import check_classification_targets

    try:
        check_classification_targets(y)
    except ValueError as e:
        raise RelrepsError(str(e)) from None
    return y


def _check_two_classes(classes: np.ndarray) -> None:
    if len(classes) < 2:
        only = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]
        raise RelrepsError(f"y has 1 class ({only!r}); a classifier needs samples of at least "
                           "2 classes")


def _parse_head(head: Any) -> tuple[str, float | None]:
    if callable(head):
        return "callable", None
    if not isinstance(head, str):
        raise InputTypeError(f"head must be a name ('logreg-cv', 'logreg', 'logreg-c<C>', "
                             f"'mlp') or a callable(seed), got {head!r}")
    if head in HEADS:
        return head, 1.0 if head == "logreg" else None
    m = _LOGREG_C.fullmatch(head)
    if m:
        try:
            c = float(m.group(1))
        except ValueError:
            c = float("nan")
        if not (math.isfinite(c) and c > 0):
            raise OptionError(f"head {head!r}: the C of 'logreg-c<C>' must be a positive number, "
                              "e.g. 'logreg-c0.01'")
        return "logreg-c", c
    raise OptionError(f"head must be 'logreg-cv', 'logreg', 'logreg-c<C>' (e.g. 'logreg-c0.01'), "
                      f"'mlp' or a callable(seed), got {head!r}")


def check_head(head: Any) -> Any:
    """Validate a head specification (see :func:`make_head`); return it unchanged."""
    _parse_head(head)
    return head


def head_is_deterministic(head: Any) -> bool:
    """True when the head's fit does not depend on its seed (the logistic regression heads).

    The lbfgs solver has no randomness and ``"logreg-cv"`` shuffles its folds with the fixed
    :data:`CV_SEED`; ``"mlp"`` and callables are treated as seed-dependent.
    """
    kind, _ = _parse_head(head)
    return kind in ("logreg-cv", "logreg", "logreg-c")


def make_head(head: str | Callable[[int | None], Any] = "logreg-cv", seed: int | None = 0) -> Any:
    """A fresh, unfitted classifier head.

    ``"logreg-cv"`` (default): features constant on the fit rows dropped
    (:class:`ConstantFeatureFilter`), the rest standardised, L2 logistic regression whose C is
    chosen by stratified cross-validation on the fit data (:class:`CVLogisticRegression`; the
    chosen C is ``head[-1].C_``). ``"logreg"``: the same with C=1. ``"logreg-c<C>"``: a given C,
    e.g. ``"logreg-c0.01"``. ``"mlp"``: the paper's relative head
    (:class:`relreps.nn.TorchClassifier`). A callable is called with the seed and must return an
    estimator with ``fit`` and ``predict``.
    """
    seed = check_int(seed, "seed", min_value=0, allow_none=True)
    kind, c = _parse_head(head)
    if kind == "callable":
        est = head(seed)
        if not (callable(getattr(est, "fit", None)) and callable(getattr(est, "predict", None))):
            raise InputTypeError(f"the head factory {head!r} returned {type(est).__name__}, which "
                                 "has no fit/predict methods")
        return est
    if kind == "mlp":
        from relreps.nn import TorchClassifier

        return TorchClassifier(random_state=seed)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg-cv":
        return make_pipeline(ConstantFeatureFilter(), StandardScaler(), CVLogisticRegression())
    return make_pipeline(ConstantFeatureFilter(), StandardScaler(),
                         LogisticRegression(C=c, max_iter=2000, random_state=seed))


def _head_C(head: Any) -> float | None:
    last = head.steps[-1][1] if hasattr(head, "steps") else head
    c = getattr(last, "C_", getattr(last, "C", None))
    return float(c) if isinstance(c, (int, float, np.floating)) else None


def score(y_true: Array, y_pred: Array, metric: str = "accuracy") -> float:
    """`metric` (one of :data:`METRICS`) of predictions against labels, as a fraction."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    if not (isinstance(metric, str) and metric in METRICS):
        raise OptionError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred", n=len(y_true))
    if metric == "accuracy":
        return float(accuracy_score(y_true, y_pred))
    if metric == "balanced_accuracy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes absent from y_pred
            return float(balanced_accuracy_score(y_true, y_pred))
    return float(f1_score(y_true, y_pred, average=metric.split("_")[1], zero_division=0))


# ---------------------------------------------------------------------------------- results


@dataclass
class StitchingResult:
    """Scores of every (fit space, eval space, seed) combination, as fractions in [0, 1].

    ``rows``: one dict per evaluated cell and seed (``fit_space``, ``eval_space``, ``seed``,
    ``stitched``, ``space``, one key per metric, ``C``: the head's C when it has one).
    ``skipped``: the cells that cannot exist, each with its ``reason`` (absolute heads between
    spaces of different widths). ``info``: how the result was obtained (similarity, centring
    decision per anchor draw, head, seeds fitted, anchors).
    """

    rows: list[dict[str, Any]]
    names: list[str]
    space: str
    metrics: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def _metric(self, metric: str | None) -> str:
        if metric is None:
            return self.metrics[0]
        if metric not in self.metrics:
            raise OptionError(f"metric {metric!r} was not computed; this result has "
                              f"{', '.join(self.metrics)}")
        return metric

    def matrix(self, metric: str | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(names, mean, std) over seeds; rows are fit spaces (heads), columns eval spaces.

        Cells that were not evaluated are NaN: see :attr:`skipped` for why (and
        ``fit_spaces``: rows of spaces no head was fitted on are NaN). std is NaN for cells
        with a single replicate.
        """
        metric = self._metric(metric)
        n = len(self.names)
        vals: dict[tuple[int, int], list[float]] = {}
        pos = {s: i for i, s in enumerate(self.names)}
        for r in self.rows:
            vals.setdefault((pos[r["fit_space"]], pos[r["eval_space"]]), []).append(r[metric])
        mean = np.full((n, n), np.nan)
        std = np.full((n, n), np.nan)
        for (i, j), v in vals.items():
            mean[i, j] = np.mean(v)
            std[i, j] = np.std(v) if len(v) > 1 else np.nan
        return list(self.names), mean, std

    @property
    def n_replicates(self) -> int:
        """Distinct seeds that were fitted (1 when deterministic heads met fixed anchors)."""
        return len({r["seed"] for r in self.rows})

    def summary(self, metric: str | None = None) -> dict[str, float]:
        """Stitched vs non-stitched `metric` as fractions in [0, 1] (like :meth:`to_markdown`):
        ``{non_stitched,stitched}_{mean,std}`` over seeds of the mean over cells, ``ratio``
        (stitched / non-stitched) and ``n_replicates`` (std is NaN with a single replicate)."""
        metric = self._metric(metric)
        out: dict[str, Any] = {}
        for flag, label in ((False, "non_stitched"), (True, "stitched")):
            per_seed: dict[Any, list[float]] = {}
            for r in self.rows:
                if r["stitched"] == flag:
                    per_seed.setdefault(r["seed"], []).append(r[metric])
            means = [float(np.mean(v)) for v in per_seed.values()]
            out[f"{label}_mean"] = float(np.mean(means)) if means else float("nan")
            out[f"{label}_std"] = float(np.std(means)) if len(means) > 1 else float("nan")
        out["ratio"] = (out["stitched_mean"] / out["non_stitched_mean"]
                        if out["non_stitched_mean"] else float("nan"))
        out["n_replicates"] = self.n_replicates
        return out

    def to_markdown(self, metric: str | None = None, *, percent: bool = False,
                    digits: int | None = None) -> str:
        """The fit x eval matrix as a Markdown table: mean ± std over seeds.

        Values are fractions like :meth:`summary` (``percent=True``: percent, labelled in the
        table's corner). Cells that cannot exist read ``n/a`` and are explained under the table.
        """
        metric = self._metric(metric)
        percent = bool(percent)
        digits = check_int(digits, "digits", min_value=0, allow_none=True)
        if digits is None:
            digits = 1 if percent else 3
        names, mean, std = self.matrix(metric)
        skipped = {(s["fit_space"], s["eval_space"]) for s in self.skipped}
        scale = 100.0 if percent else 1.0
        body = []
        for i, fs in enumerate(names):
            line = [f"**{fs}**"]
            for j, es in enumerate(names):
                if (fs, es) in skipped:
                    line.append("n/a")
                elif np.isnan(mean[i, j]):
                    line.append("-")
                else:
                    line.append(fmt_mean_std(mean[i, j], None if np.isnan(std[i, j])
                                             else std[i, j], digits, scale))
            body.append(line)
        unit = "%" if percent else "fraction"
        table = markdown_table([f"head fit on \\ evaluated on ({metric}, {unit})", *names], body)
        notes = []
        if self.skipped:
            reasons = dict.fromkeys(s["reason"] for s in self.skipped)
            notes.append("n/a: " + "; ".join(reasons))
        if self.n_replicates == 1 and self.info.get("fitted_once"):
            notes.append(f"one replicate: {self.info['fitted_once']}")
        return table + ("\n\n" + "\n".join(notes) if notes else "")

    def heatmap(self, path: str | Path | None = None, metric: str | None = None, *,
                title: str | None = None, ax: Axes | None = None) -> Axes:
        """Draw the mean matrix (into `ax`, or a new figure saved to `path`); return the Axes.

        Never changes matplotlib's backend: a new figure is a bare ``matplotlib.figure.Figure``
        (not registered with pyplot); with `ax` and `path` the caller's figure is saved.
        """
        metric = self._metric(metric)
        if path is None and ax is None:
            raise RelrepsError("heatmap needs a path to save to or an ax to draw into")
        from matplotlib.figure import Figure

        names, mean, _ = self.matrix(metric)
        skipped = {(s["fit_space"], s["eval_space"]) for s in self.skipped}
        fig = None
        if ax is None:
            fig = Figure(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 2))
            ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(mean), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("evaluated on (encoder)")
        ax.set_ylabel("head fit on")
        for i in range(len(names)):
            for j in range(len(names)):
                if (names[i], names[j]) in skipped:
                    ax.text(j, i, "n/a", ha="center", va="center", color="grey", fontsize=8)
                elif not np.isnan(mean[i, j]):
                    ax.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center",
                            color="w" if mean[i, j] < 0.6 else "k", fontsize=8)
        ax.set_title(title or f"{self.space} {metric}")
        if fig is not None:
            fig.colorbar(im, ax=ax, fraction=0.046)
            fig.tight_layout()
        if path is not None:
            (fig or ax.figure).savefig(path, dpi=120)
        return ax


# ---------------------------------------------------------------------------------- matrix


def _check_center(center: Any) -> Any:
    if not (center is None or isinstance(center, str)):
        raise InputTypeError(f"center must be None, 'none', 'anchors' or 'auto', got {center!r} "
                             "(a centre vector belongs to one space and cannot be stitched)")
    return check_choice(center, "center", CENTERS)


def _check_similarity(similarity: Any) -> Any:
    from relreps import similarity as _sim

    _sim.get(similarity)
    return similarity


def _spaces(spaces: Any) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
    if not isinstance(spaces, Mapping):
        raise InputTypeError(f"spaces must be a mapping name -> (train, test) embeddings, got "
                             f"{type(spaces).__name__}")
    if not spaces:
        raise RelrepsError("no spaces given")
    out: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
    for s, pair in spaces.items():
        if not isinstance(s, str):
            raise InputTypeError(f"space names must be strings, got {s!r}")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InputTypeError(f"spaces[{s!r}] must be a pair (train, test) of embeddings "
                                 "(train may be None for a space that is only evaluated)")
        tr, te = pair
        te = to_numpy(check_array(te, f"spaces[{s!r}] test", min_rows=1))
        if tr is not None:
            tr = to_numpy(check_array(tr, f"spaces[{s!r}] train", min_rows=1))
            if tr.shape[1] != te.shape[1]:
                raise ShapeError(f"space {s!r}: train rows have {tr.shape[1]} features, test "
                                 f"rows {te.shape[1]}")
        out[s] = (tr, te)
    return out


def _anchor_embeddings(data: Mapping[str, tuple[np.ndarray | None, np.ndarray]],
                       anchors: AnchorSpec) -> dict[str, np.ndarray]:
    from relreps.anchors import AnchorSet

    if isinstance(anchors, AnchorSet):
        per_space = {s: anchors.indices[s] if s in anchors.indices else
                     anchors.indices[anchors.spaces[0]] if len(anchors.spaces) == 1 else None
                     for s in data}
        missing = [s for s, v in per_space.items() if v is None]
        if missing:
            raise AnchorError(f"the AnchorSet has no anchors for space(s) {missing}; it has "
                              f"{anchors.spaces}")
        return {s: _index_rows(data, s, idx) for s, idx in per_space.items()}
    if isinstance(anchors, Mapping):
        missing = [s for s in data if s not in anchors]
        if missing:
            raise AnchorError(f"no anchors given for space(s) {missing}")
        out = {}
        for s in data:
            a = to_numpy(check_array(anchors[s], f"anchors[{s!r}]", min_rows=1))
            if a.shape[1] != data[s][1].shape[1]:
                raise ShapeError(f"anchors[{s!r}] have {a.shape[1]} features; space {s!r} has "
                                 f"{data[s][1].shape[1]}")
            out[s] = a
        counts = {s: len(a) for s, a in out.items()}
        if len(set(counts.values())) != 1:
            raise AnchorError(f"anchor sets do not correspond across spaces: counts {counts}")
        return out
    return {s: _index_rows(data, s, anchors) for s in data}


def _index_rows(data: Mapping[str, tuple[np.ndarray | None, np.ndarray]], s: str,
                idx: Any) -> np.ndarray:
    train = data[s][0]
    if train is None:
        raise AnchorError(f"space {s!r} has no train rows, so anchor indices cannot select its "
                          "anchors; give anchors as a mapping space -> anchor embeddings")
    try:
        idx = check_indices(idx, "anchors", n=len(train), unique=True)
    except RelrepsError as e:
        try:
            arr = None if isinstance(idx, (str, bytes)) else np.asarray(to_numpy(idx))
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.dtype.kind in "iu" and arr.size:
            bad = arr[(arr < 0) | (arr >= len(train))]
            if bad.size:
                raise AnchorError(f"anchor index {bad.flat[0]} out of range for space {s!r} "
                                  f"with {len(train)} train rows") from None
        raise AnchorError(f"{e} (space {s!r} has {len(train)} train rows); anchors must be an "
                          "index array into the train rows, a mapping space -> anchor "
                          "embeddings or an AnchorSet") from None
    return train[idx]


def stitching_matrix(spaces: Mapping[str, tuple[Array | None, Array]], y_train: Array,
                     y_test: Array | Mapping[str, Array], *,
                     anchors: AnchorSpec | Callable[[int], AnchorSpec] | None = None,
                     n_anchors: int | None = None, anchor_sampler: str | None = None,
                     anchor_space: str | None = None,
                     space: Literal["relative", "absolute"] = "relative",
                     similarity: str = "cosine", center: str | None = "auto",
                     head: str | Callable[[int | None], Any] = "logreg-cv",
                     seeds: Sequence[int] = (0, 1, 2),
                     metrics: Sequence[str] = ("accuracy", "f1_weighted"),
                     fit_spaces: Sequence[str] | None = None,
                     show_progress: bool = True, n_jobs: int | None = None) -> StitchingResult:
    """Fit a head on each space (relative or absolute) and evaluate it on every space.

    Parameters
    ----------
    spaces : name -> (train embeddings, test embeddings). Row i of every train set is the same
        training sample (label ``y_train[i]``); test sets correspond likewise. ``train=None``
        marks a space that is only evaluated (its anchors must then be given as a mapping).
    y_train, y_test : labels (`y_test` may be a mapping name -> labels when test sets differ).
    anchors : fixed anchors: an index array into the train rows (the same samples in every
        space), a mapping name -> anchor embeddings (parallel anchors: row i corresponds across
        spaces), an :class:`~relreps.anchors.AnchorSet`, or a callable seed -> any of those.
        Ignored for ``space="absolute"``.
    n_anchors, anchor_sampler : instead of `anchors`, draw `n_anchors` train rows per seed with
        `anchor_sampler` (``"uniform"`` by default; ``"stratified"`` uses `y_train`;
        ``"kmeans"``/``"farthest_point"`` run on `anchor_space`, default the first fit space),
        ``random_state=seed``: the spread over seeds then includes the choice of anchors.
    space : ``"relative"`` projects each space on its anchors first; ``"absolute"`` uses the raw
        embeddings (cells between different widths cannot exist: listed in ``skipped``).
    similarity : similarity of the relative projection.
    center : ``"auto"`` (default: centre on the anchor mean when any space's anchors are
        anisotropic, one decision for all spaces per anchor draw, recorded in ``info``),
        ``"anchors"``, or None/``"none"``.
    head : see :func:`make_head` (default ``"logreg-cv"``). A deterministic head (the logistic
        regressions) with fixed anchors is fitted once, not once per seed: the result then has
        a single replicate (std NaN) instead of identical copies.
    seeds : replicates (a sequence, e.g. ``range(3)``): the head's seed and, with resampled
        anchors, the anchor draw.
    metrics : non-empty, from :data:`METRICS`; fractions in [0, 1].
    fit_spaces : spaces to fit heads on (default: every space with train rows).
    show_progress : a progress bar over the head fits (RELREPS_QUIET=1 silences it too).
    n_jobs : head fits run in this many worker processes (joblib; None or 1: in this process,
        -1: one per CPU). The fits are independent and the heads deterministic given their seed,
        so the result does not depend on it; the logistic-regression fits are too small to use
        more than one core each, so on a multi-core machine this is where the time goes down.
    """
    from relreps.progress import progress

    space = check_choice(space, "space", ("relative", "absolute"))
    data = _spaces(spaces)
    names = list(data)
    with_train = [s for s in names if data[s][0] is not None]
    if not with_train:
        raise RelrepsError("no space has train rows: at least one space needs training "
                           "embeddings to fit a head on")
    y_tr = check_labels(y_train, "y_train")
    for s in with_train:
        if len(data[s][0]) != len(y_tr):
            raise ShapeError(f"space {s!r} has {len(data[s][0])} train rows for {len(y_tr)} "
                             "labels")
    y_tests = {}
    if isinstance(y_test, Mapping):
        missing = [s for s in names if s not in y_test]
        if missing:
            raise RelrepsError(f"y_test has no labels for space(s) {missing}")
    for s in names:
        y_tests[s] = check_labels(y_test[s] if isinstance(y_test, Mapping) else y_test,
                                  f"y_test[{s!r}]" if isinstance(y_test, Mapping) else "y_test")
        if len(data[s][1]) != len(y_tests[s]):
            raise ShapeError(f"space {s!r} has {len(data[s][1])} test rows for "
                             f"{len(y_tests[s])} labels")
    metrics = check_choices(metrics, "metrics", METRICS)
    seeds = check_seeds(seeds)
    check_head(head)
    similarity = _check_similarity(similarity)
    center = _check_center(center)
    show_progress = bool(show_progress)
    n_jobs = check_int(n_jobs, "n_jobs", min_value=-1, allow_none=True)
    if n_jobs == 0:
        raise OptionError("n_jobs must be a positive number of processes, -1 (one per CPU) or "
                          "None, got 0")
    if fit_spaces is None:
        fits = with_train
    else:
        fits = list(check_choices(fit_spaces, "fit_spaces", names))
        no_train = [s for s in fits if data[s][0] is None]
        if no_train:
            raise RelrepsError(f"fit_spaces {no_train} have no train rows to fit a head on")

    resample = False
    draw: Callable[[int], Any] | None = None
    anchor_info: dict[str, Any] = {}
    if space == "relative":
        if anchors is not None and (n_anchors is not None or anchor_sampler is not None):
            raise OptionError("give either anchors= (fixed anchors or a callable) or "
                              "n_anchors=/anchor_sampler= (anchors drawn per seed), not both")
        if anchors is None and n_anchors is None:
            raise AnchorError("relative stitching needs anchors: pass anchors= (indices, a "
                              "mapping space -> anchor embeddings, an AnchorSet) or n_anchors= "
                              "to draw them per seed")
        if n_anchors is not None:
            draw, anchor_info = _anchor_sampler(data, y_tr, n_anchors, anchor_sampler,
                                                anchor_space, fits)
            resample = True
        elif callable(anchors) and not isinstance(anchors, Mapping):
            draw, resample = anchors, True
            anchor_info = {"anchors": "callable(seed)"}
        else:
            anchor_info = {"anchors": "fixed"}
    deterministic = head_is_deterministic(head)
    run_seeds = seeds[:1] if deterministic and not resample else seeds
    info: dict[str, Any] = {
        "similarity": similarity if isinstance(similarity, str) else similarity.name,
        "center": center, "head": head if isinstance(head, str) else "callable",
        "seeds": list(seeds), "fitted_seeds": list(run_seeds), **anchor_info,
        "center_decisions": [], "eval_only": [s for s in names if data[s][0] is None]}
    if len(run_seeds) < len(seeds):
        why = "features are absolute" if space == "absolute" else "anchors are fixed"
        info["fitted_once"] = (f"the head ({info['head']}) is deterministic and the {why}"
                               f", so seeds {list(seeds)} would refit the same model; fitted "
                               f"once with seed {run_seeds[0]}")

    fixed: dict[str, tuple[np.ndarray | None, np.ndarray]] | None = None

    def features(seed: int) -> dict[str, tuple[np.ndarray | None, np.ndarray]]:
        nonlocal fixed
        if fixed is not None:
            return fixed
        if space == "absolute":
            fixed = {s: (data[s][0] if s in fits else None, data[s][1]) for s in names}
            return fixed
        anc = _anchor_embeddings(data, draw(seed) if draw is not None else anchors)
        decision = resolve_center(center, anc if center == "auto" else None)
        info["center_decisions"].append({"seed": seed, **decision.to_dict()})
        info["n_anchors"] = len(next(iter(anc.values())))
        feats = {}
        for s in names:
            kw = {"similarity": similarity, "center": decision.center}
            tr = relative_projection(data[s][0], anc[s], **kw) if s in fits else None
            feats[s] = (tr, relative_projection(data[s][1], anc[s], **kw))
        if not resample:
            fixed = feats
        return feats

    skipped: dict[tuple[str, str], str] = {}

    def jobs():
        for seed in run_seeds:
            feats = features(seed)
            for fs in fits:
                yield seed, feats, fs

    total = len(run_seeds) * len(fits)
    if n_jobs in (None, 1):
        fitted: Any = ((seed, feats, fs, _fit_head(head, seed, feats[fs][0], y_tr))
                       for seed, feats, fs in jobs())
    else:
        from sklearn.utils.parallel import Parallel, delayed

        pending: list[Any] = []  # (seed, features, fit space) of each dispatched fit

        def tasks():
            for seed, feats, fs in jobs():
                pending.append((seed, feats, fs))
                yield delayed(_fit_head)(head, seed, feats[fs][0], y_tr)

        def in_order():
            results = Parallel(n_jobs=n_jobs, return_as="generator")(tasks())
            for i, clf in enumerate(results):
                seed, feats, fs = pending[i]
                pending[i] = None  # let the features of finished fits go
                yield seed, feats, fs, clf

        fitted = in_order()
    it = progress(fitted, desc=f"stitching: fitting {total} head(s)", total=total) \
        if show_progress else fitted
    rows: list[dict[str, Any]] = []
    for seed, feats, fs, clf in it:
        c = _head_C(clf)
        for es in names:
            d_fit, d_eval = feats[fs][0].shape[1], feats[es][1].shape[1]
            if d_fit != d_eval:
                skipped[(fs, es)] = (f"an absolute head fitted on a {d_fit}-d space cannot read "
                                     f"a {d_eval}-d space")
                continue
            pred = clf.predict(feats[es][1])
            row = {"fit_space": fs, "eval_space": es, "seed": seed, "stitched": fs != es,
                   "space": space}
            row.update({m: score(y_tests[es], pred, m) for m in metrics})
            row["C"] = c
            rows.append(row)
    return StitchingResult(rows=rows, names=names, space=space, metrics=metrics, info=info,
                           skipped=[{"fit_space": f, "eval_space": e, "reason": r}
                                    for (f, e), r in skipped.items()])


def _fit_head(head: Any, seed: int, X: np.ndarray, y: np.ndarray) -> Any:
    """A head made by :func:`make_head` with `seed`, fitted on (X, y) (picklable for workers)."""
    return make_head(head, seed).fit(X, y)


def _anchor_sampler(data: Mapping[str, tuple[np.ndarray | None, np.ndarray]], y: np.ndarray,
                    n_anchors: Any, sampler: Any, anchor_space: Any, fits: Sequence[str]
                    ) -> tuple[Callable[[int], np.ndarray], dict[str, Any]]:
    from relreps.anchors import SAMPLERS, sample_anchors

    sampler = "uniform" if sampler is None else check_choice(sampler, "anchor_sampler",
                                                              tuple(SAMPLERS))
    no_train = [s for s, (tr, _) in data.items() if tr is None]
    if no_train:
        raise AnchorError(f"space(s) {no_train} have no train rows: anchors drawn from the train "
                          "rows cannot be found in them; give anchors as a mapping instead")
    n_train = len(y)
    n = check_int(n_anchors, "n_anchors", min_value=1, max_value=n_train)
    src = fits[0] if anchor_space is None else check_choice(anchor_space, "anchor_space",
                                                             list(data))
    x = data[src][0]

    def draw(seed: int) -> np.ndarray:
        return sample_anchors(x, n, sampler, y=y, random_state=seed)

    return draw, {"anchors": f"{n} drawn per seed ({sampler}, from {src!r})",
                  "anchor_sampler": sampler, "anchor_space": src}


# ---------------------------------------------------------------------------------- classifier


def _has_head_method(name: str) -> Callable[[Any], bool]:
    def check(self: StitchedClassifier) -> bool:
        head = self.head_ if hasattr(self, "head_") else make_head(self.head, 0)
        return hasattr(head, name)

    return check


class StitchedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier fitted on one encoder's space that predicts from any other encoder's space.

    Fitting projects the embeddings onto anchors (relative representation) and fits `head` on
    the result. To predict for another encoder, give its embeddings of the *same anchors, in the
    same order* (``anchor_embeddings``): its samples are projected onto them and read by the same
    head, with no training (zero-shot stitching). Without ``anchor_embeddings`` the model
    predicts in its fit space, like any classifier.

    Parameters
    ----------
    head : the classifier on the relative features, see :func:`make_head` (default
        ``"logreg-cv"``: C chosen by cross-validation on the fit data).
    n_anchors : anchors sampled from X in `fit` when neither ``anchor_embeddings`` (fit
        argument) nor `anchor_index` is given; at most the number of rows (a warning says when
        it is reduced).
    sampler : ``"uniform"``, ``"stratified"``, ``"kmeans"`` or ``"farthest_point"``.
    similarity : similarity of the relative projection (see :mod:`relreps.similarity`).
    center : ``"auto"`` (default), ``"anchors"`` or None/``"none"``. ``"anchors"`` subtracts
        each space's anchor mean before the similarity (rescues anisotropic encoders, whose
        plain cosines to anchors are nearly constant). ``"auto"`` decides at fit: it centres when
        the anchors of the fit space, or of any space given as ``target_anchor_embeddings`` to
        `fit`, have a mean pairwise cosine above :data:`relreps.centering.AUTO_THRESHOLD`. The
        decision is kept for every later space, because a centred space and an uncentred one
        are not comparable. If a space met at predict time is anisotropic although the model
        was fitted uncentred, the joint rule would have centred: an
        :class:`~relreps.centering.AnisotropyWarning` says so (refit with ``center="anchors"``
        or with that space's anchors in ``target_anchor_embeddings``).
    anchor_index : rows of X to use as anchors (instead of sampling).
    random_state : seed of the anchor sampler and of the head.

    Attributes
    ----------
    anchor_embeddings_ : (k, d) the fit space's anchor embeddings.
    anchor_index_ : rows of the fit data used as anchors (None when given as embeddings).
    anchor_ids_ : the anchors' identities: ``anchor_ids`` given to `fit`, else `anchor_index_`.
    anchor_texts_ : the anchor texts (after :meth:`fit_texts`), else None.
    encoder_ : the encoder name used by :meth:`fit_texts` (None otherwise).
    center_ : the centring applied (None or ``"anchors"``).
    center_decision_ : why: :meth:`relreps.centering.CenterDecision.to_dict` (the centring,
        each space's anisotropy, the reason).
    head_ : the fitted head.
    C_ : the head's regularisation when it has one (the chosen C of ``"logreg-cv"``), else None.
    classes_, n_features_in_, n_anchors_ : as usual.
    """

    def __init__(self, head: str | Callable[[int | None], Any] = "logreg-cv",
                 n_anchors: int = 300, sampler: str = "uniform", similarity: str = "cosine",
                 center: str | None = "auto", anchor_index: Any = None,
                 random_state: int | None = None) -> None:
        self.head = head
        self.n_anchors = n_anchors
        self.sampler = sampler
        self.similarity = similarity
        self.center = center
        self.anchor_index = anchor_index
        self.random_state = random_state

    # ----------------------------------------------------------------------------- fit

    def fit(self, X: Array, y: Array, *, anchor_embeddings: Array | None = None,
            anchor_ids: Sequence[Any] | None = None,
            target_anchor_embeddings: Mapping[str, Array] | Sequence[Array] | None = None
            ) -> StitchedClassifier:
        """Fit on one encoder's embeddings `X` (n, d) with labels `y`.

        anchor_embeddings : (k, d) this encoder's embeddings of the anchors (e.g. anchor texts
            that are not among the training samples); default: rows of X (`anchor_index`, or
            `n_anchors` sampled).
        anchor_ids : k identities of the anchors (keys, texts, ids), kept with the model.
        target_anchor_embeddings : other spaces' embeddings of the same anchors, known now:
            they take part in the ``center="auto"`` decision (nothing else is fitted on them).
        """
        return self._fit(X, y, anchor_embeddings, anchor_ids, target_anchor_embeddings)

    def _fit(self, X: Any, y: Any, anchor_embeddings: Any, anchor_ids: Any, targets: Any,
             anchor_texts: list[str] | None = None, encoder: str | None = None
             ) -> StitchedClassifier:
        from relreps.anchors import SAMPLERS, AnchorWarning, sample_anchors

        check_head(self.head)
        _check_similarity(self.similarity)
        center = _check_center(self.center)
        X, y = validate_data(self, X, y, reset=True)
        X = to_numpy(X)
        y = _classification_targets(y)
        if X.shape[0] < 2:
            raise ShapeError(f"StitchedClassifier needs at least 2 samples to fit, got "
                             f"{X.shape[0]} sample")
        _check_two_classes(np.unique(y))
        index = None
        if anchor_embeddings is not None:
            anchors = to_numpy(check_array(anchor_embeddings, "anchor_embeddings", min_rows=1))
            if anchors.shape[1] != X.shape[1]:
                raise ShapeError(f"anchor_embeddings have {anchors.shape[1]} features, X has "
                                 f"{X.shape[1]}: they must come from the same encoder")
        elif self.anchor_index is not None:
            index = check_indices(self.anchor_index, "anchor_index", n=len(X), unique=True)
            anchors = X[index]
        else:
            check_choice(self.sampler, "sampler", tuple(SAMPLERS))
            n = check_int(self.n_anchors, "n_anchors", min_value=1)
            if n > len(X):
                warnings.warn(f"n_anchors={n} but X has {len(X)} rows: using all {len(X)} rows "
                              "as anchors", AnchorWarning, stacklevel=3)
                n = len(X)
            index = np.asarray(sample_anchors(X, n, self.sampler, y=y,
                                              random_state=self._seed()), dtype=np.int64)
            anchors = X[index]
        k = len(anchors)
        ids = _check_ids(anchor_ids, k) if anchor_ids is not None else \
            (index.tolist() if index is not None else None)
        spaces = {"fit": anchors}
        spaces.update(_target_anchors(targets, k))
        if center == "auto" and k < 2:
            decision = CenterDecision(None, center, reason="auto: not centred, a single anchor "
                                      "(centring would leave it a zero vector)")
        else:
            decision = resolve_center(center, spaces if center == "auto" else None)
        rel = relative_projection(X, anchors, similarity=self.similarity, center=decision.center)
        seed = self._seed()
        head = make_head(self.head, seed if isinstance(seed, int) else None)
        self.head_ = head.fit(rel, y)
        self.classes_ = np.asarray(self.head_.classes_)
        self.anchor_embeddings_ = anchors
        self.anchor_index_ = index
        self.anchor_ids_ = ids
        self.anchor_texts_ = anchor_texts
        self.encoder_ = encoder
        self.n_anchors_ = k
        self.center_ = decision.center
        self.center_decision_ = decision.to_dict()
        self.C_ = _head_C(self.head_)
        return self

    def _seed(self) -> int | None:
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, (np.random.Generator, np.random.RandomState)):
            return int(check_random_state(rs).integers(2**31 - 1))
        return check_int(rs, "random_state", min_value=0)

    # ----------------------------------------------------------------------------- predict

    def _relative(self, X: Any, anchor_embeddings: Any) -> np.ndarray:
        check_is_fitted(self, "head_")
        if anchor_embeddings is None:
            X = to_numpy(validate_data(self, X, reset=False))
            anchors = self.anchor_embeddings_
        else:
            anchors = to_numpy(check_array(anchor_embeddings, "anchor_embeddings", min_rows=1))
            if len(anchors) != self.n_anchors_:
                raise AnchorError(f"anchor_embeddings has {len(anchors)} rows; this model has "
                                  f"{self.n_anchors_} anchors (the same anchors, embedded by "
                                  "the other encoder, in the same order)")
            X = to_numpy(check_array(X, "X", min_rows=1))
            if X.shape[1] != anchors.shape[1]:
                raise ShapeError(f"X has {X.shape[1]} features but anchor_embeddings have "
                                 f"{anchors.shape[1]}: they must come from the same encoder")
            self._check_comparable(anchors)
        return relative_projection(X, anchors, similarity=self.similarity, center=self.center_)

    def _check_comparable(self, anchors: np.ndarray) -> None:
        if self.center_ is not None or len(anchors) < 2:
            return
        a = anisotropy(anchors)
        if a > AUTO_THRESHOLD:
            warnings.warn(
                f"the anchors given to predict have anisotropy (mean pairwise cosine) {a:.2f} > "
                f"{AUTO_THRESHOLD}, but this model was fitted without centring "
                f"({self.center_decision_.get('reason', '')}): its relative space is not "
                "comparable with an anisotropic one and predictions may collapse to one class. "
                "Refit with center='anchors', or with this space's anchors in "
                "target_anchor_embeddings", AnisotropyWarning, stacklevel=4)

    def predict(self, X: Array, *, anchor_embeddings: Array | None = None) -> np.ndarray:
        """Labels for `X`, embedded by the encoder whose anchor embeddings are given (default:
        the fit encoder)."""
        rel = self._relative(X, anchor_embeddings)
        return self.head_.predict(rel)

    @available_if(_has_head_method("predict_proba"))
    def predict_proba(self, X: Array, *, anchor_embeddings: Array | None = None) -> np.ndarray:
        """Class probabilities (columns in the order of ``classes_``)."""
        rel = self._relative(X, anchor_embeddings)
        return self.head_.predict_proba(rel)

    def score(self, X: Array, y: Array, sample_weight: Array | None = None, *,
              anchor_embeddings: Array | None = None) -> float:
        """Accuracy on (X, y), X embedded by the encoder of `anchor_embeddings`."""
        from sklearn.metrics import accuracy_score

        pred = self.predict(X, anchor_embeddings=anchor_embeddings)
        y = check_labels(y, "y", n=len(pred))
        return float(accuracy_score(y, pred, sample_weight=sample_weight))

    # ----------------------------------------------------------------------------- texts

    def fit_texts(self, texts: Sequence[str], y: Array, *, encoder: Any,
                  anchor_texts: Sequence[str]) -> StitchedClassifier:
        """Fit from raw texts: embed `texts` and `anchor_texts` with `encoder` and fit.

        encoder : a name for :func:`relreps.encoders.load_text_encoder` (built-in names,
            ``"hf:<local folder>"``), the path of a local sentence-transformers folder, an
            object with ``encode(texts) -> (n, d)`` array (any
            :class:`relreps.encoders.Encoder`), or a callable ``texts -> (n, d)``. The anchor
            texts are kept with the model, so any other encoder can embed them at predict time.
        """
        texts = check_texts(texts, "texts")
        try:
            anchor_texts = check_texts(anchor_texts, "anchor_texts", unique=True)
        except RelrepsError as e:
            raise AnchorError(str(e)) from None
        enc, name = _resolve_encoder(encoder)
        X = _embed(enc, texts, "texts")
        A = _embed(enc, anchor_texts, "anchor_texts")
        return self._fit(X, y, A, anchor_texts, None, anchor_texts=list(anchor_texts),
                         encoder=name)

    def _text_inputs(self, texts: Sequence[str], encoder: Any) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "head_")
        if self.anchor_texts_ is None:
            raise AnchorError("this model was not fitted with anchor texts (use fit_texts); "
                              "predict from embeddings with predict(X, anchor_embeddings=...)")
        if encoder is None:
            if self.encoder_ is None:
                raise RelrepsError("encoder is required: the model's own encoder was an object, "
                                   "not a name it could load again")
            encoder = self.encoder_
        enc, _ = _resolve_encoder(encoder)
        texts = check_texts(texts, "texts")
        return _embed(enc, texts, "texts"), _embed(enc, self.anchor_texts_, "anchor_texts_")

    def predict_texts(self, texts: Sequence[str], *, encoder: Any = None) -> np.ndarray:
        """Labels of raw `texts` embedded by `encoder` (default: the fit encoder): the model's
        anchor texts are embedded by the same encoder, so any encoder works zero-shot."""
        X, A = self._text_inputs(texts, encoder)
        return self.predict(X, anchor_embeddings=A)

    def score_texts(self, texts: Sequence[str], y: Array, *, encoder: Any = None) -> float:
        """Accuracy of :meth:`predict_texts` against `y`."""
        from sklearn.metrics import accuracy_score

        pred = self.predict_texts(texts, encoder=encoder)
        return float(accuracy_score(check_labels(y, "y", n=len(pred)), pred))

    # ----------------------------------------------------------------------------- persistence

    def _relreps_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON config, arrays) for :func:`relreps.persistence.save`."""
        from relreps.persistence import head_state, labels_state

        check_is_fitted(self, "head_")
        if not isinstance(self.head, str):
            raise FormatError("a StitchedClassifier with a callable head cannot be saved: the "
                              "callable is code. Use a named head ('logreg-cv', 'logreg', "
                              "'logreg-c<C>', 'mlp')")
        head_cfg, head_arrays = head_state(self.head_)
        classes_cfg, classes_arrays = labels_state(self.classes_, "classes")
        rs = self.random_state if isinstance(self.random_state, (int, np.integer)) and \
            not isinstance(self.random_state, bool) else None
        arrays = {"anchor_embeddings": np.ascontiguousarray(self.anchor_embeddings_),
                  **classes_arrays, **{f"head.{k}": v for k, v in head_arrays.items()}}
        if self.anchor_index_ is not None:
            arrays["anchor_index"] = np.asarray(self.anchor_index_, dtype=np.int64)
        param_index = None
        if self.anchor_index is not None:
            arrays["param.anchor_index"] = check_indices(self.anchor_index, "anchor_index")
            param_index = "array"
        ids = self.anchor_ids_
        if ids is not None and not all(isinstance(i, (str, int)) and not isinstance(i, bool)
                                       for i in ids):
            raise FormatError("anchor_ids must be strings or integers to be saved")
        config = {
            "params": {"head": self.head, "n_anchors": _jsonable_int(self.n_anchors),
                       "sampler": self.sampler, "similarity": self.similarity,
                       "center": self.center, "anchor_index": param_index,
                       "random_state": None if rs is None else int(rs)},
            "n_features_in": int(self.n_features_in_), "n_anchors": int(self.n_anchors_),
            "feature_names_in": (list(map(str, self.feature_names_in_))
                                 if hasattr(self, "feature_names_in_") else None),
            "center": self.center_, "center_decision": self.center_decision_,
            "anchor_ids": ids, "anchor_texts": self.anchor_texts_, "encoder": self.encoder_,
            "classes": classes_cfg, "head": head_cfg}
        if not isinstance(self.similarity, str):
            raise FormatError("only a registered similarity (by name) can be saved")
        return config, arrays

    @classmethod
    def _relreps_from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]
                            ) -> StitchedClassifier:
        """Rebuild a fitted model from :meth:`_relreps_state`'s output (validated)."""
        from relreps.persistence import expect, head_from_state, labels_from_state

        params = expect(config, "params", dict)
        p = {k: params.get(k) for k in ("head", "n_anchors", "sampler", "similarity", "center",
                                        "random_state")}
        model = cls(**p)
        check_head(model.head)
        if not isinstance(model.head, str):
            raise FormatError("head must be a name")
        _check_similarity(model.similarity)
        _check_center(model.center)
        if params.get("anchor_index") == "array":
            model.anchor_index = check_indices(arrays.pop("param.anchor_index"), "anchor_index")
        d = expect(config, "n_features_in", int)
        k = expect(config, "n_anchors", int)
        anchors = arrays.pop("anchor_embeddings")
        if anchors.ndim != 2 or anchors.shape != (k, d) or anchors.dtype.kind != "f":
            raise FormatError(f"anchor_embeddings has shape {anchors.shape} ({anchors.dtype}); "
                              f"expected ({k}, {d}) floats")
        check_array(anchors, "anchor_embeddings")
        model.anchor_embeddings_ = anchors
        model.anchor_index_ = (check_indices(arrays.pop("anchor_index"), "anchor_index")
                               if "anchor_index" in arrays else None)
        if model.anchor_index_ is not None and len(model.anchor_index_) != k:
            raise FormatError(f"anchor_index has {len(model.anchor_index_)} entries for {k} "
                              "anchors")
        ids = config.get("anchor_ids")
        model.anchor_ids_ = None if ids is None else _check_ids(ids, k)
        texts = config.get("anchor_texts")
        model.anchor_texts_ = None if texts is None else check_texts(texts, "anchor_texts")
        if model.anchor_texts_ is not None and len(model.anchor_texts_) != k:
            raise FormatError(f"{len(model.anchor_texts_)} anchor texts for {k} anchors")
        enc = config.get("encoder")
        if enc is not None and not isinstance(enc, str):
            raise FormatError("encoder must be a name or null")
        model.encoder_ = enc
        center = config.get("center")
        if center not in (None, "anchors"):
            raise FormatError(f"center must be null or 'anchors', got {center!r}")
        model.center_ = center
        model.center_decision_ = expect(config, "center_decision", dict)
        model.n_features_in_ = d
        names = config.get("feature_names_in")
        if names is not None:
            if not (isinstance(names, list) and len(names) == d
                    and all(isinstance(n, str) for n in names)):
                raise FormatError("feature_names_in must be a list of n_features_in strings")
            model.feature_names_in_ = np.asarray(names, dtype=object)
        model.n_anchors_ = k
        model.classes_ = labels_from_state(config.get("classes"), arrays, "classes")
        head_arrays = {key[5:]: arrays.pop(key) for key in list(arrays) if
                       key.startswith("head.")}
        model.head_ = head_from_state(expect(config, "head", dict), head_arrays,
                                      n_features=k, classes=model.classes_)
        if arrays:
            raise FormatError(f"unexpected arrays in the file: {sorted(arrays)}")
        model.C_ = _head_C(model.head_)
        return model


def _jsonable_int(v: Any) -> Any:
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v


def _check_ids(ids: Any, k: int) -> list[Any]:
    if isinstance(ids, (str, bytes)):
        raise InputTypeError("anchor_ids must be a sequence of ids, got a single string")
    try:
        out = list(np.asarray(ids).tolist()) if not isinstance(ids, list) else list(ids)
    except (TypeError, ValueError):
        raise InputTypeError("anchor_ids must be a sequence of ids") from None
    if len(out) != k:
        raise AnchorError(f"anchor_ids has {len(out)} entries for {k} anchors")
    return out


def _target_anchors(targets: Any, k: int) -> dict[str, np.ndarray]:
    if targets is None:
        return {}
    if isinstance(targets, Mapping):
        items = list(targets.items())
    elif isinstance(targets, Sequence) and not isinstance(targets, (str, bytes)):
        items = [(f"target {i}", t) for i, t in enumerate(targets)]
    else:
        raise InputTypeError("target_anchor_embeddings must be a mapping name -> (k, d) anchor "
                             "embeddings or a list of them")
    out = {}
    for name, t in items:
        a = to_numpy(check_array(t, f"target_anchor_embeddings[{name!r}]", min_rows=1))
        if len(a) != k:
            raise AnchorError(f"target_anchor_embeddings[{name!r}] has {len(a)} rows for {k} "
                              "anchors")
        out[str(name)] = a
    return out


def _resolve_encoder(encoder: Any) -> tuple[Any, str | None]:
    import os

    if isinstance(encoder, os.PathLike):
        encoder = os.fspath(encoder)
    if isinstance(encoder, str):  # a built-in name, "hf:<folder>" or a local model folder
        from relreps.encoders import load_text_encoder

        return load_text_encoder(encoder), encoder
    if encoder is None:
        raise InputTypeError("encoder is required (a name, an object with .encode, or a "
                             "callable texts -> embeddings)")
    if callable(getattr(encoder, "encode", None)):
        return encoder, None
    check_callable(encoder, "encoder")
    return encoder, None


def _embed(enc: Any, texts: list[str], name: str) -> np.ndarray:
    out = enc.encode(texts) if callable(getattr(enc, "encode", None)) else enc(texts)
    out = to_numpy(check_array(out, f"the encoder's embeddings of {name}"))
    if len(out) != len(texts):
        raise ShapeError(f"the encoder returned {len(out)} embeddings for {len(texts)} {name}")
    return out
