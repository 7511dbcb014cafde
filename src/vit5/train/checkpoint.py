"""Checkpoints that never run code when loaded and never leave a half-written file behind.

A checkpoint is a directory::

    model.safetensors   weights (safetensors), with the run config, data spec and a SHA-256 of
                        the tensors in its metadata, so the file alone rebuilds the model
    ema.safetensors     EMA weights (when EMA is on), same format
    state.pt            optimizer / scheduler / step / RNG state (tensors and plain values only,
                        read with ``torch.load(weights_only=True)``)
    meta.json           step, epoch, metrics, and the SHA-256 of every file above

The directory is written under a temporary name and renamed into place; a run keeps ``last``,
``prev`` (the previous ``last``, the fallback if ``last`` is damaged) and ``best``.
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

from vit5._io import atomic_write, atomic_write_text, fsync_directory
from vit5.io.weights_file import (  # noqa: F401  (re-exported: the run-directory API uses them)
    FORMAT,
    CheckpointError,
    file_digest,
    load_weights,
    save_weights,
    tensor_digest,
    torch_load_safely,
)

logger = logging.getLogger(__name__)

WEIGHTS, EMA_WEIGHTS, STATE, META = "model.safetensors", "ema.safetensors", "state.pt", "meta.json"


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


def load_checkpoint(path: str | os.PathLike, with_state: bool = True) -> Checkpoint:
    """Load and verify a checkpoint directory (every file's SHA-256 against ``meta.json``).

    Raises:
        CheckpointError: a file is missing, damaged or unsafe; the message names it.
    """
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise CheckpointError(f"{path}: not a vit5 checkpoint directory (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta_path}: damaged ({error})") from error
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a vit5 checkpoint (format {meta.get('format')!r})")
    for name, digest in meta.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint")
        if file_digest(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (the file is truncated or corrupted)")
    model, _ = load_weights(path / WEIGHTS)
    ema = load_weights(path / EMA_WEIGHTS)[0] if (path / EMA_WEIGHTS).is_file() else None
    state = torch_load_safely(path / STATE) if with_state and (path / STATE).is_file() else {}
    return Checkpoint(path=path, model=model, meta=meta, ema=ema, state=state)


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    """Whether the run has a checkpoint that ``--resume`` would look at (without loading it)."""
    return any((Path(run_dir) / "checkpoints" / name).is_dir() for name in ("last", "prev"))


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint:
    """The newest valid checkpoint of a run (``last``, else ``prev``), for resuming.

    Raises:
        CheckpointError: no valid checkpoint exists (each failure is listed).
    """
    root = Path(run_dir) / "checkpoints"
    failures = []
    for name in ("last", "prev"):
        if not (root / name).exists():
            failures.append(f"{root / name}: does not exist")
            continue
        try:
            checkpoint = load_checkpoint(root / name)
        except CheckpointError as error:
            failures.append(str(error))
            continue
        if failures and name == "prev":
            logger.warning("checkpoint 'last' is unusable (%s); resuming from the previous one, %s",
                           "; ".join(failures), root / name)  # fmt: skip
        return checkpoint
    raise CheckpointError(f"no usable checkpoint in {root}: " + "; ".join(failures))


def find_weights(path: str | os.PathLike) -> Path:
    """Resolve what a user passed to eval/predict: a run directory (its ``best``, else ``last``, else
    ``prev`` checkpoint), a checkpoint directory, or a ``.safetensors`` file."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / META).is_file():
        return path
    for name in ("best", "last", "prev"):
        candidate = path / "checkpoints" / name
        if (candidate / META).is_file():
            return candidate
    raise CheckpointError(f"{path}: not a checkpoint file, checkpoint directory or run directory")
