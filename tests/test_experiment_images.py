"""The images experiment at smoke scale: files, value ranges and the qualitative claims."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np
import pytest

from relreps.errors import DataNotFoundError
from relreps.experiments import available, run_experiment


@contextlib.contextmanager
def _one_torch_thread():
    """Run the block with one torch thread (deterministic, and fair to a shared machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_images_is_discovered():
    assert "images" in available()


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        run_experiment("images", scale="smoke", out=tmp_path, options={"epochz": 3})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):

    try:
        from relreps.datasets.images import load_mnist

        load_mnist("test", n=10)
    except DataNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("images-smoke")
    with _one_torch_thread():
        res = run_experiment("images", scale="smoke", seed=0, out=out)
    return out, res


def _mean(rows, **cond):
    vals = [r for r in rows if all(r.get(k) == v for k, v in cond.items())]
    assert vals, cond
    return vals


@pytest.mark.slow
def test_smoke_writes_results_and_figures(smoke):
    out, res = smoke
    for name in ("results.json", "results.md", "meta.json"):
        assert (out / name).stat().st_size > 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["experiment"] == "images" and payload["scale"] == "smoke"
    assert len(payload["rows"]) == len(res.rows)
    for fig in ("ae_reconstructions.png", "latent_spaces.png"):
        assert fig in res.figures and (out / fig).stat().st_size > 10_000
    md = (out / "results.md").read_text()
    assert "Zero-shot AE/VAE stitching" in md and "CIFAR-100" in md


@pytest.mark.slow
def test_smoke_autoencoder_rows(smoke):
    _, res = smoke
    ae = [r for r in res.rows if r["part"] == "ae_stitching"]
    datasets = {r["dataset"] for r in ae}
    assert {"mnist"} <= datasets
    for ds in datasets:
        for model in ("AE", "VAE"):
            for space in ("absolute", "relative"):
                rows = _mean(ae, dataset=ds, model=model, space=space)
                assert len(rows) == 4  # 2 seeds: 2 same-seed + 2 stitched pairs
                assert sum(r["stitched"] for r in rows) == 2
                assert all(0.0 < r["mse"] < 0.5 for r in rows)
    assert -1.0 <= res.summary["latent_cross_seed_mean_cosine_relative"] <= 1.0


@pytest.mark.slow
def test_smoke_cnn_relative_heads_stitch_and_absolute_do_not(smoke):
    _, res = smoke
    st = [r for r in res.rows if r["part"] == "cnn_stitching"]
    cls = [r for r in res.rows if r["part"] == "classification"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["f1_weighted"] <= 1.0 for r in cls)
    mnist_abs = np.mean([r["accuracy"] for r in _mean(cls, dataset="mnist", space="absolute")])
    assert mnist_abs > 0.3  # chance is 0.1
    for ds in {r["dataset"] for r in st}:
        rel = np.mean([r["accuracy"] for r in _mean(st, dataset=ds, space="relative",
                                                     stitched=True)])
        ab = np.mean([r["accuracy"] for r in _mean(st, dataset=ds, space="absolute",
                                                    stitched=True)])
        assert rel > ab + 0.1, (ds, rel, ab)


@pytest.mark.slow
def test_smoke_cross_architecture(smoke):
    _, res = smoke
    xa = [r for r in res.rows if r["part"] == "cross_architecture"]
    if not xa:
        pytest.skip("CIFAR-10 or EfficientNet weights not installed: " + "; ".join(res.notes))
    assert {r["fit_space"] for r in xa} == {"Lite0", "Lite2"}
    rel = np.mean([r["accuracy"] for r in _mean(xa, space="relative", stitched=True)])
    ab = np.mean([r["accuracy"] for r in _mean(xa, space="absolute", stitched=True)])
    own = np.mean([r["accuracy"] for r in _mean(xa, space="relative", stitched=False)])
    assert ab < 0.2  # absolute heads across encoders: about chance (0.1)
    assert rel > ab + 0.05 and own > 0.15
    assert "cross_architecture_stitching.png" in res.figures


def _tiny_options(**extra):
    opts = {"datasets": "digits", "seeds": 2, "ae_n_train": 120, "ae_n_val": 40,
            "ae_n_test": 50, "ae_max_epochs": 3, "ae_patience": 1, "ae_anchors": 20,
            "ae_curve_sizes": "60", "ae_models": "AE", "cnn_n_train": 120, "cnn_n_val": 40,
            "cnn_n_test": 50, "cnn_max_epochs": 2, "cnn_patience": 1, "cnn_anchors": 20}
    opts.update(extra)
    return opts


SENTINEL = 0.4321


def test_training_and_early_stopping_never_see_test_rows(tmp_path, monkeypatch):
    """Test images are replaced by a sentinel value: no array any trainer (fit or validation
    data) receives may contain one, while the test rows are still evaluated."""

    from relreps.experiments import images
    from relreps.models import vision

    real_load = images._load

    def marked_load(name, split, n):
        data = real_load(name, split, n)
        if split == "test":  # a copy: the loaders may share their arrays
            data = dataclasses.replace(data, x=np.full_like(data.x, SENTINEL))
        return data

    seen: list[np.ndarray] = []

    def spy(fn):
        def wrapped(models, x, *args, **kwargs):
            seen.append(np.asarray(x))
            if kwargs.get("x_val") is not None:
                seen.append(np.asarray(kwargs["x_val"]))
            return fn(models, x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(images, "_load", marked_load)
    monkeypatch.setattr(vision, "train_autoencoders", spy(vision.train_autoencoders))
    monkeypatch.setattr(vision, "train_classifiers", spy(vision.train_classifiers))
    with _one_torch_thread():
        res = run_experiment("images", scale="smoke", seed=0, out=tmp_path,
                             options=_tiny_options(parts="1,2"))
    assert len(seen) >= 2 * 4  # x and x_val of every group fit (AE, size curve, CNN)
    for arr in seen:
        flat = arr.reshape(len(arr), -1)
        assert not np.any(np.all(np.isclose(flat, SENTINEL), axis=1))
    # the sentinel test rows were evaluated (a constant image reconstructs with some error)
    assert any(r["part"] == "ae_stitching" for r in res.rows)
    assert any(r["part"] == "cnn_stitching" for r in res.rows)


def _check_curves(rows, max_epochs, patience, sizes):
    curves = [r for r in rows if r["part"] == "ae_epoch_curve"]
    training = [r for r in rows if r["part"] == "ae_training"]
    size_rows = [r for r in rows if r["part"] == "ae_size_curve"]
    assert curves and training and size_rows
    groups = {(r["dataset"], r["model"], r["space"]) for r in training}
    for key in groups:
        cur = [r for r in curves if (r["dataset"], r["model"], r["space"]) == key]
        run = [r for r in training if (r["dataset"], r["model"], r["space"]) == key]
        n_epochs = run[0]["epochs_run"]
        assert [r["epoch"] for r in cur] == list(range(1, n_epochs + 1))
        assert 1 <= n_epochs <= max_epochs
        for r in cur:
            for k in ("train_loss", "val_loss", "val_mse_non_stitched", "val_mse_stitched",
                      "val_ratio"):
                assert np.isfinite(r[k]) and r[k] > 0, (key, k, r[k])
            assert np.isclose(r["val_ratio"], r["val_mse_stitched"] / r["val_mse_non_stitched"])
        for r in run:
            assert len(r["train_loss"]) == len(r["val_loss"]) == n_epochs
            assert 1 <= r["best_epoch"] <= n_epochs
            assert r["val_loss"][r["best_epoch"] - 1] == min(r["val_loss"])
        # the group stops only once every seed has waited `patience` epochs (or at the ceiling)
        assert n_epochs == max_epochs or all(n_epochs - r["best_epoch"] >= patience
                                             for r in run)
        got = sorted(r["n_train"] for r in size_rows
                     if (r["dataset"], r["model"], r["space"]) == key)
        assert got == sorted(sizes), (key, got)


def test_tiny_run_curves_are_well_formed(tmp_path):

    with _one_torch_thread():
        res = run_experiment("images", scale="smoke", seed=0, out=tmp_path,
                             options=_tiny_options(parts="1"))
    _check_curves(res.rows, max_epochs=3, patience=1, sizes=[60, 120])
    payload = json.loads((tmp_path / "results.json").read_text())
    assert {r["part"] for r in payload["rows"]} >= {"ae_epoch_curve", "ae_size_curve",
                                                     "ae_training", "ae_stitching"}
    assert (tmp_path / "ae_ratio_curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_smoke_curves(smoke):
    _, res = smoke
    from relreps.experiments.images import CONFIGS

    cfg = CONFIGS["smoke"]
    _check_curves(res.rows, cfg["ae_max_epochs"], cfg["ae_patience"],
                  [int(cfg["ae_curve_sizes"]), cfg["ae_n_train"]])
    assert "ae_ratio_curves.png" in res.figures
    cnn = [r for r in res.rows if r["part"] == "cnn_training"]
    assert cnn and all(1 <= r["best_epoch"] <= r["epochs_run"] <= cfg["cnn_max_epochs"]
                       for r in cnn)
