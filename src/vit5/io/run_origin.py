"""Whose run is this? The rule for paths a run records (its ``data.data_dir``).

A run directory records where its data was (``config.yaml``: ``data.data_dir``), so that
``vit5 eval RUN`` and ``vit5 train --resume RUN`` work without ``--data-dir``. A run received from
someone else must not choose what vit5 reads (``data_dir: /`` or ``../../home/you``), so a recorded
``data_dir`` is used as it is only for the user's own run:

* Whenever vit5 writes a run's ``config.yaml`` it also writes ``RUN/origin.json``: the run
  directory's resolved absolute path, its device and inode numbers, and the user id.
* A recorded ``data_dir`` is used when ``origin.json`` matches the run directory as it is now (same
  path, same device and inode, same user). A copied, unpacked or downloaded run gets a new inode
  that its sender does not know when writing the file (and the path and user id must match too),
  so the file's author cannot forge the marker; a moved or copied own run is treated as received.
* Otherwise the recorded ``data_dir`` is used only when it lies inside a documented cache
  (``$HF_HOME``, ``$HF_DATASETS_CACHE``, ``$TORCH_HOME``); anything else is a one-line error asking
  for ``--data-dir DIR``, which names the data explicitly (and, on ``--resume``, makes the run the
  user's own from then on).
* The same holds for a local ``train.finetune`` file of a run resumed before its first checkpoint
  (:func:`check_recorded_finetune`); run files inside the run (``split.csv``, checkpoints) are kept
  inside it by :func:`vit5._io.contained_path`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vit5._io import atomic_write_text, in_documented_cache

__all__ = [
    "ORIGIN",
    "check_recorded_data_dir",
    "check_recorded_finetune",
    "is_own_run",
    "record_origin",
    "run_directory_of",
]

ORIGIN = "origin.json"
_MAX_ORIGIN_BYTES = 4096


def _identity(run_dir: Path) -> dict[str, Any]:
    status = run_dir.stat()
    return {"run_dir": str(run_dir.resolve()), "device": status.st_dev, "inode": status.st_ino,
            "uid": os.getuid() if hasattr(os, "getuid") else None}  # fmt: skip


def record_origin(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN/origin.json`` (this machine, this user, this directory); called with ``config.yaml``."""
    run_dir = Path(run_dir)
    return atomic_write_text(run_dir / ORIGIN, json.dumps(_identity(run_dir)))


def is_own_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``RUN/origin.json`` says this run was written here, by this user, in this very directory."""
    run_dir = Path(run_dir)
    marker = run_dir / ORIGIN
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > _MAX_ORIGIN_BYTES:
            return False
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        return isinstance(recorded, dict) and recorded == _identity(run_dir)
    except (OSError, ValueError, RecursionError):
        return False


def run_directory_of(source: str | os.PathLike) -> Path | None:
    """The run directory a source belongs to: ``RUN`` itself or ``RUN/checkpoints/NAME`` (else ``None``)."""
    path = Path(source)
    if (path / "config.yaml").is_file():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent
    return None


def check_recorded_data_dir(data_dir: Any, run_dir: str | os.PathLike | None, where: str) -> Any:
    """``data_dir`` recorded in a run (or a checkpoint's metadata, ``where``), if the rule above allows it.

    Args:
        data_dir: the recorded value (``None``: nothing recorded, returned as is).
        run_dir: the run directory the record belongs to (``None``: a lone checkpoint file).
        where: the file that recorded it, for the message.

    Raises:
        ValueError: the run is not the user's own (or has no marker) and ``data_dir`` is not inside
            a documented cache; the message asks for ``--data-dir``.
    """
    if data_dir in (None, ""):
        return data_dir
    if run_dir is not None and is_own_run(run_dir):
        return data_dir
    if isinstance(data_dir, (str, os.PathLike)) and in_documented_cache(data_dir):
        return data_dir
    raise ValueError(
        f"{where} records data.data_dir {data_dir!r}, but the run was not written here (it was copied, "
        "moved or received): pass --data-dir DIR to name the data"
    )


def check_recorded_finetune(finetune: Any, run_dir: str | os.PathLike, where: str) -> Any:
    """``train.finetune`` of a run resumed before its first checkpoint, if the rule above allows it.

    A published name or ``hf-hub:`` id resolves against ``HF_ENDPOINT`` and a URL needs
    ``--trust-config`` anyway (:func:`vit5.train.finetune.load_pretrained`); a local path is used
    only for the user's own run (``origin.json`` matches), or when it lies in a documented cache.

    Raises:
        ValueError: a local path recorded by a run that was not written here.
    """
    from vit5.io.download import is_url
    from vit5.io.sources import published_name

    if finetune in (None, "") or not isinstance(finetune, (str, os.PathLike)):
        return finetune
    text = os.fspath(finetune)
    if text.startswith("hf-hub:") or is_url(text) or published_name(text) or is_own_run(run_dir):
        return finetune
    if in_documented_cache(text):
        return finetune
    raise ValueError(
        f"{where} records train.finetune {text!r}, a local file, but the run was not written here (it was "
        "copied, moved or received): start a new run with --finetune FILE instead of --resume"
    )
