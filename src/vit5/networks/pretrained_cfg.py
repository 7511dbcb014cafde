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

import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = [
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
            for key in ("interpolation", "crop_pct", "class_names", "source", "sha256")
            if key in cfg
        }
        return make_pretrained_cfg(image_size=height, in_channels=channels, num_classes=cfg.get("num_classes"),
                                   mean=cfg.get("mean"), std=cfg.get("std"), **fields)  # fmt: skip
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: invalid pretrained_cfg metadata: {error}") from None


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
        ValueError: ``mean`` / ``std`` do not have one finite value per channel (std > 0),
            ``interpolation`` is not bicubic or bilinear, ``crop_pct`` is not in [0.05, 1], the image
            size is not in [1, 8192], ``num_classes`` not in [1, 1e6], or ``class_names`` does not have
            one name (a string) per class.
    """
    image_size, in_channels, num_classes = _checked_sizes(image_size, in_channels, num_classes)
    mean, std = _per_channel("mean", mean, in_channels), _per_channel("std", std, in_channels)
    if any(not value > 0 for value in std):
        raise ValueError(f"std values must be positive, got {std}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    if (
        isinstance(crop_pct, bool)
        or not isinstance(crop_pct, (int, float))
        or not MIN_CROP_PCT <= crop_pct <= 1
    ):
        raise ValueError(f"crop_pct must be a number in [{MIN_CROP_PCT}, 1], got {crop_pct!r}")
    names = _class_names(class_names, num_classes)
    for name, value in (("source", source), ("sha256", sha256)):
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
