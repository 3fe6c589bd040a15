"""Offline graph loaders: Planetoid without download, karate club, synthetic SBM graphs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch_geometric")

from relreps.datasets import shared_data_dir  # noqa: E402
from relreps.datasets.graphs import (  # noqa: E402
    load_graph,
    load_planetoid,
    planetoid_raw_files,
    synthetic_graph,
)
from relreps.errors import DataNotFoundError, RelrepsError  # noqa: E402


def _masks(data):
    return [data.train_mask.numpy(), data.val_mask.numpy(), data.test_mask.numpy()]


def test_synthetic_graph_is_deterministic_homophilous_and_split():
    a, b = synthetic_graph(n_nodes=200, n_classes=4, seed=3), synthetic_graph(
        n_nodes=200, n_classes=4, seed=3)
    assert np.array_equal(a.edge_index.numpy(), b.edge_index.numpy())
    assert np.array_equal(a.x.numpy(), b.x.numpy())
    c = synthetic_graph(n_nodes=200, n_classes=4, seed=4)
    assert not np.array_equal(a.x.numpy(), c.x.numpy())
    tr, va, te = _masks(a)
    assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
    assert (tr | va | te).all()
    src, dst = a.edge_index.numpy()
    y = a.y.numpy()
    assert np.mean(y[src] == y[dst]) > 0.6  # p_in >> p_out: most edges stay within a class
    assert set(map(tuple, a.edge_index.numpy().T)) == set(map(tuple, a.edge_index.numpy()[::-1].T))
    assert a.num_classes == 4 and a.x.shape == (200, 64)


def test_synthetic_graph_rejects_degenerate_sizes():
    with pytest.raises(RelrepsError):
        synthetic_graph(n_nodes=5, n_classes=3)


def test_karate_masks_cover_every_class():
    d = load_graph("karate")
    tr, va, te = _masks(d)
    y = d.y.numpy()
    assert d.num_nodes == 34 and d.num_classes == 4
    assert (tr | va | te).all() and not (tr & te).any()
    for m in (tr, va, te):
        assert set(y[m]) == set(range(4))


def test_missing_raw_files_raise_instead_of_downloading(tmp_path):
    src = tmp_path / "src" / "Cora" / "raw"
    src.mkdir(parents=True)
    (src / planetoid_raw_files("Cora")[0]).write_bytes(b"")
    with pytest.raises(DataNotFoundError, match="never downloads"):
        load_planetoid("Cora", source=tmp_path / "src", root=tmp_path / "root")
    assert not (tmp_path / "root" / "Cora" / "processed").exists()


def test_pubmed_and_unknown_names_are_refused():
    with pytest.raises(DataNotFoundError, match="PubMed"):
        load_planetoid("PubMed")
    with pytest.raises(RelrepsError):
        load_planetoid("Reddit")
    with pytest.raises(RelrepsError):
        load_planetoid("Cora", split="random")


def _shared_planetoid():
    try:
        return shared_data_dir("planetoid/Cora/raw") / "planetoid"
    except DataNotFoundError:
        pytest.skip("shared Planetoid data not available")


def test_cora_reads_offline_with_public_and_full_splits(tmp_path):
    source = _shared_planetoid()
    full = load_planetoid("cora", source=source, root=tmp_path)
    public = load_planetoid("Cora", split="public", source=source, root=tmp_path)
    assert full.name == "Cora" and full.num_classes == 7
    assert full.x.shape == (2708, 1433) and full.edge_index.shape == (2, 10556)
    assert int(public.train_mask.sum()) == 140 and int(full.train_mask.sum()) == 1208
    assert np.array_equal(full.test_mask.numpy(), public.test_mask.numpy())
    assert int(full.val_mask.sum()) == 500 and int(full.test_mask.sum()) == 1000
    assert list(tmp_path.iterdir()) == []  # nothing is written: no processed cache to plant in


@pytest.mark.parametrize("name", ["Cora", "CiteSeer"])
@pytest.mark.parametrize("split", ["public", "full"])
def test_planetoid_matches_pyg_exactly(name, split, tmp_path):
    """The code-free reader builds the same graph as PyG's own Planetoid (trusted files here)."""
    import shutil

    from torch_geometric.datasets import Planetoid

    source = _shared_planetoid()
    shutil.copytree(source / name / "raw", tmp_path / name / "raw")
    ref = Planetoid(str(tmp_path), name, split=split)
    mine = load_planetoid(name, split=split, source=source)
    for key in ("x", "edge_index", "y", "train_mask", "val_mask", "test_mask"):
        a, b = getattr(ref[0], key), getattr(mine, key)
        assert a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all()), key
    assert mine.num_classes == ref.num_classes
