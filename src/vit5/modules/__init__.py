"""nn.Modules, one concept per file, re-exported here."""

from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.attention import ViT5Attention
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.ckconv import CKConvND
from vit5.modules.drop_path import DropPath
from vit5.modules.film import KernelFiLMGenerator
from vit5.modules.hyena import Hyena
from vit5.modules.layer_scale import LayerScale
from vit5.modules.masks import BlockAlignedGaussianModulationND, ExponentialModulationND, GaussianModulationND
from vit5.modules.mlp import MLP
from vit5.modules.norms import GlobalResponseNorm, L2Norm, RMSNorm
from vit5.modules.qkv_mixer import QKVSequenceMixer
from vit5.modules.register import RegisterCompressConcat, RegisterPooling
from vit5.modules.resampled_kernel import ResampledSIRENKernelND
from vit5.modules.siren import SIRENKernelND

__all__ = [
    "MLP",
    "BlockAlignedGaussianModulationND",
    "CKConvND",
    "DropPath",
    "ExponentialModulationND",
    "GaussianModulationND",
    "GlobalResponseNorm",
    "Hyena",
    "KernelFiLMGenerator",
    "L2Norm",
    "LayerScale",
    "QKVSequenceMixer",
    "RMSNorm",
    "RegisterCompressConcat",
    "RegisterPooling",
    "ResampledSIRENKernelND",
    "SIRENKernelND",
    "ViT5Attention",
    "ViT5HyenaAdapter",
    "ViT5ResidualBlock",
]
