"""Norms, LayerScale, DropPath, MLP and register pooling: formulas, init, errors, flop counts."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from tests.reference import build_reference
from vit5.config import LazyConfig, instantiate
from vit5.modules.drop_path import DropPath
from vit5.modules.layer_scale import LayerScale
from vit5.modules.mlp import MLP
from vit5.modules.norms import GlobalResponseNorm, L2Norm, RMSNorm
from vit5.modules.register import RegisterCompressConcat, RegisterPooling
from vit5.ops import native
from vit5.ops.init import (
    partial_wang_init_fn_with_num_layers,
    small_init,
    trunc_normal_init,
    trunc_normal_init_factory,
    wang_init,
)


def test_rmsnorm_formula_and_tagging():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 16)
    expected = norm.weight * x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)
    assert norm.weight._no_weight_decay is True
    assert norm.flop_count(7) == 3 * 7 * 16


def test_rmsnorm_eps_is_inside_the_root():
    x = torch.full((1, 4), 1e-3)
    out = RMSNorm(4, eps=1e-6)(x)
    assert out[0, 0].item() == pytest.approx(1e-3 / math.sqrt(1e-6 + 1e-6), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_low_precision_keeps_dtype_and_uses_fp32_statistics(dtype):
    x = torch.randn(4, 32) * 300
    out = RMSNorm(32)(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), RMSNorm(32)(x), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "pytorch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_without_autograd_gives_the_autograd_bits(dtype, fused):
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(3, 7, 24) * 5).to(dtype)
    with contextlib.nullcontext() if fused else native.disabled():
        expected = norm(x.clone().requires_grad_()).detach()
        with torch.no_grad():
            fast = norm(x)
        with torch.inference_mode():
            inference = norm(x)
    assert fast.dtype == dtype and torch.equal(fast, expected) and torch.equal(inference, expected)


def test_rmsnorm_wrong_width_is_a_clear_error():
    with pytest.raises(ValueError, match="last dimension is 8"):
        RMSNorm(8)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="dim"):
        RMSNorm(0)
    with pytest.raises(TypeError, match="dim"):
        RMSNorm(2.5)


def test_l2norm_clamps_the_norm():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(L2Norm()(x), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    assert L2Norm(dim=1).channels_first and not L2Norm().channels_first


def test_grn_formula_identity_at_init():
    grn = GlobalResponseNorm(6)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(grn(x), x)
    with torch.no_grad():
        grn.gamma.uniform_(-1, 1)
        grn.beta.uniform_(-1, 1)
    g = x.norm(dim=1, keepdim=True)
    n = g / (g.mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(grn(x), grn.gamma * (x * n) + grn.beta + x)
    assert grn.flop_count(5) == 6 * 5 * 6
    assert not hasattr(grn.gamma, "_no_weight_decay")


def test_layer_scale():
    ls = LayerScale(4, init_value=1e-4)
    assert torch.equal(ls.gamma, torch.full((4,), 1e-4)) and ls.gamma._no_weight_decay
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ls(x), x * 1e-4)
    assert ls(x.bfloat16()).dtype == torch.bfloat16
    assert ls.flop_count(3) == 12


def test_drop_path_eval_and_zero_rate_are_identity():
    x = torch.randn(8, 3, 4)
    assert DropPath(0.5).eval()(x) is x
    assert DropPath(0.0).train()(x) is x


def test_drop_path_keeps_the_expectation_and_drops_whole_samples():
    torch.manual_seed(0)
    layer = DropPath(0.3).train()
    x = torch.ones(20000, 2, 3)
    out = layer(x)
    per_sample = out.reshape(20000, -1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.7).all(1))
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (per_sample[:, 0] == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.count_nonzero(DropPath(1.0).train()(x)) == 0


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_drop_path_rejects_bad_probabilities(p):
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(p)


def _mlp(activation, bias=False, **kw):
    return MLP(8, activation, LazyConfig(nn.Dropout)(p=0.0), expansion_factor=2.5, bias=bias, **kw)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "glu", "swiglu"])
def test_mlp_activations_against_formulas(activation):
    torch.manual_seed(0)
    mlp = _mlp(activation, bias=True)
    x = torch.randn(3, 8)
    h = mlp.layer1(x)
    Hm = mlp.hidden_dim
    assert Hm == 20 and mlp.layer1.out_features == (2 * Hm if activation in ("glu", "swiglu") else Hm)
    act = {
        "relu": lambda t: t.clamp_min(0),
        "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
        "silu": lambda t: t * torch.sigmoid(t),
        "glu": lambda t: t[..., :Hm] * torch.sigmoid(t[..., Hm:]),
        "swiglu": lambda t: t[..., Hm:] * F.silu(t[..., :Hm]),
    }[activation]
    torch.testing.assert_close(mlp(x), mlp.layer2(act(h)))
    gated = activation in ("glu", "swiglu")
    expected_flops = 2 * 5 * 8 * mlp.layer1.out_features + (2 if gated else 1) * 5 * Hm + 2 * 5 * Hm * 8
    assert mlp.flop_count(5) == expected_flops


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "swiglu"])
def test_mlp_without_autograd_gives_the_autograd_bits_and_spares_hooked_outputs(activation):
    """Without autograd the activation runs in place on layer1's output; a forward hook on layer1
    (e.g. collecting features) still gets layer1's output, not the activated one."""
    torch.manual_seed(1)
    mlp = _mlp(activation, bias=True)
    x = torch.randn(4, 6, 8)
    expected = mlp(x.clone().requires_grad_()).detach()
    with torch.no_grad():
        assert torch.equal(mlp(x), expected)
    seen = []
    mlp.layer1.register_forward_hook(lambda module, args, out: seen.append((out, out.clone())))
    with torch.inference_mode():
        assert torch.equal(mlp(x), expected)
    held, copy = seen[0]
    assert torch.equal(held, copy)
    assert torch.equal(held, mlp.layer1(x.clone()))
    same_width = MLP(8, activation, None, expansion_factor=1.0 if activation != "swiglu" else 0.5)
    same_width.layer1 = nn.Identity()  # returns its input: nothing may be written in place
    original = x.clone()
    with torch.no_grad():
        same_width(x)
    assert torch.equal(x, original)


def test_mlp_rejects_unknown_activation_at_construction():
    with pytest.raises(ValueError, match="activation must be one of .*'tanh'"):
        _mlp("tanh")


def test_mlp_init_methods_are_curried_with_out_features_and_zero_the_bias():
    calls = []

    def method(dim):
        calls.append(dim)
        return nn.init.ones_

    mlp = _mlp("swiglu", bias=True, init_method_in=method, init_method_out=method)
    assert calls == [40, 8]
    assert torch.all(mlp.layer1.weight == 1) and torch.all(mlp.layer1.bias == 0)


def test_init_helpers_distributions():
    torch.manual_seed(0)
    w = torch.empty(400, 400)
    small_init(384)(w)
    assert w.std().item() == pytest.approx(math.sqrt(2 / (5 * 384)), rel=0.02)
    wang_init(384, 12)(w)
    assert w.std().item() == pytest.approx(2 / (12 * math.sqrt(384)), rel=0.02)
    partial_wang_init_fn_with_num_layers(12)(384)(w)
    assert w.std().item() == pytest.approx(2 / (12 * math.sqrt(384)), rel=0.02)
    trunc_normal_init(std=0.02)(w)
    assert w.std().item() == pytest.approx(0.02, rel=0.02) and w.abs().max() <= 2
    trunc_normal_init(std=5.0)(w)
    assert w.abs().max().item() <= 2.0  # cut at absolute +-2, not at 2 std
    trunc_normal_init_factory(0.02)(123)(w)
    assert w.std().item() == pytest.approx(0.02, rel=0.02)


def test_register_pooling_and_compress_concat():
    pool = RegisterPooling(3)
    regs = torch.randn(2, 3, 5)
    torch.testing.assert_close(pool(regs), regs.mean(1))
    assert pool.logits._no_weight_decay and pool.flop_count(5) == 3 * 3 + 2 * 3 * 5
    with pytest.raises(ValueError, match=r"\[B, 3, C\]"):
        pool(torch.randn(2, 4, 5))
    compress = RegisterCompressConcat(3, 5, 2)
    out = compress(regs)
    assert out.shape == (2, 6) and compress.out_dim == 6
    torch.testing.assert_close(out[:, 2:4], regs[:, 1] @ compress.compress.weight.T)
    assert compress.flop_count() == 2 * 3 * 5 * 2


LAYER_CONFIGS = {
    "rmsnorm": (LazyConfig(RMSNorm)(dim=12, eps=1e-5), (3, 4, 12)),
    "l2norm": (LazyConfig(L2Norm)(dim=-1), (3, 4, 12)),
    "grn": (LazyConfig(GlobalResponseNorm)(dim=12), (3, 4, 12)),
    "layer_scale": (LazyConfig(LayerScale)(dim=12, init_value=1e-3), (3, 4, 12)),
    "register_pooling": (LazyConfig(RegisterPooling)(num_registers=4), (3, 4, 12)),
    "register_compress": (
        LazyConfig(RegisterCompressConcat)(num_registers=4, hidden_dim=12, compressed_dim=3),
        (3, 4, 12),
    ),
    **{
        f"mlp_{act}": (
            LazyConfig(MLP)(
                dim=12,
                activation=act,
                dropout_cfg=LazyConfig(nn.Dropout)(p=0.0),
                expansion_factor=1.5,
                bias=act == "relu",
            ),
            (3, 4, 12),
        )
        for act in ["relu", "gelu", "silu", "glu", "swiglu"]
    },
}


@pytest.mark.parity
@requires_reference
@pytest.mark.parametrize("name", sorted(LAYER_CONFIGS))
def test_layer_parity_with_reference(name):
    cfg, shape = LAYER_CONFIGS[name]
    reference, ours = build_reference(cfg), instantiate(cfg)
    randomize_(reference, seed=1)
    copy_state(reference, ours)
    x = torch.randn(*shape)
    assert_parity(ours(x), reference(x))
    for method, args in (("flop_count", (4,)),):
        if hasattr(reference, method) and name not in ("register_pooling", "register_compress"):
            assert getattr(ours, method)(*args) == getattr(reference, method)(*args)
    if name == "register_pooling":
        assert ours.flop_count(12) == reference.flop_count(12)
    tagged = {k for k, p in ours.named_parameters() if getattr(p, "_no_weight_decay", False)}
    tagged_ref = {k for k, p in reference.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert tagged == tagged_ref
