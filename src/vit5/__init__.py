"""vit5: ViT-5 image classifiers (attention, 2D Hyena and hybrid) in PyTorch.

When timm is installed, importing vit5 registers the presets in timm's registry
(``timm.create_model("vit5_small_patch16_224", num_classes=10)``).

Every class of the nvSubquadratic ViT-5 contract is importable from here, with the same constructor
keywords and ``state_dict`` keys, so its LazyConfig trees and checkpoints work after changing only
the imports::

    from vit5 import LazyConfig, ViT5Attention, ViT5ClassificationNet, instantiate, create_model
"""

import torch.optim as _optim

from vit5.config import (
    PLACEHOLDER,
    ConfigNode,
    LazyConfig,
    apply_overrides,
    instantiate,
    load_config,
    save_config,
)
from vit5.config.nvsubquadratic import load_nvsubquadratic_config
from vit5.config.registry import config_targets as _config_targets
from vit5.config.registry import register_config_target
from vit5.export import export_onnx, export_program

# Names with weights, save_pretrained / push_to_hub; registers the presets in timm when it is installed.
from vit5.hub import create_model, from_pretrained, list_pretrained, push_to_hub, save_pretrained
from vit5.modules import (
    MLP,
    BlockAlignedGaussianModulationND,
    BlockDiagonalLearnableOmegaSIRENKernelND,
    BlockDiagonalMultiOmegaSIRENKernelND,
    CKConvND,
    DropPath,
    ExponentialModulationND,
    GaussianModulationND,
    GlobalResponseNorm,
    Hyena,
    KernelFiLMGenerator,
    L2Norm,
    LayerScale,
    LearnableOmegaSIRENKernelND,
    MultiOmegaSIRENKernelND,
    QKVSequenceMixer,
    RandomFourierKernelND,
    RegisterCompressConcat,
    RegisterPooling,
    RMSNorm,
    RMSNormChannelFirst,
    SIRENKernelND,
    ViT5Attention,
    ViT5HyenaAdapter,
    ViT5ResidualBlock,
)
from vit5.networks import (
    ViT5ClassificationNet,
    list_models,
    model_config,
    rebuild_at_resolution,
    register_model,
    resize_config,
    resize_model,
    vit5_config,
)
from vit5.ops.init import (
    partial_wang_init_fn_with_num_layers,
    small_init,
    small_init_factory,
    trunc_normal_init,
    trunc_normal_init_factory,
    wang_init,
)
from vit5.weights import load_model, load_nvsubquadratic_checkpoint, load_official_vit5

# Configs read from files may name the re-exported classes and functions as ``vit5.X``.
_registered = set(map(id, _config_targets().values()))
for _name, _obj in list(globals().items()):
    if not _name.startswith("_") and id(_obj) in _registered:
        register_config_target(_obj, f"vit5.{_name}")
del _name, _obj, _registered
# Saved nvSubquadratic run configs record their optimizer (built by the trainer, never by a model).
for _name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"):
    register_config_target(getattr(_optim, _name), f"torch.optim.{_name}")
del _name
__version__ = "0.1.0"

__all__ = [
    "MLP",
    "PLACEHOLDER",
    "BlockAlignedGaussianModulationND",
    "BlockDiagonalLearnableOmegaSIRENKernelND",
    "BlockDiagonalMultiOmegaSIRENKernelND",
    "CKConvND",
    "ConfigNode",
    "DropPath",
    "ExponentialModulationND",
    "GaussianModulationND",
    "GlobalResponseNorm",
    "Hyena",
    "KernelFiLMGenerator",
    "L2Norm",
    "LayerScale",
    "LazyConfig",
    "LearnableOmegaSIRENKernelND",
    "MultiOmegaSIRENKernelND",
    "QKVSequenceMixer",
    "RMSNorm",
    "RMSNormChannelFirst",
    "RandomFourierKernelND",
    "RegisterCompressConcat",
    "RegisterPooling",
    "SIRENKernelND",
    "ViT5Attention",
    "ViT5ClassificationNet",
    "ViT5HyenaAdapter",
    "ViT5ResidualBlock",
    "apply_overrides",
    "create_model",
    "export_onnx",
    "export_program",
    "from_pretrained",
    "instantiate",
    "list_models",
    "list_pretrained",
    "load_config",
    "load_model",
    "load_nvsubquadratic_checkpoint",
    "load_nvsubquadratic_config",
    "load_official_vit5",
    "model_config",
    "rebuild_at_resolution",
    "partial_wang_init_fn_with_num_layers",
    "push_to_hub",
    "register_config_target",
    "register_model",
    "resize_config",
    "resize_model",
    "save_config",
    "save_pretrained",
    "small_init",
    "small_init_factory",
    "trunc_normal_init",
    "trunc_normal_init_factory",
    "vit5_config",
    "wang_init",
]
