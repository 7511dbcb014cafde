"""``pretrained_cfg``: what a deployer needs besides the weights, with timm's key names.

``input_size`` ``(C, H, W)``, ``mean`` / ``std`` (per channel, for inputs in ``[0, 1]``),
``interpolation`` (``"bicubic"`` / ``"bilinear"``), ``crop_pct`` (resize the short side to
``H / crop_pct``, then center-crop ``H``), ``num_classes``, plus vit5's ``class_names`` (a list or
``None``; ImageNet-1k models: the wnids such as ``n01440764``), ``class_descriptions`` (readable
names, one per class, or ``None``), ``source`` (where the weights came from: the path, published
name, ``hf-hub:`` id or URL given, or ``None``), ``resolved_url`` (the URL downloaded, after
redirects), ``revision`` (the Hub commit) and ``sha256`` (of the file read).

A network built from a preset or a config (no file) gets :func:`default_pretrained_cfg`: ImageNet
mean/std for 3-channel inputs and 0.5 / 0.5 otherwise, bicubic resizing and crop ratio 1.0, the
evaluation the official ViT-5 code uses.

:data:`PUBLISHED` is the one table of published weights (names, Hub repo and file, paper top-1);
``scripts/verify_published.py`` checks it against the Hub on a networked machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PUBLISHED",
    "PUBLISHED_REPO",
    "WEIGHTS_LICENSE_NOTE",
    "Published",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "default_pretrained_cfg",
    "make_pretrained_cfg",
    "updated_pretrained_cfg",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear")

# --------------------------------------------------------------------------------------------------
# Published weights: the official ViT-5 checkpoints on the Hugging Face Hub


@dataclass(frozen=True)
class Published:
    """One published checkpoint: the preset it loads into, where it lives and what it scores.

    Attributes:
        preset: The vit5 preset (``vit5_small`` ...) of the architecture.
        image_size: The training / evaluation resolution.
        hf_hub_id: The Hub repository.
        hf_hub_filename: The file in it (an official DeiT-style ``.pth`` training dict).
        top1: ImageNet-1k top-1 accuracy in percent, as reported in the paper (not re-measured here).
    """

    preset: str
    image_size: int
    hf_hub_id: str
    hf_hub_filename: str
    top1: float


PUBLISHED_REPO = "FengWang3211/ViT-5"
#: The published files and their paper results. The names and the repository cannot be checked
#: from the build machine: ``scripts/verify_published.py`` checks them on a networked one.
PUBLISHED: dict[str, Published] = {
    name: Published(preset, size, PUBLISHED_REPO, f"{name}.pth", top1)
    for name, preset, size, top1 in (
        ("vit5_small_patch16_224", "vit5_small", 224, 82.2),
        ("vit5_base_patch16_224", "vit5_base", 224, 84.2),
        ("vit5_base_patch16_384", "vit5_base", 384, 85.4),
        ("vit5_large_patch16_224", "vit5_large", 224, 84.9),
        ("vit5_large_patch16_384", "vit5_large", 384, 86.0),
    )
}
CODE_LICENSE = "apache-2.0"
WEIGHTS_LICENSE_NOTE = (
    "The official ViT-5 code is Apache-2.0; the license of the published weights is not stated in any "
    "source reachable from here: check the repository before use."
)


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
    class_descriptions: Any = None,
    source: str | None = None,
    resolved_url: str | None = None,
    revision: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """A complete, JSON-serialisable ``pretrained_cfg`` dict.

    Raises:
        ValueError: ``mean`` / ``std`` do not have one value per channel, ``interpolation`` is not
            bicubic or bilinear, ``crop_pct`` is not in (0, 1], or ``class_names`` /
            ``class_descriptions`` do not have one entry per class.
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
    descriptions = [str(d) for d in class_descriptions] if class_descriptions else None
    if descriptions is not None and len(descriptions) != num_classes:
        raise ValueError(f"class_descriptions has {len(descriptions)} entries for {num_classes} classes")
    return {
        "input_size": [int(in_channels), int(image_size), int(image_size)],
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(crop_pct),
        "num_classes": int(num_classes),
        "class_names": names,
        "class_descriptions": descriptions,
        "source": source,
        "resolved_url": resolved_url,
        "revision": revision,
        "sha256": sha256,
    }


def updated_pretrained_cfg(cfg: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with ``changes`` (``image_size=`` changes ``input_size``), checked again."""
    channels, size, _ = cfg["input_size"]
    fields = dict(
        image_size=size, in_channels=channels, num_classes=cfg["num_classes"], mean=cfg["mean"], std=cfg["std"],
        interpolation=cfg["interpolation"], crop_pct=cfg["crop_pct"], class_names=cfg.get("class_names"),
        class_descriptions=cfg.get("class_descriptions"), source=cfg.get("source"),
        resolved_url=cfg.get("resolved_url"), revision=cfg.get("revision"), sha256=cfg.get("sha256"),
    )  # fmt: skip
    fields.update(changes)
    return make_pretrained_cfg(**fields)
