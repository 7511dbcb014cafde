"""Official ViT-5 weights (``wangf3014/ViT-5``): the DeiT-style training dicts its ``main.py`` writes.

A file holds a bare state dict or ``{"model", "model_ema", "optimizer", "args", ...}`` (``args``
an ``argparse.Namespace``); the network is read off the tensors (:func:`official_model_config`),
so any layout of the official code loads. Reading never runs code from the file
(:func:`vit5.io.read_weights_file`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch

from vit5.config import LazyConfig, instantiate
from vit5.io.weights_file import read_weights_file
from vit5.networks.budget import check_network_budget
from vit5.networks.official import (
    OFFICIAL_VARIANTS,
    official_layout,
    official_rope_bases,
    official_to_vit5,
    official_variant,
    unwrap_official,
)
from vit5.networks.presets import build_vit5, preset_arguments
from vit5.networks.resize import resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = ["as_mapping", "build_official", "is_official", "load_official_vit5", "official_model_config"]

logger = logging.getLogger("vit5.weights")


def as_mapping(path_or_state_dict: Any, name: str) -> Mapping:
    """A loaded mapping, or the file ``path_or_state_dict`` read safely."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return read_weights_file(path_or_state_dict)
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    raise TypeError(
        f"{name} must be a file path or a mapping (state dict / checkpoint), got {type(path_or_state_dict).__name__}"
    )


def is_official(checkpoint: Mapping) -> bool:
    """Whether ``checkpoint`` holds an official ViT-5 state dict (bare, or where unwrap_official looks)."""
    for key in ("model", "model_ema", "state_dict", None):
        inner = checkpoint.get(key) if key else checkpoint
        if isinstance(inner, Mapping):
            names = {str(k).removeprefix("module.") for k in inner}
            if "patch_embed.proj.weight" in names and "blocks.0.norm1.weight" in names:
                return True
    return False


def official_model_config(official: Mapping[str, torch.Tensor], num_classes: int | None = None) -> Any:
    """The ``build_vit5`` config of the network holding an official state dict (checked key by key).

    Width, depth, heads, registers, patch and image size, channels, MLP ratio and classes come from
    the tensors, the RoPE bases from the RoPE buffers (:func:`official_rope_bases`); everything else
    is the official model's (interleaved RoPE, biased attention projection / MLP / head).
    """
    layout = official_layout(official)
    rope_base, reg_rope_base = official_rope_bases(official)
    arguments = dict(preset_arguments("vit5_small"))
    arguments.update(
        hidden_dim=layout.hidden_dim, num_heads=layout.num_heads, num_blocks=layout.num_blocks,
        num_registers=layout.num_registers, patch_size=layout.patch_size, image_size=layout.image_size,
        in_channels=layout.in_channels, num_classes=num_classes or layout.num_classes,
    )  # fmt: skip
    if layout.mlp_ratio != 4.0:
        arguments["mlp_ratio"] = layout.mlp_ratio
    if (rope_base, reg_rope_base) != (10000.0, 100.0):
        logger.info(
            "official checkpoint uses RoPE bases %g (patches) and %g (registers)", rope_base, reg_rope_base
        )
        arguments.update(rope_base=rope_base, reg_rope_base=reg_rope_base)
    return LazyConfig(build_vit5)(**arguments)


def load_official_vit5(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    variant: str | None = None,
    num_classes: int | None = None,
    *,
    image_size: int | None = None,
    ema: bool = False,
) -> ViT5ClassificationNet:
    """Build the network holding an official ViT-5 checkpoint's weights (logits equal to fp32 rounding).

    The architecture (width, heads, depth, registers, image and patch size, channels, classes, MLP
    ratio) is read from the checkpoint, so reduced-depth or custom layouts of the official code
    load too. The per-block RoPE buffers of real checkpoints (``blocks.i.attn.rope.freqs`` /
    ``rope_reg.freqs``) are checked: values matching bases 10000 / 100 (relative 1e-3) are dropped,
    values of another base are adopted (logged), anything else is an error.

    Args:
        path_or_state_dict: A ``.pth`` / ``.safetensors`` file or a loaded mapping: a bare state dict
            or a training dict with ``model`` / ``model_ema`` (``args``, ``optimizer``, ... are
            ignored); ``module.`` prefixes are fine.
        variant: Optional check: ``"small"``, ``"base"``, ``"large"``, ``"xlarge"`` (also
            ``"vit5_small"``, ``"S"``...); the checkpoint's width and heads must be that variant's.
        num_classes: ``None`` keeps the checkpoint's head; another value builds a new, freshly
            initialised head of that size and loads everything else.
        image_size: Evaluate the trained model at another resolution (:func:`vit5.resize_model`:
            ``pos_embed`` resampled bicubically, RoPE positions at the training grid's scale
            ``arange(g') * g / g'``). Not the fine-tuning rebuild, which uses the new grid's
            integer positions.
        ema: Load the ``model_ema`` entry of a training checkpoint (an error if there is none).

    Raises:
        ValueError: unknown variant, a checkpoint of another width/head count than ``variant``,
            missing, unexpected or mis-shaped keys (listed), RoPE buffers that are not RoPE
            frequencies, an unsafe or unreadable file.
        TypeError: an argument of the wrong type.
    """
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    official = unwrap_official(as_mapping(path_or_state_dict, "path_or_state_dict"), use_ema=ema)
    layout = official_layout(official)
    if variant is not None:
        variant = official_variant(variant)
        width, depth, heads = OFFICIAL_VARIANTS[variant]
        if (layout.hidden_dim, layout.num_heads) != (width, heads):
            matches = [
                n
                for n, (d, _, h) in OFFICIAL_VARIANTS.items()
                if (d, h) == (layout.hidden_dim, layout.num_heads)
            ]
            raise ValueError(
                f"variant={variant!r} has hidden_dim {width} and {heads} heads, but the checkpoint has hidden_dim "
                f"{layout.hidden_dim} and {layout.num_heads} heads"
                + (f"; it is a {matches[0]!r} checkpoint" if matches else "")
            )
        if layout.num_blocks != depth:
            logger.warning("official %s checkpoint with %d blocks (the published model has %d)", variant,
                        layout.num_blocks, depth)  # fmt: skip
    model, cfg = build_official(official, num_classes)
    if image_size is not None and image_size != layout.image_size:
        model = resize_model(model, image_size, config=cfg).eval()
    return model


def build_official(
    official: Mapping[str, torch.Tensor], num_classes: int | None = None
) -> tuple[ViT5ClassificationNet, Any]:
    """The eval-mode network holding an unwrapped official state dict, and its ``build_vit5`` config;
    ``num_classes`` other than the checkpoint's gives a new, freshly initialised head."""
    checkpoint_classes = official_layout(official).num_classes
    new_head = num_classes is not None and num_classes != checkpoint_classes
    cfg = official_model_config(official, num_classes if new_head else None)
    check_network_budget(cfg, "the official checkpoint")  # its tensors are real; a huge grid is not free
    model = instantiate(cfg)
    state = official_to_vit5(official)
    if new_head:  # official_layout checked every key: only the (freshly initialised) head is left out
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("out_proj.")}, strict=False)
    else:
        model.load_state_dict(state, strict=True)
    return model.eval(), cfg
