"""Convolutional autoencoders (AE/VAE) and small CNN classifiers, absolute and relative.

Relative variants follow the paper (section 4/5.1): the encoder's output is projected on a fixed
set of anchor images that the *same* encoder re-encodes in every forward pass, with no gradient
through the anchors (`relreps.nn.RelativeLayer`, cosine similarity), then normalised (LayerNorm)
and passed to the decoder or classification head. Zero-shot stitching pairs the encoder (and its
anchor embeddings) of one model with the decoder/head of another: `stitch_reconstruct`,
`stitch_logits`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvEncoder", "ConvDecoder", "ImageAutoencoder", "CNNClassifier", "TrainConfig",
           "TrainHistory", "train_autoencoder", "train_autoencoders", "train_classifier",
           "train_classifiers", "stitching_mse_matrix", "reconstruct", "stitch_reconstruct",
           "reconstruction_mse", "latents", "relative_latents", "predict_logits",
           "stitch_logits"]


def _feature_size(image_size: int) -> int:
    """Spatial size after two stride-2 convolutions (28 -> 7, 32 -> 8, 8 -> 2)."""
    return (image_size + 3) // 4


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions and two linear layers: (n, c, s, s) -> (n, out_dim)."""

    def __init__(self, in_channels: int, image_size: int, out_dim: int, width: int = 16,
                 hidden: int = 128) -> None:
        super().__init__()
        f = _feature_size(image_size)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * f * f, hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim))
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4:
            pad = _feature_size(self.image_size) * 4 - x.shape[-1]
            x = F.pad(x, (0, pad, 0, pad))
        return self.net(x)


class ConvDecoder(nn.Module):
    """Mirror of `ConvEncoder`: (n, in_dim) -> (n, c, s, s) in [0, 1]."""

    def __init__(self, in_dim: int, out_channels: int, image_size: int, width: int = 16,
                 hidden: int = 128) -> None:
        super().__init__()
        self.f = _feature_size(image_size)
        self.width = width
        self.image_size = image_size
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                nn.Linear(hidden, 2 * width * self.f * self.f), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.fc(h).view(-1, 2 * self.width, self.f, self.f)
        x = self.deconv(x)[..., :self.image_size, :self.image_size]
        return torch.sigmoid(x)


def _relative_layer(n_anchors: int, normalization: str, center: str | None = None
                    ) -> nn.Module:
    from relreps.nn import RelativeLayer

    return RelativeLayer(similarity="cosine", center=center, anchor_grad="detach",
                         normalization=normalization, n_anchors=n_anchors)


class _AnchoredModel(nn.Module):
    """Holds the anchor images (a buffer) and re-encodes them without gradient on demand."""

    relative: bool
    anchor_images: torch.Tensor | None

    def set_anchors(self, anchor_images: np.ndarray | torch.Tensor) -> None:
        self.anchor_images = torch.as_tensor(np.asarray(anchor_images, np.float32))

    def latent(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def anchor_latents(self) -> torch.Tensor:
        """The anchors encoded by this model's encoder now, without gradient (eval-style)."""
        if getattr(self, "anchor_images", None) is None:
            raise RuntimeError("relative model has no anchors: call set_anchors first")
        with torch.no_grad():
            return self.latent(self.anchor_images).detach()


class ImageAutoencoder(_AnchoredModel):
    """Convolutional AE or VAE; `relative=True` decodes from the relative projection.

    Absolute: decoder(z). Relative: decoder(LayerNorm(cos(z, encoder(anchors)))), the anchors
    re-encoded by the same encoder every forward pass, without gradient. For the VAE, z is sampled
    during training and is the posterior mean otherwise; anchors use their posterior mean.
    `center="anchors"` subtracts the current anchor latents' mean before the cosine.
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 32,
                 variational: bool = False, relative: bool = False, n_anchors: int = 500,
                 width: int = 16, center: str | None = None) -> None:
        super().__init__()
        self.variational = variational
        self.relative = relative
        self.latent_dim = latent_dim
        self.n_anchors = n_anchors
        self.register_buffer("anchor_images", None)
        self.encoder = ConvEncoder(in_channels, image_size,
                                   latent_dim * (2 if variational else 1), width)
        self.rel = _relative_layer(n_anchors, "layernorm", center) if relative else None
        self.decoder = ConvDecoder(n_anchors if relative else latent_dim, in_channels,
                                   image_size, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) for the VAE, (code, None) for the AE."""
        h = self.encoder(x)
        if self.variational:
            mu, logvar = h.chunk(2, dim=1)
            return mu, logvar.clamp(-10.0, 10.0)
        return h, None

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic latent: the code (AE) or the posterior mean (VAE)."""
        return self.encode(x)[0]

    def decode_from(self, z: torch.Tensor, anchor_z: torch.Tensor | None) -> torch.Tensor:
        """Decode latents `z` (with their encoder's anchor latents for the relative model)."""
        if self.relative:
            return self.decoder(self.rel(z, anchor_z))
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        mu, logvar = self.encode(x)
        z = mu
        if self.variational and self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        anchor_z = self.anchor_latents() if self.relative else None
        return self.decode_from(z, anchor_z), mu, logvar


class CNNClassifier(_AnchoredModel):
    """Small CNN; `relative=True` inserts the relative projection between encoder and head.

    Head (both variants): LayerNorm, Linear, ReLU, Linear on the latent (absolute) or on the
    cosine similarities to the re-encoded anchors (relative).
    """

    def __init__(self, in_channels: int, image_size: int, n_classes: int, latent_dim: int = 64,
                 relative: bool = False, n_anchors: int = 300, hidden: int = 128,
                 width: int = 16) -> None:
        super().__init__()
        self.relative = relative
        self.n_anchors = n_anchors
        self.register_buffer("anchor_images", None)
        self.encoder = ConvEncoder(in_channels, image_size, latent_dim, width)
        self.rel = _relative_layer(n_anchors, "none") if relative else None
        d = n_anchors if relative else latent_dim
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.ReLU(),
                                  nn.Linear(hidden, n_classes))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def classify_from(self, z: torch.Tensor, anchor_z: torch.Tensor | None) -> torch.Tensor:
        if self.relative:
            return self.head(self.rel(z, anchor_z))
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        anchor_z = self.anchor_latents() if self.relative else None
        return self.classify_from(self.encoder(x), anchor_z)


# ---------------------------------------------------------------- training and evaluation

@dataclass
class TrainConfig:
    """Optimisation settings shared by the autoencoders and classifiers.

    `epochs` is the maximum number of epochs. With validation data and `patience`, training stops
    once no model of the group has lowered its validation loss for `patience` epochs, and each
    model gets back the weights of its own best validation epoch.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 1.0  # VAE: weight of the KL term against the summed squared error
    seed: int = 0
    patience: int | None = None

    def check(self) -> TrainConfig:
        """This configuration, validated (`RelrepsError` subclasses name the bad field)."""
        from relreps.validation import check_float, check_int

        check_int(self.epochs, "epochs", min_value=1)
        check_int(self.batch_size, "batch_size", min_value=1)
        check_float(self.lr, "lr", min_value=0.0, min_inclusive=False)
        check_float(self.kl_weight, "kl_weight", min_value=0.0)
        check_int(self.seed, "seed", min_value=0)
        check_int(self.patience, "patience", min_value=1, allow_none=True)
        return self


@dataclass
class TrainHistory:
    """One model's training: per-epoch losses and the epoch whose weights it ends with."""

    train_loss: list[float] = field(default_factory=list)  # mean over each epoch's batches
    val_loss: list[float] = field(default_factory=list)  # after each epoch, eval mode
    best_epoch: int = 0  # 1-based; the last epoch when there is no validation data

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float32)) if not isinstance(x, torch.Tensor) else x


def _fit_group(models: Sequence[nn.Module], n: int, batch_losses: Sequence[Callable],
               val_losses: Sequence[Callable] | None, cfg: TrainConfig, seeds: Sequence[int],
               desc: str, on_epoch: Callable[[int], None] | None) -> list[TrainHistory]:
    """Adam over shuffled mini-batches of `n` rows for several models in lockstep.

    `batch_losses[i](idx)` is model i's loss on a batch; `val_losses[i]()` its validation loss
    (called in eval mode without gradient). Each model has its own batch order and its own torch
    random stream (VAE sampling), both from its seed, so it trains exactly as it would alone.
    """
    from relreps.progress import progress

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    rng_states = []
    for s in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(s))
            rng_states.append(torch.get_rng_state())
    opts = [torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in models]
    hists = [TrainHistory() for _ in models]
    best = [math.inf] * len(models)
    best_states: list[dict | None] = [None] * len(models)
    for epoch in progress(range(1, cfg.epochs + 1), desc=desc, total=cfg.epochs):
        for i, (m, opt) in enumerate(zip(models, opts)):
            m.train()
            total, count = 0.0, 0
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(rng_states[i])
                for idx in _batches(n, cfg.batch_size, gens[i]):
                    loss = batch_losses[i](idx)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                rng_states[i] = torch.get_rng_state()
            m.eval()
            hists[i].train_loss.append(total / max(count, 1))
            if val_losses is None:
                hists[i].best_epoch = epoch
                continue
            with torch.no_grad():
                v = float(val_losses[i]())
            hists[i].val_loss.append(v)
            if v < best[i]:  # NaN never improves; ties keep the earlier epoch
                best[i], hists[i].best_epoch = v, epoch
                best_states[i] = copy.deepcopy(m.state_dict())
        if on_epoch is not None:
            on_epoch(epoch)
        if (val_losses is not None and cfg.patience is not None
                and all(epoch - h.best_epoch >= cfg.patience for h in hists)):
            break
    for m, h, state in zip(models, hists, best_states):
        if state is not None and h.best_epoch != h.epochs_run:
            m.load_state_dict(state)
        m.eval()
    return hists


def _check_group(models: Sequence[nn.Module], kind: type, x: Any, x_val: Any, cfg: TrainConfig,
                 seeds: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor | None,
                                                       list[int]]:
    """Validated (x, x_val, seeds) for a group of models of class `kind`."""
    from relreps.errors import InputTypeError, OptionError, ShapeError
    from relreps.validation import check_array, check_int

    if not isinstance(cfg, TrainConfig):
        raise InputTypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    cfg.check()
    models = list(models)
    if not models or not all(isinstance(m, kind) for m in models):
        raise InputTypeError(f"models must be a non-empty sequence of {kind.__name__}")
    seeds = [cfg.seed] * len(models) if seeds is None else list(seeds)
    if len(seeds) != len(models):
        raise ShapeError(f"{len(seeds)} seeds for {len(models)} models")
    seeds = [check_int(s, "seeds[]", min_value=0) for s in seeds]
    xt = _as_tensor(check_array(x, "x", ndim=4, min_rows=1))
    xv = None
    if x_val is not None:
        xv = _as_tensor(check_array(x_val, "x_val", ndim=4, min_rows=1))
        if xv.shape[1:] != xt.shape[1:]:
            raise ShapeError(f"x_val images have shape {tuple(xv.shape[1:])}, x "
                             f"{tuple(xt.shape[1:])}")
    elif cfg.patience is not None:
        raise OptionError("early stopping (patience) needs validation data (x_val)")
    return xt, xv, seeds


def _ae_loss(model: ImageAutoencoder, xb: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """Summed squared error per image (+ kl_weight * KL for the VAE), averaged over the batch."""
    recon, mu, logvar = model(xb)
    loss = F.mse_loss(recon, xb, reduction="sum") / len(xb)
    if model.variational:
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(xb)
        loss = loss + kl_weight * kl
    return loss


def _mean_over_batches(fn: Callable[[slice], torch.Tensor], n: int, batch_size: int = 512
                       ) -> float:
    total = 0.0
    for s in range(0, n, batch_size):
        sl = slice(s, min(n, s + batch_size))
        total += float(fn(sl)) * (sl.stop - sl.start)
    return total / max(n, 1)


def train_autoencoders(models: Sequence[ImageAutoencoder], x: np.ndarray, cfg: TrainConfig, *,
                       seeds: Sequence[int] | None = None, x_val: np.ndarray | None = None,
                       on_epoch: Callable[[int], None] | None = None,
                       desc: str = "train AE") -> list[TrainHistory]:
    """Train several autoencoders on the same images, epoch by epoch in lockstep.

    Loss: summed squared error per image (+ `cfg.kl_weight` x KL for a VAE). With `x_val` the
    same loss is measured on it after every epoch (eval mode: the VAE decodes its posterior
    mean); with `cfg.patience` training stops early and each model keeps its best validation
    epoch (see `TrainConfig`). `seeds[i]` (default `cfg.seed`) orders model i's batches and
    drives its sampling. `on_epoch(epoch)` is called after each epoch with every model in eval
    mode (e.g. to measure stitching on validation data).
    """
    xt, xv, seeds = _check_group(models, ImageAutoencoder, x, x_val, cfg, seeds)
    models = list(models)
    batch = [(lambda idx, m=m: _ae_loss(m, xt[idx], cfg.kl_weight)) for m in models]
    val = None if xv is None else [
        (lambda m=m: _mean_over_batches(lambda sl: _ae_loss(m, xv[sl], cfg.kl_weight),
                                        len(xv))) for m in models]
    return _fit_group(models, len(xt), batch, val, cfg, seeds, desc, on_epoch)


def train_autoencoder(model: ImageAutoencoder, x: np.ndarray, cfg: TrainConfig,
                      desc: str = "train AE") -> list[float]:
    """Train with Adam on the squared error (+ KL for the VAE). Returns the loss per epoch."""
    return train_autoencoders([model], x, cfg, desc=desc)[0].train_loss


def train_classifiers(models: Sequence[CNNClassifier], x: np.ndarray, y: np.ndarray,
                      cfg: TrainConfig, *, seeds: Sequence[int] | None = None,
                      x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                      desc: str = "train CNN") -> list[TrainHistory]:
    """Train several classifiers with Adam on cross-entropy, in lockstep; early stopping on the
    validation cross-entropy as in `train_autoencoders`."""
    from relreps.errors import OptionError
    from relreps.validation import check_labels

    xt, xv, seeds = _check_group(models, CNNClassifier, x, x_val, cfg, seeds)
    yt = torch.as_tensor(check_labels(y, "y", n=len(xt)).astype(np.int64))
    models = list(models)
    batch = [(lambda idx, m=m: F.cross_entropy(m(xt[idx]), yt[idx])) for m in models]
    val = None
    if xv is not None:
        if y_val is None:
            raise OptionError("x_val needs y_val")
        yv = torch.as_tensor(check_labels(y_val, "y_val", n=len(xv)).astype(np.int64))
        val = [(lambda m=m: _mean_over_batches(lambda sl: F.cross_entropy(m(xv[sl]), yv[sl]),
                                               len(xv))) for m in models]
    return _fit_group(models, len(xt), batch, val, cfg, seeds, desc, None)


def train_classifier(model: CNNClassifier, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                     desc: str = "train CNN") -> list[float]:
    """Train with Adam on cross-entropy. Returns the loss per epoch."""
    return train_classifiers([model], x, y, cfg, desc=desc)[0].train_loss


@torch.no_grad()
def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    """fn applied to `x` in batches (no gradient), concatenated as numpy."""
    xt = _as_tensor(x)
    return torch.cat([fn(xt[s:s + batch_size]) for s in range(0, len(xt), batch_size)]).numpy()


def _stitch_pair(encoder_model: _AnchoredModel, other: _AnchoredModel) -> torch.Tensor | None:
    """Check two models can be stitched; put both in eval mode; the encoder's anchor latents."""
    if encoder_model.relative != other.relative:
        raise ValueError("stitch an absolute model with an absolute one, relative with relative")
    encoder_model.eval()
    other.eval()
    return encoder_model.anchor_latents() if encoder_model.relative else None


def latents(model: _AnchoredModel, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Deterministic latents (AE code / VAE mean / CNN embedding) as numpy."""
    model.eval()
    return _batched(model.latent, x, batch_size)


@torch.no_grad()
def relative_latents(model: _AnchoredModel, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Cosine similarities of the latents to the model's re-encoded anchors (before any norm),
    centred on the anchor mean when the model's relative layer centres."""
    from relreps import relative_projection

    z = torch.as_tensor(latents(model, x, batch_size))
    center = "anchors" if getattr(getattr(model, "rel", None), "center", None) == "anchors" \
        else None
    return relative_projection(z, model.anchor_latents(), similarity="cosine",
                               center=center).numpy()


@torch.no_grad()
def stitch_reconstruct(encoder_model: ImageAutoencoder, decoder_model: ImageAutoencoder,
                       x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Reconstructions of `x` through `encoder_model`'s encoder and `decoder_model`'s decoder.

    Relative models hand over the similarities to the anchors as embedded by the encoder's own
    model (the same anchor images in both).
    """
    anchor_z = _stitch_pair(encoder_model, decoder_model)
    return _batched(lambda b: decoder_model.decode_from(encoder_model.latent(b), anchor_z), x,
                    batch_size)


def reconstruct(model: ImageAutoencoder, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Same-model reconstructions (posterior mean for the VAE)."""
    return stitch_reconstruct(model, model, x, batch_size)


def reconstruction_mse(recon: np.ndarray, x: np.ndarray) -> float:
    """Mean squared error per pixel."""
    return float(np.mean((np.asarray(recon, np.float64) - np.asarray(x, np.float64)) ** 2))


@torch.no_grad()
def stitch_logits(encoder_model: CNNClassifier, head_model: CNNClassifier, x: np.ndarray,
                  batch_size: int = 512) -> np.ndarray:
    """Class scores of `x` through one model's encoder (and anchors) and another's head."""
    anchor_z = _stitch_pair(encoder_model, head_model)
    return _batched(lambda b: head_model.classify_from(encoder_model.latent(b), anchor_z), x,
                    batch_size)


def predict_logits(model: CNNClassifier, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class scores of `x` through one model."""
    return stitch_logits(model, model, x, batch_size)


@torch.no_grad()
def stitching_mse_matrix(models: Sequence[ImageAutoencoder], x: np.ndarray,
                         batch_size: int = 512) -> np.ndarray:
    """(k, k) per-pixel reconstruction MSE of `x`: entry (i, j) encodes with model i (and its
    anchor latents) and decodes with model j; the diagonal is the non-stitched error."""
    from relreps.errors import InputTypeError
    from relreps.validation import check_array

    models = list(models)
    if not models or not all(isinstance(m, ImageAutoencoder) for m in models):
        raise InputTypeError("models must be a non-empty sequence of ImageAutoencoder")
    xt = _as_tensor(check_array(x, "x", ndim=4, min_rows=1))
    anchors = [_stitch_pair(m, models[0]) for m in models]
    sq = np.zeros((len(models), len(models)))
    for s in range(0, len(xt), batch_size):
        xb = xt[s:s + batch_size]
        zs = [m.latent(xb) for m in models]
        for i, (z, a) in enumerate(zip(zs, anchors)):
            for j, dec in enumerate(models):
                sq[i, j] += float(((dec.decode_from(z, a) - xb) ** 2).double().sum())
    return sq / xt.numel()
