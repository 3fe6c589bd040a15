"""The images experiment at smoke scale: files, value ranges and the qualitative claims."""

from __future__ import annotations

import json

import numpy as np
import pytest

from relreps.errors import DataNotFoundError
from relreps.experiments import available, run_experiment


def test_images_is_discovered():
    assert "images" in available()


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown option"):
        run_experiment("images", scale="smoke", out=tmp_path, options={"epochz": 3})


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    import torch

    try:
        from relreps.datasets.images import load_mnist

        load_mnist("test", n=10)
    except DataNotFoundError as e:
        pytest.skip(str(e))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("images-smoke")
    try:
        res = run_experiment("images", scale="smoke", seed=0, out=out)
    finally:
        torch.set_num_threads(threads)
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
