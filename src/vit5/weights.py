"""Load the weights users have: one loader for vit5 runs, official ViT-5 and nvSubquadratic files.

* :func:`load_model` — anything below, as an eval-mode ``ViT5ClassificationNet`` with a
  ``pretrained_cfg`` (timm's keys): a vit5 run directory, checkpoint directory or ``.safetensors``
  file; an official ViT-5 ``.pth`` (a bare state dict, or the DeiT-style training dict with
  ``model`` / ``model_ema`` / ``optimizer`` / ``args``); an nvSubquadratic Lightning ``.ckpt``.
* :func:`load_official_vit5` — official ViT-5 weights (S/B/L/XL or any layout of the official code).
* :func:`load_nvsubquadratic_checkpoint` — nvSubquadratic / Lightning weights into a built network.

Reading a file never runs code from it (:mod:`vit5.io`): safetensors with safetensors; pickles
with ``torch.load(weights_only=True)`` (plus ``argparse.Namespace``), Lightning hyper-parameters
through inert placeholders; every ``__target__`` of a config read from a file must be registered
(:mod:`vit5.io.registry`) unless ``trust_config=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vit5.config import TARGET_KEY, LazyConfig, instantiate, load_config, locate, resolve, to_container
from vit5.io import (
    CheckpointError,
    check_config_targets,
    config_targets,
    file_digest,
    load_weights,
    plain_data,
    read_weights_file,
    resolve_config_target,
)
from vit5.networks.interop import extract_state_dict
from vit5.networks.official import (
    OFFICIAL_VARIANTS,
    official_layout,
    official_rope_bases,
    official_to_vit5,
    official_variant,
    unwrap_official,
)
from vit5.networks.presets import build_vit5, model_config, preset_arguments
from vit5.networks.pretrained_cfg import (
    default_pretrained_cfg,
    updated_pretrained_cfg,
)
from vit5.networks.resize import resize_config, resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "LoadedModel",
    "load_for_timm",
    "load_model",
    "load_model_and_config",
    "load_nvsubquadratic_checkpoint",
    "load_official_vit5",
    "read_weights_file",
]

logger = logging.getLogger(__name__)

_RUN_CHECKPOINTS = ("best", "last", "prev")
_WEIGHTS, _EMA_WEIGHTS, _META = "model.safetensors", "ema.safetensors", "meta.json"


# --------------------------------------------------------------------------------------------------
# Official ViT-5


def _as_mapping(path_or_state_dict: Any, name: str) -> Mapping:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return read_weights_file(path_or_state_dict)
    if isinstance(path_or_state_dict, Mapping):
        return path_or_state_dict
    raise TypeError(
        f"{name} must be a file path or a mapping (state dict / checkpoint), got {type(path_or_state_dict).__name__}"
    )


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
    official = unwrap_official(_as_mapping(path_or_state_dict, "path_or_state_dict"), use_ema=ema)
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
    model, cfg = _build_official(official, num_classes)
    if image_size is not None and image_size != layout.image_size:
        model = resize_model(model, image_size, config=cfg).eval()
    return model


def _build_official(
    official: Mapping[str, torch.Tensor], num_classes: int | None = None
) -> tuple[ViT5ClassificationNet, Any]:
    """The eval-mode network holding an unwrapped official state dict, and its ``build_vit5`` config;
    ``num_classes`` other than the checkpoint's gives a new, freshly initialised head."""
    checkpoint_classes = official_layout(official).num_classes
    new_head = num_classes is not None and num_classes != checkpoint_classes
    cfg = official_model_config(official, num_classes if new_head else None)
    model = instantiate(cfg)
    state = official_to_vit5(official)
    if new_head:  # official_layout checked every key: only the (freshly initialised) head is left out
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("out_proj.")}, strict=False)
    else:
        model.load_state_dict(state, strict=True)
    return model.eval(), cfg


# --------------------------------------------------------------------------------------------------
# nvSubquadratic / Lightning


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


def _network_config_in(value: Any, depth: int = 0) -> Mapping | None:
    """The first recorded ``ViT5ClassificationNet`` call inside Lightning hyper-parameters."""
    if depth > 5:
        return None
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        if isinstance(target, str) and target.rsplit(".", 1)[-1] in ("ViT5ClassificationNet", "build_vit5"):
            return value
        preferred = [k for k in ("net", "model", "network", "cfg", "config") if k in value]
        for key in preferred + [k for k in value if k not in preferred]:
            found = _network_config_in(value[key], depth + 1)
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for item in value:
            found = _network_config_in(item, depth + 1)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------------------------------
# One loader


@dataclass
class LoadedModel:
    """What :func:`load_model_and_config` found: the network and the configs that rebuild it."""

    model: ViT5ClassificationNet
    model_config: dict[str, Any]
    run_config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    source: Path = Path()
    ema: bool = False
    kind: str = "vit5"


def load_model(
    path: str | os.PathLike,
    *,
    ema: bool = False,
    image_size: int | None = None,
    trust_config: bool = False,
    config: Mapping | str | os.PathLike | None = None,
) -> ViT5ClassificationNet:
    """Load a trained network from any checkpoint vit5 understands, in eval mode.

    ``path`` may be:

    * a vit5 run directory (its ``best`` checkpoint, then ``last``, then ``prev``: the first that
      verifies), a checkpoint directory, or a ``.safetensors`` file written by vit5 (``vit5 train``,
      ``vit5 convert``), which carries its config;
    * an official ViT-5 ``.pth`` / ``.safetensors`` (bare, or the DeiT-style training dict);
      ``pretrained_cfg`` is the official evaluation: ImageNet mean/std, bicubic, crop ratio 1.0;
    * an nvSubquadratic Lightning ``.ckpt`` (or any checkpoint of a vit5 network): the network is
      built from the recorded ``ViT5ClassificationNet`` config in its hyper-parameters, or from
      ``config``.

    The returned network carries ``pretrained_cfg`` (``input_size``, ``mean``, ``std``,
    ``interpolation``, ``crop_pct``, ``num_classes``, ``class_names``, ``source``, ``sha256``).

    Args:
        path: The file or directory.
        ema: Load the EMA weights; a file without them is an error.
        image_size: Evaluate the trained model at another resolution (:func:`vit5.resize_model`:
            RoPE positions keep the training grid's scale, ``arange(g') * g / g'``; ``pos_embed``
            resampled bicubically). This is *not* the fine-tuning rebuild at a new size.
        trust_config: Build configs read from the file even if they name targets outside the
            registry of config-buildable callables (only for files you wrote).
        config: The network config when the file has none (a foreign state dict): a config tree
            (``LazyConfig(...)(...)``, or a run config with a ``model`` section) or a YAML file.

    Raises:
        ValueError: (``CheckpointError`` / ``ConfigTargetError``) the path holds no weights, a
            file is truncated, corrupt or unsafe, the weights belong to another architecture, a
            config names an unregistered target, ``ema=True`` without EMA weights.
    """
    return load_model_and_config(
        path, ema=ema, image_size=image_size, trust_config=trust_config, config=config
    ).model


def load_model_and_config(
    path: str | os.PathLike,
    *,
    ema: bool = False,
    image_size: int | None = None,
    trust_config: bool = False,
    config: Mapping | str | os.PathLike | None = None,
) -> LoadedModel:
    """:func:`load_model`, also returning the configs that rebuild the network (:class:`LoadedModel`)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file or directory path, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        loaded = _load_directory(path, ema, trust_config)
    elif path.suffix == ".safetensors" or _looks_safetensors(path):
        loaded = _load_safetensors(path, ema, trust_config, config)
    else:
        loaded = _load_pickle(path, ema, trust_config, config)
    if image_size is not None and image_size != loaded.model.image_size:
        new_config = to_container(resize_config(loaded.model_config, image_size))
        cfg = loaded.model.pretrained_cfg
        loaded.model = resize_model(loaded.model, image_size, config=loaded.model_config).eval()
        loaded.model.pretrained_cfg = updated_pretrained_cfg(cfg, image_size=image_size)
        loaded.model_config = new_config
    return loaded


def _looks_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _load_directory(path: Path, ema: bool, trust_config: bool) -> LoadedModel:
    if (path / _META).is_file():
        return _load_checkpoint_directory(path, ema, trust_config)
    candidates = [
        path / "checkpoints" / name for name in _RUN_CHECKPOINTS if (path / "checkpoints" / name).exists()
    ]
    if not candidates:
        raise CheckpointError(
            f"{path}: a directory without weights (expected a vit5 run directory with checkpoints/, "
            f"or a checkpoint directory with {_META})"
        )
    failures = []
    for candidate in candidates:
        try:
            return _load_checkpoint_directory(candidate, ema, trust_config)
        except CheckpointError as error:
            if ema and not (candidate / _EMA_WEIGHTS).is_file():  # a run without EMA, not a damaged file
                raise
            failures.append(str(error))
            logger.warning("skipping damaged checkpoint: %s", error)
    raise CheckpointError(f"no usable checkpoint in {path}: " + "; ".join(failures))


def _load_checkpoint_directory(path: Path, ema: bool, trust_config: bool) -> LoadedModel:
    import json

    try:
        meta = json.loads((path / _META).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path / _META}: damaged ({error})") from error
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path / _META}: not a vit5 checkpoint record")
    for name, digest in (meta.get("files") or {}).items():
        if name in (_WEIGHTS, _EMA_WEIGHTS):
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"{file}: missing from the checkpoint")
            if file_digest(file) != digest:
                raise CheckpointError(f"{file}: checksum mismatch (the file is truncated or corrupted)")
    weights = path / (_EMA_WEIGHTS if ema else _WEIGHTS)
    if ema and not weights.is_file():
        raise CheckpointError(f"{path}: no EMA weights ({_EMA_WEIGHTS}); the run was trained without EMA")
    return _load_safetensors(weights, ema, trust_config, None, run_config=meta.get("config"))


def _load_safetensors(
    path: Path, ema: bool, trust_config: bool, config: Any, run_config: Any = None
) -> LoadedModel:
    tensors, metadata = load_weights(path)
    recorded = metadata.get("config") if isinstance(metadata.get("config"), Mapping) else None
    if recorded is None and config is None:
        if tensors and _is_official(tensors):
            if ema:
                raise CheckpointError(
                    f"{path}: an official state dict without EMA weights; load it without ema"
                )
            return _load_official(path, tensors)
        raise CheckpointError(
            f"{path}: a safetensors file without a vit5 config; pass config= (a network config) or convert it "
            "with `vit5 convert`"
        )
    if ema and not metadata.get("ema"):
        raise CheckpointError(
            f"{path}: holds the model weights, not EMA weights (pass the checkpoint directory or its "
            f"{_EMA_WEIGHTS}, or drop ema)"
        )
    if recorded is not None:
        recorded = check_config_targets(recorded, str(path), trust_config=trust_config)
    if isinstance(run_config, Mapping):  # meta.json's copy of the run config: checked like the rest
        run = check_config_targets(run_config, str(path.parent / _META), trust_config=trust_config)
    else:
        run = recorded or {}
    model_cfg = (recorded or {}).get("model") if recorded is not None else _config_tree(config, trust_config)
    if model_cfg is None:
        raise CheckpointError(
            f"{path}: the checkpoint's config has no model section; cannot rebuild the network"
        )
    model = _build(model_cfg, tensors, path)
    data = metadata.get("data") if isinstance(metadata.get("data"), Mapping) else {}
    stored = metadata.get("pretrained_cfg")
    model.pretrained_cfg = _pretrained_from(model, stored, data, path)
    return LoadedModel(model, to_container(model_cfg), dict(run), dict(data), path, bool(metadata.get("ema")))


def _is_official(checkpoint: Mapping) -> bool:
    """Whether ``checkpoint`` holds an official ViT-5 state dict (bare, or where unwrap_official looks)."""
    for key in ("model", "model_ema", "state_dict", None):
        inner = checkpoint.get(key) if key else checkpoint
        if isinstance(inner, Mapping):
            names = {str(k).removeprefix("module.") for k in inner}
            if "patch_embed.proj.weight" in names and "blocks.0.norm1.weight" in names:
                return True
    return False


def _load_official(path: Path, checkpoint: Mapping, ema: bool = False) -> LoadedModel:
    model, cfg = _build_official(unwrap_official(checkpoint, use_ema=ema))
    # The defaults are the official evaluation: ImageNet mean/std, bicubic, crop ratio 1.0.
    defaults = default_pretrained_cfg(model.image_size, model.in_channels, model.num_classes)
    model.pretrained_cfg = updated_pretrained_cfg(defaults, source=str(path), sha256=file_digest(path))
    return LoadedModel(model, to_container(cfg), {}, {}, path, ema, kind="official")


def _load_pickle(path: Path, ema: bool, trust_config: bool, config: Any) -> LoadedModel:
    checkpoint = read_weights_file(path, inert=True)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(checkpoint).__name__}, expected a state dict or checkpoint dict"
        )
    if _is_official(checkpoint):
        if ema and "model_ema" not in checkpoint:
            raise CheckpointError(f"{path}: ema=True but the checkpoint has no 'model_ema' entry")
        return _load_official(path, checkpoint, ema)
    hyper = plain_data(checkpoint.get("hyper_parameters") or checkpoint.get("hparams") or {},
                       lambda name: _function_reference(name, f"{path} (hyper-parameters)", trust_config))  # fmt: skip
    if config is not None:
        model_cfg = _config_tree(config, trust_config)
    else:
        found = _network_config_in(hyper)
        if found is None:
            raise CheckpointError(
                f"{path}: neither an official ViT-5 checkpoint nor one recording its network config (no "
                "ViT5ClassificationNet __target__ in its hyper-parameters); pass config="
            )
        model_cfg = check_config_targets(found, f"{path} (hyper-parameters)", trust_config=trust_config)
    model = _build_unloaded(model_cfg, path)
    try:
        load_nvsubquadratic_checkpoint(model, checkpoint, ema=ema)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    model.pretrained_cfg = _pretrained_from(model, None, {}, path)
    return LoadedModel(model.eval(), to_container(model_cfg), {}, {}, path, ema, kind="nvsubquadratic")


def _function_reference(name: str, source: str, trust_config: bool) -> Any:
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


def _config_tree(config: Any, trust_config: bool) -> Any:
    """A network config from ``config=``: a tree (its ``model`` section if it is a run config) or YAML."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, trust_config=trust_config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a config tree or a YAML file path, got {type(config).__name__}")
    return config["model"] if TARGET_KEY not in config and "model" in config else config


def _build_unloaded(model_cfg: Any, source: Path) -> ViT5ClassificationNet:
    model = instantiate(resolve(model_cfg) if isinstance(model_cfg, Mapping) else model_cfg)
    if not isinstance(model, ViT5ClassificationNet):
        raise CheckpointError(
            f"{source}: the config builds a {type(model).__name__}, expected a ViT5ClassificationNet"
        )
    return model


def _build(model_cfg: Any, state: Mapping[str, torch.Tensor], source: Path) -> ViT5ClassificationNet:
    model = _build_unloaded(model_cfg, source)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source}: the weights do not match the network its config builds: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}, wrong shapes {wrong[:8]}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _pretrained_from(
    model: ViT5ClassificationNet, stored: Any, data: Mapping, source: Path
) -> dict[str, Any]:
    """``pretrained_cfg`` from a file: as recorded by convert/export, else from a run's data spec."""
    digest = file_digest(source)
    if isinstance(stored, Mapping):
        try:
            return updated_pretrained_cfg(stored, source=str(source), sha256=digest)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: damaged pretrained_cfg metadata ({error})") from None
    cfg = default_pretrained_cfg(model.image_size, model.in_channels, model.num_classes)
    if data.get("mean") and data.get("std"):
        cfg.update(mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]],
                   interpolation=data.get("interpolation", "bilinear"), crop_pct=float(data.get("crop_ratio", 1.0)))  # fmt: skip
    names = data.get("class_names")
    return updated_pretrained_cfg(
        cfg, class_names=names if names and len(names) == model.num_classes else None, source=str(source),
        sha256=digest,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# timm


def load_for_timm(
    path: str | os.PathLike, preset: str, overrides: Mapping[str, Any]
) -> ViT5ClassificationNet:
    """The network of ``timm.create_model(<preset>, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.

    ``path`` holds official ViT-5 weights (official presets only) or vit5 / nvSubquadratic weights.
    The network is built at the checkpoint's resolution and class count, then resized to
    ``overrides["image_size"]`` if given; the caller replaces the head for another class count.
    """
    checkpoint = read_weights_file(path, inert=True)
    image_size = overrides.get("image_size")
    overrides = {key: value for key, value in overrides.items() if key not in ("image_size", "num_classes")}
    if _is_official(checkpoint):
        if preset.removeprefix("vit5_") not in OFFICIAL_VARIANTS:
            raise ValueError(
                f"{path} is an official ViT-5 checkpoint; it loads into vit5_small|base|large|xlarge, not {preset!r}"
            )
        net, cfg = _build_official(unwrap_official(checkpoint))
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
