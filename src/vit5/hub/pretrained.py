"""Published weights by name: ``vit5.create_model(name, pretrained=True)`` and :func:`from_pretrained`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from vit5.config import TARGET_KEY, LazyConfig
from vit5.hub.share import remember as _remember
from vit5.io.loader import LoadedModel, build_unloaded, load_model_and_config
from vit5.io.sources import published_name
from vit5.networks.presets import build_vit5, model_config, preset_arguments, resolve_model_name
from vit5.networks.presets import create_model as create_preset
from vit5.networks.pretrained_cfg import PUBLISHED, updated_pretrained_cfg
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = ["adapt", "create_model", "from_pretrained", "list_pretrained"]


def list_pretrained() -> list[str]:
    """The names with published weights (``vit5_small_patch16_224``, ...)."""
    return list(PUBLISHED)


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
    return adapt(loaded, config, num_classes, published)


def adapt(
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
