"""Hyena, QKVSequenceMixer and ViT5HyenaAdapter: formulas, switches, init, flop_count, dtypes, errors."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import randomize_
from vit5.config import LazyConfig, instantiate
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.modules.ckconv import CKConvND
from vit5.modules.hyena import Hyena
from vit5.modules.norms import L2Norm, RMSNorm
from vit5.modules.qkv_mixer import QKVSequenceMixer
from vit5.modules.siren import SIRENKernelND
from vit5.ops.init import partial_wang_init_fn_with_num_layers, small_init

D = 8


def conv_cfg(width: int = D, L_cache: object = (5, 4), hidden: int = 8):
    kernel = LazyConfig(SIRENKernelND)(
        out_dim=width,
        data_dim=2,
        mlp_hidden_dim=hidden,
        num_layers=3,
        embedding_dim=hidden,
        omega_0=10.0,
        L_cache=list(L_cache) if isinstance(L_cache, tuple) else L_cache,
        use_bias=True,
    )
    return LazyConfig(CKConvND)(
        data_dim=2,
        hidden_dim=width,
        kernel_cfg=kernel,
        mask_cfg=LazyConfig(nn.Identity)(),
        grid_type="double",
        fft_padding="zero",
    )


def hyena_cfg(width: int = D, L_cache: object = (5, 4), hidden: int = 8, **overrides: object):
    kw = dict(
        global_conv_cfg=conv_cfg(width, L_cache, hidden),
        short_conv_cfg=LazyConfig(nn.Conv2d)(
            in_channels=3 * width,
            out_channels=3 * width,
            kernel_size=3,
            padding=1,
            groups=3 * width,
            bias=False,
        ),
        gate_nonlinear_cfg=LazyConfig(nn.SiLU)(),
        pixelhyena_norm_cfg=LazyConfig(RMSNorm)(dim=width, eps=1e-6),
        qk_norm_cfg=LazyConfig(L2Norm)(),
        output_norm_cfg=LazyConfig(RMSNorm)(dim=width, eps=1e-6),
        gate_nonlinear_2_cfg=LazyConfig(nn.Sigmoid)(),
    )
    return LazyConfig(Hyena)(**{**kw, **overrides})


def mixer_cfg(width: int = D, L_cache: object = (5, 4), hidden: int = 8, **overrides: object):
    return LazyConfig(QKVSequenceMixer)(
        hidden_dim=width,
        mixer_cfg=hyena_cfg(width, L_cache, hidden, **overrides),
        init_method_in=small_init,
        init_method_out=LazyConfig(partial_wang_init_fn_with_num_layers)(num_layers=12),
    )


def long_conv(hyena: Hyena, z: torch.Tensor) -> torch.Tensor:
    """``K * z + s z`` as a direct conv2d with the flipped kernel (z channels-first)."""
    conv = hyena.global_conv
    h, w = z.shape[-2:]
    kernel, _ = conv.kernel((h, w))
    weight = kernel[0].permute(2, 0, 1).unsqueeze(1).flip(-1, -2)
    return F.conv2d(z, weight, padding=(h - 1, w - 1), groups=z.shape[1]) + conv.shortcut.view(-1, 1, 1) * z


def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # over channels of [B, C, H, W]
    return weight.view(-1, 1, 1) * x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)


def _hyena(**overrides: object) -> Hyena:
    return instantiate(hyena_cfg(**overrides))


class Pick(nn.Module):
    """A stand-in mixer returning one of q, k, v and recording what it was called with."""

    def __init__(self, which: int, hidden_dim: int = D) -> None:
        super().__init__()
        self.which, self.hidden_dim = which, hidden_dim
        self.calls: list = []

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, conditioning: torch.Tensor | None = None
    ):
        self.calls.append((q.shape, conditioning))
        return (q, k, v)[self.which]

    def flop_count(self, spatial_dims: tuple[int, ...], inference: bool = False) -> int:
        return 1000 + inference


# --------------------------------------------------------------------------------------------------
# Hyena forward


def test_hyena_matches_the_compact_formula() -> None:
    torch.manual_seed(0)
    mixer = randomize_(QKVSequenceMixer(hidden_dim=D, mixer_cfg=hyena_cfg()))
    hyena = mixer.mixer
    x = torch.randn(2, 5, 4, D)
    u = (x @ mixer.qkv_proj.weight.T).permute(0, 3, 1, 2)  # (B, 3D, H, W)
    u = F.conv2d(u, hyena.short_conv.weight, padding=1, groups=3 * D)
    q, k, v = u[:, :D], u[:, D : 2 * D], u[:, 2 * D :]
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    z = rms(q * F.silu(k), hyena.pixelhyena_norm.weight)
    y = rms(long_conv(hyena, z) * torch.sigmoid(v), hyena.output_norm.weight)
    expected = y.permute(0, 2, 3, 1) @ mixer.out_proj.weight.T
    torch.testing.assert_close(mixer(x), expected, rtol=1e-4, atol=1e-4)


def test_identity_short_conv_and_no_qk_norm() -> None:
    torch.manual_seed(1)
    hyena = randomize_(
        _hyena(
            short_conv_cfg=LazyConfig(nn.Identity)(),
            qk_norm_cfg=None,
            output_norm_cfg=LazyConfig(nn.Identity)(),
        )
    )
    assert hyena.q_norm is None and hyena.k_norm is None
    q, k, v = torch.randn(3, 2, 5, 4, D).unbind(0)
    cf = [t.permute(0, 3, 1, 2) for t in (q, k, v)]
    z = rms(cf[0] * F.silu(cf[1]), hyena.pixelhyena_norm.weight)
    expected = (long_conv(hyena, z) * torch.sigmoid(cf[2])).permute(0, 2, 3, 1)
    torch.testing.assert_close(hyena(q, k, v), expected, rtol=1e-4, atol=1e-4)


def test_linear_gate_gets_its_own_k_norm() -> None:
    hyena = _hyena(gate_nonlinear_cfg=LazyConfig(nn.Identity)(), qk_norm_cfg=LazyConfig(RMSNorm)(dim=D))
    assert isinstance(hyena.k_norm, RMSNorm) and hyena.k_norm is not hyena.q_norm
    assert "k_norm.weight" in hyena.state_dict() and "q_norm.weight" in hyena.state_dict()
    randomize_(hyena)
    q, k, v = torch.randn(3, 1, 5, 4, D).unbind(0)
    seen = {}
    hyena.k_norm.register_forward_hook(lambda module, args, out: seen.setdefault("k", args[0]))
    hyena(q, k, v)
    assert seen["k"].shape == (1, 5, 4, D)  # applied channels-last
    assert isinstance(_hyena().k_norm, nn.Identity)  # non-linear gate: k is not normalised


def test_shared_second_gate_is_one_module_with_two_names() -> None:
    hyena = _hyena(gate_nonlinear_cfg=LazyConfig(nn.PReLU)(), gate_nonlinear_2_cfg=None)
    assert hyena.gate_nonlinear_2 is hyena.gate_nonlinear
    keys = list(hyena.state_dict())
    assert keys.index("gate_nonlinear.weight") + 1 == keys.index("gate_nonlinear_2.weight")
    assert sum(1 for _ in hyena.parameters()) == len(keys) - 1


def test_channels_first_norms() -> None:
    torch.manual_seed(2)
    hyena = randomize_(
        _hyena(
            pixelhyena_norm_cfg=LazyConfig(nn.GroupNorm)(num_groups=2, num_channels=D),
            output_norm_cfg=LazyConfig(nn.GroupNorm)(num_groups=4, num_channels=D),
            qk_norm_cfg=LazyConfig(L2Norm)(dim=1),
            short_conv_cfg=LazyConfig(nn.Identity)(),
        )
    )
    q, k, v = torch.randn(3, 2, 5, 4, D).unbind(0)
    cf = [t.permute(0, 3, 1, 2) for t in (q, k, v)]
    qn = F.normalize(cf[0], dim=1)
    p, o = hyena.pixelhyena_norm, hyena.output_norm
    z = F.group_norm(qn * F.silu(cf[1]), 2, p.weight, p.bias, p.eps)  # over channels of a group AND positions
    y = F.group_norm(long_conv(hyena, z) * torch.sigmoid(cf[2]), 4, o.weight, o.bias, o.eps)
    torch.testing.assert_close(hyena(q, k, v), y.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_hyena_1d() -> None:
    kernel = LazyConfig(SIRENKernelND)(
        out_dim=D,
        data_dim=1,
        mlp_hidden_dim=8,
        num_layers=3,
        embedding_dim=8,
        omega_0=10.0,
        L_cache=6,
        use_bias=True,
    )
    conv = LazyConfig(CKConvND)(
        data_dim=1,
        hidden_dim=D,
        kernel_cfg=kernel,
        mask_cfg=LazyConfig(nn.Identity)(),
        grid_type="double",
        fft_padding="zero",
        is_causal=True,
    )
    hyena = _hyena(
        global_conv_cfg=conv,
        short_conv_cfg=LazyConfig(nn.Conv1d)(
            in_channels=3 * D, out_channels=3 * D, kernel_size=3, padding=1, groups=3 * D
        ),
    )
    q, k, v = torch.randn(3, 2, 6, D).unbind(0)
    assert hyena(q, k, v).shape == (2, 6, D)


# --------------------------------------------------------------------------------------------------
# Structure: keys, tags, init


def test_state_dict_keys_and_weight_decay_tags() -> None:
    mixer = QKVSequenceMixer(hidden_dim=D, mixer_cfg=hyena_cfg())
    expected = [
        "mixer.global_conv.shortcut",
        "mixer.global_conv.kernel.positional_embedding.linear.weight",
        "mixer.global_conv.kernel.positional_embedding.linear.bias",
        "mixer.global_conv.kernel.hidden_linears.0.weight",
        "mixer.global_conv.kernel.hidden_linears.0.bias",
        "mixer.global_conv.kernel.hidden_linears.1.weight",
        "mixer.global_conv.kernel.hidden_linears.1.bias",
        "mixer.global_conv.kernel.out_linear.weight",
        "mixer.global_conv.kernel.out_linear.bias",
        "mixer.short_conv.weight",
        "mixer.pixelhyena_norm.weight",
        "mixer.output_norm.weight",
        "qkv_proj.weight",
        "out_proj.weight",
    ]
    assert list(mixer.state_dict()) == expected
    untagged = {
        "mixer.global_conv.shortcut",
        "mixer.global_conv.kernel.out_linear.weight",
        "mixer.short_conv.weight",
        "qkv_proj.weight",
        "out_proj.weight",
    }
    for name, parameter in mixer.named_parameters():
        assert getattr(parameter, "_no_weight_decay", False) == (name not in untagged), name
    assert [name for name, _ in mixer.named_modules()][1:4] == [
        "mixer",
        "mixer.global_conv",
        "mixer.global_conv.kernel",
    ]


def test_qkv_init_statistics() -> None:
    torch.manual_seed(0)
    mixer = QKVSequenceMixer(
        hidden_dim=384,
        mixer_cfg=hyena_cfg(384, 14, 32),
        init_method_in=small_init,
        init_method_out=LazyConfig(partial_wang_init_fn_with_num_layers)(num_layers=12),
    )
    assert mixer.qkv_proj.weight.std().item() == pytest.approx(math.sqrt(2 / (5 * 384)), rel=0.02)
    assert mixer.out_proj.weight.std().item() == pytest.approx(2 / (12 * math.sqrt(384)), rel=0.02)
    assert mixer.mixer.global_conv.shortcut.abs().max() <= 1 / math.sqrt(384)
    biased = QKVSequenceMixer(
        hidden_dim=D, mixer_cfg=hyena_cfg(), qkv_bias=True, out_proj_bias=True, init_method_in=small_init
    )
    assert torch.count_nonzero(biased.qkv_proj.bias) == 0 and torch.count_nonzero(biased.out_proj.bias) > 0


def test_qkv_split_order_and_conditioning_passthrough() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 3, 4, D)
    for which in range(3):
        mixer = QKVSequenceMixer(hidden_dim=D, mixer_cfg=LazyConfig(Pick)(which=which))
        rows = mixer.qkv_proj.weight[which * D : (which + 1) * D]
        torch.testing.assert_close(mixer(x), (x @ rows.T) @ mixer.out_proj.weight.T)
    cond = torch.randn(2, 5)
    adapter = ViT5HyenaAdapter(
        inner_mixer_cfg=LazyConfig(QKVSequenceMixer)(hidden_dim=D, mixer_cfg=LazyConfig(Pick)(which=0)),
        grid_w=4,
    )
    adapter(torch.randn(2, 12, D), conditioning=cond)
    adapter(torch.randn(2, 12, D))
    calls = adapter.inner_mixer.mixer.calls
    assert calls[0][0] == (2, 3, 4, D) and calls[0][1] is cond and calls[1][1] is None


def test_adapter_is_a_row_major_reshape() -> None:
    adapter = ViT5HyenaAdapter(inner_mixer_cfg=LazyConfig(nn.Identity)(), grid_w=4)
    seen = {}
    adapter.inner_mixer.register_forward_hook(lambda module, args, out: seen.setdefault("x", args[0]))
    tokens = torch.arange(2 * 12 * 3, dtype=torch.float32).view(2, 12, 3)
    assert torch.equal(adapter(tokens), tokens)
    grid = seen["x"]
    assert grid.shape == (2, 3, 4, 3) and torch.equal(grid[1, 2, 1], tokens[1, 2 * 4 + 1])
    assert adapter.grid_w == 4 and list(adapter.state_dict()) == []


def test_adapter_errors() -> None:
    adapter = ViT5HyenaAdapter(inner_mixer_cfg=mixer_cfg(), grid_w=4)
    with pytest.raises(ValueError, match=r"T=18.*grid_w=4"):
        adapter(torch.randn(2, 18, D))
    with pytest.raises(ValueError, match=r"T=18.*grid_w=4"):
        adapter.flop_count(18)
    with pytest.raises(ValueError, match=r"\[B, T, C\]"):
        adapter(torch.randn(2, 5, 4, D))
    with pytest.raises(ValueError, match="grid_w"):
        ViT5HyenaAdapter(inner_mixer_cfg=mixer_cfg(), grid_w=0)


@pytest.mark.parametrize(
    "build,error,match",
    [
        (
            lambda: _hyena(
                short_conv_cfg=LazyConfig(nn.Conv2d)(in_channels=D, out_channels=D, kernel_size=3, padding=1)
            ),
            ValueError,
            "short_conv_cfg",
        ),
        (lambda: _hyena(pixelhyena_norm_cfg=LazyConfig(RMSNorm)(dim=D + 1)), ValueError, "pixelhyena_norm"),
        (
            lambda: _hyena(
                qk_norm_cfg=LazyConfig(RMSNorm)(dim=3), gate_nonlinear_cfg=LazyConfig(nn.Identity)()
            ),
            ValueError,
            "q_norm",
        ),
        (lambda: QKVSequenceMixer(hidden_dim=D + 2, mixer_cfg=hyena_cfg()), ValueError, "hidden_dim"),
        (
            lambda: QKVSequenceMixer(hidden_dim=D, mixer_cfg=hyena_cfg(), init_method_in=3),
            TypeError,
            "init_method_in",
        ),
        (lambda: QKVSequenceMixer(hidden_dim=D, mixer_cfg=hyena_cfg(), qkv_bias=None), TypeError, "qkv_bias"),
    ],
)
def test_construction_errors(build, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_forward_errors() -> None:
    hyena = _hyena()
    q = torch.randn(1, 5, 4, D)
    with pytest.raises(ValueError, match="same shape"):
        hyena(q, q, q[:, :4])
    with pytest.raises(ValueError, match="channels-last"):
        hyena(q[..., :4], q[..., :4], q[..., :4])
    with pytest.raises(ValueError, match="last dimension"):
        QKVSequenceMixer(hidden_dim=D, mixer_cfg=hyena_cfg())(torch.randn(1, 5, 4, D + 1))


# --------------------------------------------------------------------------------------------------
# flop_count


def test_flop_counts_match_the_spec_table() -> None:
    hyena_s = ViT5HyenaAdapter(inner_mixer_cfg=mixer_cfg(384, 14, 32), grid_w=14)
    mixer = hyena_s.inner_mixer
    assert mixer.flop_count((14, 14)) == 302_618_971 and mixer.flop_count((14, 14), True) == 267_080_956
    assert (
        mixer.mixer.flop_count((14, 14)) == 71_407_963
        and mixer.mixer.flop_count((14, 14), True) == 35_869_948
    )
    assert hyena_s.flop_count(196) == 302_618_971
    hybrid = ViT5HyenaAdapter(inner_mixer_cfg=mixer_cfg(384, [15, 14], 32), grid_w=14)
    assert hybrid.flop_count(210) == 324_771_933 and hybrid.flop_count(210, inference=True) == 286_479_230


def test_flop_count_switches() -> None:
    c, s = D, 20
    base = _hyena().flop_count((5, 4))
    assert base == 67 * c * s + _hyena().global_conv.flop_count((5, 4))
    assert _hyena(qk_norm_cfg=None).flop_count((5, 4)) == base - 3 * c * s
    assert _hyena(short_conv_cfg=LazyConfig(nn.Identity)()).flop_count((5, 4)) == base - 54 * c * s
    linear = _hyena(gate_nonlinear_cfg=LazyConfig(nn.Identity)(), qk_norm_cfg=LazyConfig(RMSNorm)(dim=D))
    assert linear.flop_count((5, 4)) == base + 3 * c * s - c * s
    shared_identity = _hyena(gate_nonlinear_cfg=LazyConfig(nn.Identity)(), gate_nonlinear_2_cfg=None)
    assert (
        shared_identity.flop_count((5, 4)) == base - 2 * c * s + 3 * c * s
    )  # both gates Identity; k_norm added
    group = _hyena(output_norm_cfg=LazyConfig(nn.GroupNorm)(num_groups=2, num_channels=D))
    assert group.flop_count((5, 4)) == base
    assert _hyena(output_norm_cfg=LazyConfig(nn.Identity)()).flop_count((5, 4)) == base - 3 * c * s
    mixer = QKVSequenceMixer(hidden_dim=D, mixer_cfg=LazyConfig(Pick)(which=0))
    assert mixer.flop_count((3, 4), inference=True) == 8 * 12 * D * D + 1001


# --------------------------------------------------------------------------------------------------
# Mixed precision and gradients


@pytest.mark.parametrize("variant", ["default", "groupnorm", "linear-gate"])
def test_autocast_bf16_module_cast_and_gradients(variant: str) -> None:
    overrides = {
        "default": {},
        "groupnorm": {"pixelhyena_norm_cfg": LazyConfig(nn.GroupNorm)(num_groups=2, num_channels=D)},
        "linear-gate": {
            "gate_nonlinear_cfg": LazyConfig(nn.Identity)(),
            "qk_norm_cfg": LazyConfig(RMSNorm)(dim=D),
            "gate_nonlinear_2_cfg": None,
        },
    }[variant]
    torch.manual_seed(4)
    adapter = ViT5HyenaAdapter(inner_mixer_cfg=mixer_cfg(**overrides), grid_w=4)
    x = torch.randn(2, 20, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = adapter(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    y32 = adapter(x)
    assert (y.float() - y32).abs().max() <= 0.1 * max(1.0, y32.abs().max().item())
    y32.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapter.parameters())
    adapter.to(torch.bfloat16)
    y = adapter(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    cache = adapter.inner_mixer.mixer.global_conv.kernel.positional_embedding.grid_cache
    assert cache.dtype == torch.float32


@pytest.mark.parametrize(
    "gates", [(nn.SiLU, nn.Sigmoid), (nn.Sigmoid, nn.SiLU), (nn.SiLU, nn.Identity)], ids=str
)
@pytest.mark.parametrize("qk_norm", [True, False], ids=["l2-q-norm", "no-q-norm"])
def test_fused_gates_match_the_module_path(gates, qk_norm) -> None:
    """The fused CPU gate kernels give the module path's values and gradients (to fp32 rounding),
    the same bits with and without autograd (the eval == training promise), and step aside for
    hooks."""
    from vit5.ops import native

    first, second = gates
    overrides = {"gate_nonlinear_cfg": LazyConfig(first)(), "gate_nonlinear_2_cfg": LazyConfig(second)()}
    if not qk_norm:
        overrides["qk_norm_cfg"] = None
    hyena = randomize_(instantiate(hyena_cfg(**overrides)), seed=4)
    qkv = torch.randn(2, 5, 4, 3 * D) * 2
    weight = torch.randn(2, 5, 4, D)
    results = []
    for context in (contextlib.nullcontext, native.disabled):
        hyena.zero_grad()
        leaf = qkv.clone().requires_grad_()
        with context():
            out = hyena(*leaf.split(D, dim=-1))
            (out * weight).sum().backward()
            with torch.no_grad():
                assert torch.equal(hyena(*qkv.split(D, dim=-1)), out.detach())  # eval == training bits
        results.append((out.detach(), leaf.grad, [p.grad.clone() for p in hyena.parameters()]))
    (fused, fused_grad, fused_params), (plain, plain_grad, plain_params) = results
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_grad, plain_grad, rtol=1e-4, atol=1e-5)
    for a, b in zip(fused_params, plain_params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    calls = []
    handle = hyena.gate_nonlinear.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    with torch.no_grad(), native.disabled():
        expected = hyena(*qkv.split(D, dim=-1))
    calls.clear()
    with torch.no_grad():
        hooked = hyena(*qkv.split(D, dim=-1))
    assert calls == [(2, 5, 4, D)]  # hooked: the module path runs the gate module
    # with the kernels on, other fused ops (convolution, norm) may still run: fp32 rounding
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-5)
    handle.remove()
