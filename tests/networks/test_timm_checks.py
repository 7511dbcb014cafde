"""timm's own model checks (its ``tests/test_models.py``), run on every registered vit5 timm model.

timm runs these on every model it registers: forward, backward (every parameter gets a gradient),
the non-standard (transformer) default-cfg checks, ``features_only=True`` with the default
``out_indices``, ``forward_intermediates`` and FX forward/backward tracing the way torchvision's
feature extraction does it (with timm's notrace lists). Input sizes follow timm's rule: the
default size when the cfg says ``fixed_input_size`` (vit5's does, truthfully), else a smaller one.

The default suite runs every model at reduced size (4 blocks, enough for timm's ">= 3 feature
levels", width 64; layout, readout, registers and image size as registered); ``-m slow`` runs the
presets as registered.
"""

from __future__ import annotations

import math

import pytest
import torch

timm = pytest.importorskip("timm")
feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")

import vit5  # noqa: E402, F401  (registers the presets in timm)
from vit5.networks.presets import list_models, timm_name  # noqa: E402

MODELS = [timm_name(name) for name in list_models()]
#: The published 384 px presets are the official B / L layouts at another image size: at reduced
#: size their 224 px twins run the same code on a smaller grid, so their own checks are slow ones.
SIZE_TWINS = ("vit5_base_patch16_384", "vit5_large_patch16_384")
REDUCED = {"num_blocks": 4, "hidden_dim": 64, "num_heads": 2}

TARGET_FWD_SIZE = 384
TARGET_BWD_SIZE = 128
TARGET_FFEAT_SIZE = 96
TARGET_FX_SIZE = 128


def _input_size(model: torch.nn.Module, target: int) -> tuple[int, int, int]:
    """timm's ``_get_input_size``: the default size if fixed, else clipped to ``target``."""
    cfg = model.pretrained_cfg
    size = tuple(cfg["input_size"])
    if cfg.get("fixed_input_size"):
        return size
    return tuple(min(s, target) for s in size)


def _fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    """timm's ``_create_fx_model``: torchvision feature extraction returning the output node."""
    kwargs = dict(
        leaf_modules=timm.models.get_notrace_modules(),
        autowrap_functions=timm.models.get_notrace_functions(),
        param_shapes_constant=True,
    )
    train_nodes, eval_nodes = feature_extraction.get_graph_node_names(model, tracer_kwargs=kwargs)
    train_return = [train_nodes[-1]]
    if train:
        graph = feature_extraction.NodePathTracer(**kwargs).trace(model)
        nodes = list(reversed(graph.nodes))
        names = [n.name for n in nodes]
        train_return = [train_nodes[-names.index(n.name)] for n in nodes[0]._input_nodes]
    return feature_extraction.create_feature_extractor(
        model, train_return_nodes=train_return, eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=kwargs
    )


def check_forward(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    x = torch.randn(1, *_input_size(model, TARGET_FWD_SIZE))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, model.num_classes) and not torch.isnan(out).any()
    model.set_grad_checkpointing()  # timm: if supported, it must not change the output
    with torch.no_grad():
        assert torch.allclose(model(x), out, rtol=1e-4, atol=1e-5)


def check_backward(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=42, **overrides).train()
    out = model(torch.randn(2, *_input_size(model, TARGET_BWD_SIZE)))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert out.shape == (2, 42) and not torch.isnan(out).any()


def check_default_cfg_non_std(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state_dict, cfg = model.state_dict(), model.pretrained_cfg
    x = torch.randn(1, *_input_size(model, 0))
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        assert tokens.shape[-1] == model.num_features and pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.shape == pre.shape and pooled.shape[-1] == model.head_hidden_size
        headless = timm.create_model(name, pretrained=False, num_classes=0, **overrides).eval()
        assert headless(x).shape[-1] == headless.num_features
    assert cfg["classifier"] + ".weight" in state_dict and cfg["first_conv"] + ".weight" in state_dict


def _check_maps(maps, channels, reductions, size, batch) -> None:
    assert len(maps) == len(channels)
    for c, r, m in zip(channels, reductions, maps):
        assert m.shape[0] == batch and m.shape[1] == c and not torch.isnan(m).any()
        assert m.shape[2] <= math.ceil(size[0] / r) + 1 and m.shape[3] <= math.ceil(size[1] / r) + 1


def check_features_only(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, features_only=True, **overrides).eval()
    channels, reductions = model.feature_info.channels(), model.feature_info.reduction()
    assert len(channels) >= 3
    size = _input_size(model, TARGET_FFEAT_SIZE)
    with torch.no_grad():
        maps = model(torch.randn(1, *size))
    _check_maps(maps, channels, reductions, size[-2:], 1)


def check_forward_intermediates(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    info = timm.models.FeatureInfo(model.feature_info, len(model.feature_info))
    assert len(info.channels()) >= 3
    size = _input_size(model, TARGET_FFEAT_SIZE)
    x = torch.randn(1, *size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, output_fmt="NCHW")
        _check_maps(maps, info.channels(), info.reduction(), size[-2:], 1)
        assert torch.allclose(final, model.forward_features(x))
        model.set_grad_checkpointing()
        assert torch.allclose(
            model.forward_intermediates(x, output_fmt="NCHW")[0], final, rtol=1e-4, atol=1e-5
        )


def check_forward_fx(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, **overrides).eval()
    with torch.inference_mode():
        x = torch.randn(1, *_input_size(model, TARGET_FX_SIZE))
        expected = model(x)
        traced = _fx_model(model)
        out = torch.cat(tuple(traced(x).values()))
    # FX records PyTorch ops where eager may run a fused kernel: equal to fp32 rounding
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def check_backward_fx(name: str, **overrides) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=42, **overrides).train()
    num_params = sum(p.numel() for p in model.parameters())
    traced = _fx_model(model, train=True)
    out = torch.cat(tuple(traced(torch.randn(2, *_input_size(model, TARGET_FX_SIZE))).values()))
    out.mean().backward()
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert sum(p.grad.numel() for p in traced.parameters()) == num_params
    assert out.shape == (2, 42) and not torch.isnan(out).any()


CHECKS = [
    check_forward,
    check_backward,
    check_default_cfg_non_std,
    check_features_only,
    check_forward_intermediates,
    check_forward_fx,
    check_backward_fx,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[len("check_") :])
@pytest.mark.parametrize(
    "name", [pytest.param(m, marks=pytest.mark.slow) if m in SIZE_TWINS else m for m in MODELS]
)
def test_timm_model_checks_reduced_size(name, check):
    torch.manual_seed(0)
    check(name, **REDUCED)


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[len("check_") :])
@pytest.mark.parametrize("name", MODELS)
def test_timm_model_checks_as_registered(name, check):
    torch.manual_seed(0)
    check(name)
