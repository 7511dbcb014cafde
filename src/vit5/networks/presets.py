"""The network config builder (:func:`vit5_config`) and the preset registry.

Every preset is a function returning a LazyConfig tree of a :class:`ViT5ClassificationNet`, so config
files, ``vit5 info`` and :func:`create_model` share one construction path. A new variant is a few
lines of arguments to :func:`vit5_config`. All values in the trees are plain (init methods are
recorded factory calls), so every preset config saves to YAML and loads back.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any

from vit5._validation import choice, positive_int
from vit5.config import ConfigNode, LazyConfig, instantiate
from vit5.networks.builders import (
    attention_mixer_config,
    hyena_l_cache,
    hyena_mixer_config,
    residual_block_config,
    rms_norm_config,
)
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "OFFICIAL_PRESETS",
    "attention_mixer_config",
    "build_vit5",
    "create_model",
    "hyena_l_cache",
    "hyena_mixer_config",
    "list_models",
    "model_config",
    "on_register",
    "preset_arguments",
    "register_model",
    "residual_block_config",
    "resolve_model_name",
    "rms_norm_config",
    "timm_name",
    "vit5_config",
]


def vit5_config(
    *,
    hidden_dim: int,
    num_blocks: int,
    num_heads: int,
    pattern: str = "A",
    patch_size: int = 16,
    image_size: int = 224,
    in_channels: int = 3,
    num_classes: int = 1000,
    num_registers: int = 4,
    readout: str = "cls",
    mlp_ratio: float = 4.0,
    rope_impl: str = "nvsubquadratic",
    qkv_bias: bool = False,
    attn_out_bias: bool = False,
    mlp_bias: bool = False,
    head_bias: bool = False,
    layer_scale_init: float = 1e-4,
    max_drop_path_rate: float = 0.0,
    drop_path_schedule: str = "constant",
    dropout_rate: float = 0.0,
    neck_compression_ratio: int | None = None,
    siren_hidden_dim: int = 32,
    omega_0: float = 10.0,
    L_cache: int | list[int] | None = None,
    rope_ref_grid: int | None = None,
    rope_base: float = 10000.0,
    reg_rope_base: float = 100.0,
    kernel_sample_grid: int | list[int] | None = None,
    kernel_sample_scale: float = 1.0,
) -> ConfigNode:
    """Config of a ViT5ClassificationNet whose blocks follow ``pattern``.

    ``pattern`` uses ``"A"`` (attention) and ``"H"`` (Hyena); it is repeated to ``num_blocks``
    (``"HA"`` with 12 blocks is ``"HA" * 6``). A single letter builds a homogeneous network
    (``block_cfg``), anything else uses ``layer_pattern`` / ``layer_types``.

    Resolution keywords (used to run weights trained at one ``image_size`` at another, see
    :mod:`vit5.networks.resize`):

    * ``L_cache``: the Hyena kernels' coordinate cache, which fixes the kernel coordinate step
      ``1 / (L_cache - 1)`` per axis. ``None`` means the construction grid: ``g`` without padding,
      ``[rows, g]`` with it (``rows = ceil((g*g + cls + R) / g)``).
    * ``rope_base`` / ``reg_rope_base``: RoPE frequency bases of the patch and register positions
      (10000 and 100 in ViT-5; checkpoints trained with others record theirs).
    * ``rope_ref_grid``: interleaved RoPE only; the patch grid ``L0`` whose integer positions the
      current grid is rescaled to (``arange(g) * L0 / g``). ``None`` means the construction grid.
    * ``kernel_sample_grid`` / ``kernel_sample_scale``: Hyena kernels trained on the grid
      ``kernel_sample_grid`` (``[rows, g]``) are evaluated there and resampled for an image scaled
      by ``kernel_sample_scale`` (:class:`~vit5.modules.resampled_kernel.ResampledSIRENKernelND`).
    """
    for name, value in (("hidden_dim", hidden_dim), ("num_blocks", num_blocks), ("num_heads", num_heads)):
        positive_int(name, value)
    if not isinstance(pattern, str) or not pattern or set(pattern) - {"A", "H"}:
        raise ValueError(
            f"pattern must be a non-empty string of 'A' (attention) and 'H' (Hyena), got {pattern!r}"
        )
    if num_blocks % len(pattern):
        raise ValueError(
            f"num_blocks ({num_blocks}) must be a multiple of len(pattern) ({len(pattern)}, {pattern!r})"
        )
    choice("readout", readout, ("cls", "gap", "register_concat"))
    layer_pattern = pattern * (num_blocks // len(pattern))
    positive_int("patch_size", patch_size)
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
    grid = image_size // patch_size
    has_cls = readout == "cls"
    tokens = grid * grid + int(has_cls) + num_registers
    block_options = {"mlp_ratio": mlp_ratio, "mlp_bias": mlp_bias, "layer_scale_init": layer_scale_init}
    types = {}
    if "A" in layer_pattern:
        attention = attention_mixer_config(
            hidden_dim, num_heads, grid, num_registers, has_cls,
            rope_impl=rope_impl, qkv_bias=qkv_bias, out_proj_bias=attn_out_bias, rope_ref_grid=rope_ref_grid,
            rope_base=rope_base, reg_rope_base=reg_rope_base,
        )  # fmt: skip
        types["A"] = residual_block_config(attention, hidden_dim, **block_options)
    if "H" in layer_pattern:
        if L_cache is None:
            L_cache = hyena_l_cache(grid, tokens)
        hyena = hyena_mixer_config(
            hidden_dim, grid, L_cache, num_blocks, siren_hidden_dim=siren_hidden_dim, omega_0=omega_0,
            kernel_sample_grid=kernel_sample_grid, kernel_sample_scale=kernel_sample_scale,
        )  # fmt: skip
        types["H"] = residual_block_config(hyena, hidden_dim, **block_options)
    net = LazyConfig(ViT5ClassificationNet)(
        in_channels=in_channels,
        num_classes=num_classes,
        hidden_dim=hidden_dim,
        num_blocks=num_blocks,
        patch_size=patch_size,
        image_size=image_size,
        num_registers=num_registers,
        norm_cfg=rms_norm_config(
            num_registers * hidden_dim // neck_compression_ratio
            if readout == "register_concat" and neck_compression_ratio
            else hidden_dim
        ),
        readout=readout,
        dropout_rate=dropout_rate,
        max_drop_path_rate=max_drop_path_rate,
        drop_path_schedule=drop_path_schedule,
        head_bias=head_bias,
    )
    if readout == "register_concat":
        net.neck_compression_ratio = neck_compression_ratio
    if len(types) == 1 and len(set(layer_pattern)) == 1:
        net.block_cfg = next(iter(types.values()))
    else:
        net.layer_pattern = layer_pattern
        net.layer_types = types
    return net


def build_vit5(**arguments: Any) -> ViT5ClassificationNet:
    """Build the network :func:`vit5_config` describes.

    Run configs record ``LazyConfig(build_vit5)(hidden_dim=..., ...)``: a compact, consistent form in
    which ``model.hidden_dim=256`` changes every layer that depends on it. Takes exactly the keywords
    of :func:`vit5_config`.
    """
    return instantiate(vit5_config(**arguments))


build_vit5.__signature__ = inspect.signature(vit5_config).replace(return_annotation=ViT5ClassificationNet)


# --------------------------------------------------------------------------------------------------
# Registry

_PRESETS: dict[str, Callable[..., ConfigNode]] = {}
_PRESET_ARGUMENTS: dict[str, dict[str, Any]] = {}


_ON_REGISTER: list[Callable[[str], None]] = []  # e.g. the timm integration's registration


def register_model(function: Callable[..., ConfigNode]) -> Callable[..., ConfigNode]:
    """Register a preset: a function of keyword overrides returning a network LazyConfig.

    When the timm integration is loaded, the preset is registered in timm too.
    """
    _PRESETS[function.__name__] = function
    for callback in _ON_REGISTER:
        callback(function.__name__)
    return function


def on_register(callback: Callable[[str], None]) -> None:
    """Call ``callback(name)`` for every preset registered from now on."""
    _ON_REGISTER.append(callback)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered presets, sorted; ``pattern`` filters them (``fnmatch``, e.g. ``"*tiny*"``)."""
    names = sorted(_PRESETS)
    return names if pattern is None else fnmatch.filter(names, pattern)


def timm_name(name: str) -> str:
    """The timm-style name of a preset: ``<name>_patch<p>_<image>`` (``vit5_small_patch16_224``); a
    preset already named that way (``vit5_base_patch16_384``) is its own timm name."""
    cfg = model_config(name)
    suffix = f"_patch{cfg.get('patch_size')}_{cfg.get('image_size')}"
    return name if name.endswith(suffix) else f"{name}{suffix}"


def resolve_model_name(name: str) -> str:
    """The preset ``name`` refers to: a registered name or its timm-style alias.

    Raises:
        ValueError: ``name`` is neither (the message lists the presets).
    """
    if name in _PRESETS:
        return name
    if isinstance(name, str):
        for preset in _PRESETS:
            if name == timm_name(preset):
                return preset
    raise ValueError(
        f"unknown model {name!r}; available: {', '.join(list_models())} (or their timm-style names such as "
        "'vit5_small_patch16_224')"
    )


def model_config(name: str, **overrides: Any) -> ConfigNode:
    """The LazyConfig of preset ``name`` (or its timm-style alias) with keyword ``overrides``
    (:func:`vit5_config` keywords, e.g. ``num_classes=10``)."""
    return _PRESETS[resolve_model_name(name)](**overrides)


def create_model(name: str, **overrides: Any) -> ViT5ClassificationNet:
    """Build preset ``name`` (or its timm-style alias); ``overrides`` are :func:`vit5_config` keywords
    (``num_classes=10``, ``image_size=64``)."""
    return instantiate(model_config(name, **overrides))


def _preset(defaults: dict[str, Any]) -> Callable[..., ConfigNode]:
    def build(**overrides: Any) -> ConfigNode:
        known = inspect.signature(vit5_config).parameters
        for key in overrides:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise TypeError(f"unknown model keyword {key!r}; {hint}known: {', '.join(known)}")
        return vit5_config(**{**defaults, **overrides})

    return build


def preset_arguments(name: str) -> dict[str, Any]:
    """The :func:`vit5_config` arguments of a preset defined by this module (or its timm-style alias)."""
    if name not in _PRESET_ARGUMENTS and name in _PRESETS.keys() | {timm_name(p) for p in _PRESETS}:
        name = resolve_model_name(name)
    if name not in _PRESET_ARGUMENTS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(_PRESET_ARGUMENTS))}")
    return dict(_PRESET_ARGUMENTS[name])


def _define(name: str, doc: str, **defaults: Any) -> None:
    _PRESET_ARGUMENTS[name] = defaults
    build = _preset(defaults)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{doc}\n\nDefaults: {defaults}. Keyword overrides are vit5_config arguments."
    register_model(build)


# The reference library's ViT-5-S configurations (spec/00-overview.md).
_define(
    "vit5_small_ref",
    "ViT-5-S attention as in nvSubquadratic (82.2% IN-1k), 22.01M params.",
    hidden_dim=384,
    num_blocks=12,
    num_heads=6,
    pattern="A",
    readout="cls",
    num_registers=4,
)
_define(
    "vit5_small_hyena_gap",
    "ViT-5-S Hyena with GAP readout as in nvSubquadratic (81.5% IN-1k).",
    hidden_dim=384,
    num_blocks=12,
    num_heads=6,
    pattern="H",
    readout="gap",
    num_registers=0,
)
_define(
    "vit5_small_hybrid",
    "ViT-5-S hybrid: Hyena/attention alternating ('HA' * 6), CLS + 4 registers.",
    hidden_dim=384,
    num_blocks=12,
    num_heads=6,
    pattern="HA",
    readout="cls",
    num_registers=4,
)

# The official ViT-5 layout (wangf3014/ViT-5): interleaved RoPE, biases as in the released weights.
_OFFICIAL = dict(
    pattern="A",
    readout="cls",
    num_registers=4,
    rope_impl="interleaved",
    attn_out_bias=True,
    mlp_bias=True,
    head_bias=True,
)
_define(
    "vit5_small",
    "Official ViT-5-S layout (22.04M params).",
    hidden_dim=384,
    num_blocks=12,
    num_heads=6,
    **_OFFICIAL,
)
_define("vit5_base", "Official ViT-5-B layout.", hidden_dim=768, num_blocks=12, num_heads=12, **_OFFICIAL)
_define("vit5_large", "Official ViT-5-L layout.", hidden_dim=1024, num_blocks=24, num_heads=16, **_OFFICIAL)
_define("vit5_xlarge", "Official ViT-5-XL layout.", hidden_dim=1152, num_blocks=28, num_heads=16, **_OFFICIAL)
#: Presets in the official ViT-5 layout (official checkpoints load into these).
OFFICIAL_PRESETS = ("vit5_small", "vit5_base", "vit5_large", "vit5_xlarge", "vit5_base_patch16_384",
                    "vit5_large_patch16_384")  # fmt: skip

# The published 384 px fine-tunes (the 224 px ones are vit5_small / vit5_base / vit5_large, whose
# timm names are vit5_{small,base,large}_patch16_224): see vit5.networks.pretrained_cfg.PUBLISHED.
_define("vit5_base_patch16_384", "Official ViT-5-B layout at 384 px.", hidden_dim=768, num_blocks=12, num_heads=12,
        image_size=384, **_OFFICIAL)  # fmt: skip
_define("vit5_large_patch16_384", "Official ViT-5-L layout at 384 px.", hidden_dim=1024, num_blocks=24,
        num_heads=16, image_size=384, **_OFFICIAL)  # fmt: skip

# Tiny CPU presets (small images such as digits, Fashion-MNIST, CIFAR).
_TINY = dict(
    hidden_dim=64,
    num_blocks=4,
    num_heads=2,
    patch_size=4,
    image_size=32,
    num_classes=10,
    num_registers=4,
    readout="cls",
    rope_impl="interleaved",
    layer_scale_init=0.1,
)
_define("vit5_tiny_hybrid", "Tiny hybrid ('HA' * 2) for 32 px images on a CPU.", pattern="HA", **_TINY)
_define("vit5_tiny_attention", "Tiny attention network for 32 px images on a CPU.", pattern="A", **_TINY)
_define("vit5_tiny_hyena", "Tiny Hyena network for 32 px images on a CPU.", pattern="H", **_TINY)
