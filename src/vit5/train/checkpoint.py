"""Run checkpoints for training: the layout lives in :mod:`vit5.io.run` (one place writes and reads
it); training code imports it from here."""

from vit5.io.run import (
    EMA_WEIGHTS,
    META,
    STATE,
    WEIGHTS,
    Checkpoint,
    has_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    remove_partial_writes,
    save_checkpoint,
)
from vit5.io.weights_file import (
    FORMAT,
    CheckpointError,
    file_digest,
    load_weights,
    save_weights,
    tensor_digest,
    torch_load_safely,
)

__all__ = [
    "EMA_WEIGHTS",
    "FORMAT",
    "META",
    "STATE",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "file_digest",
    "has_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "remove_partial_writes",
    "save_checkpoint",
    "save_weights",
    "tensor_digest",
    "torch_load_safely",
]
