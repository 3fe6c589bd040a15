"""Why orthogonal latent translation *into* all-MiniLM-L6-v2 was near chance, reproduced.

Cause: all-MiniLM-L6-v2 has three dead output dimensions (127, 223, 319: |value| < 1e-7 for
every text; all-mpnet-base-v2 has four). The head fitted on its absolute space standardises each
feature (StandardScaler), i.e. divides those by a standard deviation of ~1e-33 to ~1e-7. A
rotation keeps norms, so A's variation lands in the dead dimensions (B has fewer live dimensions
than A, or fewer anchors than dimensions leave the rotation undetermined); standardised, those
values become ~1e31 and decide every prediction (one class: chance). Least squares fits B's
constant columns, which is why it did not collapse. The fix (in `LatentTranslator`): features
that are constant on B's anchors keep their anchor value (`constant_features_`; the
`constant_rtol=0` runs below show the behaviour before the fix).

Part 1 (always, < 1 s): a synthetic minimal reproduction: a 32-d space A, B = A rotated and
embedded in 35 dimensions of which 3 are dead, 24 anchors (fewer than the width, as 300 anchors
for 384-d text encoders).
Part 2 (``--text``): the real encoders on the compare experiment's AG News / TREC subsets
(embeddings cached under $RELREPS_CACHE; computed once on first use, minutes on 2 cores).

    PYTHONPATH=src python scripts/translation_repro.py            # part 1
    PYTHONPATH=src python scripts/translation_repro.py --text ag_news trec
    PYTHONPATH=src python scripts/translation_repro.py --text ag_news \
        --encoders minilm-l6,minilm-l3,mpnet      # widths 384 and 768: zero-padding both ways
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from relreps import translation
from relreps.translation import LatentTranslator


def head(seed: int = 0):
    """The compare experiment's head: StandardScaler + L2 logistic regression, C=0.01."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000,
                                                              random_state=seed))


def accuracy(method: str, guard: bool, anchors_a, anchors_b, test_a, y_test, clf) -> float:
    """B's head on A's translated test vectors; `guard=False` is the behaviour before the fix
    (constant_rtol=0: B's constant features are rotated like the others)."""
    rtol = translation.CONSTANT_FEATURE_RTOL if guard else 0.0
    tr = LatentTranslator(method, constant_rtol=rtol).fit(anchors_a, anchors_b)
    return float((clf.predict(tr.transform(test_a)) == y_test).mean())


def synthetic(seed: int = 0) -> dict[str, float]:
    """32-d A with 4 classes; B = A rotated into 35-d with 3 dead features; 24 anchors."""
    rng = np.random.default_rng(seed)
    d, dead, n, k = 32, 3, 1200, 24
    centers = rng.normal(0, 0.4, (4, d))
    y = rng.integers(0, 4, n)
    a = centers[y] + rng.normal(0, 1.0, (n, d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    b = np.zeros((n, d + dead))
    live = np.setdiff1d(np.arange(d + dead), [5, 17, 30])
    b[:, live] = a @ q + 0.3 * rng.normal(size=(n, d))  # B: a noisy rotation of A
    b[:, [5, 17, 30]] = rng.normal(0, 1e-33, (n, dead))  # dead outputs, as in MiniLM-L6
    tr_rows, te_rows = np.arange(800), np.arange(800, n)
    anchors = rng.choice(tr_rows, k, replace=False)
    clf = head(seed).fit(b[tr_rows], y[tr_rows])
    out = {"non-stitched (B's head on B)": float((clf.predict(b[te_rows]) == y[te_rows]).mean())}
    for method in ("orthogonal", "lstsq"):
        for guard in (False, True):
            key = f"{method}, {'constant features kept (fix)' if guard else 'before the fix'}"
            out[key] = accuracy(method, guard, a[anchors], b[anchors], a[te_rows], y[te_rows],
                                clf)
    return out


def text(dataset: str, anchor_counts: tuple[int, ...] = (300, 1000),
         encoders: list[str] | None = None) -> list[str]:
    from relreps.experiments.compare import text_spaces

    spaces, y_tr, y_te = text_spaces("full", dataset, encoders)
    names = list(spaces)
    lines = []
    for name in names:
        std = spaces[name][0].astype(np.float64).std(0)
        rms = np.sqrt(np.mean(std ** 2))
        dead = np.flatnonzero(std <= translation.CONSTANT_FEATURE_RTOL * rms)
        live = np.delete(std, dead)
        lines.append(f"- {name}: constant features {dead.tolist()} (train std / RMS std: "
                     f"{', '.join(f'{s / rms:.1e}' for s in std[dead]) or '-'}; smallest "
                     f"live feature: {live.min() / rms:.2f}; RMS std {rms:.3f})")
    heads = {b: head().fit(spaces[b][0], y_tr) for b in names}
    lines += ["", "| A -> B | anchors | non-stitched (B) | orthogonal, before | orthogonal, fixed "
              "| lstsq, before | lstsq, fixed |", "|---|---|---|---|---|---|---|"]
    for k in anchor_counts:
        idx = np.random.default_rng(0).choice(len(y_tr), k, replace=False)
        for a in names:
            for b in names:
                if a == b:
                    continue
                own = float((heads[b].predict(spaces[b][1]) == y_te).mean())
                cells = [accuracy(m, g, spaces[a][0][idx], spaces[b][0][idx], spaces[a][1],
                                  y_te, heads[b])
                         for m in ("orthogonal", "lstsq") for g in (False, True)]
                lines.append(f"| {a} -> {b} | {k} | {own:.3f} | "
                             + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", nargs="*", default=[], metavar="DATASET",
                        help="also run on the real text encoders (ag_news, trec)")
    parser.add_argument("--encoders", default=None,
                        help="comma list (default: the compare experiment's three; add mpnet "
                             "for a 768-d encoder, ~0.12 s a text to embed on 2 cores)")
    args = parser.parse_args()
    encoders = args.encoders.split(",") if args.encoders else None
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    print("## Synthetic minimal reproduction (32-d A, 35-d B with 3 dead features, "
          "24 anchors)\n")
    print("| translation | stitched accuracy |\n|---|---|")
    for key, acc in synthetic().items():
        print(f"| {key} | {acc:.3f} |")
    for dataset in args.text:
        print(f"\n## {dataset} (compare experiment's full-scale subsets, anchor seed 0)\n")
        print("\n".join(text(dataset, encoders=encoders)))


if __name__ == "__main__":
    main()
