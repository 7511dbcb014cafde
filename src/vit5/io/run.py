"""The vit5 run-checkpoint layout, written and read here only.

A run directory keeps its checkpoints in ``RUN/checkpoints/{last,prev,best}``; each checkpoint is a
directory::

    model.safetensors   weights (safetensors), with the run config, data spec and a SHA-256 of
                        the tensors in its metadata, so the file alone rebuilds the model
    ema.safetensors     EMA weights (when EMA is on), same format
    state.pt            optimizer / scheduler / step / RNG state (tensors and plain values only,
                        read with ``torch.load(weights_only=True)``)
    meta.json           step, epoch, metrics, and the SHA-256 of every file above

A checkpoint is written under a temporary name and renamed into place; ``last`` becomes ``prev``
when a new ``last`` is written (the fallback if ``last`` is damaged). Resuming reads ``last`` then
``prev`` (:func:`latest_checkpoint`); loading a run's weights reads ``best``, ``last``, ``prev``
(:func:`run_checkpoints`), the first that verifies (:func:`verify_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vit5._io import atomic_write, atomic_write_text, contained_path, fsync_directory
from vit5.io.weights_file import (
    FORMAT,
    CheckpointError,
    file_digest,
    load_weights,
    save_weights,
    torch_load_safely,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "EMA_WEIGHTS",
    "LOAD_ORDER",
    "META",
    "RESUME_ORDER",
    "STATE",
    "WEIGHTS",
    "Checkpoint",
    "has_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "read_meta",
    "remove_partial_writes",
    "run_checkpoints",
    "save_checkpoint",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

WEIGHTS, EMA_WEIGHTS, STATE, META = "model.safetensors", "ema.safetensors", "state.pt", "meta.json"
CHECKPOINTS_DIR = "checkpoints"
MAX_META_BYTES = 64 << 20
#: Which checkpoint of a run loading the weights tries first (``vit5 eval RUN``), and resuming.
LOAD_ORDER = ("best", "last", "prev")
RESUME_ORDER = ("last", "prev")


@dataclass
class Checkpoint:
    """A loaded checkpoint directory."""

    path: Path
    model: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})


def remove_partial_writes(root: str | os.PathLike) -> None:
    """Delete what a killed writer left in the checkpoint folder ``root``: the ``.tmp-*`` folder of
    a checkpoint being written and the ``.old-*`` folder of one being replaced (complete
    checkpoints are never touched)."""
    for stale in [*Path(root).glob(".tmp-*"), *Path(root).glob(".old-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(
    root: str | os.PathLike,
    name: str,
    *,
    model: dict[str, torch.Tensor],
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``root/name`` atomically. For ``name == "last"`` the previous one becomes ``prev``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_partial_writes(root)
    tmp = root / f".tmp-{name}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    weights_meta = {
        "config": meta.get("config", {}),
        "data": meta.get("data", {}),
        "step": meta.get("step", 0),
    }
    save_weights(tmp / WEIGHTS, model, weights_meta)
    files = [WEIGHTS]
    if ema is not None:
        save_weights(tmp / EMA_WEIGHTS, ema, {**weights_meta, "ema": True})
        files.append(EMA_WEIGHTS)
    if state is not None:
        atomic_write(tmp / STATE, lambda handle: torch.save(state, handle))
        files.append(STATE)
    record = {**meta, "format": FORMAT, "files": {f: file_digest(tmp / f) for f in files}}
    atomic_write_text(tmp / META, json.dumps(record, indent=1, default=str))
    fsync_directory(tmp)

    target = root / name
    if name == "last":
        prev = root / "prev"
        if target.exists():
            shutil.rmtree(prev, ignore_errors=True)
            os.replace(target, prev)
    elif target.exists():
        old = root / f".old-{name}-{time.time_ns()}"
        os.replace(target, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, target)
    fsync_directory(root)
    return target


def read_meta(path: str | os.PathLike, *, strict_format: bool = True) -> dict[str, Any]:
    """``meta.json`` of checkpoint directory ``path``.

    Raises:
        CheckpointError: no ``meta.json``, not JSON, not a record (or of another format when
            ``strict_format``).
    """
    meta_path = Path(path) / META
    if meta_path.is_symlink():
        try:
            contained_path(path, META, "the checkpoint record")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a vit5 checkpoint directory (no {META})")
    try:
        if meta_path.stat().st_size > MAX_META_BYTES:
            raise ValueError(f"{meta_path.stat().st_size} bytes, more than a checkpoint record needs")
        meta = json.loads(meta_path.read_text())
    except RecursionError:
        raise CheckpointError(f"{meta_path}: damaged (nested too deeply)") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{meta_path}: damaged ({error})") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: not a vit5 checkpoint record")
    if strict_format and meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a vit5 checkpoint (format {meta.get('format')!r})")
    return meta


def verify_checkpoint(path: str | os.PathLike, meta: dict[str, Any], names: Any = None) -> None:
    """Check the files ``meta`` lists (``names``: only those) against their SHA-256.

    Raises:
        CheckpointError: a file is missing or its digest differs (the message names it).
    """
    for name, digest in (meta.get("files") or {}).items():
        if names is not None and name not in names:
            continue
        try:
            file = contained_path(path, name, f"{Path(path) / META}: file")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
        if file_digest(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (the file is truncated or corrupted)")


def load_checkpoint(path: str | os.PathLike, with_state: bool = True) -> Checkpoint:
    """Load and verify a checkpoint directory (every file's SHA-256 against ``meta.json``).

    Raises:
        CheckpointError: a file is missing, damaged or unsafe; the message names it.
    """
    path = Path(path)
    meta = read_meta(path)
    verify_checkpoint(path, meta)
    files = meta.get("files") or {}
    model, _ = load_weights(
        path / WEIGHTS, sha256=files.get(WEIGHTS)
    )  # the verified digest, on the parsed bytes
    ema = (
        load_weights(path / EMA_WEIGHTS, sha256=files.get(EMA_WEIGHTS))[0]
        if (path / EMA_WEIGHTS).is_file()
        else None
    )
    state = torch_load_safely(path / STATE) if with_state and (path / STATE).is_file() else {}
    return Checkpoint(path=path, model=model, meta=meta, ema=ema, state=state)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run has a checkpoint that ``--resume`` would look at (without loading it)."""
    return any((Path(run_dir) / CHECKPOINTS_DIR / name).is_dir() for name in RESUME_ORDER)


def _inside_run(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN/checkpoints/name``, refused when a symlink leads it out of the run directory."""
    try:
        return contained_path(run_dir, f"{CHECKPOINTS_DIR}/{name}", "the checkpoint")
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def run_checkpoints(run_dir: str | os.PathLike, order: tuple[str, ...] = LOAD_ORDER) -> list[Path]:
    """The checkpoint directories of run ``run_dir`` that exist, in ``order`` (best, last, prev).

    Raises:
        CheckpointError: one of them is a symlink leading out of the run directory.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    return [_inside_run(run_dir, name) for name in order if (root / name).exists()]


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    """The newest valid checkpoint of a run (``last``, else ``prev``), for resuming.

    Raises:
        CheckpointError: no valid checkpoint exists (each failure is listed).
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    failures = []
    for name in RESUME_ORDER:
        if not (root / name).exists():
            failures.append(f"{root / name}: does not exist")
            continue
        try:
            checkpoint = load_checkpoint(_inside_run(run_dir, name))
        except CheckpointError as error:
            failures.append(str(error))
            continue
        if failures and name == "prev":
            logger.warning("checkpoint 'last' is unusable (%s); resuming from the previous one, %s",
                           "; ".join(failures), root / name)  # fmt: skip
        return checkpoint
    raise CheckpointError(f"no usable checkpoint in {root}: " + "; ".join(failures))
