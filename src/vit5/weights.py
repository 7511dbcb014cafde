"""Load published and foreign weights into vit5 networks (the entry points that read files).

* :func:`load_official_vit5` — official ViT-5 checkpoints (wangf3014/ViT-5, S/B/L/XL) into the
  ``vit5_small|base|large|xlarge`` presets, optionally at another resolution.
* :func:`load_nvsubquadratic_checkpoint` — nvSubquadratic / Lightning checkpoints (or plain state
  dicts, or vit5 weights files) into a network built from the same config.

Files are read without running code: ``.safetensors`` with safetensors, everything else with
``torch.load(weights_only=True)``; a pickle holding anything but tensors and plain values is refused
with a :class:`~vit5.train.checkpoint.CheckpointError` (a ``ValueError``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit5.config import instantiate
from vit5.networks.interop import extract_state_dict
from vit5.networks.official import (
    OFFICIAL_VARIANTS,
    official_layout,
    official_to_vit5,
    official_variant,
    unwrap_official,
)
from vit5.networks.presets import model_config
from vit5.networks.resize import resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet
from vit5.train.checkpoint import CheckpointError, load_weights, torch_load_safely

__all__ = ["load_for_timm", "load_nvsubquadratic_checkpoint", "load_official_vit5", "read_weights_file"]

logger = logging.getLogger(__name__)

_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")  # zip archive (torch.save), legacy pickle


def read_weights_file(path: str | os.PathLike) -> Any:
    """Read a ``.safetensors`` file (a dict of tensors) or a ``torch.save`` file, safely.

    Raises:
        CheckpointError: the file is missing, damaged, or a pickle with objects other than tensors
            and plain values (refused without executing anything).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(9)
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and not head.startswith(_TORCH_MAGIC)
    if path.suffix == ".safetensors" or looks_safetensors:
        tensors, _ = load_weights(path)
        return tensors
    try:
        return torch_load_safely(path)
    except CheckpointError as error:
        if "refused" not in str(error):
            raise
        raise CheckpointError(
            f"{error}\nIf you trust the file, extract its weights elsewhere, e.g. "
            "torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights.pt'), and load that."
        ) from error


def _as_mapping(path_or_state_dict: Any, name: str) -> Mapping:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return read_weights_file(path_or_state_dict)
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    raise TypeError(
        f"{name} must be a file path or a mapping (state dict / checkpoint), got {type(path_or_state_dict).__name__}"
    )


def load_official_vit5(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    variant: str,
    num_classes: int | None = None,
    *,
    image_size: int | None = None,
    use_ema: bool = False,
) -> ViT5ClassificationNet:
    """Build the ``vit5_<variant>`` preset holding an official ViT-5 checkpoint's weights.

    The architecture (depth, image size, patch size, channels, classes) is read from the checkpoint,
    so reduced-depth or small-image checkpoints in the official layout load too; width and heads
    must be those of ``variant``. The logits equal the official model's up to fp32 rounding.

    Args:
        path_or_state_dict: A ``.pth`` / ``.safetensors`` file or an already loaded state dict, bare
            or wrapped in ``model`` / ``model_ema`` / ``state_dict`` (``module.`` prefixes are fine).
        variant: ``"small"``, ``"base"``, ``"large"`` or ``"xlarge"`` (also ``"vit5_small"``, ``"S"``...).
        num_classes: ``None`` keeps the checkpoint's head; another value builds a new, freshly
            initialised head of that size (fine-tuning) and loads everything else.
        image_size: Build the network for this resolution instead of the checkpoint's:
            ``pos_embed`` is resampled bicubically and RoPE positions are rescaled to the training
            grid (``arange(g') * g / g'``), as the official code does.
        use_ema: Load the ``model_ema`` entry of a training checkpoint.

    Raises:
        ValueError: unknown variant, a checkpoint of another width/head count, missing, unexpected
            or mis-shaped keys (listed), an unsafe or unreadable file.
        TypeError: an argument of the wrong type.
    """
    variant = official_variant(variant)
    official = unwrap_official(_as_mapping(path_or_state_dict, "path_or_state_dict"), use_ema=use_ema)
    layout = official_layout(official)
    width, depth, heads = OFFICIAL_VARIANTS[variant]
    if (layout.hidden_dim, layout.num_heads) != (width, heads):
        matches = [
            name
            for name, (d, _, h) in OFFICIAL_VARIANTS.items()
            if (d, h) == (layout.hidden_dim, layout.num_heads)
        ]
        raise ValueError(
            f"variant={variant!r} has hidden_dim {width} and {heads} heads, but the checkpoint has hidden_dim "
            f"{layout.hidden_dim} and {layout.num_heads} heads"
            + (f"; it is a {matches[0]!r} checkpoint" if matches else "")
        )
    if layout.num_blocks != depth:
        logger.warning(
            "official %s checkpoint with %d blocks (the published model has %d)",
            variant,
            layout.num_blocks,
            depth,
        )
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    new_head = num_classes is not None and num_classes != layout.num_classes
    overrides: dict[str, Any] = dict(
        num_blocks=layout.num_blocks, num_classes=num_classes if new_head else layout.num_classes,
        image_size=layout.image_size, patch_size=layout.patch_size, in_channels=layout.in_channels,
        num_registers=layout.num_registers,
    )  # fmt: skip
    if layout.mlp_ratio != 4.0:
        overrides["mlp_ratio"] = layout.mlp_ratio
    cfg = model_config(f"vit5_{variant}", **overrides)
    model = instantiate(cfg)
    state = official_to_vit5(official)
    if new_head:  # official_layout checked every key: only the (freshly initialised) head is left out
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("out_proj.")}, strict=False)
    else:
        model.load_state_dict(state, strict=True)
    if image_size is not None and image_size != layout.image_size:
        model = resize_model(model, image_size, config=cfg)
    return model


def load_nvsubquadratic_checkpoint(
    model: nn.Module,
    path_or_checkpoint: str | os.PathLike | Mapping[str, Any],
    *,
    ema: bool = False,
    prefix: str | None = None,
    exclude: Collection[str] = (),
) -> nn.Module:
    """Load nvSubquadratic weights (plain or Lightning-style checkpoint) into ``model``, in place.

    The weights are found wherever the checkpoint keeps them (see
    :func:`vit5.networks.interop.extract_state_dict`): a bare state dict, ``state_dict`` with a
    ``net.`` / ``model.`` prefix, EMA copies (``ema=True``), DDP / ``torch.compile`` prefixes.

    Args:
        model: A vit5 network built from the checkpoint's config.
        path_or_checkpoint: A file (``.ckpt``, ``.pt``, ``.safetensors``) or a loaded mapping.
        ema: Load the EMA weights instead of the model weights.
        prefix: Only consider copies under this key prefix (to disambiguate).
        exclude: Key prefixes of ``model`` not to load (e.g. ``("out_proj.",)`` for a new head).

    Returns:
        ``model``.

    Raises:
        ValueError: the weights are not found, ambiguous, or have unexpected keys or wrong shapes
            (listed); an unsafe or unreadable file.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    checkpoint = _as_mapping(path_or_checkpoint, "path_or_checkpoint")
    own = model.state_dict()
    expected = [key for key in own if not any(key.startswith(p) for p in exclude)]
    state = extract_state_dict(checkpoint, expected, ema=ema, prefix=prefix)
    state = {key: value for key, value in state.items() if not any(key.startswith(p) for p in exclude)}
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{key}: checkpoint {tuple(state[key].shape)}, model {tuple(own[key].shape)}"
        for key in expected
        if tuple(state[key].shape) != tuple(own[key].shape)
    ]
    if unexpected or wrong:
        raise ValueError(
            f"the checkpoint does not match the model: unexpected keys {unexpected}; wrong shapes {wrong}"
        )
    model.load_state_dict(state, strict=not exclude)
    return model


def _official_state(checkpoint: Mapping) -> dict[str, torch.Tensor] | None:
    try:
        state = unwrap_official(checkpoint)
    except (TypeError, ValueError):
        return None
    return state if "patch_embed.proj.weight" in state and "blocks.0.norm1.weight" in state else None


def load_for_timm(
    path: str | os.PathLike, preset: str, overrides: Mapping[str, Any]
) -> ViT5ClassificationNet:
    """The network of ``timm.create_model(<preset>, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.

    ``path`` holds official ViT-5 weights (official presets only) or vit5 / nvSubquadratic weights.
    The network is built at the checkpoint's resolution and class count, then resized to
    ``overrides["image_size"]`` if given; the caller replaces the head for another class count.
    """
    checkpoint = read_weights_file(path)
    image_size = overrides.get("image_size")
    overrides = {key: value for key, value in overrides.items() if key not in ("image_size", "num_classes")}
    official = _official_state(checkpoint)
    if official is not None:
        if preset.removeprefix("vit5_") not in OFFICIAL_VARIANTS:
            raise ValueError(
                f"{path} is an official ViT-5 checkpoint; it loads into vit5_small|base|large|xlarge, not {preset!r}"
            )
        state = official_to_vit5(official)
    else:
        with torch.device("meta"):
            probe = instantiate(model_config(preset, **overrides))
        state = extract_state_dict(checkpoint, list(probe.state_dict()))
    patch_size = model_config(preset, **overrides).patch_size
    grid = int(round(state["pos_embed"].shape[1] ** 0.5))
    trained = {"image_size": grid * patch_size, "num_classes": state["out_proj.weight"].shape[0]}
    cfg = model_config(preset, **overrides, **trained)
    net = load_nvsubquadratic_checkpoint(instantiate(cfg), state)
    if image_size is not None and image_size != net.image_size:
        net = resize_model(net, image_size, config=cfg)
    return net
