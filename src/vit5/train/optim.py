"""Optimizer parameter groups, optimizers (AdamW, LAMB) and the warmup + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lamb")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and everything exempt from weight decay.

    Exempt: parameters tagged ``_no_weight_decay`` (norm gains, LayerScale gammas, position /
    CLS / register tokens, SIREN parameters, ...) and every parameter with fewer than 2 dimensions
    (biases, gains). Frozen parameters are left out.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if getattr(parameter, "_no_weight_decay", False) or parameter.ndim < 2:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW (``torch.optim.AdamW``) or LAMB (timm's ``Lamb``) over :func:`parameter_groups`.

    ``cfg`` keys: ``name``, ``lr``, ``weight_decay``, ``betas``, ``eps``.

    AdamW uses PyTorch's fused kernel when every parameter is a floating-point CPU or CUDA tensor
    (one kernel per parameter instead of a dozen elementwise passes: the optimizer step of the tiny
    presets goes from about 7.6 to 1.6 ms on 2 CPU cores); the update is the same AdamW formula.
    """
    name = cfg.get("name", "adamw")
    if name not in OPTIMIZERS:
        raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}; got {name!r}")
    lr, weight_decay = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"optim.lr must be a positive number, got {cfg['lr']!r}")
    betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
    eps = float(cfg.get("eps", 1e-8))
    groups = parameter_groups(model, weight_decay)
    if name == "adamw":
        fused = all(
            p.is_floating_point() and p.device.type in ("cpu", "cuda")
            for group in groups
            for p in group["params"]
        )
        return torch.optim.AdamW(
            groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None
        )
    from timm.optim import Lamb

    return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup from ``1 / warmup_steps`` to 1, then cosine to ``min_lr_ratio``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step :class:`LambdaLR` following :func:`warmup_cosine`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, min_lr_ratio)
    )
