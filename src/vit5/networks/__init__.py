"""Networks built from vit5 modules, and the preset registry."""

from vit5.networks.presets import create_model, list_models, model_config, register_model, vit5_config
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "ViT5ClassificationNet",
    "create_model",
    "list_models",
    "model_config",
    "register_model",
    "vit5_config",
]
