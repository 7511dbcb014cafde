"""Write any checkpoint vit5 can load as a vit5 ``.safetensors`` file, or in the official layout.

``vit5 convert SOURCE --out FILE`` is :func:`convert_checkpoint`. A vit5 file records the network
config of the model it holds (after ``image_size``, if given: loading it does not resize again)
and its ``pretrained_cfg``, so :func:`vit5.load_model` rebuilds it from the file alone. The official
layout (``to="official"``) is the official ViT-5 state dict, RoPE buffers included, saved as
``{"model": state_dict}`` (``.pth``) or as a bare ``.safetensors`` state dict.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vit5._io import atomic_write
from vit5.io import CheckpointError, save_weights
from vit5.networks.official import vit5_to_official
from vit5.weights import load_model_and_config

__all__ = ["convert_checkpoint", "save_model"]

FORMATS = ("vit5", "official")


def save_model(path: str | os.PathLike, model: torch.nn.Module, model_config: Mapping[str, Any],
               *, data: Mapping[str, Any] | None = None, ema: bool = False) -> Path:  # fmt: skip
    """Write ``model`` as a vit5 ``.safetensors`` file carrying ``model_config`` and ``pretrained_cfg``."""
    metadata = {"config": {"model": dict(model_config)}, "data": dict(data or {}),
                "pretrained_cfg": model.pretrained_cfg, "ema": bool(ema)}  # fmt: skip
    return save_weights(path, model.state_dict(), metadata)


def convert_checkpoint(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    to: str = "vit5",
    ema: bool = False,
    image_size: int | None = None,
    trust_config: bool = False,
    config: Any = None,
) -> Path:
    """Load ``source`` (anything :func:`vit5.load_model` takes) and write it to ``out``.

    Args:
        source: The checkpoint.
        out: The file to write (atomically: a failed conversion leaves nothing behind). ``to="vit5"``
            needs a ``.safetensors`` name; ``to="official"`` writes ``.pth`` or ``.safetensors``.
        to: ``"vit5"`` or ``"official"``.
        ema, image_size, trust_config, config: As for :func:`vit5.load_model`.

    Raises:
        ValueError: an unknown format or file suffix, a source that cannot be loaded, or a network
            that is not in the official layout (for ``to="official"``).
    """
    if to not in FORMATS:
        raise ValueError(f"to must be one of {', '.join(FORMATS)}, got {to!r}")
    out = Path(out)
    suffixes = (".safetensors",) if to == "vit5" else (".pth", ".pt", ".safetensors")
    if out.suffix not in suffixes:
        raise ValueError(f"--out {out}: a {to} checkpoint is written as {' or '.join(suffixes)}")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory, expected a file name")
    loaded = load_model_and_config(
        source, ema=ema, image_size=image_size, trust_config=trust_config, config=config
    )
    if to == "vit5":
        return save_model(out, loaded.model, loaded.model_config, data=loaded.data, ema=loaded.ema)
    model = loaded.model
    attention = next(
        (m for m in model.modules() if hasattr(m, "rope_base") and hasattr(m, "reg_rope_base")), None
    )
    bases = (
        {}
        if attention is None
        else {"rope_base": attention.rope_base, "reg_rope_base": attention.reg_rope_base}
    )
    try:
        state = vit5_to_official(model.state_dict(), **bases)
    except ValueError as error:
        raise CheckpointError(f"{source}: not convertible to the official layout: {error}") from None
    if out.suffix == ".safetensors":
        return save_weights(out, state, {})
    return atomic_write(out, lambda handle: torch.save({"model": state}, handle))
