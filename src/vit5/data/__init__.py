"""Datasets for training and evaluation: digits (embedded), Fashion-MNIST, CIFAR-10/100, and your own
images (a class-folder tree, a CSV/JSONL manifest, a Hugging Face ``datasets`` table on disk)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from vit5.data.datasets import ImageDataset, read_image, sample_seed
from vit5.data.owndata import (
    OWN_DATASETS,
    SPLIT_FILE,
    apply_split,
    load_own_data,
    read_split_file,
    split_per_class,
    to_splits,
    write_split_file,
)
from vit5.data.sources import (
    FASHION_MNIST_CLASSES,
    ArraySplit,
    DatasetNotFoundError,
    FileSplit,
    download_cifar,
    download_fashion_mnist,
    load_cifar,
    load_digits,
    load_fashion_mnist,
    load_image_folder,  # noqa: F401  (re-exported for callers of vit5.data)
)
from vit5.data.transforms import (
    ARRAY_AUGMENTATIONS,
    AUGMENTATIONS,
    INTERPOLATIONS,
    ArrayTransform,
    eval_transform,
    parse_randaugment,
    resize_array,
    train_transform,
)

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DataSpec",
    "DatasetNotFoundError",
    "INTERPOLATIONS",
    "OWN_DATASETS",
    "SPLIT_FILE",
    "ImageDataset",
    "build_datasets",
    "dataset_defaults",
    "eval_transform",
    "parse_randaugment",
    "read_image",
    "sample_seed",
]

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "manifest", "hf")


@dataclass
class DataSpec:
    """What a model and its preprocessing need to know about a dataset (stored in checkpoints)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] = field(default_factory=list)
    crop_ratio: float = 1.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out


_DEFAULTS = {
    "digits": dict(num_classes=10, in_channels=1, image_size=16, mean=(0.3056,), std=(0.3761,), augment="shift"),
    "fashion-mnist": dict(num_classes=10, in_channels=1, image_size=28, mean=(0.2860,), std=(0.3530,), augment="crop-flip"),
    "cifar10": dict(num_classes=10, in_channels=3, image_size=32, mean=(0.4914, 0.4822, 0.4465),
                    std=(0.2470, 0.2435, 0.2616), augment="crop-flip"),
    "cifar100": dict(num_classes=100, in_channels=3, image_size=32, mean=(0.5071, 0.4865, 0.4409),
                     std=(0.2673, 0.2564, 0.2762), augment="crop-flip-randaug"),
    "imagefolder": dict(num_classes=0, in_channels=3, image_size=224, mean=(0.485, 0.456, 0.406),
                        std=(0.229, 0.224, 0.225), augment="rrc-3aug"),
}  # fmt: skip
_DEFAULTS["manifest"] = _DEFAULTS["hf"] = _DEFAULTS["imagefolder"]


def dataset_defaults(name: str) -> dict:
    """Default classes, channels, image size, normalisation and augmentation of a dataset."""
    if name not in _DEFAULTS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    return dict(_DEFAULTS[name])


def subset(split: ArraySplit | FileSplit, size: int | None) -> ArraySplit | FileSplit:
    """A fixed random subset (legacy NumPy RandomState(0) permutation) of ``size`` items, in order."""
    if size is None:
        return split
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"max_train_images / max_test_images must be a positive int, got {size!r}")
    if size >= len(split.labels):
        return split
    keep = np.sort(np.random.RandomState(0).permutation(len(split.labels))[:size])
    if isinstance(split, ArraySplit):
        return ArraySplit(split.images[keep], split.labels[keep])
    return FileSplit([split.paths[i] for i in keep], split.labels[keep], split.classes)


def build_datasets(
    name: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    augment: str | None = None,
    download: bool = False,
    seed: int = 0,
    skip_bad_images: bool = False,
    max_train_images: int | None = None,
    max_test_images: int | None = None,
    *,
    in_channels: int | None = None,
    interpolation: str = "bilinear",
    color_jitter: float | None = None,
    randaugment: str | None = None,
    random_erasing: float = 0.0,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    split_file: str | os.PathLike | None = None,
    write_split: bool = False,
    image_column: str = "image",
    label_column: str = "label",
) -> tuple[ImageDataset, ImageDataset, DataSpec]:
    """The training and test sets of ``name`` and their :class:`DataSpec`.

    Args:
        name: One of :data:`DATASETS`.
        data_dir: Where the files are (Fashion-MNIST also looks in Debian's install location).
        image_size: Model resolution (default: the dataset's preset resolution).
        augment: One of :data:`AUGMENTATIONS` (default: the dataset's recipe).
        download: Fetch Fashion-MNIST / CIFAR with torchvision into ``data_dir`` if missing.
        seed: Base seed of the per-sample augmentation randomness.
        skip_bad_images: Skip undecodable files (ImageFolder) instead of stopping.
        max_train_images: Use a fixed random subset of this many training images (quick runs).
        max_test_images: The same for the test set.
        in_channels: Channels the model takes (default: the dataset's). Grayscale images fed to a
            3-channel model are replicated to RGB (mean/std repeated); colour images fed to a
            1-channel model are converted to grayscale (mean/std averaged).
        interpolation, color_jitter, randaugment, random_erasing: training-pipeline options, see
            :mod:`vit5.data.transforms` (``interpolation`` applies to the test set too).
        val_fraction, split_seed: own data (:data:`OWN_DATASETS`) without a held-out part is split
            per class, holding out this fraction of each class, drawn with this seed.
        split_file: a run's ``split.csv``: reused when it exists (the run's own train/test images),
            else written there when ``write_split``.
        image_column, label_column: the columns of a ``datasets`` table (``hf``).

    Raises:
        DatasetNotFoundError: the files are missing (the message says where vit5 looked).
    """
    defaults = dataset_defaults(name)
    image_size = image_size or defaults["image_size"]
    augment = augment or defaults["augment"]
    class_names: list[str]
    if name == "digits":
        train, test = load_digits()
        class_names = [str(i) for i in range(10)]
    elif name == "fashion-mnist":
        try:
            train, test = load_fashion_mnist(data_dir)
        except DatasetNotFoundError:
            if not download:
                raise
            download_fashion_mnist(data_dir or "data")
            train, test = load_fashion_mnist(data_dir or "data")
        class_names = list(FASHION_MNIST_CLASSES)
    elif name in ("cifar10", "cifar100"):
        classes = 10 if name == "cifar10" else 100
        try:
            train, test, class_names = load_cifar(data_dir, classes)
        except DatasetNotFoundError:
            if not download:
                raise
            download_cifar(data_dir or "data", classes)
            train, test, class_names = load_cifar(data_dir or "data", classes)
    else:
        own = load_own_data(name, data_dir, image_column=image_column, label_column=label_column)
        if split_file is not None and os.path.isfile(split_file):
            held_out = apply_split(own, read_split_file(split_file), str(split_file))
        else:
            held_out = own.held_out or split_per_class(own.labels, val_fraction, split_seed)
            if split_file is not None and write_split:
                write_split_file(split_file, own, held_out)
        train, test = to_splits(own, held_out)
        if not train.paths or not test.paths:
            raise ValueError(
                f"{data_dir}: {len(train.paths)} training and {len(test.paths)} held-out images; both parts "
                "need at least one (add images, or change data.val_fraction)"
            )
        class_names = train.classes
        defaults["num_classes"] = len(class_names)
    train, test = subset(train, max_train_images), subset(test, max_test_images)
    channels = in_channels or defaults["in_channels"]
    if channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    mean, std = tuple(defaults["mean"]), tuple(defaults["std"])
    if channels != len(mean):  # 1 -> 3: replicated gray; 3 -> 1: the mean of the channels
        mean, std = (mean * 3, std * 3) if channels == 3 else ((sum(mean) / 3,), (sum(std) / 3,))
    spec = DataSpec(
        name=name,
        num_classes=defaults["num_classes"],
        in_channels=channels,
        image_size=image_size,
        mean=mean,
        std=std,
        class_names=class_names,
    )
    fast = randaugment is None and not color_jitter and not random_erasing
    if isinstance(train, ArraySplit) and augment in ARRAY_AUGMENTATIONS and fast and spec.crop_ratio == 1.0:
        # In-memory images: resize once (and match the channel count), then augment with NumPy.
        def prepare(images: np.ndarray) -> np.ndarray:
            images = resize_array(images, image_size, interpolation)
            if images.shape[-1] != channels:
                images = np.repeat(images, 3, axis=-1) if channels == 3 else _to_gray(images)
            return images

        train, test = (
            ArraySplit(prepare(train.images), train.labels),
            ArraySplit(prepare(test.images), test.labels),
        )
        padding = max(1, image_size // 8)
        train_tf: object = ArrayTransform(augment, spec.mean, spec.std, padding)
        test_tf: object = ArrayTransform("none", spec.mean, spec.std, padding)
    else:
        train_tf = train_transform(
            augment, image_size, spec.mean, spec.std, spec.in_channels, interpolation=interpolation,
            color_jitter=color_jitter, randaugment=randaugment, random_erasing=random_erasing,
        )  # fmt: skip
        test_tf = eval_transform(
            image_size, spec.mean, spec.std, spec.in_channels, spec.crop_ratio, interpolation
        )
    return (
        ImageDataset(train, train_tf, seed=seed, skip_bad_images=skip_bad_images),
        ImageDataset(test, test_tf, seed=seed, skip_bad_images=skip_bad_images),
        spec,
    )


def _to_gray(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[N, H, W, 3]`` -> ``[N, H, W, 1]`` (ITU-R 601-2 luma, as PIL and torchvision)."""
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
