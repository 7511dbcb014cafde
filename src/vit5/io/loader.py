"""One loader for every format vit5 reads (:func:`load_model`), dispatching to one module per format.

* a vit5 run directory / checkpoint directory / ``.safetensors`` file (:mod:`vit5.io.run`);
* a Hub repo as :func:`vit5.hub.save_pretrained` writes it (``config.json`` + ``model.safetensors``,
  :mod:`vit5.io.hub_repo`);
* official ViT-5 ``.pth`` training dicts (:mod:`vit5.io.official`);
* nvSubquadratic Lightning ``.ckpt`` files (:mod:`vit5.io.nvsubq`).

Where the file comes from (a local path, a published name, ``hf-hub:``, an https URL) is
:mod:`vit5.io.sources`' business: every download lands as a local file first, then gets exactly
the checks a local file gets. Reading a file never runs code from it (:mod:`vit5.io`): safetensors
with safetensors; pickles with ``torch.load(weights_only=True)`` (plus ``argparse.Namespace``),
Lightning hyper-parameters through inert placeholders; every ``__target__`` of a config read from a
file must be registered (:mod:`vit5.io.registry`) unless ``trust_config=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vit5.config import TARGET_KEY, instantiate, load_config, resolve, to_container
from vit5.config.registry import check_config_targets
from vit5.io import hub_repo, run
from vit5.io.imagenet import imagenet_class_descriptions, imagenet_class_names
from vit5.io.nvsubq import function_reference, load_nvsubquadratic_checkpoint, network_config_in
from vit5.io.official import build_official, is_official
from vit5.io.sources import ResolvedSource, resolve_source
from vit5.io.weights_file import CheckpointError, file_digest, load_weights, plain_data, read_weights_file
from vit5.networks.budget import budget_limits, check_network_budget
from vit5.networks.official import unwrap_official
from vit5.networks.pretrained_cfg import check_pretrained_cfg, default_pretrained_cfg, updated_pretrained_cfg
from vit5.networks.resize import resize_config, resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "CONFIG_ATTR",
    "LoadedModel",
    "build_loaded",
    "build_unloaded",
    "load_model",
    "load_model_and_config",
]

#: Where a loaded network keeps the config tree that builds it (what ``save_pretrained`` writes).
CONFIG_ATTR = "_vit5_model_config"

logger = logging.getLogger("vit5.weights")


@dataclass
class LoadedModel:
    """What :func:`load_model_and_config` found: the network and the configs that rebuild it.

    ``source`` is the local file or directory read; ``origin`` says where it came from (the name,
    ``hf-hub:`` id or URL the user gave, the resolved URL, revision and digest).
    """

    model: ViT5ClassificationNet
    model_config: dict[str, Any]
    run_config: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    source: Path = Path()
    ema: bool = False
    kind: str = "vit5"
    origin: ResolvedSource | None = None


def load_model(
    source: str | os.PathLike,
    *,
    ema: bool = False,
    image_size: int | None = None,
    trust_config: bool = False,
    config: Mapping | str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    max_params: float | int | None = None,
    max_activation_gib: float | None = None,
) -> ViT5ClassificationNet:
    """Load a trained network from any checkpoint vit5 understands, in eval mode.

    ``source`` is, in this order of precedence (:func:`vit5.io.sources.resolve_source`): an existing
    local path; a published name (``vit5_small_patch16_224``, :data:`vit5.networks.pretrained_cfg.PUBLISHED`);
    ``hf-hub:ORG/REPO[@REVISION]`` (a repo as :func:`vit5.hub.save_pretrained` writes it);
    ``hf-hub:ORG/REPO[@REVISION]/FILE`` (any file this function reads); an ``https://`` URL.
    Downloads are cached (Hub files in the Hugging Face cache, URLs in ``$HF_HOME/vit5/urls/``) and
    checked against their digest. The local file or directory may be:

    * a vit5 run directory (its ``best`` checkpoint, then ``last``, then ``prev``: the first that
      verifies), a checkpoint directory, or a ``.safetensors`` file written by vit5 (``vit5 train``,
      ``vit5 convert``), which carries its config;
    * a directory written by :func:`vit5.hub.save_pretrained` (``config.json``, ``model.safetensors``);
    * an official ViT-5 ``.pth`` / ``.safetensors`` (bare, or the DeiT-style training dict);
      ``pretrained_cfg`` is the official evaluation: ImageNet mean/std, bicubic, crop ratio 1.0, and
      a 1000-class head gets the ImageNet-1k wnids as class names;
    * an nvSubquadratic Lightning ``.ckpt`` (or any checkpoint of a vit5 network): the network is
      built from the recorded ``ViT5ClassificationNet`` config in its hyper-parameters, or from
      ``config``.

    The returned network carries ``pretrained_cfg`` (``input_size``, ``mean``, ``std``,
    ``interpolation``, ``crop_pct``, ``num_classes``, ``class_names``, ``class_descriptions``,
    ``source``, ``resolved_url``, ``revision``, ``sha256``).

    Args:
        source: The path, name, ``hf-hub:`` id or URL.
        ema: Load the EMA weights; a file without them is an error.
        image_size: Evaluate the trained model at another resolution (:func:`vit5.resize_model`:
            RoPE positions keep the training grid's scale, ``arange(g') * g / g'``; ``pos_embed``
            resampled bicubically). This is *not* the fine-tuning rebuild at a new size.
        trust_config: Build configs read from the file even if they name targets outside the
            registry of config-buildable callables (only for files you wrote).
        config: The network config when the file has none (a foreign state dict): a config tree
            (``LazyConfig(...)(...)``, or a run config with a ``model`` section) or a YAML file.
        cache_dir: The Hugging Face cache to use instead of ``$HF_HOME/hub`` (Hub sources).
        max_params: Refuse a network described by the file with more parameters than this
            (``None``: ``$VIT5_MAX_PARAMS`` or 4e9), checked before anything is allocated
            (:mod:`vit5.networks.budget`).
        max_activation_gib: Refuse a network whose batch-1 activations would exceed this many GiB
            (``None``: ``$VIT5_MAX_ACTIVATION_GIB`` or 32).

    Raises:
        ValueError: (``CheckpointError`` / ``ConfigTargetError``) the source names nothing, a
            download fails or does not match its digest, the path holds no weights, a file is
            truncated, corrupt or unsafe, the weights belong to another architecture, a config
            names an unregistered target, ``ema=True`` without EMA weights.
    """
    return load_model_and_config(
        source, ema=ema, image_size=image_size, trust_config=trust_config, config=config, cache_dir=cache_dir,
        max_params=max_params, max_activation_gib=max_activation_gib,
    ).model  # fmt: skip


def load_model_and_config(
    source: str | os.PathLike,
    *,
    ema: bool = False,
    image_size: int | None = None,
    trust_config: bool = False,
    config: Mapping | str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    from_config_file: bool = False,
    max_params: float | int | None = None,
    max_activation_gib: float | None = None,
) -> LoadedModel:
    """:func:`load_model`, also returning the configs that rebuild the network (:class:`LoadedModel`).

    ``from_config_file=True`` marks a source read from a config file (``train.finetune:``): names
    and ``hf-hub:`` ids then resolve only against ``HF_ENDPOINT``, and a raw URL needs
    ``trust_config`` (:func:`vit5.io.sources.resolve_source`).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path, published name, hf-hub: id or URL, got {type(source).__name__}"
        )
    with budget_limits(max_params, max_activation_gib):
        resolved = resolve_source(source, cache_dir=cache_dir, from_config_file=from_config_file,
                                  trust_config=trust_config)  # fmt: skip
        try:  # a downloaded file gets exactly a local file's checks; errors name the source given
            return _load_local(resolved.path, resolved, ema, image_size, trust_config, config)
        except CheckpointError as error:
            if resolved.kind == "path":
                raise
            raise CheckpointError(f"{resolved.given}: {error}") from None


def _load_local(
    path: Path, resolved: ResolvedSource, ema: bool, image_size: int | None, trust_config: bool, config: Any
) -> LoadedModel:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        loaded = _load_directory(path, ema, trust_config, resolved)
    elif path.suffix == ".safetensors" or _looks_safetensors(path):
        loaded = _load_safetensors(path, ema, trust_config, config)
    else:
        loaded = _load_pickle(path, ema, trust_config, config)
    loaded.origin = resolved
    provenance = resolved.provenance()
    if provenance:
        loaded.model.pretrained_cfg = updated_pretrained_cfg(loaded.model.pretrained_cfg, **provenance)
    if image_size is not None and image_size != loaded.model.image_size:
        new_config = to_container(resize_config(loaded.model_config, image_size))
        cfg = loaded.model.pretrained_cfg
        loaded.model = resize_model(loaded.model, image_size, config=loaded.model_config).eval()
        loaded.model.pretrained_cfg = updated_pretrained_cfg(cfg, image_size=image_size)
        loaded.model_config = new_config
    loaded.model.__dict__[CONFIG_ATTR] = to_container(loaded.model_config)
    return loaded


def _looks_safetensors(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _load_directory(path: Path, ema: bool, trust_config: bool, resolved: ResolvedSource) -> LoadedModel:
    if (path / run.META).is_file():
        return _load_checkpoint_directory(path, ema, trust_config)
    if (path / hub_repo.CONFIG).is_file():
        model, model_cfg = hub_repo.load_repo(path, ema=ema, trust_config=trust_config, label=resolved.label)
        return LoadedModel(model, to_container(model_cfg), {}, {}, path, ema, kind="hub")
    candidates = run.run_checkpoints(path)
    if not candidates:
        raise CheckpointError(
            f"{resolved.label}: a directory without weights (expected a vit5 run directory with "
            f"{run.CHECKPOINTS_DIR}/, a checkpoint directory with {run.META}, or a saved model with "
            f"{hub_repo.CONFIG})"
        )
    failures = []
    for candidate in candidates:
        try:
            loaded = _load_checkpoint_directory(candidate, ema, trust_config)
        except CheckpointError as error:
            if ema and not (candidate / run.EMA_WEIGHTS).is_file():  # a run without EMA, not a damaged file
                raise
            failures.append(str(error))
            continue
        for failure in failures:  # told only when another checkpoint is used instead (else: one error line)
            logger.warning("skipping damaged checkpoint: %s", failure)
        return loaded
    raise CheckpointError(f"no usable checkpoint in {path}: " + "; ".join(failures))


def _load_checkpoint_directory(path: Path, ema: bool, trust_config: bool) -> LoadedModel:
    meta = run.read_meta(path, strict_format=False)
    run.verify_checkpoint(path, meta, names=(run.WEIGHTS, run.EMA_WEIGHTS))
    weights = path / (run.EMA_WEIGHTS if ema else run.WEIGHTS)
    if ema and not weights.is_file():
        raise CheckpointError(f"{path}: no EMA weights ({run.EMA_WEIGHTS}); the run was trained without EMA")
    digest = (meta.get("files") or {}).get(weights.name)  # checked again on the bytes that are parsed
    return _load_safetensors(weights, ema, trust_config, None, run_config=meta.get("config"),
                             sha256=digest if isinstance(digest, str) else None)  # fmt: skip


def _load_safetensors(
    path: Path, ema: bool, trust_config: bool, config: Any, run_config: Any = None, sha256: str | None = None
) -> LoadedModel:
    tensors, metadata = load_weights(path, sha256=sha256)
    recorded = metadata.get("config") if isinstance(metadata.get("config"), Mapping) else None
    if recorded is None and config is None:
        if tensors and is_official(tensors):
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
            f"{run.EMA_WEIGHTS}, or drop ema)"
        )
    if recorded is not None:
        recorded = check_config_targets(recorded, str(path), trust_config=trust_config)
    if isinstance(run_config, Mapping):  # meta.json's copy of the run config: checked like the rest
        run_cfg = check_config_targets(run_config, str(path.parent / run.META), trust_config=trust_config)
    else:
        run_cfg = recorded or {}
    model_cfg = (recorded or {}).get("model") if recorded is not None else _config_tree(config, trust_config)
    if model_cfg is None:
        raise CheckpointError(
            f"{path}: the checkpoint's config has no model section; cannot rebuild the network"
        )
    model = build_loaded(
        model_cfg, tensors, path, budget=recorded is not None or not isinstance(config, Mapping)
    )
    data = metadata.get("data") if isinstance(metadata.get("data"), Mapping) else {}
    stored = metadata.get("pretrained_cfg")
    model.pretrained_cfg = _pretrained_from(model, stored, data, path)
    return LoadedModel(
        model, to_container(model_cfg), dict(run_cfg), dict(data), path, bool(metadata.get("ema"))
    )


def official_pretrained_cfg(model: ViT5ClassificationNet, path: Path) -> dict[str, Any]:
    """The official evaluation (ImageNet mean/std, bicubic, crop ratio 1.0); a 1000-class head gets
    the ImageNet-1k wnids and readable names (the official code trains on ImageNet-1k)."""
    defaults = default_pretrained_cfg(model.image_size, model.in_channels, model.num_classes)
    names = descriptions = None
    if model.num_classes == 1000:
        names, descriptions = imagenet_class_names(), imagenet_class_descriptions()
    return updated_pretrained_cfg(defaults, source=str(path), sha256=file_digest(path), class_names=names,
                                  class_descriptions=descriptions)  # fmt: skip


def _load_official(path: Path, checkpoint: Mapping, ema: bool = False) -> LoadedModel:
    model, cfg = build_official(unwrap_official(checkpoint, use_ema=ema))
    model.pretrained_cfg = official_pretrained_cfg(model, path)
    return LoadedModel(model, to_container(cfg), {}, {}, path, ema, kind="official")


def _load_pickle(path: Path, ema: bool, trust_config: bool, config: Any) -> LoadedModel:
    checkpoint = read_weights_file(path, inert=True)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(checkpoint).__name__}, expected a state dict or checkpoint dict"
        )
    if is_official(checkpoint):
        if ema and "model_ema" not in checkpoint:
            raise CheckpointError(f"{path}: ema=True but the checkpoint has no 'model_ema' entry")
        return _load_official(path, checkpoint, ema)
    hyper = plain_data(checkpoint.get("hyper_parameters") or checkpoint.get("hparams") or {},
                       lambda name: function_reference(name, f"{path} (hyper-parameters)", trust_config))  # fmt: skip
    if config is not None:
        model_cfg = _config_tree(config, trust_config)
    else:
        found = network_config_in(hyper)
        if found is None:
            raise CheckpointError(
                f"{path}: neither an official ViT-5 checkpoint nor one recording its network config (no "
                "ViT5ClassificationNet __target__ in its hyper-parameters); pass config="
            )
        model_cfg = check_config_targets(found, f"{path} (hyper-parameters)", trust_config=trust_config)
    model = build_unloaded(model_cfg, path, budget=config is None or not isinstance(config, Mapping))
    try:
        load_nvsubquadratic_checkpoint(model, checkpoint, ema=ema)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    model.pretrained_cfg = _pretrained_from(model, None, {}, path)
    return LoadedModel(model.eval(), to_container(model_cfg), {}, {}, path, ema, kind="nvsubquadratic")


def _config_tree(config: Any, trust_config: bool) -> Any:
    """A network config from ``config=``: a tree (its ``model`` section if it is a run config) or YAML."""
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config, trust_config=trust_config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a config tree or a YAML file path, got {type(config).__name__}")
    return config["model"] if TARGET_KEY not in config and "model" in config else config


def build_unloaded(model_cfg: Any, source: Any, *, budget: bool = True) -> ViT5ClassificationNet:
    """The network ``model_cfg`` builds (an error naming ``source`` if it is not a vit5 network).

    ``budget``: the config was read from a file or download, so its size is checked first
    (:func:`vit5.networks.budget.check_network_budget`); a caller's own config tree is not.
    """
    tree = resolve(model_cfg) if isinstance(model_cfg, Mapping) else model_cfg
    if budget:
        check_network_budget(tree, str(source))
    model = instantiate(tree)
    if not isinstance(model, ViT5ClassificationNet):
        raise CheckpointError(
            f"{source}: the config builds a {type(model).__name__}, expected a ViT5ClassificationNet"
        )
    return model


def build_loaded(
    model_cfg: Any, state: Mapping[str, torch.Tensor], source: Any, *, budget: bool = True
) -> ViT5ClassificationNet:
    """The eval-mode network ``model_cfg`` builds, holding ``state`` (every key checked)."""
    model = build_unloaded(model_cfg, source, budget=budget)
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
        try:  # bounded and matched to the network (channels, one class name per logit)
            checked = check_pretrained_cfg(stored, str(source), in_channels=model.in_channels,
                                           num_classes=model.num_classes)  # fmt: skip
            return updated_pretrained_cfg(checked, source=str(source), sha256=digest)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(str(error) if str(source) in str(error) else f"{source}: {error}") from None
    cfg = default_pretrained_cfg(model.image_size, model.in_channels, model.num_classes)
    if data.get("mean") and data.get("std"):
        cfg.update(mean=[float(v) for v in data["mean"]], std=[float(v) for v in data["std"]],
                   interpolation=data.get("interpolation", "bilinear"), crop_pct=float(data.get("crop_ratio", 1.0)))  # fmt: skip
    names = data.get("class_names")
    return updated_pretrained_cfg(
        cfg, class_names=names if names and len(names) == model.num_classes else None, source=str(source),
        sha256=digest,
    )  # fmt: skip
