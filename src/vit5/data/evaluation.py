"""Evaluation sets: a named dataset's test split or a plain class-folder tree, preprocessed as a
checkpoint's ``pretrained_cfg`` says (size, crop ratio, interpolation, mean/std)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vit5.data.datasets import ImageDataset
from vit5.data.sources import IMAGE_SUFFIXES, DatasetNotFoundError, list_image_folder
from vit5.data.transforms import eval_transform

__all__ = ["evaluation_set", "folder_split", "own_data_split"]


def folder_split(data_dir: str | os.PathLike, class_names: Sequence[str] | None = None) -> Any:
    """The images of a class-folder tree: ``DIR/<class>/*`` (an ImageNet-val copy), or ``DIR/val/<class>/*``.

    Labels follow ``class_names`` when given (the model's classes; folders it lacks are an error),
    else the sorted folder names (ImageNet's ``n01440764 ...`` order is the standard class index).

    Raises:
        DatasetNotFoundError: no such folder or no images in class folders.
        ValueError: a class folder with images is not one of ``class_names``.
    """
    root = Path(data_dir)
    if (root / "val").is_dir():
        root = root / "val"
    if not root.is_dir():
        raise DatasetNotFoundError(f"{data_dir}: no such folder (expected class folders of images)")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and _has_images(p))
    if class_names:
        unknown = sorted(set(folders) - set(class_names))
        if unknown:
            raise ValueError(f"{root} has class folders the model does not know: {unknown[:10]}")
    split = list_image_folder(root, list(class_names) if class_names else folders)
    if not split.paths:
        raise DatasetNotFoundError(
            f"{root} has no images in class folders ({', '.join(IMAGE_SUFFIXES)}): expected {root}/<class>/<image>"
        )
    return split


def own_data_split(dataset: str, data_dir: str | os.PathLike, class_names: Sequence[str] | None, *,
                   split_file: str | os.PathLike | None = None, image_column: str = "image",
                   label_column: str = "label") -> Any:  # fmt: skip
    """The images ``vit5 eval`` scores from own data (``imagefolder``, ``manifest``, ``hf``).

    With ``split_file`` (a run's ``split.csv``, evaluating the run on its own data): the run's
    held-out images. Without: every image of ``data_dir`` (a class-folder tree's ``val/`` when it has
    one), labelled by class name in ``class_names`` order.

    Raises:
        ValueError: images of a class the model does not know.
    """
    from vit5.data.owndata import apply_split, load_own_data, read_split_file, to_splits

    if dataset == "imagefolder" and split_file is None:
        return folder_split(data_dir, class_names)
    data = load_own_data(dataset, data_dir, image_column=image_column, label_column=label_column)
    if split_file is not None:
        held = apply_split(data, read_split_file(split_file), str(split_file))
        keep = [i for i, flag in enumerate(held) if flag]
        data.items, data.labels = [data.items[i] for i in keep], [data.labels[i] for i in keep]
    names = list(class_names) if class_names else sorted(set(data.labels))
    unknown = sorted(set(data.labels) - set(names))
    if unknown:
        raise ValueError(f"{data_dir} has classes the model does not know: {unknown[:10]}")
    return to_splits(data, [True] * len(data.items), names)[1]


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def evaluation_set(source: Any, pretrained_cfg: Mapping[str, Any]) -> ImageDataset:
    """``source`` (an ``ArraySplit`` or ``FileSplit``) preprocessed as ``pretrained_cfg`` says."""
    channels, size, _ = pretrained_cfg["input_size"]
    transform = eval_transform(size, pretrained_cfg["mean"], pretrained_cfg["std"], channels,
                               pretrained_cfg["crop_pct"], pretrained_cfg["interpolation"])  # fmt: skip
    return ImageDataset(source, transform)
