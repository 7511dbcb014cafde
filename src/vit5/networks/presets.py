"""Config builders and the preset registry.

Every preset is a function returning a LazyConfig tree of a :class:`ViT5ClassificationNet`, so config
files, ``vit5 info`` and :func:`create_model` share one construction path. A new variant is a few
lines of arguments to :func:`vit5_config`. All values in the trees are plain (init methods are
recorded factory calls), so every preset config saves to YAML and loads back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from vit5._validation import choice, positive_int
from vit5.config import ConfigNode, LazyConfig, instantiate
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.ckconv import CKConvND
from vit5.modules.hyena import Hyena
from vit5.modules.mlp import MLP
from vit5.modules.norms import L2Norm, RMSNorm
from vit5.modules.qkv_mixer import QKVSequenceMixer
from vit5.modules.siren import SIRENKernelND
from vit5.networks.vit5_classification import ViT5ClassificationNet
from vit5.ops.init import (
    partial_wang_init_fn_with_num_layers,
    small_init_factory,
    trunc_normal_init,
    trunc_normal_init_factory,
)

__all__ = [
    "attention_mixer_config",
    "build_vit5",
    "create_model",
    "hyena_mixer_config",
    "list_models",
    "model_config",
    "preset_arguments",
    "register_model",
    "residual_block_config",
    "vit5_config",
]


def rms_norm_config(dim: int) -> ConfigNode:
    return LazyConfig(RMSNorm)(dim=dim, eps=1e-6)


def attention_mixer_config(
    hidden_dim: int,
    num_heads: int,
    grid: int,
    num_registers: int,
    has_cls: bool,
    *,
    rope_impl: str = "nvsubquadratic",
    qkv_bias: bool = False,
    out_proj_bias: bool = False,
    init_std: float = 0.02,
) -> ConfigNode:
    """``ViT5Attention`` with RMSNorm(hd) QK-norm and truncated-normal projections."""
    return LazyConfig(ViT5Attention)(
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        num_patches_h=grid,
        num_patches_w=grid,
        num_registers=num_registers,
        has_cls=has_cls,
        qk_norm=rms_norm_config(hidden_dim // num_heads),
        rope_base=10000.0,
        reg_rope_base=100.0,
        qkv_bias=qkv_bias,
        out_proj_bias=out_proj_bias,
        init_fn_qkv_proj=LazyConfig(trunc_normal_init)(std=init_std),
        init_fn_out_proj=LazyConfig(trunc_normal_init)(std=init_std),
        rope_impl=rope_impl,
    )


def hyena_mixer_config(
    hidden_dim: int,
    grid_w: int,
    L_cache: int | list[int],
    num_layers: int,
    *,
    siren_hidden_dim: int = 32,
    siren_num_layers: int = 3,
    omega_0: float = 10.0,
) -> ConfigNode:
    """The reference's 2D Hyena mixer ("Hyena-S" settings of spec/hyena.md) behind a grid adapter.

    Args:
        hidden_dim: Width ``D``.
        grid_w: Patch-grid width (the adapter's row length).
        L_cache: Kernel coordinate cache: ``g`` for a ``g x g`` grid, ``[rows, g]`` with padding.
        num_layers: Network depth, for the output projection's Wang init.
    """
    D = hidden_dim
    kernel = LazyConfig(SIRENKernelND)(
        out_dim=D,
        data_dim=2,
        mlp_hidden_dim=siren_hidden_dim,
        num_layers=siren_num_layers,
        embedding_dim=siren_hidden_dim,
        omega_0=omega_0,
        L_cache=L_cache,
        use_bias=True,
        hidden_omega_0=1.0,
    )
    hyena = LazyConfig(Hyena)(
        global_conv_cfg=LazyConfig(CKConvND)(
            data_dim=2,
            hidden_dim=D,
            kernel_cfg=kernel,
            mask_cfg=LazyConfig(nn.Identity)(),
            grid_type="double",
            fft_padding="zero",
        ),
        short_conv_cfg=LazyConfig(nn.Conv2d)(
            in_channels=3 * D, out_channels=3 * D, kernel_size=3, padding=1, groups=3 * D, bias=False
        ),
        gate_nonlinear_cfg=LazyConfig(nn.SiLU)(),
        pixelhyena_norm_cfg=rms_norm_config(D),
        qk_norm_cfg=LazyConfig(L2Norm)(),
        output_norm_cfg=rms_norm_config(D),
        gate_nonlinear_2_cfg=LazyConfig(nn.Sigmoid)(),
    )
    mixer = LazyConfig(QKVSequenceMixer)(
        hidden_dim=D,
        mixer_cfg=hyena,
        qkv_bias=False,
        out_proj_bias=False,
        init_method_in=LazyConfig(small_init_factory)(),
        init_method_out=LazyConfig(partial_wang_init_fn_with_num_layers)(num_layers=num_layers),
    )
    return LazyConfig(ViT5HyenaAdapter)(inner_mixer_cfg=mixer, grid_w=grid_w)


def residual_block_config(
    mixer_cfg: ConfigNode,
    hidden_dim: int,
    *,
    mlp_ratio: float = 4.0,
    mlp_bias: bool = False,
    layer_scale_init: float = 1e-4,
    init_std: float = 0.02,
) -> ConfigNode:
    """A ``ViT5ResidualBlock`` with RMSNorm pre-norms and an exact-GELU MLP."""
    return LazyConfig(ViT5ResidualBlock)(
        sequence_mixer_cfg=mixer_cfg,
        sequence_mixer_norm_cfg=rms_norm_config(hidden_dim),
        mlp_cfg=LazyConfig(MLP)(
            dim=hidden_dim,
            activation="gelu",
            dropout_cfg=LazyConfig(nn.Dropout)(p=0.0),
            expansion_factor=mlp_ratio,
            bias=mlp_bias,
            init_method_in=LazyConfig(trunc_normal_init_factory)(std=init_std),
            init_method_out=LazyConfig(trunc_normal_init_factory)(std=init_std),
        ),
        mlp_norm_cfg=rms_norm_config(hidden_dim),
        hidden_dim=hidden_dim,
        layer_scale_init=layer_scale_init,
    )


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
) -> ConfigNode:
    """Config of a ViT5ClassificationNet whose blocks follow ``pattern``.

    ``pattern`` uses ``"A"`` (attention) and ``"H"`` (Hyena); it is repeated to ``num_blocks``
    (``"HA"`` with 12 blocks is ``"HA" * 6``). A single letter builds a homogeneous network
    (``block_cfg``), anything else uses ``layer_pattern`` / ``layer_types``. Hyena kernels get
    ``L_cache = g`` without padding and ``[rows, g]`` with it.
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
    rows = -(-tokens // grid)
    block_options = {"mlp_ratio": mlp_ratio, "mlp_bias": mlp_bias, "layer_scale_init": layer_scale_init}
    types = {}
    if "A" in layer_pattern:
        attention = attention_mixer_config(
            hidden_dim, num_heads, grid, num_registers, has_cls,
            rope_impl=rope_impl, qkv_bias=qkv_bias, out_proj_bias=attn_out_bias,
        )  # fmt: skip
        types["A"] = residual_block_config(attention, hidden_dim, **block_options)
    if "H" in layer_pattern:
        L_cache = grid if rows == grid else [rows, grid]
        hyena = hyena_mixer_config(
            hidden_dim, grid, L_cache, num_blocks, siren_hidden_dim=siren_hidden_dim, omega_0=omega_0
        )
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


def register_model(function: Callable[..., ConfigNode]) -> Callable[..., ConfigNode]:
    """Register a preset: a function of keyword overrides returning a network LazyConfig."""
    _PRESETS[function.__name__] = function
    return function


def list_models() -> list[str]:
    """Names of every registered preset, sorted."""
    return sorted(_PRESETS)


def model_config(name: str, **overrides: Any) -> ConfigNode:
    """The LazyConfig of preset ``name`` with keyword ``overrides`` (e.g. ``num_classes=10``)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _PRESETS[name](**overrides)


def create_model(name: str, **overrides: Any) -> ViT5ClassificationNet:
    """Build preset ``name``; ``overrides`` are :func:`vit5_config` keywords (``num_classes=10``)."""
    return instantiate(model_config(name, **overrides))


def _preset(defaults: dict[str, Any]) -> Callable[..., ConfigNode]:
    def build(**overrides: Any) -> ConfigNode:
        return vit5_config(**{**defaults, **overrides})

    return build


def preset_arguments(name: str) -> dict[str, Any]:
    """The :func:`vit5_config` arguments of a preset defined by this module."""
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
