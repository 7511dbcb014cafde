"""timm: the weights loader behind ``timm.create_model(name, pretrained=True)``, ``("hf-hub:ORG/REPO")``
and ``("local-dir:DIR")``, and the ``vit5_from_config`` entry point, installed by ``import vit5``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vit5.config import instantiate
from vit5.config.registry import check_config_targets
from vit5.hub.pretrained import adapt
from vit5.hub.share import CONFIG_ATTR, attach_mixin
from vit5.io.hub_repo import FROM_CONFIG
from vit5.io.imagenet import imagenet_class_descriptions, imagenet_class_names
from vit5.io.loader import build_unloaded, load_model, load_model_and_config
from vit5.io.nvsubq import load_nvsubquadratic_checkpoint
from vit5.io.official import build_official, is_official
from vit5.io.weights_file import read_weights_file
from vit5.networks.budget import check_network_budget
from vit5.networks.interop import extract_state_dict
from vit5.networks.official import unwrap_official
from vit5.networks.presets import OFFICIAL_PRESETS, model_config, resolve_model_name
from vit5.networks.pretrained_cfg import CODE_LICENSE, PUBLISHED, WEIGHTS_LICENSE_NOTE, updated_pretrained_cfg
from vit5.networks.resize import resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = ["install_timm", "published_timm_cfg", "timm_pretrained"]


def _timm_source(cfg: Mapping[str, Any]) -> str:
    """Where the weights of a timm cfg are: ``file``, else ``hf_hub_id`` (+ ``hf_hub_filename``), else ``url``.

    A ``hf-hub:`` model's cfg comes from the repo's ``config.json`` (a received file): only its
    ``hf_hub_id`` (set by timm to the repo the user named) counts, so the file cannot point vit5
    at a local path (``file``) or another server (``url``).
    """
    if cfg.get("source") == "hf-hub" and cfg.get("hf_hub_id"):
        cfg = {key: cfg.get(key) for key in ("hf_hub_id", "hf_hub_filename")}
    if cfg.get("file"):
        return str(cfg["file"])
    if cfg.get("hf_hub_id"):
        hub_id = str(cfg["hf_hub_id"])
        return (
            f"hf-hub:{hub_id}/{cfg['hf_hub_filename']}" if cfg.get("hf_hub_filename") else f"hf-hub:{hub_id}"
        )
    if cfg.get("url"):
        return str(cfg["url"])
    raise ValueError("the pretrained_cfg names no weights (file, hf_hub_id or url)")


def timm_pretrained(
    preset: str, cfg: Mapping[str, Any], overrides: Mapping[str, Any], cache_dir: Any = None
) -> ViT5ClassificationNet:
    """The network of ``timm.create_model(<preset>, pretrained=True, ...)`` (see :mod:`vit5.networks.timm_models`).

    The cfg's ``file`` (a local file or saved directory), ``hf_hub_id`` (+ ``hf_hub_filename``) or
    ``url`` is resolved by :func:`vit5.io.sources.resolve_source` and read by vit5's loaders. The
    network keeps the checkpoint's resolution and class count, then is resized to
    ``overrides["image_size"]`` if given; the caller replaces the head for another class count.
    A local pickle without a recorded config (nvSubquadratic state dict) is built as ``preset``.
    """
    overrides = dict(overrides)
    image_size = overrides.pop("image_size", None)
    overrides.pop("num_classes", None)
    source = _timm_source(cfg)
    local = Path(source).expanduser()
    if cfg.get("file") and local.is_file() and not _has_vit5_config(local):
        net, tree = _timm_local_file(local, preset, overrides)
    else:
        loaded = load_model_and_config(source, cache_dir=cache_dir)
        if loaded.kind == "official":
            _check_official_preset(preset, source)
            overrides = {}
        if overrides.pop("config", None) is not None or loaded.kind == "hub":
            overrides = {}  # a saved model's own arguments: the loaded network already has them
        net = adapt(loaded, _changed(loaded.model_config, overrides), None, source)
        tree = net.__dict__.get(CONFIG_ATTR, loaded.model_config)
    if image_size is not None and image_size != net.image_size:
        cfg_before = net.pretrained_cfg
        net = resize_model(net, image_size, config=tree).eval()
        net.pretrained_cfg = updated_pretrained_cfg(cfg_before, image_size=image_size)
    return net


def _changed(tree: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if tree.get(k, v) != v or k not in tree}


def _has_vit5_config(path: Path) -> bool:
    """Whether a local file carries its own network config or is an official checkpoint (vit5 loads it alone)."""
    try:
        checkpoint = read_weights_file(path, inert=True)
    except ValueError:
        return True  # let load_model report it
    if not isinstance(checkpoint, Mapping):
        return True
    return is_official(checkpoint) or bool(checkpoint.get("hyper_parameters") or checkpoint.get("hparams"))


def _check_official_preset(preset: str, source: str) -> None:
    if resolve_model_name(preset) not in OFFICIAL_PRESETS:
        raise ValueError(
            f"{source} is an official ViT-5 checkpoint; it loads into {'|'.join(OFFICIAL_PRESETS)}, not {preset!r}"
        )


def _timm_local_file(path: Path, preset: str, overrides: dict[str, Any]) -> tuple[ViT5ClassificationNet, Any]:
    """A state dict without a config (e.g. nvSubquadratic's), built as ``preset`` at its trained size."""
    checkpoint = read_weights_file(path, inert=True)
    if is_official(checkpoint):
        _check_official_preset(preset, str(path))
        return build_official(unwrap_official(checkpoint))
    with torch.device("meta"):
        probe = instantiate(model_config(preset, **overrides))
    state = extract_state_dict(checkpoint, list(probe.state_dict()))
    patch_size = model_config(preset, **overrides).patch_size
    grid = int(round(state["pos_embed"].shape[1] ** 0.5))
    trained = {"image_size": grid * patch_size, "num_classes": state["out_proj.weight"].shape[0]}
    tree = model_config(preset, **overrides, **trained)
    check_network_budget(tree, str(path))  # its size and class count come from the file's tensors
    net = load_nvsubquadratic_checkpoint(instantiate(tree), state)
    return net.eval(), tree


def published_timm_cfg(name: str) -> dict[str, Any]:
    """timm cfg fields of a published name (``hf_hub_id``, ``hf_hub_filename``, labels, paper top-1)."""
    if name not in PUBLISHED:
        return {}
    entry = PUBLISHED[name]
    names, descriptions = imagenet_class_names(), imagenet_class_descriptions()
    return dict(
        hf_hub_id=entry.hf_hub_id, hf_hub_filename=entry.hf_hub_filename, num_classes=1000,
        label_names=tuple(names), label_descriptions=dict(zip(names, descriptions)),
        paper_name="ViT-5", notes=(f"ImageNet-1k top-1 {entry.top1}% (paper)", WEIGHTS_LICENSE_NOTE),
        license=CODE_LICENSE,
    )  # fmt: skip


def _timm_from_config(pretrained: bool = False, **kwargs: Any) -> Any:
    """timm entry point ``vit5_from_config``: a saved network whose config is a full tree."""
    from vit5.networks.timm_models import TimmViT5, timm_fields

    cfg = timm_fields(kwargs.pop("pretrained_cfg", None)) or {}
    cfg = cfg if isinstance(cfg, Mapping) else cfg.to_dict(remove_source=False, remove_null=False)
    cfg = {**cfg, **(kwargs.pop("pretrained_cfg_overlay", None) or {})}
    cache_dir = kwargs.pop("cache_dir", None)
    tree = kwargs.pop("config", None)
    num_classes = kwargs.pop("num_classes", None)
    for key in ("pretrained_model_args", "img_size", "device", "dtype"):
        kwargs.pop(key, None)
    if kwargs:
        raise TypeError(f"{FROM_CONFIG}: unsupported keywords {sorted(kwargs)}")
    if pretrained or cfg.get("source") in ("hf-hub", "local-dir"):
        net = load_model(_timm_source(cfg), cache_dir=cache_dir)
    else:
        if not isinstance(tree, Mapping):
            raise ValueError(f"{FROM_CONFIG} needs config= (a network config tree)")
        net = build_unloaded(check_config_targets(tree, FROM_CONFIG), FROM_CONFIG)
    model = TimmViT5(net, num_classes=num_classes)
    ours = net.pretrained_cfg
    model.pretrained_cfg = model.default_cfg = {
        **{k: v for k, v in cfg.items() if v is not None}, "architecture": FROM_CONFIG,
        "input_size": (net.in_channels, net.image_size, net.image_size), "num_classes": model.num_classes,
        "interpolation": ours["interpolation"], "crop_pct": ours["crop_pct"],
        "mean": tuple(ours["mean"]), "std": tuple(ours["std"]),
    }  # fmt: skip
    return model


def install_timm() -> None:
    """Register vit5 in timm: every preset (published names with their Hub cfg), the loader, the
    ``vit5_from_config`` entry point, and the Hub methods on the wrapper."""
    import timm
    from timm.models import register_model as timm_register_model

    from vit5.networks import timm_models

    timm_models.configure(timm_pretrained, published_timm_cfg)
    attach_mixin(timm_models.TimmViT5)
    if not timm.models.is_model(FROM_CONFIG):
        _timm_from_config.__name__ = _timm_from_config.__qualname__ = FROM_CONFIG
        timm_models.default_cfgs[FROM_CONFIG] = dict(url="", num_classes=1000, input_size=(3, 224, 224),
                                                     fixed_input_size=True, license=CODE_LICENSE)  # fmt: skip
        _timm_from_config.__module__ = timm_models.__name__
        timm_register_model(_timm_from_config)
