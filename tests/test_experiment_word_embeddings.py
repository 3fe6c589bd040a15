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
from script_loader import loaded_script


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


# --- training settings chosen on validation query words (issue 14) ----------------------------

def test_validation_queries_are_disjoint_from_the_test_queries():
    test = we.query_rows(20_000, 500, 0)
    assert test is not None and len(np.unique(test)) == 500
    val = we.validation_query_rows(20_000, 500, 0, 500)
    assert len(np.unique(val)) == 500 and np.all(np.diff(val) > 0)
    assert np.intersect1d(val, test).size == 0
    assert val.min() >= 0 and val.max() < 20_000
    # deterministic, and a different base seed moves both sets (still disjoint)
    assert np.array_equal(val, we.validation_query_rows(20_000, 500, 0, 500))
    val1, test1 = we.validation_query_rows(20_000, 500, 1, 500), we.query_rows(20_000, 500, 1)
    assert not np.array_equal(val1, val) and np.intersect1d(val1, test1).size == 0
    # the pool is exactly the non-test words: asking for all of them returns them
    rest = we.validation_query_rows(1000, 800, 0, 200)
    assert np.array_equal(rest, np.setdiff1d(np.arange(1000), we.query_rows(1000, 200, 0)))
    with pytest.raises(ValueError, match="every vocabulary word"):
        we.validation_query_rows(1000, 100, 0, 0)  # n_queries=0: every word is a test query
    with pytest.raises(ValueError, match="not test queries"):
        we.validation_query_rows(1000, 801, 0, 200)
    assert we.query_rows(1000, 0, 0) is None and we.query_rows(1000, 1000, 0) is None


def test_selection_picks_the_validation_argmax():
    def point(crit, vocab="v", queries="q"):
        return {"criterion": crit, "vocabulary_key": vocab, "validation_queries_key": queries}

    assert we.select_training_settings([point(0.5), point(0.7), point(0.6)]) == 1
    assert we.select_training_settings([point(0.7), point(0.7)]) == 0  # ties: the earlier
    with pytest.raises(ValueError, match="no grid point"):
        we.select_training_settings([])
    with pytest.raises(ValueError, match="vocabulary_key"):
        we.select_training_settings([point(0.5), point(0.7, vocab="other")])
    with pytest.raises(ValueError, match="validation_queries_key"):
        we.select_training_settings([point(0.5), point(0.7, queries="other")])
    with pytest.raises(ValueError, match="non-finite"):
        we.select_training_settings([point(0.5), point(float("nan"))])
    # the grid: the two hand-tuned settings only, current defaults among the points
    from relreps.encoders.words import TRAIN_DEFAULTS

    assert {tuple(sorted(p)) for p in we.TRAINING_GRID} == {("epochs", "sample")}
    assert len(we.TRAINING_GRID) == 4
    assert {"sample": TRAIN_DEFAULTS["sample"], "epochs": TRAIN_DEFAULTS["epochs"]} in \
        list(we.TRAINING_GRID)


@pytest.mark.slow
def test_smoke_selection_script(tmp_path, capsys):
    """scripts/select_word_training.py at smoke scale (Lee corpus, one gensim thread): every
    grid point is scored on validation words only, and the chosen point is the argmax."""
    pytest.importorskip("gensim")
    out = tmp_path / "sel.json"
    with loaded_script("select_word_training") as mod:
        assert mod.main(["--scale", "smoke", "--opt", "n_queries=200", "--opt", "workers=1",
                         "--queries", "150", "--anchor-seeds", "2", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert [s["settings"] for s in scores] == list(we.TRAINING_GRID)
    n_vocab = scores[0]["n_vocab"]
    test = we.query_rows(n_vocab, 200, 0)
    crits = []
    for s in scores:
        assert s["n_vocab"] == n_vocab and s["n_test_queries"] == 200
        val = np.asarray(s["validation_rows"])
        assert len(val) == 150 and np.intersect1d(val, test).size == 0
        assert len(s["rows"]) == 2 * 2 * 2  # seeds x centring x direction
        mrrs = [r["mrr"] for r in s["rows"]]
        assert all(0.0 <= m <= 1.0 for m in mrrs)
        assert s["criterion"] == pytest.approx(np.mean(mrrs))
        crits.append(s["criterion"])
    # on the 60 k-token Lee corpus more training must help: 10 epochs beat 5 at sample 1e-3
    by = {(s["settings"]["sample"], s["settings"]["epochs"]): s["criterion"] for s in scores}
    assert by[(1e-3, 10)] > by[(1e-3, 5)]
    printed = capsys.readouterr().out
    chosen = int(np.argmax(crits))
    assert printed.count("**chosen**") == 1
    row = next(line for line in printed.splitlines() if "**chosen**" in line)
    assert row.startswith(f"| {scores[chosen]['settings']['sample']} | "
                          f"{scores[chosen]['settings']['epochs']} |")
