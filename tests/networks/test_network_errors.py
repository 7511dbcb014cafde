"""ViT5ClassificationNet configuration and input errors: what was wrong and what was expected."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vit5.config import LazyConfig
from vit5.modules.attention import ViT5Attention
from vit5.modules.block import ViT5ResidualBlock
from vit5.modules.norms import RMSNorm
from vit5.networks.presets import attention_mixer_config, hyena_mixer_config, residual_block_config
from vit5.networks.vit5_classification import ViT5ClassificationNet

# The reference raises AssertionError, fails late, or silently accepts most of these.


def attention_block(D=32, g=4, R=4, cls=True):
    return residual_block_config(attention_mixer_config(D, 2, g, R, cls), D)


def net_kwargs(**overrides):
    kwargs = dict(
        in_channels=3,
        num_classes=5,
        hidden_dim=32,
        num_blocks=2,
        patch_size=4,
        image_size=16,
        num_registers=4,
        norm_cfg=LazyConfig(RMSNorm)(dim=32),
        readout="cls",
        block_cfg=attention_block(),
    )
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(readout="mean"), ValueError, "readout must be one of"),
        (dict(image_size=18), ValueError, r"image_size \(18\) must be divisible by patch_size \(4\)"),
        (dict(readout="register_concat"), ValueError, "neck_compression_ratio is required"),
        (
            dict(readout="register_concat", neck_compression_ratio=3),
            ValueError,
            "divisible by neck_compression_ratio",
        ),
        (
            dict(readout="register_concat", neck_compression_ratio=4, num_registers=0),
            ValueError,
            "num_registers must be > 0",
        ),
        (dict(block_cfg=None), ValueError, "either block_cfg or layer_pattern"),
        (dict(layer_pattern="AA", layer_types={"A": attention_block()}), ValueError, "mutually exclusive"),
        (
            dict(block_cfg=None, layer_pattern="AAA", layer_types={"A": attention_block()}),
            ValueError,
            r"length \(3\)",
        ),
        (
            dict(block_cfg=None, layer_pattern="AB", layer_types={"A": attention_block()}),
            ValueError,
            r"\['B'\]",
        ),
        (dict(block_cfg=None, layer_pattern="AA"), ValueError, "layer_types"),
        (dict(layer_types={"A": attention_block()}), ValueError, "layer_types without"),
        (dict(drop_path_schedule="cosine"), ValueError, "drop_path_schedule"),
        (dict(max_drop_path_rate=1.5), ValueError, "max_drop_path_rate"),
        (dict(reg_init="ones"), ValueError, "reg_init"),
        (dict(num_blocks=0), ValueError, "num_blocks"),
        (dict(hidden_dim=32.0), TypeError, "hidden_dim"),
        (dict(block_cfg=attention_block(cls=False)), ValueError, "has_cls"),
        (dict(block_cfg=attention_block(R=1)), ValueError, "num_registers"),
        (dict(block_cfg=attention_block(g=3)), ValueError, "num_patches_h"),
        (dict(norm_cfg=LazyConfig(RMSNorm)(dim=16)), ValueError, "width 16"),
        (
            dict(readout="register_concat", neck_compression_ratio=2, block_cfg=attention_block(cls=False)),
            ValueError,
            "width 32, but the readout width is num_registers",
        ),
    ],
)
def test_invalid_network_configurations(overrides, error, message):
    with pytest.raises(error, match=message):
        ViT5ClassificationNet(**net_kwargs(**overrides))


def test_head_dim_and_register_grid_errors_come_from_the_attention_block():
    bad_heads = residual_block_config(attention_mixer_config(24, 4, 4, 4, True), 24)
    with pytest.raises(ValueError, match="divisible by 4"):
        ViT5ClassificationNet(
            **net_kwargs(hidden_dim=24, block_cfg=bad_heads, norm_cfg=LazyConfig(RMSNorm)(dim=24))
        )
    with pytest.raises(ValueError, match="perfect square"):
        ViT5ClassificationNet(**net_kwargs(num_registers=5, block_cfg=attention_block(R=5)))


def hyena_block(D=32, g=4, L_cache=4):
    return residual_block_config(hyena_mixer_config(D, g, L_cache, 2, siren_hidden_dim=8), D)


def test_padding_type_errors_in_pattern_mode():
    types = {"A": attention_block(), "H": hyena_block(L_cache=[6, 4])}
    with pytest.raises(ValueError, match="not in padding_types"):
        ViT5ClassificationNet(
            **net_kwargs(block_cfg=None, layer_pattern="HA", layer_types=types, padding_types={"X"})
        )
    with pytest.raises(ValueError, match="attention block but its letter is in padding_types"):
        ViT5ClassificationNet(
            **net_kwargs(block_cfg=None, layer_pattern="HA", layer_types=types, padding_types={"H", "A"})
        )
    custom = {"A": attention_block(), "Y": hyena_block(L_cache=[6, 4])}
    net = ViT5ClassificationNet(
        **net_kwargs(block_cfg=None, layer_pattern="YA", layer_types=custom, padding_types={"Y"})
    )
    assert net._block_needs_padding == [True, False]


def test_grid_width_mismatch_is_rejected():
    with pytest.raises(ValueError, match="grid_w=5 must equal the patch grid width 4"):
        ViT5ClassificationNet(**net_kwargs(block_cfg=hyena_block(g=5), readout="gap", num_registers=0))


def test_block_config_must_accept_the_injected_keywords():
    with pytest.raises(TypeError, match="drop_path_rate"):
        ViT5ClassificationNet(**net_kwargs(block_cfg=LazyConfig(RMSNorm)(dim=32)))


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.randn(2, 3, 16, 16), ValueError, "channels-first"),
        (torch.randn(2, 16, 16, 1), ValueError, r"\[B, 16, 16, 3\]"),
        (torch.randn(2, 32, 32, 3), ValueError, r"\[B, 16, 16, 3\]"),
        (torch.randn(16, 16, 3), ValueError, "shape"),
        (torch.zeros(2, 16, 16, 3, dtype=torch.uint8), ValueError, "floating-point"),
        (torch.randn(0, 16, 16, 3), ValueError, "empty batch"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_invalid_inputs(x, error, message):
    net = ViT5ClassificationNet(**net_kwargs())
    with pytest.raises(error, match=message):
        net({"input": x})


def test_forward_requires_the_input_dict():
    net = ViT5ClassificationNet(**net_kwargs())
    with pytest.raises(TypeError, match=r"\{'input': x\}"):
        net(torch.randn(1, 16, 16, 3))
    with pytest.raises(TypeError, match=r"got dict with keys \['image'\]"):
        net({"image": torch.randn(1, 16, 16, 3)})
    out = net({"input": torch.randn(1, 16, 16, 3), "condition": None})
    assert set(out) == {"logits"}


def test_homogeneous_hyena_with_padding_works():
    # The reference crashes here: it strips the padding from every block in homogeneous mode.
    net = ViT5ClassificationNet(**net_kwargs(block_cfg=hyena_block(L_cache=[6, 4])))
    assert net._pad_size == 3 and net._block_needs_padding == [True, True]
    assert torch.isfinite(net({"input": torch.randn(2, 16, 16, 3)})["logits"]).all()


def test_any_module_can_be_a_mixer():
    block = LazyConfig(ViT5ResidualBlock)(
        sequence_mixer_cfg=LazyConfig(nn.Identity)(),
        sequence_mixer_norm_cfg=LazyConfig(RMSNorm)(dim=32),
        mlp_cfg=LazyConfig(nn.Identity)(),
        mlp_norm_cfg=LazyConfig(RMSNorm)(dim=32),
        hidden_dim=32,
    )
    net = ViT5ClassificationNet(**net_kwargs(block_cfg=block))
    assert net({"input": torch.randn(1, 16, 16, 3)})["logits"].shape == (1, 5)
    assert net.flop_count() > 0


def test_attention_in_pattern_needs_no_padding_list_when_pad_is_zero():
    # gap, R=0, 4x4 grid: no padding, so padding_types does not matter
    types = {"A": attention_block(R=0, cls=False), "H": hyena_block()}
    net = ViT5ClassificationNet(
        **net_kwargs(
            block_cfg=None,
            layer_pattern="AH",
            layer_types=types,
            readout="gap",
            num_registers=0,
            padding_types=set(),
        )
    )
    assert net._pad_size == 0
    assert isinstance(net.blocks[0].sequence_mixer, ViT5Attention)
    assert net({"input": torch.randn(1, 16, 16, 3)})["logits"].shape == (1, 5)


def test_nan_input_is_rejected():
    net = ViT5ClassificationNet(**net_kwargs())
    x = torch.randn(2, 16, 16, 3)
    x[1, 3, 4, 0] = float("nan")
    x[0, 0, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="2 NaN or infinite values"):
        net({"input": x})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_each_kind_of_non_finite_value_is_rejected_in_every_float_dtype(bad: float, dtype: torch.dtype):
    # the check is one min / max reduction: NaN must propagate, either infinity must show
    from vit5.networks.classification_checks import check_images

    x = torch.rand(2, 16, 16, 3, dtype=dtype)
    check_images(x, 16, 3)  # finite: passes
    x[1, 15, 15, 2] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        check_images(x, 16, 3)
