"""Nothing in the cache or in the data can run code; bad cache entries are recomputed.

Every cache user runs twice: once to fill an empty cache, then after EVERY file it wrote has been
replaced by something hostile or broken (a pickle that would create a marker file if executed,
an object .npy, a torch archive, empty, truncated, wrong shape or dtype, NaN, a folder, a FIFO, a
link to a device). The second run must return the first run's result, and the marker must never
appear. Data files that are pickles by nature (MNIST, Planetoid) are parsed by a restricted
unpickler that refuses anything but numbers.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import signal
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from relreps import cache as C
from relreps.datasets._safe_pickle import load_data_pickle
from relreps.errors import FormatError

# ------------------------------------------------------------------------------- hostile content


class _Evil:
    """Unpickling this calls exec(), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def evil_pickle(marker: Path, protocol: int = 2) -> bytes:
    return pickle.dumps(_Evil(marker), protocol=protocol)


def evil_object_npy(marker: Path) -> bytes:
    buf = io.BytesIO()
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil(marker)
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def evil_torch(marker: Path) -> bytes:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"state": _Evil(marker), "summary": {}}, buf)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _like(original: bytes) -> np.ndarray | None:
    try:
        return np.load(io.BytesIO(original), allow_pickle=False)
    except Exception:  # noqa: BLE001 - not an .npy file
        return None


def _wrong_shape(original: bytes, marker: Path) -> bytes:
    a = _like(original)
    return _npy(np.zeros((3, 1) if a is None or a.shape != (3, 1) else (2, 2), np.float32))


def _wrong_dtype(original: bytes, marker: Path) -> bytes:
    a = _like(original)
    if a is None:
        return _npy(np.zeros(3, np.complex64))
    return _npy(a.astype(np.float64 if a.dtype != np.float64 else np.float32))


def _nan(original: bytes, marker: Path) -> bytes:
    a = _like(original)
    if a is None or a.dtype.kind != "f" or a.size == 0:
        return _npy(np.full(3, np.nan))
    a = a.copy()
    a.flat[a.size // 2] = np.nan
    return _npy(a)


def _json_wrong_type(original: bytes, marker: Path) -> bytes:
    return json.dumps({"n_lines": "many", "0": [1, 2, 3]}).encode()


# variant name -> (original bytes, marker) -> bytes, or a special string for non-files
VARIANTS: dict[str, Callable[[bytes, Path], bytes] | str] = {
    "pickle": lambda o, m: evil_pickle(m),
    "pickle-protocol-0": lambda o, m: evil_pickle(m, protocol=0),
    "object-npy": lambda o, m: evil_object_npy(m),
    "torch-archive": lambda o, m: evil_torch(m),
    "empty": lambda o, m: b"",
    "truncated": lambda o, m: o[: max(1, len(o) // 2)],
    "garbage": lambda o, m: os.urandom(64),
    "wrong-shape": _wrong_shape,
    "wrong-dtype": _wrong_dtype,
    "nan": _nan,
    "json-wrong-type": _json_wrong_type,
    "folder": "folder",
    "fifo": "fifo",
    "link-to-device": "link-to-device",
}


def plant(path: Path, variant: str, marker: Path) -> None:
    """Replace the cache file `path` by the hostile `variant`."""
    original = path.read_bytes()
    path.unlink()
    make = VARIANTS[variant]
    if make == "folder":
        path.mkdir()
        (path / "inner.npy").write_bytes(evil_pickle(marker))
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "link-to-device":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(make(original, marker))  # type: ignore[operator]


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


class _Alarm:
    """Fail instead of hanging (a reader that opened a FIFO would block forever)."""

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds

    def __enter__(self):
        def boom(*_):
            raise TimeoutError("the cache reader blocked (did it open a FIFO?)")

        self.old = signal.signal(signal.SIGALRM, boom)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


# ------------------------------------------------------------------------------- cache users


def _same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def run_cached_array(tmp: Path, monkeypatch) -> object:
    return C.cached_array("unit", "k", lambda: np.arange(6.0).reshape(2, 3), shape=(2, 3),
                          dtype=np.float64)


def run_cached_encode(tmp: Path, monkeypatch) -> object:
    from relreps.encoders.base import cached_encode

    return cached_encode("toy/enc", ["a", "bb", "ccc"],
                         lambda b: np.array([[len(t), 1.0] for t in b]), batch_size=2, dim=2)


def run_cached_encoder(tmp: Path, monkeypatch) -> object:
    from relreps.encoders import CachedEncoder

    class Model:
        def encode(self, batch):
            return np.array([[t.count("a"), len(t), 0.5] for t in batch])

    return CachedEncoder(Model(), "toy-model", dim=3).encode(["banana", "kiwi", "apple", "fig"])


def run_encoded_words(tmp: Path, monkeypatch) -> object:
    from relreps.encoders.words import EncodedWords

    space = EncodedWords("toy-words", lambda ws: np.array([[len(w), w.count("e")] for w in ws]),
                         dim=2)
    return space.embed(["tree", "leaf", "root"])


def run_vision_features(tmp: Path, monkeypatch) -> object:
    from relreps.encoders.vision import EfficientNetLiteEncoder

    enc = EfficientNetLiteEncoder("lite0", resolution=32)

    def fake_forward(x):  # the model itself is not needed to test its feature cache
        return np.repeat(x.reshape(len(x), -1)[:, :1], 1280, axis=1) + np.arange(1280)

    monkeypatch.setattr(enc, "_forward", fake_forward)
    images = np.linspace(0, 1, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    return enc.encode(images)


def run_word2vec(tmp: Path, monkeypatch) -> object:
    pytest.importorskip("gensim")
    from relreps.encoders.words import train_word2vec, training_info

    corpus = tmp / "corpus.txt"
    if not corpus.exists():
        rng = np.random.default_rng(0)
        words = [f"w{i}" for i in range(30)]
        corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(200)))
    wv = train_word2vec(corpus, vector_size=8, epochs=1, workers=1, min_count=1)
    training_info("word2vec", corpus, vector_size=8, epochs=1, workers=1, min_count=1)
    return wv.words, wv.vectors.shape


def run_corpus(tmp: Path, monkeypatch) -> object:
    from relreps.datasets.words import build_corpus

    wn = tmp / "wordnet"
    if not wn.exists():
        wn.mkdir()
        for n in ("data.noun", "data.verb", "data.adj", "data.adv"):
            (wn / n).write_text(f"  licence line\n00001 x | a gloss about {n} things\n")
    c = build_corpus(["wordnet"], wordnet_dir=wn)
    return c.n_lines, c.n_tokens, list(c.lines()), c.counts()


def run_translations(tmp: Path, monkeypatch) -> object:
    from relreps.datasets import text as TX

    class Fake:
        def translate(self, t, direction):
            return t.upper()

    monkeypatch.setattr(TX, "_TRANSLATOR", Fake())
    return TX.translate_texts(["one", "two", "three"], chunk_size=2)


def _tiny_cifar(tmp: Path) -> Path:
    from PIL import Image

    path = tmp / "cifar10-jpg.tar.gz"
    if path.exists():
        return path
    with tarfile.open(path, "w:gz") as tf:
        for split in ("train", "test"):
            for c, cls in enumerate(("cat", "dog")):
                for i in range(2):
                    im = Image.new("RGB", (32, 32), (40 * c + 10 * i, 100, 200))
                    buf = io.BytesIO()
                    im.save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tf.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def run_cifar(tmp: Path, monkeypatch) -> object:
    pytest.importorskip("PIL")
    from relreps.datasets import images as im

    monkeypatch.setattr(im, "cifar10_tarball", lambda: _tiny_cifar(tmp))
    monkeypatch.setattr(im, "_CIFAR_MEMO", {})
    d = im.load_cifar10("train")
    return d.x, d.y


def _tiny_mnist(tmp: Path) -> Path:
    path = tmp / "mnist.pkl.gz"
    if not path.exists():
        rng = np.random.default_rng(0)

        def split(n):
            return (rng.random((n, 784)).astype(np.float32), rng.integers(0, 10, n))

        with gzip.open(path, "wb") as f:
            pickle.dump((split(6), split(3), split(4)), f, protocol=2)
    return path


def run_mnist(tmp: Path, monkeypatch) -> object:
    from relreps.datasets import images as im

    monkeypatch.setattr(im, "mnist_path", lambda: _tiny_mnist(tmp))
    monkeypatch.setattr(im, "_MNIST_MEMO", {})
    d = im.load_mnist("test")
    return d.x, d.y


def run_graph_model(tmp: Path, monkeypatch) -> object:
    pytest.importorskip("torch_geometric")
    from relreps.datasets.graphs import synthetic_graph
    from relreps.experiments.graphs import _train_cached
    from relreps.models.graph import GNNConfig

    data = synthetic_graph(n_nodes=40, n_classes=2, n_features=8, seed=0)
    kw = {"epochs": 3, "lr": 0.01, "weight_decay": 5e-4, "optimizer": "adam", "patience": None}
    model, summary = _train_cached(data, GNNConfig(hidden=16, activation="tanh"), np.arange(5),
                                   0, kw, "test")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return {k: summary[k] for k in ("best_epoch", "val_acc", "test_acc")}, state


def run_graph_sweep(tmp: Path, monkeypatch) -> object:
    pytest.importorskip("torch_geometric")
    from relreps.datasets.graphs import synthetic_graph
    from relreps.experiments import graphs as G
    from relreps.experiments.base import RunContext

    calls = []

    def fake_sweep_model(data, anchors, ref, c):  # the cache path is real, the model is not
        calls.append(c["seed"])
        e = np.arange(1, c["epochs"] + 1, dtype=np.float64)
        return np.stack([e, e / 10, e / 20, np.full_like(e, 0.5), np.full_like(e, np.nan),
                         e / 30], axis=1)

    monkeypatch.setattr(G, "_sweep_model", fake_sweep_model)
    data = synthetic_graph(n_nodes=40, n_classes=2, n_features=8, seed=0)
    plan = {"ref_epochs": 2, "patience": None, "sweep_models": 2, "sweep_epochs": (2, 3),
            "bootstrap": 5}
    ctx = RunContext(scale="smoke", seed=0, out=tmp / "run")
    rows = G._part_sweep(ctx, plan, data, np.arange(5))[0]
    return [(r.get("model"), r.get("epoch"), r.get("val_acc")) for r in rows
            if r["part"] == "sweep"]


SCENARIOS = {f.__name__[4:]: f for f in (
    run_cached_array, run_cached_encode, run_cached_encoder, run_encoded_words,
    run_vision_features, run_word2vec, run_corpus, run_translations, run_cifar, run_mnist,
    run_graph_model, run_graph_sweep)}
# Heavier scenarios get the variants that exercise distinct code paths only.
_FEW = ("pickle", "object-npy", "torch-archive", "truncated", "wrong-shape", "nan", "fifo")
_HEAVY = {"graph_model", "word2vec"}


_FEWEST = ("pickle", "truncated", "wrong-shape", "nan")  # a run draws three figures


def _variants(scenario: str) -> tuple[str, ...]:
    if scenario == "graph_sweep":
        return _FEWEST
    return _FEW if scenario in _HEAVY else tuple(VARIANTS)


@pytest.mark.parametrize("scenario,variant", [(s, v) for s in SCENARIOS for v in _variants(s)])
def test_planted_files_in_every_cache_location_never_run(scenario, variant, tmp_path,
                                                         monkeypatch):
    root, work, marker = tmp_path / "cache", tmp_path / "work", tmp_path / "PWNED"
    work.mkdir()
    monkeypatch.setenv("RELREPS_CACHE", str(root))
    run = SCENARIOS[scenario]
    first = run(work, monkeypatch)
    files = cache_files(root)
    assert files, f"{scenario} wrote nothing to the cache"
    for f in files:
        plant(f, variant, marker)
    with _Alarm(60):
        again = run(work, monkeypatch)
    assert not marker.exists(), f"a planted {variant} ran code in {scenario}'s cache"
    _same(first, again)
    with _Alarm(60):
        _same(first, run(work, monkeypatch))  # the recomputed entries are sound
    assert not marker.exists()


def test_old_pickled_graph_models_are_never_loaded(tmp_path, monkeypatch):
    """Entries of the old torch.load(weights_only=False) format beside the new ones: ignored."""
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"
    first = run_graph_model(tmp_path, monkeypatch)
    for f in cache_files(tmp_path / "cache"):
        f.with_suffix(".pt").write_bytes(evil_torch(marker))
    _same(first, run_graph_model(tmp_path, monkeypatch))
    assert not marker.exists()


# ------------------------------------------------------------------------------- data files


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_evil_pickles_are_refused_by_the_data_reader(protocol, tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(FormatError, match="builtins.exec|not loaded"):
        load_data_pickle(evil_pickle(marker, protocol))
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(np.array([1, "x"], dtype=object), protocol=2),  # an object array
    pickle.dumps({"a": {1, 2}}, protocol=2),  # a set: builtins.set
    pickle.dumps(np.float64(3.0), protocol=2),  # a numpy scalar: numpy.core.multiarray.scalar
    pickle.dumps(np.ma.masked_array([1.0]), protocol=2),  # a subclass of ndarray
    b"\x80\x02cnumpy\nndarray\nq\x00K\x05\x85q\x01\x86q\x02Rq\x03.",  # ndarray((5,)) called
    b"\x80\x02X\x01\x00\x00\x00aQ.",  # a persistent id
    b"\x80\x02]q\x00(K\x01",  # truncated
    b"",
])
def test_data_reader_refuses_anything_but_numbers(payload):
    with pytest.raises(FormatError):
        load_data_pickle(payload)


@settings(max_examples=40, deadline=None)
@given(arr=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8,
                                             np.int32, np.bool_]),
                      shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5)),
       protocol=st.integers(2, 4), fortran=st.booleans())
def test_data_reader_round_trips_numeric_arrays(arr, protocol, fortran):
    arr = np.asfortranarray(arr) if fortran else arr
    payload = pickle.dumps(((arr, arr[..., :1]), [arr]), protocol=protocol)
    (a, b), (c,) = load_data_pickle(payload)
    for got, ref in ((a, arr), (b, arr[..., :1]), (c, arr)):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


def test_sparse_records_are_rebuilt_and_checked():
    sp = pytest.importorskip("scipy.sparse")
    m = sp.csr_matrix(np.array([[0, 1.5], [2, 0]], np.float32))
    got = load_data_pickle(pickle.dumps(m, protocol=2), sparse=True)
    assert sp.issparse(got) and np.array_equal(got.toarray(), m.toarray())
    with pytest.raises(FormatError):  # sparse matrices only where the caller expects them
        load_data_pickle(pickle.dumps(m, protocol=2))
    bad = sp.csr_matrix(np.eye(2, dtype=np.float32))
    bad.indices = np.array([0, 7], dtype=bad.indices.dtype)  # a column outside the matrix
    with pytest.raises(FormatError):
        load_data_pickle(pickle.dumps(bad, protocol=2), sparse=True)


def test_a_hostile_mnist_file_is_refused(tmp_path, monkeypatch):
    from relreps.datasets import images as im

    marker = tmp_path / "PWNED"
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "mnist.pkl.gz"
    monkeypatch.setattr(im, "mnist_path", lambda: path)
    monkeypatch.setattr(im, "_MNIST_MEMO", {})
    rng = np.random.default_rng(0)
    for payload in (evil_pickle(marker),
                    pickle.dumps(((_Evil(marker), 1),), protocol=2),
                    pickle.dumps(((rng.random((3, 784)), np.arange(3)),) * 2, protocol=2),
                    pickle.dumps(((rng.random((3, 784)) * 9, np.arange(3)),) * 3, protocol=2),
                    pickle.dumps(((rng.random((3, 5)), np.arange(3)),) * 3, protocol=2)):
        with gzip.open(path, "wb") as f:
            f.write(payload)
        with pytest.raises(FormatError):
            im.load_mnist("train")
    path.write_bytes(b"not gzip at all")
    with pytest.raises(FormatError):
        im.load_mnist("train")
    assert not marker.exists()


def _planetoid_source() -> Path:
    from relreps.datasets import shared_data_dir
    from relreps.errors import DataNotFoundError

    try:
        return shared_data_dir("planetoid/Cora/raw") / "planetoid"
    except DataNotFoundError:
        pytest.skip("shared Planetoid data not available")


@pytest.mark.parametrize("part", ["x", "tx", "allx", "y", "ty", "ally", "graph"])
def test_hostile_planetoid_raw_files_are_refused(part, tmp_path):
    import shutil

    pytest.importorskip("torch_geometric")
    from relreps.datasets.graphs import load_planetoid

    marker = tmp_path / "PWNED"
    src = tmp_path / "src"
    shutil.copytree(_planetoid_source() / "Cora" / "raw", src / "Cora" / "raw")
    target = src / "Cora" / "raw" / f"ind.cora.{part}"
    target.chmod(0o644)
    target.write_bytes(evil_pickle(marker))
    with pytest.raises(FormatError, match=f"ind.cora.{part}"):
        load_planetoid("Cora", source=src)
    target.write_bytes(pickle.dumps({"not": "a matrix"}, protocol=2))
    with pytest.raises(FormatError):
        load_planetoid("Cora", source=src)
    assert not marker.exists()


def test_planted_planetoid_files_in_the_cache_are_never_read(tmp_path, monkeypatch):
    """PyG's processed/*.pt may be loaded with torch.load(weights_only=False) when a safe load
    fails; relreps no longer keeps (or reads) any Planetoid file in the cache."""
    pytest.importorskip("torch_geometric")
    from relreps.datasets.graphs import load_planetoid, planetoid_raw_files

    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"
    source = _planetoid_source()
    reference = load_planetoid("Cora", source=source)
    base = tmp_path / "cache" / "planetoid" / "Cora"
    for sub, names in (("processed", ["data.pt", "pre_transform.pt", "pre_filter.pt"]),
                       ("raw", planetoid_raw_files("Cora"))):
        (base / sub).mkdir(parents=True)
        for n in names:
            (base / sub / n).write_bytes(evil_torch(marker) if n.endswith(".pt")
                                         else evil_pickle(marker))
    got = load_planetoid("Cora", source=source)
    load_planetoid("Cora", split="public", source=source)
    assert not marker.exists()
    assert bool((got.x == reference.x).all()) and bool((got.y == reference.y).all())


# ------------------------------------------------------------------------------- model folders


def _fake_split_zip(tmp: Path) -> list[Path]:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", json.dumps([{"type": "ok"}]))
        z.writestr("all-mpnet-base-v2/model.safetensors", b"\x00" * 5000)
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    data = buf.getvalue()
    parts = []
    for i in range(5):
        p = tmp / f"all-mpnet-base-v2.zip.00{i + 1}"
        p.write_bytes(data[i * len(data) // 5:(i + 1) * len(data) // 5])
        parts.append(p)
    return parts


@pytest.mark.parametrize("tamper", ["extra-pickle", "changed-config", "same-size-change",
                                    "missing-file", "link", "file-in-place"])
def test_a_tampered_model_folder_is_extracted_again(tamper, tmp_path, monkeypatch):
    from relreps.encoders import text as T

    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(T, "_mpnet_parts", lambda: _fake_split_zip(tmp_path))
    folder = T.mpnet_model_dir()
    clean = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
             if p.is_file()}
    assert set(clean) == {"modules.json", "model.safetensors", "1_Pooling/config.json"}
    assert T.mpnet_model_dir() == folder  # a sound folder is reused
    if tamper == "extra-pickle":
        (folder / "pytorch_model.bin").write_bytes(evil_torch(tmp_path / "PWNED"))
    elif tamper == "changed-config":
        (folder / "modules.json").write_text(json.dumps([{"type": "os.system"}]))
    elif tamper == "same-size-change":
        (folder / "model.safetensors").write_bytes(b"\x01" * 5000)
    elif tamper == "missing-file":
        (folder / "1_Pooling" / "config.json").unlink()
    elif tamper == "link":
        (folder / "modules.json").unlink()
        (folder / "modules.json").symlink_to(tmp_path / "elsewhere.json")
    else:
        import shutil

        shutil.rmtree(folder)
        folder.write_bytes(evil_pickle(tmp_path / "PWNED"))
    again = T.mpnet_model_dir()
    got = {p.relative_to(again).as_posix(): p.read_bytes() for p in again.rglob("*")
           if p.is_file()}
    assert got == clean
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------- cache API


def test_entry_names_cannot_leave_the_cache(tmp_path):
    for ns, key in (("..", "k"), ("a/../..", "k"), ("/etc", "k"), ("ok", "../x"), ("ok", ""),
                    ("ok", ".hidden")):
        with pytest.raises(C.RelrepsError):
            C.cached_array(ns, key, lambda: np.ones(2), root=tmp_path)
    assert C.safe_name("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in C.safe_name("a/b") and C.safe_name("..") == "_"


def test_an_unusable_cache_is_a_named_error_or_a_warning(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RELREPS_CACHE", str(blocker / "sub"))
    with pytest.raises(C.RunFolderError, match="RELREPS_CACHE"):
        C.cache_dir()
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "ok"))

    def refuse(*args, **kwargs):  # a read-only cache (chmod does not stop root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(C.tempfile, "mkstemp", refuse)
    with pytest.raises(C.RunFolderError, match="not writable"):
        C.ensure_cache_writable()
    monkeypatch.setattr(C, "_WARNED", set())
    with pytest.warns(C.CacheWarning, match="not cached"):
        got = C.cached_array("unit", "k", lambda: np.ones(2))
    np.testing.assert_array_equal(got, np.ones(2))  # the computation goes on, uncached
    assert not list((tmp_path / "ok").rglob("*.npy"))


def test_a_world_writable_cache_warns(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("RELREPS_CACHE", str(shared))
    monkeypatch.setattr(C, "_WARNED", set())
    with pytest.warns(C.CacheWarning, match="writable by every user"):
        C.cache_dir()
