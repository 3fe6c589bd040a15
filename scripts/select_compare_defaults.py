"""The default similarity and anchor count of ``relreps compare`` / ``stitch fit``, chosen on
validation rows only (issue 14.1).

For every labelled pair of embedding files and every seed, the rows that ``relreps compare``
would hold out as test rows for that seed (:func:`relreps.workflow.compare.prepare_comparison`,
``test_size=0.25``) are removed first and never read again. The remaining training pool is handed
to :func:`relreps.workflow.compare.compare_spaces` (the code of ``relreps compare``) with every
candidate setting; compare splits that pool into fit / validation rows itself (seeded, stratified,
25% validation), draws the anchors from the fit rows, fits the ``logreg-cv`` heads on the fit rows
and reports stitched and non-stitched accuracy on the validation rows.

Candidates (:data:`CANDIDATES`): similarity ``cosine`` (no centring), ``cosine`` centred on the
anchor mean (``center="anchors"``) and ``whitened_cosine`` (``center="auto"``, the default; it
centres on the anchor mean itself), each with 300 anchors and with
:func:`~relreps.workflow.compare.default_n_anchors` (``n_anchors=None``).

Selection rule, fixed before looking at any number: per data set, the candidate with the highest
mean validation ``stitched_ratio`` (relative stitched / the source's non-stitched accuracy) over
both directions and all seeds; ties (within 0.001) go to the higher mean validation stitched
accuracy. The choice for both data sets together is the candidate with the highest mean of the
per-data-set means. The minimum ratio and the mean stitched accuracy are reported beside it.
Each (data set, seed, candidate) is saved to ``OUT/cells.jsonl`` as it finishes, and a rerun
resumes from there; ``--cached-only`` summarises the saved cells without running anything (a
candidate with missing cells is then ranked on the cells it has; the table counts them).

``--test LABEL`` evaluates one candidate the ordinary way (``compare_spaces`` on all items, so
on compare's held-out test rows): run it only for a candidate already chosen on validation rows.

    PYTHONPATH=src python scripts/select_compare_defaults.py \
        --pair trec e5-small=trec_e5-small.npy minilm-l3=trec_minilm-l3.npy trec_labels.txt \
        --pair ag_news wordllama=ag_wordllama.npy minilm-l6=ag_minilm-l6.npy ag_labels.txt \
        --seeds 0 1 2 --out runs/select-defaults
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relreps.workflow.compare import DEFAULT_ANCHORS, compare_spaces, prepare_comparison

#: compare's share of held-out rows, used both for the outer test rows and for the validation
#: rows inside the training pool.
HELD_OUT = 0.25
#: Ratios closer than this are a tie (broken by the mean stitched accuracy).
TIE = 1e-3


@dataclass(frozen=True)
class Candidate:
    """One setting of ``compare``: similarity, centring and anchor count (None: the default)."""

    similarity: str
    center: str | None
    n_anchors: int | None

    @property
    def label(self) -> str:
        """A short name, e.g. ``cosine/centred/300`` or ``whitened_cosine/auto/default``."""
        center = {None: "none", "anchors": "centred"}.get(self.center, self.center)
        return f"{self.similarity}/{center}/{self.n_anchors or 'default'}"


CANDIDATES: tuple[Candidate, ...] = tuple(
    Candidate(sim, center, n)
    for sim, center in (("cosine", None), ("cosine", "anchors"), ("whitened_cosine", "auto"))
    for n in (DEFAULT_ANCHORS, None))


def training_pool(spaces: Mapping[str, Any], labels: np.ndarray, seed: int) -> np.ndarray:
    """The rows ``compare_spaces(spaces, labels, seed=seed)`` may train on: all rows except the
    test rows it holds out for that seed (sorted)."""
    job = prepare_comparison(spaces, labels, seed=seed, test_size=HELD_OUT)
    return np.setdiff1d(np.arange(len(labels)), job.test)


def validation_run(spaces: Mapping[str, Any], labels: np.ndarray, seed: int, cand: Candidate,
                   pool: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One (seed, candidate): compare's fit / validation figures on the training pool of that seed
    (the test rows are removed before compare sees the data); one row per direction."""
    labels = np.asarray(labels)
    if pool is None:
        pool = training_pool(spaces, labels, seed)
    sub = {s: np.asarray(x[pool]) for s, x in spaces.items()}
    t0 = time.perf_counter()
    rep = compare_spaces(sub, labels[pool], similarity=cand.similarity, center=cand.center,
                         n_anchors=cand.n_anchors, seed=seed, test_size=HELD_OUT)
    wall = time.perf_counter() - t0
    return [_row(p, cand, seed, rep.stitching, wall) for p in rep.pairs]


def validation_runs(spaces: Mapping[str, Any], labels: Any, seeds: Sequence[int],
                    candidates: Sequence[Candidate] = CANDIDATES,
                    log: Callable[[str], None] = print,
                    done: Mapping[tuple[int, str], list[dict[str, Any]]] | None = None,
                    on_run: Callable[[int, str, list[dict[str, Any]]], None] | None = None,
                    cached_only: bool = False) -> list[dict[str, Any]]:
    """:func:`validation_run` for every seed and candidate; cells already in `done` (keyed by
    (seed, label)) are reused, and `on_run` is called after each new cell (to save it). With
    `cached_only`, missing cells are skipped (the summary then counts fewer cells)."""
    labels = np.asarray(labels)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        pool = training_pool(spaces, labels, seed)
        for cand in candidates:
            cell = (done or {}).get((seed, cand.label))
            if cell is None and cached_only:
                continue
            if cell is None:
                cell = validation_run(spaces, labels, seed, cand, pool)
                log(f"seed {seed} {cand.label}: {cell[0]['n_anchors']} anchors, "
                    f"{cell[0]['center']}, {cell[0]['wall_s']:.1f} s")
                if on_run is not None:
                    on_run(seed, cand.label, cell)
            rows += cell
    return rows


def held_out_runs(spaces: Mapping[str, Any], labels: Any, seeds: Sequence[int], cand: Candidate,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One candidate evaluated as ``relreps compare`` does: all items, compare's test rows."""
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        t0 = time.perf_counter()
        rep = compare_spaces(spaces, np.asarray(labels), similarity=cand.similarity,
                             center=cand.center, n_anchors=cand.n_anchors, seed=seed,
                             test_size=HELD_OUT)
        wall = time.perf_counter() - t0
        log(f"test seed {seed} {cand.label}: {wall:.1f} s")
        rows += [_row(p, cand, seed, rep.stitching, wall) for p in rep.pairs]
    return rows


def _row(p: Mapping[str, Any], cand: Candidate, seed: int, stitching: Mapping[str, Any] | None,
         wall: float) -> dict[str, Any]:
    st = stitching or {}
    return {"candidate": cand.label, "seed": seed, "source": p["source"], "target": p["target"],
            "n_anchors": p["n_anchors"], "center": p["center"],
            "non_stitched": p["relative_non_stitched_accuracy"],
            "stitched": p["relative_stitched_accuracy"], "ratio": p["stitched_ratio"],
            "relative_mrr": p["relative_mrr"], "n_fit": st.get("n_train"),
            "n_eval": st.get("n_test"), "wall_s": round(wall, 2)}


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per candidate: mean / min ratio, mean stitched and non-stitched accuracy over all rows."""
    out: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r["candidate"] for r in rows):
        rs = [r for r in rows if r["candidate"] == label]
        ratio = np.array([r["ratio"] for r in rs], dtype=float)
        out[label] = {"mean_ratio": float(np.mean(ratio)), "min_ratio": float(np.min(ratio)),
                      "mean_stitched": float(np.mean([r["stitched"] for r in rs])),
                      "mean_non_stitched": float(np.mean([r["non_stitched"] for r in rs])),
                      "n_anchors": sorted({int(r["n_anchors"]) for r in rs}), "cells": len(rs)}
    return out


def choose(summary: Mapping[str, Mapping[str, float]]) -> str:
    """The selection rule: highest mean ratio; within TIE, the higher mean stitched accuracy."""
    top = max(s["mean_ratio"] for s in summary.values())
    near = [k for k, s in summary.items() if s["mean_ratio"] >= top - TIE]
    return max(near, key=lambda k: summary[k]["mean_stitched"])


def choose_jointly(per_set: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """The candidate with the highest mean over data sets of the per-data-set mean ratio."""
    labels = list(next(iter(per_set.values())))
    joint = {k: {"mean_ratio": float(np.mean([s[k]["mean_ratio"] for s in per_set.values()])),
                 "mean_stitched": float(np.mean([s[k]["mean_stitched"]
                                                 for s in per_set.values()]))}
             for k in labels}
    return choose(joint)


def markdown(per_set: Mapping[str, Mapping[str, Mapping[str, Any]]], chosen: Mapping[str, str],
             joint: str | None) -> str:
    """The table of docs/own-models.md: one row per data set and candidate."""
    lines = ["| data set | candidate | anchors | mean ratio | min ratio | mean stitched "
             "| mean non-stitched | cells |", "|---|---|---|---|---|---|---|---|"]
    for name, summ in per_set.items():
        for label, s in summ.items():
            mark = "**" if label == chosen[name] else ""
            anchors = ", ".join(f"{n:,}" for n in s["n_anchors"])
            lines.append(f"| {name} | {mark}{label}{mark} | {anchors} | {mark}"
                         f"{s['mean_ratio']:.3f}{mark} | {s['min_ratio']:.3f} | "
                         f"{s['mean_stitched']:.3f} | {s['mean_non_stitched']:.3f} | "
                         f"{s['cells']} |")
    lines.append("")
    lines += [f"- {name}: validation picks **{label}**" for name, label in chosen.items()]
    if joint is not None:
        lines.append(f"- both data sets: validation picks **{joint}**")
    return "\n".join(lines) + "\n"


def _candidate(label: str) -> Candidate:
    for c in CANDIDATES:
        if c.label == label:
            return c
    raise SystemExit(f"unknown candidate {label!r}; one of {[c.label for c in CANDIDATES]}")


def _load_pair(spec: Sequence[str]) -> tuple[str, dict[str, np.ndarray], np.ndarray]:
    from relreps.io import read_array, read_labels

    name, *files, labels = spec
    spaces = {}
    for f in files:
        space, _, path = f.rpartition("=")
        spaces[space or Path(path).stem] = np.asarray(read_array(path))
    n = next(iter(spaces.values())).shape[0]
    return name, spaces, read_labels(labels, n=n)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", nargs=4, action="append", required=True,
                    metavar=("NAME", "[SPACE=]A.npy", "[SPACE=]B.npy", "LABELS"),
                    help="a data set: two embedding files of the same items and their labels")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--candidates", nargs="+", metavar="CANDIDATE",
                    help="only these candidates (labels as in the table; default: all)")
    ap.add_argument("--cached-only", action="store_true",
                    help="summarise the cells already in OUT/cells.jsonl; run nothing")
    ap.add_argument("--test", metavar="CANDIDATE",
                    help="evaluate this candidate on compare's test rows (all items) instead")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json / .md")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = [_load_pair(p) for p in args.pair]
    if args.test:
        cand = _candidate(args.test)
        rows = {name: held_out_runs(spaces, y, args.seeds, cand) for name, spaces, y in data}
        per_set = {name: summarise(r) for name, r in rows.items()}
        (args.out / "test.json").write_text(json.dumps({"rows": rows, "summary": per_set},
                                                       indent=1))
        print(json.dumps(per_set, indent=1))
        return 0
    cands = [_candidate(c) for c in args.candidates] if args.candidates else list(CANDIDATES)
    cache = args.out / "cells.jsonl"  # one line per (data set, seed, candidate): reruns resume
    done: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            c = json.loads(line)
            done[(c["data"], c["seed"], c["candidate"])] = c["rows"]

    def save(name: str) -> Callable[[int, str, list[dict[str, Any]]], None]:
        def on_run(seed: int, label: str, cell: list[dict[str, Any]]) -> None:
            with cache.open("a") as f:
                f.write(json.dumps({"data": name, "seed": seed, "candidate": label,
                                    "rows": cell}) + "\n")
        return on_run

    rows = {}
    for name, spaces, y in data:
        mine = {(sd, lb): r for (d, sd, lb), r in done.items() if d == name}
        rows[name] = validation_runs(spaces, y, args.seeds, cands, done=mine, on_run=save(name),
                                     cached_only=args.cached_only)
    per_set = {name: summarise(r) for name, r in rows.items()}
    chosen = {name: choose(s) for name, s in per_set.items()}
    joint = choose_jointly(per_set) if len(per_set) > 1 else None
    md = markdown(per_set, chosen, joint)
    (args.out / "results.json").write_text(json.dumps(
        {"rows": rows, "summary": per_set, "chosen": chosen, "joint": joint,
         "seeds": args.seeds}, indent=1))
    (args.out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
