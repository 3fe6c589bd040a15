"""Convolutional autoencoders (AE/VAE) and small CNN classifiers, absolute and relative.

Relative variants follow the paper (section 4/5.1): the encoder's output is projected on a fixed
set of anchor images that the *same* encoder re-encodes in every forward pass, with no gradient
through the anchors (`relreps.nn.RelativeLayer`, cosine similarity), then normalised (LayerNorm)
and passed to the decoder or classification head. Zero-shot stitching pairs the encoder (and its
anchor embeddings) of one model with the decoder/head of another: `stitch_reconstruct`,
`stitch_logits`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvEncoder", "ConvDecoder", "ImageAutoencoder", "CNNClassifier", "TrainConfig",
           "train_autoencoder", "train_classifier", "reconstruct", "stitch_reconstruct",
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


def _relative_layer(n_anchors: int, normalization: str) -> nn.Module:
    from relreps.nn import RelativeLayer

    return RelativeLayer(similarity="cosine", anchor_grad="detach", normalization=normalization,
                         n_anchors=n_anchors)


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
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 32,
                 variational: bool = False, relative: bool = False, n_anchors: int = 500,
                 width: int = 16) -> None:
        super().__init__()
        self.variational = variational
        self.relative = relative
        self.latent_dim = latent_dim
        self.n_anchors = n_anchors
        self.register_buffer("anchor_images", None)
        self.encoder = ConvEncoder(in_channels, image_size,
                                   latent_dim * (2 if variational else 1), width)
        self.rel = _relative_layer(n_anchors, "layernorm") if relative else None
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
    """Optimisation settings shared by the autoencoders and classifiers."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 1.0  # VAE: weight of the KL term against the summed squared error
    seed: int = 0


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        yield order[s:s + batch_size]


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float32)) if not isinstance(x, torch.Tensor) else x


def _fit(model: nn.Module, n: int, batch_loss, cfg: TrainConfig, desc: str) -> list[float]:
    """Adam over shuffled mini-batches of `n` rows; `batch_loss(idx)` gives a batch's loss."""
    from relreps.progress import progress

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history = []
    model.train()
    for _ in progress(range(cfg.epochs), desc=desc, total=cfg.epochs):
        total, count = 0.0, 0
        for idx in _batches(n, cfg.batch_size, gen):
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    model.eval()
    return history


def train_autoencoder(model: ImageAutoencoder, x: np.ndarray, cfg: TrainConfig,
                      desc: str = "train AE") -> list[float]:
    """Train with Adam on the squared error (+ KL for the VAE). Returns the loss per epoch."""
    xt = _as_tensor(x)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = xt[idx]
        recon, mu, logvar = model(xb)
        loss = F.mse_loss(recon, xb, reduction="sum") / len(xb)
        if model.variational:
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / len(xb)
            loss = loss + cfg.kl_weight * kl
        return loss

    return _fit(model, len(xt), batch_loss, cfg, desc)


def train_classifier(model: CNNClassifier, x: np.ndarray, y: np.ndarray, cfg: TrainConfig,
                     desc: str = "train CNN") -> list[float]:
    """Train with Adam on cross-entropy. Returns the loss per epoch."""
    xt, yt = _as_tensor(x), torch.as_tensor(np.asarray(y, np.int64))
    return _fit(model, len(xt), lambda idx: F.cross_entropy(model(xt[idx]), yt[idx]), cfg, desc)


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
    """Cosine similarities of the latents to the model's re-encoded anchors (before any norm)."""
    from relreps import relative_projection

    z = torch.as_tensor(latents(model, x, batch_size))
    return relative_projection(z, model.anchor_latents(), similarity="cosine").numpy()


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
