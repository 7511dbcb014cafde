"""Training losses: cross-entropy or binary cross-entropy (``train.loss``), with mixup/cutmix targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

LOSSES = ("ce", "bce")


class SmoothedBCE(nn.Module):
    """Binary cross-entropy on one-hot targets with label smoothing ``(1 - s) onehot + s / K``
    (``train.loss=bce`` without mixup/cutmix, whose soft targets go straight to BCE).

    Shapes: ``logits [B, K]``, ``labels [B]`` (int) -> scalar (mean over ``B x K``).
    """

    def __init__(self, num_classes: int, smoothing: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.smoothing = num_classes, smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = nn.functional.one_hot(labels, self.num_classes).to(logits.dtype)  # (B, K)
        targets = targets * (1 - self.smoothing) + self.smoothing / self.num_classes
        return nn.functional.binary_cross_entropy_with_logits(logits, targets)


def build_criterion(train: Mapping[str, Any], num_classes: int, batch_size: int) -> tuple[nn.Module, Any]:
    """The loss and the mixup/cutmix transform (``None`` when both are off) of a run's ``train`` section.

    ``loss=ce``: cross-entropy with ``label_smoothing`` (soft-target cross-entropy on mixed
    targets); ``loss=bce``: binary cross-entropy on the one-hot or mixed targets (the official
    ``--bce-loss``), label smoothing included.

    Raises:
        ValueError: an unknown loss, or mixup/cutmix with an odd per-process ``batch_size``.
    """
    loss = train.get("loss", "ce")
    if loss not in LOSSES:
        raise ValueError(f"train.loss must be one of {', '.join(LOSSES)}; got {loss!r}")
    smoothing = float(train.get("label_smoothing", 0.0))
    if float(train.get("mixup", 0.0)) <= 0 and float(train.get("cutmix", 0.0)) <= 0:
        if loss == "bce":
            return SmoothedBCE(num_classes, smoothing), None
        return nn.CrossEntropyLoss(label_smoothing=smoothing), None
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy

    if batch_size % 2:
        raise ValueError(f"mixup/cutmix need an even per-process batch size, got {batch_size}")
    criterion = nn.BCEWithLogitsLoss() if loss == "bce" else SoftTargetCrossEntropy()
    mixup = Mixup(mixup_alpha=float(train["mixup"]), cutmix_alpha=float(train["cutmix"]),
                  switch_prob=float(train.get("mixup_switch_prob", 0.5)), label_smoothing=smoothing,
                  num_classes=num_classes)  # fmt: skip
    return criterion, mixup
