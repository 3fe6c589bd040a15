"""How alike are these embedding spaces? ``relreps compare`` and :func:`compare_spaces`.

Given two or more embeddings of the same items (row i is item i in every space, any widths), the
comparison reports for every ordered pair (source, target):

- neighbourhood agreement: Jaccard@k and MRR@k of the source's vectors searched among the
  target's (absolute: only when the widths agree; relative: always, as both spaces are projected
  on the same anchor items), mutual kNN (the share of each item's k nearest neighbours found in
  both spaces; itself excluded), mean cosine, linear CKA;
- with labels, zero-shot stitching: a head (``"logreg-cv"``: its regularisation chosen by
  cross-validation on the training rows only) fitted on the source's space classifies the
  target's test rows, for relative spaces (the point), absolute spaces (baseline, equal widths
  only) and latent translation (the target translated into the source by the best of the
  orthogonal/lstsq/affine :class:`~relreps.translation.LatentTranslator`, chosen on a validation
  split of the training rows, never on test rows).

Protocol. With labels, the items are split by a seeded stratified split (``test_size``) into
training and test rows; anchors come from the training rows (an ``anchor_index`` is always put in
training); heads never see test rows. Without labels, anchors are drawn from all items.
``center="auto"`` decides centring once for all spaces from the anchors' anisotropy
(:func:`relreps.centering.resolve_center`) and the decision and its reason are in the report.

Scale. Up to :data:`MAX_EXACT_ITEMS` items every item except the anchors is a query of the
neighbourhood metrics (an anchor would find itself trivially in relative space); above it,
``n_queries`` seeded non-anchor queries are searched among **all** items (the report says so).
CKA and mean cosine use at most :data:`MAX_CKA_ROWS` seeded rows, stitching at most
:data:`MAX_TRAIN` training and :data:`MAX_TEST` test rows (seeded, stratified), and the 2-D figure
:data:`MAX_PLOT_POINTS` items. Above :data:`STREAM_ITEMS` items, or with a Dask ``client``, the
projections are streamed block by block to disk and never held whole in memory.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from relreps.errors import AnchorError, InputTypeError, NonFiniteError, RelrepsError, ShapeError
from relreps.report import plot_shared_bases, shared_basis
from relreps.validation import (
    check_array,
    check_choice,
    check_indices,
    check_int,
    check_labels,
    check_same_rows,
    is_dask,
    is_torch,
)

__all__ = ["compare_spaces", "prepare_comparison", "Comparison", "CompareReport", "SUMMARY_KEYS",
           "DEFAULT_SIMILARITY", "DEFAULT_ANCHORS", "default_n_anchors",
           "MAX_EXACT_ITEMS", "DEFAULT_QUERIES", "MAX_CKA_ROWS", "MAX_TRAIN", "MAX_TEST",
           "MAX_PLOT_POINTS", "STREAM_ITEMS", "cli_compare"]

#: Up to this many items, every item except the anchors is a query of the neighbourhood metrics.
MAX_EXACT_ITEMS = 10_000
#: Seeded queries (searched among all items) above MAX_EXACT_ITEMS items.
DEFAULT_QUERIES = 5_000
#: Rows (seeded sample) for CKA and mean cosine.
MAX_CKA_ROWS = 50_000
#: Training / test rows (seeded, stratified) for stitching.
MAX_TRAIN = 20_000
MAX_TEST = 10_000
#: Items drawn in the 2-D figure.
MAX_PLOT_POINTS = 2_000
#: Above this many items the projections are streamed to disk in blocks.
STREAM_ITEMS = 200_000
#: Default similarity of `compare` and `stitch fit`: cosine after whitening each space by its own
#: anchors (anchor mean, Ledoit-Wolf covariance); zero-shot, and it held the 0.95x / 0.85x goals
#: of docs/own-models.md on AG News and TREC where plain or centred cosine did not.
DEFAULT_SIMILARITY = "whitened_cosine"
#: Default number of anchors: ANCHORS_PER_DIM x the widest space, at least DEFAULT_ANCHORS and at
#: most MAX_DEFAULT_ANCHORS, and never more than half of the anchor pool (a whitening estimated
#: from anchors needs several anchors per dimension).
DEFAULT_ANCHORS = 300
ANCHORS_PER_DIM = 4
MAX_DEFAULT_ANCHORS = 1536


def default_n_anchors(widths: Sequence[int], pool: int) -> int:
    """The default anchor count for spaces of these widths and an anchor pool of `pool` items."""
    want = min(max(DEFAULT_ANCHORS, ANCHORS_PER_DIM * max(widths)), MAX_DEFAULT_ANCHORS)
    return int(min(want, pool // 2))

#: Keys of every pair's results (and of the summary); stitching keys are present with labels.
SUMMARY_KEYS = ("source", "target", "n_items", "n_anchors", "k", "center", "similarity",
                "n_queries", "absolute_jaccard", "absolute_mrr", "relative_jaccard",
                "relative_mrr", "absolute_cka_linear", "relative_cka_linear", "mutual_knn",
                "relative_mutual_knn", "absolute_mean_cosine", "relative_mean_cosine")
STITCH_KEYS = ("relative_non_stitched_accuracy", "relative_stitched_accuracy",
               "absolute_non_stitched_accuracy", "absolute_stitched_accuracy",
               "translation_method", "translation_stitched_accuracy",
               "translation_validation_accuracy", "stitched_ratio")
TRANSLATION_METHODS = ("orthogonal", "lstsq", "affine")

Log = Callable[[str], None]


# ------------------------------------------------------------------------------------ report

@dataclass
class CompareReport:
    """The result of :func:`compare_spaces`; :meth:`write` puts it in a folder.

    ``summary`` is the first ordered pair (spaces[0] -> spaces[1]); ``pairs`` holds every ordered
    pair with the same keys (:data:`SUMMARY_KEYS`, plus :data:`STITCH_KEYS` with labels).
    """

    names: list[str]
    summary: dict[str, Any]
    pairs: list[dict[str, Any]]
    center: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    stitching: dict[str, Any] | None = None
    plot: dict[str, Any] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What ``results.json`` holds (JSON-ready: NaN and inf become null)."""
        from relreps.experiments.base import _jsonable

        return _jsonable({"command": "compare", "spaces": self.names, "summary": self.summary,
                          "pairs": self.pairs, "center": self.center,
                          "settings": self.settings, "stitching": self.stitching,
                          "basis_correlation": self.plot.get("correlation"),
                          "notes": self.notes, "timings_s": self.timings})

    def to_markdown(self) -> str:
        """``results.md``: the summary, every pair, the centring decision, notes and figures."""
        from relreps.report import markdown_table

        s = self.summary
        lines = [f"# relreps compare: {', '.join(self.names)}", "",
                 f"{s['n_items']:,} items, {s['n_anchors']} anchors, k = {s['k']}, "
                 f"similarity {s['similarity']}, centring: {self.center.get('reason', '')}.", ""]
        lines += ["## Summary: " + f"{s['source']} -> {s['target']}", ""]
        rows = [[k, _fmt(s.get(k))] for k in (*SUMMARY_KEYS[7:], *STITCH_KEYS) if k in s]
        lines += [markdown_table(["metric", "value"], rows), ""]
        if len(self.pairs) > 2:
            keys = ["absolute_mrr", "relative_mrr", "absolute_jaccard", "relative_jaccard",
                    "mutual_knn", "relative_cka_linear"]
            if "relative_stitched_accuracy" in s:
                keys += ["relative_stitched_accuracy", "absolute_stitched_accuracy",
                         "translation_stitched_accuracy"]
            lines += ["## All ordered pairs", "",
                      markdown_table(["source -> target", *keys],
                                     [[f"{p['source']} -> {p['target']}",
                                       *(_fmt(p.get(k)) for k in keys)] for p in self.pairs]), ""]
        if self.stitching:
            lines += ["## Stitching accuracy (head fit on row, evaluated on column)", ""]
            for kind in ("relative", "absolute"):
                m = self.stitching.get(kind)
                if m:
                    body = [[f"**{a}**", *(_fmt(v) for v in row)]
                            for a, row in zip(self.names, m)]
                    lines += [f"{kind}:", "", markdown_table(["fit \\ eval", *self.names], body),
                              ""]
        lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        figs = self.plot.get("files", [])
        if figs:
            lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figs] + [""]
        return "\n".join(lines)

    def write(self, folder: str | os.PathLike) -> list[str]:
        """Write results.json, results.md and the figures into `folder`; return the figures."""
        import json

        from relreps.cache import atomic_write_bytes

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.plot["files"] = draw_figures(self, folder)
        atomic_write_bytes(folder / "results.json",
                           json.dumps(self.to_dict(), indent=2).encode())
        atomic_write_bytes(folder / "results.md", self.to_markdown().encode())
        return list(self.plot["files"])


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


# ------------------------------------------------------------------------------------ inputs

def _finite_rows_dask(x: Any, name: str) -> None:
    import dask.array as da

    ok = np.asarray(da.isfinite(x).all(axis=1).compute())
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise NonFiniteError(f"{name} contains NaN or inf values (rows "
                             f"{', '.join(map(str, bad[:5]))}{' ...' if bad.size > 5 else ''})")


def _as_host(x: Any, name: str) -> Any:
    """numpy (memmaps kept) or dask; torch tensors are copied to the CPU as numpy."""
    if is_torch(x):
        x = check_array(x, name)
        return x.detach().cpu().numpy()
    if is_dask(x):
        x = check_array(x, name, kinds=("dask",))
        if x.ndim == 2 and x.chunks[1] != (x.shape[1],):
            x = x.rechunk({1: -1})
        return x
    return check_array(x, name)


def _take_rows(x: Any, rows: np.ndarray) -> np.ndarray:
    """Rows of a numpy/memmap/dask array as an in-memory float array (sorted reads)."""
    from relreps.validation import release_pages

    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((rows.size, x.shape[1]), dtype=np.result_type(x.dtype, np.float32))
    if not isinstance(x, np.memmap):
        sub = x[rows[order]]
        out[order] = np.asarray(sub.compute() if is_dask(sub) else sub)
        return out
    # A memory map is read span by span, each span's pages released after its rows are copied:
    # a sample spread over the whole file would otherwise leave all of it resident.
    srt = rows[order]
    step = max(1, (64 << 20) // max(1, x.shape[1] * x.itemsize))
    for s in range(0, x.shape[0], step):
        lo, hi = np.searchsorted(srt, [s, s + step])
        if hi > lo:
            span = x[s:s + step]
            out[order[lo:hi]] = span[srt[lo:hi] - s]
            release_pages(span)
    return out


# ------------------------------------------------------------------------------------ job

class Comparison:
    """A validated comparison, ready to :meth:`run` (see :func:`prepare_comparison`)."""

    def __init__(self, spaces: dict[str, Any], labels: np.ndarray | None, *, anchor_rows:
                 np.ndarray, train: np.ndarray | None, test: np.ndarray | None, k: int,
                 similarity: str, center: Any, seed: int, n_queries: int | None,
                 client: Any, work_dir: Path | None, log: Log, settings: dict[str, Any],
                 notes: list[str]) -> None:
        self.spaces = spaces
        self.labels = labels
        self.anchor_rows = anchor_rows
        self.train, self.test = train, test
        self.k, self.similarity, self.center = k, similarity, center
        self.seed = seed
        self.n_queries = n_queries
        self.client = client
        self.work_dir = work_dir
        self.log = log
        self.settings = settings
        self.notes = notes
        self.names = list(spaces)
        self.n = next(iter(spaces.values())).shape[0]

    # ----------------------------------------------------------------- run
    def run(self) -> CompareReport:
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        from relreps.centering import resolve_center

        anchors = {s: _take_rows(x, self.anchor_rows) for s, x in self.spaces.items()}
        decision = resolve_center(self.center, anchors)
        center = decision.center
        self.log(f"anchors: {len(self.anchor_rows)}; {decision.reason}")

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix=".relreps-compare-") as tmp:
            rel = {s: self._project(s, x, anchors[s], center, Path(tmp))
                   for s, x in self.spaces.items()}
            timings["projection"] = time.perf_counter() - t0
            pairs = self._neighbourhoods(rel, timings)
            stitching = None
            if self.labels is not None:
                t0 = time.perf_counter()
                stitching = self._stitching(pairs, anchors, center)
                timings["stitching"] = time.perf_counter() - t0
            plot = self._plot_data(rel)
        for p in pairs:
            p["center"] = center or "none"
        timings["total"] = time.perf_counter() - t_all
        settings = dict(self.settings, center_decision=decision.to_dict())
        return CompareReport(names=self.names, summary=dict(pairs[0]), pairs=pairs,
                             center=decision.to_dict(), settings=settings, notes=self.notes,
                             stitching=stitching, plot=plot,
                             timings={k: round(v, 3) for k, v in timings.items()})

    # ----------------------------------------------------------------- projection
    def _project(self, name: str, x: Any, anchors: np.ndarray, center: Any, tmp: Path) -> Any:
        from relreps.projection import relative_projection

        a = anchors.astype(x.dtype if np.dtype(x.dtype).kind == "f" else np.float64, copy=False)
        self.log(f"projecting {name} ({x.shape[0]:,} x {x.shape[1]}) on {len(a)} anchors")
        if is_dask(x):
            from relreps.io import read_array, write_array

            r = relative_projection(x, a, similarity=self.similarity, center=center)
            # Computed once (by the workers, straight into a Zarr store on disk), read lazily.
            path = tmp / f"{len(os.listdir(tmp))}.zarr"
            write_array(path, r)
            return read_array(path, as_dask=True)
        if x.shape[0] > STREAM_ITEMS or isinstance(x, np.memmap):
            out = np.lib.format.open_memmap(tmp / f"{len(os.listdir(tmp))}.npy", mode="w+",
                                            dtype=np.result_type(x.dtype, a.dtype),
                                            shape=(x.shape[0], len(a)))
            step = max(1, (32 << 20) // max(1, x.shape[1] * x.itemsize))
            return relative_projection(x, a, similarity=self.similarity, center=center,
                                       chunk_size=step, out=out)
        return relative_projection(np.asarray(x), a, similarity=self.similarity, center=center)

    # ----------------------------------------------------------------- neighbourhoods
    def _neighbourhoods(self, rel: dict[str, Any], timings: dict[str, float]
                        ) -> list[dict[str, Any]]:
        import warnings

        with warnings.catch_warnings():
            # torch's note on wrapping read-only memory maps (they are only read): not news
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return self._neighbourhoods_inner(rel, timings)

    def _neighbourhoods_inner(self, rel: dict[str, Any], timings: dict[str, float]
                              ) -> list[dict[str, Any]]:
        from relreps.metrics import cka, mean_cosine
        from relreps.progress import progress

        rng = np.random.default_rng(self.seed)
        # Anchors are never queries: an anchor's relative vector peaks at its own position in
        # every space, so it would find itself trivially and inflate the relative scores.
        free = np.setdiff1d(np.arange(self.n), self.anchor_rows)
        if free.size <= self.k:
            free = np.arange(self.n)
        queries = None if free.size == self.n else free
        if self.n_queries is not None:
            queries = np.sort(rng.choice(free, size=min(self.n_queries, free.size),
                                         replace=False))
        cka_rows = np.sort(rng.choice(self.n, size=min(self.n, MAX_CKA_ROWS), replace=False))
        sample_abs = {s: _take_rows(x, cka_rows) for s, x in self.spaces.items()}
        sample_rel = {s: _take_rows(x, cka_rows) for s, x in rel.items()}
        abs_ = {s: self._for_search(x) for s, x in self.spaces.items()}
        rel_ = {s: self._for_search(x) for s, x in rel.items()}
        sym: dict[tuple[str, str], dict[str, Any]] = {}
        pairs = []
        t_knn = t_cka = 0.0
        ordered = [(a, b) for a in self.names for b in self.names if a != b]
        for a, b in progress(ordered, desc="compare: pairs", total=len(ordered)):
            self.log(f"neighbourhoods {a} -> {b}")
            p: dict[str, Any] = {"source": a, "target": b, "n_items": int(self.n),
                                 "n_anchors": int(len(self.anchor_rows)), "k": self.k,
                                 "center": None, "similarity": self.similarity,
                                 "n_queries": None if self.n_queries is None
                                 else int(queries.size)}
            t0 = time.perf_counter()
            same_width = self.spaces[a].shape[1] == self.spaces[b].shape[1]
            if same_width:
                m = self._retrieval(abs_[a], abs_[b], queries)
                p["absolute_jaccard"], p["absolute_mrr"] = m["jaccard"], m["mrr"]
            else:
                p["absolute_jaccard"] = p["absolute_mrr"] = None
            m = self._retrieval(rel_[a], rel_[b], queries)
            p["relative_jaccard"], p["relative_mrr"] = m["jaccard"], m["mrr"]
            key = tuple(sorted((a, b)))
            if key not in sym:
                sym[key] = {"mutual_knn": self._mutual(abs_[a], abs_[b], queries),
                            "relative_mutual_knn": self._mutual(rel_[a], rel_[b], queries)}
                t_knn += time.perf_counter() - t0
                t0 = time.perf_counter()
                sym[key].update({
                    "absolute_cka_linear": cka(sample_abs[a], sample_abs[b]),
                    "relative_cka_linear": cka(sample_rel[a], sample_rel[b]),
                    "absolute_mean_cosine": mean_cosine(sample_abs[a], sample_abs[b])
                    if same_width else None,
                    "relative_mean_cosine": mean_cosine(sample_rel[a], sample_rel[b])})
                t_cka += time.perf_counter() - t0
            else:
                t_knn += time.perf_counter() - t0
            p.update(sym[key])
            pairs.append({k: p.get(k) for k in SUMMARY_KEYS})
        timings["neighbourhoods"] = t_knn
        timings["cka_and_cosine"] = t_cka
        return pairs

    def _for_search(self, x: Any) -> Any:
        """The array handed to the neighbour search: a dask array (searched block by block, in
        bounded memory) for lazy inputs and above STREAM_ITEMS items where the search accepts
        dask arrays; else the numpy (memory-mapped) array."""
        if not (is_dask(x) or x.shape[0] > STREAM_ITEMS):
            return x
        from relreps._backend import to_dask

        return to_dask(x)

    def _retrieval(self, source: Any, target: Any, queries: np.ndarray | None) -> dict[str, float]:
        from relreps.metrics import retrieval_metrics

        return retrieval_metrics(source, target, self.k, queries=queries)

    def _mutual(self, a: Any, b: Any, queries: np.ndarray | None) -> float:
        from relreps.metrics import knn_indices, mutual_knn

        if queries is None:
            return float(mutual_knn(a, b, self.k))
        # Sampled queries (searched among all items, each excluding itself), the statistic of
        # relreps.metrics.mutual_knn restricted to the query rows.
        qa, qb = a[queries], b[queries]
        if is_dask(a):  # computed first: see relreps.neighbors._gathered
            from relreps.neighbors import _gathered

            qa, qb = _gathered(qa), _gathered(qb)
        na = knn_indices(qa, a, self.k, exclude=queries)
        nb = knn_indices(qb, b, self.k, exclude=queries)
        na, nb = np.asarray(na), np.asarray(nb)
        inter = (na[:, :, None] == nb[:, None, :]).any(-1).sum(-1)
        return float((inter / self.k).mean())

    # ----------------------------------------------------------------- stitching
    def _stitching(self, pairs: list[dict[str, Any]], anchors: dict[str, np.ndarray],
                   center: Any) -> dict[str, Any]:
        from sklearn.model_selection import train_test_split

        from relreps.stitching import make_head, stitching_matrix
        from relreps.translation import LatentTranslator

        y = self.labels
        train, test = self.train, self.test
        pos = {int(r): i for i, r in enumerate(train)}
        anchor_pos = np.asarray([pos[int(r)] for r in self.anchor_rows])
        self.log(f"stitching: {len(train):,} training and {len(test):,} test items, head "
                 "logreg-cv")
        data = {s: (_take_rows(x, train), _take_rows(x, test)) for s, x in self.spaces.items()}
        y_tr, y_te = y[train], y[test]

        def head(seed: int) -> Any:
            return make_head("logreg-cv", seed)

        common = {"seeds": (self.seed,), "metrics": ("accuracy",), "head": head}
        rel = stitching_matrix(data, y_tr, y_te, anchors=anchor_pos, space="relative",
                               similarity=self.similarity, center=center, **common)
        ab = stitching_matrix(data, y_tr, y_te, space="absolute", **common)
        rel_m, ab_m = _matrix(rel, self.names), _matrix(ab, self.names)

        # Latent translation: the target's vectors translated into the source, read by a head
        # fit on the source's absolute training rows minus a validation split; the method is the
        # best on that validation split.
        fit_i, val_i = train_test_split(np.arange(len(train)), test_size=0.2, stratify=y_tr,
                                        random_state=self.seed)
        heads = {}
        for s in self.names:
            self.log(f"translation head on {s}")
            heads[s] = head(self.seed).fit(data[s][0][fit_i], y_tr[fit_i])
        for p in pairs:
            i, j = self.names.index(p["source"]), self.names.index(p["target"])
            src, tgt = p["source"], p["target"]
            p["relative_non_stitched_accuracy"] = rel_m[i][i]
            p["relative_stitched_accuracy"] = rel_m[i][j]
            p["absolute_non_stitched_accuracy"] = ab_m[i][i]
            p["absolute_stitched_accuracy"] = ab_m[i][j]
            val = {}
            fitted = {}
            for method in TRANSLATION_METHODS:
                tr = LatentTranslator(method).fit(anchors[tgt], anchors[src])
                fitted[method] = tr
                pred = heads[src].predict(tr.transform(data[tgt][0][val_i]))
                val[method] = float(np.mean(pred == y_tr[val_i]))
            best = max(TRANSLATION_METHODS, key=lambda m: (val[m], -TRANSLATION_METHODS.index(m)))
            pred = heads[src].predict(fitted[best].transform(data[tgt][1]))
            p["translation_method"] = best
            p["translation_stitched_accuracy"] = float(np.mean(pred == y_te))
            p["translation_validation_accuracy"] = val
            ns = p["relative_non_stitched_accuracy"]
            p["stitched_ratio"] = (p["relative_stitched_accuracy"] / ns) if ns else None
        return {"relative": rel_m, "absolute": ab_m, "names": self.names,
                "n_train": int(len(train)), "n_test": int(len(test)),
                "n_validation": int(len(val_i)), "head": "logreg-cv"}

    # ----------------------------------------------------------------- figure data
    def _plot_data(self, rel: dict[str, Any]) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed + 1)
        pool = self.test if self.test is not None else np.arange(self.n)
        rows = np.sort(rng.choice(pool, size=min(len(pool), MAX_PLOT_POINTS), replace=False))
        first = self.names[0]
        out: dict[str, Any] = {"rows": rows, "absolute": {}, "relative": {}, "correlation": {}}
        for kind, spaces in (("absolute", self.spaces), ("relative", rel)):
            res = shared_basis({s: _take_rows(spaces[s], rows) for s in self.names}, first)
            out[kind] = res["coords"]
            out["correlation"][kind] = res["correlation"]
        if self.labels is not None:
            out["color"] = self.labels[rows]
        else:
            out["color"] = out["absolute"][first][:, 0]
        return out


def _matrix(result: Any, names: Sequence[str]) -> list[list[float | None]]:
    """Accuracy matrix [fit][eval] from a StitchingResult (None where a cell cannot exist)."""
    order, mean, _ = result.matrix("accuracy")
    idx = [list(order).index(s) for s in names]
    return [[None if not np.isfinite(mean[i, j]) else float(mean[i, j]) for j in idx]
            for i in idx]


# ------------------------------------------------------------------------------------ API

def prepare_comparison(spaces: Mapping[str, Any], labels: Any = None, *,
                       n_anchors: int | None = None, anchor_index: Any = None,
                       sampler: str | None = None, k: int = 10,
                       similarity: str = DEFAULT_SIMILARITY,
                       center: str | None = "auto", seed: int = 0, n_queries: int | None = None,
                       test_size: float = 0.25, client: Any = None,
                       work_dir: str | os.PathLike | None = None, log: Log | None = None
                       ) -> Comparison:
    """Validate everything :func:`compare_spaces` needs and choose the rows; compute nothing
    long. Raises a :class:`~relreps.errors.RelrepsError` subclass naming the problem."""
    from relreps import similarity as _sim
    from relreps.validation import check_float

    if log is None:
        def log(msg: str) -> None:
            return None
    if not isinstance(spaces, Mapping):
        raise InputTypeError("spaces must be a dict mapping a name to an (n, d) array")
    if len(spaces) < 2:
        raise ShapeError(f"compare needs at least two spaces, got {len(spaces)}")
    names = [str(s) for s in spaces]
    if len(set(names)) != len(names):
        raise RelrepsError(f"space names must be distinct, got {names}")
    arrays = {str(s): _as_host(x, f"space {s!r}") for s, x in spaces.items()}
    n = check_same_rows(arrays)
    for s, x in arrays.items():
        if is_dask(x):
            _finite_rows_dask(x, f"space {s!r}")
    k = check_int(k, "k", min_value=1)
    if n < 4:
        raise ShapeError(f"compare needs at least 4 items, got {n}")
    if k > n - 2:
        raise RelrepsError(f"k must be at most {n - 2} for {n} items (each item's neighbours "
                           f"exclude itself), got {k}")
    sim = _sim.get(similarity)
    if center is None or (isinstance(center, str) and center == "none"):
        center = None
    check_choice(center, "center", (None, "auto", "anchors"))
    seed = check_int(seed, "seed", min_value=0)
    test_size = check_float(test_size, "test_size", min_value=0.0, max_value=1.0,
                            min_inclusive=False, max_inclusive=False)
    n_queries_eff = DEFAULT_QUERIES if n_queries is None else \
        check_int(n_queries, "n_queries", min_value=1)
    if n <= MAX_EXACT_ITEMS or n_queries_eff >= n:
        n_queries_eff = None  # every non-anchor item is a query
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    y = None
    forced = None
    if anchor_index is not None:
        forced = check_indices(anchor_index, "anchor_index", n=n, unique=True, min_size=2)
        if n_anchors is not None:
            raise RelrepsError("give either n_anchors or anchor_index, not both")
    train = test = None
    if labels is not None:
        y = check_labels(labels, "labels", n=n)
        train, test = _split(y, forced, test_size, seed)
        pool = train
        if len(train) > MAX_TRAIN or len(test) > MAX_TEST:
            train, test = _cap(y, train, test, forced, seed)
            notes.append(f"stitching used a seeded stratified sample of {len(train):,} training "
                         f"and {len(test):,} test items (limits {MAX_TRAIN:,} / {MAX_TEST:,})")
            pool = train
    else:
        pool = np.arange(n)
    if forced is not None:
        anchor_rows = forced
        if sampler is not None:
            raise RelrepsError("sampler applies to sampled anchors, not to an anchor_index")
        sampler_used = "index"
    else:
        default = default_n_anchors([x.shape[1] for x in arrays.values()], len(pool))
        n_anchors = default if n_anchors is None else check_int(n_anchors, "n_anchors")
        if n_anchors < 2:
            raise AnchorError(f"at least 2 anchors are needed, got {n_anchors}"
                              + (f" ({len(pool)} items to draw from)" if n_anchors == default
                                 else ""))
        if n_anchors > len(pool):
            raise AnchorError(f"asked for {n_anchors} anchors but only {len(pool)} "
                              f"{'training ' if y is not None else ''}items are available")
        sampler_used = ("stratified" if y is not None else "uniform") if sampler is None \
            else check_choice(sampler, "sampler", ("uniform", "stratified", "kmeans",
                                                   "farthest_point"))
        if sampler_used == "stratified" and y is None:
            raise AnchorError("the stratified sampler needs labels")
        anchor_rows = pool[_sample(arrays[names[0]], pool, n_anchors, sampler_used,
                                   None if y is None else y[pool], seed)]
    if sim.min_anchors and len(anchor_rows) < sim.min_anchors:
        raise AnchorError(f"{sim.name} similarity needs at least {sim.min_anchors} anchors, "
                          f"got {len(anchor_rows)}")
    if n_queries_eff is not None:
        notes.append(f"{n:,} items: neighbourhood metrics use {n_queries_eff:,} seeded "
                     f"non-anchor queries searched among all {n:,} items (every non-anchor "
                     f"item is a query up to {MAX_EXACT_ITEMS:,})")
    if n > MAX_CKA_ROWS:
        notes.append(f"CKA and mean cosine use a seeded sample of {MAX_CKA_ROWS:,} items")
    widths = {s: int(x.shape[1]) for s, x in arrays.items()}
    if len(set(widths.values())) > 1:
        notes.append("the widths differ (" + ", ".join(f"{s} {w}" for s, w in widths.items())
                     + "): absolute neighbourhoods, cosine and stitching exist only between "
                       "spaces of equal width (n/a elsewhere); CKA and mutual kNN compare any "
                       "widths")
    del rng
    settings = {"k": k, "similarity": sim.name, "center_requested": center or "none",
                "seed": seed, "sampler": sampler_used, "n_anchors": int(len(anchor_rows)),
                "n_queries": n_queries_eff, "test_size": test_size if y is not None else None,
                "widths": widths, "n_items": int(n),
                "limits": {"max_exact_items": MAX_EXACT_ITEMS, "max_cka_rows": MAX_CKA_ROWS,
                           "max_train": MAX_TRAIN, "max_test": MAX_TEST,
                           "stream_items": STREAM_ITEMS}}
    return Comparison(arrays, y, anchor_rows=np.asarray(anchor_rows, dtype=np.int64),
                      train=train, test=test, k=k, similarity=sim.name, center=center,
                      seed=seed, n_queries=n_queries_eff, client=client,
                      work_dir=None if work_dir is None else Path(work_dir), log=log,
                      settings=settings, notes=notes)


def _split(y: np.ndarray, forced: np.ndarray | None, test_size: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    if forced is not None:
        rows = np.setdiff1d(rows, forced)
    classes, counts = np.unique(y[rows], return_counts=True)
    if len(np.unique(y)) < 2:
        raise RelrepsError("labels hold a single class; stitching needs at least two")
    if counts.min() < 2:
        raise RelrepsError(f"class {classes[counts.argmin()]!r} has {counts.min()} item(s) "
                           "outside the anchors; the stratified train/test split needs at least "
                           "2 per class")
    n_test = max(len(classes), int(round(test_size * len(rows))))
    if len(rows) - n_test < len(classes):
        raise RelrepsError(f"{len(rows)} items are too few for a stratified train/test split "
                           f"over {len(classes)} classes")
    tr, te = train_test_split(rows, test_size=n_test, stratify=y[rows], random_state=seed)
    if forced is not None:
        tr = np.concatenate([tr, forced])
    return np.sort(tr), np.sort(te)


def _cap(y: np.ndarray, train: np.ndarray, test: np.ndarray, forced: np.ndarray | None,
         seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    def sub(rows: np.ndarray, n: int) -> np.ndarray:
        if len(rows) <= n:
            return rows
        keep, _ = train_test_split(rows, train_size=n, stratify=y[rows], random_state=seed)
        return np.sort(keep)

    if forced is not None:
        rest = np.setdiff1d(train, forced)
        train = np.sort(np.concatenate([sub(rest, max(1, MAX_TRAIN - len(forced))), forced]))
    else:
        train = sub(train, MAX_TRAIN)
    return train, sub(test, MAX_TEST)


def _sample(x: Any, pool: np.ndarray, n: int, method: str, y: np.ndarray | None, seed: int
            ) -> np.ndarray:
    """Positions (into `pool`) of `n` anchors drawn by `method` (from the first space)."""
    from relreps.anchors import sample_anchors

    if method in ("uniform", "stratified"):
        xs: Any = np.zeros((len(pool), 1))  # these samplers only use the number of rows
    elif len(pool) == x.shape[0]:
        xs = x
    else:
        xs = _take_rows(x, pool)
    idx = sample_anchors(xs, n, method=method, y=y, random_state=seed)
    return np.asarray(idx, dtype=np.int64)


def compare_spaces(spaces: Mapping[str, Any], labels: Any = None, *,
                   n_anchors: int | None = None, anchor_index: Any = None,
                   sampler: str | None = None, k: int = 10,
                   similarity: str = DEFAULT_SIMILARITY,
                   center: str | None = "auto", seed: int = 0, n_queries: int | None = None,
                   test_size: float = 0.25, client: Any = None,
                   work_dir: str | os.PathLike | None = None, log: Log | None = None
                   ) -> CompareReport:
    """Compare embedding spaces of the same items; see the module docstring for the protocol.

    Parameters
    ----------
    spaces : name -> (n, d) array (numpy, ``np.memmap``, torch or dask); row i is the same item
        in every space; widths may differ. At least two.
    labels : (n,) labels of the items, optional: enables stitching and translation.
    n_anchors : anchors drawn by `sampler` (default :func:`default_n_anchors`: 4 per dimension of
        the widest space, 300 to 1,536, at most half of the anchor pool), or
    anchor_index : the rows to use as anchors.
    sampler : ``"uniform"``, ``"stratified"`` (default with labels), ``"kmeans"``,
        ``"farthest_point"`` (the last two run on the first space).
    k : neighbourhood size.
    similarity : see :mod:`relreps.similarity` (default ``"whitened_cosine"``; ``"cosine"`` is
        the paper's).
    center : ``"auto"`` (decided jointly from the anchors' anisotropy), ``"anchors"`` or
        ``None``/``"none"``.
    seed : seeds the anchors, the train/test split and the query sample.
    n_queries : queries of the neighbourhood metrics above :data:`MAX_EXACT_ITEMS` items.
    test_size : share of the items held out as test rows for stitching.
    client : a ``dask.distributed.Client`` (dask inputs then run on its cluster).
    work_dir : where streamed projections are kept while the comparison runs (default: the
        system's temporary folder).
    log : called with progress messages.

    Returns
    -------
    CompareReport
    """
    return prepare_comparison(spaces, labels, n_anchors=n_anchors, anchor_index=anchor_index,
                              sampler=sampler, k=k, similarity=similarity, center=center,
                              seed=seed, n_queries=n_queries, test_size=test_size,
                              client=client, work_dir=work_dir, log=log).run()


# ------------------------------------------------------------------------------------ figures

def draw_figures(report: CompareReport, folder: Path) -> list[str]:
    """neighbourhoods.png, spaces_2d.png and (with labels) stitching.png; return their names."""
    files = [_figure_neighbourhoods(report, folder), _figure_spaces(report, folder)]
    if report.stitching:
        files.append(_figure_stitching(report, folder))
    return [f for f in files if f]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    return Figure(figsize=(width, height))


def _figure_neighbourhoods(report: CompareReport, folder: Path) -> str:
    pairs = report.pairs
    metrics = [("jaccard", "Jaccard@k"), ("mrr", "MRR@k"), ("mutual_knn", "mutual kNN@k")]
    fig = _figure(4.5 * len(metrics) + 1, 3.8)
    axes = fig.subplots(1, len(metrics))
    labels = [f"{p['source']}\n-> {p['target']}" for p in pairs]
    xs = np.arange(len(pairs))
    for ax, (key, title) in zip(np.atleast_1d(axes), metrics):
        for off, kind, color in ((-0.2, "absolute", "#bbbbbb"), (0.2, "relative", "#2a7ab9")):
            field_ = key if (key == "mutual_knn" and kind == "absolute") else f"{kind}_{key}"
            vals = [p.get(field_) for p in pairs]
            heights = [v if v is not None else 0.0 for v in vals]
            bars = ax.bar(xs + off, heights, width=0.4, color=color, label=kind)
            for b, v in zip(bars, vals):
                if v is None:
                    ax.text(b.get_x() + b.get_width() / 2, 0.02, "n/a", ha="center",
                            fontsize=7, rotation=90)
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{title} (k = {report.summary['k']})")
        ax.legend(fontsize=8)
    fig.suptitle("Neighbourhood agreement: absolute vs relative")
    fig.tight_layout()
    fig.savefig(folder / "neighbourhoods.png", dpi=110)
    return "neighbourhoods.png"


def _figure_spaces(report: CompareReport, folder: Path) -> str:
    plot = report.plot
    names = report.names
    fig = _figure(3.2 * len(names), 6.4)
    bases = {kind: {"reference": names[0], "coords": plot[kind],
                    "correlation": plot["correlation"].get(kind, {})}
             for kind in ("absolute", "relative")}
    plot_shared_bases(fig, bases, plot["color"], names)
    colour = "label" if report.stitching else f"{names[0]}'s first coordinate"
    fig.suptitle(f"Every space on {names[0]}'s 2-D PCA basis, fitted on {names[0]} and applied "
                 f"unchanged to the others (nothing aligned); colour: {colour}", fontsize=9)
    fig.tight_layout()
    fig.savefig(folder / "spaces_2d.png", dpi=110)
    return "spaces_2d.png"


def _figure_stitching(report: CompareReport, folder: Path) -> str:
    st = report.stitching
    names = report.names
    kinds = [k for k in ("relative", "absolute") if st.get(k)]
    fig = _figure(1.0 * len(names) * len(kinds) + 3.5, 1.0 * len(names) + 2.2)
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    im = None
    for ax, kind in zip(axes, kinds):
        m = np.asarray([[np.nan if v is None else v for v in row] for row in st[kind]],
                       dtype=float)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("evaluated on")
        ax.set_ylabel("head fit on")
        ax.set_title(f"{kind} accuracy", fontsize=9)
        for i in range(len(names)):
            for j in range(len(names)):
                txt = "n/a" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="k" if np.isnan(m[i, j]) or m[i, j] >= 0.6 else "w")
    if im is not None:
        fig.colorbar(im, ax=list(axes), fraction=0.046)
    fig.savefig(folder / "stitching.png", dpi=110, bbox_inches="tight")
    return "stitching.png"


# ------------------------------------------------------------------------------------ CLI

def _space_names(specs: Sequence[str], names: str | None) -> list[str]:
    from relreps.errors import OptionError
    from relreps.io import split_spec

    if names:
        out = [s.strip() for s in names.split(",")]
        if len(out) != len(specs) or not all(out) or len(set(out)) != len(out):
            raise OptionError(f"--names needs {len(specs)} distinct comma-separated names, got "
                              f"{names!r}")
        return out
    out = []
    for spec in specs:
        path, key = split_spec(spec)
        base = path.name[: -len(path.suffix)] if path.suffix else path.name
        base = f"{base}:{key}" if key else base
        name, i = base, 2
        while name in out:
            name, i = f"{base}-{i}", i + 1
        out.append(name)
    return out


def cli_compare(args: Any) -> int:
    """``relreps compare`` (see ``relreps compare --help``)."""
    import json
    import sys

    from relreps.distributed import cluster_client
    from relreps.experiments.base import _jsonable, _versions
    from relreps.io import read_array, read_index, read_labels, split_spec
    from relreps.progress import quiet
    from relreps.runs import prepare_run

    def log(msg: str) -> None:
        if not quiet():
            print(f"relreps compare: {msg}", file=sys.stderr, flush=True)

    if len(args.spaces) < 2:
        raise ShapeError("compare needs at least two embedding files")
    names = _space_names(args.spaces, args.names)
    if args.workers is not None:
        check_int(args.workers, "--workers", min_value=1)
    run = prepare_run(args.out, name="compare", force=args.force)
    with run:
        t0 = time.perf_counter()
        lazy = args.scheduler is not None or args.workers is not None
        arrays = {}
        for name, spec in zip(names, args.spaces):
            as_dask = lazy or split_spec(spec)[0].suffix.lower() == ".zarr"
            arrays[name] = read_array(spec, mmap=True, as_dask=as_dask)
        n = int(next(iter(arrays.values())).shape[0])
        labels = read_labels(args.labels, n=n) if args.labels else None
        index = read_index(args.anchor_index, n=n) if args.anchor_index else None
        with cluster_client(args.scheduler, args.workers) as client:
            job = prepare_comparison(arrays, labels, n_anchors=args.anchors, anchor_index=index,
                                     sampler=args.sampler, k=args.k, similarity=args.similarity,
                                     center=args.center, seed=args.seed, n_queries=args.queries,
                                     client=client, work_dir=run.stage.parent, log=log)
            run.started()
            report = job.run()
        figures = report.write(run.stage)
        inputs = {}
        for name, spec in zip(names, args.spaces):
            path, key = split_spec(spec)
            x = arrays[name]
            inputs[name] = {"spec": spec, "path": str(path), "key": key,
                            "shape": [int(v) for v in x.shape], "dtype": str(x.dtype)}
        meta = {"command": "compare", "argv": sys.argv[1:], "spaces": inputs,
            "labels": args.labels, "anchor_index": args.anchor_index,
            "scheduler": args.scheduler, "workers": args.workers, "settings": report.settings,
            "wall_time_s": round(time.perf_counter() - t0, 3),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": _versions(),
            "figures": figures}
        (run.stage / "meta.json").write_text(json.dumps(_jsonable(meta), indent=2),
                                             encoding="utf-8")
    s = report.summary
    print(f"{s['source']} vs {s['target']}: {s['n_items']:,} items, {s['n_anchors']} anchors, "
          f"k = {s['k']}, {report.center.get('reason', '')}")
    for key in ("absolute_mrr", "relative_mrr", "absolute_jaccard", "relative_jaccard",
                "mutual_knn", "absolute_cka_linear", "relative_cka_linear", *STITCH_KEYS):
        if key in s:
            print(f"  {key:34s} {_fmt(s[key])}")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"Wrote {run.path}/results.md, results.json, meta.json and {len(figures)} figure(s).")
    return 0
