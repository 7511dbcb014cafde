"""Own data: flat class folders, manifests, datasets tables on disk, the per-class split and split.csv."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vit5.data import build_datasets, read_image
from vit5.data.owndata import (
    count_own_data,
    load_own_data,
    read_split_file,
    split_per_class,
)
from vit5.data.sources import DatasetNotFoundError

CLASSES = ("cat", "dog", "eel")


def make_flat_folder(root, per_class=10, size=12):
    rng = np.random.RandomState(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.rand(size, size, 3) * 60 + 90 * k).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_flat_folder_is_split_per_class_and_recorded(tmp_path):
    root = make_flat_folder(tmp_path / "pets")
    split_file = tmp_path / "run" / "split.csv"
    train, test, spec = build_datasets(
        "imagefolder", root, image_size=8, split_file=split_file, write_split=True
    )
    assert spec.class_names == list(CLASSES) and spec.num_classes == 3
    assert len(train) == 27 and len(test) == 3  # one of each class's ten images held out
    assert sorted(int(label) for label in test.labels) == [0, 1, 2]
    recorded = read_split_file(split_file)
    assert len(recorded) == 30 and recorded["cat/0.png"][0] == "cat"
    assert sum(held for _, held in recorded.values()) == 3
    # the split is reused, not redrawn: another seed gives the same test images
    _, again, _ = build_datasets("imagefolder", root, image_size=8, split_file=split_file, split_seed=5)
    assert [str(p) for p in again.source.paths] == [str(p) for p in test.source.paths]
    # an edited split file is refused
    text = split_file.read_text().replace("cat/0.png,cat,train", "cat/0.png,cat,test")
    if "cat/0.png,cat,test" in text:
        split_file.write_text(text)
        with pytest.raises(ValueError, match="split file was changed"):
            build_datasets("imagefolder", root, image_size=8, split_file=split_file)


def test_split_per_class_depends_on_seed_and_fraction():
    labels = ["a"] * 20 + ["b"] * 10 + ["c"] * 1
    held = split_per_class(labels, 0.2, 0)
    assert sum(held[:20]) == 4 and sum(held[20:30]) == 2 and held[30] is False
    assert split_per_class(labels, 0.2, 0) == held and split_per_class(labels, 0.2, 1) != held
    with pytest.raises(ValueError, match="val_fraction must be a number in"):
        split_per_class(labels, 1.5, 0)


def test_manifest_csv_and_jsonl(tmp_path):
    make_flat_folder(tmp_path / "images", per_class=4)
    rows = [
        (f"images/{name}/{i}.png", name, "val" if i == 0 else "train") for name in CLASSES for i in range(4)
    ]
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path,label,split\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    train, test, spec = build_datasets("manifest", csv_file, image_size=8)
    assert (len(train), len(test), spec.class_names) == (9, 3, list(CLASSES))
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"path": p, "label": lab}) + "\n" for p, lab, _ in rows))
    assert count_own_data("manifest", jsonl, val_fraction=0.25) == (9, 3, 3)  # no split column: per class
    x, y = train[0]
    assert x.shape == (3, 8, 8) and 0 <= y < 3
    (tmp_path / "bad.csv").write_text("file,class\na.png,cat\n")
    with pytest.raises(
        ValueError, match=r"header must name path,label\[,split\]; missing \['label', 'path'\]"
    ):
        load_own_data("manifest", tmp_path / "bad.csv")
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(ValueError, match="needs a .csv or .jsonl file"):
        load_own_data("manifest", tmp_path / "bad.txt")
    with pytest.raises(DatasetNotFoundError, match="needs --data-dir"):
        load_own_data("hf", None)


def test_hf_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.RandomState(0)

    def table(count):
        images = [Image.fromarray((rng.rand(10, 10, 3) * 255).astype(np.uint8)) for _ in range(count)]
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["ant", "bee"])}
        )
        return datasets.Dataset.from_dict(
            {"image": images, "label": [i % 2 for i in range(count)]}, features=features
        )

    datasets.DatasetDict({"train": table(8), "test": table(4)}).save_to_disk(str(tmp_path / "dd"))
    train, test, spec = build_datasets("hf", tmp_path / "dd", image_size=8)
    assert (len(train), len(test), spec.class_names) == (8, 4, ["ant", "bee"])
    x, y = test[1]
    assert x.shape == (3, 8, 8) and y == 1
    table(10).save_to_disk(str(tmp_path / "single"))  # no held-out part: split per class
    assert count_own_data("hf", tmp_path / "single", val_fraction=0.2) == (8, 2, 2)
    with pytest.raises(ValueError, match="no column 'img'"):
        load_own_data("hf", tmp_path / "single", image_column="img")


def _png_header_only(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


def test_image_claiming_too_many_pixels_is_a_one_line_error(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(20000, 20000))
    assert len(bomb.read_bytes()) < 100
    with pytest.raises(ValueError, match="bomb.png: refused to decode") as error:
        read_image(bomb)
    assert "\n" not in str(error.value)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setenv("VIT5_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(ValueError, match=r"claims 30x20 = 600 pixels, more than the limit of 500"):
        read_image(tmp_path / "small.png")
    monkeypatch.delenv("VIT5_MAX_IMAGE_PIXELS")
    assert read_image((tmp_path / "small.png").read_bytes()).size == (30, 20)  # encoded bytes read the same
