"""English text corpora for training word embeddings offline.

- "gcide+wordnet" (full scale): the GCIDE dictionary (Debian `dict-gcide`,
  `/usr/share/dictd/gcide.dict.dz`) and the WordNet glosses (Debian `wordnet-base`,
  `/usr/share/wordnet/data.*`, the text after `|`). About 5.8 M tokens.
- "lee" (smoke scale): gensim's bundled Lee background corpus (`lee_background.cor`, ~60 k
  tokens), for tests.

Text is lower-cased and tokenised into runs of ASCII letters (`[a-z]+`); dictionary markup
(pronunciations between backslashes, bracketed etymologies and source tags, braces) is removed.
Every paragraph becomes one line of space-separated tokens. The corpus file and its word counts
are cached on disk (`relreps.cache`), keyed by the sources' sizes and the cleaning version, so a
rerun reads them back in a second.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from relreps.cache import cache_dir, content_key, discard_entry, regular_file
from relreps.errors import DataNotFoundError, InputTypeError, MissingDependencyError, OptionError
from relreps.progress import progress

__all__ = ["Corpus", "load_corpus", "build_corpus", "tokenize", "gcide_paragraphs",
           "wordnet_glosses", "lee_lines", "GCIDE_PATH", "WORDNET_DIR", "CORPORA"]

GCIDE_PATH = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
APT_HINT = "apt-get install dict-gcide wordnet-base"
CORPORA = ("gcide+wordnet", "gcide", "wordnet", "lee")

_VERSION = "words-corpus-v1"
_TOKEN = re.compile(r"[a-z]+")
_PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_BRACES = re.compile(r"[{}]")
_MAX_TOKENS_PER_LINE = 5_000


def tokenize(text: str) -> list[str]:
    """Lower-case `text` and return its runs of ASCII letters."""
    return _TOKEN.findall(text.lower())


def _clean_gcide(paragraph: str) -> str:
    paragraph = _PRONUNCIATION.sub(" ", paragraph)
    # Etymologies and source tags ([1913 Webster], [WordNet 1.5], [Obs.]) are bracketed; inner
    # brackets go first so nested ones are removed too.
    for _ in range(3):
        new = _BRACKETS.sub(" ", paragraph)
        if new == paragraph:
            break
        paragraph = new
    return _BRACES.sub("", paragraph)


def _require_file(path: Path, what: str) -> Path:
    if not Path(path).exists():
        raise DataNotFoundError(
            f"{what} not found at {path}. Install the Debian packages with: {APT_HINT} "
            "(or `make setup`, which runs scripts/install_data.sh)")
    return Path(path)


def gcide_paragraphs(path: str | Path = GCIDE_PATH) -> Iterator[str]:
    """Cleaned paragraphs of the GCIDE dictionary (wrapped lines joined, markup removed)."""
    path = _require_file(Path(path), "The GCIDE dictionary (gcide.dict.dz)")
    buf: list[str] = []
    opener = gzip.open if path.suffix in (".dz", ".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        started = False
        for line in f:
            if not started:  # skip the database header and licence before the first entry
                started = line.startswith(" Begin file 1 of")
                continue
            if line.strip():
                buf.append(line.strip())
            elif buf:
                yield _clean_gcide(" ".join(buf))
                buf = []
    if buf:
        yield _clean_gcide(" ".join(buf))


def wordnet_glosses(directory: str | Path = WORDNET_DIR) -> Iterator[str]:
    """The glosses (definitions and examples, the text after `|`) of every WordNet synset."""
    directory = Path(directory)
    for name in WORDNET_FILES:
        path = _require_file(directory / name, f"WordNet's {name}")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(" "):  # licence header
                    continue
                _, sep, gloss = line.partition("|")
                if sep:
                    yield gloss.strip()


def lee_lines() -> Iterator[str]:
    """Lines of gensim's bundled Lee background corpus (news, ~60 k tokens)."""
    try:
        from gensim.test.utils import datapath
    except ImportError as e:
        raise MissingDependencyError("gensim", "the smoke-scale word corpus",
                                     "pip install 'relreps[words]'") from e
    path = Path(datapath("lee_background.cor"))
    with open(_require_file(path, "gensim's lee_background.cor"), encoding="utf-8") as f:
        yield from f


def _source_texts(name: str, gcide_path: Path, wordnet_dir: Path) -> Iterable[str]:
    if name == "gcide":
        return gcide_paragraphs(gcide_path)
    if name == "wordnet":
        return wordnet_glosses(wordnet_dir)
    if name == "lee":
        return lee_lines()
    raise OptionError(f"unknown corpus source {name!r}; known: gcide, wordnet, lee")


def _source_ids(sources: list[str], gcide_path: Path, wordnet_dir: Path) -> list:
    """What identifies the sources' content cheaply: paths and sizes (checked to exist)."""
    ids: list = []
    for s in sources:
        if s == "gcide":
            p = _require_file(gcide_path, "The GCIDE dictionary (gcide.dict.dz)")
            ids.append((s, str(p), p.stat().st_size))
        elif s == "wordnet":
            for n in WORDNET_FILES:
                p = _require_file(wordnet_dir / n, f"WordNet's {n}")
                ids.append((s, str(p), p.stat().st_size))
        else:
            ids.append((s,))
    return ids


@dataclass(frozen=True)
class Corpus:
    """A tokenised corpus on disk: one paragraph a line, tokens separated by spaces."""

    name: str
    path: Path  # the corpus text file (gensim `corpus_file` / LineSentence format)
    counts_path: Path  # word<TAB>count, most frequent first
    n_lines: int
    n_tokens: int
    key: str  # content key, used in the cache keys of models trained on it

    def lines(self) -> Iterator[list[str]]:
        """Token lists, one per line (re-iterable by calling again)."""
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield line.split()

    def counts(self) -> dict[str, int]:
        """Word -> occurrences, ordered from the most frequent (ties alphabetically)."""
        out: dict[str, int] = {}
        with open(self.counts_path, encoding="utf-8") as f:
            for line in f:
                w, c = line.rstrip("\n").split("\t")
                out[w] = int(c)
        return out

    def __len__(self) -> int:
        return self.n_lines


def _atomic_text(path: Path, lines: Iterable[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_meta(folder: Path) -> dict | None:
    """The cached corpus's meta.json if it and both corpus files are sound, else None (the
    corpus is rebuilt and the files replaced)."""
    meta_path = folder / "meta.json"
    if not all(regular_file(folder / f) for f in ("meta.json", "corpus.txt", "counts.tsv")):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError):
        return None
    if not isinstance(meta, dict) or not all(
            isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool) and meta[k] >= 0
            for k in ("n_lines", "n_tokens")):
        return None
    return meta


def build_corpus(sources: Iterable[str] = ("gcide", "wordnet"), *, name: str | None = None,
                 gcide_path: str | Path = GCIDE_PATH, wordnet_dir: str | Path = WORDNET_DIR,
                 use_cache: bool = True) -> Corpus:
    """Tokenise `sources` (any of "gcide", "wordnet", "lee") into one cached corpus file."""
    if isinstance(sources, (str, bytes)):
        raise InputTypeError(f"sources must be a list of source names, got the string "
                             f"{sources!r} (write [{sources!r}])")
    sources = list(sources)
    if not sources:
        raise OptionError("no corpus sources given; choose from gcide, wordnet, lee")
    for src in sources:
        if src not in ("gcide", "wordnet", "lee"):
            raise OptionError(f"unknown corpus source {src!r}; known: gcide, wordnet, lee")
    gcide_path, wordnet_dir = Path(gcide_path), Path(wordnet_dir)
    key = content_key(_VERSION, _source_ids(sources, gcide_path, wordnet_dir))
    folder = cache_dir() / "corpora" / key[:32]
    meta_path = folder / "meta.json"
    name = name or "+".join(sources)
    if use_cache:
        meta = _read_meta(folder)
        if meta is not None:
            return Corpus(name, folder / "corpus.txt", folder / "counts.tsv", meta["n_lines"],
                          meta["n_tokens"], key)
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("meta.json", "corpus.txt", "counts.tsv"):  # anything planted in their place
        if os.path.lexists(folder / f) and not regular_file(folder / f):
            discard_entry(folder / f)
    counts: Counter[str] = Counter()
    n_lines = 0

    def lines() -> Iterator[str]:
        nonlocal n_lines
        for src in sources:
            for text in progress(_source_texts(src, gcide_path, wordnet_dir),
                                 desc=f"tokenise {src}"):
                toks = tokenize(text)
                for s in range(0, len(toks), _MAX_TOKENS_PER_LINE):
                    chunk = toks[s:s + _MAX_TOKENS_PER_LINE]
                    counts.update(chunk)
                    n_lines += 1
                    yield " ".join(chunk) + "\n"

    _atomic_text(folder / "corpus.txt", lines())
    ordered = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    _atomic_text(folder / "counts.tsv", (f"{w}\t{c}\n" for w, c in ordered))
    n_tokens = int(sum(counts.values()))
    _atomic_text(meta_path, [json.dumps({"name": name, "sources": sources, "n_lines": n_lines,
                                         "n_tokens": n_tokens, "n_types": len(counts)})])
    return Corpus(name, folder / "corpus.txt", folder / "counts.tsv", n_lines, n_tokens, key)


def load_corpus(name: str = "gcide+wordnet", **kwargs) -> Corpus:
    """A named corpus: "gcide+wordnet" (full scale), "gcide", "wordnet" or "lee" (smoke)."""
    if not isinstance(name, str) or name not in CORPORA:
        raise OptionError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    return build_corpus(name.split("+"), name=name, **kwargs)
