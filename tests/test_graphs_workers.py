"""The graphs experiment's worker processes return exactly what the in-process code computes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch_geometric")

import torch  # noqa: E402

from relreps.experiments import graphs as G  # noqa: E402
from relreps.models.graph import GNNConfig  # noqa: E402


def test_plan_workers_default_per_scale():
    from relreps.experiments.base import RunContext

    smoke = G._plan(RunContext("smoke", 0, None, {}))
    full = G._plan(RunContext("full", 0, None, {}))
    assert smoke["workers"] == 0
    assert 1 <= full["workers"] <= min(4, G._usable_cpus())
    assert G._plan(RunContext("full", 0, None, {"workers": "0"}))["workers"] == 0


def test_worker_pool_matches_in_process(tmp_path, monkeypatch):
    """One spawned worker (so at most one busy process) against the in-process path, each with
    its own empty cache: part-1 models (weights and summary) and sweep records are identical."""
    torch.set_num_threads(1)
    data = G._load("synthetic", 0)
    anchors = G._anchor_nodes(data, 20, 0)
    kw = {"epochs": 15, "lr": 0.01, "weight_decay": 5e-4, "optimizer": "adam", "patience": 5}
    model = G._build(data, GNNConfig(), anchors, 3)
    with torch.no_grad():
        out = model(data.x, data.edge_index)
    ref = {"abs": out.latent.numpy(), "rel": out.relative.numpy()}
    configs = G._sample_configs(3, 5, (3, 6))

    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "here"))
    local_model, local_summ = G._train_cached(data, GNNConfig(), anchors, 1, kw, "classification")
    local_sweep = [G._sweep_cached(data, anchors, ref, c) for c in configs]

    monkeypatch.setenv("RELREPS_CACHE", str(tmp_path / "workers"))  # the workers inherit it
    with G._worker_pool(1) as pool:
        (state, summ), = G._pool_map(pool, G._classification_job,
                                     [("synthetic", 0, anchors, 1, kw)], [1.0], "test")
        sweep = G._pool_map(pool, G._sweep_job,
                            [("synthetic", 0, anchors, ref, c) for c in configs],
                            [float(c["epochs"]) for c in configs], "test")
    assert list((tmp_path / "workers").rglob("*.safetensors"))  # the worker filled its cache
    assert {k: v for k, v in summ.items() if k != "seconds"} == {
        k: v for k, v in local_summ.items() if k != "seconds"}
    for k, v in local_model.state_dict().items():
        assert np.array_equal(state[k], v.numpy()), k
    assert len(sweep) == len(configs)
    for a, b in zip(sweep, local_sweep):
        assert a.shape == b.shape and a.shape[0] >= 1
        np.testing.assert_array_equal(a, b)
