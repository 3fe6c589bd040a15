"""Word embeddings: latent-space similarity across independently trained spaces (the paper's
Table 1, its appendix table over anchor strategies, and its figure), offline.

Spaces: Word2Vec and FastText trained here with gensim on an English corpus from Debian packages
(GCIDE + WordNet glosses; gensim's Lee corpus at smoke scale), and the pretrained spaces that ship
offline (GloVe 6B 50-d, wordllama, MiniLM-L6 and MPNet on isolated words).

Protocol. A shared vocabulary (`shared_vocabulary`): corpus words made of letters a-z only, at
least 4 letters long, seen at least `min_count` times (so both trained models hold them), in
GloVe 6B's vocabulary (so every space covers them), ranked by corpus frequency; the `skip` most
frequent are dropped and the next `n_words` kept. Anchors: `n_anchors` of these words, drawn
for each seed by a strategy (uniform; farthest-point and k-means computed in the source space;
uniform among the top-N most frequent vocabulary words). Every space is projected on the same
anchor words; neighbourhoods are compared with Jaccard@5 and MRR@5 (`relreps.metrics`, paper
definitions: `n_queries` query words searched among all vocabulary words), mean cosine and linear
CKA, for absolute vectors (only between spaces of equal width) and relative ones, with plain
cosine and with anchor-centred cosine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from relreps.experiments.base import Results, RunContext

NAME = "word-embeddings"
DESCRIPTION = ("Word2Vec vs FastText (trained offline) and pretrained word spaces: Jaccard@5, "
               "MRR@5, cosine, CKA, absolute vs relative, anchor strategies (Table 1 + appendix)")
#: `--opt` keys this experiment reads -> help (defaults per scale).
OPTIONS: dict[str, str] = {
    "corpus": "training corpus: lee or gcide+wordnet (smoke lee, full gcide+wordnet)",
    "spaces": "comma list of spaces (smoke word2vec,fasttext; full adds glove-6b-50d, "
              "wordllama, minilm-l6, mpnet)",
    "n_words": "shared vocabulary size (smoke 1000, full 20000)",
    "n_anchors": "anchor words (smoke 100, full 300)",
    "n_seeds": "anchor seeds (smoke 2, full 10)",
    "n_queries": "query words of Jaccard/MRR, 0 = all (smoke 0, full 500)",
    "heatmap_seeds": "seeds in the heatmap figure (smoke 1, full 3)",
    "top_n": "comma list of top-N frequency pools of the anchor strategies (smoke 200,500,800; "
             "full 1000,5000,10000)",
    "skip": "most frequent words dropped from the vocabulary (0)",
    "glove_filter": "keep only words in GloVe's vocabulary (smoke false, full true)",
    "figure_words": "words drawn in the figure (6)",
    "threads": "BLAS/torch threads (1)",
    "cka_words": "words used for CKA, 0 = all (smoke 0, full 5000)",
    "vector_size": "Word2Vec/FastText width (smoke 32, full 100)",
    "sg": "1 skip-gram, 0 CBOW (1)",
    "window": "context window (5)",
    "negative": "negative samples (5)",
    "min_count": "minimum word count (smoke 3, full 5)",
    "sample": "down-sampling threshold (1e-3)",
    "alpha": "initial learning rate (0.025)",
    "epochs": "training epochs (smoke 20, full 10)",
    "seed": "gensim's training seed (0)",
    "workers": "gensim worker threads (2)",
}

K = 5
#: Settings per scale; `--opt key=value` overrides any of them (see `_config`).
CONFIG: dict[str, dict[str, Any]] = {
    "smoke": {"corpus": "lee", "spaces": "word2vec,fasttext", "n_words": 1000,
              "n_anchors": 100, "n_seeds": 2, "n_queries": 0, "heatmap_seeds": 1,
              "top_n": "200,500,800", "skip": 0, "glove_filter": False, "figure_words": 6,
              "threads": 1, "cka_words": 0,
              "train": {"vector_size": 32, "epochs": 20, "min_count": 3, "sample": 1e-3,
                        "window": 5, "workers": 2}},
    "full": {"corpus": "gcide+wordnet",
             "spaces": "word2vec,fasttext,glove-6b-50d,wordllama,minilm-l6,mpnet",
             "n_words": 20_000, "n_anchors": 300, "n_seeds": 10, "n_queries": 500,
             "heatmap_seeds": 3, "top_n": "1000,5000,10000", "skip": 0, "glove_filter": True,
             "figure_words": 6, "threads": 1, "cka_words": 5000, "train": {}},
}
TRAIN_KEYS = ("vector_size", "sg", "window", "negative", "min_count", "sample", "alpha",
              "epochs", "seed", "workers")


def _config(ctx: RunContext) -> dict[str, Any]:
    """The scale's settings with `ctx.options` applied (training keys go to cfg['train'])."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in CONFIG[ctx.scale].items()}
    for key, value in ctx.options.items():
        if key in TRAIN_KEYS:
            cfg["train"][key] = _parse(value)
        elif key in cfg:
            cfg[key] = _parse(value) if not isinstance(cfg[key], str) else str(value)
        else:
            raise ValueError(f"unknown option {key!r}; known: {sorted(cfg) + list(TRAIN_KEYS)}")
    return cfg


def _parse(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def shared_vocabulary(counts: Mapping[str, int], spaces: Mapping[str, Any], n_words: int, *,
                      min_count: int, skip: int = 0, min_length: int = 4,
                      also_in: Any = None) -> list[str]:
    """The experiment's vocabulary rule (most frequent first).

    Words of `counts` (ordered by frequency) made only of letters a-z, at least `min_length`
    long, counted at least `min_count` times, covered by every space (and by `also_in` when
    given); the first `skip` are dropped and the next `n_words` returned.
    """
    pattern = re.compile(rf"[a-z]{{{min_length},}}")
    cand = [w for w, c in counts.items() if c >= min_count and pattern.fullmatch(w)]
    if also_in is not None:
        cand = [w for w in cand if w in also_in]
    for space in spaces.values():
        mask = space.covers(cand)
        cand = [w for w, keep in zip(cand, mask) if keep]
    return cand[skip:skip + n_words]


def _vocabulary(cfg: Mapping[str, Any], counts: Mapping[str, int], spaces: Mapping[str, Any],
                min_count: int, notes: list[str]) -> list[str]:
    """The run's vocabulary: `shared_vocabulary` with the configured size, skip and GloVe
    filter (GloVe taken from `spaces` when loaded there); checked to leave room for anchors."""
    from relreps.encoders.words import load_glove

    glove = None
    if cfg["glove_filter"]:
        glove = spaces.get("glove-6b-50d")
        if glove is None:
            try:
                glove = load_glove()
            except Exception as e:  # noqa: BLE001 - the filter is optional
                notes.append(f"vocabulary not restricted to GloVe's words ({e})")
    vocab = shared_vocabulary(counts, spaces, int(cfg["n_words"]), min_count=min_count,
                              skip=int(cfg["skip"]), also_in=glove)
    n_anchors = int(cfg["n_anchors"])
    if len(vocab) <= n_anchors:
        raise ValueError(f"only {len(vocab)} shared words for {n_anchors} anchors")
    if len(vocab) < int(cfg["n_words"]):
        notes.append(f"only {len(vocab)} words satisfy the vocabulary rule (asked for "
                     f"{cfg['n_words']})")
    return vocab


def query_rows(n_vocab: int, n_queries: int, seed: int) -> np.ndarray | None:
    """The experiment's (test) query words of Jaccard/MRR: `n_queries` sorted vocabulary rows
    drawn with the run's base `seed`; None when `n_queries` is 0 or covers the vocabulary
    (every word is a query)."""
    if 0 < n_queries < n_vocab:
        return np.sort(np.random.default_rng(seed).choice(n_vocab, n_queries, replace=False))
    return None


#: Mixed into the base seed to draw the validation query words (a stream of their own).
_VALIDATION_STREAM = 0x76616C  # "val"


def validation_query_rows(n_vocab: int, n_queries: int, seed: int,
                          n_test_queries: int) -> np.ndarray:
    """`n_queries` sorted vocabulary rows used only to choose settings: drawn with `seed`
    (their own stream) among the rows that are NOT test queries (`query_rows(n_vocab,
    n_test_queries, seed)`), so no test query word takes part in the choice.

    Raises ValueError when the test queries are the whole vocabulary (n_test_queries 0 or >=
    n_vocab) or leave fewer than `n_queries` words.
    """
    test = query_rows(n_vocab, n_test_queries, seed)
    if test is None:
        raise ValueError(f"the test queries are every vocabulary word (n_queries="
                         f"{n_test_queries}, {n_vocab} words): no word is left for validation; "
                         "set n_queries below the vocabulary size")
    pool = np.setdiff1d(np.arange(n_vocab), test)
    if not 0 < n_queries <= len(pool):
        raise ValueError(f"{n_queries} validation queries asked, {len(pool)} vocabulary words "
                         "are not test queries")
    rng = np.random.default_rng([seed, _VALIDATION_STREAM])
    return np.sort(rng.choice(pool, n_queries, replace=False))


def _load_spaces(names: Sequence[str], corpus: Any, train: dict[str, Any], ctx: RunContext,
                 timings: dict[str, float], notes: list[str]) -> dict[str, Any]:
    from relreps.encoders.words import (
        load_word_space,
        train_fasttext,
        train_word2vec,
        training_info,
    )
    from relreps.errors import DataNotFoundError, MissingDependencyError

    spaces: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            if name == "word2vec":
                spaces[name] = train_word2vec(corpus, **train)
            elif name == "fasttext":
                spaces[name] = train_fasttext(corpus, **train)
            else:
                spaces[name] = load_word_space(name)
        except (MissingDependencyError, DataNotFoundError) as e:
            if name in ("word2vec", "fasttext"):
                raise
            notes.append(f"space {name} skipped: {e}")
            ctx.log(f"[word-embeddings] skipping {name}: {e}")
            continue
        timings[f"load {name} (s)"] = round(time.perf_counter() - t0, 1)
        info = training_info(name, corpus, **train) if name in ("word2vec", "fasttext") else None
        if info:
            timings[f"train {name} when first trained: wall (s)"] = info.get("train_seconds")
            timings[f"train {name} when first trained: CPU (s)"] = info.get(
                "train_cpu_seconds", "not recorded")
        ctx.log(f"[word-embeddings] {name} ready ({timings[f'load {name} (s)']} s)")
    return spaces


def _anchors(strategy: str, x_ref: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Anchor rows of the (frequency-ordered) vocabulary for one strategy and seed."""
    from relreps.anchors import sample_anchors

    if strategy == "uniform":
        return sample_anchors(x_ref, n, "uniform", random_state=seed)
    if strategy == "farthest-point":
        return sample_anchors(x_ref, n, "farthest_point", random_state=seed, metric="cosine")
    if strategy == "k-means":
        unit = x_ref / np.linalg.norm(x_ref, axis=1, keepdims=True)
        return sample_anchors(unit, n, "kmeans", random_state=seed)
    if strategy.startswith("top-"):
        top = int(strategy[4:])
        return sample_anchors(x_ref[:top], n, "uniform", random_state=seed)
    raise ValueError(f"unknown anchor strategy {strategy!r}")


def _pair_metrics(a: np.ndarray, b: np.ndarray, queries: np.ndarray | None,
                  cka_rows: np.ndarray | None = None) -> dict[str, float]:
    """Jaccard@K, MRR@K (queries searched among all rows), mean cosine, linear CKA (on
    `cka_rows`, all rows when None)."""
    from relreps.metrics import cka, mean_cosine, retrieval_metrics

    out = retrieval_metrics(a, b, K, queries=queries)
    out["cosine"] = mean_cosine(a, b)
    out["cka"] = cka(a, b) if cka_rows is None else cka(a[cka_rows], b[cka_rows])
    return out


def run(ctx: RunContext) -> Results:
    import torch

    from relreps.datasets.words import load_corpus
    from relreps.projection import relative_projection

    cfg = _config(ctx)
    # One thread by default: on a shared 2-core machine torch's intra-op threads oversubscribe
    # and small operations run ~10x slower.
    torch.set_num_threads(max(1, int(cfg["threads"])))
    from relreps.encoders.words import TRAIN_DEFAULTS

    train = {**cfg["train"]}
    min_count = int(train.get("min_count", TRAIN_DEFAULTS["min_count"]))
    notes: list[str] = []
    timings: dict[str, Any] = {}
    t_all, cpu_all = time.perf_counter(), time.process_time()

    t0 = time.perf_counter()
    corpus = load_corpus(cfg["corpus"])
    timings["corpus (s)"] = round(time.perf_counter() - t0, 1)
    ctx.log(f"[word-embeddings] corpus {corpus.name}: {corpus.n_tokens:,} tokens")
    names = [s.strip() for s in str(cfg["spaces"]).split(",") if s.strip()]
    for must in ("word2vec", "fasttext"):
        if must not in names:
            names.insert(0 if must == "word2vec" else 1, must)
    spaces = _load_spaces(names, corpus, train, ctx, timings, notes)

    counts = corpus.counts()
    vocab = _vocabulary(cfg, counts, spaces, min_count, notes)
    n_anchors = int(cfg["n_anchors"])
    ctx.log(f"[word-embeddings] vocabulary {len(vocab)} words; least frequent seen "
            f"{counts[vocab[-1]]} times")

    emb: dict[str, np.ndarray] = {}
    for name, space in spaces.items():
        t0 = time.perf_counter()
        emb[name] = np.ascontiguousarray(space.embed(vocab), dtype=np.float32)
        timings[f"embed {name} (s)"] = round(time.perf_counter() - t0, 1)

    n_q = int(cfg["n_queries"])
    queries = query_rows(len(vocab), n_q, ctx.seed)
    cka_rows = None
    if 0 < int(cfg["cka_words"]) < len(vocab):
        cka_rows = np.sort(np.random.default_rng(ctx.seed + 1).choice(
            len(vocab), int(cfg["cka_words"]), replace=False))
    seeds = ctx.seeds(int(cfg["n_seeds"]))
    top_n = [int(t) for t in str(cfg["top_n"]).split(",") if t]
    strategies = ["uniform", "farthest-point", "k-means", *[f"top-{t}" for t in top_n]]
    rows: list[dict[str, Any]] = []
    pair = ("word2vec", "fasttext")

    # --- Table 1 and the appendix: Word2Vec <-> FastText, absolute vs relative ---------------
    t0 = time.perf_counter()
    a_w = emb[pair[0]]
    for src, tgt in (pair, pair[::-1]):
        if emb[src].shape[1] == emb[tgt].shape[1]:
            m = _pair_metrics(emb[src], emb[tgt], queries, cka_rows)
        else:
            from relreps.metrics import cka

            m = {"jaccard": np.nan, "mrr": np.nan, "cosine": np.nan,
                 "cka": cka(emb[src], emb[tgt]) if cka_rows is None else
                 cka(emb[src][cka_rows], emb[tgt][cka_rows])}
        for seed in seeds:  # absolute does not depend on anchors: repeated per seed for tables
            for strategy in strategies:
                rows.append({"table": "pair", "source": src, "target": tgt, "space": "absolute",
                             "center": "none", "strategy": strategy, "seed": seed, **m})
    for strategy in strategies:
        for seed in seeds:
            anc = _anchors(strategy, a_w, n_anchors, seed)
            for center in (None, "anchors"):
                rel = {n: relative_projection(emb[n], emb[n][anc], center=center) for n in pair}
                for src, tgt in (pair, pair[::-1]):
                    m = _pair_metrics(rel[src], rel[tgt], queries, cka_rows)
                    rows.append({"table": "pair", "source": src, "target": tgt,
                                 "space": "relative", "center": center or "none",
                                 "strategy": strategy, "seed": seed, **m})
        ctx.log(f"[word-embeddings] {strategy}: done")
    timings["pair metrics (s)"] = round(time.perf_counter() - t0, 1)

    # --- agreement by word frequency: queries from frequency bands, searched among all words --
    t0 = time.perf_counter()
    edges = [0, *[t for t in top_n if t < len(vocab)], len(vocab)]
    rng = np.random.default_rng(ctx.seed + 2)
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        q = np.arange(lo, hi)
        if 0 < n_q < len(q):
            q = np.sort(rng.choice(q, n_q, replace=False))
        bands.append((f"{lo + 1}-{hi} ({counts[vocab[hi - 1]]}-{counts[vocab[lo]]} occ.)", q))
    from relreps.metrics import retrieval_metrics

    for label, q in bands:
        for src, tgt in (pair, pair[::-1]):
            m = retrieval_metrics(emb[src], emb[tgt], K, queries=q)
            rows.append({"table": "bands", "band": label, "source": src, "target": tgt,
                         "space": "absolute", "center": "none", "strategy": "uniform",
                         "seed": seeds[0], **m})
    for seed in seeds:
        anc = _anchors("uniform", a_w, n_anchors, seed)
        for center in (None, "anchors"):
            rel = {n: relative_projection(emb[n], emb[n][anc], center=center) for n in pair}
            for label, q in bands:
                for src, tgt in (pair, pair[::-1]):
                    m = retrieval_metrics(rel[src], rel[tgt], K, queries=q)
                    rows.append({"table": "bands", "band": label, "source": src, "target": tgt,
                                 "space": "relative", "center": center or "none",
                                 "strategy": "uniform", "seed": seed, **m})
    timings["frequency-band metrics (s)"] = round(time.perf_counter() - t0, 1)

    # --- all pairs of spaces: relative MRR heatmap (uniform anchors) --------------------------
    t0 = time.perf_counter()
    names = list(emb)
    h_seeds = seeds[:max(1, int(cfg["heatmap_seeds"]))]
    for seed in h_seeds:
        anc = _anchors("uniform", a_w, n_anchors, seed)
        for center in (None, "anchors"):
            rel = {n: relative_projection(emb[n], emb[n][anc], center=center) for n in names}
            for src in names:
                for tgt in names:
                    if src == tgt:
                        continue
                    m = _pair_metrics(rel[src], rel[tgt], queries, cka_rows)
                    rows.append({"table": "all-pairs", "source": src, "target": tgt,
                                 "space": "relative", "center": center or "none",
                                 "strategy": "uniform", "seed": seed, **m})
        ctx.log(f"[word-embeddings] all pairs, seed {seed}: done")
    timings["all-pairs metrics (s)"] = round(time.perf_counter() - t0, 1)

    # --- outputs ------------------------------------------------------------------------------
    tables = _tables(rows, names, strategies, spaces, vocab, counts, cfg, corpus, train)
    figures = []
    try:
        figures.append(_heatmap(ctx, rows, names))
        figures.append(_figure(ctx, emb, vocab, pair, n_anchors, int(cfg["figure_words"]),
                               ctx.seed))
    except ImportError as e:  # pragma: no cover - matplotlib is a core dependency
        notes.append(f"figures skipped: {e}")
    timings["total (s)"] = round(time.perf_counter() - t_all, 1)
    timings["total CPU time of this process, all threads (s)"] = round(
        time.process_time() - cpu_all, 1)
    summary = _summary(rows, names, timings, len(vocab), counts[vocab[-1]], corpus)
    notes += _notes(cfg, queries, len(vocab))
    tables["Timings (2 shared cores unless noted)"] = _kv_table(timings)
    return Results(rows=rows, tables=tables, figures=figures, summary=summary, notes=notes)


def _mean_std(rows: Sequence[Mapping[str, Any]], value: str, **where: Any) -> tuple[float, float]:
    vals = [float(r[value]) for r in rows if all(r.get(k) == v for k, v in where.items())]
    vals = [v for v in vals if v == v]
    if not vals:
        return float("nan"), float("nan")
    return float(np.mean(vals)), (float(np.std(vals)) if len(vals) > 1 else float("nan"))


def _fmt(ms: tuple[float, float]) -> str:
    """mean ± std over seeds; the mean alone for a single value; "-" for none."""
    from relreps.report import fmt_mean_std

    if ms[0] != ms[0]:
        return "-"
    return fmt_mean_std(ms[0], ms[1] if ms[1] == ms[1] else None)


def _tables(rows, names, strategies, spaces, vocab, counts, cfg, corpus, train
            ) -> dict[str, str]:
    from relreps.encoders.words import FASTTEXT_DEFAULTS, TRAIN_DEFAULTS
    from relreps.report import markdown_table

    tables: dict[str, str] = {}
    pair = ("word2vec", "fasttext")
    # Table 1 layout: source, target; Jaccard / MRR / cosine, absolute vs relative.
    body = []
    for src in pair:
        for tgt in pair:
            line = [src, tgt]
            for metric in ("jaccard", "mrr", "cosine"):
                if src == tgt:
                    line += ["1.00", "1.00", "1.00"]
                    continue
                w = {"table": "pair", "source": src, "target": tgt, "strategy": "uniform"}
                line += [_fmt(_mean_std(rows, metric, space="absolute", **w)),
                         _fmt(_mean_std(rows, metric, space="relative", center="none", **w)),
                         _fmt(_mean_std(rows, metric, space="relative", center="anchors", **w))]
            body.append(line)
    header = ["source", "target"]
    for metric in ("Jaccard@5", "MRR@5", "cosine"):
        header += [f"{metric} abs", f"{metric} rel", f"{metric} rel centred"]
    tables["Table 1: Word2Vec vs FastText, uniform anchors (mean ± std over seeds)"] = \
        markdown_table(header, body)

    # Appendix layout: every anchor strategy, relative (plain and centred).
    body = []
    for strategy in strategies:
        for src, tgt in (pair, pair[::-1]):
            line = [strategy, f"{src} → {tgt}"]
            for center in ("none", "anchors"):
                for metric in ("jaccard", "mrr", "cosine", "cka"):
                    line.append(_fmt(_mean_std(rows, metric, table="pair", source=src,
                                               target=tgt, strategy=strategy,
                                               space="relative", center=center)))
            body.append(line)
    header = ["anchors", "pair"] + [f"{m} {c}" for c in ("plain", "centred")
                                    for m in ("Jaccard", "MRR", "cosine", "CKA")]
    tables["Appendix: anchor strategies, relative spaces, Word2Vec vs FastText"] = \
        markdown_table(header, body)

    # Agreement by word frequency (what limits the trained pair).
    labels = list(dict.fromkeys(r["band"] for r in rows if r["table"] == "bands"))
    body = []
    for label in labels:
        for src, tgt in (pair, pair[::-1]):
            line = [label, f"{src} → {tgt}"]
            for metric in ("mrr", "jaccard"):
                w = {"table": "bands", "band": label, "source": src, "target": tgt}
                line += [_fmt(_mean_std(rows, metric, space="absolute", **w)),
                         _fmt(_mean_std(rows, metric, space="relative", center="none", **w)),
                         _fmt(_mean_std(rows, metric, space="relative", center="anchors", **w))]
            body.append(line)
    if body:
        tables["By word frequency: query words from frequency-rank bands, searched among all "
               "vocabulary words (uniform anchors)"] = markdown_table(
            ["frequency rank (corpus occurrences)", "pair", "MRR abs", "MRR rel",
             "MRR rel centred", "Jaccard abs", "Jaccard rel", "Jaccard rel centred"], body)

    # Absolute CKA (rotation invariant, any width) for reference.
    w = {"table": "pair", "space": "absolute", "strategy": "uniform"}
    tables["Absolute-space reference: linear CKA (rotation invariant)"] = markdown_table(
        ["pair", "CKA abs", "CKA rel plain", "CKA rel centred"],
        [[f"{s} → {t}", _fmt(_mean_std(rows, "cka", source=s, target=t, **w)),
          _fmt(_mean_std(rows, "cka", table="pair", source=s, target=t, space="relative",
                         center="none", strategy="uniform")),
          _fmt(_mean_std(rows, "cka", table="pair", source=s, target=t, space="relative",
                         center="anchors", strategy="uniform"))]
         for s, t in (pair, pair[::-1])])

    # All pairs: relative MRR, plain and centred.
    for center, label in (("none", "plain cosine"), ("anchors", "anchor-centred cosine")):
        for metric, mlabel in (("mrr", "MRR@5"), ("jaccard", "Jaccard@5")):
            body = []
            for src in names:
                line = [src]
                for tgt in names:
                    line.append("1.00" if src == tgt else _fmt(_mean_std(
                        rows, metric, table="all-pairs", source=src, target=tgt,
                        center=center)))
                body.append(line)
            tables[f"All pairs: relative {mlabel}, {label} (row = source, column = target)"] = \
                markdown_table(["source \\ target", *names], body)

    # Spaces and vocabulary.
    train_full = {**TRAIN_DEFAULTS, **train}
    body = []
    for n, s in spaces.items():
        kind = ("trained here" if n in pair else "pretrained, offline")
        body.append([n, s.dim, kind])
    tables["Spaces"] = markdown_table(["space", "dim", "source"], body)
    ft = {**train_full, **FASTTEXT_DEFAULTS}
    tables["Corpus, training and vocabulary"] = _kv_table({
        "corpus": f"{corpus.name}: {corpus.n_tokens:,} tokens, {corpus.n_lines:,} lines",
        "Word2Vec / FastText settings": ", ".join(f"{k}={v}" for k, v in train_full.items()),
        "FastText n-grams": f"bucket={ft['bucket']}, min_n={ft['min_n']}, max_n={ft['max_n']}",
        "vocabulary": f"{len(vocab):,} words; rule: [a-z]{{4,}}, corpus count >= "
                      f"{train_full['min_count']}, "
                      f"{'in GloVe 6B, ' if cfg['glove_filter'] else ''}covered by every space, "
                      f"by corpus frequency, skipping the first {cfg['skip']}",
        "vocabulary frequency range": f"{counts[vocab[0]]:,} ('{vocab[0]}') to "
                                      f"{counts[vocab[-1]]:,} ('{vocab[-1]}') occurrences",
        "anchors": f"{cfg['n_anchors']} per seed, {cfg['n_seeds']} seeds",
        "queries": "all vocabulary words" if not cfg["n_queries"] else
                   f"{cfg['n_queries']} random vocabulary words searched among all {len(vocab)}",
    })
    return tables


def _kv_table(d: Mapping[str, Any]) -> str:
    from relreps.report import markdown_table

    return markdown_table(["", "value"], [[k, v] for k, v in d.items()])


def _summary(rows, names, timings, n_vocab, min_freq, corpus) -> dict[str, Any]:
    pair = {"table": "pair", "source": "word2vec", "target": "fasttext", "strategy": "uniform"}
    s: dict[str, Any] = {"vocabulary": n_vocab, "least frequent vocabulary word count": min_freq,
                         "corpus tokens": corpus.n_tokens}
    for metric in ("jaccard", "mrr", "cosine"):
        s[f"w2v->ft absolute {metric}"] = round(_mean_std(rows, metric, space="absolute",
                                                          **pair)[0], 4)
        s[f"w2v->ft relative {metric}"] = round(_mean_std(
            rows, metric, space="relative", center="none", **pair)[0], 4)
        s[f"w2v->ft relative centred {metric}"] = round(_mean_std(
            rows, metric, space="relative", center="anchors", **pair)[0], 4)
    best = None
    for src in names:
        for tgt in names:
            if src != tgt:
                m = _mean_std(rows, "mrr", table="all-pairs", source=src, target=tgt,
                              center="anchors")[0]
                if m == m and (best is None or m > best[0]):
                    best = (round(m, 4), f"{src} -> {tgt}")
    if best:
        s["best pair (relative centred MRR)"] = f"{best[1]}: {best[0]}"
    rel_all = [r["mrr"] for r in rows if r["table"] == "all-pairs" and r["center"] == "anchors"]
    s["lowest pair relative centred MRR (single seed)"] = round(min(rel_all), 4) if rel_all \
        else None
    s["goal: absolute MRR near 0 (w2v vs ft)"] = bool(s["w2v->ft absolute mrr"] < 0.05)
    s["goal: relative above absolute for w2v vs ft"] = bool(
        s["w2v->ft relative centred mrr"] > s["w2v->ft absolute mrr"] + 0.05)
    s["total seconds"] = timings.get("total (s)")
    return s


def _notes(cfg, queries, n_vocab) -> list[str]:
    out = [
        "The paper's pretrained Word2Vec (GoogleNews) and FastText (wiki-news) vectors are not "
        "available offline; both are trained here on a ~5.6 M-token dictionary corpus, three "
        "orders of magnitude smaller, which is what limits their agreement.",
        "Absolute metrics compare raw vectors and exist only between spaces of equal width; "
        "they do not depend on anchors (the same value is repeated for each seed).",
        "Plain relative cosine is high for almost any pair (all similarities to anchors are "
        "positive); the centred column and MRR/Jaccard separate good and bad pairs.",
        "Farthest-point and k-means anchors are chosen in Word2Vec's space (cosine geometry) "
        "and used as the same words in every space; the heatmap uses uniform anchors.",
    ]
    if cfg["cka_words"] and cfg["cka_words"] < n_vocab:
        out.append(f"Linear CKA is computed on a fixed random subset of {cfg['cka_words']} "
                   "vocabulary words (it costs O(n d^2) in float64).")
    if queries is not None:
        out.append(f"Jaccard/MRR average over {len(queries)} random query words (fixed by the "
                   f"base seed), each searched among all {n_vocab} vocabulary words.")
    return out


def _heatmap(ctx: RunContext, rows, names) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.3 * len(names), 0.9 * len(names) + 2))
    for ax, (center, label) in zip(axes, (("none", "plain cosine"),
                                          ("anchors", "anchor-centred"))):
        mat = np.full((len(names), len(names)), np.nan)
        for i, s in enumerate(names):
            for j, t in enumerate(names):
                mat[i, j] = 1.0 if s == t else _mean_std(rows, "mrr", table="all-pairs",
                                                         source=s, target=t, center=center)[0]
        ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if mat[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"relative MRR@{K}, {label}")
        ax.set_xlabel("target")
        ax.set_ylabel("source")
    fig.tight_layout()
    path = ctx.figure_path("word_all_pairs_mrr")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _figure(ctx: RunContext, emb, vocab, pair, n_anchors, n_groups, seed) -> str:
    """The paper's figure: the same words in two spaces, absolute (top) vs relative (bottom).

    A few frequent words and their nearest neighbours in Word2Vec are projected to 2-D by one PCA
    per row fitted on both spaces' points together, so each row treats the two spaces alike.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relreps.metrics import knn_indices
    from relreps.projection import relative_projection

    rng = np.random.default_rng(seed)
    a = emb[pair[0]]
    heads = rng.choice(min(500, len(vocab)), n_groups, replace=False)
    nbrs = knn_indices(a[heads], a, 12, metric="cosine")
    groups = []
    used: set[int] = set()
    for g in nbrs:
        members = [int(i) for i in g if int(i) not in used][:10]
        used.update(members)
        groups.append(members)
    idx = np.asarray([i for g in groups for i in g])
    colour = np.asarray([c for c, g in enumerate(groups) for _ in g])
    anc = np.random.default_rng(seed).choice(len(vocab), n_anchors, replace=False)
    rows = {"absolute": {n: emb[n][idx] for n in pair},
            "relative": {n: relative_projection(emb[n][idx], emb[n][anc], center="anchors")
                         for n in pair}}
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    for r, (kind, spaces) in enumerate(rows.items()):
        same_width = len({v.shape[1] for v in spaces.values()}) == 1
        both = np.concatenate(list(spaces.values())) if same_width else None
        for c, n in enumerate(pair):
            x = spaces[n]
            ref = both if both is not None else x
            mu = ref.mean(0)
            _, _, vt = np.linalg.svd(ref - mu, full_matrices=False)
            xy = (x - mu) @ vt[:2].T
            ax = axes[r, c]
            ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10", s=18)
            for (px, py), i in zip(xy, idx):
                ax.annotate(vocab[i], (px, py), fontsize=6, alpha=0.8)
            ax.set_title(f"{n}, {kind}" + (f" (centred, {n_anchors} anchors)" if kind == "relative"
                                            else ""))
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("The same words in two independently trained spaces: one PCA per row "
                 "fitted on both spaces together")
    fig.tight_layout()
    path = ctx.figure_path("word_spaces_absolute_vs_relative")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# ----------------------------------------------------------------------------------------------
# Training settings chosen on validation query words (scripts/select_word_training.py)
# ----------------------------------------------------------------------------------------------

#: The Word2Vec/FastText settings compared by `select_training_settings`: the two settings that
#: were tuned by hand (gensim's default down-sampling 1e-3 vs 1e-4; 5 vs 10 epochs), skip-gram
#: and everything else fixed. Ties go to the earlier point (the cheaper of equal scores first).
TRAINING_GRID: tuple[dict[str, Any], ...] = (
    {"sample": 1e-4, "epochs": 5}, {"sample": 1e-4, "epochs": 10},
    {"sample": 1e-3, "epochs": 5}, {"sample": 1e-3, "epochs": 10})
#: Validation query words and anchor seeds of the selection at full scale.
VALIDATION_QUERIES = 500
VALIDATION_SEEDS = 3


def validation_scores(ctx: RunContext, settings: Mapping[str, Any], *,
                      n_queries: int = VALIDATION_QUERIES,
                      n_seeds: int = VALIDATION_SEEDS) -> dict[str, Any]:
    """Relative MRR@5 between Word2Vec and FastText trained with `settings` (on top of the
    run's training settings for `ctx`'s scale and options), on validation query words only.

    Everything else is the experiment's own: corpus, vocabulary rule (`_vocabulary`), uniform
    anchors (`_anchors`, `n_anchors` of the config, seeds `ctx.seeds(n_seeds)`), relative
    projection with plain and anchor-centred cosine, both directions. The queries are
    `validation_query_rows` (disjoint from the run's test queries `query_rows`); anchors may
    be any vocabulary word, as in the run.

    Returns the settings, `mrr` {"w2v->ft plain", "w2v->ft centred", "ft->w2v plain",
    "ft->w2v centred"} -> (mean, std over seeds), the `criterion` (mean of the four),
    per-seed `rows`, the validation query rows, the vocabulary size and a fingerprint of it
    and of the validation queries (points are comparable only when both agree), training
    times, notes.
    """
    from relreps.cache import content_key
    from relreps.datasets.words import load_corpus
    from relreps.encoders.words import TRAIN_DEFAULTS
    from relreps.metrics import retrieval_metrics
    from relreps.projection import relative_projection

    cfg = _config(ctx)
    unknown = set(settings) - set(TRAIN_KEYS)
    if unknown:
        raise ValueError(f"unknown training settings {sorted(unknown)}; known: {TRAIN_KEYS}")
    train = {**cfg["train"], **settings}
    min_count = int(train.get("min_count", TRAIN_DEFAULTS["min_count"]))
    notes: list[str] = []
    timings: dict[str, Any] = {}
    corpus = load_corpus(cfg["corpus"])
    spaces = _load_spaces(["word2vec", "fasttext"], corpus, train, ctx, timings, notes)
    vocab = _vocabulary(cfg, corpus.counts(), spaces, min_count, notes)
    test_q = query_rows(len(vocab), int(cfg["n_queries"]), ctx.seed)
    val_q = validation_query_rows(len(vocab), n_queries, ctx.seed, int(cfg["n_queries"]))
    if test_q is None or np.intersect1d(val_q, test_q).size:  # guaranteed by construction
        raise AssertionError("validation queries overlap the test queries")
    pair = ("word2vec", "fasttext")
    emb = {n: np.ascontiguousarray(spaces[n].embed(vocab), dtype=np.float32) for n in pair}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in ctx.seeds(n_seeds):
        anc = _anchors("uniform", emb[pair[0]], int(cfg["n_anchors"]), seed)
        for center in (None, "anchors"):
            rel = {n: relative_projection(emb[n], emb[n][anc], center=center) for n in pair}
            for src, tgt in (pair, pair[::-1]):
                m = retrieval_metrics(rel[src], rel[tgt], K, queries=val_q)
                rows.append({"direction": f"{_SHORT[src]}->{_SHORT[tgt]}",
                             "center": "centred" if center else "plain", "seed": seed, **m})
    timings["validation metrics (s)"] = round(time.perf_counter() - t0, 1)
    mrr = {}
    for direction in ("w2v->ft", "ft->w2v"):
        for center in ("plain", "centred"):
            vals = [r["mrr"] for r in rows if r["direction"] == direction
                    and r["center"] == center]
            mrr[f"{direction} {center}"] = (float(np.mean(vals)), float(np.std(vals)))
    return {"settings": dict(settings), "train": {**TRAIN_DEFAULTS, **train},
            "mrr": mrr, "criterion": float(np.mean([m for m, _ in mrr.values()])),
            "rows": rows, "n_vocab": len(vocab), "vocabulary_key": content_key(vocab),
            "validation_queries_key": content_key(val_q.tolist()),
            "validation_rows": val_q.tolist(),
            "n_validation_queries": int(len(val_q)), "n_test_queries": int(len(test_q)),
            "anchor_seeds": ctx.seeds(n_seeds), "timings": timings, "notes": notes}


_SHORT = {"word2vec": "w2v", "fasttext": "ft"}


def select_training_settings(scores: Sequence[Mapping[str, Any]]) -> int:
    """Index of the grid point with the highest validation `criterion` (the first on ties).

    Raises ValueError when `scores` is empty, a criterion is not finite, or the points were
    not scored on the same vocabulary and validation queries (then they are not comparable).
    """
    if not scores:
        raise ValueError("no grid point was scored")
    for key in ("vocabulary_key", "validation_queries_key"):
        if len({s[key] for s in scores}) != 1:
            raise ValueError(f"the grid points differ in {key}: not comparable")
    crit = np.asarray([float(s["criterion"]) for s in scores])
    if not np.isfinite(crit).all():
        raise ValueError(f"non-finite validation criterion: {crit.tolist()}")
    return int(np.argmax(crit))
