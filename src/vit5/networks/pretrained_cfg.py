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

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PUBLISHED",
    "PUBLISHED_REPO",
    "WEIGHTS_LICENSE_NOTE",
    "Published",
    "IMAGENET_MEAN",
    "check_pretrained_cfg",
    "IMAGENET_STD",
    "default_pretrained_cfg",
    "make_pretrained_cfg",
    "updated_pretrained_cfg",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bicubic", "bilinear")
#: Bounds on values read from files (safetensors / ONNX metadata): a smaller crop ratio or a larger
#: image would make preprocessing allocate far beyond any real model's input.
MIN_CROP_PCT = 0.05
MAX_INPUT_SIZE = 8192
MAX_CHANNELS = 64
MAX_CLASSES = 1_000_000
MAX_NAME_LENGTH = 1000


def _int_in(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


def _checked_sizes(image_size: Any, in_channels: Any, num_classes: Any) -> tuple[int, int, int]:
    return (_int_in("input_size (image size)", image_size, 1, MAX_INPUT_SIZE),
            _int_in("input_size (channels)", in_channels, 1, MAX_CHANNELS),
            _int_in("num_classes", num_classes, 1, MAX_CLASSES))  # fmt: skip


def _per_channel(name: str, values: Any, channels: int) -> list[float]:
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__") or len(values) != channels:
        raise ValueError(f"{name} needs {channels} values (one per channel), got {str(values)[:100]}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} values must be finite numbers, got {value!r}")
        out.append(float(value))
    return out


def _class_names(names: Any, num_classes: int) -> list[str] | None:
    if names is None or (isinstance(names, (list, tuple)) and not names):
        return None
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, (list, tuple)):
        raise ValueError(f"class_names must be a list of strings, got {type(names).__name__}")
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes (one name per logit)")
    if not all(isinstance(name, str) and len(name) <= MAX_NAME_LENGTH for name in names):
        raise ValueError(f"class_names must be strings of at most {MAX_NAME_LENGTH} characters")
    return list(names)


def check_pretrained_cfg(cfg: Any, source: str, *, in_channels: int | None = None, num_classes: int | None = None,
                         image_size: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Validate a ``pretrained_cfg`` read from a file (safetensors or ONNX metadata); the checked copy.

    Every field is checked as :func:`make_pretrained_cfg` checks it (``crop_pct`` in [0.05, 1],
    ``input_size`` ``[C, H, H]`` with ``H <= 8192``, one mean/std per channel, one class name per
    logit, ``num_classes <= 1e6``); the model's ``in_channels`` / ``num_classes`` / ``image_size``
    must match when given.

    Raises:
        ValueError: One line naming ``source``, the field and what was expected.
    """
    try:
        if not isinstance(cfg, Mapping):
            raise ValueError(f"expected a mapping, got {type(cfg).__name__}")
        size = cfg.get("input_size")
        if isinstance(size, (str, bytes)) or not isinstance(size, (list, tuple)) or len(size) != 3:
            raise ValueError(f"input_size must be [channels, height, width], got {str(size)[:100]}")
        channels, height, width = size
        if height != width:
            raise ValueError(f"input_size must be square, got {list(size)}")
        expected = (("input_size channels", channels, in_channels), ("num_classes", cfg.get("num_classes"), num_classes),
                    ("input_size", height, image_size))  # fmt: skip
        for name, value, model_value in expected:
            if model_value is not None and value != model_value:
                raise ValueError(f"{name} is {value!r} but the model has {model_value}")
        fields = {
            key: cfg[key]
            for key in (
                "interpolation",
                "crop_pct",
                "class_names",
                "class_descriptions",
                "source",
                "resolved_url",
                "revision",
                "sha256",
            )
            if key in cfg
        }
        return make_pretrained_cfg(image_size=height, in_channels=channels, num_classes=cfg.get("num_classes"),
                                   mean=cfg.get("mean"), std=cfg.get("std"), **fields)  # fmt: skip
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: invalid pretrained_cfg metadata: {error}") from None


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
        ValueError: ``mean`` / ``std`` do not have one finite value per channel (std > 0),
            ``interpolation`` is not bicubic or bilinear, ``crop_pct`` is not in [0.05, 1], the image
            size is not in [1, 8192], ``num_classes`` not in [1, 1e6], or ``class_names`` /
            ``class_descriptions`` do not have one entry (a string) per class.
    """
    image_size, in_channels, num_classes = _checked_sizes(image_size, in_channels, num_classes)
    mean, std = _per_channel("mean", mean, in_channels), _per_channel("std", std, in_channels)
    if any(not value > 0 for value in std):
        raise ValueError(f"std values must be positive, got {std}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if (
        isinstance(crop_pct, bool)
        or not isinstance(crop_pct, numbers.Real)
        or not MIN_CROP_PCT <= crop_pct <= 1
    ):
        raise ValueError(f"crop_pct must be a number in [{MIN_CROP_PCT}, 1], got {crop_pct!r}")
    names = _class_names(class_names, num_classes)
    descriptions = [str(d) for d in class_descriptions] if class_descriptions else None
    if descriptions is not None and len(descriptions) != num_classes:
        raise ValueError(f"class_descriptions has {len(descriptions)} entries for {num_classes} classes")
    for name, value in (
        ("source", source),
        ("resolved_url", resolved_url),
        ("revision", revision),
        ("sha256", sha256),
    ):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")
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
