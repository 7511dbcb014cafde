"""nn.Modules, one concept per file, re-exported here."""

from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.ckconv import CKConvND
from vit5.modules.drop_path import DropPath
from vit5.modules.film import KernelFiLMGenerator
from vit5.modules.hyena import Hyena
from vit5.modules.layer_scale import LayerScale
from vit5.modules.learnable_omega_siren import (
    BlockDiagonalLearnableOmegaSIRENKernelND,
    LearnableOmegaSIRENKernelND,
    LearnableOmegaSIRENPositionalEmbeddingND,
)
from vit5.modules.masks import BlockAlignedGaussianModulationND, ExponentialModulationND, GaussianModulationND
from vit5.modules.mlp import MLP
from vit5.modules.multi_omega_siren import (
    BlockDiagonalMultiOmegaSIRENKernelND,
    MultiOmegaSIRENKernelND,
    MultiOmegaSIRENPositionalEmbeddingND,
)
from vit5.modules.norm_channel_first import RMSNormChannelFirst
from vit5.modules.norms import GlobalResponseNorm, L2Norm, RMSNorm
from vit5.modules.qkv_mixer import QKVSequenceMixer
from vit5.modules.random_fourier import RandomFourierKernelND, RandomFourierPositionalEmbeddingND
from vit5.modules.register import RegisterCompressConcat, RegisterPooling
from vit5.modules.resampled_kernel import ResampledSIRENKernelND
from vit5.modules.siren import SIRENKernelND, SIRENPositionalEmbeddingND

__all__ = [
    "MLP",
    "BlockAlignedGaussianModulationND",
    "BlockDiagonalLearnableOmegaSIRENKernelND",
    "BlockDiagonalMultiOmegaSIRENKernelND",
    "CKConvND",
    "DropPath",
    "ExponentialModulationND",
    "GaussianModulationND",
    "GlobalResponseNorm",
    "Hyena",
    "KernelFiLMGenerator",
    "L2Norm",
    "LayerScale",
    "LearnableOmegaSIRENKernelND",
    "LearnableOmegaSIRENPositionalEmbeddingND",
    "MultiOmegaSIRENKernelND",
    "MultiOmegaSIRENPositionalEmbeddingND",
    "QKVSequenceMixer",
    "RMSNorm",
    "RMSNormChannelFirst",
    "RandomFourierKernelND",
    "RandomFourierPositionalEmbeddingND",
    "RegisterCompressConcat",
    "RegisterPooling",
    "ResampledSIRENKernelND",
    "SIRENKernelND",
    "SIRENPositionalEmbeddingND",
    "ViT5Attention",
    "ViT5HyenaAdapter",
    "ViT5ResidualBlock",
]


def _register_config_targets() -> None:
    """Admit these modules, the initialisers configs record, and common ``torch.nn`` layers as
    targets of configs read from files (:mod:`vit5.config.registry`)."""
    import torch.nn

    import vit5.ops.init as init
    from vit5.config.registry import register_config_target

    for name in __all__:
        register_config_target(globals()[name])
    for name in init.__all__:
        if callable(getattr(init, name)):
            register_config_target(getattr(init, name))
    for name in _TORCH_NN_LAYERS:
        layer = getattr(torch.nn, name, None)
        if layer is not None:
            register_config_target(layer, f"torch.nn.{name}")
    for name in _TORCH_INITIALISERS:  # nvSubquadratic's init functions are partials of these
        register_config_target(getattr(torch.nn.init, name), f"torch.nn.init.{name}")


_TORCH_NN_LAYERS = (
    "Identity", "Linear", "Conv1d", "Conv2d", "Conv3d", "Dropout", "Dropout1d", "Dropout2d",
    "GELU", "SiLU", "ReLU", "ReLU6", "LeakyReLU", "ELU", "Mish", "Sigmoid", "Tanh", "Softplus",
    "Hardswish", "Hardsigmoid", "GLU", "Softmax", "LayerNorm", "GroupNorm", "RMSNorm",
    "BatchNorm1d", "BatchNorm2d", "Flatten",
)  # fmt: skip
_TORCH_INITIALISERS = (
    "trunc_normal_", "normal_", "uniform_", "zeros_", "ones_", "constant_", "xavier_uniform_", "xavier_normal_",
    "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
)  # fmt: skip
_register_config_targets()
