"""Official ViT-5 checkpoints: conversion parity against an independent forward of the official model.

``official_forward`` below is written from spec/attention.md ("Official ViT-5 checkpoints") and shares
no code with vit5: token order [CLS, patches, registers], biased patch embedding, pos_embed on the
patches, per-head RMS q/k-norm before EVA-style interleaved RoPE with positions arange(L) / L * L0,
explicit softmax attention, biased projection and MLP, LayerScale, final RMSNorm, CLS readout.
"""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch
from torch.nn import functional as F

from tests.helpers import assert_parity
from tests.official_model import rms, rope_angles_from, rope_frequencies, rotate_interleaved
from vit5 import create_model, load_official_vit5
from vit5.networks.official import (
    OFFICIAL_VARIANTS,
    official_layout,
    official_to_vit5,
    official_variant,
    unwrap_official,
    vit5_to_official,
)
from vit5.train.checkpoint import CheckpointError

# variant -> (num_blocks, image size): S and B at full depth, L/XL at reduced depth, small images
# (the published 224 px ViT-5-S is the slow test below).
CASES = {"small": (12, 64), "base": (12, 48), "large": (2, 48), "xlarge": (2, 32)}


def official_state_dict(variant, num_blocks, image_size, num_classes=1000, seed=0, patch=16, registers=4):
    """A random state dict in the official layout (all values O(1))."""
    D, _, heads = OFFICIAL_VARIANTS[variant]
    hd, g = D // heads, image_size // patch
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.rand(*shape, generator=generator) * 2 - 1) * scale

    sd = {
        "cls_token": rand(1, 1, D),
        "reg_token": rand(1, registers, D),
        "pos_embed": rand(1, g * g, D),
        "patch_embed.proj.weight": rand(D, 3, patch, patch, scale=0.1),
        "patch_embed.proj.bias": rand(D),
    }
    for i in range(num_blocks):
        sd.update(
            {
                f"blocks.{i}.norm1.weight": rand(D),
                f"blocks.{i}.attn.qkv.weight": rand(3 * D, D, scale=D**-0.5),
                f"blocks.{i}.attn.q_norm.weight": rand(hd),
                f"blocks.{i}.attn.k_norm.weight": rand(hd),
                f"blocks.{i}.attn.proj.weight": rand(D, D, scale=D**-0.5),
                f"blocks.{i}.attn.proj.bias": rand(D),
                f"blocks.{i}.norm2.weight": rand(D),
                f"blocks.{i}.mlp.fc1.weight": rand(4 * D, D, scale=D**-0.5),
                f"blocks.{i}.mlp.fc1.bias": rand(4 * D),
                f"blocks.{i}.mlp.fc2.weight": rand(D, 4 * D, scale=(4 * D) ** -0.5),
                f"blocks.{i}.mlp.fc2.bias": rand(D),
                f"blocks.{i}.gamma_1": rand(D),
                f"blocks.{i}.gamma_2": rand(D),
            }
        )
    sd.update({"norm.weight": rand(D), "head.weight": rand(num_classes, D), "head.bias": rand(num_classes)})
    return sd


# ---------------------------------------------------------------------------------------------------
# The official model, from the spec (float64)


def rope_angles(ys, xs, hd, base):
    return rope_angles_from(rope_frequencies(hd, base), ys, xs)


def official_forward(sd, images_nchw, num_heads):
    """Logits of the official ViT-5 model; the pos_embed grid is the training grid L0."""
    sd = {k: v.double() for k, v in sd.items()}
    x = images_nchw.double()
    P = sd["patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)  # (B, D, g, g)
    B, D, g, _ = x.shape
    L0 = math.isqrt(sd["pos_embed"].shape[1])
    pos = sd["pos_embed"]
    if g != L0:  # DeiT-style fine-tuning resize
        grid = pos.reshape(1, L0, L0, D).permute(0, 3, 1, 2)
        pos = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        pos = pos.reshape(1, g * g, D)
    x = x.flatten(2).transpose(1, 2) + pos
    R = sd["reg_token"].shape[1]
    x = torch.cat((sd["cls_token"].expand(B, -1, -1), x, sd["reg_token"].expand(B, -1, -1)), dim=1)
    hd = D // num_heads
    positions = torch.arange(g, dtype=torch.float64) / g * L0
    r = math.isqrt(R)
    reg_positions = torch.arange(r, dtype=torch.float64)
    angles = torch.cat(
        (
            torch.zeros(1, hd, dtype=torch.float64),  # CLS: not rotated
            rope_angles(positions, positions, hd, 10000.0),
            rope_angles(reg_positions, reg_positions, hd, 100.0),
        )
    )  # (N, hd)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        h = rms(x, sd[p + "norm1.weight"])
        qkv = (h @ sd[p + "attn.qkv.weight"].T).reshape(B, -1, 3, num_heads, hd)
        q, k, v = qkv.unbind(2)  # (B, N, H, hd)
        q = rotate_interleaved(rms(q, sd[p + "attn.q_norm.weight"]), angles)
        k = rotate_interleaved(rms(k, sd[p + "attn.k_norm.weight"]), angles)
        scores = torch.einsum("bnhc,bmhc->bhnm", q, k) * hd**-0.5
        o = torch.einsum("bhnm,bmhc->bnhc", scores.softmax(-1), v).reshape(B, -1, D)
        x = x + sd[p + "gamma_1"] * (o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"])
        h = rms(x, sd[p + "norm2.weight"])
        m = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + sd[p + "gamma_2"] * (m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"])
    x = rms(x, sd["norm.weight"])
    return x[:, 0] @ sd["head.weight"].T + sd["head.bias"]


def vit5_logits(model, images_nchw):
    model.eval()
    with torch.no_grad():
        return model({"input": images_nchw.permute(0, 2, 3, 1)})["logits"]


def images(size, batch=2, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(CASES))
def test_converted_logits_equal_the_official_model(variant):
    depth, size = CASES[variant]
    sd = official_state_dict(variant, depth, size, num_classes=1000)
    model = load_official_vit5(sd, variant)
    assert (model.hidden_dim, len(model.blocks), model.image_size, model.num_classes) == (
        OFFICIAL_VARIANTS[variant][0], depth, size, 1000,
    )  # fmt: skip
    x = images(size)
    ours, reference = vit5_logits(model, x), official_forward(sd, x, OFFICIAL_VARIANTS[variant][2])
    assert reference.abs().max() > 1  # not a degenerate comparison
    assert_parity(ours, reference)


@pytest.mark.slow  # ~10-30 s: the published ViT-5-S (22M parameters, 224 px) in fp64 and fp32
def test_published_vit5_small_at_224():
    sd = official_state_dict("small", 12, 224)
    model = load_official_vit5(sd, "small")
    x = images(224)
    assert_parity(vit5_logits(model, x), official_forward(sd, x, 6))


def test_official_logits_at_another_resolution():
    sd = official_state_dict("small", 3, 64)
    for size in (96, 48):
        model = load_official_vit5(sd, "small", image_size=size)
        assert model.image_size == size and model.blocks[0].sequence_mixer.rope_ref_grid == (4, 4)
        x = images(size)
        assert_parity(vit5_logits(model, x), official_forward(sd, x, 6))


def test_official_presets_have_the_published_sizes():
    for variant, (D, depth, heads) in OFFICIAL_VARIANTS.items():
        with torch.device("meta"):
            model = create_model(f"vit5_{variant}")
        attention = model.blocks[0].sequence_mixer
        assert (model.hidden_dim, len(model.blocks), attention.num_heads) == (D, depth, heads)
        assert (model.patch_size, model.image_size, model.num_registers, model.readout) == (16, 224, 4, "cls")
        assert attention.rope_impl == "interleaved" and attention.proj.bias is not None
        assert attention.qkv.bias is None and model.out_proj.bias is not None
        assert model.blocks[0].mlp.layer1.bias is not None and model.blocks[0].mlp.hidden_dim == 4 * D
    small = create_model("vit5_small")
    count = sum(p.numel() for p in small.parameters())
    assert count == 22_038_760 and round(count / 1e6, 2) == 22.04
    # the official model has the same parameters plus the 384 patch-embedding biases (folded here)
    official = official_state_dict("small", 12, 224)
    assert sum(v.numel() for v in official.values()) == count + 384


def test_state_dict_round_trip_and_inverse_conversion():
    sd = official_state_dict("small", 2, 32, num_classes=7)
    converted = official_to_vit5(sd)
    model = load_official_vit5(sd, "small")
    assert set(converted) == set(model.state_dict())
    back = vit5_to_official(model.state_dict())
    rope = {f"blocks.{i}.attn.{name}.freqs" for i in range(2) for name in ("rope", "rope_reg")}
    assert set(back) == set(sd) | rope
    assert torch.equal(back["patch_embed.proj.bias"], torch.zeros(384))
    x = images(32)
    assert_parity(official_forward(back, x, 6).float(), official_forward(sd, x, 6).float())


def test_wrapped_checkpoints_files_and_ema(tmp_path):
    sd = official_state_dict("small", 2, 32, num_classes=5)
    ema = official_state_dict("small", 2, 32, num_classes=5, seed=9)
    x = images(32)
    expected, expected_ema = official_forward(sd, x, 6), official_forward(ema, x, 6)
    ddp = {f"module.{k}": v for k, v in sd.items()}
    for checkpoint in ({"model": sd, "epoch": 3}, {"model_ema": sd}, ddp, {"state_dict": sd}):
        assert_parity(vit5_logits(load_official_vit5(checkpoint, "vit5_small"), x), expected)
    both = {"model": sd, "model_ema": ema, "optimizer": {"lr": 1.0}}
    assert_parity(vit5_logits(load_official_vit5(both, "S", ema=True), x), expected_ema)
    assert_parity(vit5_logits(load_official_vit5(both, "small"), x), expected)
    with pytest.raises(ValueError, match="model_ema"):
        load_official_vit5({"model": sd}, "small", ema=True)

    torch.save({"model": sd}, tmp_path / "vit5_small.pth")
    assert_parity(vit5_logits(load_official_vit5(tmp_path / "vit5_small.pth", "small"), x), expected)
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "weights.safetensors"))
    assert_parity(
        vit5_logits(load_official_vit5(str(tmp_path / "weights.safetensors"), "small"), x), expected
    )


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_crafted_pickle_is_refused_without_running_code(tmp_path):
    marker = str(tmp_path / "pwned")
    torch.save({"model": official_state_dict("small", 1, 32), "x": _Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_official_vit5(tmp_path / "evil.pth", "small")
    assert not os.path.exists(marker)
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError):
        load_official_vit5(tmp_path / "broken.pth", "small")
    with pytest.raises(CheckpointError, match="no such file"):
        load_official_vit5(tmp_path / "missing.pth", "small")


def test_new_head_keeps_the_features():
    sd = official_state_dict("small", 2, 32, num_classes=1000)
    original = load_official_vit5(sd, "small").eval()
    fine_tune = load_official_vit5(sd, "small", num_classes=10).eval()
    assert fine_tune.num_classes == 10 and fine_tune.out_proj.weight.shape == (10, 384)
    assert torch.count_nonzero(fine_tune.out_proj.bias) == 0
    x = images(32).permute(0, 2, 3, 1)
    with torch.no_grad():
        # a new head leaves the backbone untouched
        assert torch.equal(original.forward_features(x), fine_tune.forward_features(x))
    same = load_official_vit5(sd, "small", num_classes=1000)
    assert torch.equal(same.out_proj.weight, original.out_proj.weight)


def test_reduced_depth_is_logged(caplog):
    sd = official_state_dict("large", 1, 32, num_classes=3)
    with caplog.at_level(logging.WARNING, logger="vit5.weights"):
        model = load_official_vit5(sd, "large")
    assert len(model.blocks) == 1 and "1 blocks" in caplog.text


def test_errors_name_the_problem():
    sd = official_state_dict("small", 2, 32, num_classes=5)
    with pytest.raises(ValueError, match="variant must be one of"):
        load_official_vit5(sd, "huge")
    with pytest.raises(ValueError, match="it is a 'base' checkpoint"):
        load_official_vit5(official_state_dict("base", 1, 32), "small")
    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.proj.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.proj.bias'\]"):
        load_official_vit5(missing, "small")
    extra = {**sd, "blocks.0.attn.qkv.bias": torch.zeros(3 * 384)}
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.0.attn.qkv.bias'\]"):
        load_official_vit5(extra, "small")
    wrong = {**sd, "blocks.1.gamma_2": torch.zeros(10)}
    with pytest.raises(ValueError, match=r"blocks.1.gamma_2: \(10,\) \(expected \(384,\)\)"):
        load_official_vit5(wrong, "small")
    with pytest.raises(ValueError, match="key 'cls_token' is missing"):
        load_official_vit5({"foo": torch.zeros(1)}, "small")
    with pytest.raises(TypeError, match="path_or_state_dict must be a file path or a mapping"):
        load_official_vit5(42, "small")
    with pytest.raises(TypeError, match="expected a tensor"):
        unwrap_official({"cls_token": [1, 2]})
    with pytest.raises(ValueError, match="num_classes must be None or a positive int"):
        load_official_vit5(sd, "small", num_classes=0)
    with pytest.raises(
        ValueError, match=r"does not match the official ViT-5 layout.*missing keys.*'head.bias'"
    ):
        vit5_to_official(create_model("vit5_tiny_attention").state_dict())  # no biases
    with pytest.raises(ValueError, match="no counterpart in the official.*sequence_mixer"):
        vit5_to_official(create_model("vit5_tiny_hybrid", rope_impl="interleaved").state_dict())
    assert official_variant("XL") == "xlarge" and official_variant("vit5_Base") == "base"
    assert official_layout(sd).image_size == 32
