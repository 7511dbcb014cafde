"""Resolution change: pos_embed resampling, RoPE positions, Hyena kernels, padding, and accuracy."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from vit5.config import LazyConfig, instantiate, load_config, locate
from vit5.modules.resampled_kernel import ResampledSIRENKernelND
from vit5.modules.siren import SIRENKernelND
from vit5.networks.presets import build_vit5, model_config, preset_arguments
from vit5.networks.resize import resample_pos_embed, resize_config, resize_model, resize_state_dict
from vit5.ops.rope import rope_angles_2d

SMALL = dict(
    hidden_dim=32, num_heads=2, num_blocks=2, patch_size=4, image_size=16, num_classes=5, siren_hidden_dim=8
)


def preset_call(name="vit5_tiny_hybrid", **overrides):
    """A run-config style model config: LazyConfig(build_vit5)(**preset arguments)."""
    return LazyConfig(build_vit5)(**{**preset_arguments(name), **SMALL, **overrides})


def trained(cfg, seed=0):
    torch.manual_seed(seed)
    model = instantiate(cfg)
    with torch.no_grad():  # O(1) LayerScale so that every block matters
        for name, parameter in model.named_parameters():
            if name.endswith("gamma"):
                parameter.uniform_(0.5, 1.0)
    return model.eval()


def logits(model, size, seed=1, batch=2):
    x = torch.randn(batch, size, size, model.in_channels, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model({"input": x})["logits"]


def kernels(model):
    return [m for m in model.modules() if isinstance(m, SIRENKernelND)]


# ---------------------------------------------------------------------------------------------------
# pos_embed


def test_resample_pos_embed_is_bicubic_and_keeps_constants():
    pos = torch.randn(1, 16, 8)
    assert torch.equal(resample_pos_embed(pos, 4), pos)
    expected = F.interpolate(
        pos.reshape(1, 4, 4, 8).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic", align_corners=False
    )
    assert torch.allclose(resample_pos_embed(pos, 6), expected.permute(0, 2, 3, 1).reshape(1, 36, 8))
    bias = torch.randn(8)
    for grid in (2, 3, 7, (5, 9)):
        shifted = resample_pos_embed(pos + bias, grid) - resample_pos_embed(pos, grid)
        assert torch.allclose(shifted, bias.expand_as(shifted), atol=1e-5)
    assert resample_pos_embed(torch.randn(1, 6, 4), (3, 3), old_grid=(2, 3)).shape == (1, 9, 4)
    assert resample_pos_embed(pos.double(), 3).dtype == torch.float64


def test_resample_pos_embed_errors():
    with pytest.raises(ValueError, match=r"shape \[1, Np, D\]"):
        resample_pos_embed(torch.randn(16, 8), 4)
    with pytest.raises(ValueError, match="not a square grid; pass old_grid"):
        resample_pos_embed(torch.randn(1, 6, 8), 4)
    with pytest.raises(ValueError, match=r"old_grid \(2, 2\) has 4 positions"):
        resample_pos_embed(torch.randn(1, 6, 8), 4, old_grid=2)
    with pytest.raises(TypeError, match="grid must be an int or"):
        resample_pos_embed(torch.randn(1, 4, 8), "big")
    with pytest.raises(ValueError, match="no 'pos_embed' key"):
        resize_state_dict({"foo": torch.zeros(1)}, 3)


# ---------------------------------------------------------------------------------------------------
# configs


def test_resize_config_of_a_preset_call():
    cfg = preset_call()
    before = copy.deepcopy(cfg)
    out = resize_config(cfg, 24)
    assert cfg == before  # not modified
    # g 4 -> 6; the hybrid's Hyena grid is [6 rows, 4] (16 patches + CLS + 4 registers + 3 pad)
    assert (out.image_size, out.rope_ref_grid, out.L_cache) == (24, 4, [6, 4])
    assert (out.kernel_sample_grid, out.kernel_sample_scale) == ([6, 4], 1.5)
    twice = resize_config(out, 32)  # composes: the reference grids stay those of training
    assert (twice.rope_ref_grid, twice.L_cache, twice.kernel_sample_grid, twice.kernel_sample_scale) == (
        4,
        [6, 4],
        [6, 4],
        2.0,
    )
    stretch = resize_config(cfg, 24, hyena_kernel="stretch")
    assert "L_cache" not in stretch and "kernel_sample_grid" not in stretch
    extend = resize_config(cfg, 24, hyena_kernel="extend")
    assert extend.L_cache == [6, 4] and "kernel_sample_grid" not in extend
    reference_rope = resize_config(preset_call(rope_impl="nvsubquadratic"), 24)
    assert "rope_ref_grid" not in reference_rope  # integer positions of the current grid


def test_resize_config_of_a_network_tree_matches_the_preset_path():
    tree, call = model_config("vit5_tiny_hybrid", **SMALL), preset_call()
    model = trained(tree)
    for mode in ("resample", "stretch", "extend"):
        a = trained(resize_config(tree, 24, hyena_kernel=mode))
        b = trained(resize_config(call, 24, hyena_kernel=mode))
        state = resize_state_dict(model.state_dict(), 6)
        a.load_state_dict(state), b.load_state_dict(state)
        assert torch.equal(logits(a, 24), logits(b, 24)), mode  # the same model either way: the same bits
    resized = resize_config(tree, 24)
    kernel = resized.layer_types["H"].sequence_mixer_cfg.inner_mixer_cfg.mixer_cfg.global_conv_cfg.kernel_cfg
    assert kernel["__target__"].endswith("ResampledSIRENKernelND")
    assert (kernel.sample_grid, kernel.sample_scale, kernel.L_cache) == ([6, 4], 1.5, [6, 4])
    assert resized.layer_types["A"].sequence_mixer_cfg.num_patches_h == 6


# ---------------------------------------------------------------------------------------------------
# the resized network


@pytest.mark.parametrize(
    "name", ["vit5_tiny_hybrid", "vit5_tiny_attention", "vit5_small_hyena_gap", "vit5_small_hybrid"]
)
@pytest.mark.parametrize("mode", ["resample", "stretch", "extend"])
def test_same_size_is_the_identity_and_other_sizes_run(name, mode):
    cfg = model_config(name, **SMALL)
    model = trained(cfg)
    same = resize_model(model, 16, config=cfg, hyena_kernel=mode)
    assert torch.equal(logits(same, 16), logits(model, 16))  # same size: a no-op
    for size in (12, 20, 28):
        resized = resize_model(model, size, config=cfg, hyena_kernel=mode)
        g = size // 4
        assert resized.image_size == size and resized._grid_w == g and resized.training is False
        assert resized._pad_size == -(g * g + int(resized.use_cls_token) + resized.num_registers) % g
        out = logits(resized, size)
        assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_padding_is_recomputed():
    cfg = model_config("vit5_tiny_hybrid", **SMALL)  # 16 px: 16 + 5 tokens, pad 3
    model = trained(cfg)
    assert model._pad_size == 3
    resized = resize_model(model, 20, config=cfg)  # 25 + 5 = 30 tokens: whole rows, no padding
    assert resized._pad_size == 0 and resized._zero_pad is None
    assert resized.blocks[0].sequence_mixer.grid_w == 5


def test_rope_positions_are_rescaled_to_the_training_grid():
    cfg = model_config("vit5_tiny_attention", **SMALL)
    resized = resize_model(trained(cfg), 24, config=cfg)
    attention = resized.blocks[0].sequence_mixer
    positions = torch.arange(6, dtype=torch.float32) * 4 / 6
    expected = rope_angles_2d(positions, positions, attention.head_dim, attention.rope_base)
    assert torch.allclose(attention.rope_cos[:36], expected.cos(), atol=1e-6)
    assert torch.allclose(attention.rope_sin[:36], expected.sin(), atol=1e-6)


def test_extend_keeps_the_kernel_taps_and_resample_keeps_them_on_the_scaled_grid():
    cfg = model_config("vit5_tiny_hybrid", **SMALL)
    model = trained(cfg)
    with torch.no_grad():
        old, _ = kernels(model)[0]((6, 4))  # (1, 11, 7, C): the training taps
        extended, _ = kernels(resize_model(model, 24, config=cfg, hyena_kernel="extend"))[0]((7, 6))
        assert torch.allclose(extended[:, 1:-1, 2:-2], old, atol=1e-5)  # same displacements, same values
        resampled_model = resize_model(
            model, 32, config=cfg
        )  # scale 2: even displacements are the trained taps
        kernel = kernels(resampled_model)[0]
        assert isinstance(kernel, ResampledSIRENKernelND)
        new, coords = kernel((9, 8))  # (1, 17, 15, C)
    assert new.shape == (1, 17, 15, old.shape[-1]) and coords.shape == (1, 17, 15, 2)
    # new tap d' is the trained tap d = d' / 2 (times the area factor 1/4): rows d' = -8..8 step 2 are
    # old rows d = -4..4 (indices 1..9), columns d' = -6..6 step 2 are old columns -3..3 (all)
    assert torch.allclose(new[:, 0::2, 1::2] * 4, old[:, 1:10], atol=1e-5)


def test_resampled_kernel_at_its_training_grid_is_the_siren():
    torch.manual_seed(0)
    args = dict(
        out_dim=6,
        data_dim=2,
        mlp_hidden_dim=8,
        num_layers=3,
        embedding_dim=8,
        omega_0=10.0,
        L_cache=[5, 4],
        use_bias=True,
    )
    siren = SIRENKernelND(**args)
    resampled = ResampledSIRENKernelND(**args, sample_grid=[5, 4], sample_scale=1.0)
    resampled.load_state_dict(siren.state_dict())
    with torch.no_grad():
        assert torch.equal(resampled((5, 4))[0], siren((5, 4))[0])
        assert resampled.flop_count((9, 9)) == siren.flop_count((5, 4))
    with pytest.raises(ValueError, match="data_dim=2"):
        ResampledSIRENKernelND(**{**args, "data_dim": 1, "L_cache": 4})
    with pytest.raises(ValueError, match="sample_scale must be > 0"):
        ResampledSIRENKernelND(**args, sample_scale=0.0)


def test_resampled_kernel_keeps_its_former_config_path(tmp_path):
    """Configs saved before the move name ``vit5.networks.resampled_kernel``; they still build."""
    old_path = "vit5.networks.resampled_kernel.ResampledSIRENKernelND"
    assert locate(old_path) is ResampledSIRENKernelND
    path = tmp_path / "kernel.yaml"
    path.write_text(
        f"__target__: {old_path}\nout_dim: 6\ndata_dim: 2\nmlp_hidden_dim: 8\nnum_layers: 3\n"
        "embedding_dim: 8\nomega_0: 10.0\nL_cache: [5, 4]\nuse_bias: true\nsample_scale: 1.5\n"
    )
    kernel = instantiate(load_config(path))
    assert isinstance(kernel, ResampledSIRENKernelND) and kernel.sample_scale == 1.5


def test_errors():
    cfg = model_config("vit5_tiny_hybrid", **SMALL)
    model = trained(cfg)
    with pytest.raises(ValueError, match=r"image_size \(18\) must be divisible by patch_size \(4\)"):
        resize_model(model, 18, config=cfg)
    with pytest.raises(ValueError, match="hyena_kernel must be one of"):
        resize_config(cfg, 24, hyena_kernel="bilinear")
    with pytest.raises(ValueError, match="config describes image_size=32 but model has image_size=16"):
        resize_model(model, 24, config=model_config("vit5_tiny_hybrid", **{**SMALL, "image_size": 32}))
    with pytest.raises(TypeError, match="must build a ViT5ClassificationNet"):
        resize_config(LazyConfig(torch.nn.Linear)(in_features=2, out_features=3), 24)
    with pytest.raises(TypeError, match="cfg must be a LazyConfig call"):
        resize_config({"image_size": 16}, 24)
    with pytest.raises(TypeError, match="model must be a ViT5ClassificationNet"):
        resize_model(torch.nn.Linear(2, 3), 24, config=cfg)
    broken = copy.deepcopy(cfg)
    broken.layer_types["A"].sequence_mixer_cfg.num_patches_h = 3
    with pytest.raises(ValueError, match=r"num_patches_h/w = \(3, 4\)"):
        resize_config(broken, 24)


# ---------------------------------------------------------------------------------------------------
# accuracy: a tiny hybrid trained on digits at 16 px, evaluated on the digits upsampled to 20 px


def digits_accuracy(model, size):
    from vit5.data import build_datasets

    _, test, _ = build_datasets("digits", image_size=size, augment="none")
    images = torch.stack([test[i][0] for i in range(len(test))])  # (N, 1, size, size)
    labels = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        predictions = model.eval()({"input": images.permute(0, 2, 3, 1)})["logits"].argmax(1)
    return (predictions == labels).float().mean().item()


@pytest.mark.slow  # ~1 minute on an idle 2-core machine: trains for 4 epochs
def test_a_model_trained_on_digits_keeps_its_accuracy_at_a_larger_size(tmp_path):
    from vit5.config import resolve
    from vit5.train.checkpoint import load_weights
    from vit5.train.loop import train
    from vit5.train.recipes import default_run_config

    cfg = default_run_config("digits")  # vit5_tiny_hybrid: Hyena and interleaved-RoPE attention blocks
    cfg.data.image_size = 16
    cfg.model.patch_size = 2  # an 8 x 8 patch grid (9 x 8 Hyena grid) at 16 px, 10 x 10 (11 x 10) at 20 px
    cfg.schedule.epochs = 4
    cfg.train.checkpoint_every_seconds = 1e9
    train(cfg, tmp_path / "run")
    model_cfg = resolve(cfg).model
    model = instantiate(model_cfg)
    model.load_state_dict(load_weights(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors")[0])
    before = digits_accuracy(model, 16)
    after = digits_accuracy(resize_model(model, 20, config=model_cfg), 20)
    # measured (seeds 0-2): 98.6/97.8/96.7% -> 90.0/90.0/88.9%; "extend" kernels give 11-25%
    assert before >= 0.9 and after >= 0.8 * before, (before, after)
    extend = digits_accuracy(resize_model(model, 20, config=model_cfg, hyena_kernel="extend"), 20)
    assert after > extend + 0.2, (after, extend)
