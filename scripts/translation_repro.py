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

Heads (validation-only protocol, docs/protocol.md): B's head is fitted on B's training rows only
and its C is chosen by cross-validation on those rows (`CVLogisticRegression`), never on test
rows. Two heads are reported, both with C chosen that way:

- "protocol": `make_head("logreg-cv")`, the head every stitching experiment uses
  (ConstantFeatureFilter, StandardScaler, CVLogisticRegression);
- "bare": the same head without its ConstantFeatureFilter (StandardScaler, CVLogisticRegression),
  i.e. the head the bug was found with, minus its hand-picked C.

The filter drops features whose range over the fit rows is a few float32 ulps *of their own
magnitude*; a dead unit is rounding noise near zero (|value| from 1e-35 to 3e-6 in MiniLM-L6 and
mpnet) whose range is 0.5 to 1.6 times its largest magnitude, so the filter keeps it: it neither
hides the failure nor protects against it. The translator's `constant_features_` (relative to
the other features' spread) is what protects a head fitted on B. The script prints each head's
chosen C and the features its filter dropped.

Part 1 (always, a few seconds): a synthetic minimal reproduction: a 32-d space A, B = A rotated
and embedded in 35 dimensions of which 3 are dead, 24 anchors (fewer than the width, as 300
anchors for 384-d text encoders).
Part 2 (``--text``): the real encoders on the compare experiment's AG News / TREC subsets
(embeddings cached under $RELREPS_CACHE; computed once on first use, minutes on 2 cores).

    PYTHONPATH=src python scripts/translation_repro.py            # part 1
    PYTHONPATH=src python scripts/translation_repro.py --text ag_news trec
    PYTHONPATH=src python scripts/translation_repro.py --text ag_news \
        --encoders minilm-l6,minilm-l3,e5-small,mpnet   # widths 384 and 768: padding both ways
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from relreps import translation
from relreps.stitching import ConstantFeatureFilter, make_head
from relreps.translation import LatentTranslator

#: The heads compared: name -> what it is (both choose C by cross-validation on B's fit rows).
HEADS = {"protocol": "make_head('logreg-cv'): constant-feature filter, scaler, CV logistic",
         "bare": "the same without the constant-feature filter: scaler, CV logistic"}


def head(kind: str):
    """B's head: ``"protocol"`` is ``make_head("logreg-cv")``; ``"bare"`` is that pipeline
    without its first step (the ConstantFeatureFilter), so both choose C the same way."""
    if kind not in HEADS:
        raise ValueError(f"head kind must be one of {list(HEADS)}, got {kind!r}")
    pipe = make_head("logreg-cv")
    return pipe if kind == "protocol" else pipe[1:]


def describe(clf, width: int) -> str:
    """The fitted head's chosen C and the features its filter dropped (if it has one)."""
    if not isinstance(clf[0], ConstantFeatureFilter):
        return f"C = {clf[-1].C_:.3g}, no filter ({width} features)"
    dropped = np.flatnonzero(~clf[0].keep_).tolist()
    return f"C = {clf[-1].C_:.3g}, filter dropped {dropped or 'none'} of {width} features"


def accuracy(method: str, guard: bool, anchors_a, anchors_b, test_a, y_test, clf) -> float:
    """B's head on A's translated test vectors; `guard=False` is the behaviour before the fix
    (constant_rtol=0: B's constant features are rotated like the others)."""
    rtol = translation.CONSTANT_FEATURE_RTOL if guard else 0.0
    tr = LatentTranslator(method, constant_rtol=rtol).fit(anchors_a, anchors_b)
    return float((clf.predict(tr.transform(test_a)) == y_test).mean())


def synthetic(seed: int = 0) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """32-d A with 4 classes; B = A rotated into 35-d with 3 dead features; 24 anchors.

    Returns ({head kind: {row: accuracy}}, {head kind: chosen C and dropped features}).
    """
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
    out, info = {}, {}
    for kind in HEADS:
        clf = head(kind).fit(b[tr_rows], y[tr_rows])
        info[kind] = describe(clf, b.shape[1])
        acc = {"non-stitched (B's head on B)": float((clf.predict(b[te_rows]) == y[te_rows])
                                                     .mean())}
        for method in ("orthogonal", "lstsq"):
            for guard in (False, True):
                key = f"{method}, {'constant features kept (fix)' if guard else 'before the fix'}"
                acc[key] = accuracy(method, guard, a[anchors], b[anchors], a[te_rows],
                                    y[te_rows], clf)
        out[kind] = acc
    return out, info


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
    heads = {(kind, b): head(kind).fit(spaces[b][0], y_tr) for kind in HEADS for b in names}
    lines += [""] + [f"- head {kind} on {b}: {describe(clf, spaces[b][0].shape[1])}"
                     for (kind, b), clf in heads.items()]
    lines += ["", "| A -> B | anchors | head | non-stitched (B) | orthogonal, before | "
              "orthogonal, fixed | lstsq, before | lstsq, fixed |",
              "|---|---|---|---|---|---|---|---|"]
    for k in anchor_counts:
        idx = np.random.default_rng(0).choice(len(y_tr), k, replace=False)
        for a in names:
            for b in names:
                if a == b:
                    continue
                for kind in HEADS:
                    clf = heads[kind, b]
                    own = float((clf.predict(spaces[b][1]) == y_te).mean())
                    cells = [accuracy(m, g, spaces[a][0][idx], spaces[b][0][idx], spaces[a][1],
                                      y_te, clf)
                             for m in ("orthogonal", "lstsq") for g in (False, True)]
                    lines.append(f"| {a} -> {b} | {k} | {kind} | {own:.3f} | "
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
    acc, info = synthetic()
    print("\n".join(f"- head {kind}: {HEADS[kind]}; {info[kind]}" for kind in HEADS) + "\n")
    print("| translation | " + " | ".join(f"head {kind}" for kind in HEADS) + " |\n|---|"
          + "---|" * len(HEADS))
    for key in acc["protocol"]:
        print(f"| {key} | " + " | ".join(f"{acc[kind][key]:.3f}" for kind in HEADS) + " |")
    for dataset in args.text:
        print(f"\n## {dataset} (compare experiment's full-scale subsets, anchor seed 0)\n")
        print("\n".join(text(dataset, encoders=encoders)))


if __name__ == "__main__":
    main()
