"""Data as people keep it: a class-folder tree, a manifest (CSV / JSONL), a ``datasets`` table on disk.

Every source gives a list of items (paths, or records of a ``datasets`` table) with class-name
labels, and, where the data has one, its held-out part. What has no held-out part is split per
class by :func:`split_per_class`; the split is stored in the run as ``split.csv`` (paths relative
to ``data_dir``, a sha256 digest of the rows in its last line) and read back by ``vit5 eval RUN``
and ``--resume``, so the test images of a run never change under it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vit5._io import contained_path, contained_paths
from vit5.data.containment import check_parquet_rows, check_saved_dataset, recorded_image_path
from vit5.data.sources import (
    IMAGE_SUFFIXES,
    DatasetNotFoundError,
    FileSplit,
    list_image_folder,
    load_image_folder,
)

__all__ = [
    "OWN_DATASETS",
    "OwnData",
    "load_own_data",
    "read_split_file",
    "split_per_class",
    "write_split_file",
]

#: Datasets read from the user's own files (no fixed class list, a split made when missing).
OWN_DATASETS = ("imagefolder", "manifest", "hf")
HELD_OUT_NAMES = ("val", "valid", "validation", "test")
#: A manifest larger than this is refused before it is read (about 2 million rows of 128 bytes).
MAX_MANIFEST_BYTES = 256 << 20
SPLIT_FILE = "split.csv"


@dataclass
class OwnData:
    """Items and class-name labels of one source; ``held_out`` is ``None`` when the data has no split."""

    items: list[Any]
    labels: list[str]
    held_out: list[bool] | None
    root: Path
    classes: list[str] | None = None  # the class list when the source fixes one (train/ folders)

    def key(self, index: int) -> str:
        """The item's name in ``split.csv``: its path relative to the data root (``/`` separated)."""
        item = self.items[index]
        if isinstance(item, HFRecord):
            return str(item)
        try:
            return Path(item).relative_to(self.root).as_posix()
        except ValueError:
            return Path(item).as_posix()


class HFRecord:
    """Row ``index`` of the image column of a ``datasets`` table; ``read_bytes()`` gives the encoded image."""

    def __init__(self, table: Any, split: str, index: int, column: str, root: Path = Path()) -> None:
        self.table, self.split, self.index, self.column, self.root = table, split, index, column, root

    def read_bytes(self) -> bytes:
        value = self.table[self.index][self.column]
        if isinstance(value, dict) and value.get("bytes") is not None:
            return value["bytes"]
        if isinstance(value, dict) and value.get("path"):
            return recorded_image_path(self.root, str(value["path"]), f"{self}: image path").read_bytes()
        raise ValueError(f"{self}: no image bytes or path in column {self.column!r}")

    def __str__(self) -> str:
        return f"{self.split}/{self.index}"


# --------------------------------------------------------------------------------------------------
# Sources


def _image_folder(root: Path) -> OwnData:
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, val = load_image_folder(root)
        names = [train.classes[i] for i in np.concatenate([train.labels, val.labels])]
        held = [False] * len(train.paths) + [True] * len(val.paths)
        return OwnData(train.paths + val.paths, names, held, root, list(train.classes))
    flat = list_image_folder(root)
    return OwnData(flat.paths, [flat.classes[i] for i in flat.labels], None, root)


def _manifest(path: Path) -> OwnData:
    """``path,label[,split]`` rows of a CSV (with a header) or JSONL file; paths relative to the file."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--dataset manifest needs a .csv or .jsonl file, got {str(path)!r}")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than a manifest may hold ({MAX_MANIFEST_BYTES} bytes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
    rows: list[dict[str, Any]] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        try:
            missing = {"path", "label"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"{path}: the CSV header must name path,label[,split]; missing {sorted(missing)}"
                )
            rows = list(reader)
        except csv.Error as error:
            raise ValueError(f"{path}, line {reader.line_num}: not CSV ({error})") from None
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
            except RecursionError:
                raise ValueError(f"{path}, line {number}: nested too deeply") from None
            if not isinstance(row, dict) or "path" not in row or "label" not in row:
                raise ValueError(
                    f"{path}, line {number}: expected an object with path and label, got {line[:80]!r}"
                )
            rows.append(row)
    if not rows:
        raise DatasetNotFoundError(f"{path}: the manifest lists no images")
    root = path.parent
    first = 2 if suffix == ".csv" else 1
    labels, splits = [], []
    for number, row in enumerate(rows, first):
        if not row.get("path") or row.get("label") in (None, ""):
            raise ValueError(f"{path}, row {number}: empty path or label")
        if not isinstance(row["path"], str):
            raise ValueError(f"{path}, row {number}: path must be text, got {type(row['path']).__name__}")
        labels.append(str(row["label"]))
        splits.append(str(row.get("split") or "").strip().lower())
    items = contained_paths(root, [row["path"] for row in rows], lambda i: f"{path}, row {i + first}: path")
    known = {"", "train", *HELD_OUT_NAMES}
    bad = sorted(set(splits) - known)
    if bad:
        raise ValueError(f"{path}: split values must be train, val, validation or test (or empty), got {bad}")
    held_out = [split in HELD_OUT_NAMES for split in splits] if any(splits) else None
    return OwnData(items, labels, held_out, root)


@contextlib.contextmanager
def _datasets_bars_on_terminal_only() -> Iterator[None]:
    """``datasets``' own progress bars only when stderr is a terminal (else a failed command's
    stderr stays one line); its setting is restored afterwards."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet:
            enable_progress_bars()


def _hf_dataset(root: Path, image_column: str, label_column: str) -> OwnData:
    """A ``save_to_disk`` folder (Dataset or DatasetDict) or parquet files of a ``datasets`` dataset."""
    from vit5._extras import require

    datasets = require("datasets", "hf", "--dataset hf")
    parquet = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
    if (root / "dataset_info.json").is_file() or (root / "dataset_dict.json").is_file():
        check_saved_dataset(root)
        with _datasets_bars_on_terminal_only():
            loaded = datasets.load_from_disk(str(root))
    elif parquet and all(p.suffix == ".parquet" for p in parquet):
        for file in parquet if root.is_dir() else []:
            contained_path(root, file.relative_to(root), f"{root}: parquet file")
        check_parquet_rows(parquet)
        groups: dict[str, list[str]] = {}
        for file in parquet:  # train-00000-of-00001.parquet, validation-..., or data/test-...
            stem = file.name.split("-")[0].split(".")[0]
            groups.setdefault(stem if stem in ("train", *HELD_OUT_NAMES) else "train", []).append(str(file))
        with _datasets_bars_on_terminal_only():
            loaded = datasets.load_dataset("parquet", data_files=groups)
    else:
        raise DatasetNotFoundError(
            f"{root}: not a Hugging Face datasets folder (save_to_disk output or .parquet files)"
        )
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise ValueError(f"{root}: the DatasetDict has no 'train' split (it has {sorted(loaded)})")
        held = next((name for name in ("validation", "val", "test") if name in loaded), None)
        parts = [("train", loaded["train"])] + ([(held, loaded[held])] if held else [])
    else:
        parts, held = [("train", loaded)], None
    items: list[Any] = []
    labels: list[str] = []
    held_out: list[bool] = []
    for name, table in parts:
        for column in (image_column, label_column):
            if column not in table.column_names:
                raise ValueError(
                    f"{root} ({name}): no column {column!r} (columns: {table.column_names}); set "
                    "data.image_column / data.label_column"
                )
        feature = table.features[label_column]
        names = getattr(feature, "names", None)
        values = table[label_column]
        labels += [names[v] if names else str(v) for v in values]
        image_feature = table.features[image_column]
        if type(image_feature).__name__ == "Image":  # read the encoded bytes; vit5's reader decodes them
            table = table.cast_column(image_column, datasets.Image(decode=False))
        items += [HFRecord(table, name, i, image_column, root if root.is_dir() else root.parent)
                  for i in range(len(table))]  # fmt: skip
        held_out += [name != "train"] * len(table)
    return OwnData(items, labels, held_out if held else None, root)


def load_own_data(dataset: str, data_dir: str | os.PathLike | None, *, image_column: str = "image",
                  label_column: str = "label") -> OwnData:  # fmt: skip
    """The items of an ``imagefolder`` / ``manifest`` / ``hf`` source.

    Raises:
        DatasetNotFoundError: ``data_dir`` is missing or holds no images.
        ValueError: a malformed manifest or table.
    """
    if data_dir is None:
        what = {"imagefolder": "DIR (class folders, or train/ and val/ of class folders)",
                "manifest": "FILE.csv or FILE.jsonl (path,label[,split])",
                "hf": "PATH (a datasets save_to_disk folder or parquet files)"}[dataset]  # fmt: skip
        raise DatasetNotFoundError(f"--dataset {dataset} needs --data-dir {what}")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetNotFoundError(f"--data-dir {data_dir}: no such file or folder")
    if dataset == "imagefolder":
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"--data-dir {data_dir}: not a folder (expected class folders of images)"
            )
        data = _image_folder(root)
    elif dataset == "manifest":
        data = _manifest(root)
    else:
        data = _hf_dataset(root, image_column, label_column)
    if not data.items:
        raise DatasetNotFoundError(
            f"{data_dir} has no images in class folders ({', '.join(IMAGE_SUFFIXES)}): expected "
            f"{data_dir}/<class>/<image>, or {data_dir}/train/<class>/ and {data_dir}/val/<class>/"
        )
    return data


# --------------------------------------------------------------------------------------------------
# Splits


def split_per_class(labels: Sequence[str], val_fraction: float, seed: int) -> list[bool]:
    """Hold out ``round(val_fraction x n)`` images of each class (at least one of a class with two or
    more images), drawn with NumPy's ``RandomState(seed)``; ``True`` marks a held-out image."""
    if not (0 < val_fraction < 1):
        raise ValueError(f"data.val_fraction must be a number in (0, 1), got {val_fraction!r}")
    order = np.random.RandomState(seed).permutation(len(labels))
    by_class: dict[str, list[int]] = {}
    for index in order:
        by_class.setdefault(labels[index], []).append(int(index))
    held = [False] * len(labels)
    for members in by_class.values():
        count = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        for index in members[:count]:
            held[index] = True
    return held


def _digest(rows: list[tuple[str, str, str]]) -> str:
    hasher = hashlib.sha256()
    for row in rows:
        hasher.update(("\t".join(row) + "\n").encode("utf-8"))
    return hasher.hexdigest()


def write_split_file(path: str | os.PathLike, data: OwnData, held_out: Sequence[bool]) -> str:
    """Write ``split.csv`` (``path,label,split`` rows, then ``#sha256,<digest>``); returns the digest."""
    from vit5._io import atomic_write_text

    rows = [(data.key(i), data.labels[i], "test" if held_out[i] else "train") for i in range(len(data.items))]
    digest = _digest(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows(rows)
    writer.writerow(["#sha256", digest, ""])
    atomic_write_text(path, buffer.getvalue())
    return digest


def read_split_file(path: str | os.PathLike) -> dict[str, tuple[str, bool]]:
    """``split.csv`` as ``{path: (label, held_out)}``, its digest checked.

    Raises:
        ValueError: the file was edited or truncated (the digest does not match its rows).
    """
    size = os.stat(path).st_size
    if size > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"{path}: {size} bytes, more than a split file may hold ({MAX_MANIFEST_BYTES} bytes)"
        )
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
    except (csv.Error, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a vit5 split file ({str(error).splitlines()[0][:120]})") from None
    if (
        len(lines) < 2
        or lines[0] != ["path", "label", "split"]
        or lines[-1][:1] != ["#sha256"]
        or len(lines[-1]) < 2
    ):
        raise ValueError(f"{path}: not a vit5 split file (path,label,split rows and a #sha256 line)")
    rows = [tuple(line) for line in lines[1:-1]]
    if any(len(row) != 3 for row in rows) or _digest(rows) != lines[-1][1]:  # type: ignore[arg-type]
        raise ValueError(f"{path}: the split file was changed (its sha256 does not match its rows)")
    return {row[0]: (row[1], row[2] == "test") for row in rows}


def apply_split(data: OwnData, recorded: dict[str, tuple[str, bool]], where: str) -> list[bool]:
    """The held-out flags of ``data`` as ``split.csv`` recorded them (every recorded image must be there)."""
    keys = {data.key(i): i for i in range(len(data.items))}
    missing = [key for key in recorded if key not in keys]
    if missing:
        raise DatasetNotFoundError(
            f"{where} lists {len(missing)} images that the data no longer has, e.g. {missing[:3]}; pass "
            "--data-dir where the run's images are"
        )
    held = [False] * len(data.items)
    for key, (_, is_held) in recorded.items():
        held[keys[key]] = is_held
    keep = [keys[key] for key in recorded]
    data.items = [data.items[i] for i in keep]
    data.labels = [data.labels[i] for i in keep]
    return [held[i] for i in keep]


def to_splits(data: OwnData, held_out: Sequence[bool], classes: Sequence[str] | None = None
              ) -> tuple[FileSplit, FileSplit]:  # fmt: skip
    """Training and held-out :class:`FileSplit` with labels indexed by ``classes`` (default: the sorted
    class names of the training part).

    Raises:
        ValueError: the held-out part has classes that the training part (or ``classes``) lacks.
    """
    train_idx = [i for i, held in enumerate(held_out) if not held]
    test_idx = [i for i, held in enumerate(held_out) if held]
    if classes is None:
        classes = data.classes or sorted({data.labels[i] for i in train_idx})
    names = list(classes)
    lookup = {name: k for k, name in enumerate(names)}
    unknown = sorted({data.labels[i] for i in test_idx} - set(lookup))
    if unknown:
        raise ValueError(
            f"{data.root}: the held-out images have classes the training images lack: {unknown[:10]}"
        )

    def make(indices: list[int]) -> FileSplit:
        labels = np.asarray([lookup[data.labels[i]] for i in indices], dtype=np.int64)
        return FileSplit([data.items[i] for i in indices], labels, names)

    return make(train_idx), make(test_idx)


def count_own_data(dataset: str, data_dir: str | os.PathLike | None, *, val_fraction: float = 0.1,
                   split_seed: int = 0, image_column: str = "image", label_column: str = "label"
                   ) -> tuple[int, int, int]:  # fmt: skip
    """``(training images, held-out images, classes)`` of own data, split as a run would split it."""
    data = load_own_data(dataset, data_dir, image_column=image_column, label_column=label_column)
    held = data.held_out or split_per_class(data.labels, val_fraction, split_seed)
    train, test = to_splits(data, held)
    return len(train.paths), len(test.paths), len(train.classes)
