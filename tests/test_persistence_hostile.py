"""Hostile and corrupt files: every one is a FormatError (or DataNotFoundError), none runs code,
none loads as a silently different model."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relreps.errors import FormatError
from relreps.persistence import _pack, load, save
from relreps.stitching import StitchedClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)
    m = StitchedClassifier(head="logreg", n_anchors=12, random_state=0).fit(x, y)
    path = tmp_path_factory.mktemp("models") / "m.safetensors"
    save(m, path)
    return path, m


class _Payload:
    """Unpickling this writes a marker file: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(m):
    config, arrays = m._relreps_state()
    return json.loads(json.dumps(config)), dict(arrays)


def test_pickles_zips_and_npy_never_run(tmp_path, model_file):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    npy = io.BytesIO()
    np.save(npy, np.arange(3))
    for name, data, what in (("p.safetensors", payload, "pickle"),
                             ("p.pt", zbuf.getvalue(), "zip"),
                             ("p.json", payload, "pickle"),
                             ("p.npy", npy.getvalue(), ".npy")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError, match=what):
            load(tmp_path / name)
    assert not marker.exists()


def _edit_envelope(data: bytes, edit) -> bytes:
    """The file with its relreps header changed by `edit(envelope)` (arrays untouched)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    env = json.loads(header["__metadata__"]["relreps"])
    edit(env)
    header["__metadata__"]["relreps"] = json.dumps(env)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + n:]


@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "builtins.eval",
                                  "relreps.stitching.StitchedClassifier", "Pipeline",
                                  "LogisticRegression", "", None, 3])
def test_classes_outside_the_allowlist_are_refused(name, model_file, tmp_path):
    path, _ = model_file
    bad = _edit_envelope(path.read_bytes(), lambda env: env.update({"class": name}))
    (tmp_path / "c.safetensors").write_bytes(bad)
    with pytest.raises(FormatError, match="cannot be loaded"):
        load(tmp_path / "c.safetensors")


@pytest.mark.parametrize("version", [2, 0, "1", True, None, 1.0])
def test_format_versions(version, model_file, tmp_path):
    path, _ = model_file
    bad = _edit_envelope(path.read_bytes(), lambda env: env.update(relreps_format=version))
    (tmp_path / "v.safetensors").write_bytes(bad)
    with pytest.raises(FormatError, match="relreps_format"):
        load(tmp_path / "v.safetensors")


def test_envelope_checked_and_config_required(model_file, tmp_path):
    path, _ = model_file
    for edit, match in ((lambda env: env.pop("sha256"), "checksum"),
                        (lambda env: env.update(config=[]), "config"),
                        (lambda env: env.pop("config"), "config")):
        (tmp_path / "e.safetensors").write_bytes(_edit_envelope(path.read_bytes(), edit))
        with pytest.raises(FormatError, match=match):
            load(tmp_path / "e.safetensors")


def test_foreign_safetensors_and_missing_metadata(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3)}, str(tmp_path / "hf.safetensors"))
    with pytest.raises(FormatError, match="no relreps metadata"):
        load(tmp_path / "hf.safetensors")
    save_file({"w": np.ones(3)}, str(tmp_path / "bad.safetensors"),
              metadata={"relreps": "{not json"})
    with pytest.raises(FormatError, match="not valid JSON"):
        load(tmp_path / "bad.safetensors")
    save_file({"w": np.ones(3)}, str(tmp_path / "nan.safetensors"),
              metadata={"relreps": '{"relreps_format": NaN}'})
    with pytest.raises(FormatError, match="NaN"):
        load(tmp_path / "nan.safetensors")
    save_file({"w": np.ones(3)}, str(tmp_path / "list.safetensors"),
              metadata={"relreps": "[1, 2]"})
    with pytest.raises(FormatError, match="JSON object"):
        load(tmp_path / "list.safetensors")


def test_tampered_state_is_refused(model_file, tmp_path):
    """Consistent files (valid checksum) whose content does not fit the class."""
    _, m = model_file
    config, arrays = _state(m)
    k, d = m.anchor_embeddings_.shape

    def variant(edit):
        c, a = json.loads(json.dumps(config)), {n: v.copy() for n, v in arrays.items()}
        edit(c, a)
        return c, a

    cases = {
        "anchors shape": lambda c, a: a.update(anchor_embeddings=np.ones((k, d + 1))),
        "anchors 1-D": lambda c, a: a.update(anchor_embeddings=np.ones(k * d)),
        "anchors int": lambda c, a: a.update(anchor_embeddings=np.ones((k, d), dtype=np.int32)),
        "anchors NaN": lambda c, a: a["anchor_embeddings"].__setitem__((0, 0), np.nan),
        "coef shape": lambda c, a: a.update({"head.lr.coef": np.ones((3, k + 1))}),
        "coef missing": lambda c, a: a.pop("head.lr.coef"),
        "extra array": lambda c, a: a.update(extra=np.ones(2)),
        "scaler NaN": lambda c, a: a["head.scaler.scale"].__setitem__(0, np.inf),
        "anchor index": lambda c, a: a.update(anchor_index=-np.ones(k, dtype=np.int64)),
        "head name": lambda c, a: c["params"].update(head="__import__('os').system('x')"),
        "head kind": lambda c, a: c["head"].update(kind="pickle"),
        "center": lambda c, a: c.update(center="vector"),
        "similarity": lambda c, a: c["params"].update(similarity="eval"),
        "n_features": lambda c, a: c.update(n_features_in="8"),
        "n_features bool": lambda c, a: c.update(n_features_in=True),
        "classes": lambda c, a: a.update(classes=np.array([0])),
        "classes kind": lambda c, a: c.update(classes={"kind": "pickle"}),
        "params": lambda c, a: c.update(params=[1, 2]),
        "ids": lambda c, a: c.update(anchor_ids=[1]),
        "texts": lambda c, a: c.update(anchor_texts=[1] * k),
        "head C": lambda c, a: c["head"]["lr"].update(C=-1),
        "feature names": lambda c, a: c.update(feature_names_in=["a"]),
    }
    for name, edit in cases.items():
        c, a = variant(edit)
        (tmp_path / "t.safetensors").write_bytes(_pack("StitchedClassifier", c, a))
        with pytest.raises(FormatError):
            load(tmp_path / "t.safetensors")
            pytest.fail(f"case {name!r} loaded")


def test_altered_arrays_fail_the_checksum(model_file, tmp_path):
    path, m = model_file
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last array's data
    (tmp_path / "flip.safetensors").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        load(tmp_path / "flip.safetensors")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_files(cut, model_file, tmp_path):
    path, _ = model_file
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:int(cut * len(data))])
    with pytest.raises(FormatError):
        load(tmp_path / "cut.safetensors")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(min_value=0.0, max_value=0.9999), byte=st.integers(0, 255))
def test_any_changed_byte_is_an_error_or_an_identical_model(pos, byte, model_file, tmp_path):
    path, m = model_file
    data = bytearray(path.read_bytes())
    i = int(pos * len(data))
    if data[i] == byte:
        return
    data[i] = byte
    (tmp_path / "b.safetensors").write_bytes(bytes(data))
    try:
        back = load(tmp_path / "b.safetensors")
    except FormatError:
        return
    # A change the format cannot see (JSON whitespace, an unused metadata string): same model.
    x = np.random.default_rng(1).normal(size=(20, 8))
    assert back.predict_proba(x).tobytes() == m.predict_proba(x).tobytes()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_random_bytes(data, tmp_path):
    (tmp_path / "r.safetensors").write_bytes(data)
    with pytest.raises(FormatError):
        load(tmp_path / "r.safetensors")


@pytest.mark.parametrize("doc", [
    '{"format": 1, "indices": {"a": [1, 2',
    '{"format": 1, "indices": {"a": [-1, 2]}}',
    '{"format": 1, "indices": {"a": [1.0, 2.0]}}',
    '{"format": 1, "indices": {"a": [true, false]}}',
    '{"format": 1, "indices": {"a": [[1], [2]]}}',
    '{"format": 1, "indices": {"a": [1, 1]}}',
    '{"format": 1, "indices": {"a": ["1"]}}',
    '{"format": 1, "indices": {"a": [1], "b": [1, 2]}}',
    '{"format": 1, "indices": {"a": [99999999999999999999]}}',
    '{"format": 1, "indices": {"a": [1]}, "keys": [3]}',
    '{"format": 1, "indices": {"a": [1]}, "meta": []}',
    '{"format": 1, "indices": []}',
    '{"format": 1}',
    '{"format": 2, "indices": {"a": [1]}}',
    '{"format": 1, "indices": {"a": [1]}, "class": "os.system"}',
    '{"relreps_format": 1, "class": "StitchedClassifier", "config": {}}',
    '{"indices": {"a": [1, -3]}}',
    '{"indices": {"a": [1]}, "keys": ["a"], "meta": {"x": NaN}}',
    '{' * 100000,
    '[' * 100000,
])
def test_hostile_anchorset_json(doc, tmp_path):
    (tmp_path / "a.json").write_text(doc)
    with pytest.raises(FormatError):
        load(tmp_path / "a.json")


def test_loading_never_imports_from_names_in_the_file(model_file, tmp_path, monkeypatch):
    import importlib

    _, m = model_file
    imported = []
    real = importlib.import_module

    def spy(name, *a, **k):
        imported.append(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", spy)
    config, arrays = _state(m)
    config["head"] = {"kind": "object", "class": "evil_module", "config": {}}
    (tmp_path / "o.safetensors").write_bytes(_pack("StitchedClassifier", config, arrays))
    with pytest.raises(FormatError, match="not loadable"):
        load(tmp_path / "o.safetensors")
    assert "evil_module" not in imported
    assert set(imported) <= {"relreps.stitching", "relreps.anchors", "relreps.projection",
                             "relreps.translation", "relreps.nn"}


def test_directory_and_permissions(tmp_path):
    os.mkdir(tmp_path / "d.safetensors")
    with pytest.raises(FormatError, match="not a file"):
        load(tmp_path / "d.safetensors")
