"""ViT5Attention: SDPA vs explicit attention, both RoPE conventions, tables, errors, parity, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_parity, copy_state, randomize_, relative_error, requires_reference
from tests.reference import build_reference
from vit5.config import LazyConfig, instantiate
from vit5.modules.attention import ViT5Attention
from vit5.modules.norms import RMSNorm
from vit5.ops.init import trunc_normal_init
from vit5.ops.rope import apply_rope, rope_angles_2d, rope_frequencies


def make(D=32, H=2, g=3, R=4, cls=True, qk=True, **kw):
    qk_norm = LazyConfig(RMSNorm)(dim=D // H, eps=1e-6) if qk else None
    return ViT5Attention(D, H, g, g, num_registers=R, has_cls=cls, qk_norm=qk_norm, **kw)


def explicit_attention(layer: ViT5Attention, x: torch.Tensor) -> torch.Tensor:
    """Slow, obvious re-computation: per-head softmax(q k^T * s) v with the tables of the layer."""
    B, T, D = x.shape
    H, hd = layer.num_heads, layer.head_dim
    qkv = x @ layer.qkv.weight.T
    if layer.qkv.bias is not None:
        qkv = qkv + layer.qkv.bias
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    heads = []
    for h in range(H):
        qh, kh, vh = (t[..., h * hd : (h + 1) * hd] for t in (q, k, v))
        if layer.qk_norm:
            qh = layer.q_norm.weight * qh / torch.sqrt(qh.pow(2).mean(-1, keepdim=True) + 1e-6)
            kh = layer.k_norm.weight * kh / torch.sqrt(kh.pow(2).mean(-1, keepdim=True) + 1e-6)
        qh = apply_rope(qh[:, :, None], layer.rope_cos, layer.rope_sin, layer.rope_impl)[:, :, 0]
        kh = apply_rope(kh[:, :, None], layer.rope_cos, layer.rope_sin, layer.rope_impl)[:, :, 0]
        weights = torch.softmax(qh @ kh.transpose(1, 2) * layer.scale, dim=-1)
        heads.append(weights @ vh)
    out = torch.cat(heads, dim=-1) @ layer.proj.weight.T
    return out + layer.proj.bias if layer.proj.bias is not None else out


@pytest.mark.parametrize("rope_impl", ["nvsubquadratic", "interleaved"])
@pytest.mark.parametrize(
    "cls, R, qk", [(True, 4, True), (False, 0, False), (True, 1, True), (False, 9, False)]
)
def test_sdpa_matches_explicit_attention(rope_impl, cls, R, qk):
    torch.manual_seed(0)
    layer = make(cls=cls, R=R, qk=qk, rope_impl=rope_impl, qkv_bias=True, out_proj_bias=True)
    randomize_(layer)
    x = torch.randn(2, layer.num_tokens, 32)
    torch.testing.assert_close(layer(x), explicit_attention(layer, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rope_impl", ["nvsubquadratic", "interleaved"])
@pytest.mark.parametrize(
    "cls, R, qk, rows",
    [
        (True, 4, True, slice(9, 10)),  # CLS (not rotated)
        (True, 4, True, slice(10, 14)),  # the registers (their own RoPE grid)
        (False, 9, False, slice(9, 18)),
        (False, 0, True, slice(2, 5)),  # patches
        (True, 1, True, slice(-2, None)),  # negative bounds count from the end
    ],
)
def test_query_slice_matches_the_full_output_and_gradients(rope_impl, cls, R, qk, rows):
    torch.manual_seed(0)
    layer = make(cls=cls, R=R, qk=qk, rope_impl=rope_impl, qkv_bias=True, out_proj_bias=True)
    randomize_(layer)
    x = torch.randn(2, layer.num_tokens, 32, requires_grad=True)
    with torch.no_grad():
        assert relative_error(layer(x, query_slice=rows), layer(x)[:, rows]) <= 1e-6
    full = layer(x)[:, rows]
    part = layer(x, query_slice=rows)
    assert part.shape == full.shape and relative_error(part, full) <= 1e-6
    weights = torch.randn(full.shape)
    inputs = [x, *layer.parameters()]
    grads = torch.autograd.grad((part * weights).sum(), inputs)
    full_grads = torch.autograd.grad((full * weights).sum(), inputs)
    for grad, full_grad in zip(grads, full_grads):
        assert relative_error(grad, full_grad) <= 1e-5


@pytest.mark.parametrize(
    "rows, error, message",
    [
        (slice(0, 4, 2), ValueError, "contiguous"),
        (slice(5, 5), ValueError, "non-empty"),
        (slice(20, 30), ValueError, "of the 14 tokens"),
        (3, TypeError, "query_slice must be a slice"),
    ],
)
def test_invalid_query_slice(rows, error, message):
    layer = make(g=3, R=4, cls=True)
    with pytest.raises(error, match=message):
        layer(torch.randn(1, 14, 32), query_slice=rows)


def test_rope_table_layout():
    layer = make(D=32, H=2, g=3, R=4, cls=True)
    hd, n = 16, 8
    assert layer.rope_cos.shape == (9 + 1 + 4, hd) and layer.rope_cos.dtype == torch.float32
    theta = 1.0 / (10000.0 ** (torch.arange(0, n, 2).float() / n))
    y, x = 2, 1  # patch index y * 3 + x
    angles = torch.cat([y * theta.repeat_interleave(2), x * theta.repeat_interleave(2)])
    torch.testing.assert_close(layer.rope_cos[y * 3 + x], angles.cos())
    assert torch.all(layer.rope_cos[9] == 1) and torch.all(layer.rope_sin[9] == 0)  # CLS: identity
    assert torch.all(layer.rope_cos[10] == 1)  # register 0 at (0, 0)
    reg_theta = 1.0 / (100.0 ** (torch.arange(0, n, 2).float() / n))
    reg = torch.cat(
        [1 * reg_theta.repeat_interleave(2), 1 * reg_theta.repeat_interleave(2)]
    )  # register 3 at (1, 1)
    torch.testing.assert_close(layer.rope_sin[13], reg.sin())
    assert "rope_cos" not in layer.state_dict()


def test_interleaved_rope_is_a_rotation_with_relative_logits():
    torch.manual_seed(0)
    hd = 16
    freqs = rope_frequencies(hd, 10000.0)
    assert freqs.shape == (hd // 4,)

    def rotate_at(u, y, x):
        table = rope_angles_2d(torch.tensor([float(y)]), torch.tensor([float(x)]), hd, 10000.0)
        return apply_rope(u[None, None], table.cos(), table.sin(), "interleaved")[0, 0]

    q, k = torch.randn(hd), torch.randn(hd)
    assert rotate_at(q, 3, 5).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)
    logits = [rotate_at(q, 2 + s, 1 + s) @ rotate_at(k, 0 + s, 4 + s) for s in range(4)]
    for value in logits[1:]:
        assert value.item() == pytest.approx(logits[0].item(), abs=1e-4)


def test_nvsubquadratic_rope_is_not_a_rotation():
    # Documented quirk of the reference: channel c is paired with c + hd/4, carrying another frequency.
    hd = 16
    table = rope_angles_2d(torch.tensor([5.0]), torch.tensor([3.0]), hd, 10000.0)
    u = torch.randn(1, 1, hd)
    out = apply_rope(u, table.cos(), table.sin(), "nvsubquadratic")
    assert abs(out.norm().item() - u.norm().item()) > 1e-3


def test_interleaved_positions_rescale_with_the_grid():
    layer = make(D=32, H=2, g=4, R=0, cls=False, rope_impl="interleaved")
    ref_cos = layer.rope_cos.clone()
    layer.set_patch_grid(8, 8)
    assert layer.rope_cos.shape == (64, 16)
    # grid 8 at ref grid 4: patch (2, 2) sits at position (1, 1) of the original grid
    torch.testing.assert_close(layer.rope_cos[2 * 8 + 2], ref_cos[1 * 4 + 1])
    custom = make(D=32, H=2, g=4, R=0, cls=False, rope_impl="interleaved", rope_ref_grid=2)
    torch.testing.assert_close(custom.rope_cos[2 * 4 + 2], ref_cos[1 * 4 + 1])
    integer = make(D=32, H=2, g=4, R=0, cls=False)
    integer.set_patch_grid(8, 8)
    torch.testing.assert_close(integer.rope_cos[1 * 8 + 1], ref_cos[1 * 4 + 1])


def test_tables_stay_fp32_after_casting_the_module():
    layer = make().to(torch.bfloat16)
    assert layer.rope_cos.dtype == torch.float32 and layer.qkv.weight.dtype == torch.bfloat16
    out = layer(torch.randn(2, layer.num_tokens, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_autocast_cpu_bf16():
    layer = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(2, layer.num_tokens, 32))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    layer = make(qkv_bias=True, out_proj_bias=True)
    layer(torch.randn(2, layer.num_tokens, 32)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_flop_count_closed_form():
    layer = make(D=32, H=2, g=3, R=4)
    T, D, hd = 14, 32, 16
    assert layer.flop_count(T) == 8 * T * D * D + 4 * T * T * D + 4 * T * D + 2 * 3 * T * hd
    assert make(qk=False).flop_count(T) == 8 * T * D * D + 4 * T * T * D + 4 * T * D


def test_init_fns_apply_after_default_init_and_zero_biases():
    torch.manual_seed(0)
    layer = make(
        D=64,
        H=4,
        qkv_bias=True,
        out_proj_bias=True,
        init_fn_qkv_proj=trunc_normal_init(0.02),
        init_fn_out_proj=LazyConfig(trunc_normal_init)(std=0.02),
    )
    assert layer.qkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(layer.qkv.bias == 0) and torch.all(layer.proj.bias == 0)
    assert layer.scale == pytest.approx(1 / math.sqrt(16))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(D=30, H=4), ValueError, "divisible by num_heads"),
        (dict(D=24, H=4), ValueError, "head_dim .* divisible by 4"),
        (dict(R=5), ValueError, "perfect square"),
        (dict(rope_impl="rotary"), ValueError, "rope_impl"),
        (dict(attn_dropout=1.5), ValueError, "attn_dropout"),
        (dict(g=0), ValueError, "num_patches_h"),
        (dict(rope_ref_grid=4), ValueError, "rope_ref_grid"),
    ],
)
def test_invalid_arguments(kwargs, error, message):
    D, H = kwargs.pop("D", 32), kwargs.pop("H", 2)
    with pytest.raises(error, match=message):
        make(D=D, H=H, qk=False, **kwargs)


def test_qk_norm_of_the_wrong_width_is_rejected():
    with pytest.raises(ValueError, match="head_dim = 16"):
        ViT5Attention(32, 2, 3, 3, qk_norm=LazyConfig(RMSNorm)(dim=32))


def test_wrong_sequence_length_is_a_value_error():
    layer = make(g=3, R=4, cls=True)
    with pytest.raises(ValueError, match=r"T=14"):
        layer(torch.randn(2, 13, 32))


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 6).map(lambda k: 4 * k),
    grid=st.integers(1, 4),
    r=st.integers(0, 2),
    cls=st.booleans(),
    impl=st.sampled_from(["nvsubquadratic", "interleaved"]),
)
def test_valid_arguments_build_and_run(heads, head_dim, grid, r, cls, impl):
    D = heads * head_dim
    layer = ViT5Attention(D, heads, grid, grid, num_registers=r * r, has_cls=cls, rope_impl=impl)
    out = layer(torch.randn(1, layer.num_tokens, D))
    assert out.shape == (1, layer.num_tokens, D) and torch.isfinite(out).all()


@pytest.mark.parity
@requires_reference
@pytest.mark.parametrize(
    "D, H, gh, gw, R, cls, qk, bias",
    [
        (32, 2, 4, 4, 4, True, True, False),
        (48, 3, 3, 5, 0, False, False, True),
        (64, 4, 5, 5, 9, True, True, True),
        (16, 1, 2, 3, 1, False, True, False),
    ],
)
def test_parity_with_reference(D, H, gh, gw, R, cls, qk, bias):
    cfg = LazyConfig(ViT5Attention)(
        hidden_dim=D,
        num_heads=H,
        num_patches_h=gh,
        num_patches_w=gw,
        num_registers=R,
        has_cls=cls,
        qk_norm=LazyConfig(RMSNorm)(dim=D // H, eps=1e-6) if qk else None,
        qkv_bias=bias,
        out_proj_bias=bias,
        init_fn_qkv_proj=LazyConfig(trunc_normal_init)(std=0.02),
    )
    reference, ours = build_reference(cfg), instantiate(cfg)
    randomize_(reference)
    copy_state(reference, ours)
    T = gh * gw + cls + R
    x = torch.randn(2, T, D)
    assert_parity(ours(x), reference(x))
    # the rotation tables are data: the reference's values exactly
    assert torch.equal(ours.rope_cos, reference.rope_cos) and torch.equal(ours.rope_sin, reference.rope_sin)
    assert ours.flop_count(T) == reference.flop_count(T)
    for name in (
        "hidden_dim",
        "num_heads",
        "head_dim",
        "scale",
        "num_registers",
        "has_cls",
        "qk_norm",
        "reg_rope_h",
        "reg_rope_w",
        "rope_base",
        "reg_rope_base",
        "attn_dropout",
    ):
        assert getattr(ours, name) == getattr(reference, name), name
