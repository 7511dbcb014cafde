"""Image transforms (torchvision v2): evaluation preprocessing and the training augmentations.

Augmentation recipes (``augment=``):

* ``"none"`` — only the evaluation preprocessing;
* ``"shift"`` — small random translations/rotations/scaling (digits: no flips, a flipped 2 is no 2);
* ``"crop-flip"`` — random crop with ``image_size // 8`` zero padding + horizontal flip (CIFAR,
  Fashion-MNIST);
* ``"crop-flip-randaug"`` — the same plus RandAugment (2 ops, magnitude 9);
* ``"rrc-3aug"`` — random-resized-crop + flip + "3-Augment" (one of grayscale / solarize / blur per
  image) + color jitter 0.3: the ViT-5 / DeiT-III ImageNet recipe;
* ``"rrc-randaug"`` — random-resized-crop + flip + RandAugment.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

AUGMENTATIONS = ("none", "shift", "crop-flip", "crop-flip-randaug", "rrc-3aug", "rrc-randaug")


def _channels(in_channels: int) -> list[v2.Transform]:
    # Convert whatever was decoded (L, RGB, RGBA, ...) to the model's channel count.
    if in_channels == 1:
        return [v2.Grayscale(num_output_channels=1)]
    return [v2.RGB()]


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], in_channels: int, crop_ratio: float = 1.0
) -> v2.Compose:
    """Resize the short side to ``image_size / crop_ratio``, center-crop ``image_size``, normalise."""
    resize = max(image_size, int(round(image_size / crop_ratio)))
    return v2.Compose(
        [v2.ToImage(), *_channels(in_channels), v2.Resize(resize, antialias=True), v2.CenterCrop(image_size),
         *_finish(mean, std)]
    )  # fmt: skip


def train_transform(
    augment: str, image_size: int, mean: Sequence[float], std: Sequence[float], in_channels: int
) -> v2.Compose:
    """The training pipeline for one of :data:`AUGMENTATIONS`."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
    head: list[v2.Transform] = [v2.ToImage(), *_channels(in_channels)]
    if augment == "none":
        return eval_transform(image_size, mean, std, in_channels)
    if augment == "shift":
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
               v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))]  # fmt: skip
    elif augment.startswith("crop-flip"):
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
               v2.RandomCrop(image_size, padding=max(1, image_size // 8)), v2.RandomHorizontalFlip()]  # fmt: skip
        if augment.endswith("randaug"):
            ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    else:
        ops = [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        if augment == "rrc-3aug":
            ops += [
                v2.RandomChoice(
                    [
                        v2.RandomGrayscale(p=1.0),
                        v2.RandomSolarize(threshold=128, p=1.0),
                        v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0)),
                    ]
                ),  # fmt: skip
                v2.ColorJitter(0.3, 0.3, 0.3),
            ]
            if in_channels == 1:
                ops = [op for op in ops if not isinstance(op, v2.RandomChoice)]
        else:
            ops.append(v2.RandAugment(num_ops=2, magnitude=9))
    return v2.Compose([*head, *ops, *_finish(mean, std)])
