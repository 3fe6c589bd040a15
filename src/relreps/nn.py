"""Torch modules for training on relative spaces: the relative layer, encoders and heads.

Design decisions the paper's code leaves implicit, made explicit here:

- **Anchors are re-encoded in every forward pass** by the same encoder as the batch
  (:class:`RelativeEncoder`), so the relative space follows the encoder during training. For a
  frozen encoder or at inference the anchor embeddings can instead be **fixed**: kept in the
  layer as a buffer (``RelativeLayer(anchors=emb)``, :meth:`RelativeLayer.set_anchors`,
  :meth:`RelativeEncoder.freeze_anchors`), saved in the ``state_dict`` and moved by ``.to()``,
  with the centre vector (``center="anchors"``) as a second buffer.
- **Gradients through anchors** are a policy: ``anchor_grad="detach"`` (default, as in the paper's
  image models) treats anchor embeddings as constants for the step; ``"full"`` backpropagates
  through them too.
- **Output normalisation** is explicit: ``"none"``, ``"l2"`` (unit rows), ``"layernorm"`` (over the
  anchors of each sample, learnable affine) or ``"batchnorm"`` (each anchor over the batch).
- **Torch in, torch out**: the modules take tensors only (a numpy array is an
  :class:`~relreps.errors.InputTypeError`, never converted to a device the module would have to
  guess); nothing assumes a device. :class:`TorchClassifier` is the scikit-learn face: it takes
  numpy (or tensors) like any scikit-learn classifier.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from relreps._sklearn import check_is_fitted, validate_data
from relreps.errors import AnchorError, FormatError, InputTypeError, OptionError, RelrepsError
from relreps.projection import _project
from relreps.validation import (
    check_array,
    check_bool,
    check_callable,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_random_state,
    is_torch,
)

__all__ = ["RelativeLayer", "RelativeEncoder", "BatchFeatureNorm", "RelativeClassifierHead",
           "TorchClassifier"]

Normalization = Literal["none", "l2", "layernorm", "batchnorm"]
_NORMALIZATIONS = ("none", "l2", "layernorm", "batchnorm")
_CENTERS = (None, "anchors", "auto")


def _require_tensor(x: Any, name: str, owner: str) -> torch.Tensor:
    if not is_torch(x):
        kind = "numpy array" if isinstance(x, np.ndarray) else type(x).__name__
        raise InputTypeError(f"{owner} takes torch tensors; {name} is a {kind}. Convert it "
                             f"explicitly, e.g. torch.as_tensor({name}, device=...)")
    return x


def _adopt_buffers(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                   names: tuple[str, ...]) -> None:
    """Register placeholders for optional buffers that `state_dict` holds but `module` lacks, so
    a fresh module loads them (same shape and dtype as saved, on the module's device)."""
    ref = next(iter(module.parameters()), None)
    if ref is None:
        ref = next((b for b in module.buffers() if b is not None), None)
    for name in names:
        t = state_dict.get(prefix + name)
        if t is not None and getattr(module, name) is None and is_torch(t):
            device = ref.device if ref is not None else t.device
            setattr(module, name, torch.empty(t.shape, dtype=t.dtype, device=device))


class RelativeLayer(nn.Module):
    """Relative projection as a layer: ``forward(x, anchors=None) -> (batch, n_anchors)``.

    `x` and `anchors` are latents produced by the same encoder, as torch tensors. The anchors
    are either passed to every call (training: they follow the encoder) or **fixed** in the
    layer (``anchors=`` here or :meth:`set_anchors`): then ``forward(x)`` needs no anchors.

    Parameters
    ----------
    similarity : a name of :mod:`relreps.similarity`.
    center : ``None``; ``"anchors"`` (subtract the anchor mean first; with fixed anchors the mean
        is kept as the buffer ``center_vector``); ``"auto"`` (fixed anchors only: centre when the
        anchors are anisotropic, decided once by :func:`relreps.centering.resolve_center`; the
        decision is the presence of ``center_vector``); or a (d,) tensor, a fixed centre kept
        as ``center_vector`` (``self.center`` is then ``"vector"``).
    anchor_grad : ``"detach"`` or ``"full"`` (gradients through anchors passed to `forward`).
    normalization : ``"none"``, ``"l2"``, ``"layernorm"`` or ``"batchnorm"``.
    n_anchors : the anchor count the layer is built for (checked at every call); needed by
        ``"layernorm"``/``"batchnorm"``, which infer it from fixed `anchors`.
    anchors : (n_anchors, d) tensor of fixed anchor embeddings (stored as a detached copy).

    Buffers ``anchors`` and ``center_vector`` are in the ``state_dict`` when set; a fresh layer
    with the same arguments loads them (``load_state_dict``) and gives identical outputs.
    """

    anchors: torch.Tensor | None
    center_vector: torch.Tensor | None

    def __init__(self, similarity: str = "cosine", center: str | torch.Tensor | None = None,
                 anchor_grad: Literal["detach", "full"] = "detach",
                 normalization: Normalization = "none", n_anchors: int | None = None,
                 anchors: torch.Tensor | None = None) -> None:
        super().__init__()
        from relreps import similarity as _sim

        _sim.get(similarity)  # unknown names fail here, not at the first forward
        check_choice(anchor_grad, "anchor_grad", ("detach", "full"))
        check_choice(normalization, "normalization", _NORMALIZATIONS)
        check_int(n_anchors, "n_anchors", min_value=1, allow_none=True)
        self.register_buffer("anchors", None)
        self.register_buffer("center_vector", None)
        if is_torch(center):
            vec = check_array(center, "center", ndim=1, min_features=0)
            self.center_vector = vec.detach().clone()
            center = "vector"
        elif not isinstance(center, (str, type(None))) or center not in _CENTERS:
            raise InputTypeError(f"center must be None, 'anchors', 'auto' or a (d,) torch "
                                 f"tensor, got {center!r}")
        if anchors is not None and n_anchors is None and normalization in ("layernorm",
                                                                           "batchnorm"):
            n_anchors = int(_require_tensor(anchors, "anchors", "RelativeLayer").shape[0])
        if normalization in ("layernorm", "batchnorm") and not n_anchors:
            raise RelrepsError(f"normalization={normalization!r} needs n_anchors (or fixed "
                               "anchors)")
        self.similarity = similarity
        self.center = center
        self.anchor_grad = anchor_grad
        self.normalization = normalization
        self.n_anchors = n_anchors
        self.norm: nn.Module | None = {"layernorm": lambda: nn.LayerNorm(n_anchors),
                                       "batchnorm": lambda: nn.BatchNorm1d(n_anchors)}.get(
            normalization, lambda: None)()
        # the anchors' collapse warning is given once per layer (and per set_anchors), not at
        # every forward of an evaluation loop
        self._collapse_checked = False
        if anchors is not None:
            self.set_anchors(anchors)

    @property
    def has_fixed_anchors(self) -> bool:
        """True when anchor embeddings are stored in the layer."""
        return self.anchors is not None

    def set_anchors(self, anchors: torch.Tensor) -> RelativeLayer:
        """Store fixed anchor embeddings (a detached copy, on their own device) and, for
        ``center="anchors"``/``"auto"``, the centre; ``forward(x)`` then needs no anchors."""
        a = check_array(_require_tensor(anchors, "anchors", "RelativeLayer"), "anchors",
                        min_rows=1)
        if self.n_anchors is not None and a.shape[0] != self.n_anchors:
            raise AnchorError(f"layer was built for {self.n_anchors} anchors, got {a.shape[0]}")
        if self.center == "vector" and a.shape[1] != self.center_vector.shape[0]:
            raise AnchorError(f"anchors have {a.shape[1]} features but the centre vector has "
                              f"{self.center_vector.shape[0]}")
        a = a.detach().clone()
        if self.center == "anchors":
            self.center_vector = a.mean(0)
        elif self.center == "auto":
            self.center_vector = a.mean(0) if self._auto_centres(a) else None
        self.anchors = a
        self._collapse_checked = False
        return self

    def clear_anchors(self) -> RelativeLayer:
        """Forget fixed anchors (and a centre derived from them): anchors go back to `forward`."""
        self.anchors = None
        if self.center in ("anchors", "auto"):
            self.center_vector = None
        return self

    def _auto_centres(self, a: torch.Tensor) -> bool:
        from relreps.centering import resolve_center

        if a.is_meta:
            raise RelrepsError("center='auto' decides from the anchors' values; meta tensors "
                               "have none (set the anchors on a real device, or choose "
                               "center=None or 'anchors')")
        if a.shape[0] < 2:
            raise AnchorError("center='auto' needs at least 2 anchors to measure anisotropy")
        return resolve_center("auto", {"anchors": a}).center == "anchors"

    def _center_for(self, fixed: bool) -> Any:
        if self.center is None:
            return None
        if self.center == "vector":
            return self.center_vector
        if fixed:
            return self.center_vector  # the stored mean (or, for "auto", None: not centred)
        if self.center == "anchors":
            return "anchors"
        # "auto" with anchors passed to forward: reuse the decision taken on the fixed anchors
        if self.anchors is None:
            raise AnchorError("center='auto' is decided once on fixed anchors (anchors= or "
                              "set_anchors); with anchors passed to every forward choose None "
                              "or 'anchors'")
        return "anchors" if self.center_vector is not None else None

    def forward(self, x: torch.Tensor, anchors: torch.Tensor | None = None) -> torch.Tensor:
        x = _require_tensor(x, "x", "RelativeLayer")
        fixed = anchors is None
        if fixed:
            if self.anchors is None:
                raise AnchorError("no anchors: pass them to forward(x, anchors) or fix them "
                                  "with RelativeLayer(anchors=...) / set_anchors(...)")
            anchors = self.anchors
        else:
            anchors = _require_tensor(anchors, "anchors", "RelativeLayer")
            if self.anchor_grad == "detach":
                anchors = anchors.detach()
            if self.n_anchors is not None and anchors.shape[0] != self.n_anchors:
                raise AnchorError(f"layer was built for {self.n_anchors} anchors, got "
                                  f"{anchors.shape[0]}")
        check = not self._collapse_checked
        r = _project(x, anchors, similarity=self.similarity, center=self._center_for(fixed),
                     warn=check, stacklevel=4)
        if check and not (torch.is_grad_enabled()
                          and (x.requires_grad or anchors.requires_grad)):
            self._collapse_checked = True  # measured (and warned if needed) in this call
        if self.normalization == "l2":
            r = nn.functional.normalize(r, dim=1)
        elif self.norm is not None:
            r = self.norm(r)
        return r

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              local_metadata: dict[str, Any], strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        names = ("anchors", "center_vector") if self.center is not None else ("anchors",)
        _adopt_buffers(self, state_dict, prefix, names)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if (self.center == "anchors" and prefix + "anchors" in state_dict
                and prefix + "center_vector" not in state_dict):
            missing_keys.append(prefix + "center_vector")  # saved by a layer that did not centre

    def extra_repr(self) -> str:
        fixed = f", fixed anchors={tuple(self.anchors.shape)}" if self.anchors is not None else ""
        return (f"similarity={self.similarity!r}, center={self.center!r}, "
                f"anchor_grad={self.anchor_grad!r}, normalization={self.normalization!r}{fixed}")


class RelativeEncoder(nn.Module):
    """An encoder followed by a relative layer, with its anchor inputs re-encoded every pass.

    Anchors are encoded in a separate forward call of `encoder` in the module's current mode; with
    ``anchor_grad="detach"`` that call runs under ``torch.no_grad`` (cheaper, same result).
    For a frozen encoder or inference, :meth:`freeze_anchors` encodes the anchors once and fixes
    them in the layer (a buffer, saved with the ``state_dict``). `anchor_inputs` may be omitted
    when the layer has (or will load) fixed anchors: ``RelativeEncoder(enc).load_state_dict(sd)``
    restores a frozen model for inference.
    """

    anchor_inputs: torch.Tensor | None

    def __init__(self, encoder: nn.Module, anchor_inputs: torch.Tensor | None = None,
                 layer: RelativeLayer | None = None) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise InputTypeError(f"encoder must be a torch.nn.Module, got "
                                 f"{type(encoder).__name__}")
        if layer is not None and not isinstance(layer, RelativeLayer):
            raise InputTypeError(f"layer must be a RelativeLayer, got {type(layer).__name__}")
        self.encoder = encoder
        self.layer = layer if layer is not None else RelativeLayer()
        if anchor_inputs is not None:
            anchor_inputs = _require_tensor(anchor_inputs, "anchor_inputs", "RelativeEncoder")
        self.register_buffer("anchor_inputs", anchor_inputs)

    def encode_anchors(self) -> torch.Tensor:
        """The anchor inputs through the current encoder."""
        if self.anchor_inputs is None:
            raise AnchorError("this RelativeEncoder has no anchor_inputs to encode")
        if self.layer.anchor_grad == "detach":
            with torch.no_grad():
                return self.encoder(self.anchor_inputs)
        return self.encoder(self.anchor_inputs)

    def freeze_anchors(self) -> RelativeEncoder:
        """Encode the anchor inputs once (no gradient) and fix them in the layer.

        The encoder runs in its current mode: call ``.eval()`` first when it has dropout or
        batch normalisation and the frozen anchors are meant for inference.
        """
        if self.anchor_inputs is None:
            raise AnchorError("cannot freeze: this RelativeEncoder has no anchor_inputs")
        with torch.no_grad():
            self.layer.set_anchors(self.encoder(self.anchor_inputs))
        return self

    def unfreeze_anchors(self) -> RelativeEncoder:
        """Go back to re-encoding the anchor inputs at every forward."""
        if self.anchor_inputs is None:
            raise AnchorError("cannot unfreeze: this RelativeEncoder has no anchor_inputs")
        self.layer.clear_anchors()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(_require_tensor(x, "x", "RelativeEncoder"))
        if self.layer.has_fixed_anchors:
            return self.layer(z)
        if self.anchor_inputs is None:
            raise AnchorError("RelativeEncoder has neither anchor_inputs nor fixed anchors in "
                              "its layer (load a state_dict that holds them, or pass "
                              "anchor_inputs)")
        return self.layer(z, self.encode_anchors())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        _adopt_buffers(self, state_dict, prefix, ("anchor_inputs",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class BatchFeatureNorm(nn.Module):
    """Standardises each feature over the batch, always with the batch's own statistics.

    This is the paper's "normalisation over the batch" in its stitching head (an instance norm
    over the transposed batch). Unlike BatchNorm it keeps no running statistics, so predictions
    depend on the batch: evaluate on large batches.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = check_float(eps, "eps", min_value=0.0, min_inclusive=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _require_tensor(x, "x", "BatchFeatureNorm")
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
        check_int(n_anchors, "n_anchors", min_value=1)
        check_int(n_classes, "n_classes", min_value=1)
        check_int(hidden, "hidden", min_value=1)
        check_bool(batch_norm, "batch_norm")
        self.net = nn.Sequential(nn.LayerNorm(n_anchors), nn.Linear(n_anchors, hidden), nn.Tanh(),
                                 BatchFeatureNorm() if batch_norm else nn.Identity(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.net(r)


def _default_head(n_features: int, n_classes: int, hidden: int, batch_norm: bool) -> nn.Module:
    return RelativeClassifierHead(n_features, n_classes, hidden=hidden, batch_norm=batch_norm)


_JSON_LABEL_KINDS = "iufbU"


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """Scikit-learn classifier that trains a torch module on fixed features (the paper's head).

    A real scikit-learn classifier: ``clone``, ``score``, ``Pipeline``, ``cross_val_score`` and
    ``GridSearchCV`` work; ``classes_``, ``n_features_in_`` (and ``feature_names_in_``) are set by
    `fit`; its fitted state is the module's ``state_dict`` (``module_``).

    Parameters
    ----------
    module_factory : ``callable(n_features, n_classes) -> nn.Module`` giving logits, or None for
        :class:`RelativeClassifierHead` (``hidden``, ``batch_norm``). Only the default can be
        saved with :func:`relreps.save` (a custom module is rebuilt by your own code).
    epochs, lr, batch_size, weight_decay : Adam with cross-entropy, mini-batches of
        `batch_size` rows (a last batch of one row is skipped: batch statistics need two).
    random_state : None or a non-negative int; weights and batch order are drawn from it on a
        private generator (the global torch RNG is left as it was).
    hidden : width of the default head's hidden layer.
    batch_norm : whether the default head standardises its hidden features over the batch
        (:class:`BatchFeatureNorm`, the paper's head). With it, predictions depend on the batch
        they are made in (by design: each encoder's batch is standardised with its own
        statistics, which helps zero-shot stitching), so predict on large batches; a single row
        is refused. ``batch_norm=False`` gives batch-independent predictions.
    device : where to train (``"cpu"``, ``"cuda:0"``, ...); None: the device of a tensor `X`,
        else the CPU. Prediction runs on the module's device; tensors come back on their own.

    Attributes
    ----------
    classes_, n_features_in_, module_ (the trained module, in eval mode), loss_curve_ (mean
    training loss of each epoch).
    """

    def __init__(self, module_factory: Callable[[int, int], nn.Module] | None = None,
                 epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
                 weight_decay: float = 0.0, random_state: int | None = 0, hidden: int = 256,
                 batch_norm: bool = True, device: str | torch.device | None = None) -> None:
        self.module_factory = module_factory
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.hidden = hidden
        self.batch_norm = batch_norm
        self.device = device

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    # ----------------------------------------------------------------- validation helpers
    def _check_params(self) -> None:
        if self.module_factory is not None:
            check_callable(self.module_factory, "module_factory")
        check_int(self.epochs, "epochs", min_value=1)
        check_float(self.lr, "lr", min_value=0.0, min_inclusive=False)
        check_int(self.batch_size, "batch_size", min_value=2)
        check_float(self.weight_decay, "weight_decay", min_value=0.0)
        if self.random_state is not None:
            check_random_state(self.random_state)
        check_int(self.hidden, "hidden", min_value=1)
        check_bool(self.batch_norm, "batch_norm")
        if self.device is not None:
            if not isinstance(self.device, (str, torch.device)):
                raise InputTypeError(f"device must be None, a string or a torch.device, got "
                                     f"{self.device!r}")
            try:
                torch.empty(0, device=self.device)
            except (RuntimeError, AssertionError) as e:
                raise OptionError(f"device {str(self.device)!r} cannot be used here: "
                                  f"{str(e).splitlines()[0]}") from None

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).integers(2**31 - 1))

    def _module_device(self) -> torch.device:
        p = next(iter(self.module_.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _as_input(self, X: Any, device: torch.device) -> torch.Tensor:
        if is_torch(X):
            return X.detach().to(device=device, dtype=torch.float32)
        arr = np.asarray(X, dtype=np.float32)
        if not arr.flags.writeable:  # read-only memmaps: torch wants writable memory
            arr = arr.copy()
        return torch.as_tensor(arr, device=device)

    # ----------------------------------------------------------------- scikit-learn API
    def fit(self, X: Any, y: Any) -> TorchClassifier:
        """Train a fresh module on (X, y). X: (n, d) numpy or torch; y: n labels."""
        from sklearn.utils.multiclass import check_classification_targets

        self._check_params()
        if y is None:
            raise InputTypeError("TorchClassifier requires y to be passed, but the target y "
                                 "is None")
        if is_torch(X):
            X = validate_data(self, X, reset=True)
            y = check_labels(y, "y", n=X.shape[0])
            if X.shape[0] < 2:
                raise RelrepsError("TorchClassifier needs at least 2 samples (found 1 sample)")
        else:
            X, y = validate_data(self, X, y, reset=True, ensure_min_samples=2)
        try:
            check_classification_targets(y)
        except ValueError as e:
            raise RelrepsError(str(e)) from None
        self.classes_, yi = np.unique(y, return_inverse=True)
        device = torch.device(self.device) if self.device is not None else (
            X.device if is_torch(X) else torch.device("cpu"))
        xt = self._as_input(X, device)
        yt = torch.as_tensor(yi.reshape(-1), dtype=torch.long, device=device)
        seed = self._seed()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # module init and dropout: private stream
            torch.manual_seed(seed)
            if self.module_factory is None:
                module = _default_head(xt.shape[1], len(self.classes_), self.hidden,
                                       self.batch_norm)
            else:
                module = self.module_factory(xt.shape[1], len(self.classes_))
                if not isinstance(module, nn.Module):
                    raise InputTypeError(f"module_factory must return a torch.nn.Module, got "
                                         f"{type(module).__name__}")
            module = module.to(device)
            opt = torch.optim.Adam(module.parameters(), lr=self.lr,
                                   weight_decay=self.weight_decay)
            module.train()
            curve = []
            n = xt.shape[0]
            for _ in range(self.epochs):
                perm = torch.randperm(n, generator=gen).to(device)
                total, count = 0.0, 0
                for s in range(0, n, self.batch_size):
                    idx = perm[s:s + self.batch_size]
                    if len(idx) < 2:
                        continue
                    loss = nn.functional.cross_entropy(module(xt[idx]), yt[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                curve.append(total / max(count, 1))
        if not all(math.isfinite(v) for v in curve):
            from relreps.errors import NumericalError

            raise NumericalError("training diverged (non-finite loss); lower lr or scale X")
        self.module_ = module.eval()
        self.loss_curve_ = curve
        return self

    def _logits(self, X: Any) -> tuple[torch.Tensor, Any]:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False)
        if self.batch_norm and self.module_factory is None and X.shape[0] < 2:
            raise RelrepsError("the default head standardises over the prediction batch "
                               "(batch_norm=True): predict needs at least 2 rows at once, got 1 "
                               "(predict on a large batch, or fit with batch_norm=False)")
        with torch.no_grad():
            return self.module_(self._as_input(X, self._module_device())), X

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities (n, n_classes): numpy float64 for numpy input, a float32 tensor
        on X's device for torch input."""
        logits, X = self._logits(X)
        if is_torch(X):
            return torch.softmax(logits, 1).to(X.device)
        return torch.softmax(logits.double(), 1).cpu().numpy()

    def predict_log_proba(self, X: Any) -> Any:
        """Logarithm of :meth:`predict_proba` (computed stably from the logits)."""
        logits, X = self._logits(X)
        if is_torch(X):
            return torch.log_softmax(logits, 1).to(X.device)
        return torch.log_softmax(logits.double(), 1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (a numpy array of ``classes_`` values, for any input kind)."""
        logits, _ = self._logits(X)
        return self.classes_[logits.argmax(1).cpu().numpy()]

    # ----------------------------------------------------------------- persistence
    def _relreps_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(config, arrays) for :func:`relreps.save`: the parameters and the module's state."""
        check_is_fitted(self, "module_")
        if self.module_factory is not None:
            raise OptionError("a TorchClassifier with a custom module_factory cannot be saved: "
                              "only the default RelativeClassifierHead is rebuilt from a config "
                              "(save module_.state_dict() yourself and rebuild the module with "
                              "your factory)")
        if self.classes_.dtype.kind not in _JSON_LABEL_KINDS:
            raise OptionError(f"classes of dtype {self.classes_.dtype} cannot be saved; use "
                              "integer, float, bool or string labels")
        params = {k: getattr(self, k) for k in ("epochs", "lr", "batch_size", "weight_decay",
                                                "hidden", "batch_norm")}
        params = {k: (bool(v) if isinstance(v, (bool, np.bool_)) else
                      int(v) if isinstance(v, numbers.Integral) else float(v))
                  for k, v in params.items()}
        params["random_state"] = (int(self.random_state) if isinstance(
            self.random_state, numbers.Integral) else None)
        params["device"] = None if self.device is None else str(self.device)
        config = {"params": params, "classes": self.classes_.tolist(),
                  "classes_dtype": self.classes_.dtype.str,
                  "n_features_in": int(self.n_features_in_),
                  "feature_names_in": (self.feature_names_in_.tolist()
                                       if hasattr(self, "feature_names_in_") else None),
                  "loss_curve": [float(v) for v in self.loss_curve_]}
        arrays = {f"module.{k}": v.detach().cpu().numpy()
                  for k, v in self.module_.state_dict().items()}
        return config, arrays

    @classmethod
    def _relreps_from_state(cls, config: dict[str, Any],
                            arrays: dict[str, np.ndarray]) -> TorchClassifier:
        """Rebuild a fitted classifier (module on the CPU) from :meth:`_relreps_state`."""
        try:
            params = dict(config["params"])
            clf = cls(**params)
            clf._check_params()
            classes = np.asarray(config["classes"], dtype=np.dtype(config["classes_dtype"]))
            n_features = check_int(config["n_features_in"], "n_features_in", min_value=1)
            if classes.ndim != 1 or classes.dtype.kind not in _JSON_LABEL_KINDS:
                raise FormatError("classes must be a list of labels")
            names = config.get("feature_names_in")
            state = {k[len("module."):]: torch.from_numpy(np.array(v))
                     for k, v in arrays.items() if k.startswith("module.")}
            if len(state) != len(arrays):
                raise FormatError("unexpected arrays in a TorchClassifier state")
            module = _default_head(n_features, len(classes), clf.hidden, clf.batch_norm)
            module.load_state_dict(state, strict=True)
        except FormatError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise FormatError(f"invalid TorchClassifier state: {e}") from None
        clf.classes_ = classes
        clf.n_features_in_ = n_features
        if names is not None:
            clf.feature_names_in_ = np.asarray(names, dtype=object)
        clf.loss_curve_ = [float(v) for v in config.get("loss_curve", [])]
        clf.module_ = module.eval()
        return clf
