"""The head comparison of docs/stitching.md: which classifier head transfers across encoders.

Relative stitching (cosine to 300 uniformly drawn anchors, `center="auto"`) between the compare
experiment's three text encoders (all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2,
multilingual-e5-small) on its full-scale subsets (AG News 1,500 train / 1,000 test, TREC 2,000 /
499; `relreps.experiments.compare.text_spaces`), 2 seeds (anchor draw and head seed), every head
fitted on each encoder's training rows and evaluated on all three encoders' test rows
(`relreps.stitching.stitching_matrix`). Printed: mean non-stitched (3 cells) and stitched (6
cells) accuracy, mean ± std over the seeds, their ratio, and the C of each fitted
head.

Heads (`relreps.stitching.make_head`):

- ``logreg-cv``: the validation-only protocol's head (docs/protocol.md): C chosen by stratified
  5-fold cross-validation on the fit space's training rows, one-standard-error rule;
- ``logreg`` (C = 1, scikit-learn's default) and ``logreg-c0.01`` are heads being compared, with
  a fixed C; 0.01 was first picked in a quick check on evaluation data (the text experiment's old
  head), so that row is not a result under the protocol;
- with ``--variants``, two other rules of the same cross-validation (still on training rows
  only): the C of the best mean score instead of the one-standard-error rule, and log-loss
  instead of accuracy as the cross-validated score.

    PYTHONPATH=src python scripts/stitching_heads.py                  # both data sets
    PYTHONPATH=src python scripts/stitching_heads.py --datasets trec --variants

Embeddings are cached under $RELREPS_CACHE (computed on first use: minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from relreps.stitching import make_head, stitching_matrix

#: Named heads of `make_head`, in the order of the table.
NAMED_HEADS = ("logreg", "logreg-c0.01", "logreg-cv")


def cv_variant(**params: Any) -> Callable[[int | None], Any]:
    """A head factory: ``make_head("logreg-cv")`` with its CVLogisticRegression's `params` set
    (e.g. ``rule="best"``, ``scoring="neg_log_loss"``); C is still chosen on the fit rows."""
    def factory(seed: int | None) -> Any:
        pipe = make_head("logreg-cv", seed)
        pipe[-1].set_params(**params)
        return pipe
    return factory


#: The cross-validation variants of ``--variants``: label -> CVLogisticRegression parameters.
VARIANTS = {"logreg-cv, best mean score (no 1-SE rule)": {"rule": "best"},
            "logreg-cv, log-loss scored": {"scoring": "neg_log_loss"}}


def compare_heads(dataset: str, heads: dict[str, Any], seeds: Sequence[int] = (0, 1),
                  n_anchors: int = 300) -> list[dict[str, Any]]:
    """One row per head: non-stitched and stitched mean accuracy, ratio, chosen C, time."""
    from relreps.experiments.compare import text_spaces

    spaces, y_tr, y_te = text_spaces("full", dataset)
    rows = []
    for label, spec in heads.items():
        t0 = time.perf_counter()
        res = stitching_matrix(spaces, y_tr, y_te, n_anchors=n_anchors,
                               anchor_sampler="uniform", similarity="cosine", center="auto",
                               head=spec, seeds=seeds, metrics=("accuracy",),
                               show_progress=False)
        s = res.summary()
        cs = sorted({r["C"] for r in res.rows if r.get("C") is not None})
        per_fit = {(r["fit_space"], r["seed"]): r["C"] for r in res.rows if not r["stitched"]}
        rows.append({"dataset": dataset, "head": label, "n_train": len(y_tr),
                     "n_test": len(y_te), "non_stitched": s["non_stitched_mean"],
                     "non_stitched_std": s["non_stitched_std"], "stitched": s["stitched_mean"],
                     "stitched_std": s["stitched_std"], "ratio": s["ratio"], "C": cs,
                     "C_per_fit": per_fit,
                     "centred": [d["center"] for d in res.info["center_decisions"]],
                     "seconds": time.perf_counter() - t0})
    return rows


def _cs(cs: list[float]) -> str:
    if not cs:
        return "-"
    return f"{cs[0]:.2g}" if len(cs) == 1 else f"{cs[0]:.2g} ... {cs[-1]:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ag_news", "trec"],
                        choices=["ag_news", "trec"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", action="store_true",
                        help="also the best-score and log-loss rules of the cross-validation")
    args = parser.parse_args()
    heads: dict[str, Any] = {h: h for h in NAMED_HEADS}
    if args.variants:
        heads.update({label: cv_variant(**p) for label, p in VARIANTS.items()})
    print("| data (train / test rows) | head | non-stitched | stitched | ratio | C chosen |\n"
          "|---|---|---|---|---|---|")
    notes = []
    for dataset in args.datasets:
        for r in compare_heads(dataset, heads, seeds=args.seeds):
            print(f"| {r['dataset']} ({r['n_train']:,} / {r['n_test']:,}) | `{r['head']}` | "
                  f"{r['non_stitched']:.3f} ± {r['non_stitched_std']:.3f} | "
                  f"{r['stitched']:.3f} ± {r['stitched_std']:.3f} | {r['ratio']:.2f} | "
                  f"{_cs(r['C'])} |", flush=True)
            fits = ", ".join(f"{fs} seed {seed}: {c:.2g}" if c is not None else f"{fs}: -"
                             for (fs, seed), c in r["C_per_fit"].items())
            notes.append(f"- {r['dataset']} {r['head']}: {r['seconds']:.0f} s; centring per "
                         f"anchor draw {r['centred']}; C per (fit space, seed): {fits}")
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
