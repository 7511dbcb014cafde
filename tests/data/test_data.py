"""Dataset readers on tiny generated fixtures, transforms, splits and seeded augmentation."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vit5.data import (
    DATASETS,
    DatasetNotFoundError,
    build_datasets,
    dataset_defaults,
    eval_transform,
    read_image,
    sample_seed,
)
from vit5.data.sources import (
    DIGITS_TEST_SIZE,
    load_cifar,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_fashion_mnist(root: Path, compress: bool = True, train=12, test=6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(train + test, 28, 28)).astype(np.uint8)
    labels = rng.randint(0, 10, size=train + test).astype(np.uint8)
    suffix = ".gz" if compress else ""
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"train-images-idx3-ubyte{suffix}", images[:train], compress)
    write_idx(root / f"train-labels-idx1-ubyte{suffix}", labels[:train], compress)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", images[train:], compress)
    write_idx(root / f"t10k-labels-idx1-ubyte{suffix}", labels[train:], compress)
    return images, labels


def make_cifar(root: Path, classes: int) -> np.ndarray:
    rng = np.random.RandomState(2)
    root.mkdir(parents=True, exist_ok=True)

    def batch(n):
        return {"data": rng.randint(0, 256, size=(n, 3072)).astype(np.uint8),
                ("labels" if classes == 10 else "fine_labels"): rng.randint(0, classes, size=n).tolist()}  # fmt: skip

    if classes == 10:
        first = batch(4)
        for i in range(1, 6):
            (root / f"data_batch_{i}").write_bytes(pickle.dumps(first if i == 1 else batch(4)))
        (root / "test_batch").write_bytes(pickle.dumps(batch(3)))
        (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
        return first["data"]
    train = batch(8)
    (root / "train").write_bytes(pickle.dumps(train))
    (root / "test").write_bytes(pickle.dumps(batch(3)))
    return train["data"]


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=3, size=12) -> None:
    rng = np.random.RandomState(3)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.randint(0, 256, size=(size, size + 2, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_digits_split_is_fixed_and_complete():
    train, test = load_digits()
    assert len(test.labels) == DIGITS_TEST_SIZE and len(train.labels) + len(test.labels) == 1797
    assert (
        train.images.shape[1:] == (8, 8, 1) and train.images.dtype == np.uint8 and train.images.max() == 255
    )
    again_train, again_test = load_digits()
    assert np.array_equal(train.labels, again_train.labels) and np.array_equal(test.images, again_test.images)
    assert set(np.unique(test.labels)) == set(range(10))


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path, compress):
    images, labels = make_fashion_mnist(tmp_path / "fm", compress)
    train, test = load_fashion_mnist(tmp_path / "fm")
    assert np.array_equal(train.images[..., 0], images[:12]) and np.array_equal(test.labels, labels[12:])
    train_set, test_set, spec = build_datasets("fashion-mnist", tmp_path / "fm")
    x, y = train_set[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(labels[0])
    assert spec.num_classes == 10 and spec.class_names[9] == "Ankle boot" and len(test_set) == 6


def test_fashion_mnist_in_the_torchvision_layout(tmp_path):
    make_fashion_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    train, _ = load_fashion_mnist(tmp_path)
    assert len(train.labels) == 12
    dotted = tmp_path / "dotted"  # "train-images.idx3-ubyte", as some mirrors name the files
    images, _ = make_fashion_mnist(dotted, compress=True)
    for path in dotted.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    train, _ = load_fashion_mnist(dotted)
    assert np.array_equal(train.images[..., 0], images[:12])


def test_missing_dataset_error_lists_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("vit5.data.sources.FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(
        DatasetNotFoundError, match=r"(?s)Looked for .*empty.*nowhere.*apt-get install dataset-fashion-mnist"
    ):
        load_fashion_mnist(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="CIFAR-10 not found in .*--data-dir") as error:
        load_cifar(tmp_path, 10)
    assert "'cifar-10-batches-py'" in str(error.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz," in str(error.value)  # the real archive
    with pytest.raises(DatasetNotFoundError, match=r"CIFAR-100 not found \(no --data-dir given\)") as error:
        load_cifar(None, 100)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz," in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="train/ and val/"):
        load_image_folder(tmp_path)


def test_truncated_idx_file_is_reported(tmp_path):
    make_fashion_mnist(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated IDX"):
        read_idx(path)
    path.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_pickles(tmp_path, classes):
    folder = tmp_path / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    first = make_cifar(folder, classes)
    train, test, names = load_cifar(tmp_path, classes)  # the parent folder works too
    assert train.images.shape[1:] == (32, 32, 3) and len(test.labels) == 3
    assert np.array_equal(train.images[0], first[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert len(names) == classes
    train_set, _, spec = build_datasets(f"cifar{classes}", folder)
    assert train_set[0][0].shape == (3, 32, 32) and spec.num_classes == classes


def test_cifar_pickles_with_bytes_keys_and_bad_entries(tmp_path):
    folder = tmp_path / "cifar-100-python"
    first = make_cifar(folder, 100)
    for name in ("train", "test"):  # as re-pickled by Python 3 with bytes keys (the originals: str)
        entry = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps({key.encode(): value for key, value in entry.items()}))
    (folder / "meta").write_bytes(
        pickle.dumps({b"fine_label_names": [b"apple", *(b"c%d" % i for i in range(99))]})
    )
    train, _, names = load_cifar(folder, 100)
    assert np.array_equal(train.images[0], first[0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert names[0] == "apple" and len(names) == 100
    (folder / "test").write_bytes(pickle.dumps({"data": first[:2], "labels": [1, 2]}))
    with pytest.raises(
        ValueError,
        match=r"test: not a CIFAR batch file: no 'fine_labels' entry \(it has \['data', 'labels'\]\)",
    ):
        load_cifar(folder, 100)
    (folder / "test").write_bytes(pickle.dumps({"data": first[:2], "fine_labels": [1, 2, 3]}))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        load_cifar(folder, 100)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    make_cifar(folder, 100)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "train").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar(folder, 100)
    assert not marker.exists()


def test_image_folder(tmp_path):
    make_image_folder(tmp_path)
    train_set, val_set, spec = build_datasets("imagefolder", tmp_path, image_size=8)
    assert (
        spec.class_names == ["cat", "dog"]
        and spec.num_classes == 2
        and len(train_set) == 6
        and len(val_set) == 6
    )
    x, y = val_set[5]
    assert x.shape == (3, 8, 8) and y == 1
    (tmp_path / "val" / "empty").mkdir()  # an empty folder in val/ is not a class
    assert len(build_datasets("imagefolder", tmp_path, image_size=8)[1]) == 6
    shutil.rmtree(tmp_path / "val" / "cat")  # val/ may lack a class: labels still follow train/
    _, val_set, _ = build_datasets("imagefolder", tmp_path, image_size=8)
    assert len(val_set) == 3 and all(val_set[i][1] == 1 for i in range(3))
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "dogs")  # ... but not have classes train/ lacks
    with pytest.raises(ValueError, match=r"class folders that .*train lacks: \['dogs'\]"):
        build_datasets("imagefolder", tmp_path, image_size=8)


def test_read_image_decodes_every_mode_to_pixel_values(tmp_path):
    rng = np.random.RandomState(0)
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30], [250, 250, 250]], dtype=np.uint8)
    rgb = colours[rng.randint(0, 4, size=(9, 11))]
    to_tensor = eval_transform(9, [0.0] * 3, [1.0] * 3, 3)
    expected = to_tensor(Image.fromarray(rgb))
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=4).save(tmp_path / "palette.png")
    alpha = rng.randint(0, 256, size=(9, 11, 1)).astype(np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(tmp_path / "alpha.png")
    for name in ("palette.png", "alpha.png"):  # colours, not palette indices; alpha dropped
        image = read_image(tmp_path / name)
        assert image.mode == "RGB" and torch.equal(to_tensor(image), expected), name
    grey16 = rng.randint(0, 65536, size=(9, 11)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    Image.fromarray(grey16.astype(np.int32), "I").save(tmp_path / "grey32.tif")
    to_grey = eval_transform(9, [0.0], [1.0], 1)
    for name in ("grey16.png", "grey32.tif"):  # the full 16-bit range (not clipped at 255), as 8 bits
        image = read_image(tmp_path / name)
        values = to_grey(image)[0].numpy()
        assert image.mode == "L" and abs(values.max() - grey16[:, 1:10].max() / 65535.0) <= 0.5 / 255
        np.testing.assert_allclose(values, grey16[:, 1:10] / 65535.0, atol=0.5 / 255 + 1e-6)  # centre crop
    Image.fromarray(rng.rand(9, 11).astype(np.float32), "F").save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="floating-point images are not supported"):
        read_image(tmp_path / "float.tif")


def test_undecodable_image_stops_or_is_skipped(tmp_path, caplog):
    make_image_folder(tmp_path)
    (tmp_path / "train" / "cat" / "0.jpg").write_bytes(b"not an image")
    train_set, _, _ = build_datasets("imagefolder", tmp_path, image_size=8)
    with pytest.raises(ValueError, match=r"cannot decode image .*0\.jpg"):
        train_set[0]
    skipping, _, _ = build_datasets("imagefolder", tmp_path, image_size=8, skip_bad_images=True)
    with caplog.at_level("WARNING"):
        x, y = skipping[0]
    assert x.shape == (3, 8, 8) and "using the next image" in caplog.text


@pytest.mark.parametrize("name", ["digits"])
def test_augmentation_is_seeded_per_sample_and_epoch(name):
    train_set, _, _ = build_datasets(name, seed=7)
    a = train_set[3][0]
    rng_state = torch.get_rng_state()
    b = train_set[3][0]
    assert torch.equal(a, b) and torch.equal(rng_state, torch.get_rng_state())  # global RNG untouched
    train_set.set_epoch(1)
    assert not torch.equal(a, train_set[3][0])
    other, _, _ = build_datasets(name, seed=8)
    assert not torch.equal(a, other[3][0])
    assert sample_seed(0, 0, 1) != sample_seed(0, 1, 0)


def test_every_dataset_has_defaults():
    for name in DATASETS:
        defaults = dataset_defaults(name)
        assert {"image_size", "in_channels", "mean", "std", "augment"} <= set(defaults)
    with pytest.raises(ValueError, match="dataset must be one of"):
        dataset_defaults("mnist")


def test_subsets_are_fixed(tmp_path):
    a, b, _ = build_datasets("digits", max_train_images=100, max_test_images=50)
    c, _, _ = build_datasets("digits", max_train_images=100)
    assert len(a) == 100 and len(b) == 50 and np.array_equal(a.labels, c.labels)
    with pytest.raises(ValueError, match="positive int"):
        build_datasets("digits", max_train_images=0)


def test_array_transform_crops_flips_and_normalises():
    import random

    from vit5.data.transforms import ArrayTransform

    image = np.arange(36, dtype=np.uint8).reshape(6, 6, 1)
    plain = ArrayTransform("none", (0.5,), (0.25,), padding=2)(image, random.Random(0))
    torch.testing.assert_close(plain[0], (torch.from_numpy(image[..., 0]).float() / 255 - 0.5) / 0.25)
    seen_flip = seen_shift = False
    for seed in range(40):
        out = ArrayTransform("crop-flip", (0.0,), (1.0,), padding=2)(image, random.Random(seed))[0] * 255
        assert out.shape == (6, 6)
        padded = np.pad(image[..., 0], 2).astype(np.float32)
        windows = [padded[i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        matches = [np.allclose(out.numpy(), w, atol=1e-3) for w in windows]
        flipped = [np.allclose(out.numpy(), w[:, ::-1], atol=1e-3) for w in windows]
        assert any(matches) or any(flipped)
        seen_flip |= any(flipped) and not any(matches)
        seen_shift |= not matches[12] and not flipped[12]
        shift = (
            ArrayTransform("shift", (0.0,), (1.0,), padding=2)(image, random.Random(seed))[0].numpy() * 255
        )
        assert any(np.allclose(shift, w, atol=1e-3) for w in windows)  # never flipped
    assert seen_flip and seen_shift


def test_flip_augmentation_only_flips_and_shift_only_translates():
    import random

    from vit5.data import train_transform
    from vit5.data.transforms import ArrayTransform

    image = np.arange(36, dtype=np.uint8).reshape(6, 6, 1)
    outcomes = set()
    for seed in range(30):
        out = ArrayTransform("flip", (0.0,), (1.0,), padding=2)(image, random.Random(seed))[0].numpy() * 255
        if np.allclose(out, image[..., 0], atol=1e-3):
            outcomes.add("same")
        else:
            np.testing.assert_allclose(out, image[:, ::-1, 0], atol=1e-3)
            outcomes.add("flipped")
    assert outcomes == {"same", "flipped"}
    # The torchvision pipelines (used for decoded files) do the same geometric operations.
    pil_image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    reference = np.arange(64, dtype=np.float32).reshape(8, 8)
    padded = np.pad(reference, 1)
    windows = [padded[i : i + 8, j : j + 8] for i in range(3) for j in range(3)]
    torch.manual_seed(0)
    flip, shift = (train_transform(a, 8, (0.0,), (1.0,), 1) for a in ("flip", "shift"))
    flips = [flip(pil_image)[0].numpy() * 255 for _ in range(20)]
    assert all(
        np.allclose(f, reference, atol=1e-3) or np.allclose(f, reference[:, ::-1], atol=1e-3) for f in flips
    )
    assert any(np.allclose(f, reference[:, ::-1], atol=1e-3) for f in flips)
    shifts = [shift(pil_image)[0].numpy() * 255 for _ in range(20)]
    assert all(any(np.allclose(s, w, atol=1e-3) for w in windows) for s in shifts)  # no rotation or scaling
    assert any(not np.allclose(s, reference, atol=1e-3) for s in shifts)


def test_array_and_torchvision_eval_paths_agree():
    from vit5.data import eval_transform

    train_set, test_set, spec = build_datasets("digits")
    x_array = test_set[0][0]
    image = Image.fromarray(test_set.source.images[0][..., 0])
    x_pil = eval_transform(spec.image_size, spec.mean, spec.std, 1)(image)
    assert x_pil.shape == x_array.shape
    torch.testing.assert_close(x_pil, x_array, atol=1e-5, rtol=0)
