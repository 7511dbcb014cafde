"""nvSubquadratic / Lightning checkpoints: weights wherever the file keeps them, and the network
config recorded in its hyper-parameters (read as inert data, never run)."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from torch import nn

from vit5.config import TARGET_KEY, locate
from vit5.config.registry import config_targets, resolve_config_target
from vit5.io.official import as_mapping
from vit5.io.weights_file import read_weights_file
from vit5.networks.interop import extract_state_dict

__all__ = ["function_reference", "load_nvsubquadratic_checkpoint", "network_config_in"]


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
    ``net.`` / ``model.`` prefix, EMA copies (``ema=True``), DDP / ``torch.compile`` prefixes. A
    Lightning file's hyper-parameters are read as inert data (:func:`vit5.io.load_pickle_inert`).

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
    if isinstance(path_or_checkpoint, (str, os.PathLike)):
        checkpoint = read_weights_file(path_or_checkpoint, inert=True)
    else:
        checkpoint = as_mapping(path_or_checkpoint, "path_or_checkpoint")
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


def network_config_in(value: Any, depth: int = 0) -> Mapping | None:
    """The first recorded ``ViT5ClassificationNet`` call inside Lightning hyper-parameters."""
    if depth > 5:
        return None
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        if isinstance(target, str) and target.rsplit(".", 1)[-1] in ("ViT5ClassificationNet", "build_vit5"):
            return value
        preferred = [k for k in ("net", "model", "network", "cfg", "config") if k in value]
        for key in preferred + [k for k in value if k not in preferred]:
            found = network_config_in(value[key], depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = network_config_in(item, depth + 1)
            if found is not None:
                return found
    return None


def function_reference(name: str, source: str, trust_config: bool) -> Any:
    """A function stored by reference in a foreign config (nvSubquadratic stores ``small_init``
    itself): the recorded call of its registered zero-argument ``<name>_factory`` when vit5 has one
    (so the config stays savable), else the registered callable. Unregistered names are refused."""
    if trust_config:
        return locate(name)
    path = resolve_config_target(name, source)
    factory = f"{path}_factory"
    if factory in config_targets():
        return {TARGET_KEY: factory}
    return config_targets()[path]
