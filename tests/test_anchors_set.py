"""AnchorSet: validated indices, strict JSON (format 1), and the relreps.save/load state."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps.anchors import FORMAT_VERSION, AnchorSet
from relreps.errors import (
    AnchorError,
    DataNotFoundError,
    FormatError,
    InputTypeError,
    RelrepsError,
    RunFolderError,
    ShapeError,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------- construction

@pytest.mark.parametrize(("bad", "err", "msg"), [
    ([0, -1, 2], RelrepsError, "negative index -1"),
    ([-3], RelrepsError, "negative"),
    ([0.0, 1.0], InputTypeError, "0.0"),
    (np.array([0.0, 1.0]), InputTypeError, "float64"),
    ([True, False], InputTypeError, "True"),
    ([1, True], InputTypeError, "True"),  # np.asarray would read it as [1, 1]
    (np.array([True, False]), InputTypeError, "boolean mask"),
    ([[0, 1], [2, 3]], InputTypeError, r"\[0, 1\]"),
    (np.array([[0, 1], [2, 3]]), ShapeError, "1-D"),
    (["0", "1"], InputTypeError, "'0'"),
    ([], ShapeError, "at least 1"),
    (None, InputTypeError, "required"),
    (np.array([1, 2], dtype=object), InputTypeError, "object"),
])
def test_bad_indices_are_refused(bad, err, msg):
    with pytest.raises(err, match=msg):
        AnchorSet({"a": bad})
    if not isinstance(bad, list) or bad:
        with pytest.raises(err, match=msg):
            AnchorSet.from_indices(bad)


def test_negative_indices_no_longer_pick_the_last_row():
    x = np.arange(10.0)[:, None]
    with pytest.raises(RelrepsError, match="negative"):
        AnchorSet({"a": [0, -1]}).embeddings("a", x)


def test_valid_index_containers():
    for idx in ([3, 1], (3, 1), np.array([3, 1], dtype=np.uint16), torch.tensor([3, 1]),
                np.int64(3) * np.array([1, 0]) + np.array([0, 1])):
        aset = AnchorSet({"a": idx})
        assert aset.indices["a"].dtype == np.int64 and aset.indices["a"].tolist() == [3, 1]


@pytest.mark.parametrize(("kwargs", "err", "msg"), [
    ({"indices": [[0, 1]]}, InputTypeError, "mapping"),
    ({"indices": {1: [0]}}, InputTypeError, "space names"),
    ({"indices": {"": [0]}}, InputTypeError, "space names"),
    ({"indices": {"a": [0, 1]}, "keys": "ab"}, InputTypeError, "keys"),
    ({"indices": {"a": [0, 1]}, "keys": [1, 2]}, InputTypeError, "strings"),
    ({"indices": {"a": [0, 1]}, "keys": ["x"]}, AnchorError, "1 keys for 2 anchors"),
    ({"indices": {"a": [0, 1]}, "meta": [1]}, InputTypeError, "meta must be a dict"),
    ({"indices": {"a": [0, 1]}, "meta": {"v": np.int64(3)}}, InputTypeError, "JSON"),
    ({"indices": {"a": [0, 1]}, "meta": {"v": float("nan")}}, InputTypeError, "JSON"),
    ({"indices": {"a": [0, 1], "b": [0]}}, AnchorError, "do not correspond"),
    ({"indices": {"a": [4, 2, 4]}}, AnchorError, "same sample twice .*row 4"),
])
def test_bad_structure_is_a_named_error(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        AnchorSet(**kwargs)


def test_mutation_is_revalidated_on_save(tmp_path):
    aset = AnchorSet({"a": [0, 1]})
    aset.indices["a"] = np.array([0, -2])
    with pytest.raises(RelrepsError, match="negative"):
        aset.save(tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_from_indices_keys_and_spaces():
    aset = AnchorSet.from_indices(np.array([2, 0]), spaces=["en", "fr"], keys=np.array(["a", "b",
                                                                                         "c"]))
    assert aset.keys == ["c", "a"] and aset.spaces == ["en", "fr"]
    with pytest.raises(AnchorError, match="index 5 has no key"):
        AnchorSet.from_indices([5], keys=["a", "b"])
    with pytest.raises(InputTypeError, match="spaces"):
        AnchorSet.from_indices([0], spaces="en")
    with pytest.raises(AnchorError, match="repeat"):
        AnchorSet.from_indices([0], spaces=["en", "en"])


def test_from_keys_validation():
    keys = {"a": ["x", "y", "z"], "b": ["z", "y"]}
    for bad, err in [(True, InputTypeError), (1.0, InputTypeError), (0, AnchorError),
                     (3, AnchorError)]:
        with pytest.raises(err):
            AnchorSet.from_keys(keys, bad)
    with pytest.raises(RelrepsError, match="random_state must be >= 0"):
        AnchorSet.from_keys(keys, 1, random_state=-1)
    with pytest.raises(InputTypeError, match="unhashable"):
        AnchorSet.from_keys({"a": [["x"]], "b": ["x"]}, 1)
    with pytest.raises(InputTypeError, match="non-empty mapping"):
        AnchorSet.from_keys({}, 1)
    with pytest.raises(InputTypeError, match="sequence of keys"):
        AnchorSet.from_keys({"a": "xyz"}, 1)


def test_embeddings_keep_the_kind_and_device():
    x = np.arange(20.0).reshape(10, 2)
    aset = AnchorSet({"a": [7, 2]})
    np.testing.assert_array_equal(aset.embeddings("a", x), x[[7, 2]])
    t = torch.from_numpy(x)
    out = aset.embeddings("a", t)
    assert isinstance(out, torch.Tensor) and out.device == t.device
    meta = torch.empty(10, 2, device="meta")
    assert aset.embeddings("a", meta).device.type == "meta"
    da = pytest.importorskip("dask.array")
    lazy = aset.embeddings("a", da.from_array(x, chunks=3))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), x[[7, 2]])
    with pytest.raises(AnchorError, match="out of range"):
        aset.embeddings("a", x[:5])
    with pytest.raises(AnchorError, match="no anchors for space"):
        aset.embeddings(["a"], x)
    bad = x.copy()
    bad[7, 0] = np.nan
    with pytest.raises(RelrepsError, match="NaN"):
        aset.embeddings("a", bad)


def test_equality():
    a = AnchorSet({"x": [1, 2]}, keys=["p", "q"], meta={"m": 1})
    assert a == AnchorSet({"x": np.array([1, 2])}, keys=["p", "q"], meta={"m": 1})
    assert a != AnchorSet({"x": [2, 1]}, keys=["p", "q"], meta={"m": 1})
    assert a != AnchorSet({"x": [1, 2]})
    assert a != "x"


# --------------------------------------------------------------------------- JSON files

def _valid() -> AnchorSet:
    return AnchorSet({"en": [4, 0, 9], "hi": [1, 2, 3]}, keys=["a", "b", "c"],
                     meta={"source": "test", "n": 3, "nested": {"ok": [1, 2.5, None]}})


def test_round_trip_writes_format_1(tmp_path):
    path = _valid().save(tmp_path / "anchors.json")
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT_VERSION == 1
    assert set(data) == {"format", "indices", "keys", "meta"}
    assert AnchorSet.load(path) == _valid()
    assert AnchorSet.load(str(path)) == _valid()
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # like any other file the user writes, not 0600
    assert [p.name for p in tmp_path.iterdir()] == ["anchors.json"]  # no temporary left over


def test_files_written_before_the_format_field_still_load(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"indices": {"default": [3, 1, 4]}, "keys": None, "meta": {}}))
    assert AnchorSet.load(path).indices["default"].tolist() == [3, 1, 4]
    path.write_text(json.dumps({"indices": {"default": [3, 1]}}))
    assert AnchorSet.load(path).keys is None


@pytest.mark.parametrize(("doc", "msg"), [
    ([1, 2], "expected a JSON object"),
    ("indices", "expected a JSON object"),
    ({}, "missing the 'indices' field"),
    ({"indices": {"a": [0]}, "extra": 1}, "unknown field.*'extra'"),
    ({"format": 2, "indices": {"a": [0]}}, "format 2 .*newer"),
    ({"format": "1", "indices": {"a": [0]}}, "'format' must be an integer"),
    ({"format": True, "indices": {"a": [0]}}, "'format' must be an integer"),
    ({"format": 0, "indices": {"a": [0]}}, "format 0"),
    ({"indices": []}, "'indices' must be a non-empty object"),
    ({"indices": {}}, "'indices' must be a non-empty object"),
    ({"indices": {"a": "012"}}, r"indices\['a'\] must be a list"),
    ({"indices": {"a": {"0": 1}}}, r"indices\['a'\] must be a list"),
    ({"indices": {"a": [0, -1]}}, "holds the index -1"),
    ({"indices": {"a": [0, 1.0]}}, "holds 1.0"),
    ({"indices": {"a": [0, True]}}, "holds True"),
    ({"indices": {"a": [0, None]}}, "holds None"),
    ({"indices": {"a": [[0]]}}, r"holds \[0\]"),
    ({"indices": {"a": [2**63]}}, "2\\*\\*63"),
    ({"indices": {"a": [0, 0]}}, "same sample twice"),
    ({"indices": {"a": [0, 1], "b": [0]}}, "do not correspond"),
    ({"indices": {"a": [0]}, "keys": "a"}, "'keys' must be null or a list of strings"),
    ({"indices": {"a": [0]}, "keys": [1]}, "'keys' must be null or a list of strings"),
    ({"indices": {"a": [0]}, "keys": ["x", "y"]}, "2 keys for 1 anchors"),
    ({"indices": {"a": [0]}, "meta": []}, "'meta' must be an object"),
    ({"indices": {"": [0]}}, "space names"),
])
def test_wrong_structure_is_a_format_error_naming_the_file(tmp_path, doc, msg):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=msg) as info:
        AnchorSet.load(path)
    assert str(path) in str(info.value)


@SETTINGS
@given(cut=st.integers(0, 10_000))
def test_truncated_files_are_format_errors(tmp_path, cut):
    text = json.dumps(_valid().to_dict(), indent=1)
    cut = cut % len(text)  # every proper prefix
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    with pytest.raises(FormatError, match="cut.json") as info:
        AnchorSet.load(path)
    assert "not valid JSON" in str(info.value) or "not an AnchorSet" in str(info.value)


@pytest.mark.parametrize("payload", [
    b"\x80\x04\x95 pickle bytes", b"\xff\xfe\x00garbage", b"NaN", b'{"indices": {"a": [NaN]}}',
    b'{"indices": {"a": [Infinity]}}', b"[" * 100_000 + b"]" * 100_000, b"", b"   ",
    b'{"indices": {"a": [1e400]}}',
])
def test_garbage_is_a_format_error(tmp_path, payload):
    path = tmp_path / "garbage.json"
    path.write_bytes(payload)
    with pytest.raises(FormatError, match="garbage.json"):
        AnchorSet.load(path)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(
    allow_nan=False), st.text(max_size=3)), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["format", "indices", "keys", "meta", "a", "b"]), inner, max_size=4)), max_leaves=12)


@SETTINGS
@given(doc=JSON)
def test_any_json_document_loads_or_is_a_format_error(tmp_path, doc):
    path = tmp_path / "any.json"
    path.write_text(json.dumps(doc))
    try:
        aset = AnchorSet.load(path)
    except FormatError:
        return
    assert isinstance(aset, AnchorSet) and len(aset) >= 1  # whatever loads is valid
    assert AnchorSet.load(aset.save(tmp_path / "again.json")) == aset


def test_missing_file_directory_and_bad_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        AnchorSet.load(tmp_path / "nope.json")
    with pytest.raises(FileNotFoundError):  # DataNotFoundError is also a FileNotFoundError
        AnchorSet.load(tmp_path / "nope.json")
    with pytest.raises(FormatError, match="not a file"):
        AnchorSet.load(tmp_path)
    for bad in (None, 3, True, ""):
        with pytest.raises(InputTypeError, match="path"):
            AnchorSet.load(bad)
        with pytest.raises(InputTypeError, match="path"):
            _valid().save(bad)


def test_unwritable_destinations_are_named(tmp_path):
    with pytest.raises(RunFolderError, match="cannot write the anchor set"):
        _valid().save(tmp_path / "missing-dir" / "a.json")
    with pytest.raises(RunFolderError, match="cannot write the anchor set"):
        _valid().save(tmp_path)  # a directory


# --------------------------------------------------------------------------- relreps.save state

def test_relreps_state_round_trip():
    aset = _valid()
    config, arrays = aset._relreps_state()
    json.dumps(config)  # the config is plain JSON
    assert all(a.dtype == np.int64 and a.ndim == 1 for a in arrays.values())
    assert AnchorSet._relreps_from_state(config, arrays) == aset


@pytest.mark.parametrize("mutate", [
    lambda c, a: c.pop("spaces"),
    lambda c, a: c.__setitem__("spaces", "en"),
    lambda c, a: c.__setitem__("spaces", [["en"], "hi"]),
    lambda c, a: c.__setitem__("spaces", ["en", "en"]),
    lambda c, a: a.pop("indices.1"),
    lambda c, a: a.__setitem__("indices.2", np.arange(3)),
    lambda c, a: a.__setitem__("indices.0", np.zeros(3)),
    lambda c, a: a.__setitem__("indices.0", np.zeros((3, 1), dtype=np.int64)),
    lambda c, a: a.__setitem__("indices.0", np.array([0, -1, 2])),
    lambda c, a: c.__setitem__("format", 99),
    lambda c, a: c.__setitem__("keys", [1, 2, 3]),
    lambda c, a: c.__setitem__("code", "import os"),
])
def test_hostile_states_are_format_errors(mutate):
    config, arrays = _valid()._relreps_state()
    mutate(config, arrays)
    with pytest.raises(FormatError, match="AnchorSet state"):
        AnchorSet._relreps_from_state(config, arrays)
