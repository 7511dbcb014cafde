"""Fine-tuning: load pretrained weights, start a network from them, freeze the backbone.

The pretrained weights are read by :func:`vit5.load_model` from any source it takes (a local path,
a published name, ``hf-hub:``, an https URL, :mod:`vit5.io.sources`), never with a plain
``torch.load``; downloads are cached and checked by the shared downloader (URLs in
``$HF_HOME/vit5/urls/``, Hub files in the Hugging Face cache), and against ``sha256`` when one is
given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit5.io import file_digest as file_sha256
from vit5.io.download import is_url
from vit5.networks.resize import resample_pos_embed

logger = logging.getLogger("vit5.train")

HEAD_PREFIXES = ("out_proj.",)

__all__ = [
    "Pretrained",
    "describe_architecture",
    "freeze_backbone",
    "init_from_pretrained",
    "is_url",
    "load_pretrained",
]


@dataclass
class Pretrained:
    """A loaded pretrained network and where it came from."""

    model: nn.Module
    config: Any  # the network config (LazyConfig tree or build_vit5 call) at its own resolution
    source: str  # the path (absolute), name, hf-hub: id or URL the user gave
    path: Path  # the local file or directory read
    sha256: str | None
    ema: bool
    resolved_url: str | None = None  # the URL downloaded (after redirects), for remote sources
    revision: str | None = None  # the Hub commit, for Hub sources


def load_pretrained(
    source: str,
    *,
    ema: bool = False,
    sha256: str | None = None,
    trust_config: bool = False,
    from_config_file: bool = True,
) -> Pretrained:
    """Load fine-tuning weights with :func:`vit5.weights.load_model_and_config` from any source.

    Args:
        source: A path, published name, ``hf-hub:`` id or URL.
        ema: Load the EMA weights.
        sha256: The expected SHA-256 of the weights file (checked; a download that differs is
            deleted, fetched once more, then refused).
        trust_config: Build configs with unregistered targets; fetch a URL read from a config file.
        from_config_file: ``source`` was read from a config file (``train.finetune:``), not typed
            on the command line: a raw URL then needs ``trust_config``.

    Raises:
        ValueError: unreadable or unsafe file, missing EMA weights, a sha256 mismatch, an unknown
            source, a failed download.
        FileNotFoundError: a path-like source that does not exist.
    """
    from vit5.io.loader import load_model_and_config
    from vit5.io.sources import HUB_PREFIX, published_name, resolve_source

    text = str(source)
    local = Path(text).expanduser()
    remote = (
        is_url(text)
        or text.startswith(HUB_PREFIX)
        or (published_name(text) is not None and not local.exists())
    )
    if not remote:
        if not local.exists():
            raise FileNotFoundError(f"--finetune {text}: no such file or directory")
        text = str(local.absolute())
    resolved = resolve_source(
        text, from_config_file=from_config_file, trust_config=trust_config, sha256=sha256
    )
    loaded = load_model_and_config(resolved.path, ema=ema, trust_config=trust_config)
    info = getattr(loaded.model, "pretrained_cfg", None) or {}
    digest = (
        resolved.sha256
        or info.get("sha256")
        or (file_sha256(resolved.path) if resolved.path.is_file() else None)
    )
    return Pretrained(loaded.model, loaded.model_config, text, resolved.path, digest, ema,
                      resolved.resolved_url, resolved.revision)  # fmt: skip


def init_from_pretrained(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy pretrained tensors into a freshly built ``model``, in place.

    ``pos_embed`` is resampled bicubically to the model's patch grid when the grids differ; the head
    (``out_proj``) keeps its fresh initialisation when the class count differs (it is loaded when
    equal); every other tensor must match in name and shape.

    Returns:
        What was adapted, as short phrases for the log (empty when everything loaded as is).

    Raises:
        ValueError: missing, unexpected or mis-shaped tensors (listed).
    """
    own = model.state_dict()
    loaded, notes, wrong = {}, [], []
    for key, target in own.items():
        if key not in state:
            continue
        tensor = state[key]
        if tuple(tensor.shape) == tuple(target.shape):
            loaded[key] = tensor
        elif key == "pos_embed" and tensor.ndim == 3 and tensor.shape[2] == target.shape[2]:
            grid = getattr(model, "_grid_w", None) or round(target.shape[1] ** 0.5)
            loaded[key] = resample_pos_embed(tensor, grid)
            notes.append(f"pos_embed resampled {tensor.shape[1]} -> {target.shape[1]} positions")
        elif key.startswith(HEAD_PREFIXES):
            continue
        else:
            wrong.append(f"{key}: pretrained {tuple(tensor.shape)}, model {tuple(target.shape)}")
    head_new = [key for key in own if key.startswith(HEAD_PREFIXES) and key not in loaded]
    if head_new:
        notes.append(f"new {getattr(model, 'num_classes', '?')}-class head")
    elif any(key.startswith(HEAD_PREFIXES) for key in loaded):
        notes.append(f"{getattr(model, 'num_classes', '?')}-class head kept")
    missing = sorted(set(own) - set(loaded) - set(head_new))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected or wrong:
        raise ValueError(
            "the pretrained weights do not fit the model: "
            + "; ".join(
                f"{label} {items[:8]}{'...' if len(items) > 8 else ''}"
                for label, items in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("wrong shapes", wrong),
                )
                if items
            )
        )
    model.load_state_dict(loaded, strict=not head_new)
    return notes


def freeze_backbone(model: nn.Module) -> int:
    """Linear probe: every parameter but the head (``out_proj``) stops training. Returns the number
    of trainable parameters left."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(HEAD_PREFIXES))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        raise ValueError("train.freeze=backbone: the model has no `out_proj` head to train")
    return trainable


def describe_architecture(model: nn.Module) -> str:
    """One line naming the architecture: mixer pattern, width, depth, patch, resolution, classes."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "hidden_dim"):
        return type(model).__name__
    kinds = []
    for block in blocks:
        mixer = type(getattr(block, "sequence_mixer", block)).__name__
        kinds.append("A" if "Attention" in mixer else "H" if "Hyena" in mixer else "?")
    pattern = "".join(kinds)
    name = {"A": "attention", "H": "Hyena"}.get(pattern[0], "mixed") if len(set(pattern)) == 1 else "hybrid"
    return (
        f"ViT-5 {name} ({pattern}), D={model.hidden_dim}, {len(blocks)} blocks, patch {model.patch_size}, "
        f"{model.image_size} px, {model.in_channels} channel{'s' if model.in_channels > 1 else ''}, "
        f"{model.num_classes} classes"
    )
