"""Build the reference library's (nvsubquadratic==0.2.0) version of a vit5 config tree.

A vit5 LazyConfig tree is translated by swapping every ``__target__`` for the reference class or
function of the same name — the compatibility contract says the same tree must build the same
network in both libraries. vit5-only keywords are dropped when they hold their defaults (and the
translation refuses trees that use them otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vit5.config import TARGET_KEY, ConfigNode, to_container

REFERENCE_TARGETS = {
    "vit5.networks.vit5_classification.ViT5ClassificationNet": "nvsubquadratic.networks.vit5_classification.ViT5ClassificationNet",
    "vit5.modules.block.ViT5ResidualBlock": "nvsubquadratic.modules.vit5_residual_block.ViT5ResidualBlock",
    "vit5.modules.attention.ViT5Attention": "nvsubquadratic.modules.vit5_attention.ViT5Attention",
    "vit5.modules.adapter.ViT5HyenaAdapter": "nvsubquadratic.modules.vit5_hyena_adapter.ViT5HyenaAdapter",
    "vit5.modules.qkv_mixer.QKVSequenceMixer": "nvsubquadratic.modules.sequence_mixer.QKVSequenceMixer",
    "vit5.modules.hyena.Hyena": "nvsubquadratic.modules.hyena_nd.Hyena",
    "vit5.modules.ckconv.CKConvND": "nvsubquadratic.modules.ckconv_nd.CKConvND",
    "vit5.modules.siren.SIRENKernelND": "nvsubquadratic.modules.kernels_nd.SIRENKernelND",
    "vit5.modules.film.KernelFiLMGenerator": "nvsubquadratic.modules.film.KernelFiLMGenerator",
    "vit5.modules.register.RegisterPooling": "nvsubquadratic.modules.film.RegisterPooling",
    "vit5.modules.register.RegisterCompressConcat": "nvsubquadratic.modules.film.RegisterCompressConcat",
    "vit5.modules.masks.ExponentialModulationND": "nvsubquadratic.modules.masks_nd.ExponentialModulationND",
    "vit5.modules.masks.GaussianModulationND": "nvsubquadratic.modules.masks_nd.GaussianModulationND",
    "vit5.modules.masks.BlockAlignedGaussianModulationND": "nvsubquadratic.modules.masks_nd.BlockAlignedGaussianModulationND",
    "vit5.modules.norms.RMSNorm": "nvsubquadratic.modules.rms_norm.RMSNorm",
    "vit5.modules.norms.L2Norm": "nvsubquadratic.utils.qk_norm.L2Norm",
    "vit5.modules.norms.GlobalResponseNorm": "nvsubquadratic.modules.grn.GlobalResponseNorm",
    "vit5.modules.mlp.MLP": "nvsubquadratic.modules.mlp.MLP",
    "vit5.modules.layer_scale.LayerScale": "nvsubquadratic.modules.layer_scale.LayerScale",
    "vit5.modules.drop_path.DropPath": "nvsubquadratic.modules.drop_path.DropPath",
    "vit5.ops.init.trunc_normal_init": "nvsubquadratic.utils.init.trunc_normal_init",
    "vit5.ops.init.trunc_normal_init_factory": "nvsubquadratic.utils.init.trunc_normal_init_factory",
    "vit5.ops.init.partial_wang_init_fn_with_num_layers": "nvsubquadratic.utils.init.partial_wang_init_fn_with_num_layers",
}
# vit5-only keywords and the defaults under which the reference behaves identically.
VIT5_ONLY = {
    "vit5.networks.vit5_classification.ViT5ClassificationNet": {"head_bias": False},
    "vit5.modules.attention.ViT5Attention": {"rope_impl": "nvsubquadratic", "rope_ref_grid": None},
}


def _translate(value: Any) -> Any:
    if isinstance(value, Mapping):
        target = value.get(TARGET_KEY)
        out = {}
        for key, item in value.items():
            if key == TARGET_KEY:
                continue
            if key in VIT5_ONLY.get(target, {}):
                if item != VIT5_ONLY[target][key]:
                    raise ValueError(f"{target}.{key}={item!r} has no equivalent in the reference")
                continue
            out[key] = _translate(item)
        if target is None:
            return out
        if target == "vit5.ops.init.small_init_factory":
            from nvsubquadratic.utils.init import small_init

            return small_init  # the reference stores the function itself
        if target.startswith("vit5."):
            if target not in REFERENCE_TARGETS:
                raise KeyError(f"no reference equivalent for {target}")
            target = REFERENCE_TARGETS[target]
        return {TARGET_KEY: target, **out}
    if isinstance(value, list):
        return [_translate(item) for item in value]
    return value


def reference_config(cfg: ConfigNode) -> Any:
    """The OmegaConf tree the reference's ``instantiate`` builds from."""
    from omegaconf import OmegaConf

    return OmegaConf.create(_translate(to_container(cfg)), flags={"allow_objects": True})


def build_reference(cfg: ConfigNode) -> Any:
    """Build the reference library's module for a vit5 config."""
    from nvsubquadratic.lazy_config import instantiate as reference_instantiate

    return reference_instantiate(reference_config(cfg))
