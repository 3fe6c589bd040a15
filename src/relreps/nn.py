"""Torch modules for training on relative spaces: the relative layer, encoders and heads.

Design decisions the paper's code leaves implicit, made explicit here:

- **Anchors are re-encoded in every forward pass** by the same encoder as the batch
  (:class:`RelativeEncoder`), so the relative space follows the encoder during training.
- **Gradients through anchors** are a policy: ``anchor_grad="detach"`` (default, as in the paper's
  image models) treats anchor embeddings as constants for the step; ``"full"`` backpropagates
  through them too.
- **Output normalisation** is explicit: ``"none"``, ``"l2"`` (unit rows), ``"layernorm"`` (over the
  anchors of each sample, learnable affine) or ``"batchnorm"`` (each anchor over the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from relreps.errors import RelrepsError
from relreps.projection import relative_projection

__all__ = ["RelativeLayer", "RelativeEncoder", "BatchFeatureNorm", "RelativeClassifierHead",
           "TorchClassifier"]

Normalization = Literal["none", "l2", "layernorm", "batchnorm"]


class RelativeLayer(nn.Module):
    """Relative projection as a layer: ``forward(x, anchors) -> (batch, n_anchors)``.

    `x` and `anchors` are latents produced by the same encoder. `n_anchors` is needed for the
    normalisations with parameters (layernorm, batchnorm).
    """

    def __init__(self, similarity: str = "cosine", center: str | None = None,
                 anchor_grad: Literal["detach", "full"] = "detach",
                 normalization: Normalization = "none", n_anchors: int | None = None) -> None:
        super().__init__()
        if anchor_grad not in ("detach", "full"):
            raise RelrepsError(f"anchor_grad must be 'detach' or 'full', got {anchor_grad!r}")
        if normalization not in ("none", "l2", "layernorm", "batchnorm"):
            raise RelrepsError("normalization must be 'none', 'l2', 'layernorm' or 'batchnorm', "
                               f"got {normalization!r}")
        if normalization in ("layernorm", "batchnorm") and not n_anchors:
            raise RelrepsError(f"normalization={normalization!r} needs n_anchors")
        self.similarity = similarity
        self.center = center
        self.anchor_grad = anchor_grad
        self.normalization = normalization
        self.n_anchors = n_anchors
        self.norm: nn.Module | None = {"layernorm": lambda: nn.LayerNorm(n_anchors),
                                       "batchnorm": lambda: nn.BatchNorm1d(n_anchors)}.get(
            normalization, lambda: None)()

    def forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        if self.anchor_grad == "detach":
            anchors = anchors.detach()
        if self.n_anchors is not None and anchors.shape[0] != self.n_anchors:
            raise RelrepsError(f"layer was built for {self.n_anchors} anchors, got "
                               f"{anchors.shape[0]}")
        r = relative_projection(x, anchors, similarity=self.similarity, center=self.center)
        if self.normalization == "l2":
            r = nn.functional.normalize(r, dim=1)
        elif self.norm is not None:
            r = self.norm(r)
        return r

    def extra_repr(self) -> str:
        return (f"similarity={self.similarity!r}, center={self.center!r}, "
                f"anchor_grad={self.anchor_grad!r}, normalization={self.normalization!r}")


class RelativeEncoder(nn.Module):
    """An encoder followed by a relative layer, with its anchor inputs re-encoded every pass.

    Anchors are encoded in a separate forward call of `encoder` in the module's current mode; with
    ``anchor_grad="detach"`` that call runs under ``torch.no_grad`` (cheaper, same result).
    """

    def __init__(self, encoder: nn.Module, anchor_inputs: torch.Tensor,
                 layer: RelativeLayer | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.layer = layer or RelativeLayer()
        self.register_buffer("anchor_inputs", anchor_inputs)

    def encode_anchors(self) -> torch.Tensor:
        if self.layer.anchor_grad == "detach":
            with torch.no_grad():
                return self.encoder(self.anchor_inputs)
        return self.encoder(self.anchor_inputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.encoder(x), self.encode_anchors())


class BatchFeatureNorm(nn.Module):
    """Standardises each feature over the batch, always with the batch's own statistics.

    This is the paper's "normalisation over the batch" in its stitching head (an instance norm
    over the transposed batch). Unlike BatchNorm it keeps no running statistics, so predictions
    depend on the batch: evaluate on large batches.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            return x - x.mean(0, keepdim=True)
        return (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, unbiased=False,
                                                                   keepdim=True) + self.eps)


class RelativeClassifierHead(nn.Module):
    """The paper's classification head on a relative space.

    LayerNorm over the anchors, Linear, Tanh, per-feature normalisation over the batch
    (:class:`BatchFeatureNorm`), Linear.
    """

    def __init__(self, n_anchors: int, n_classes: int, hidden: int = 256,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(n_anchors), nn.Linear(n_anchors, hidden), nn.Tanh(),
                                 BatchFeatureNorm() if batch_norm else nn.Identity(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


class TorchClassifier:
    """Scikit-learn style classifier that trains a torch module on fixed features.

    `module_factory(n_features, n_classes)` builds the module (default
    :class:`RelativeClassifierHead`). Trained with Adam and cross-entropy; deterministic given
    `random_state`. Prediction runs on the whole input as one batch (the paper's head
    normalises over the batch).
    """

    def __init__(self, module_factory: Callable[[int, int], nn.Module] | None = None,
                 epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
                 weight_decay: float = 0.0, random_state: int | None = 0) -> None:
        self.module_factory = module_factory
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("module_factory", "epochs", "lr", "batch_size",
                                              "weight_decay", "random_state")}

    def set_params(self, **params: Any) -> TorchClassifier:
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def fit(self, X: Any, y: Any) -> TorchClassifier:
        X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        yt = torch.as_tensor(yi, dtype=torch.long)
        seed = (int(self.random_state) if self.random_state is not None
                else int(np.random.default_rng().integers(2**31 - 1)))
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            factory = self.module_factory or (lambda d, c: RelativeClassifierHead(d, c))
            self.module_ = factory(X.shape[1], len(self.classes_))
        opt = torch.optim.Adam(self.module_.parameters(), lr=self.lr,
                               weight_decay=self.weight_decay)
        self.module_.train()
        for _ in range(self.epochs):
            perm = torch.randperm(len(X), generator=gen)
            for s in range(0, len(X), self.batch_size):
                idx = perm[s:s + self.batch_size]
                if len(idx) < 2:
                    continue
                loss = nn.functional.cross_entropy(self.module_(X[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.module_.eval()
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        with torch.no_grad():
            logits = self.module_(torch.as_tensor(np.asarray(X), dtype=torch.float32))
        return torch.softmax(logits, 1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
