"""timm registry integration: vit5 presets through timm.create_model (skipped without timm)."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import vit5  # noqa: E402  (registers the presets in timm)
from tests.helpers import relative_error  # noqa: E402
from tests.networks.test_official import official_state_dict  # noqa: E402
from vit5.networks.presets import timm_name  # noqa: E402
from vit5.networks.timm_models import TimmViT5  # noqa: E402

SMALL = dict(hidden_dim=32, num_heads=2, num_blocks=2, siren_hidden_dim=8)


def test_every_preset_is_registered():
    assert all(timm.models.is_model(timm_name(name)) for name in vit5.list_models())
    registered = set(timm.list_models("vit5_*"))
    assert "vit5_small_patch16_224" in registered and "vit5_tiny_hybrid_patch4_32" in registered


def test_presets_registered_later_follow():
    @vit5.register_model
    def vit5_timm_test_preset(**overrides):
        return vit5.model_config("vit5_tiny_attention", **{"num_blocks": 1, **overrides})

    model = timm.create_model("vit5_timm_test_preset_patch4_32", num_classes=3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_create_model_vit5_small_with_ten_classes():
    model = timm.create_model("vit5_small_patch16_224", num_classes=10).eval()
    assert isinstance(model, TimmViT5) and model.num_classes == 10
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and model.default_cfg is model.pretrained_cfg
    assert model.pretrained_cfg["architecture"] == "vit5_small_patch16_224"
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    assert sum(p.numel() for p in model.parameters()) == 22_038_760 - 1000 * 385 + 10 * 385


def test_timm_interface_on_a_tiny_model():
    torch.manual_seed(0)
    model = timm.create_model("vit5_tiny_hybrid_patch4_32", num_classes=7, img_size=16, **SMALL).eval()
    net = model.net
    cfg = model.pretrained_cfg  # the built network's truth
    assert cfg["input_size"] == (3, 16, 16) and cfg["fixed_input_size"] is True
    assert (cfg["crop_pct"], cfg["interpolation"]) == (
        net.pretrained_cfg["crop_pct"],
        net.pretrained_cfg["interpolation"],
    )
    assert list(cfg["mean"]) == net.pretrained_cfg["mean"] and list(cfg["std"]) == net.pretrained_cfg["std"]
    with pytest.raises(ValueError, match=r"input must have shape \[B, 16, 16, 3\]"):
        model(torch.randn(1, 3, 32, 32))  # fixed size, as the cfg says
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        logits = model(x)
        tokens = model.forward_features(x)
        assert tokens.shape == (2, net._num_non_pad + net._pad_size, 32)
        assert torch.equal(model.forward_head(tokens), logits)  # timm's forward: head(features)
        # the network's forward runs the last (attention) block for the CLS token only: equal up to rounding
        assert relative_error(net({"input": x.permute(0, 2, 3, 1)})["logits"], logits) <= 1e-6
        assert model.forward_head(tokens, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model.get_classifier() is net.out_proj
    assert model.no_weight_decay() <= {n for n, _ in model.named_parameters()}
    assert "net.pos_embed" in model.no_weight_decay()
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 32) and model.num_classes == 0
    with pytest.raises(ValueError, match="cannot change the readout"):
        model.reset_classifier(3, global_pool="avg")


def test_optimizer_factory_uses_no_weight_decay():
    import timm.optim

    model = timm.create_model("vit5_tiny_attention_patch4_32", **SMALL)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert model.no_weight_decay() <= no_decay
    assert "net.blocks.0.sequence_mixer.qkv.weight" not in no_decay


def test_timm_keywords_map_to_preset_keywords():
    model = timm.create_model(
        "vit5_tiny_attention_patch4_32", in_chans=1, img_size=24, drop_rate=0.1, drop_path_rate=0.2,
        global_pool="avg", num_classes=4, **SMALL,
    )  # fmt: skip
    net = model.net
    assert (net.in_channels, net.image_size, net.readout, net.num_classes) == (1, 24, "gap", 4)
    assert net.dropout.p == 0.1 and net.drop_path_rates == [0.2, 0.2]
    assert model(torch.randn(2, 1, 24, 24)).shape == (2, 4)
    with pytest.raises(TypeError, match="not_a_keyword"):
        timm.create_model("vit5_tiny_attention_patch4_32", not_a_keyword=1)
    with pytest.raises(ValueError, match="no published weights.*vit5_small_patch16_224"):
        timm.create_model("vit5_tiny_attention_patch4_32", pretrained=True)


def test_features_and_intermediates():
    torch.manual_seed(0)
    model = timm.create_model("vit5_tiny_hybrid_patch4_32", img_size=16, **{**SMALL, "num_blocks": 4}).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=[1, -1], intermediates_only=True)
        assert [m.shape for m in maps] == [(2, 32, 4, 4)] * 2
        final, nlc = model.forward_intermediates(x, indices=2, output_fmt="NLC")
        assert torch.equal(final, model.forward_features(x))  # the same computation: the same bits
        assert [m.shape for m in nlc] == [(2, 16, 32)] * 2
        assert torch.equal(nlc[1], maps[1].flatten(2).transpose(1, 2))  # a reshape: exact
    extractor = timm.create_model(
        "vit5_tiny_hybrid_patch4_32",
        img_size=16,
        features_only=True,
        out_indices=(1, 3),
        **{**SMALL, "num_blocks": 4},
    )
    extractor.model.load_state_dict(model.state_dict())
    extractor.eval()
    with torch.no_grad():
        features = extractor(x)
    assert [f.shape for f in features] == [(2, 32, 4, 4)] * 2
    assert torch.equal(features[1], maps[1])  # the same blocks, the same weights: the same bits
    assert extractor.feature_info.channels() == [32, 32] and extractor.feature_info.reduction() == [4, 4]


def test_pretrained_official_file(tmp_path):
    sd = official_state_dict("small", 2, 32, num_classes=6)
    torch.save({"model": sd}, tmp_path / "official.pth")
    expected = vit5.load_official_vit5(sd, "small").eval()
    model = timm.create_model(
        "vit5_small_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth")),
        num_blocks=2,
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = expected.forward_head(expected.forward_features(x.permute(0, 2, 3, 1)))
        assert torch.equal(model(x), full)  # the checkpoint loads as the official model does
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)  # the checkpoint's size, not the preset's
    resized = timm.create_model(
        "vit5_small_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth")),
        num_blocks=2, img_size=48, num_classes=3,
    )  # fmt: skip
    assert resized.net.image_size == 48 and resized.num_classes == 3
    assert resized.net.blocks[0].sequence_mixer.rope_ref_grid == (2, 2)
    with pytest.raises(ValueError, match="official ViT-5 checkpoint; it loads into"):
        timm.create_model("vit5_tiny_attention_patch4_32", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth")))  # fmt: skip


def test_pretrained_vit5_file(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit5_tiny_hybrid_patch4_32", img_size=16, **SMALL).eval()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "run.ckpt")  # keys "net.*" under state_dict
    model = timm.create_model("vit5_tiny_hybrid_patch4_32", pretrained=True, img_size=16, **SMALL,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "run.ckpt"))).eval()  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))  # checkpoint round trip: the same bits
