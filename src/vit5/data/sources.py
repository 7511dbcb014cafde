"""Readers for the raw dataset formats: scikit-learn digits, IDX (MNIST family), CIFAR pickles,
and ImageFolder trees. Each returns uint8 images ``[N, H, W, C]`` and int64 labels (or file lists).

Nothing here downloads except :func:`download_fashion_mnist` and :func:`download_cifar`, which are
only called on request (``--download``).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
#: The CIFAR python-pickle archives (format with 10 or 100).
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-{}-python.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# The digits split: a fixed permutation (legacy NumPy RandomState(0), stable across versions);
# the first 360 images (20%) are the test set, the other 1,437 the training set.
DIGITS_SEED = 0
DIGITS_TEST_SIZE = 360


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message lists where vit5 looked and how to get them."""


@dataclass
class ArraySplit:
    """Images ``[N, H, W, C]`` uint8 and labels ``[N]`` int64."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class FileSplit:
    """Image files and their labels (ImageFolder)."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)


def load_digits() -> tuple[ArraySplit, ArraySplit]:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0..16 scaled to 0..255), fixed split."""
    from vit5._extras import require

    data = require("sklearn.datasets", "train", "the digits dataset").load_digits()
    images = np.clip(np.rint(data.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[
        ..., None
    ]  # (N, 8, 8, 1)
    labels = data.target.astype(np.int64)
    order = np.random.RandomState(DIGITS_SEED).permutation(len(labels))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return ArraySplit(images[train], labels[train]), ArraySplit(images[test], labels[test])


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


#: Largest IDX array read (declared by its header); Fashion-MNIST's largest file holds 47 MB.
MAX_IDX_BYTES = 4 << 30
#: Deflate cannot compress by more than about 1032:1, so a gzip file declaring more is crafted.
_MAX_DEFLATE_RATIO = 1032


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    The header's declared size is checked against the file before anything is allocated (equal
    to the data for a plain file; within deflate's ratio for gzip, which is decompressed as a
    stream up to the declared size, never further).

    Raises:
        ValueError: the file is not a well-formed unsigned-byte IDX file, or declares more data
            than it holds.
    """
    path = Path(path)
    size = path.stat().st_size
    with _open_maybe_gzip(path) as handle:
        compressed = isinstance(handle, gzip.GzipFile)
        header = handle.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00":
            raise ValueError(f"{path}: not an IDX file (bad magic number {header!r})")
        if header[2] != 0x08:
            raise ValueError(f"{path}: only unsigned-byte IDX files are supported (type code {header[2]:#x})")
        ndim = header[3]
        dims = handle.read(4 * ndim)
        if len(dims) != 4 * ndim:
            raise ValueError(f"{path}: truncated IDX header")
        shape = struct.unpack(f">{ndim}I", dims)
        expected = math.prod(shape)
        available = size * _MAX_DEFLATE_RATIO if compressed else size - 4 - 4 * ndim
        if expected > MAX_IDX_BYTES or expected > available:
            raise ValueError(
                f"{path}: truncated IDX file or a crafted header: it declares {shape} ({expected} bytes), more than "
                f"the {'compressed ' if compressed else ''}file of {size} bytes can hold"
            )
        try:
            data = handle.read(expected)
            extra = handle.read(1)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: damaged gzip data ({error})") from None
    if len(data) != expected or extra:
        raise ValueError(
            f"{path}: {'truncated' if len(data) != expected else 'trailing data after the'} IDX data "
            f"({len(data)}{'+' if extra else ''} bytes, expected {expected} for {shape})"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()


def _find_idx(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # "train-images.idx3-ubyte", as some mirrors name them
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def fashion_mnist_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where Fashion-MNIST is looked for: ``data_dir`` (and its ``fashion-mnist``/``FashionMNIST/raw``
    sub-folders), then Debian's ``dataset-fashion-mnist`` location."""
    candidates: list[Path] = []
    if data_dir is not None:
        root = Path(data_dir)
        candidates += [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    candidates += [Path(p) for p in FASHION_MNIST_DIRS]
    return candidates


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> tuple[ArraySplit, ArraySplit]:
    """Fashion-MNIST's 60,000 / 10,000 28x28 grayscale images from IDX files.

    Raises:
        DatasetNotFoundError: no directory holds the four IDX files.
    """
    stems = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    searched = fashion_mnist_dirs(data_dir)
    for directory in searched:
        files = [_find_idx(directory, stem) for stem in stems]
        if all(files):
            train_x, train_y, test_x, test_y = (read_idx(f) for f in files)
            if len(train_x) != len(train_y) or len(test_x) != len(test_y):
                raise ValueError(f"{directory}: image and label counts differ")
            return (
                ArraySplit(train_x[..., None], train_y.astype(np.int64)),
                ArraySplit(test_x[..., None], test_y.astype(np.int64)),
            )
    raise DatasetNotFoundError(
        "Fashion-MNIST not found. Looked for train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
        "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in: "
        + ", ".join(str(d) for d in searched)
        + ". Get it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass --download "
        "(needs internet) or --data-dir pointing at the IDX files."
    )


def _download(dataset: Any, data_dir: str | os.PathLike, what: str) -> None:
    """Run torchvision's downloader for the train and test splits of ``dataset``.

    Raises:
        DatasetNotFoundError: the download failed (no internet, a mirror down, a bad archive).
    """
    try:
        for train in (True, False):
            dataset(str(data_dir), train=train, download=True)
    except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
        raise DatasetNotFoundError(
            f"downloading {what} into {data_dir} failed: {error}. Download it where the internet is "
            "reachable and pass --data-dir pointing at the files."
        ) from error


def download_fashion_mnist(data_dir: str | os.PathLike) -> Path:
    """Download Fashion-MNIST with torchvision into ``data_dir/FashionMNIST/raw`` (needs internet)."""
    from torchvision.datasets import FashionMNIST

    _download(FashionMNIST, data_dir, "Fashion-MNIST")
    return Path(data_dir) / "FashionMNIST" / "raw"


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's dicts of NumPy arrays and refuses every other global, so a crafted file
    cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def __init__(self, handle: Any, budget: int, **kwargs: Any) -> None:
        super().__init__(handle, **kwargs)
        self.budget = budget

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: CIFAR files only hold arrays and lists"
            )
        found = super().find_class(module, name)
        if name in ("ndarray", "_reconstruct"):
            return self._bounded(found)
        return found

    def _bounded(self, make: Any) -> Any:
        """``make`` (``ndarray`` / ``_reconstruct``) refusing shapes larger than the file (the data
        itself arrives later through ``__setstate__``, which numpy checks against the shape)."""

        def bounded(*args: Any) -> Any:
            args = tuple(np.ndarray if getattr(a, "__wrapped_array__", False) else a for a in args)
            offset = (
                0 if make is np.ndarray else 1
            )  # ndarray(shape, dtype) / _reconstruct(type, shape, dtype)
            shape = args[offset] if len(args) > offset else ()
            dims = shape if isinstance(shape, (tuple, list)) else (shape,)
            try:
                itemsize = np.dtype(args[offset + 1] if len(args) > offset + 1 else float).itemsize
            except (TypeError, ValueError):
                itemsize = 1
            if (
                not all(isinstance(d, int) and d >= 0 for d in dims)
                or math.prod(dims) * itemsize > self.budget
            ):
                raise pickle.UnpicklingError(
                    f"an array of shape {str(shape)[:80]} is larger than the file ({self.budget} bytes)"
                )
            return make(*args)

        bounded.__wrapped_array__ = make is np.ndarray  # the type _reconstruct receives
        return bounded


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            budget = os.fstat(handle.fileno()).st_size
            data = _ArrayOnlyUnpickler(handle, budget, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, MemoryError, RecursionError) as error:
        raise ValueError(f"{path}: not a valid CIFAR batch file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a valid CIFAR batch file (holds a {type(data).__name__}, expected a dict)"
        )
    # The originals (Python 2 pickles) give str keys; files re-pickled by Python 3 may have bytes keys.
    return {_text(key): value for key, value in data.items()}


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _entry(entry: dict, key: str, path: Path) -> Any:
    if key not in entry:
        raise ValueError(
            f"{path}: not a CIFAR batch file: no {key!r} entry (it has {sorted(map(str, entry))})"
        )
    return entry[key]


def _cifar_arrays(entry: dict, label_key: str, path: Path) -> ArraySplit:
    data = np.asarray(_entry(entry, "data", path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: expected CIFAR rows of 3072 bytes, got array of shape {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    labels = np.asarray(_entry(entry, label_key, path), dtype=np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: {len(images)} images but {labels.size} labels")
    return ArraySplit(np.ascontiguousarray(images), labels)


def _label_names(meta: Path, key: str, default: Sequence[str]) -> list[str]:
    if not meta.is_file():
        return list(default)
    return [_text(name) for name in _entry(_unpickle(meta), key, meta)]


def load_cifar(
    data_dir: str | os.PathLike | None, num_classes: int
) -> tuple[ArraySplit, ArraySplit, list[str]]:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) python-pickle folders.

    ``data_dir`` may be the batches folder itself or its parent.

    Raises:
        DatasetNotFoundError: the folder or its batch files are missing.
    """
    folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    searched = [] if data_dir is None else [Path(data_dir), Path(data_dir) / folder]
    for root in searched:
        if (
            num_classes == 10
            and all((root / f"data_batch_{i}").is_file() for i in range(1, 6))
            and (root / "test_batch").is_file()
        ):
            batches = [_unpickle(root / f"data_batch_{i}") for i in range(1, 6)]
            parts = [_cifar_arrays(b, "labels", root / f"data_batch_{i}") for i, b in enumerate(batches, 1)]
            train = ArraySplit(
                np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts])
            )
            test = _cifar_arrays(_unpickle(root / "test_batch"), "labels", root / "test_batch")
            return train, test, _label_names(root / "batches.meta", "label_names", CIFAR10_CLASSES)
        if num_classes == 100 and (root / "train").is_file() and (root / "test").is_file():
            train = _cifar_arrays(_unpickle(root / "train"), "fine_labels", root / "train")
            test = _cifar_arrays(_unpickle(root / "test"), "fine_labels", root / "test")
            names = _label_names(root / "meta", "fine_label_names", [str(i) for i in range(100)])
            return train, test, names
    where = f"in {', '.join(str(p) for p in searched)}" if searched else "(no --data-dir given)"
    raise DatasetNotFoundError(
        f"CIFAR-{num_classes} not found {where}. Pass --data-dir pointing at the '{folder}' folder (or "
        f"its parent), as extracted from {CIFAR_URL.format(num_classes)}, or use --download (needs internet)."
    )


def download_cifar(data_dir: str | os.PathLike, num_classes: int) -> Path:
    """Download CIFAR with torchvision into ``data_dir`` (needs internet)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    _download(CIFAR10 if num_classes == 10 else CIFAR100, data_dir, f"CIFAR-{num_classes}")
    return Path(data_dir)


def list_image_folder(root: Path, classes: Sequence[str] | None = None) -> FileSplit:
    """Files ``root/<class>/<image>`` with labels from the sorted class-folder names."""
    folders = {p.name: p for p in root.iterdir() if p.is_dir()}  # names are data: matched, never joined
    if classes is None:
        classes = sorted(folders)
    paths, labels = [], []
    for index, name in enumerate(classes):
        folder = folders.get(name)
        if folder is None:
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                paths.append(path)
                labels.append(index)
    return FileSplit(paths, np.asarray(labels, dtype=np.int64), list(classes))


def _has_images(folder: Path) -> bool:
    return any(path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() for path in folder.rglob("*"))


def load_image_folder(data_dir: str | os.PathLike | None) -> tuple[FileSplit, FileSplit]:
    """An ImageFolder tree with ``train/`` and ``val/`` sub-folders of class folders.

    ``val/`` may lack some of the ``train/`` classes; a ``val/`` class folder with images that
    ``train/`` lacks is an error (its images could only be scored as wrong).

    Raises:
        DatasetNotFoundError: ``data_dir`` is missing or lacks ``train/``/``val/`` with images.
        ValueError: ``val/`` has class folders with images that ``train/`` lacks.
    """
    if data_dir is None:
        raise DatasetNotFoundError(
            "--dataset imagefolder needs --data-dir DIR with DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg"
        )
    root = Path(data_dir)
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} must contain train/ and val/ sub-folders of class folders"
        )
    train = list_image_folder(train_dir)
    if not train.classes or not train.paths:
        raise DatasetNotFoundError(
            f"{train_dir} has no class folders with images ({', '.join(IMAGE_SUFFIXES)})"
        )
    unknown = sorted(
        folder.name
        for folder in val_dir.iterdir()
        if folder.is_dir() and folder.name not in train.classes and _has_images(folder)
    )
    if unknown:  # their images could never be scored right: the model only knows the train/ classes
        raise ValueError(
            f"{val_dir} has class folders that {train_dir} lacks: {unknown}; "
            f"train/ classes are {train.classes}"
        )
    val = list_image_folder(val_dir, train.classes)
    if not val.paths:
        raise DatasetNotFoundError(f"{val_dir} has no images in the class folders {train.classes}")
    return train, val
