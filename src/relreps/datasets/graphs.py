"""Offline graph data sets for node classification: Cora and CiteSeer (Planetoid format),
Zachary's karate club, and a synthetic stochastic-block-model graph for smoke runs.

Every loader returns a `torch_geometric.data.Data` with `x`, `edge_index`, `y`,
`train_mask`/`val_mask`/`test_mask` and two extra attributes: `name` and `num_classes`.
PubMed, the paper's third citation graph, is not available offline and is not supported.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from relreps.cache import cache_dir
from relreps.datasets import shared_data_dir
from relreps.errors import DataNotFoundError, MissingDependencyError, RelrepsError

__all__ = ["PLANETOID_NAMES", "planetoid_raw_files", "load_planetoid", "load_karate",
           "synthetic_graph", "load_graph"]

PLANETOID_NAMES = ("Cora", "CiteSeer")
_RAW_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_SPLITS = ("public", "full")


def _require_pyg() -> Any:
    try:
        import torch_geometric
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("torch_geometric", "the graph experiments",
                                     "pip install 'relreps[graphs]'") from e
    return torch_geometric


def planetoid_raw_files(name: str) -> list[str]:
    """The eight raw file names Planetoid needs for data set `name` (e.g. `ind.cora.x`)."""
    return [f"ind.{name.lower()}.{part}" for part in _RAW_PARTS]


def _canonical(name: str) -> str:
    for n in PLANETOID_NAMES:
        if n.lower() == name.lower():
            return n
    if name.lower() == "pubmed":
        raise DataNotFoundError("PubMed is not available offline (only Cora and CiteSeer are in "
                                "shared/data/planetoid); relreps does not download it.")
    raise RelrepsError(f"unknown Planetoid data set {name!r}; available: {PLANETOID_NAMES}")


def _stage_raw(name: str, source: Path | None, root: Path) -> Path:
    """Copy `<source>/<name>/raw/*` into the writable `root/<name>/raw` (once)."""
    if source is None:
        source = shared_data_dir("planetoid") / "planetoid"
    src_raw = Path(source) / name / "raw"
    files = planetoid_raw_files(name)
    missing = [f for f in files if not (src_raw / f).is_file()]
    if missing:
        raise DataNotFoundError(
            f"{name}: raw Planetoid files missing in {src_raw}: {', '.join(missing)}. Put the "
            f"original ind.{name.lower()}.* files there (shared/data/planetoid/{name}/raw) or "
            "set RELREPS_DATA; relreps never downloads them.")
    dst_raw = root / name / "raw"
    dst_raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (dst_raw / f).is_file():
            tmp = dst_raw / f".{f}.tmp"
            shutil.copyfile(src_raw / f, tmp)
            tmp.replace(dst_raw / f)
    return dst_raw


def load_planetoid(name: str, split: str = "full", *, source: str | Path | None = None,
                   root: str | Path | None = None) -> Any:
    """Cora or CiteSeer as a PyG `Data`, processed from the local raw files, never downloaded.

    `split="public"` is the Planetoid split (20 labelled nodes per class, 500 validation, 1,000
    test); `split="full"` keeps the same validation and test nodes and trains on all the rest
    (Cora 1,208, CiteSeer 1,827 training nodes), which leaves room for 300 training anchors.
    `source` holds `<Name>/raw/` (default: shared/data/planetoid); `root` is the writable folder
    where the raw files are copied and processed (default: the relreps cache).
    """
    name = _canonical(name)
    if split not in _SPLITS:
        raise RelrepsError(f"split must be one of {_SPLITS}, got {split!r}")
    _require_pyg()
    from torch_geometric.datasets import Planetoid

    class _OfflinePlanetoid(Planetoid):
        def download(self) -> None:
            raise DataNotFoundError(f"{name}: raw files missing under {self.raw_dir}; "
                                    "relreps does not download data")

    root = Path(root) if root is not None else cache_dir() / "planetoid"
    _stage_raw(name, Path(source) if source is not None else None, root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:  # processing writes processed/ once
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ds = _OfflinePlanetoid(str(root), name, split=split)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    data = ds[0]
    data.name = name
    data.num_classes = int(ds.num_classes)
    return data


def load_karate() -> Any:
    """Zachary's karate club (34 nodes, 4 communities; bundled in PyG, nothing downloaded).

    PyG labels one node per class; here half of each community trains, a quarter validates and a
    quarter tests (deterministic), so that accuracies are not single-node.
    """
    _require_pyg()
    import torch
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    y = data.y.numpy()
    train, val, test = (np.zeros(len(y), bool) for _ in range(3))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_tr = max(1, len(idx) // 2)
        n_va = max(1, (len(idx) - n_tr) // 2)
        train[idx[:n_tr]] = True
        val[idx[n_tr:n_tr + n_va]] = True
        test[idx[n_tr + n_va:]] = True
    data.train_mask, data.val_mask, data.test_mask = (torch.from_numpy(m)
                                                      for m in (train, val, test))
    data.name = "KarateClub"
    data.num_classes = int(len(np.unique(y)))
    return data


def synthetic_graph(n_nodes: int = 600, n_classes: int = 5, n_features: int = 64,
                    p_in: float = 0.03, p_out: float = 0.004, feature_noise: float = 2.0,
                    train_frac: float = 0.6, val_frac: float = 0.2, seed: int = 0) -> Any:
    """A stochastic-block-model graph with noisy class-dependent features (for fast tests).

    Nodes of the same class link with probability `p_in`, others with `p_out`; features are a
    class mean plus Gaussian noise of scale `feature_noise`, so that neighbours help.
    Random train/val/test masks with the given fractions.
    """
    _require_pyg()
    import torch
    from torch_geometric.data import Data

    if n_classes < 2 or n_nodes < 4 * n_classes:
        raise RelrepsError("synthetic_graph needs n_classes >= 2 and n_nodes >= 4 * n_classes")
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_nodes)
    means = rng.normal(size=(n_classes, n_features))
    x = means[y] + feature_noise * rng.normal(size=(n_nodes, n_features))
    prob = np.where(y[:, None] == y[None, :], p_in, p_out)
    upper = np.triu(rng.random((n_nodes, n_nodes)) < prob, k=1)
    src, dst = np.nonzero(upper | upper.T)
    perm = rng.permutation(n_nodes)
    n_tr, n_va = int(train_frac * n_nodes), int(val_frac * n_nodes)
    masks = [np.zeros(n_nodes, bool) for _ in range(3)]
    masks[0][perm[:n_tr]] = True
    masks[1][perm[n_tr:n_tr + n_va]] = True
    masks[2][perm[n_tr + n_va:]] = True
    data = Data(x=torch.tensor(x, dtype=torch.float32),
                edge_index=torch.tensor(np.stack([src, dst]), dtype=torch.long),
                y=torch.tensor(y, dtype=torch.long),
                train_mask=torch.from_numpy(masks[0]), val_mask=torch.from_numpy(masks[1]),
                test_mask=torch.from_numpy(masks[2]))
    data.name = "synthetic-sbm"
    data.num_classes = int(n_classes)
    return data


def load_graph(name: str, split: str = "full", seed: int = 0) -> Any:
    """Any graph above by name: "Cora", "CiteSeer", "KarateClub" or "synthetic"."""
    key = name.lower()
    if key in ("karate", "karateclub"):
        return load_karate()
    if key in ("synthetic", "synthetic-sbm", "sbm"):
        return synthetic_graph(seed=seed)
    return load_planetoid(name, split=split)
