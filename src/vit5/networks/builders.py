"""LazyConfig builders of the parts of a ViT-5 network (attention, Hyena, residual blocks).

:func:`vit5.networks.presets.vit5_config` assembles them into a network config; every value in the
trees is plain (init methods are recorded factory calls), so the configs save to YAML.
"""

from __future__ import annotations

from torch import nn

from vit5.config import ConfigNode, LazyConfig
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.ckconv import CKConvND
from vit5.modules.hyena import Hyena
from vit5.modules.mlp import MLP
from vit5.modules.norms import L2Norm, RMSNorm
from vit5.modules.qkv_mixer import QKVSequenceMixer
from vit5.modules.resampled_kernel import ResampledSIRENKernelND
from vit5.modules.siren import SIRENKernelND
from vit5.ops.init import (
    partial_wang_init_fn_with_num_layers,
    small_init_factory,
    trunc_normal_init,
    trunc_normal_init_factory,
)

__all__ = [
    "attention_mixer_config",
    "hyena_l_cache",
    "hyena_mixer_config",
    "residual_block_config",
    "rms_norm_config",
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
    rope_ref_grid: int | None = None,
    rope_base: float = 10000.0,
    reg_rope_base: float = 100.0,
) -> ConfigNode:
    """``ViT5Attention`` with RMSNorm(hd) QK-norm and truncated-normal projections.

    ``rope_ref_grid`` (interleaved RoPE only) is recorded only when given, so configs without it
    stay valid for the reference library.
    """
    cfg = LazyConfig(ViT5Attention)(
        hidden_dim=hidden_dim,
        num_heads=num_heads,
        num_patches_h=grid,
        num_patches_w=grid,
        num_registers=num_registers,
        has_cls=has_cls,
        qk_norm=rms_norm_config(hidden_dim // num_heads),
        rope_base=float(rope_base),
        reg_rope_base=float(reg_rope_base),
        qkv_bias=qkv_bias,
        out_proj_bias=out_proj_bias,
        init_fn_qkv_proj=LazyConfig(trunc_normal_init)(std=init_std),
        init_fn_out_proj=LazyConfig(trunc_normal_init)(std=init_std),
        rope_impl=rope_impl,
    )
    if rope_ref_grid is not None:
        cfg.rope_ref_grid = rope_ref_grid
    return cfg


def hyena_mixer_config(
    hidden_dim: int,
    grid_w: int,
    L_cache: int | list[int],
    num_layers: int,
    *,
    siren_hidden_dim: int = 32,
    siren_num_layers: int = 3,
    omega_0: float = 10.0,
    kernel_sample_grid: int | list[int] | None = None,
    kernel_sample_scale: float = 1.0,
) -> ConfigNode:
    """The reference's 2D Hyena mixer ("Hyena-S" settings of spec/hyena.md) behind a grid adapter.

    Args:
        hidden_dim: Width ``D``.
        grid_w: Patch-grid width (the adapter's row length).
        L_cache: Kernel coordinate cache: ``g`` for a ``g x g`` grid, ``[rows, g]`` with padding.
        num_layers: Network depth, for the output projection's Wang init.
        kernel_sample_grid: Resolution change: the grid the kernels were trained at; they are then
            :class:`~vit5.modules.resampled_kernel.ResampledSIRENKernelND` (same parameters).
        kernel_sample_scale: Resolution change: current grid / training grid.
    """
    D = hidden_dim
    resampled = kernel_sample_grid is not None
    kernel = LazyConfig(ResampledSIRENKernelND if resampled else SIRENKernelND)(
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
    if resampled:
        kernel.update(sample_grid=kernel_sample_grid, sample_scale=kernel_sample_scale)
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


def hyena_l_cache(grid: int, num_tokens: int) -> int | list[int]:
    """The Hyena kernels' ``L_cache`` for a ``g x g`` patch grid and ``T`` unpadded tokens.

    ``g`` when the tokens fill whole rows without padding, else ``[rows, g]`` with
    ``rows = ceil(T / g)`` (the padded sequence viewed as a grid).
    """
    rows = -(-num_tokens // grid)
    return grid if rows == grid else [rows, grid]


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
