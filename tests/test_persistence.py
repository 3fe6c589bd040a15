"""relreps.save / relreps.load: round trips that give bit-identical outputs, in a new process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import relreps
from relreps.anchors import AnchorSet
from relreps.errors import (
    DataNotFoundError,
    FormatError,
    InputTypeError,
    NotFittedError,
    RunFolderError,
)
from relreps.persistence import ALLOWLIST, head_state, labels_state, load, save
from relreps.stitching import StitchedClassifier

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = str(Path(relreps.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(3, 10))
    y = rng.integers(0, 3, size=300)
    x = (means[y] + rng.normal(size=(300, 10))).astype(np.float32)
    return x[:200], y[:200], x[200:], y[200:]


def _fitted(head, data, labels=None, **kw):
    x, y, _, _ = data
    yy = y if labels is None else labels[y]
    return StitchedClassifier(head=head, n_anchors=25, random_state=0, **kw).fit(x, yy)


def _outputs(m, xt):
    rot = xt[:, ::-1].copy()
    out = {"proba": m.predict_proba(xt), "pred": m.predict(xt),
           "proba_other": m.predict_proba(rot, anchor_embeddings=m.anchor_embeddings_[:, ::-1]
                                          .copy())}
    return out


@pytest.mark.parametrize("head", ["logreg-cv", "logreg", "logreg-c0.05", "mlp"])
def test_round_trip_is_bit_identical(head, data, tmp_path):
    _, _, xt, _ = data
    m = _fitted(head, data)
    path = save(m, tmp_path / "model.safetensors")
    assert path == tmp_path / "model.safetensors"
    back = load(path)
    assert type(back) is StitchedClassifier
    assert back.get_params() == m.get_params()
    for k in ("center_", "center_decision_", "anchor_ids_", "n_anchors_", "n_features_in_",
              "C_", "anchor_texts_", "encoder_"):
        assert getattr(back, k) == getattr(m, k), k
    np.testing.assert_array_equal(back.anchor_embeddings_, m.anchor_embeddings_)
    assert back.anchor_embeddings_.dtype == np.float32
    np.testing.assert_array_equal(back.classes_, m.classes_)
    last, back_last = getattr(m.head_, "steps", [[None, m.head_]])[-1][1], \
        getattr(back.head_, "steps", [[None, back.head_]])[-1][1]
    assert type(back_last) is type(last) and back_last.get_params() == last.get_params()
    a, b = _outputs(m, xt), _outputs(back, xt)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    # Loaded models keep working as estimators: a refit from the loaded parameters.
    assert back.fit(*data[:2]).score(xt, data[3]) > 0.5


def test_round_trip_in_a_new_process_is_bit_identical(data, tmp_path):
    _, _, xt, _ = data
    np.save(tmp_path / "xt.npy", xt)
    heads = ("logreg-cv", "mlp")
    models = {h: _fitted(h, data, labels=np.array(["a", "b", "c"])) for h in heads}
    for h, m in models.items():
        save(m, tmp_path / f"{h}.safetensors")
    code = (
        "import sys, numpy as np, relreps\n"
        "xt = np.load(sys.argv[1] + '/xt.npy')\n"
        "for h in sys.argv[2:]:\n"
        "    m = relreps.load(f'{sys.argv[1]}/{h}.safetensors')\n"
        "    np.save(f'{sys.argv[1]}/{h}-p.npy', m.predict_proba(xt))\n"
        "    np.save(f'{sys.argv[1]}/{h}-y.npy', m.predict(xt).astype(str))\n")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path), *heads], check=True, env=env,
                   timeout=600)
    for h, m in models.items():
        assert np.load(tmp_path / f"{h}-p.npy").tobytes() == m.predict_proba(xt).tobytes()
        np.testing.assert_array_equal(np.load(tmp_path / f"{h}-y.npy"),
                                      m.predict(xt).astype(str))


def test_labels_ids_texts_and_params_survive(data, tmp_path):
    x, y, xt, _ = data
    labels = np.array(["neg", "neu", "pos"], dtype=object)
    texts = [f"anchor text {i}" for i in range(12)]
    m = StitchedClassifier(head="logreg", center="anchors", similarity="euclidean").fit(
        x, labels[y], anchor_embeddings=xt[:12], anchor_ids=texts)
    m.anchor_texts_, m.encoder_ = texts, "minilm-l6"  # as fit_texts sets them
    back = load(save(m, tmp_path / "m.safetensors"))
    assert back.classes_.dtype == object and list(back.classes_) == list(labels)
    assert back.anchor_ids_ == texts and back.anchor_texts_ == texts
    assert back.encoder_ == "minilm-l6" and back.similarity == "euclidean"
    assert back.anchor_index_ is None
    np.testing.assert_array_equal(back.predict(xt), m.predict(xt))
    idx = StitchedClassifier(head="logreg", anchor_index=np.arange(0, 200, 9),
                             random_state=3).fit(x, y > 0)
    back = load(save(idx, tmp_path / "idx.safetensors"), expected=StitchedClassifier)
    np.testing.assert_array_equal(back.anchor_index, idx.anchor_index)
    assert back.classes_.dtype == bool and back.random_state == 3
    import pandas as pd

    named = StitchedClassifier(head="logreg", n_anchors=10, random_state=0).fit(
        pd.DataFrame(x, columns=[f"f{i}" for i in range(10)]), y)
    back = load(save(named, tmp_path / "named.safetensors"))
    assert list(back.feature_names_in_) == list(named.feature_names_in_)


def test_anchorset_json_and_safetensors(tmp_path):
    a = AnchorSet({"en": [3, 1, 4], "hi": [10, 11, 12]}, keys=["x", "y", "z"],
                  meta={"note": "parallel"})
    for name in ("a.json", "a.safetensors"):
        back = load(save(a, tmp_path / name), expected="AnchorSet")
        assert back.spaces == ["en", "hi"] and back.keys == ["x", "y", "z"]
        assert back.meta == {"note": "parallel"}
        for s in a.spaces:
            np.testing.assert_array_equal(back.indices[s], a.indices[s])
    doc = json.loads((tmp_path / "a.json").read_text())  # the AnchorSet's own document
    assert doc["format"] == 1 and doc["indices"] == {"en": [3, 1, 4], "hi": [10, 11, 12]}
    assert AnchorSet.load(tmp_path / "a.json") == a
    a.save(tmp_path / "plain.json")
    assert load(tmp_path / "plain.json") == a
    with pytest.raises(FormatError, match="expected a StitchedClassifier"):
        load(tmp_path / "plain.json", expected=StitchedClassifier)


@pytest.mark.parametrize("name", ["RelativeProjection", "LatentTranslator"])
def test_other_classes_round_trip_when_they_implement_the_protocol(name, data, tmp_path):
    """Classes owned by other modules take part by implementing _relreps_state."""
    import importlib

    cls = getattr(importlib.import_module(ALLOWLIST[name]), name)
    if not hasattr(cls, "_relreps_state"):
        pytest.skip(f"{name} does not implement _relreps_state yet")
    x, _, xt, _ = data
    obj = cls().fit(x, x) if name == "LatentTranslator" else cls(n_anchors=20).fit(x)
    back = load(save(obj, tmp_path / "o.safetensors"))
    assert type(back) is cls
    a, b = np.asarray(obj.transform(xt)), np.asarray(back.transform(xt))
    assert a.tobytes() == b.tobytes()


def test_save_refuses_what_the_format_cannot_hold(data, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    x, y, _, _ = data
    with pytest.raises(NotFittedError):
        save(StitchedClassifier(), tmp_path / "unfitted.safetensors")
    with pytest.raises(InputTypeError, match="save takes"):
        save(LogisticRegression(), tmp_path / "lr.safetensors")
    with pytest.raises(InputTypeError, match="save takes"):
        save({"a": 1}, tmp_path / "d.safetensors")

    class Sub(StitchedClassifier):
        pass

    with pytest.raises(InputTypeError, match="save takes"):
        save(Sub(head="logreg", n_anchors=5).fit(x, y), tmp_path / "sub.safetensors")
    callable_head = StitchedClassifier(head=lambda s: LogisticRegression(), n_anchors=5)
    with pytest.raises(FormatError, match="callable head"):
        save(callable_head.fit(x, y), tmp_path / "c.safetensors")
    m = _fitted("logreg", data)
    m.head_ = SVC().fit(np.zeros((4, 25)) + np.arange(4)[:, None], [0, 1, 0, 1])
    with pytest.raises(FormatError, match="cannot be saved"):
        save(m, tmp_path / "svc.safetensors")
    with pytest.raises(FormatError, match="cannot be saved"):
        head_state(SVC())
    weird = np.empty(2, dtype=object)
    weird[:] = [(1,), (2,)]
    for labels in (weird, np.array([b"a", b"b"]), np.array(["2020-01-01"], dtype="M8[D]")):
        with pytest.raises(FormatError, match="numbers, booleans or strings"):
            labels_state(labels, "classes")
    with pytest.raises(FormatError, match="only an AnchorSet"):
        save(_fitted("logreg", data), tmp_path / "m.json")
    with pytest.raises(RunFolderError, match="folder"):
        save(_fitted("logreg", data), tmp_path)
    with pytest.raises(InputTypeError):
        save(_fitted("logreg", data), None)
    assert not list(tmp_path.glob("*.safetensors"))  # nothing half-written was left


def test_written_files_follow_the_umask_and_replace_atomically(data, tmp_path):
    m = _fitted("logreg", data)
    path = save(m, tmp_path / "m.safetensors")
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
    first = path.read_bytes()
    save(_fitted("logreg-c0.01", data), path)
    assert path.read_bytes() != first and not list(tmp_path.glob(".*tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder_is_a_run_folder_error(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RunFolderError, match="cannot write"):
            save(_fitted("logreg", data), ro / "m.safetensors")
    finally:
        ro.chmod(0o700)


def test_load_errors_for_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such file"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(FormatError, match="not a file"):
        load(tmp_path)
    with pytest.raises(InputTypeError):
        load(3)


def test_expected_class_is_checked(data, tmp_path):
    path = save(AnchorSet.from_indices([1, 2, 3]), tmp_path / "a.safetensors")
    with pytest.raises(FormatError, match="holds a AnchorSet, expected a StitchedClassifier"):
        load(path, expected=StitchedClassifier)


def test_top_level_names():
    assert relreps.persistence.save is save and relreps.persistence.load is load


def test_array_shapes_and_dtypes_are_kept_exactly(tmp_path):
    """0-d, empty, Fortran-ordered and boolean arrays come back as they were written."""
    from relreps.persistence import _check_arrays, _pack, _read_safetensors

    arrays = {"scalar": np.float64(2.5), "zero_d": np.array(3, dtype=np.int32),
              "empty": np.zeros((0, 4), np.float32), "fortran": np.asfortranarray(
                  np.arange(6.0).reshape(2, 3)), "mask": np.array([True, False])}
    clean = _check_arrays(arrays, "test")
    (tmp_path / "a.safetensors").write_bytes(_pack("AnchorSet", {}, arrays))
    _, back = _read_safetensors(tmp_path / "a.safetensors")
    for k, v in arrays.items():
        v = np.asarray(v)
        assert clean[k].shape == back[k].shape == v.shape and back[k].dtype == v.dtype, k
        np.testing.assert_array_equal(back[k], v)


def test_a_header_length_starting_with_0x80_is_not_taken_for_a_pickle(data, tmp_path):
    # safetensors files begin with their header's length; 1 in 256 lengths begin with the byte
    # of a pickle's PROTO opcode. Such a file is still read as safetensors.
    m = _fitted("logreg", data)
    path = save(m, tmp_path / "m.safetensors")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    pad = (0x80 - n) % 256
    header = raw[8:8 + n] + b" " * pad  # JSON may end with spaces (the format pads so)
    assert (n + pad) % 256 == 0x80
    path.write_bytes((n + pad).to_bytes(8, "little") + header + raw[8 + n:])
    back = load(path)
    np.testing.assert_array_equal(back.predict(data[2]), m.predict(data[2]))
    (tmp_path / "p.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(FormatError, match="pickle"):
        load(tmp_path / "p.safetensors")


def test_heads_without_the_constant_filter_still_round_trip(data, tmp_path):
    # heads saved before make_head put a ConstantFeatureFilter first have two steps
    m = _fitted("logreg", data)
    assert type(m.head_.steps[0][1]).__name__ == "ConstantFeatureFilter"
    assert m.head_[0].keep_.all()  # every feature varies: the filter is the identity here
    full = load(save(m, tmp_path / "f.safetensors"))
    assert full.head_[0].keep_.tolist() == m.head_[0].keep_.tolist()
    m.head_.steps = m.head_.steps[1:]
    back = load(save(m, tmp_path / "m.safetensors"))
    assert [type(s).__name__ for _, s in back.head_.steps] == ["StandardScaler",
                                                              "LogisticRegression"]
    for other in (back, full):
        assert other.predict_proba(data[2]).tobytes() == m.predict_proba(data[2]).tobytes()
