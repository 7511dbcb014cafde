"""Published weights by name, ``hf-hub:`` sources, and sharing models on the Hugging Face Hub.

* :func:`create_model` — ``vit5.create_model(name, pretrained=False, ema=False, cache_dir=None, **config)``:
  a preset, or with ``pretrained=True`` the published official weights
  (:data:`~vit5.networks.pretrained_cfg.PUBLISHED`, :func:`list_pretrained`).
* :func:`from_pretrained` — :func:`vit5.load_model` by another name (a directory or ``hf-hub:ORG/REPO``).
* :func:`save_pretrained` / :func:`push_to_hub` — a directory / Hub repo that vit5 and timm load
  (``config.json`` in timm's layout, ``model.safetensors``, a ``README.md`` model card,
  :mod:`vit5.io.hub_repo`); :class:`HubMixin` gives the network (and timm's wrapper) these as
  methods, attached from here: the network module itself does no I/O.
* :func:`timm_pretrained` — the loader behind ``timm.create_model(name, pretrained=True)``,
  ``timm.create_model("hf-hub:ORG/REPO")`` and ``("local-dir:DIR")``, installed by ``import vit5``.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vit5._io import atomic_write_text
from vit5.config import TARGET_KEY, LazyConfig, instantiate, to_container
from vit5.config.registry import check_config_targets
from vit5.io.hub_repo import CONFIG, FROM_CONFIG, WEIGHTS, repo_config
from vit5.io.imagenet import imagenet_class_descriptions, imagenet_class_names
from vit5.io.loader import LoadedModel, build_unloaded, load_model, load_model_and_config
from vit5.io.nvsubq import load_nvsubquadratic_checkpoint
from vit5.io.official import build_official, is_official
from vit5.io.sources import published_name
from vit5.io.weights_file import read_weights_file, save_weights
from vit5.networks.interop import extract_state_dict
from vit5.networks.official import unwrap_official
from vit5.networks.presets import (
    OFFICIAL_PRESETS,
    build_vit5,
    model_config,
    preset_arguments,
    resolve_model_name,
)
from vit5.networks.presets import create_model as create_preset
from vit5.networks.pretrained_cfg import (
    CODE_LICENSE,
    PUBLISHED,
    WEIGHTS_LICENSE_NOTE,
    updated_pretrained_cfg,
)
from vit5.networks.resize import resize_model
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "HubMixin",
    "create_model",
    "from_pretrained",
    "list_pretrained",
    "push_to_hub",
    "save_pretrained",
    "timm_pretrained",
]

_CONFIG_ATTR = "_vit5_model_config"  # the config tree a loaded / created network was built from


def list_pretrained() -> list[str]:
    """The names with published weights (``vit5_small_patch16_224``, ...)."""
    return list(PUBLISHED)


def _remember(model: ViT5ClassificationNet, tree: Any) -> ViT5ClassificationNet:
    model.__dict__[_CONFIG_ATTR] = to_container(tree)
    return model


def create_model(
    name: str,
    pretrained: bool = False,
    ema: bool = False,
    cache_dir: str | os.PathLike | None = None,
    **config: Any,
) -> ViT5ClassificationNet:
    """Build preset ``name`` (or its timm-style name); ``pretrained=True`` loads its published weights.

    Args:
        name: A preset (``vit5_small``, :func:`vit5.list_models`) or timm-style name
            (``vit5_small_patch16_224``); with ``pretrained=True`` one of :func:`list_pretrained`
            (``vit5_small`` / ``vit5_base`` / ``vit5_large`` are the 224 px ones).
        pretrained: Load the official checkpoint's ``model`` entry (what the official ``--eval``
            evaluates), downloaded from the Hub once and checked (:func:`vit5.load_model`).
        ema: Load its ``model_ema`` entry instead (with ``pretrained=True``).
        cache_dir: The Hugging Face cache to use (default ``$HF_HOME/hub``).
        **config: :func:`vit5.vit5_config` keywords. With ``pretrained=True``: ``num_classes=N``
            gives a fresh N-class head (timm's convention), ``image_size=`` is the evaluation resize
            of :func:`vit5.load_model`, and other keywords must keep every parameter's shape
            (``max_drop_path_rate=0.1``, ``dropout_rate=...``).

    Raises:
        ValueError: ``pretrained=True`` on a name without published weights (the message lists those
            that have them), ``ema=True`` without ``pretrained``, a download or load failure,
            keywords that change parameter shapes of the pretrained network.
        TypeError: an unknown keyword.
    """
    if not pretrained:
        if ema:
            raise ValueError("ema=True selects pretrained EMA weights; pass pretrained=True as well")
        model = create_preset(name, **config)
        try:  # the compact form (build_vit5 keywords), which save_pretrained writes as preset + model_args
            tree = LazyConfig(build_vit5)(**{**preset_arguments(resolve_model_name(name)), **config})
        except ValueError:  # a preset registered from outside: its full tree
            tree = model_config(name, **config)
        return _remember(model, tree)
    published = published_name(name)
    if published is None:
        raise ValueError(f"{name!r} has no published weights; names with weights: {', '.join(PUBLISHED)}")
    image_size, num_classes = config.pop("image_size", None), config.pop("num_classes", None)
    loaded = load_model_and_config(published, ema=ema, image_size=image_size, cache_dir=cache_dir)
    return _adapt(loaded, config, num_classes, published)


def _adapt(
    loaded: LoadedModel, keywords: Mapping[str, Any], num_classes: int | None, label: str
) -> ViT5ClassificationNet:
    """The loaded network rebuilt with shape-preserving ``keywords`` and/or a fresh ``num_classes`` head."""
    model, tree = loaded.model, dict(loaded.model_config)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    new_head = num_classes is not None and num_classes != model.num_classes
    if not keywords and not new_head:
        return _remember(model, tree)
    if keywords and tree.get(TARGET_KEY) != "vit5.networks.presets.build_vit5":
        raise ValueError(
            f"{label}: keywords {sorted(keywords)} need a preset-built network; this one is a config tree"
        )
    tree.update(keywords)
    if new_head:
        tree["num_classes"] = num_classes
    rebuilt = build_unloaded(tree, label)
    state = {k: v for k, v in model.state_dict().items() if not (new_head and k.startswith("out_proj."))}
    own = rebuilt.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(
            f"{label}: keywords {sorted(keywords)} change the shape of {wrong[:4]}; they cannot apply to pretrained weights"
        )
    rebuilt.load_state_dict(state, strict=not new_head)
    cfg = model.pretrained_cfg
    if new_head:
        cfg = updated_pretrained_cfg(cfg, num_classes=num_classes, class_names=None, class_descriptions=None)
    rebuilt.pretrained_cfg = cfg
    return _remember(rebuilt.eval(), tree)


def from_pretrained(source: str | os.PathLike, **kwargs: Any) -> ViT5ClassificationNet:
    """:func:`vit5.load_model` (``source``: a saved directory, ``hf-hub:ORG/REPO``, or anything it takes)."""
    loaded = load_model_and_config(source, **kwargs)
    return _remember(loaded.model, loaded.model_config)


# --------------------------------------------------------------------------------------------------
# Sharing


def _unwrap(model: Any) -> ViT5ClassificationNet:
    net = getattr(model, "net", model)
    if not isinstance(net, ViT5ClassificationNet):
        raise TypeError(
            f"model must be a ViT5ClassificationNet (or timm's TimmViT5), got {type(model).__name__}"
        )
    return net


def _config_of(net: ViT5ClassificationNet, model_config: Any) -> dict[str, Any]:
    if model_config is not None:
        return to_container(model_config)
    recorded = net.__dict__.get(_CONFIG_ATTR)
    if recorded is None:
        raise ValueError(
            "save_pretrained: the network does not record the config that built it; pass model_config= "
            "(a LazyConfig tree) or create it with vit5.create_model / vit5.load_model"
        )
    return recorded


def save_pretrained(
    model: Any,
    directory: str | os.PathLike,
    *,
    model_config: Any = None,
    ema: bool = False,
    results: Mapping[str, Any] | None = None,
    data: str | None = None,
) -> Path:
    """Write ``model`` to ``directory`` as vit5 and timm load it: ``config.json``, ``model.safetensors``
    (vit5's keys; its metadata also carries the config, so the file alone loads) and ``README.md``.

    Args:
        model: A :class:`ViT5ClassificationNet` (or timm's wrapper of one).
        directory: Created if needed; the three files are replaced atomically.
        model_config: The network's config tree, when it was not built by :func:`create_model` /
            loaded by :func:`vit5.load_model` (which record it).
        ema: The weights are EMA weights (recorded in ``config.json``).
        results: Metrics for the model card (``{"top1": 0.82, ...}``).
        data: What the model was trained on, for the model card.

    Returns:
        ``directory``.
    """
    net = _unwrap(model)
    tree = _config_of(net, model_config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = repo_config(net, tree, ema=ema)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_weights(directory / WEIGHTS, state, {"config": {"model": tree}, "pretrained_cfg": net.pretrained_cfg,
                                              "ema": bool(ema)})  # fmt: skip
    import json

    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2))
    atomic_write_text(directory / "README.md", model_card(net, config, results=results, data=data))
    return directory


def model_card(net: ViT5ClassificationNet, config: Mapping[str, Any], *, results: Mapping[str, Any] | None = None,
               data: str | None = None, repo_id: str | None = None) -> str:  # fmt: skip
    """A ``README.md`` for the Hub: source, data, results, preprocessing, how to load."""
    cfg = net.pretrained_cfg
    where = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/REPO"
    names = cfg.get("class_names") or []
    lines = [
        "---", "library_name: vit5", "tags:", "- image-classification", "- timm", "- vit5", f"license: {CODE_LICENSE}", "---",
        "", f"# {config['architecture']}", "",
        f"A ViT-5 image classifier ({net.num_classes} classes, {net.image_size} px, "
        f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f}M parameters), saved with vit5.", "",
        "## Source", "", f"- weights: {cfg.get('source') or 'trained or built in memory'}",
        f"- sha256 of the weights read: {cfg.get('sha256') or 'n/a'}",
        f"- EMA weights: {'yes' if (config.get('vit5') or {}).get('ema') else 'no'}", "",
        "## Data", "", f"{data or 'not recorded'}; classes: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}", "",
        "## Results", "",
        *([f"- {k}: {v}" for k, v in results.items()] if results else ["not recorded"]), "",
        "## Preprocessing", "",
        f"RGB in [0, 1], resize the short side to {cfg['input_size'][1]} / {cfg['crop_pct']:g} ({cfg['interpolation']}), "
        f"center crop {cfg['input_size'][1]}, normalise with mean {cfg['mean']} and std {cfg['std']}.", "",
        "## How to load", "", "```python", "import vit5, timm",
        f'model = vit5.from_pretrained("{where}")', f'model = timm.create_model("{where}", pretrained=True)', "```", "",
        f"```bash\nvit5 predict {where} image.jpg\n```", "",
        "## License", "", f"Code: Apache-2.0 (vit5). {WEIGHTS_LICENSE_NOTE if cfg.get('source') else ''}".rstrip(), "",
    ]  # fmt: skip
    return "\n".join(lines)


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    model_config: Any = None,
    ema: bool = False,
    token: str | None = None,
    results: Mapping[str, Any] | None = None,
    data: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (``private``), make branch ``revision`` if it does not exist, and
    commit :func:`save_pretrained`'s files there. Returns the commit URL.

    Raises:
        ValueError: the Hub refuses (authentication, a bad repo id, ...): one line naming the repo.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be ORG/REPO, got {repo_id!r}")
    net = _unwrap(model)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vit5-push-") as folder:
        save_pretrained(net, folder, model_config=model_config, ema=ema, results=results, data=data)
        card = Path(folder, "README.md")
        config = __import__("json").loads(Path(folder, CONFIG).read_text())
        card.write_text(model_card(net, config, results=results, data=data, repo_id=repo_id))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                     commit_message=commit_message or f"Upload {config['architecture']} with vit5")  # fmt: skip
        except hub_errors.HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else "?"
            raise ValueError(
                f"push to {repo_id}: the Hub answered HTTP {status} ({str(error).splitlines()[0]})"
            ) from None
    return str(getattr(info, "commit_url", info))


class HubMixin:
    """``save_pretrained`` / ``push_to_hub`` as methods (attached to the network and timm's wrapper)."""

    def save_pretrained(self, directory: str | os.PathLike, **kwargs: Any) -> Path:
        """:func:`vit5.hub.save_pretrained` of this model."""
        return save_pretrained(self, directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """:func:`vit5.hub.push_to_hub` of this model."""
        return push_to_hub(self, repo_id, **kwargs)


def attach_mixin(cls: type) -> None:
    """Give ``cls`` the :class:`HubMixin` methods (once)."""
    if not issubclass(cls, HubMixin):
        cls.__bases__ = (HubMixin, *cls.__bases__)


attach_mixin(ViT5ClassificationNet)


# --------------------------------------------------------------------------------------------------
# timm


def _timm_source(cfg: Mapping[str, Any]) -> str:
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
        net = _adapt(loaded, _changed(loaded.model_config, overrides), None, source)
        tree = net.__dict__.get(_CONFIG_ATTR, loaded.model_config)
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


if importlib.util.find_spec("timm") is not None:
    install_timm()
