"""Networks built from vit5 modules, the preset registry, and checkpoint interop (pure mappings)."""

from vit5.networks.interop import extract_state_dict
from vit5.networks.official import official_to_vit5, vit5_to_official
from vit5.networks.presets import (
    create_model,
    list_models,
    model_config,
    register_model,
    timm_name,
    vit5_config,
)
from vit5.networks.resize import (
    rebuild_at_resolution,
    resample_pos_embed,
    resize_config,
    resize_model,
    resize_state_dict,
)
from vit5.networks.vit5_classification import ViT5ClassificationNet

__all__ = [
    "ViT5ClassificationNet",
    "create_model",
    "extract_state_dict",
    "list_models",
    "model_config",
    "official_to_vit5",
    "rebuild_at_resolution",
    "register_model",
    "resample_pos_embed",
    "resize_config",
    "resize_model",
    "resize_state_dict",
    "timm_name",
    "vit5_config",
    "vit5_to_official",
]


def _register_config_targets() -> None:
    """Admit the network and its compact builder as targets of configs read from files."""
    from vit5.config.registry import register_config_target
    from vit5.modules import ResampledSIRENKernelND
    from vit5.networks.presets import build_vit5

    register_config_target(ViT5ClassificationNet)
    register_config_target(build_vit5)
    # Saved configs may name the former home of the resampled kernel.
    register_config_target(ResampledSIRENKernelND, "vit5.networks.resampled_kernel.ResampledSIRENKernelND")


_register_config_targets()
