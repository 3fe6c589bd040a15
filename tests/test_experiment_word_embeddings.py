"""The word-embeddings experiment: its vocabulary rule, its options, and a smoke run end to end
(Word2Vec and FastText trained on gensim's bundled Lee corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from relreps.encoders.words import WordVectors
from relreps.experiments import RunContext, available, run_experiment
from relreps.experiments import word_embeddings as we


def test_registered():
    assert we.NAME in available()


def test_vocabulary_rule():
    counts = {"the": 100, "house": 50, "x2go": 40, "cats": 30, "dog": 30, "Tree": 25,
              "river": 20, "ocean": 10, "rare": 2}
    a = WordVectors(["house", "cats", "river", "ocean", "rare", "dog"], np.eye(6), "a")
    b = WordVectors(["house", "cats", "ocean", "rare", "dog"], np.eye(5), "b")
    vocab = we.shared_vocabulary(counts, {"a": a, "b": b}, 10, min_count=5)
    # letters only, length >= 4, frequent enough, covered by every space, most frequent first
    assert vocab == ["house", "cats", "ocean"]
    assert we.shared_vocabulary(counts, {"a": a, "b": b}, 1, min_count=5, skip=1) == ["cats"]
    assert we.shared_vocabulary(counts, {"a": a}, 10, min_count=5,
                                also_in={"river", "house"}) == ["house", "river"]


def test_options_override_config(tmp_path):
    ctx = RunContext(scale="smoke", seed=0, out=tmp_path,
                     options={"epochs": "7", "n_seeds": "2", "spaces": "word2vec,fasttext"})
    cfg = we._config(ctx)
    assert cfg["train"]["epochs"] == 7 and cfg["n_seeds"] == 2
    with pytest.raises(ValueError, match="unknown option"):
        we._config(RunContext(scale="smoke", seed=0, out=tmp_path, options={"bogus": 1}))


@pytest.mark.slow
def test_smoke_run_relative_beats_absolute(tmp_path):
    pytest.importorskip("gensim")
    res = run_experiment(we.NAME, scale="smoke", out=tmp_path)
    out = Path(tmp_path)
    for f in ("results.json", "results.md", "meta.json", *res.figures):
        assert (out / f).exists(), f
    assert len(res.figures) == 2
    payload = json.loads((out / "results.json").read_text())
    rows = payload["rows"]
    assert {r["strategy"] for r in rows} >= {"uniform", "farthest-point", "k-means"}
    for r in rows:
        if r["mrr"] is not None:
            assert 0.0 <= r["mrr"] <= 1.0 and 0.0 <= r["jaccard"] <= 1.0

    def mean(**where):
        vals = [r["mrr"] for r in rows if r["table"] == "pair"
                and all(r[k] == v for k, v in where.items())]
        assert vals
        return float(np.mean(vals))

    absolute = mean(space="absolute", source="word2vec", target="fasttext")
    relative = mean(space="relative", center="anchors", source="word2vec", target="fasttext")
    # independently trained spaces: raw neighbourhoods do not match, relative ones do
    assert absolute < 0.1
    assert relative > absolute + 0.2
    # 10 seeds at full scale, 2 here; one row per seed, strategy, centring and direction
    n_rel = [r for r in rows if r["table"] == "pair" and r["space"] == "relative"]
    assert len(n_rel) == 2 * 6 * 2 * 2
    md = (out / "results.md").read_text()
    assert "Table 1" in md and "Appendix" in md and "All pairs" in md
    assert payload["summary"]["goal: absolute MRR near 0 (w2v vs ft)"] is True
