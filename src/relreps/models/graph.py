"""Graph neural networks for node classification, absolute or relative.

`GraphEncoder` stacks message-passing layers (GCNConv, GCN2Conv, SAGEConv or GraphConv) of a
configurable depth, width, dropout and activation; its output is the node latent space.
`NodeClassifier` puts a classification head on that latent space directly (absolute) or on the
node's similarities to anchor nodes (relative: `relreps.nn.RelativeLayer`, anchors re-embedded by
the same forward pass, as in the paper). `train_node_classifier` trains full-batch and can hand
every epoch's latents to a callback.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from relreps.errors import MissingDependencyError, RelrepsError

__all__ = ["ACTIVATIONS", "CONVS", "OPTIMIZERS", "GNNConfig", "GraphEncoder", "NodeClassifier",
           "NodeOutput", "TrainResult", "build_node_classifier", "train_node_classifier",
           "accuracy", "stitched_accuracy", "sparse_features", "sparse_adjacency", "graph_input"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "identity": nn.Identity,
}
CONVS = ("gcn", "gcn2", "sage", "graph")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
HEADS = ("linear", "mlp")


def _pyg_nn() -> Any:
    try:
        import torch_geometric.nn as pyg_nn
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("torch_geometric", "graph neural networks",
                                     "pip install 'relreps[graphs]'") from e
    return pyg_nn


@dataclass(frozen=True)
class GNNConfig:
    """Architecture of a `GraphEncoder` (and its head)."""

    hidden: int = 64
    depth: int = 2
    dropout: float = 0.5
    activation: str = "relu"
    conv: str = "gcn"
    head: str = "linear"
    gcn2_alpha: float = 0.1
    gcn2_theta: float = 0.5

    def __post_init__(self) -> None:
        if self.conv not in CONVS:
            raise RelrepsError(f"conv must be one of {CONVS}, got {self.conv!r}")
        if self.activation not in ACTIVATIONS:
            raise RelrepsError(f"activation must be one of {sorted(ACTIVATIONS)}, "
                               f"got {self.activation!r}")
        if self.head not in HEADS:
            raise RelrepsError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.depth < 1 or self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise RelrepsError("need depth >= 1, hidden >= 1 and 0 <= dropout < 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GraphEncoder(nn.Module):
    """`depth` message-passing layers; returns the last layer's output (no activation) as the
    `hidden`-dimensional node latent.

    "gcn" is the plain GCN (the first GCNConv maps the input features to `hidden`). "gcn2",
    "sage" and "graph" begin with a linear input projection to `hidden` (with activation); the
    GCN2Conv layers mix that projection back in (initial residual), as GCNII does. Node features
    may be a sparse CSR tensor (see `sparse_features`): only the first linear map touches them.
    """

    def __init__(self, in_dim: int, config: GNNConfig = GNNConfig()) -> None:
        super().__init__()
        pyg = _pyg_nn()
        self.config = config
        c = config
        self.dropout = nn.Dropout(c.dropout)
        self.act = ACTIVATIONS[c.activation]()
        self.input = nn.Linear(in_dim, c.hidden) if c.conv != "gcn" else None
        layers = []
        for i in range(c.depth):
            d_in = in_dim if (i == 0 and self.input is None) else c.hidden
            if c.conv == "gcn":
                layers.append(pyg.GCNConv(d_in, c.hidden, cached=True))
            elif c.conv == "gcn2":
                layers.append(pyg.GCN2Conv(c.hidden, alpha=c.gcn2_alpha, theta=c.gcn2_theta,
                                           layer=i + 1, cached=True))
            elif c.conv == "sage":
                layers.append(pyg.SAGEConv(d_in, c.hidden))
            else:
                layers.append(pyg.GraphConv(d_in, c.hidden, aggr="add"))
        self.convs = nn.ModuleList(layers)

    @property
    def out_dim(self) -> int:
        return self.config.hidden

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = _input_dropout(x, self.dropout.p, self.training)
        h0 = None
        if self.input is not None:
            h = self.act(self.input(h))
            if self.config.conv == "gcn2":
                h0 = h
        for i, conv in enumerate(self.convs):
            if i > 0 or self.input is not None:
                h = self.dropout(h)
            h = conv(h, h0, edge_index) if h0 is not None else conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = self.act(h)
        return h


def _input_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout that also works on sparse CSR features (drops stored entries)."""
    if not training or p == 0.0:
        return x
    if x.layout == torch.sparse_csr:
        v = x.values()
        keep = (torch.rand_like(v) >= p).to(v.dtype) / (1.0 - p)
        with warnings.catch_warnings():  # "sparse invariant checks are disabled": they hold here
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), v * keep, x.shape)
    return nn.functional.dropout(x, p, training=True)


def sparse_features(data: Any) -> Any:
    """A shallow copy of `data` whose node features are a sparse CSR tensor (bag-of-words
    features are ~1% non-zero: the first layer runs several times faster; results are equal up
    to float rounding)."""
    out = copy.copy(data)
    if data.x.layout != torch.sparse_csr:
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            out.x = data.x.to_sparse_csr()
    return out


def sparse_adjacency(data: Any) -> Any:
    """A shallow copy of `data` with `adj_t`: the graph as a sparse CSR matrix (row = target
    node, column = source node), which `train_node_classifier` and `stitched_accuracy` then pass
    to the message-passing layers instead of `edge_index` (see `graph_input`). The layers
    aggregate by a sparse matrix product instead of gathering and scattering over the edge list
    (the GCN normalisation is computed once and cached as a normalised sparse matrix); results
    are equal up to float rounding (the sums run in another order)."""
    from torch_geometric.utils import to_torch_csr_tensor

    out = copy.copy(data)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        out.adj_t = to_torch_csr_tensor(data.edge_index.flip(0),
                                        size=(int(data.num_nodes), int(data.num_nodes)))
    return out


def graph_input(data: Any) -> torch.Tensor:
    """The graph argument of a model's forward for `data`: `data.adj_t` when it has one (see
    `sparse_adjacency`), else `data.edge_index`."""
    adj_t = getattr(data, "adj_t", None)
    return adj_t if adj_t is not None else data.edge_index


def _head(in_dim: int, n_classes: int, kind: str, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, n_classes)
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.Tanh(),
                         nn.Linear(hidden, n_classes))


def _relative_layer(similarity: str, center: str | None, anchor_grad: str) -> nn.Module:
    from relreps.nn import RelativeLayer

    return RelativeLayer(similarity=similarity, center=center, anchor_grad=anchor_grad)


class NodeOutput(NamedTuple):
    """One forward pass: class logits, the absolute node latents and (relative models) the
    relative representation (similarity of every node to every anchor node)."""

    logits: torch.Tensor
    latent: torch.Tensor
    relative: torch.Tensor | None


class NodeClassifier(nn.Module):
    """A `GraphEncoder` plus a head on the absolute latents, or, with `anchor_idx`, a head on the
    relative representation w.r.t. those anchor nodes (re-embedded in every forward pass).

    In full-batch training the anchors' latents are rows of the same forward pass;
    `anchor_grad="full"` (default) lets the loss shape them, "detach" treats them as constants.
    """

    def __init__(self, encoder: GraphEncoder, n_classes: int,
                 anchor_idx: Sequence[int] | np.ndarray | torch.Tensor | None = None, *,
                 similarity: str = "cosine", center: str | None = None,
                 anchor_grad: str = "full") -> None:
        super().__init__()
        self.encoder = encoder
        self.relative = anchor_idx is not None
        c = encoder.config
        if self.relative:
            idx = torch.as_tensor(np.asarray(anchor_idx), dtype=torch.long)
            if idx.ndim != 1 or idx.numel() < 1:
                raise RelrepsError("anchor_idx must be a non-empty 1-d index array")
            self.register_buffer("anchor_idx", idx)
            self.rel = _relative_layer(similarity, center, anchor_grad)
            in_dim = int(idx.numel())
        else:
            self.anchor_idx = None
            self.rel = None
            in_dim = encoder.out_dim
        self.head = _head(in_dim, n_classes, c.head, c.hidden)

    def represent(self, x: torch.Tensor, edge_index: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(absolute latents, relative representation or None)."""
        z = self.encoder(x, edge_index)
        if not self.relative:
            return z, None
        return z, self.rel(z, z[self.anchor_idx])

    def classify(self, representation: torch.Tensor) -> torch.Tensor:
        """Logits from the representation the head was trained on (relative or absolute)."""
        return self.head(representation)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> NodeOutput:
        z, r = self.represent(x, edge_index)
        return NodeOutput(self.classify(r if self.relative else z), z, r)


def build_node_classifier(in_dim: int, n_classes: int, config: GNNConfig = GNNConfig(), *,
                          anchor_idx: Sequence[int] | np.ndarray | None = None, seed: int = 0,
                          similarity: str = "cosine", center: str | None = None,
                          anchor_grad: str = "full") -> NodeClassifier:
    """A freshly initialised `NodeClassifier` (parameters drawn from `seed`)."""
    torch.manual_seed(seed)
    return NodeClassifier(GraphEncoder(in_dim, config), n_classes, anchor_idx,
                          similarity=similarity, center=center, anchor_grad=anchor_grad)


def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Accuracy of argmax(logits) on the nodes in `mask`."""
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def _optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise RelrepsError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


@dataclass
class TrainResult:
    """Per-epoch history and the model selected at the best validation accuracy."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    test_acc: float = 0.0  # at the best validation epoch
    seconds: float = 0.0


def train_node_classifier(model: NodeClassifier, data: Any, *, epochs: int = 200,
                          lr: float = 0.01, weight_decay: float = 5e-4, optimizer: str = "adam",
                          seed: int = 0, restore_best: bool = True, patience: int | None = None,
                          on_epoch: Callable[[int, NodeOutput], None] | None = None
                          ) -> TrainResult:
    """Full-batch training on `data.train_mask` with cross-entropy.

    After every epoch the model is evaluated (eval mode, no grad) on all nodes; train/val/test
    accuracy go into the history and, if given, `on_epoch(epoch, output)` sees that evaluation
    (epochs count from 1). With `restore_best` the weights of the best validation epoch are loaded
    back at the end (ties: the earliest). With `patience`, training stops after that many epochs
    without a better validation accuracy.
    """
    import time

    torch.manual_seed(seed)
    opt = _optimizer(optimizer, model.parameters(), lr, weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    x, ei, y = data.x, graph_input(data), data.y
    result = TrainResult(best_val_acc=-1.0)
    best_state = None
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        out = model(x, ei)
        loss = loss_fn(out.logits[data.train_mask], y[data.train_mask])
        if not torch.isfinite(loss):
            loss_value = float("nan")
        else:
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
        model.eval()
        with torch.no_grad():
            ev = model(x, ei)
        rec = {"epoch": epoch, "loss": loss_value,
               "train_acc": accuracy(ev.logits, y, data.train_mask),
               "val_acc": accuracy(ev.logits, y, data.val_mask),
               "test_acc": accuracy(ev.logits, y, data.test_mask)}
        result.history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch, ev)
        if rec["val_acc"] > result.best_val_acc:
            result.best_val_acc, result.best_epoch = rec["val_acc"], epoch
            result.test_acc = rec["test_acc"]
            if restore_best:
                best_state = copy.deepcopy(model.state_dict())
        elif patience is not None and epoch - result.best_epoch >= patience:
            break
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def stitched_accuracy(encoder_model: NodeClassifier, head_model: NodeClassifier, data: Any,
                      mask: torch.Tensor | None = None) -> float:
    """Accuracy of `head_model`'s classifier on `encoder_model`'s representation (relative
    models use their relative representation, absolute ones the raw latents)."""
    if encoder_model.relative != head_model.relative:
        raise RelrepsError("stitching needs two relative or two absolute models")
    if encoder_model.relative and not torch.equal(encoder_model.anchor_idx,
                                                  head_model.anchor_idx):
        raise RelrepsError("relative stitching needs the same anchor nodes in both models")
    encoder_model.eval()
    head_model.eval()
    z, r = encoder_model.represent(data.x, graph_input(data))
    logits = head_model.classify(r if encoder_model.relative else z)
    return accuracy(logits, data.y, data.test_mask if mask is None else mask)
