"""Data options of the official recipes: channel replication, interpolation, timm RandAugment
strings, random erasing, colour jitter, repeated-augmentation copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit5.data import build_datasets, parse_randaugment
from vit5.data.transforms import train_transform


def test_grayscale_data_is_replicated_for_an_rgb_model():
    train, test, spec = build_datasets(
        "digits", image_size=16, augment="none", in_channels=3, max_train_images=8
    )
    gray_train, _, gray = build_datasets("digits", image_size=16, augment="none", max_train_images=8)
    assert spec.in_channels == 3 and spec.mean == gray.mean * 3 and spec.std == gray.std * 3
    image, label = train[0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[2]) and torch.equal(image[0], image[1])
    assert torch.allclose(image[0], gray_train[0][0][0]) and label == gray_train[0][1]
    assert test[0][0].shape == (3, 16, 16)
    # the torchvision path replicates too
    rgb_aug, _, _ = build_datasets("digits", image_size=16, augment="shift", in_channels=3, random_erasing=0.0,
                                   color_jitter=0.2, max_train_images=8)  # fmt: skip
    image = rgb_aug[1][0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[1])
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        build_datasets("digits", in_channels=2)


def test_bicubic_interpolation_changes_the_resized_images():
    _, bilinear, _ = build_datasets("digits", image_size=24, augment="none", max_test_images=4)
    _, bicubic, _ = build_datasets(
        "digits", image_size=24, augment="none", max_test_images=4, interpolation="bicubic"
    )
    assert bilinear[0][0].shape == bicubic[0][0].shape == (1, 24, 24)
    assert not torch.equal(bilinear[0][0], bicubic[0][0])


def test_timm_randaugment_strings_are_checked_and_reproducible():
    assert parse_randaugment("rand-m9-mstd0.5-inc1") == "rand-m9-mstd0.5-inc1"
    for bad in ("m9-mstd0.5", "rand-x9", "rand-m9-foo", 3):
        with pytest.raises(ValueError, match="rand-m9-mstd0.5-inc1"):
            parse_randaugment(bad)
    train, _, _ = build_datasets("digits", image_size=16, augment="shift", randaugment="rand-m9-mstd0.5-inc1",
                                 in_channels=3, max_train_images=16)  # fmt: skip
    assert "RandAugment" in repr(train.transform)
    first = torch.stack([train[i][0] for i in range(16)])
    again = torch.stack([train[i][0] for i in range(16)])
    assert torch.equal(first, again)  # per-sample seeded, Python/NumPy state restored
    train.set_epoch(1)
    assert not torch.equal(first, torch.stack([train[i][0] for i in range(16)]))
    state = np.random.get_state()[1].copy()
    train[3]
    assert np.array_equal(state, np.random.get_state()[1])


def test_random_erasing_and_repeated_copies_get_their_own_randomness():
    train, _, _ = build_datasets(
        "digits", image_size=16, augment="shift", random_erasing=1.0, max_train_images=8
    )
    plain, _, _ = build_datasets("digits", image_size=16, augment="shift", max_train_images=8)
    assert sum(not torch.equal(train[i][0], plain[i][0]) for i in range(8)) >= 6  # erased
    n = len(train)
    copies = [train[3 + c * n] for c in range(3)]
    assert all(label == copies[0][1] for _, label in copies)
    assert not torch.equal(copies[0][0], copies[1][0]) and not torch.equal(copies[1][0], copies[2][0])
    assert torch.equal(train[3 + n][0], copies[1][0])


def test_three_augment_recipe_has_jitter_03_and_randaugment_needs_a_recipe():
    pipeline = repr(train_transform("rrc-3aug", 32, (0.5,) * 3, (0.5,) * 3, 3, interpolation="bicubic"))
    assert "ColorJitter(brightness=(0.7, 1.3)" in pipeline and "RandomSolarize" in pipeline
    assert "bicubic" in pipeline.lower()
    assert "ColorJitter" not in repr(
        train_transform("rrc-3aug", 32, (0.5,) * 3, (0.5,) * 3, 3, color_jitter=0.0)
    )
    with pytest.raises(ValueError, match="randaugment needs"):
        train_transform("none", 32, (0.5,), (0.5,), 1, randaugment="rand-m9")
