"""A model as :func:`vit5.hub.save_pretrained` writes it (and a Hub repo holds it): ``config.json`` in
timm's layout plus ``model.safetensors`` with vit5's state-dict keys.

``config.json``::

    architecture     the timm name of a vit5 preset (model_args = vit5_config keywords changed
                     from that preset), or "vit5_from_config" (model_args.config = the network's
                     full config tree, checked against the target registry on load)
    num_classes, num_features
    model_args
    pretrained_cfg   input_size, mean, std, interpolation, crop_pct, num_classes, class_names,
                     class_descriptions, timm's label_names / label_descriptions, ...
    vit5             {"format": "vit5-hub", "ema": whether the weights are EMA weights}
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vit5.config import TARGET_KEY, LazyConfig, to_container
from vit5.config.registry import check_config_targets
from vit5.io.weights_file import CheckpointError, file_digest, load_weights
from vit5.networks.presets import (
    build_vit5,
    list_models,
    model_config,
    preset_arguments,
    resolve_model_name,
    timm_name,
)
from vit5.networks.presets import vit5_config as _vit5_config
from vit5.networks.pretrained_cfg import updated_pretrained_cfg
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = ["CONFIG", "FROM_CONFIG", "WEIGHTS", "load_repo", "read_repo_config", "repo_config"]

logger = logging.getLogger("vit5.weights")

CONFIG, WEIGHTS = "config.json", "model.safetensors"
FROM_CONFIG = "vit5_from_config"
#: A config.json larger than this is refused unread (a full config tree is a few tens of KB).
MAX_CONFIG_BYTES = 16 << 20
FORMAT = "vit5-hub"
_BUILD_VIT5 = "vit5.networks.presets.build_vit5"


def _preset_form(model_config_tree: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``(timm name, changed keywords)`` of the preset closest to a ``build_vit5`` config, else ``None``."""
    if model_config_tree.get(TARGET_KEY) != _BUILD_VIT5:
        return None
    defaults = {k: p.default for k, p in inspect.signature(_vit5_config).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    wanted = {**defaults, **{k: v for k, v in model_config_tree.items() if k != TARGET_KEY}}
    best = None
    for preset in list_models():
        try:
            arguments = {**defaults, **preset_arguments(preset)}
        except ValueError:  # a preset registered from outside: no recorded arguments
            continue
        if set(arguments) != set(wanted):
            continue
        changed = {k: v for k, v in wanted.items() if arguments[k] != v}
        if best is None or len(changed) < len(best[1]):
            best = (timm_name(preset), changed)
    return best


def repo_config(
    model: ViT5ClassificationNet, model_config_tree: Mapping[str, Any], *, ema: bool = False
) -> dict:
    """The ``config.json`` of ``model`` (its config tree as :func:`vit5.load_model_and_config` gives it)."""
    tree = to_container(model_config_tree)
    form = _preset_form(tree)
    if form is not None:
        architecture, model_args = form
    else:
        architecture, model_args = FROM_CONFIG, {"config": tree}
    cfg = dict(model.pretrained_cfg)
    names, descriptions = cfg.get("class_names"), cfg.get("class_descriptions")
    pretrained = {
        key: cfg[key] for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "num_classes")
    }
    pretrained.update(
        class_names=names, class_descriptions=descriptions, fixed_input_size=True,
        first_conv="net.patch_embed", classifier="net.out_proj",
        label_names=names, label_descriptions=dict(zip(names, descriptions)) if names and descriptions else None,
    )  # fmt: skip
    return {
        "architecture": architecture,
        "num_classes": model.num_classes,
        "num_features": model.head_dim,
        "model_args": model_args,
        "pretrained_cfg": pretrained,
        "vit5": {"format": FORMAT, "ema": bool(ema)},
    }


def read_repo_config(path: str | os.PathLike, label: str | None = None) -> dict[str, Any]:
    """``config.json`` of a saved model directory, checked for the keys vit5 needs.

    Raises:
        CheckpointError: unreadable, not JSON, or not a vit5 model's config.
    """
    file = Path(path) / CONFIG
    label = label or str(path)
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{size} bytes, more than a model's config needs ({MAX_CONFIG_BYTES})")
        config = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{label}: unreadable {CONFIG} ({error})") from None
    except RecursionError:
        raise CheckpointError(f"{label}: unreadable {CONFIG} (nested too deeply)") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise CheckpointError(f"{label}: {CONFIG} has no architecture")
    if not isinstance(config.get("model_args", {}), dict) or not isinstance(
        config.get("pretrained_cfg", {}), dict
    ):
        raise CheckpointError(f"{label}: {CONFIG} has malformed model_args / pretrained_cfg")
    return config


def network_config(config: Mapping[str, Any], label: str, trust_config: bool) -> Any:
    """The network config tree a ``config.json`` describes (targets checked against the registry)."""
    architecture, model_args = config["architecture"], dict(config.get("model_args") or {})
    if architecture == FROM_CONFIG:
        tree = model_args.get("config")
        if not isinstance(tree, Mapping):
            raise CheckpointError(f"{label}: {CONFIG} architecture {FROM_CONFIG} without model_args.config")
        return check_config_targets(tree, f"{label} ({CONFIG})", trust_config=trust_config)
    try:
        preset = resolve_model_name(architecture)
        model_config(preset, **model_args)  # checks the keywords
        try:  # the compact build_vit5 form, so a re-save writes preset + model_args again
            return to_container(LazyConfig(build_vit5)(**{**preset_arguments(preset), **model_args}))
        except ValueError:  # a preset registered from outside
            return to_container(model_config(preset, **model_args))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{label}: {CONFIG} does not describe a vit5 network: {error}") from None


def load_repo(
    path: str | os.PathLike, *, ema: bool = False, trust_config: bool = False, label: str | None = None
) -> tuple[ViT5ClassificationNet, Any]:
    """The eval-mode network of a saved model directory and its config tree.

    Raises:
        CheckpointError: a damaged or foreign ``config.json``, missing or mismatching weights,
            ``ema=True`` when the saved weights are not EMA weights.
    """
    from vit5.io.loader import build_loaded

    path = Path(path)
    label = label or str(path)
    config = read_repo_config(path, label)
    saved_ema = bool((config.get("vit5") or {}).get("ema"))
    if ema and not saved_ema:
        raise CheckpointError(
            f"{label}: holds the model weights, not EMA weights (push it with --ema, or drop ema)"
        )
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{label}: no {WEIGHTS} next to {CONFIG}")
    tree = network_config(config, label, trust_config)
    tensors, _ = load_weights(weights)
    model = build_loaded(tree, tensors, label)
    stored = config.get("pretrained_cfg") or {}
    try:
        model.pretrained_cfg = updated_pretrained_cfg(
            model.pretrained_cfg,
            **{key: stored[key] for key in ("mean", "std", "interpolation", "crop_pct", "class_names",
                                             "class_descriptions") if key in stored},
            source=str(path), sha256=file_digest(weights),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{label}: damaged pretrained_cfg in {CONFIG} ({error})") from None
    return model, tree
