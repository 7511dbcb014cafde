"""Evaluation: loss, top-1/top-5, per-class accuracy, confusion matrix (loading lives in vit5.weights)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

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
    progress: str | None = None,
) -> EvalResult:
    """Run ``model`` over ``loader`` (``[B, C, H, W]`` images) and reduce the metrics over ranks;
    ``progress``: the label of a progress bar drawn when stderr is a terminal."""
    from vit5.train.progress import progress_bar, use_bars

    ctx = ctx or DistributedContext()
    was_training = model.training
    model.eval()
    loss_sum = correct1 = correct5 = count = 0.0
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    bar = progress_bar(len(loader), progress, unit="batch") if progress and use_bars() else None
    for images, labels in loader:
        if bar is not None:
            bar.update(1)
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
    if bar is not None:
        bar.close()
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
