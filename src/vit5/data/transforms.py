"""Image transforms: evaluation preprocessing and the training augmentations.

Augmentation recipes (``augment=``):

* ``"none"`` — only the evaluation preprocessing;
* ``"flip"`` — a horizontal flip with probability 1/2, nothing else (the mildest augmentation;
  still a net loss for Fashion-MNIST in the 5-epoch CPU recipe: 0.8963 vs 0.9013 without);
* ``"shift"`` — random translation by up to ``image_size // 8`` pixels (a random crop of the
  zero-padded image), no flips (digits: a flipped 2 is no 2);
* ``"crop-flip"`` — the same plus a horizontal flip with probability 1/2 (CIFAR, Fashion-MNIST);
* ``"crop-flip-randaug"`` — the same plus RandAugment (2 ops, magnitude 9);
* ``"rrc-3aug"`` — random-resized-crop + flip + "3-Augment" (one of grayscale / solarize / blur per
  image) + color jitter 0.3: the ViT-5 / DeiT-III ImageNet recipe;
* ``"rrc-randaug"`` — random-resized-crop + flip + RandAugment.

Options of the torchvision pipelines (:func:`train_transform`; the NumPy fast path only resizes):
``interpolation`` (``"bilinear"`` or ``"bicubic"``, every resize and crop, eval included),
``color_jitter`` (brightness/contrast/saturation strength; ``None`` = the recipe's: 0.3 for
``rrc-3aug``, none otherwise), ``randaugment`` (a timm-style string such as
``"rand-m9-mstd0.5-inc1"``, run by timm's RandAugment in place of torchvision's ``num_ops=2,
magnitude=9``; it turns any recipe but ``"none"`` into a RandAugment one) and ``random_erasing``
(timm's per-pixel RandomErasing with this probability, after normalisation). timm draws from
Python's and NumPy's global generators: they are seeded from the per-sample torch generator and
restored, so these options stay reproducible under resume.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

AUGMENTATIONS = ("none", "flip", "shift", "crop-flip", "crop-flip-randaug", "rrc-3aug", "rrc-randaug")
# Recipes that ArrayTransform runs directly on in-memory arrays (no per-sample torchvision call).
ARRAY_AUGMENTATIONS = ("none", "flip", "shift", "crop-flip")
INTERPOLATIONS = ("bilinear", "bicubic")
_MODES = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}
_RANDAUG_SECTION = re.compile(r"^(m\d+(\.\d+)?|n\d+|mstd\d+(\.\d+)?|mmax\d+|inc[01]|p\d*(\.\d+)?)$")


def parse_randaugment(text: Any) -> str:
    """Check a timm-style RandAugment string (``rand-m9-mstd0.5-inc1``: ``m`` magnitude, ``n`` ops,
    ``mstd`` magnitude noise, ``mmax`` magnitude cap, ``inc`` increasing ops, ``p`` op probability).

    Raises:
        ValueError: not such a string (the message names it).
    """
    parts = text.split("-") if isinstance(text, str) else []
    if not parts or parts[0] != "rand" or not all(_RANDAUG_SECTION.match(part) for part in parts[1:]):
        raise ValueError(
            f"randaugment must be a timm RandAugment string such as 'rand-m9-mstd0.5-inc1' (sections m, n, mstd, "
            f"mmax, inc, p), got {text!r}"
        )
    return text


class _SeededPythonRandom:
    """Run a transform that draws from ``random`` / ``numpy.random`` (timm's) with both seeded from
    the torch default generator (seeded per sample by the dataset); both states are restored."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        python_state, numpy_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return self.transform(image)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def resize_array(images: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize uint8 images ``[N, H, W, C]`` so the short side is ``size`` and center-crop a square
    (antialiased; the same geometry as :func:`eval_transform`)."""
    if images.shape[1] == images.shape[2] == size:
        return images
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (N, C, H, W)
    tensor = TF.center_crop(TF.resize(tensor, size, _MODES[interpolation], antialias=True), [size, size])
    return tensor.permute(0, 2, 3, 1).contiguous().numpy()


class ArrayTransform:
    """Fast per-sample preprocessing of uint8 ``[H, W, C]`` arrays already at the model resolution.

    ``"shift"`` takes a random ``H x W`` crop of the image zero-padded by ``padding`` pixels,
    ``"crop-flip"`` also flips horizontally with probability 1/2, ``"flip"`` only flips and
    ``"none"`` only normalises. The randomness comes from the ``random.Random`` passed in (seeded
    per sample by the dataset). Written with tensor ops on the decoded image, not a torchvision
    pipeline, because a small image costs less to train on than to decode.
    """

    def __init__(self, augment: str, mean: Sequence[float], std: Sequence[float], padding: int) -> None:
        if augment not in ARRAY_AUGMENTATIONS:
            raise ValueError(f"ArrayTransform supports {ARRAY_AUGMENTATIONS}, got {augment!r}")
        self.augment = augment
        self.padding = padding if augment in ("shift", "crop-flip") else 0
        self.flips = augment in ("flip", "crop-flip")
        self.scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(1, 1, -1)
        self.offset = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(
            1, 1, -1
        )

    def __call__(self, image: np.ndarray, rng: random.Random) -> torch.Tensor:
        if self.padding:
            p = self.padding
            H, W = image.shape[:2]
            top, left = rng.randrange(2 * p + 1), rng.randrange(2 * p + 1)
            padded = np.zeros((H + 2 * p, W + 2 * p, image.shape[2]), dtype=image.dtype)
            padded[p : p + H, p : p + W] = image
            image = padded[top : top + H, left : left + W]
        if self.flips and rng.random() < 0.5:
            image = image[:, ::-1]
        normalised = image.astype(np.float32) * self.scale - self.offset  # (H, W, C)
        return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))  # (C, H, W)


def _channels(in_channels: int) -> list[v2.Transform]:
    # Convert whatever was decoded (L, RGB, RGBA, ...) to the model's channel count.
    if in_channels == 1:
        return [v2.Grayscale(num_output_channels=1)]
    return [v2.RGB()]


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def eval_transform(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    crop_ratio: float = 1.0,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """Resize the short side to ``image_size / crop_ratio`` (``interpolation``: ``"bilinear"`` or
    ``"bicubic"``, antialiased), center-crop ``image_size``, normalise."""
    if interpolation not in _MODES:
        raise ValueError(f"interpolation must be one of {', '.join(_MODES)}, got {interpolation!r}")
    resize = max(image_size, int(round(image_size / crop_ratio)))
    return v2.Compose(
        [v2.ToImage(), *_channels(in_channels), v2.Resize(resize, _MODES[interpolation], antialias=True),
         v2.CenterCrop(image_size), *_finish(mean, std)]
    )  # fmt: skip


def train_transform(
    augment: str,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    in_channels: int,
    *,
    interpolation: str = "bilinear",
    color_jitter: float | None = None,
    randaugment: str | None = None,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """The training pipeline for one of :data:`AUGMENTATIONS` (options in the module docstring)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    mode = _MODES[interpolation]
    head: list[Any] = [v2.ToImage(), *_channels(in_channels)]
    fit = [v2.Resize(image_size, mode, antialias=True), v2.CenterCrop(image_size)]
    if augment == "none":
        ops: list[Any] = list(fit)
    elif augment == "flip":
        ops = [*fit, v2.RandomHorizontalFlip()]
    elif augment == "shift":  # the same translations as ArrayTransform("shift")
        ops = [*fit, v2.RandomCrop(image_size, padding=max(1, image_size // 8))]
    elif augment.startswith("crop-flip"):
        ops = [*fit, v2.RandomCrop(image_size, padding=max(1, image_size // 8)), v2.RandomHorizontalFlip()]
    else:
        ops = [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=mode, antialias=True),
               v2.RandomHorizontalFlip()]  # fmt: skip
        if augment == "rrc-3aug" and in_channels != 1:
            three = [v2.RandomGrayscale(p=1.0), v2.RandomSolarize(threshold=128, p=1.0),
                     v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))]  # fmt: skip
            ops.append(v2.RandomChoice(three))
    if randaugment is not None:
        if augment == "none":
            raise ValueError("randaugment needs an augmentation recipe; data.augment is none")
        from timm.data.auto_augment import rand_augment_transform

        fill = tuple(round(255 * m) for m in mean) if len(mean) > 1 else round(255 * mean[0])
        hparams = {"translate_const": int(image_size * 0.45), "img_mean": fill}
        ops += [v2.ToPILImage(), _SeededPythonRandom(rand_augment_transform(parse_randaugment(randaugment), hparams)),
                v2.ToImage()]  # fmt: skip
    elif augment.endswith("randaug"):
        ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    jitter = color_jitter if color_jitter is not None else (0.3 if augment == "rrc-3aug" else 0.0)
    if jitter:
        ops.append(v2.ColorJitter(jitter, jitter, jitter))
    tail: list[Any] = []
    if random_erasing:
        from timm.data.random_erasing import RandomErasing

        tail.append(_SeededPythonRandom(RandomErasing(float(random_erasing), mode="pixel", device="cpu")))
    return v2.Compose([*head, *ops, *_finish(mean, std), *tail])
