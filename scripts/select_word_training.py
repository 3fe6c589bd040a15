"""Choose the Word2Vec/FastText training settings of the word-embeddings experiment on
validation query words (never on the test queries its tables report).

For each point of `relreps.experiments.word_embeddings.TRAINING_GRID` (down-sampling `sample`
x `epochs`, skip-gram and everything else fixed) both models are trained (or read back from
$RELREPS_CACHE) with the run's settings for the scale, and the relative MRR@5 between them is
measured on `VALIDATION_QUERIES` vocabulary words that are not test queries (uniform anchors,
`VALIDATION_SEEDS` anchor seeds, plain and anchor-centred cosine, both directions). The point
with the highest mean of the four is chosen (`select_training_settings`). The experiment's own
functions do the work (`validation_scores`); this script loops, prints and saves.

    PYTHONPATH=src python scripts/select_word_training.py --scale full --out sel.json
    # one grid point at a time (each is cached, so reruns only recompute the metrics):
    PYTHONPATH=src python scripts/select_word_training.py --scale full --points 1,0
    # smoke scale (gensim's Lee corpus; every word is a test query there unless told otherwise):
    PYTHONPATH=src python scripts/select_word_training.py --scale smoke \
        --opt n_queries=200 --opt workers=1 --queries 200

Full scale trains two models per point on the 5.6 M-token corpus: ~190 s (Word2Vec) + ~310 s
(FastText) of CPU at sample=1e-4, 10 epochs; more with sample=1e-3 (more tokens kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from relreps.encoders.words import TRAIN_DEFAULTS
from relreps.experiments import RunContext
from relreps.experiments import word_embeddings as we
from relreps.report import markdown_table

COLUMNS = ("w2v->ft plain", "w2v->ft centred", "ft->w2v plain", "ft->w2v centred")


def table(scores: list[dict], chosen: int | None) -> str:
    """Markdown: one row per scored point, validation MRR@5 mean ± std over anchor seeds."""
    body = []
    for i, s in enumerate(scores):
        t = s["timings"]
        cpu = [t.get(f"train {n} when first trained: CPU (s)") for n in ("word2vec", "fasttext")]
        body.append([s["settings"].get("sample"), s["settings"].get("epochs"),
                     *[f"{s['mrr'][c][0]:.3f} ± {s['mrr'][c][1]:.3f}" for c in COLUMNS],
                     f"{s['criterion']:.3f}" + (" **chosen**" if i == chosen else ""),
                     " / ".join(str(c) for c in cpu)])
    return markdown_table(["sample", "epochs", *[f"MRR@5 {c}" for c in COLUMNS],
                           "criterion (mean)", "train CPU s (w2v / ft)"], body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("smoke", "full"), default="full")
    ap.add_argument("--seed", type=int, default=0, help="the run's base seed (0)")
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="experiment options, as `relreps run --opt` (repeatable)")
    ap.add_argument("--queries", type=int, default=we.VALIDATION_QUERIES,
                    help="validation query words")
    ap.add_argument("--anchor-seeds", type=int, default=we.VALIDATION_SEEDS)
    ap.add_argument("--points", default="",
                    help="comma list of TRAINING_GRID indices to score, in this order (all)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON file with every scored point (rewritten after each point)")
    args = ap.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.opt)
    ctx = RunContext(scale=args.scale, seed=args.seed, out=Path("."), options=options)
    order = ([int(i) for i in args.points.split(",")] if args.points
             else list(range(len(we.TRAINING_GRID))))
    scores: list[dict] = []
    for i in order:
        settings = we.TRAINING_GRID[i]
        t0 = time.perf_counter()
        print(f"[select] point {i}: {settings}", file=sys.stderr, flush=True)
        s = we.validation_scores(ctx, settings, n_queries=args.queries,
                                 n_seeds=args.anchor_seeds)
        s["grid_index"], s["wall_s"] = i, round(time.perf_counter() - t0, 1)
        scores.append(s)
        print(f"[select] point {i}: criterion {s['criterion']:.4f} ({s['wall_s']} s)",
              file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(json.dumps({"scale": args.scale, "seed": args.seed,
                                            "options": options, "scores": scores}, indent=1))
    chosen = we.select_training_settings(scores)
    print(table(scores, chosen))
    best = scores[chosen]
    same = all(TRAIN_DEFAULTS.get(k) == v for k, v in best["settings"].items())
    print(f"\nchosen: {best['settings']} (validation criterion {best['criterion']:.4f}; "
          f"{best['n_validation_queries']} validation queries, disjoint from the "
          f"{best['n_test_queries']} test queries; vocabulary {best['n_vocab']} words)")
    if args.scale == "full":
        print("equals TRAIN_DEFAULTS" if same else
              f"differs from TRAIN_DEFAULTS ({ {k: TRAIN_DEFAULTS[k] for k in best['settings']} })")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
