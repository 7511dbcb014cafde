"""Fine-tuning: fetch and load pretrained weights, start a network from them, freeze the backbone.

The pretrained weights are read by :func:`vit5.load_model` (vit5 runs and ``.safetensors`` files,
official ``.pth`` checkpoints, nvSubquadratic ``.ckpt`` files), never with a plain ``torch.load``.
An ``http(s)://`` source is downloaded once into the cache directory (``$VIT5_CACHE``, default
``~/.cache/vit5``) and checked against a sha256 when one is given.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit5.io import file_digest as file_sha256
from vit5.networks.resize import resample_pos_embed

logger = logging.getLogger("vit5.train")

HEAD_PREFIXES = ("out_proj.",)


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(str(source)).scheme in ("http", "https")


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$VIT5_CACHE`` or ``~/.cache/vit5``."""
    return Path(os.environ.get("VIT5_CACHE") or Path.home() / ".cache" / "vit5")


def fetch(url: str, sha256: str | None = None, directory: str | os.PathLike | None = None) -> Path:
    """The local copy of ``url``: downloaded once into ``directory`` (default :func:`cache_dir`).

    The file is written to a temporary name and renamed when complete, so an interrupted download
    leaves nothing that looks finished. A cached copy is reused if its sha256 matches (or if none is
    given).

    Raises:
        ValueError: the download fails, or its sha256 differs from ``sha256`` (the file is deleted).
    """
    directory = Path(directory) if directory is not None else cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "weights"
    target = directory / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    if target.is_file():
        if sha256 is None or file_sha256(target) == sha256.lower():
            return target
        logger.warning("cached %s does not match sha256 %s; downloading it again", target, sha256)
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        actual = file_sha256(temporary)
        if sha256 is not None and actual != sha256.lower():
            raise ValueError(f"{url}: downloaded file has sha256 {actual}, expected {sha256.lower()}")
        os.replace(temporary, target)
    except OSError as error:
        raise ValueError(f"cannot download {url}: {error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.info("downloaded %s to %s", url, target)
    return target


@dataclass
class Pretrained:
    """A loaded pretrained network and where it came from."""

    model: nn.Module
    config: Any  # the network config (LazyConfig tree or build_vit5 call) at its own resolution
    source: str  # the path or URL the user gave (absolute for paths)
    path: Path  # the local file or directory read
    sha256: str | None
    ema: bool


def load_pretrained(
    source: str, *, ema: bool = False, sha256: str | None = None, trust_config: bool = False
) -> Pretrained:
    """Load fine-tuning weights with :func:`vit5.weights.load_model_and_config` (a URL is fetched first).

    Raises:
        ValueError: unreadable or unsafe file, missing EMA weights, a sha256 mismatch.
        FileNotFoundError: no such path.
    """
    from vit5.weights import load_model_and_config

    text = str(source)
    if is_url(text):
        path = fetch(text, sha256)
    else:
        path = Path(text).expanduser().absolute()
        if not path.exists():
            raise FileNotFoundError(f"--finetune {text}: no such file or directory")
        text = str(path)
        if sha256 is not None and path.is_file() and file_sha256(path) != sha256.lower():
            raise ValueError(f"{path}: sha256 {file_sha256(path)} differs from the expected {sha256.lower()}")
    loaded = load_model_and_config(path, ema=ema, trust_config=trust_config)
    info = getattr(loaded.model, "pretrained_cfg", None) or {}
    digest = info.get("sha256") or (file_sha256(path) if path.is_file() else None)
    return Pretrained(loaded.model, loaded.model_config, text, path, digest, ema)


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
