"""The preset registry: every preset builds, trains (gradients), round-trips, and has its published size."""

from __future__ import annotations

import pytest
import torch

import vit5
from vit5.config import TARGET_KEY, ConfigNode, instantiate, load_config, save_config
from vit5.networks.presets import (
    build_vit5,
    model_config,
    preset_arguments,
    register_model,
    resolve_model_name,
    timm_name,
    vit5_config,
)
from vit5.networks.vit5_classification import ViT5ClassificationNet

REQUIRED = [
    "vit5_small",
    "vit5_base",
    "vit5_large",
    "vit5_xlarge",
    "vit5_small_ref",
    "vit5_small_hyena_gap",
    "vit5_small_hybrid",
    "vit5_tiny_attention",
    "vit5_tiny_hybrid",
    "vit5_tiny_hyena",
]
# Shrinks any preset to a CPU-sized network while keeping its pattern, readout, registers and biases.
SMALL = dict(
    hidden_dim=32, num_heads=2, num_blocks=2, image_size=32, patch_size=8, num_classes=5, siren_hidden_dim=8
)


def test_list_models_has_every_preset():
    assert set(REQUIRED) <= set(vit5.list_models())
    assert vit5.list_models() == sorted(vit5.list_models())
    assert vit5.list_models("*tiny*") == ["vit5_tiny_attention", "vit5_tiny_hybrid", "vit5_tiny_hyena"]


def test_a_misspelled_preset_keyword_suggests_the_right_one():
    with pytest.raises(TypeError, match=r"unknown model keyword 'num_clases'; did you mean 'num_classes'\?"):
        vit5.create_model("vit5_tiny_hybrid", num_clases=10)
    with pytest.raises(TypeError, match=r"unknown model keyword 'zzz'; known: hidden_dim, "):
        vit5.model_config("vit5_small", zzz=1)


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_is_a_function_returning_a_lazy_config(name, tmp_path):
    cfg = model_config(name)
    assert isinstance(cfg, ConfigNode) and cfg[TARGET_KEY].endswith("ViT5ClassificationNet")
    save_config(cfg, tmp_path / "model.yaml")
    assert load_config(tmp_path / "model.yaml") == cfg
    # build_vit5 (what run configs record) and the preset agree
    assert vit5_config(**preset_arguments(name)) == cfg


@pytest.mark.parametrize("name", REQUIRED)
def test_every_preset_runs_and_trains(name, tmp_path):
    torch.manual_seed(0)
    model = vit5.create_model(name, **SMALL)
    assert isinstance(model, ViT5ClassificationNet)
    x = torch.randn(2, 32, 32, 3)
    logits = model({"input": x})["logits"]
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not no_grad and not zero, (no_grad, zero)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    again = vit5.create_model(name, **SMALL)
    again.load_state_dict(torch.load(path, weights_only=True), strict=True)
    model.eval(), again.eval()
    with torch.no_grad():
        # state_dict save / load round trip: the same bits
        assert torch.equal(model({"input": x})["logits"], again({"input": x})["logits"])


@pytest.mark.parametrize(
    "name, params",
    [("vit5_small", 22_038_760), ("vit5_small_ref", 22_010_112), ("vit5_small_hyena_gap", 22_323_456),
     ("vit5_small_hybrid", 22_167_744)],
)  # fmt: skip
def test_full_size_parameter_counts(name, params):
    with torch.device("meta"):
        model = vit5.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    if name == "vit5_small":
        assert round(params / 1e6, 2) == 22.04  # like the official ViT-5-S


def test_official_and_reference_layouts_differ_only_in_rope_and_biases():
    official, reference = preset_arguments("vit5_small"), preset_arguments("vit5_small_ref")
    differences = {k for k in official.keys() | reference.keys() if official.get(k) != reference.get(k)}
    assert differences == {"rope_impl", "attn_out_bias", "mlp_bias", "head_bias"}
    assert official["rope_impl"] == "interleaved" and official["head_bias"] is True


def test_reference_presets_match_the_spec():
    with torch.device("meta"):
        hybrid = instantiate(model_config("vit5_small_hybrid", num_classes=10))
    assert hybrid.layer_pattern == "HA" * 6 and hybrid._pad_size == 9
    kernel = hybrid.blocks[0].sequence_mixer.inner_mixer.mixer.global_conv.kernel
    assert list(kernel.L_cache_per_axis) == [15, 14]
    gap = model_config("vit5_small_hyena_gap")
    assert gap.readout == "gap" and gap.num_registers == 0 and "block_cfg" in gap


def test_timm_style_names_resolve_to_presets():
    assert timm_name("vit5_small") == "vit5_small_patch16_224"
    assert timm_name("vit5_tiny_hybrid") == "vit5_tiny_hybrid_patch4_32"
    assert resolve_model_name("vit5_xlarge_patch16_224") == "vit5_xlarge"
    assert model_config("vit5_small_patch16_224", num_classes=10) == model_config(
        "vit5_small", num_classes=10
    )
    assert preset_arguments("vit5_small_hybrid_patch16_224") == preset_arguments("vit5_small_hybrid")


def test_resolution_keywords_are_recorded():
    cfg = vit5_config(hidden_dim=32, num_blocks=2, num_heads=2, pattern="HA", image_size=32, patch_size=8,
                      rope_impl="interleaved", L_cache=[9, 7], rope_ref_grid=3)  # fmt: skip
    assert cfg.layer_types["A"].sequence_mixer_cfg.rope_ref_grid == 3
    assert cfg.layer_types[
        "H"
    ].sequence_mixer_cfg.inner_mixer_cfg.mixer_cfg.global_conv_cfg.kernel_cfg.L_cache == [9, 7]
    model = build_vit5(hidden_dim=32, num_blocks=2, num_heads=2, pattern="A", image_size=32, patch_size=8,
                       rope_impl="interleaved", rope_ref_grid=2)  # fmt: skip
    assert model.blocks[0].sequence_mixer.rope_ref_grid == (2, 2)
    default = vit5_config(hidden_dim=32, num_blocks=2, num_heads=2, pattern="A")
    assert "rope_ref_grid" not in default.block_cfg.sequence_mixer_cfg  # reference-compatible tree


def test_unknown_names_and_keywords():
    with pytest.raises(ValueError, match="unknown model 'vit5_tiny'.*vit5_tiny_hybrid"):
        vit5.create_model("vit5_tiny")
    with pytest.raises(TypeError, match="hidden_size"):
        vit5.create_model("vit5_tiny_hybrid", hidden_size=3)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_arguments("nope")


def test_registering_a_preset():
    @register_model
    def my_test_preset(**overrides):
        return vit5_config(**{**preset_arguments("vit5_tiny_attention"), "num_blocks": 1, **overrides})

    assert "my_test_preset" in vit5.list_models()
    assert vit5.create_model("my_test_preset", num_classes=3).num_classes == 3
    assert resolve_model_name("my_test_preset_patch4_32") == "my_test_preset"


@pytest.mark.parametrize("name", ["vit5_tiny_hybrid", "vit5_small_hyena_gap"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "train"])
def test_torch_compile_traces_one_graph(name, mode):
    """The whole forward is one graph (``fullgraph=True`` raises on a graph break): the eager
    inference fast paths (in-place gates and residuals, the spectrum cache) step aside under
    ``torch.compile``. Traced with the eager backend (a few seconds); inductor is the slow test
    in tests/modules/test_fast_paths.py."""
    torch.manual_seed(0)
    model = vit5.create_model(name, **{**SMALL, "num_blocks": 2, "image_size": 16, "patch_size": 4})
    x = torch.randn(2, 16, 16, 3)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    if mode == "train":
        model.train()
        torch.manual_seed(1)
        got = compiled({"input": x})["logits"]
        got.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        torch.manual_seed(1)
        expected = model({"input": x})["logits"]
        expected.square().sum().backward()
        for grad, parameter in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(grad, parameter.grad, rtol=1e-4, atol=1e-6)
    else:
        model.eval()
        with getattr(torch, mode)():
            expected = model({"input": x})["logits"]
            got = compiled({"input": x})["logits"]
            assert compiled({"input": x})["logits"].equal(got)  # second call: no recompile, same graph
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["vit5_tiny_hybrid", "vit5_small_hyena_gap", "vit5_small"])
def test_features_for_downstream_tasks(name):
    torch.manual_seed(0)
    model = vit5.create_model(name, **{**SMALL, "num_blocks": 4}).eval()
    x = torch.randn(2, 32, 32, 3)
    g, T = 4, model._num_non_pad + model._pad_size
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, T, 32)
        maps = model.forward_intermediates(x)
        assert len(maps) == 4 and all(m.shape == (2, 32, g, g) for m in maps)
        # the last map is the patch tokens of forward_features, row-major
        assert torch.equal(maps[-1], tokens[:, : g * g].reshape(2, g, g, 32).permute(0, 3, 1, 2))
        assert torch.equal(maps[-1][:, :, 1, 2], tokens[:, 1 * g + 2])
        assert [torch.equal(a, b) for a, b in zip(model.forward_intermediates(x, [1, -1]), maps[1::2])] == [
            True,
            True,
        ]
        # the same blocks on the same input: the same bits
        assert torch.equal(model.forward_intermediates({"input": x}, [-1])[0], maps[-1])
        last_two = model.forward_intermediates(x, 2)
        # the same blocks on the same input: the same bits
        assert torch.equal(last_two[0], maps[2]) and torch.equal(last_two[1], maps[3])
        normed = model.forward_intermediates(x, [-1], norm=True)[0]
        assert torch.allclose(normed, model.out_norm(maps[-1].permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    for bad in (0, 5, [4], [-5], ["a"], []):
        with pytest.raises(ValueError, match="indices"):
            model.forward_intermediates(x, bad)
    with pytest.raises(TypeError, match="indices must be None, an int or a sequence"):
        model.forward_intermediates(x, 1.5)


def test_intermediates_norm_needs_a_token_wide_out_norm():
    model = vit5.create_model(
        "vit5_tiny_attention", **{**SMALL, "readout": "register_concat", "neck_compression_ratio": 2}
    )
    with pytest.raises(ValueError, match="norm=True needs out_norm of width hidden_dim=32"):
        model.forward_intermediates(torch.randn(1, 32, 32, 3), norm=True)
    assert len(model.forward_intermediates(torch.randn(1, 32, 32, 3))) == 2


@pytest.mark.parametrize("name", ["vit5_tiny_attention", "vit5_tiny_hyena", "vit5_tiny_hybrid"])
def test_eval_forward_gives_the_training_forward_bits(name: str) -> None:
    # promise (issue 28): the route may depend on grad mode only where both choices give the same
    # forward bits, so an eval-mode forward under no_grad / inference_mode equals the one with autograd
    torch.manual_seed(0)
    model = vit5.create_model(name).eval()
    x = torch.randn(2, model.image_size, model.image_size, 3)
    with_grad = model({"input": x})["logits"]
    assert with_grad.requires_grad
    with torch.no_grad():
        assert torch.equal(model({"input": x})["logits"], with_grad.detach())
    with torch.inference_mode():
        assert torch.equal(model({"input": x})["logits"], with_grad.detach())
