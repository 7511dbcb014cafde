"""timm integration: a timm-style wrapper of ViT5ClassificationNet and registry entries.

Importing this module (``import vit5`` does it when timm is installed) registers every vit5 preset in
timm's registry as ``<preset>_patch<p>_<image>`` (``vit5_small_patch16_224``,
``vit5_tiny_hybrid_patch4_32``, ...), so ``timm.create_model(name, num_classes=10)`` builds a
:class:`TimmViT5`: NCHW images in, logits out, with timm's ``forward_features`` / ``forward_head`` /
``reset_classifier`` / ``no_weight_decay`` / ``forward_intermediates`` / ``feature_info`` and a
``pretrained_cfg``. ``features_only=True`` gives per-block ``[B, D, g, g]`` feature maps (by
default of the last three blocks, as timm's ViTs).

The input size is fixed (``fixed_input_size=True``, as timm's ViTs without ``dynamic_img_size``):
build another size with ``img_size=`` (a pretrained file is then resized as
:func:`vit5.load_model` does). The cfg's ``input_size``, ``mean``, ``std``, ``interpolation`` and
``crop_pct`` are the built network's (``net.pretrained_cfg``). ``forward`` is
``forward_head(forward_features(x))``. For FX feature extraction (timm's and torchvision's, with
timm's notrace lists) every :class:`~vit5.modules.block.ViT5ResidualBlock` and
:class:`~vit5.modules.norms.RMSNorm` is a leaf: block outputs are the features users take, and
the eager fast paths stay out of the graph. The wrapper passes timm's
own model checks (``tests/networks/test_timm_checks.py``).

timm keywords map onto preset keywords: ``num_classes``, ``in_chans`` -> ``in_channels``,
``img_size`` -> ``image_size``, ``drop_rate`` -> ``dropout_rate``, ``drop_path_rate`` ->
``max_drop_path_rate``, ``global_pool`` (``"token"``/``"avg"`` or a vit5 readout) -> ``readout``;
any :func:`~vit5.networks.presets.vit5_config` keyword is accepted too (unknown ones are a
``TypeError``).

Weights: this module reads no files. ``pretrained=True`` (and a ``hf-hub:`` / ``local-dir:``
model, whose weights timm users expect) calls the loader :func:`configure` was given
(:func:`vit5.hub.timm_pretrained`, installed by ``import vit5``): it resolves the cfg's ``file``,
``hf_hub_id`` (+ ``hf_hub_filename``) or ``url`` through vit5's source resolver and loaders, so
``cache_dir=`` and ``pretrained_cfg_overlay`` are honoured and the file gets vit5's checks. The
published names (:data:`vit5.networks.pretrained_cfg.PUBLISHED`) carry ``hf_hub_id`` /
``hf_hub_filename`` in their cfg, so ``timm.list_pretrained("vit5*")`` lists them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import timm
import torch
from timm.layers import register_notrace_module
from timm.models import PretrainedCfg, build_model_with_cfg, generate_default_cfgs
from timm.models import register_model as timm_register_model
from torch import nn

from vit5.config import instantiate
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.norms import RMSNorm
from vit5.networks.presets import list_models, model_config, on_register, timm_name
from vit5.networks.vit5_classification import ViT5ClassificationNet
from vit5.ops.capture import capture_mode

__all__ = ["TimmViT5", "configure", "register_timm_model", "register_timm_models"]

#: ``loader(preset, pretrained_cfg, overrides, cache_dir) -> ViT5ClassificationNet``, set by configure().
_PRETRAINED_LOADER: Callable[..., ViT5ClassificationNet] | None = None
#: ``extra_cfg(timm_name) -> dict`` of published-weights fields, set by configure().
_EXTRA_CFG: Callable[[str], Mapping[str, Any]] | None = None

_GLOBAL_POOL = {
    "token": "cls",
    "avg": "gap",
    "cls": "cls",
    "gap": "gap",
    "register_concat": "register_concat",
}


class TimmViT5(nn.Module):
    """A :class:`ViT5ClassificationNet` behind timm's model interface (NCHW input, logits output).

    The network is ``self.net`` (state-dict keys ``net.*``); ``forward_features`` returns every token
    after the last block ``[B, T, D]`` (before ``out_norm``: vit5 normalises after the readout) and
    ``forward_head`` does readout -> ``out_norm`` -> dropout -> head.

    Args:
        net: The network to wrap.
        num_classes: ``None`` keeps the network's head, ``0`` removes it (``forward`` then returns
            the normalised readout ``[B, head_hidden_size]``), another value replaces it.
    """

    def __init__(self, net: ViT5ClassificationNet, num_classes: int | None = None) -> None:
        super().__init__()
        if not isinstance(net, ViT5ClassificationNet):
            raise TypeError(f"net must be a ViT5ClassificationNet, got {type(net).__name__}")
        self.net = net
        self.num_classes = net.num_classes
        self.num_features = net.hidden_dim  # width of forward_features' tokens
        self.head_hidden_size = net.head_dim  # width of the pooled readout (pre_logits)
        self.embed_dim = net.hidden_dim
        self.num_prefix_tokens = 0  # patch tokens come first in vit5's layout
        self.feature_info = [
            dict(num_chs=net.hidden_dim, reduction=net.patch_size, module=f"net.blocks.{i}")
            for i in range(len(net.blocks))
        ]
        if num_classes is not None and num_classes != net.num_classes:
            self.reset_classifier(num_classes)

    @property
    def global_pool(self) -> str:
        return self.net.readout

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW images -> channels-last ``[B, H, W, C]`` (the network checks the size and values)."""
        if capture_mode() != "fx" and (not isinstance(x, torch.Tensor) or x.ndim != 4):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected images [B, C, H, W] (NCHW), got {got}")
        return x.permute(0, 2, 3, 1)  # (B, H, W, C)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> tokens after the last block ``[B, T, D]`` (padding included)."""
        return self.net.forward_features(self._images(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens ``[B, T, D]`` -> logits ``[B, K]`` (or the normalised readout if ``pre_logits``)."""
        x = self.net.dropout(self.net.out_norm(self.net.pool(x)))  # (B, head_hidden_size)
        return x if pre_logits else self.net.out_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, C, H, W]`` -> logits ``[B, num_classes]``: ``forward_head(forward_features(x))``
        as in timm's ViTs, so an FX-traced copy computes the same values to fp32 rounding (the
        network's own ``forward`` may run the last block for the read tokens only, equal up to
        rounding)."""
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.net.out_proj

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for ``num_classes`` (0: no head); ``global_pool`` must name the current readout."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if global_pool not in (None, "") and _GLOBAL_POOL.get(global_pool) != self.net.readout:
            raise ValueError(
                f"global_pool={global_pool!r} cannot change the readout of a built network ({self.net.readout!r}); "
                "create the model with global_pool=... instead"
            )
        old = self.net.out_proj
        if num_classes == 0:
            head: nn.Module = nn.Identity()
        else:
            head = nn.Linear(self.net.head_dim, num_classes, bias=getattr(old, "bias", None) is not None)
            nn.init.trunc_normal_(head.weight, std=0.02, a=-2.0, b=2.0)
            if head.bias is not None:
                nn.init.zeros_(head.bias)
            if isinstance(old, nn.Linear):
                head.to(device=old.weight.device, dtype=old.weight.dtype)
        self.net.out_proj = head
        self.num_classes = num_classes

    def no_weight_decay(self) -> set[str]:
        """Parameters tagged ``_no_weight_decay`` (tokens, pos_embed, norms, LayerScale, ...)."""
        return {f"net.{name}" for name in self.net.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block (see ``ViT5ClassificationNet.set_grad_checkpointing``)."""
        self.net.set_grad_checkpointing(enable)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature API: per-block patch tokens ``[B, D, g, g]`` (``"NCHW"``) or ``[B, g*g, D]``
        (``"NLC"``); unless ``intermediates_only``, also the final tokens ``[B, T, D]``."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if intermediates_only:
            maps = self.net.forward_intermediates(self._images(x), indices, norm=norm)
            return maps if output_fmt == "NCHW" else [m.flatten(2).transpose(1, 2) for m in maps]
        take = self.net.intermediate_indices(indices)
        final, kept = self.net.collect_intermediates(self._images(x), take, stop_early=stop_early)
        if norm:
            kept = [self.net.out_norm(t) for t in kept]
        maps = [self.net.patch_tokens_to_grid(t) for t in kept]
        if output_fmt == "NLC":
            maps = [m.flatten(2).transpose(1, 2) for m in maps]
        return final, maps


def _build(preset: str, pretrained: dict[str, Any] | None = None, **kwargs: Any) -> TimmViT5:
    """Build a preset from timm keywords (see the module docstring); ``pretrained`` (the resolved cfg
    and ``cache_dir``) loads weights through the configured loader."""
    kwargs.pop("pretrained_cfg", None)  # build_model_with_cfg attaches it after construction
    kwargs.pop("pretrained_model_args", None)  # timm's record of a hf-hub: model's saved arguments
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    overrides: dict[str, Any] = {}
    for timm_key, ours in (("in_chans", "in_channels"), ("drop_rate", "dropout_rate"), ("drop_path_rate", "max_drop_path_rate")):  # fmt: skip
        if timm_key in kwargs:
            overrides[ours] = kwargs.pop(timm_key)
    size = kwargs.pop("img_size", None)  # timm passes the cfg's size (fixed_input_size) unless given
    if size is not None:
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"img_size must be an int or a square (h, w), got {size!r}")
            size = size[0]
        overrides["image_size"] = size
    pool = kwargs.pop("global_pool", None)
    if pool not in (None, ""):
        if pool not in _GLOBAL_POOL:
            raise ValueError(f"global_pool must be one of {sorted(_GLOBAL_POOL)}, got {pool!r}")
        overrides["readout"] = _GLOBAL_POOL[pool]
    num_classes = kwargs.pop("num_classes", None)
    if num_classes is not None and num_classes > 0:
        overrides["num_classes"] = num_classes
    overrides.update(kwargs)  # vit5_config keywords; model_config rejects unknown ones
    if pretrained is not None:
        if _PRETRAINED_LOADER is None:
            raise ValueError("pretrained weights need the loader `import vit5` installs")
        net = _PRETRAINED_LOADER(preset, pretrained["cfg"], overrides, pretrained["cache_dir"])
    else:
        net = instantiate(model_config(preset, **overrides))
    model = TimmViT5(net, num_classes=num_classes)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _entrypoint(preset: str, name: str) -> Any:
    def create(pretrained: bool = False, **kwargs: Any) -> TimmViT5:
        weights = None
        cache_dir = kwargs.pop("cache_dir", None)
        kwargs["pretrained_cfg"] = timm_fields(kwargs.get("pretrained_cfg"))
        cfg = timm.models.resolve_pretrained_cfg(
            name,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
        )
        # timm.create_model("hf-hub:...") / ("local-dir:...") mean the saved model: its weights load
        if pretrained or cfg.source in ("hf-hub", "local-dir"):
            if not (cfg.file or cfg.hf_hub_id or cfg.url):
                raise ValueError(
                    f"{name}: no published weights; pass pretrained_cfg_overlay=dict(file=path) (or hf_hub_id=...), "
                    f"or use a name with weights: {', '.join(sorted(_published_names()))}"
                )
            weights = {"cfg": cfg.to_dict(remove_source=False, remove_null=False), "cache_dir": cache_dir}
            kwargs.setdefault("num_classes", None)  # keep the checkpoint's head unless asked otherwise
            kwargs.setdefault("img_size", None)  # and its image size
        model = build_model_with_cfg(
            functools.partial(_build, preset, weights),
            name,
            pretrained=False,
            pretrained_cfg=kwargs.pop("pretrained_cfg", None),
            pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
            feature_cfg=dict(feature_cls="getter", out_indices=_default_out_indices(preset, kwargs)),
            **kwargs,
        )
        net = model.model.net if hasattr(model, "model") else model.net  # features_only wraps it
        # timm's cfg tells the network's truth: its size, and the preprocessing it records (a
        # loaded checkpoint's, or the defaults of vit5.networks.pretrained_cfg).
        ours = net.pretrained_cfg
        model.pretrained_cfg = model.default_cfg = {
            **model.pretrained_cfg,
            "input_size": (net.in_channels, net.image_size, net.image_size),
            **{key: ours[key] for key in ("interpolation", "crop_pct") if key in ours},
            **{key: tuple(ours[key]) for key in ("mean", "std") if key in ours},
        }
        return model

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = (
        f"timm entry point of the vit5 preset {preset!r} (timm keywords, see vit5.networks.timm_models)."
    )
    return create


def timm_fields(cfg: Any) -> Any:
    """A cfg dict without the keys timm's ``PretrainedCfg`` does not know (a saved vit5 model's
    ``config.json`` also records vit5's ``class_names`` / ``class_descriptions``)."""
    if not isinstance(cfg, Mapping):
        return cfg
    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {key: value for key, value in cfg.items() if key in known}


def _default_out_indices(preset: str, kwargs: dict[str, Any]) -> int:
    """``features_only=True`` without ``out_indices``: the last three blocks, as timm's ViTs."""
    num_blocks = kwargs.get("num_blocks", model_config(preset).get("num_blocks"))
    return min(3, num_blocks) if isinstance(num_blocks, int) and num_blocks > 0 else 3


def _pretrained_cfg(preset: str) -> dict[str, Any]:
    cfg = model_config(preset)
    size, channels = cfg.get("image_size", 224), cfg.get("in_channels", 3)
    base = dict(
        url="", num_classes=cfg.get("num_classes", 1000), input_size=(channels, size, size), pool_size=None,
        crop_pct=1.0, interpolation="bicubic", fixed_input_size=True,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), first_conv="net.patch_embed",
        classifier="net.out_proj", license="apache-2.0",
    )  # fmt: skip
    return {**base, **(_EXTRA_CFG(timm_name(preset)) if _EXTRA_CFG is not None else {})}


def _published_names() -> list[str]:
    return timm.list_pretrained("vit5*")


default_cfgs: dict[str, Any] = {}


def register_timm_model(preset: str) -> str:
    """Register one vit5 preset in timm (unless its timm name is taken); returns the timm name."""
    name = timm_name(preset)
    if not timm.models.is_model(name):
        default_cfgs.update(generate_default_cfgs({name: _pretrained_cfg(preset)}))
        timm_register_model(_entrypoint(preset, name))
    return name


def register_timm_models() -> list[str]:
    """Register every vit5 preset in timm; presets registered later follow automatically."""
    return [register_timm_model(preset) for preset in list_models()]


def configure(
    loader: Callable[..., ViT5ClassificationNet], extra_cfg: Callable[[str], Mapping[str, Any]]
) -> list[str]:
    """Install the weights loader and the published-weights cfg fields, then register every preset
    (called once by ``import vit5``, from :mod:`vit5.hub`); returns the timm names."""
    global _PRETRAINED_LOADER, _EXTRA_CFG
    _PRETRAINED_LOADER, _EXTRA_CFG = loader, extra_cfg
    names = register_timm_models()
    on_register(register_timm_model)
    return names


# FX feature extraction (timm's and torchvision's tracers given timm's notrace lists) keeps each
# block and RMSNorm as one call: block outputs are the feature maps users take, and the eager
# fast paths and checks (RMSNorm's fused CPU kernel among them) stay out of the traced graph, so
# a traced model computes what the eager one does (to fp32 rounding: the traced glue between the
# blocks records PyTorch ops).
register_notrace_module(ViT5ResidualBlock)
register_notrace_module(RMSNorm)
