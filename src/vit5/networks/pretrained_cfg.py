"""``pretrained_cfg``: what a deployer needs besides the weights, with timm's key names.

``input_size`` ``(C, H, W)``, ``mean`` / ``std`` (per channel, for inputs in ``[0, 1]``),
``interpolation`` (``"bicubic"`` / ``"bilinear"``), ``crop_pct`` (resize the short side to
``H / crop_pct``, then center-crop ``H``), ``num_classes``, plus vit5's ``class_names`` (a list or
``None``), ``source`` (the file the weights came from, or ``None``) and ``sha256`` (of that file).

A network built from a preset or a config (no file) gets :func:`default_pretrained_cfg`: ImageNet
mean/std for 3-channel inputs and 0.5 / 0.5 otherwise, bicubic resizing and crop ratio 1.0, the
evaluation the official ViT-5 code uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "default_pretrained_cfg",
    "make_pretrained_cfg",
    "updated_pretrained_cfg",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear")


def default_pretrained_cfg(image_size: int, in_channels: int, num_classes: int) -> dict[str, Any]:
    """The ``pretrained_cfg`` of a network with no recorded preprocessing (see the module docstring)."""
    rgb = in_channels == 3
    return make_pretrained_cfg(
        image_size=image_size,
        in_channels=in_channels,
        num_classes=num_classes,
        mean=IMAGENET_MEAN if rgb else (0.5,) * in_channels,
        std=IMAGENET_STD if rgb else (0.5,) * in_channels,
    )


def make_pretrained_cfg(
    *,
    image_size: int,
    in_channels: int,
    num_classes: int,
    mean: Any,
    std: Any,
    interpolation: str = "bicubic",
    crop_pct: float = 1.0,
    class_names: Any = None,
    source: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """A complete, JSON-serialisable ``pretrained_cfg`` dict.

    Raises:
        ValueError: ``mean`` / ``std`` do not have one value per channel, ``interpolation`` is not
            bicubic or bilinear, ``crop_pct`` is not in (0, 1], or ``class_names`` does not have one
            name per class.
    """
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean and std need {in_channels} values (one per channel), got {mean} and {std}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if not 0 < float(crop_pct) <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    names = list(class_names) if class_names else None
    if names is not None and len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    return {
        "input_size": [int(in_channels), int(image_size), int(image_size)],
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(crop_pct),
        "num_classes": int(num_classes),
        "class_names": names,
        "source": source,
        "sha256": sha256,
    }


def updated_pretrained_cfg(cfg: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with ``changes`` (``image_size=`` changes ``input_size``), checked again."""
    channels, size, _ = cfg["input_size"]
    fields = dict(
        image_size=size, in_channels=channels, num_classes=cfg["num_classes"], mean=cfg["mean"], std=cfg["std"],
        interpolation=cfg["interpolation"], crop_pct=cfg["crop_pct"], class_names=cfg.get("class_names"),
        source=cfg.get("source"), sha256=cfg.get("sha256"),
    )  # fmt: skip
    fields.update(changes)
    return make_pretrained_cfg(**fields)
