"""rebuild_at_resolution: the network built at a new size (fine-tuning), vs resize_model (evaluation)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from tests.helpers import assert_parity, relative_error
from tests.networks.test_official import images, official_forward, official_state_dict, vit5_logits
from vit5 import create_model, load_official_vit5, model_config, rebuild_at_resolution, resize_model
from vit5.config import LazyConfig
from vit5.networks.presets import build_vit5, preset_arguments
from vit5.networks.resize import rebuild_config, resample_pos_embed


def official_finetune_state(sd, new_size, patch=16):
    """What the official fine-tuning code loads: pos_embed resampled bicubically (fp32), the rest as is."""
    g = new_size // patch
    return {**sd, "pos_embed": resample_pos_embed(sd["pos_embed"], g)}


@pytest.mark.parametrize("new_size", [96, 48])
def test_rebuilt_official_model_matches_the_official_finetuning_model(new_size):
    sd = official_state_dict("small", 3, 64)
    model = load_official_vit5(sd, "small")
    cfg = model_config("vit5_small", num_blocks=3, image_size=64, num_classes=1000)
    rebuilt = rebuild_at_resolution(model, new_size, config=cfg)
    assert (
        rebuilt.image_size == new_size
        and rebuilt.blocks[0].sequence_mixer.rope_ref_grid == (new_size // 16,) * 2
    )
    x = images(new_size)
    reference = official_forward(official_finetune_state(sd, new_size), x, 6)  # RoPE at integer positions
    ours = vit5_logits(rebuilt, x)
    assert_parity(ours, reference)
    # the evaluation resize (RoPE at the training grid's scale) is a different model
    assert relative_error(vit5_logits(resize_model(model, new_size, config=cfg), x), reference) > 1e-3
    for name, tensor in model.state_dict().items():  # every tensor but pos_embed unchanged
        if name != "pos_embed":
            assert torch.equal(rebuilt.state_dict()[name], tensor), name


@pytest.mark.parametrize("preset", ["vit5_tiny_hybrid", "vit5_tiny_hyena"])
@pytest.mark.parametrize("new_size", [48, 24])
def test_rebuilt_network_equals_a_network_built_at_that_size(preset, new_size):
    torch.manual_seed(0)
    cfg = LazyConfig(build_vit5)(**{**preset_arguments(preset), "image_size": 32, "siren_hidden_dim": 8})
    model = create_model(preset, image_size=32, siren_hidden_dim=8)
    rebuilt = rebuild_at_resolution(model.eval(), new_size, config=cfg)
    built = create_model(preset, image_size=new_size, siren_hidden_dim=8).eval()
    state = model.state_dict()
    state["pos_embed"] = F.interpolate(
        state["pos_embed"].reshape(1, 8, 8, -1).permute(0, 3, 1, 2), size=(new_size // 4,) * 2, mode="bicubic",
        align_corners=False,
    ).permute(0, 2, 3, 1).reshape(1, (new_size // 4) ** 2, -1)  # fmt: skip
    built.load_state_dict(state)
    x = torch.randn(2, new_size, new_size, 3)
    with torch.no_grad():
        # the same model, the same weights: the same bits
        assert torch.equal(rebuilt({"input": x})["logits"], built({"input": x})["logits"])
    # both config forms give the same network
    tree = rebuild_at_resolution(
        model, new_size, config=model_config(preset, image_size=32, siren_hidden_dim=8)
    )
    with torch.no_grad():
        # the same model, the same weights: the same bits
        assert torch.equal(tree({"input": x})["logits"], built({"input": x})["logits"])


def test_rebuilding_a_resized_config_drops_the_resize_settings():
    from vit5.networks.resize import resize_config

    cfg = LazyConfig(build_vit5)(**preset_arguments("vit5_tiny_hybrid"))
    resized = resize_config(cfg, 48)
    assert resized.rope_ref_grid == 8 and resized.kernel_sample_grid is not None
    rebuilt = rebuild_config(resized, 64)
    assert rebuilt.image_size == 64
    assert not {"rope_ref_grid", "kernel_sample_grid", "kernel_sample_scale", "L_cache"} & set(rebuilt)
    tree = rebuild_config(resize_config(model_config("vit5_tiny_hybrid"), 48), 64)
    assert "ResampledSIRENKernelND" not in str(tree) and "rope_ref_grid" not in str(tree)


def test_rebuild_errors():
    model = create_model("vit5_tiny_attention")
    with pytest.raises(TypeError, match="config="):
        rebuild_at_resolution(model, 48)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        rebuild_at_resolution(model, 30, config=model_config("vit5_tiny_attention"))
    with pytest.raises(ValueError, match="image_size=64"):
        rebuild_at_resolution(model, 48, config=model_config("vit5_tiny_attention", image_size=64))
    with pytest.raises(TypeError, match="ViT5ClassificationNet"):
        rebuild_at_resolution(torch.nn.Linear(2, 2), 48, config=model_config("vit5_tiny_attention"))
