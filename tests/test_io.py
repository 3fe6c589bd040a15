"""relreps.io: every format, every error path, nothing unpickled."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from relreps.errors import (
    DataNotFoundError,
    FormatError,
    InputTypeError,
    MissingDependencyError,
    RelrepsError,
    ShapeError,
)
from relreps.io import (
    array_info,
    read_array,
    read_index,
    read_labels,
    read_texts,
    split_spec,
    write_array,
)

X = np.arange(24, dtype=np.float32).reshape(6, 4) / 7


class _Planted:
    """Unpickling this would create a marker file (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


# ----------------------------------------------------------------------------- specs

def test_split_spec(tmp_path):
    f = tmp_path / "a.npz"
    np.savez(f, x=X)
    assert split_spec(str(f)) == (f, None)
    assert split_spec(f"{f}:x") == (f, "x")
    assert split_spec(f"{f}:a:b") == (f, "a:b")  # a key may hold ':'
    odd = tmp_path / "odd:name.npy"  # a path that exists as given is never split
    np.save(odd, X)
    assert split_spec(str(odd)) == (odd, None)
    np.testing.assert_array_equal(read_array(str(odd)), X)
    with pytest.raises(DataNotFoundError, match="file not found: .*missing.npz"):
        split_spec(str(tmp_path / "missing.npz") + ":x")
    with pytest.raises(FileNotFoundError):  # DataNotFoundError is also a FileNotFoundError
        read_array(tmp_path / "nothing.npy")
    with pytest.raises(FormatError, match="empty"):
        split_spec("")
    with pytest.raises(FormatError, match="empty key"):
        split_spec(f"{f}:")


def test_unknown_format_lists_the_supported(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"\x89HDF")
    with pytest.raises(FormatError, match=r"unknown array format '\.h5'.*\.npy.*\.zarr"):
        read_array(p)
    d = tmp_path / "folder"
    d.mkdir()
    with pytest.raises(FormatError, match="folder, not a Zarr store"):
        read_array(d)


# ----------------------------------------------------------------------------- .npy

def test_npy_is_memory_mapped(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, X)
    a = read_array(p)
    assert isinstance(a, np.memmap) and not a.flags.writeable
    np.testing.assert_array_equal(a, X)
    assert not isinstance(read_array(p, mmap=False), np.memmap)
    assert array_info(p) == {"spec": str(p), "path": str(p), "key": None, "shape": [6, 4],
                             "dtype": "float32"}
    with pytest.raises(FormatError, match="holds one array; remove ':k'"):
        read_array(f"{p}:k")


def test_npy_errors(tmp_path):
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_array(empty)
    trunc = tmp_path / "trunc.npy"
    np.save(trunc, X)
    trunc.write_bytes(trunc.read_bytes()[:60])
    with pytest.raises(FormatError, match="not a valid .npy"):
        read_array(trunc, mmap=False)
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="pickled"):
        read_array(obj)
    zipped = tmp_path / "zipped.npy"
    with open(zipped, "wb") as f:
        np.savez(f, x=X)
    with pytest.raises(FormatError, match="rename it to .npz"):
        read_array(zipped)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".pth", ".safetensors"])
def test_planted_pickle_never_runs(tmp_path, suffix):
    marker = tmp_path / "marker"
    p = tmp_path / f"hostile{suffix}"
    p.write_bytes(pickle.dumps(_Planted(marker), protocol=2))
    with pytest.raises(FormatError):
        read_array(p)
    with pytest.raises(FormatError):
        read_array(f"{p}:x")
    assert not marker.exists()


def test_torch_file_with_planted_object_never_runs(tmp_path):
    import torch

    marker = tmp_path / "marker"
    p = tmp_path / "hostile.pt"
    torch.save({"x": torch.ones(2, 2), "evil": _Planted(marker)}, p)
    with pytest.raises(FormatError, match="pickled code"):
        read_array(f"{p}:x")
    assert not marker.exists()


# ----------------------------------------------------------------------------- .npz

def test_npz(tmp_path):
    one = tmp_path / "one.npz"
    np.savez(one, emb=X)
    np.testing.assert_array_equal(read_array(one), X)  # a single array needs no key
    many = tmp_path / "many.npz"
    np.savez_compressed(many, train=X, test=X[:2])
    np.testing.assert_array_equal(read_array(f"{many}:test"), X[:2])
    with pytest.raises(FormatError, match=r"several keys \(train, test\).*:KEY"):
        read_array(many)
    with pytest.raises(FormatError, match="no key 'val'; available: train, test"):
        read_array(f"{many}:val")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(FormatError, match="not a valid .npz"):
        read_array(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, o=np.array([None, 1], dtype=object))
    with pytest.raises(FormatError, match="pickled"):
        read_array(f"{obj}:o")


# ----------------------------------------------------------------------------- .safetensors

def test_safetensors(tmp_path):
    import torch
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_torch

    p = tmp_path / "x.safetensors"
    save_file({"a": X, "b": X[:3]}, str(p))
    np.testing.assert_array_equal(read_array(f"{p}:b"), X[:3])
    with pytest.raises(FormatError, match="several keys"):
        read_array(p)
    with pytest.raises(FormatError, match="no key 'c'; available: a, b"):
        read_array(f"{p}:c")
    single = tmp_path / "s.safetensors"
    save_file({"only": X}, str(single))
    np.testing.assert_array_equal(read_array(single), X)
    bf = tmp_path / "bf.safetensors"
    save_torch({"w": torch.tensor(X).to(torch.bfloat16)}, str(bf))
    out = read_array(bf)
    assert out.dtype == np.float32 and np.allclose(out, X, atol=1e-2)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(FormatError, match="not a valid .safetensors"):
        read_array(junk)


# ----------------------------------------------------------------------------- .pt

def test_torch_files(tmp_path):
    import torch

    t = tmp_path / "t.pt"
    torch.save(torch.tensor(X), t)
    np.testing.assert_array_equal(read_array(t), X)
    with pytest.raises(FormatError, match="single Tensor, not a dict"):
        read_array(f"{t}:x")
    d = tmp_path / "d.pth"
    torch.save({"emb": torch.tensor(X), "ids": torch.arange(6)}, d)
    np.testing.assert_array_equal(read_array(f"{d}:emb"), X)
    with pytest.raises(FormatError, match=r"several keys \(emb, ids\)"):
        read_array(d)
    h = tmp_path / "h.pt"
    torch.save({"x": torch.tensor(X).half(), "n": 3}, h)
    assert read_array(f"{h}:x").dtype == np.float32
    with pytest.raises(FormatError, match="holds a int, not a tensor"):
        read_array(f"{h}:n")
    sp = tmp_path / "sp.pt"
    torch.save(torch.eye(3).to_sparse(), sp)
    with pytest.raises(FormatError, match="sparse"):
        read_array(sp)


# ----------------------------------------------------------------------------- tables

def test_parquet(tmp_path):
    import pandas as pd

    p = tmp_path / "t.parquet"
    df = pd.DataFrame({"id": np.arange(6), "text": list("abcdef"),
                       "emb": [row for row in X.astype(np.float64)]})
    df.to_parquet(p)
    np.testing.assert_allclose(read_array(p), X)  # the only vector column
    np.testing.assert_allclose(read_array(f"{p}:emb"), X)
    np.testing.assert_array_equal(read_array(f"{p}:id"), np.arange(6)[:, None])
    with pytest.raises(FormatError, match="no column 'vec'; available: id, text, emb"):
        read_array(f"{p}:vec")
    wide = tmp_path / "wide.parquet"
    pd.DataFrame({"id": np.arange(6), **{f"f{i}": X[:, i] for i in range(4)}}).to_parquet(wide)
    np.testing.assert_allclose(read_array(wide), X)  # float columns; the int id is left out
    two = tmp_path / "two.parquet"
    pd.DataFrame({"a": list(X), "b": list(X)}).to_parquet(two)
    with pytest.raises(FormatError, match=r"several vector columns \(a, b\)"):
        read_array(two)
    ragged = tmp_path / "ragged.parquet"
    pd.DataFrame({"e": [[1.0, 2.0], [3.0]]}).to_parquet(ragged)
    with pytest.raises(FormatError, match="different lengths"):
        read_array(ragged)
    texts = tmp_path / "texts.parquet"
    pd.DataFrame({"t": ["x", "y"]}).to_parquet(texts)
    with pytest.raises(FormatError, match="no numeric columns"):
        read_array(texts)


def test_csv_and_tsv(tmp_path):
    header = tmp_path / "h.csv"
    header.write_text("a,b,c,d\n" + "\n".join(",".join(map(repr, r.tolist())) for r in X))
    np.testing.assert_allclose(read_array(header), X, rtol=1e-6)
    bare = tmp_path / "bare.tsv"
    np.savetxt(bare, X, delimiter="\t")  # no header row: recognised, the first row kept
    np.testing.assert_allclose(read_array(bare), X, rtol=1e-6)
    lists = tmp_path / "lists.csv"
    lists.write_text("text,emb\n" + "\n".join(f'"t{i}","{json.dumps(r.tolist())}"'
                                              for i, r in enumerate(X)))
    np.testing.assert_allclose(read_array(lists), X, rtol=1e-6)
    np.testing.assert_allclose(read_array(f"{lists}:emb"), X, rtol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1.0,2.0\n3.0,oops\n4.0,5.0\n6.0,7.0\n")
    with pytest.raises(FormatError, match="non-numeric value 'oops' at row 1"):
        read_array(bad)  # a numeric column with one bad cell must not vanish silently
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(FormatError, match="not a readable .csv"):
        read_array(empty)


def test_missing_table_package_is_a_named_error(tmp_path, monkeypatch):
    p = tmp_path / "t.csv"
    p.write_text("a\n1\n")
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(MissingDependencyError, match="pandas"):
        read_array(p)
    with pytest.raises(ImportError):
        read_labels(p)


# ----------------------------------------------------------------------------- zarr

def test_zarr(tmp_path):
    import dask.array as da
    import zarr

    p = write_array(tmp_path / "x.zarr", X)
    np.testing.assert_array_equal(read_array(p), X)
    lazy = read_array(p, as_dask=True)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), X)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("train", shape=X.shape, dtype="f4")[...] = X
    g.create_array("test", shape=(2, 4), dtype="f4")[...] = X[:2]
    np.testing.assert_array_equal(read_array(f"{tmp_path / 'g.zarr'}:test"), X[:2])
    with pytest.raises(FormatError, match=r"several keys \(test, train\)"):
        read_array(tmp_path / "g.zarr")
    with pytest.raises(FormatError, match="single Zarr array"):
        read_array(f"{p}:a")
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError, match="not a readable Zarr store"):
        read_array(broken)


def test_npy_as_dask_reads_rows_from_the_file(tmp_path):
    import pickle as pkl

    p = tmp_path / "big.npy"
    np.save(p, X)
    lazy = read_array(p, as_dask=True)
    np.testing.assert_array_equal(lazy[2:5].compute(), X[2:5])
    assert len(pkl.dumps(lazy.dask)) < 4000  # the graph holds the path, not the data


# ----------------------------------------------------------------------------- writing

def test_write_array(tmp_path):
    import dask.array as da
    import torch

    p = write_array(tmp_path / "sub" / "x.npy", torch.tensor(X))
    np.testing.assert_array_equal(np.load(p), X)
    assert sorted(f.name for f in p.parent.iterdir()) == ["x.npy"]  # no temporary left
    d = da.from_array(X, chunks=(4, 4))
    np.testing.assert_array_equal(np.load(write_array(tmp_path / "d.npy", d)), X)
    z = write_array(tmp_path / "d.zarr", d)
    np.testing.assert_array_equal(read_array(z), X)
    write_array(z, X[:2])  # replaced as a whole
    np.testing.assert_array_equal(read_array(z), X[:2])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d.npy", "d.zarr", "sub"]
    with pytest.raises(FormatError, match="use .npy or .zarr"):
        write_array(tmp_path / "x.csv", X)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arr=hnp.arrays(st.sampled_from([np.float32, np.float64]),
                      hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                      elements=st.floats(allow_nan=False, width=32)),
       suffix=st.sampled_from([".npy", ".zarr"]))
def test_write_read_round_trip(tmp_path, arr, suffix):
    p = write_array(tmp_path / f"r{suffix}", arr)
    back = np.asarray(read_array(p))
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


# ----------------------------------------------------------------------------- labels

def test_read_labels(tmp_path):
    ints = tmp_path / "y.txt"
    ints.write_text("3\n1\n2\n")
    y = read_labels(ints, n=3)
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 2]
    words = tmp_path / "w.txt"
    words.write_text("sport\r\nworld\nsport\n")
    assert read_labels(words).tolist() == ["sport", "world", "sport"]
    blank = tmp_path / "b.txt"
    blank.write_text("a\n\nb\n")
    with pytest.raises(FormatError, match="line 2 is empty"):
        read_labels(blank)
    with pytest.raises(ShapeError, match="3 labels for 4 samples"):
        read_labels(ints, n=4)
    npy = tmp_path / "y.npy"
    np.save(npy, np.array([[0], [1]]))
    assert read_labels(npy).tolist() == [0, 1]
    table = tmp_path / "t.csv"
    table.write_text("text,label\nhello,1.0\nbye,0.0\n")
    y = read_labels(table)  # the column called label; whole floats are classes
    assert y.dtype == np.int64 and y.tolist() == [1, 0]
    assert read_labels(f"{table}:text").tolist() == ["hello", "bye"]
    two = tmp_path / "two.csv"
    two.write_text("a,b\n1,2\n")
    with pytest.raises(FormatError, match="name the label column"):
        read_labels(two)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([0.0, np.nan]))
    with pytest.raises(RelrepsError, match="NaN"):
        read_labels(nan)
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(FormatError, match="empty"):
        read_labels(empty)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl",
                                                                              "Zp", "Zs")),
                               min_size=1, max_size=8), min_size=1, max_size=20))
def test_text_labels_round_trip(tmp_path, labels):
    p = tmp_path / "labels.txt"
    p.write_text("".join(f"{s}\n" for s in labels), encoding="utf-8")
    got = read_labels(p).tolist()
    if all(s.lstrip("+-").isdigit() and s.lstrip("+-").isascii() for s in labels):
        assert got == [int(s) for s in labels]
    else:
        assert got == labels


# ----------------------------------------------------------------------------- indices

def test_read_index(tmp_path):
    npy = tmp_path / "i.npy"
    np.save(npy, np.array([4, 0, 2]))
    assert read_index(npy, n=5).tolist() == [4, 0, 2]
    txt = tmp_path / "i.txt"
    txt.write_text("1, 3\n5\n")
    assert read_index(txt).tolist() == [1, 3, 5]
    with pytest.raises(RelrepsError, match="out of range for 5 rows"):
        read_index(txt, n=5)
    floats = tmp_path / "f.npy"
    np.save(floats, np.array([1.0, 2.0]))
    with pytest.raises(InputTypeError, match="integer row indices"):
        read_index(floats)
    dup = tmp_path / "d.txt"
    dup.write_text("1\n1\n")
    with pytest.raises(RelrepsError, match="repeats the index 1"):
        read_index(dup)
    neg = tmp_path / "n.txt"
    neg.write_text("-1\n2\n")
    with pytest.raises(RelrepsError, match="negative"):
        read_index(neg)
    word = tmp_path / "w.txt"
    word.write_text("1\nx\n")
    with pytest.raises(FormatError, match="'x' is not an integer"):
        read_index(word)


def test_read_index_from_anchorset_json(tmp_path):
    from relreps.anchors import AnchorSet

    p = tmp_path / "a.json"
    AnchorSet({"enc_a": [3, 1], "enc_b": [0, 2]}).save(p)
    with pytest.raises(FormatError, match=r"several spaces \(enc_a, enc_b\)"):
        read_index(p)
    assert read_index(f"{p}:enc_b").tolist() == [0, 2]
    same = tmp_path / "same.json"
    AnchorSet.from_indices([5, 6], spaces=("x", "y")).save(same)
    assert read_index(same).tolist() == [5, 6]
    trunc = tmp_path / "t.json"
    trunc.write_text(same.read_text()[:10])
    with pytest.raises(FormatError, match="not valid JSON"):
        read_index(trunc)
    other = tmp_path / "o.json"
    other.write_text('{"rows": [1, 2]}')
    with pytest.raises(FormatError, match="not an AnchorSet"):
        read_index(other)
    with pytest.raises(FormatError, match="unknown anchor index format"):
        read_index(_touch(tmp_path / "x.csv"))


def _touch(p: Path) -> Path:
    p.write_text("1\n")
    return p


# ----------------------------------------------------------------------------- texts

def test_read_texts(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("first text\n\nthird, with a comma\n")
    assert read_texts(txt) == ["first text", "", "third, with a comma"]  # rows stay aligned
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "a", "id": 1}\n{"text": "b"}\n')
    assert read_texts(jl) == ["a", "b"]
    jl2 = tmp_path / "s.jsonl"
    jl2.write_text('"x"\n"y"\n')
    assert read_texts(jl2) == ["x", "y"]
    with pytest.raises(FormatError, match="line 1 has no string field 'body'"):
        read_texts(f"{jl}:body")
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(FormatError, match="line 2 is not valid JSON"):
        read_texts(broken)
    csv = tmp_path / "t.csv"
    csv.write_text("id,sentence\n1,hello\n2,bye\n")
    assert read_texts(csv) == ["hello", "bye"]  # the only string column
    assert read_texts(f"{csv}:sentence") == ["hello", "bye"]
    with pytest.raises(FormatError, match="unknown text format"):
        read_texts(_touch(tmp_path / "t.md"))
    empty = tmp_path / "e.txt"
    empty.write_text("")
    with pytest.raises(FormatError, match="empty"):
        read_texts(empty)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4),
                      st.text(max_size=12), st.lists(st.text(max_size=3), max_size=2)),
       reader=st.sampled_from([read_array, read_labels, read_index, read_texts]))
def test_any_bad_spec_is_a_named_error(tmp_path, spec, reader):
    with pytest.raises(RelrepsError):
        reader(spec)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=64),
       suffix=st.sampled_from([".npy", ".npz", ".safetensors", ".pt", ".parquet", ".csv",
                               ".txt", ".json", ".jsonl"]),
       reader=st.sampled_from([read_array, read_labels, read_index, read_texts]))
def test_garbage_files_never_crash(tmp_path, content, suffix, reader):
    p = tmp_path / f"garbage{suffix}"
    p.write_bytes(content)
    try:
        reader(p)
    except RelrepsError:
        pass
