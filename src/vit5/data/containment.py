"""Paths that files of a dataset record stay inside the folder the user named.

A received dataset folder is data: the split names of a ``datasets`` ``dataset_dict.json``, the
arrow file names of its ``state.json``, the image paths of its rows are joined to the folder
only when they lead inside it (no absolute path, no ``..``, no symlink out; image paths may also
point into a documented cache, ``$HF_HOME``). Manifest rows use :func:`vit5._io.contained_path`
directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vit5._io import contained_path, in_documented_cache

__all__ = ["check_parquet_rows", "check_saved_dataset", "recorded_image_path"]

_MAX_RECORD_BYTES = 16 << 20
#: Rows a parquet file may declare: a million, plus one per 16 bytes of file (an image row holds at
#: least its encoded image or its path). Dictionary and run-length encoding let a 25 KB file declare
#: billions of rows, each of which becomes a Python object.
_FREE_ROWS, _BYTES_PER_ROW = 1_000_000, 16


def recorded_image_path(root: Path, text: str, what: str) -> Path:
    """An image path a ``datasets`` table records: inside its folder, or absolute inside a documented
    cache (``$HF_HOME``, where ``datasets`` keeps extracted files); anything else a ``ValueError``."""
    if Path(text).is_absolute() and in_documented_cache(text):
        return Path(text)
    return contained_path(root, text, what)


def _small_json(path: Path) -> Any:
    """A ``save_to_disk`` record (``dataset_dict.json``, ``state.json``): bounded, one-line errors."""
    if path.stat().st_size > _MAX_RECORD_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than a datasets record needs")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{path}: not a readable datasets record ({type(error).__name__})") from None


def check_saved_dataset(root: Path) -> None:
    """The files a ``save_to_disk`` folder names (its splits, their arrow files) lie inside it.

    ``datasets`` joins the split names of ``dataset_dict.json`` and the file names of each
    ``state.json`` to the folder; a received folder naming ``../other`` or an absolute path would
    make it read elsewhere. Refused with a ``ValueError`` naming the record and the entry.
    """
    splits = [Path()]
    if (root / "dataset_dict.json").is_file():
        names = _small_json(root / "dataset_dict.json")
        names = names.get("splits") if isinstance(names, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{root / 'dataset_dict.json'}: 'splits' must be a list of split names")
        splits = [contained_path(root, name, f"{root / 'dataset_dict.json'}: split") for name in names]
    for split in splits:
        folder = root / split
        if (folder / "state.json").is_file():
            state = _small_json(folder / "state.json")
            files = state.get("_data_files") if isinstance(state, dict) else None
            for entry in files if isinstance(files, list) else []:
                name = entry.get("filename") if isinstance(entry, dict) else None
                if not isinstance(name, str):
                    raise ValueError(f"{folder / 'state.json'}: a data file without a file name")
                contained_path(folder, name, f"{folder / 'state.json'}: data file")


def check_parquet_rows(files: list[Path]) -> None:
    """Refuse parquet files declaring more rows than their size justifies, from their footers alone.

    Raises:
        ValueError: one line naming the file, its rows and its size.
    """
    import pyarrow.parquet as pq

    for file in files:
        size = file.stat().st_size
        try:
            rows = pq.ParquetFile(file).metadata.num_rows
        except Exception as error:  # pyarrow's ArrowInvalid and OSError: not a parquet file
            raise ValueError(
                f"{file}: not a readable parquet file ({str(error).splitlines()[0][:160]})"
            ) from None
        if rows > _FREE_ROWS + size // _BYTES_PER_ROW:
            raise ValueError(
                f"{file}: declares {rows:,} rows in {size:,} bytes, more than image rows can be (a crafted file)"
            )
