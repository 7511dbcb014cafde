"""Evaluation (loss, top-1/top-5, per-class accuracy, confusion matrix) and model loading for inference."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vit5.config import instantiate
from vit5.train.checkpoint import CheckpointError, find_weights, load_checkpoint, load_weights
from vit5.train.distributed import DistributedContext

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Metrics of one pass over a dataset."""

    loss: float
    top1: float
    top5: float
    count: int
    confusion: np.ndarray | None = None
    per_class: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5, "count": self.count,
                "per_class": self.per_class}  # fmt: skip


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Labels must be integers in ``[0, num_classes)``; anything else is a ``ValueError``."""
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][:5].tolist()
        raise ValueError(
            f"labels out of range for a {num_classes}-class model: {bad} (expected 0..{num_classes - 1})"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    num_classes: int,
    ctx: DistributedContext | None = None,
    precision: str = "fp32",
    confusion: bool = False,
) -> EvalResult:
    """Run ``model`` over ``loader`` (``[B, C, H, W]`` images) and reduce the metrics over ranks."""
    ctx = ctx or DistributedContext()
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for images, labels in loader:
        images, labels = images.to(ctx.device), labels.to(ctx.device)
        check_labels(labels, num_classes)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model({"input": images.permute(0, 2, 3, 1)})["logits"].float()  # (B, K)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, num_classes), dim=1).indices  # (B, 5)
        correct1 += (top[:, 0] == labels).sum().item()
        correct5 += (top == labels[:, None]).any(dim=1).sum().item()
        count += labels.numel()
        if confusion:
            matrix.index_put_(
                (labels.cpu(), top[:, 0].cpu()),
                torch.ones(labels.numel(), dtype=torch.float64),
                accumulate=True,
            )
    loss_sum, correct1, correct5, count = ctx.all_reduce_sum([loss_sum, correct1, correct5, count])
    if confusion and ctx.distributed:
        matrix = torch.tensor(ctx.all_reduce_sum(matrix.flatten().tolist()), dtype=torch.float64).view_as(
            matrix
        )
    model.train(was_training)
    count = max(count, 1)
    result = EvalResult(loss=loss_sum / count, top1=correct1 / count, top5=correct5 / count, count=int(count))
    if confusion:
        result.confusion = matrix.numpy().astype(np.int64)
        totals = matrix.sum(dim=1)
        accuracy = matrix.diagonal() / totals.clamp_min(1)
        # A class without test images has no accuracy (NaN), rather than a misleading 0.
        result.per_class = torch.where(totals > 0, accuracy, float("nan")).tolist()
    return result


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what is needed to preprocess inputs."""

    model: nn.Module
    data: dict[str, Any]
    config: dict[str, Any]
    source: Path
    ema: bool


def _build(config: dict[str, Any], state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    if "model" not in config:
        raise CheckpointError(f"{source}: the checkpoint carries no model config; cannot rebuild the network")
    model = instantiate(config["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not match the model config: {error}") from error
    return model.eval()


def load_model(path: str | Path, ema: bool = False) -> LoadedModel:
    """Rebuild the model saved at ``path`` for evaluation or prediction.

    ``path`` may be a run directory (its ``best`` checkpoint, then ``last``, then ``prev`` — the
    first one that verifies), a checkpoint directory, or a ``.safetensors`` weights file written by
    vit5 (which carries its config). ``ema=True`` loads the EMA weights.

    Raises:
        CheckpointError: nothing usable was found, or the files are damaged or unsafe.
    """
    path = Path(path)
    if path.is_dir() and not (path / "meta.json").is_file():
        candidates = [path / "checkpoints" / name for name in ("best", "last", "prev")]
        failures = []
        for candidate in candidates:
            if not candidate.exists():
                continue
            try:
                return load_model(candidate, ema=ema)
            except CheckpointError as error:
                failures.append(str(error))
                logger.warning("skipping damaged checkpoint: %s", error)
        if failures:
            raise CheckpointError(f"no usable checkpoint in {path}: " + "; ".join(failures))
    source = find_weights(path)
    if source.is_file():
        if source.suffix != ".safetensors":
            raise CheckpointError(
                f"{source}: not a run directory, checkpoint directory or .safetensors file; vit5 loads weights "
                "from those only (pickle-based .pt/.pth files can run code when loaded)"
            )
        state, metadata = load_weights(source)
        if ema and not metadata.get("ema"):
            logger.warning("%s holds the model weights, not EMA weights; using them (pass ema.safetensors "
                           "or the checkpoint directory for the EMA weights)", source)  # fmt: skip
        return LoadedModel(_build(metadata.get("config", {}), state, source), metadata.get("data", {}),
                           metadata.get("config", {}), source, bool(metadata.get("ema")))  # fmt: skip
    checkpoint = load_checkpoint(source, with_state=False)
    use_ema = ema and checkpoint.ema is not None
    if ema and checkpoint.ema is None:
        logger.warning("%s has no EMA weights; using the model weights", source)
    state = checkpoint.ema if use_ema else checkpoint.model
    config = checkpoint.config
    return LoadedModel(
        _build(config, state, source), checkpoint.meta.get("data", {}), config, source, use_ema
    )
