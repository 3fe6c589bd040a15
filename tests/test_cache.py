"""The content-keyed, atomic on-disk cache and the shared embedding cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relreps import cache as C
from relreps.encoders.base import cached_encode

PARTS = ("encode-v1", "minilm", ["a text", "another"], np.arange(6, dtype=np.float32).reshape(2, 3),
         {"b": 2, "a": [1, 2]}, 3, 0.5, None, b"raw")


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "c"))
    assert C.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("RELREPS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "relreps"


def test_the_test_session_uses_an_isolated_cache():
    # conftest.py points the cache at a per-session temporary folder.
    root = Path(os.environ["RELREPS_CACHE"])
    assert C.cache_dir() == root
    assert Path.home() / ".cache" not in root.parents
    assert os.environ.get("RELREPS_QUIET") == "1"


def test_content_key_is_stable_across_calls_and_processes():
    key = C.content_key(*PARTS)
    assert len(key) == 64 and int(key, 16) >= 0
    assert C.content_key(*PARTS) == key
    # Equal content in new objects, and dict insertion order, do not matter.
    same = ("encode-v1", "minilm", ("a text", "another"),
            np.arange(6, dtype=np.float32).reshape(2, 3).copy(), {"a": [1, 2], "b": 2}, 3, 0.5,
            None, bytearray(b"raw"))
    assert C.content_key(*same) == key
    # Another interpreter (other hash seed, other object ids) computes the same key.
    # (cache.py is loaded on its own: importing the relreps package would load torch, slowly.)
    code = ("import importlib.util as u, numpy as np; "
            "spec = u.spec_from_file_location('c', r'" + str(Path(C.__file__)) + "'); "
            "m = u.module_from_spec(spec); spec.loader.exec_module(m); "
            "content_key = m.content_key; "
            "print(content_key('encode-v1', 'minilm', ['a text', 'another'], "
            "np.arange(6, dtype=np.float32).reshape(2, 3), {'b': 2, 'a': [1, 2]}, 3, 0.5, None, "
            "b'raw'))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    assert out.stdout.strip() == key


@pytest.mark.parametrize("changed", [
    ("encode-v2",) + PARTS[1:],  # version tag
    PARTS[:2] + (["a text", "Another"],) + PARTS[3:],  # one character of one item
    PARTS[:2] + (["another", "a text"],) + PARTS[3:],  # item order
    PARTS[:2] + (["a textanother"],) + PARTS[3:],  # item boundaries
    PARTS[:2] + (["a text", "another", ""],) + PARTS[3:],  # an extra empty item
    PARTS[:3] + (np.arange(6, dtype=np.float64).reshape(2, 3),) + PARTS[4:],  # dtype
    PARTS[:3] + (np.arange(6, dtype=np.float32).reshape(3, 2),) + PARTS[4:],  # shape
    PARTS[:4] + ({"b": 2, "a": [1, 3]},) + PARTS[5:],  # a dict value
    PARTS[:5] + (4,) + PARTS[6:],  # a number
    PARTS[:5] + ("3",) + PARTS[6:],  # a number vs its string
    PARTS[:-1] + ("raw",),  # bytes vs str
    PARTS[1:],  # a part missing
])
def test_content_key_is_sensitive_to_every_part(changed):
    assert C.content_key(*changed) != C.content_key(*PARTS)


def test_content_key_sees_every_element_of_large_arrays():
    a = np.arange(10_000, dtype=np.float64)
    b = a.copy()
    b[5_000] = -1.0
    assert C.content_key(a) != C.content_key(b)
    # ... also inside a dict (e.g. a configuration holding weights or indices).
    assert C.content_key({"w": a}) != C.content_key({"w": b})
    assert C.content_key({"w": a}) == C.content_key({"w": a.copy()})


def test_content_key_hashes_object_arrays_by_value():
    # Distinct string objects with equal text: an object array's raw bytes are pointers.
    a = np.array(["".join(["te", "xt"]), "x"], dtype=object)
    b = np.array(["".join(["t", "ext"]), "x"], dtype=object)
    assert a[0] is not b[0]
    assert C.content_key(a) == C.content_key(b)
    assert C.content_key(a) != C.content_key(np.array(["text", "y"], dtype=object))


def test_content_key_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.arange(5000, dtype=torch.float32)
    u = t.clone()
    u[2500] = -1
    assert C.content_key(t) == C.content_key(t.clone())
    assert C.content_key(t) != C.content_key(u)
    assert C.content_key({"w": t}) != C.content_key({"w": u})


def test_cached_array_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(12.0).reshape(3, 4)

    first = C.cached_array("unit", "k1", compute, root=tmp_path)
    second = C.cached_array("unit", "k1", compute, root=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    assert (tmp_path / "unit" / "k1.npy").exists()
    C.cached_array("unit", "k2", compute, root=tmp_path)
    assert len(calls) == 2
    # Default root: the cache directory.
    C.cached_array("unit", "k1", compute)
    C.cached_array("unit", "k1", compute)
    assert len(calls) == 3 and (C.cache_dir() / "unit" / "k1.npy").exists()


def test_a_corrupt_entry_is_recomputed(tmp_path):
    path = tmp_path / "unit" / "bad.npy"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a numpy file")
    got = C.cached_array("unit", "bad", lambda: np.ones(3), root=tmp_path)
    np.testing.assert_array_equal(got, np.ones(3))
    np.testing.assert_array_equal(np.load(path), np.ones(3))


def test_writes_are_atomic(tmp_path, monkeypatch):
    # A save that dies half-way leaves neither a partial entry nor a temporary file.
    def broken_save(f, array, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(C.np, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        C.cached_array("unit", "k", lambda: np.ones(3), root=tmp_path)
    assert not (tmp_path / "unit" / "k.npy").exists()
    assert list((tmp_path / "unit").iterdir()) == []
    monkeypatch.undo()
    # An old file stays intact until the new one is complete.
    target = tmp_path / "f.bin"
    C.atomic_write_bytes(target, b"old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(C.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        C.atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "unit"]
    monkeypatch.undo()
    C.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"


def test_cached_encode_caches_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    seen: list[list[str]] = []

    def fn(batch):
        seen.append(list(batch))
        return np.array([[len(t), t.count("a")] for t in batch], dtype=np.float64)

    items = ["banana", "apple", "cherry", "kiwi", "date"]
    out = cached_encode("toy/enc", items, fn, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (5, 2)
    np.testing.assert_array_equal(out[:, 0], [6, 5, 6, 4, 4])
    assert seen == [["banana", "apple"], ["cherry", "kiwi"], ["date"]]
    again = cached_encode("toy/enc", list(items), fn, batch_size=3)  # batch size is not content
    np.testing.assert_array_equal(again, out)
    assert len(seen) == 3
    assert list((tmp_path / "embeddings" / "toy_enc").glob("*.npy"))
    # Other items, another order, or another encoder name are computed anew.
    cached_encode("toy/enc", items[::-1], fn)
    cached_encode("toy/enc", items[:4], fn)
    cached_encode("toy/enc2", items, fn)
    assert len(seen) == 6
    # use_cache=False neither reads nor writes.
    cached_encode("toy/enc", items, fn, batch_size=10, use_cache=False)
    assert len(seen) == 7
    cached_encode("fresh", items, fn, use_cache=False)
    assert not (tmp_path / "embeddings" / "fresh").exists()


# ------------------------------------------------------------------------------- expectations

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from relreps.encoders import CachedEncoder  # noqa: E402
from relreps.errors import InputTypeError, NonFiniteError, RelrepsError, ShapeError  # noqa: E402


@pytest.mark.parametrize("planted", [
    np.zeros(3),  # wrong shape
    np.zeros((2, 3), np.float32),  # wrong dtype
    np.array([[1.0, np.nan, 0], [0, 0, 0]]),  # not finite
    np.array([[1.0, 2, 3], [4, 5, 99]]),  # fails the caller's check
])
def test_an_entry_that_misses_the_expectation_is_recomputed(tmp_path, planted):
    path = tmp_path / "unit" / "k.npy"
    path.parent.mkdir()
    np.save(path, planted)
    want = np.arange(6.0).reshape(2, 3)
    got = C.cached_array("unit", "k", lambda: want, root=tmp_path, shape=(2, None),
                         dtype=np.float64, check=lambda a: a.max() < 10)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.load(path), want)  # replaced by the sound value


def test_a_computed_value_is_held_to_the_same_expectation(tmp_path):
    def cached(value, **kw):
        return C.cached_array("unit", "v", lambda: value, root=tmp_path, **kw)

    with pytest.raises(ShapeError):
        cached(np.zeros(4), shape=(2, 2))
    with pytest.raises(NonFiniteError):
        cached(np.array([1.0, np.inf]))
    with pytest.raises(NonFiniteError, match="after conversion"):
        cached(np.array([1e300]), dtype=np.float32)  # overflows float32
    with pytest.raises(InputTypeError):
        cached(np.array([1 + 2j]), dtype=np.float32)
    with pytest.raises(InputTypeError):
        cached(np.array(["a"]))
    with pytest.raises(InputTypeError):
        cached([[1.0], [1.0, 2.0]])  # ragged
    with pytest.raises(RelrepsError, match="check"):
        cached(np.ones(2), check=lambda a: False)
    assert not (tmp_path / "unit" / "v.npy").exists()  # nothing bad was written
    got = cached(np.array([1.0, np.nan]), finite=False)  # NaN allowed where the caller says so
    assert np.isnan(got[1])
    assert cached(np.ones(2), dtype=np.float32).dtype == np.float32  # a same-kind cast


@settings(max_examples=30, deadline=None)
@given(arr=hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.uint8,
                                             np.bool_, np.float16]),
                      shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
                      elements={"allow_nan": False, "allow_infinity": False}))
def test_cached_array_round_trips_exactly(tmp_path_factory, arr):
    root = tmp_path_factory.mktemp("rt")
    C.cached_array("unit", "k", lambda: arr, root=root, shape=arr.shape, dtype=arr.dtype)
    again = C.cached_array("unit", "k", lambda: pytest.fail("recomputed a sound entry"),
                           root=root, shape=arr.shape, dtype=arr.dtype)
    assert again.dtype == arr.dtype and again.shape == arr.shape
    np.testing.assert_array_equal(again, arr)


def test_cached_encoder_wraps_any_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    calls = []

    def fn(batch):
        calls.append(len(batch))
        return np.array([[len(t), t.count("a")] for t in batch], dtype=np.float64)

    class Model:
        def encode(self, batch):
            return fn(batch)

    items = ["banana", "apple", "kiwi"]
    a = CachedEncoder(fn, "toy", batch_size=2)
    b = CachedEncoder(Model(), "toy")
    x = a.encode(items)
    assert x.dtype == np.float32 and x.shape == (3, 2) and a.dim == 2 and calls == [2, 1]
    np.testing.assert_array_equal(b.encode(items), x)  # same name, same items: from disk
    np.testing.assert_array_equal(a(items), x)
    assert calls == [2, 1]
    CachedEncoder(fn, "toy-v2").encode(items)  # a new name is a new model
    assert len(calls) == 3
    assert list((tmp_path / "embeddings").iterdir()) and "toy" in repr(a)


def test_cached_encoder_torch_output(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    enc = CachedEncoder(lambda b: torch.ones(len(b), 3, dtype=torch.float64), "toy-torch")
    x = enc.encode(["a", "b"])
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (2, 3)


@pytest.mark.parametrize("make,err", [
    (lambda: CachedEncoder(42, "x"), InputTypeError),
    (lambda: CachedEncoder(len, ""), InputTypeError),
    (lambda: CachedEncoder(len, "x", batch_size=0), RelrepsError),
    (lambda: CachedEncoder(len, "x", batch_size=2.5), InputTypeError),
    (lambda: CachedEncoder(len, "x", dim=True), InputTypeError),
])
def test_cached_encoder_validates_its_arguments(make, err):
    with pytest.raises(err):
        make()


@pytest.mark.parametrize("items,fn,dim,err", [
    ("one string", lambda b: np.ones((len(b), 2)), None, InputTypeError),
    ([object()], lambda b: np.ones((len(b), 2)), None, InputTypeError),  # no content to hash
    ([True, False], lambda b: np.ones((len(b), 2)), None, InputTypeError),
    (5, lambda b: np.ones((len(b), 2)), None, InputTypeError),
    (["a", "b"], lambda b: np.ones((1, 2)), None, RelrepsError),  # one row for two items
    (["a", "b"], lambda b: np.ones(len(b)), None, RelrepsError),  # 1-D
    (["a", "b"], lambda b: np.full((len(b), 2), np.nan), None, NonFiniteError),
    (["a", "b"], lambda b: np.ones((len(b), 3)), 2, ShapeError),  # not the declared dim
    (["a", "b"], lambda b: "not an array", None, RelrepsError),
    (["a", "b", "c"], lambda b: np.ones((len(b), len(b))), None, ShapeError),  # widths differ
    (["a"], lambda b: np.ones((1, 2)), 0, RelrepsError),
])
def test_cached_encode_refuses_bad_items_and_outputs(tmp_path, monkeypatch, items, fn, dim, err):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    with pytest.raises(err):
        cached_encode("toy", items, fn, batch_size=2, dim=dim)
    assert not list(tmp_path.rglob("*.npy"))


def test_arrays_are_hashed_by_content_as_items(tmp_path, monkeypatch):
    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path))
    calls = []

    def fn(batch):
        calls.append(1)
        return np.stack([np.asarray(b, np.float64).ravel()[:2] for b in batch])

    imgs = [np.arange(4.0), np.arange(4.0) + 1]
    x = cached_encode("img", imgs, fn)
    np.testing.assert_array_equal(cached_encode("img", [i.copy() for i in imgs], fn), x)
    assert len(calls) == 1
    cached_encode("img", [imgs[0], imgs[1] * 2], fn)
    assert len(calls) == 2


# ------------------------------------------------------------------------------- progress


def test_progress_bars_follow_relreps_quiet(monkeypatch, capsys):
    from relreps.progress import progress

    monkeypatch.setenv("RELREPS_QUIET", "1")
    bar = progress(range(3), desc="quiet")
    assert bar.disable and list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RELREPS_QUIET", "0")
    bar = progress(range(3), desc="loud", leave=True)
    assert not bar.disable and list(bar) == [0, 1, 2]
    bar.close()
    assert "loud" in capsys.readouterr().err
