"""Argument and input checks of :class:`~vit5.networks.vit5_classification.ViT5ClassificationNet`.

Each check raises ``ValueError``/``TypeError`` naming the argument, the value given and what was
expected: the constructor's readout neck, block layout (``block_cfg`` vs ``layer_pattern`` +
``layer_types``), ``padding_types``, which blocks see the padding tokens, the ``out_norm`` width,
and the images given to the forward pass (checked in full only in plain eager calls: see
:func:`check_images`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from vit5._validation import positive_int
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.ops.capture import capture_mode

__all__ = [
    "FINITE_CHECKS",
    "block_needs_padding",
    "check_images",
    "check_neck",
    "check_out_norm",
    "check_padding_types",
    "check_pattern",
]


def check_neck(readout: str, ratio: int | None, num_registers: int, hidden_dim: int) -> int | None:
    """``register_concat`` neck width ``hidden_dim / ratio`` (``None`` for the other readouts)."""
    if readout != "register_concat":
        return None
    if ratio is None:
        raise ValueError("neck_compression_ratio is required when readout='register_concat'")
    positive_int("neck_compression_ratio", ratio)
    if num_registers == 0:
        raise ValueError("num_registers must be > 0 for readout='register_concat', got 0")
    if hidden_dim % ratio:
        raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by neck_compression_ratio ({ratio})")
    return hidden_dim // ratio


def check_pattern(
    block_cfg: Any, pattern: str | None, layer_types: Mapping | None, num_blocks: int
) -> str | None:
    """The hybrid ``layer_pattern`` (``None`` in homogeneous ``block_cfg`` mode)."""
    if pattern is None:
        if layer_types is not None:
            raise ValueError(
                "layer_types is only used together with layer_pattern; got layer_types without it"
            )
        if block_cfg is None:
            raise ValueError("either block_cfg or layer_pattern + layer_types must be given; got neither")
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"layer_pattern must be a str such as 'HA' * 6, got {pattern!r}")
    if block_cfg is not None:
        raise ValueError("block_cfg and layer_pattern are mutually exclusive; give one of them")
    if not isinstance(layer_types, Mapping) or not layer_types:
        raise ValueError(
            f"layer_types (a dict char -> block config) is required with layer_pattern, got {layer_types!r}"
        )
    if len(pattern) != num_blocks:
        raise ValueError(f"layer_pattern length ({len(pattern)}) must equal num_blocks ({num_blocks})")
    unknown = sorted(set(pattern) - set(layer_types))
    if unknown:
        raise ValueError(
            f"layer_pattern {pattern!r} uses {unknown} which are not keys of layer_types {sorted(layer_types)}"
        )
    return pattern


def check_padding_types(padding_types: Any) -> set[str]:
    """``padding_types`` as a set of ``layer_pattern`` characters (default ``{"H"}``)."""
    if padding_types is None:
        return {"H"}
    if isinstance(padding_types, str):
        return set(padding_types)
    try:
        items = set(padding_types)
    except TypeError:
        raise TypeError(
            f"padding_types must be a set of layer_pattern characters, got {padding_types!r}"
        ) from None
    if not all(isinstance(item, str) for item in items):
        raise TypeError(f"padding_types must contain layer_pattern characters (str), got {padding_types!r}")
    return items


def block_needs_padding(
    block: nn.Module,
    index: int,
    *,
    layer_pattern: str | None,
    padding_types: set[str],
    pad_size: int,
    num_non_pad: int,
    grid_w: int,
    use_cls_token: bool,
    num_registers: int,
    readout: str,
) -> bool:
    """Whether block ``index`` gets the padded sequence; checks its mixer against the network.

    Args:
        block: The built block (its ``sequence_mixer`` is inspected).
        index: Its position in the network.
        layer_pattern: The hybrid pattern, or ``None`` in homogeneous mode (grid mixers get padding).
        padding_types: Pattern characters whose blocks get the padding.
        pad_size: Number of padding tokens ``P``.
        num_non_pad: Tokens without the padding (``g*g + cls + R``).
        grid_w: Patch grid width ``g``.
        use_cls_token: The network has a CLS token.
        num_registers: Number of register tokens ``R``.
        readout: The network's readout (for the error message).
    """
    mixer = getattr(block, "sequence_mixer", None)
    is_grid = isinstance(mixer, ViT5HyenaAdapter)
    where = f"block {index}" + (f" ({layer_pattern[index]!r})" if layer_pattern else "")
    if layer_pattern is None:
        needs = is_grid
    else:
        needs = layer_pattern[index] in padding_types
        if pad_size and is_grid and not needs:
            raise ValueError(
                f"{where} is a 2D grid mixer but its letter is not in padding_types "
                f"{sorted(padding_types)}: it would get {num_non_pad} tokens, not a multiple of "
                f"the grid width {grid_w}. Add it to padding_types."
            )
        if pad_size and isinstance(mixer, ViT5Attention) and needs:
            raise ValueError(
                f"{where} is an attention block but its letter is in padding_types {sorted(padding_types)}; "
                "attention blocks must not receive the padding tokens"
            )
    if is_grid and mixer.grid_w != grid_w:
        raise ValueError(
            f"{where}: ViT5HyenaAdapter grid_w={mixer.grid_w} must equal the patch grid width {grid_w}"
        )
    if isinstance(mixer, ViT5Attention):
        expected = {
            "has_cls": use_cls_token,
            "num_registers": num_registers,
            "num_patches_h": grid_w,
            "num_patches_w": grid_w,
        }
        wrong = {key: getattr(mixer, key) for key, value in expected.items() if getattr(mixer, key) != value}
        if wrong:
            raise ValueError(
                f"{where}: ViT5Attention settings {wrong} disagree with the network, which needs {expected} "
                f"(readout={readout!r}, num_registers={num_registers}, "
                f"image_size/patch_size={grid_w})"
            )
    return needs


def check_out_norm(out_norm: nn.Module, head_dim: int, readout: str) -> None:
    """``out_norm``'s width (if it has a 1-D ``weight``) must equal the readout width ``head_dim``."""
    weight = getattr(out_norm, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.shape[0] != head_dim:
        detail = (
            f"num_registers * hidden_dim / neck_compression_ratio = {head_dim} for readout='register_concat'"
            if readout == "register_concat"
            else f"hidden_dim = {head_dim}"
        )
        raise ValueError(
            f"norm_cfg builds a norm of width {weight.shape[0]}, but the readout width is {detail}"
        )


FINITE_CHECKS = ("cpu", "always", "never")


def check_images(x: Any, image_size: int, in_channels: int, finite_check: str = "cpu") -> torch.Tensor:
    """``x`` must be floating-point channels-last images ``[B > 0, image_size, image_size, C]``.

    What runs depends on how the forward runs (:func:`vit5.ops.capture.capture_mode`):

    * eager: type, shape (with a hint for channels-first input), dtype and empty-batch checks, and
      the finiteness check selected by ``finite_check``;
    * ``torch.compile`` / ``torch.export`` / ONNX export: the static shape and dtype checks only
      (they are resolved while tracing and leave nothing in the graph); the batch size may be
      symbolic, so the empty-batch and finiteness checks are skipped (no data-dependent branch);
    * FX symbolic tracing: nothing (the input is a ``Proxy`` without a shape).

    Args:
        x: The images.
        image_size: Expected height and width.
        in_channels: Expected channels.
        finite_check: ``"cpu"`` (default): reject NaN/inf in CPU inputs only. On an accelerator the
            check would read a result back to the host and stall the device queue on every call,
            so it is skipped there. ``"always"``: check on every device (synchronises CUDA).
            ``"never"``: no finiteness check.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong shape or dtype, an empty batch, or non-finite values.
    """
    mode = capture_mode()
    if mode == "fx":
        return x
    if finite_check not in FINITE_CHECKS:
        raise ValueError(f"finite_check must be one of {FINITE_CHECKS}, got {finite_check!r}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor [B, H, W, C], got {type(x).__name__}")
    expected = (image_size, image_size, in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        hint = ""
        if x.ndim == 4 and x.shape[1] == in_channels and x.shape[-1] != in_channels:
            hint = " (it looks channels-first; the network takes channels-last: x.permute(0, 2, 3, 1))"
        raise ValueError(
            f"input must have shape [B, {image_size}, {image_size}, {in_channels}] "
            f"(channels-last), got {tuple(x.shape)}{hint}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"input must be a floating-point tensor, got {x.dtype} (convert images, e.g. x.float() / 255)"
        )
    if mode != "eager":
        return x
    if x.shape[0] == 0:
        raise ValueError("input is an empty batch (B = 0)")
    check = finite_check == "always" or (finite_check == "cpu" and x.device.type == "cpu")
    # One reduction over the input (a NaN would otherwise surface as NaN logits far downstream):
    # min and max propagate NaN and show an infinity, with no boolean tensor of the input's size.
    if check and not bool(torch.isfinite(torch.stack(torch.aminmax(x))).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"input contains {bad} NaN or infinite values; check the data pipeline")
    return x
