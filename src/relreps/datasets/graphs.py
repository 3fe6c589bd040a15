"""Offline graph data sets for node classification: Cora and CiteSeer (Planetoid format),
Zachary's karate club, and a synthetic stochastic-block-model graph for smoke runs.

Every loader returns a `torch_geometric.data.Data` with `x`, `edge_index`, `y`,
`train_mask`/`val_mask`/`test_mask` and two extra attributes: `name` and `num_classes`.
PubMed, the paper's third citation graph, is not available offline and is not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from relreps.datasets import shared_data_dir
from relreps.errors import (
    DataNotFoundError,
    FormatError,
    InputTypeError,
    MissingDependencyError,
    RelrepsError,
)
from relreps.validation import check_choice, check_float, check_int

__all__ = ["PLANETOID_NAMES", "planetoid_raw_files", "read_planetoid_raw", "load_planetoid",
           "load_karate", "synthetic_graph", "load_graph"]

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
    if not isinstance(name, str):
        raise InputTypeError(f"a Planetoid data set name must be a string, got {name!r}")
    for n in PLANETOID_NAMES:
        if n.lower() == name.lower():
            return n
    if name.lower() == "pubmed":
        raise DataNotFoundError("PubMed is not available offline (only Cora and CiteSeer are in "
                                "shared/data/planetoid); relreps does not download it.")
    raise RelrepsError(f"unknown Planetoid data set {name!r}; available: {PLANETOID_NAMES}")


def _planetoid_source(name: str, source: Path | None) -> Path:
    """The folder holding `<name>`'s eight raw files (checked to exist)."""
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
    return src_raw


def _dense(a: Any, what: str) -> np.ndarray:
    out = a.toarray() if hasattr(a, "toarray") else a
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.dtype.kind not in "biuf":
        raise FormatError(f"{what} is not a 2-D numeric matrix")
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise FormatError(f"{what} holds NaN or inf values")
    return out


def read_planetoid_raw(raw_dir: str | Path, name: str) -> Any:
    """Cora or CiteSeer from its eight raw `ind.<name>.*` files, as a PyG `Data` with the public
    split masks, exactly as PyG's Planetoid builds it, but without running pickle code.

    The raw files are pickles; they are parsed with a restricted unpickler that allows only
    numpy arrays, scipy csr matrices and a dict of adjacency lists
    (`relreps.datasets._safe_pickle`); anything else raises FormatError. Nothing is written.
    """
    name = _canonical(name)
    _require_pyg()
    import torch
    from torch_geometric.data import Data
    from torch_geometric.io.planetoid import edge_index_from_dict
    from torch_geometric.utils import index_to_mask

    from relreps.datasets._safe_pickle import load_data_pickle

    raw_dir = Path(raw_dir)
    prefix = name.lower()
    items: dict[str, Any] = {}
    for part in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
        path = raw_dir / f"ind.{prefix}.{part}"
        with open(path, "rb") as f:
            items[part] = load_data_pickle(f, sparse=True, containers=True, what=str(path))
    path = raw_dir / f"ind.{prefix}.test.index"
    try:
        test_index = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as e:
        raise FormatError(f"{path}: expected one integer per line ({e})") from None
    x, tx, allx = (_dense(items[k], f"ind.{prefix}.{k}") for k in ("x", "tx", "allx"))
    y, ty, ally = (_dense(items[k], f"ind.{prefix}.{k}") for k in ("y", "ty", "ally"))
    graph = items["graph"]
    widths = {a.shape[1] for a in (x, tx, allx)}
    n_lab = {a.shape[1] for a in (y, ty, ally)}
    if len(widths) != 1 or len(n_lab) != 1 or x.shape[0] != y.shape[0] \
            or tx.shape[0] != ty.shape[0] or allx.shape[0] != ally.shape[0]:
        raise FormatError(f"{name}: the raw feature and label matrices do not match in size")
    if not isinstance(graph, dict) or not all(
            isinstance(k, int) and isinstance(v, list) and all(isinstance(j, int) for j in v)
            for k, v in graph.items()):
        raise FormatError(f"{name}: ind.{prefix}.graph is not a dict of adjacency lists")
    n_train = y.shape[0]
    if test_index.size == 0 or test_index.min() < allx.shape[0]:
        raise FormatError(f"{name}: test indices overlap the labelled rows")
    x_t, tx_t, allx_t = (torch.from_numpy(a).to(torch.float) for a in (x, tx, allx))
    y_t, ty_t, ally_t = (torch.from_numpy(a).to(torch.float) for a in (y, ty, ally))
    test_idx = torch.from_numpy(test_index)
    sorted_test = test_idx.sort()[0]
    lo = int(test_idx.min())
    if prefix == "citeseer":  # isolated test nodes: zero rows where the test file has none
        span = int(test_idx.max()) - lo + 1
        if span < tx_t.shape[0]:
            raise FormatError(f"{name}: fewer test indices than test rows")
        tx_ext = torch.zeros(span, tx_t.size(1), dtype=tx_t.dtype)
        tx_ext[sorted_test - lo, :] = tx_t
        ty_ext = torch.zeros(span, ty_t.size(1), dtype=ty_t.dtype)
        ty_ext[sorted_test - lo, :] = ty_t
        tx_t, ty_t = tx_ext, ty_ext
    if tx_t.shape[0] != test_index.size and prefix != "citeseer":
        raise FormatError(f"{name}: {test_index.size} test indices for {tx_t.shape[0]} test rows")
    feats = torch.cat([allx_t, tx_t], dim=0)
    n = feats.shape[0]
    if int(test_idx.max()) >= n or len(np.unique(test_index)) != test_index.size:
        raise FormatError(f"{name}: test indices out of range or repeated")
    feats[test_idx] = feats[sorted_test]
    labels = torch.cat([ally_t, ty_t], dim=0).max(dim=1)[1]
    labels[test_idx] = labels[sorted_test]
    if any(k < 0 or k >= n or any(j < 0 or j >= n for j in v) for k, v in graph.items()):
        raise FormatError(f"{name}: ind.{prefix}.graph links nodes outside 0..{n - 1}")
    data = Data(x=feats, edge_index=edge_index_from_dict(graph, num_nodes=n), y=labels)
    data.train_mask = index_to_mask(torch.arange(n_train), size=n)
    data.val_mask = index_to_mask(torch.arange(n_train, n_train + 500), size=n)
    data.test_mask = index_to_mask(test_idx, size=n)
    return data


def load_planetoid(name: str, split: str = "full", *, source: str | Path | None = None,
                   root: str | Path | None = None) -> Any:
    """Cora or CiteSeer as a PyG `Data`, read from the local raw files, never downloaded.

    `split="public"` is the Planetoid split (20 labelled nodes per class, 500 validation, 1,000
    test); `split="full"` keeps the same validation and test nodes and trains on all the rest
    (Cora 1,208, CiteSeer 1,827 training nodes), which leaves room for 300 training anchors.
    `source` holds `<Name>/raw/` (default: shared/data/planetoid). The raw pickles are parsed
    without running code (`read_planetoid_raw`) on every call and nothing
    is written: PyG's processed cache, which PyG may load with code execution enabled, is not
    used. `root` is accepted for compatibility and ignored.
    """
    name = _canonical(name)
    check_choice(split, "split", _SPLITS)
    raw = _planetoid_source(name, Path(source) if source is not None else None)
    data = read_planetoid_raw(raw, name)
    if split == "full":
        data.train_mask = ~(data.val_mask | data.test_mask)
    data.name = name
    data.num_classes = int(data.y.max()) + 1
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
    n_classes = check_int(n_classes, "n_classes", min_value=2)
    n_nodes = check_int(n_nodes, "n_nodes", min_value=4 * n_classes)
    n_features = check_int(n_features, "n_features", min_value=1)
    for name, p in (("p_in", p_in), ("p_out", p_out), ("train_frac", train_frac),
                    ("val_frac", val_frac)):
        check_float(p, name, min_value=0.0, max_value=1.0)
    if train_frac + val_frac > 1:
        raise RelrepsError(f"train_frac + val_frac must be <= 1, got {train_frac + val_frac}")
    check_float(feature_noise, "feature_noise", min_value=0.0)
    seed = check_int(seed, "seed", min_value=0)
    _require_pyg()
    import torch
    from torch_geometric.data import Data

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
    if not isinstance(name, str):
        raise InputTypeError(f"a graph name must be a string, got {name!r}")
    key = name.lower()
    if key in ("karate", "karateclub"):
        return load_karate()
    if key in ("synthetic", "synthetic-sbm", "sbm"):
        return synthetic_graph(seed=seed)
    return load_planetoid(name, split=split)
