"""ViT5ResidualBlock: forward_tokens (a token subset) against the full forward, and when it applies."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from tests.helpers import randomize_, relative_error
from vit5.config import LazyConfig, instantiate
from vit5.modules.block import ViT5ResidualBlock, is_tokenwise_norm
from vit5.modules.norms import GlobalResponseNorm, L2Norm, RMSNorm
from vit5.networks.builders import attention_mixer_config, hyena_mixer_config, residual_block_config

D = 32
TOKENS = 3 * 3 + 1 + 4  # 3x3 patches, CLS, 4 registers


def make_block(
    mixer: str = "attention",
    *,
    drop_path: float = 0.0,
    attn_dropout: float = 0.0,
    mlp_dropout: float = 0.0,
    grn: bool = False,
    layer_scale: float = 0.5,
) -> ViT5ResidualBlock:
    if mixer == "attention":
        mixer_cfg = attention_mixer_config(D, 2, 3, 4, True)
        mixer_cfg.attn_dropout = attn_dropout
    else:
        mixer_cfg = hyena_mixer_config(D, 3, [5, 3], 1, siren_hidden_dim=8)
    cfg = residual_block_config(mixer_cfg, D, layer_scale_init=layer_scale)
    cfg.mlp_cfg.dropout_cfg.p = mlp_dropout
    cfg.drop_path_rate = drop_path
    if grn:
        cfg.grn_cfg = LazyConfig(GlobalResponseNorm)(dim=D)
    return instantiate(cfg)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "rows", [slice(9, 10), slice(10, 14), slice(0, 5)], ids=["cls", "registers", "patches"]
)
def test_forward_tokens_matches_the_full_forward(rows, training):
    block = randomize_(make_block(drop_path=0.5), seed=1).train(training)
    x = torch.randn(4, TOKENS, D, requires_grad=True)
    weights = torch.randn(4, rows.stop - rows.start, D)
    params = [x, *block.parameters()]

    def run(fn):
        torch.manual_seed(7)  # the same DropPath draws for both
        out = fn()
        return out.detach(), torch.autograd.grad((out * weights).sum(), params)

    out, grads = run(lambda: block.forward_tokens(x, rows))
    full, full_grads = run(lambda: block(x)[:, rows])
    assert block.supports_token_subset()
    assert relative_error(out, full) <= 1e-6
    for name, grad, full_grad in zip(["x", *dict(block.named_parameters())], grads, full_grads):
        assert relative_error(grad, full_grad) <= 1e-5, name
    if training:  # the draws matter: another seed drops other samples
        torch.manual_seed(8)
        assert not torch.allclose(block.forward_tokens(x, rows), full)
    with torch.no_grad():  # the fused inference path of the attention
        torch.manual_seed(7)
        fast = block.forward_tokens(x, rows)
        torch.manual_seed(7)
        slow = block(x)[:, rows]
    assert relative_error(fast, slow) <= 1e-6


@pytest.mark.parametrize(
    "kwargs, training, expected",
    [
        (dict(), False, True),
        (dict(drop_path=0.3), True, True),  # one draw per sample, whatever the number of tokens
        (dict(attn_dropout=0.1), False, True),
        (dict(attn_dropout=0.1), True, False),  # fewer tokens would draw fewer numbers
        (dict(mlp_dropout=0.1), False, True),
        (dict(mlp_dropout=0.1), True, False),
        (dict(grn=True), False, False),  # GRN reduces over the tokens
        (dict(mixer="hyena"), False, False),
    ],
)
def test_when_a_token_subset_is_exact(kwargs, training, expected):
    block = make_block(**kwargs).train(training)
    assert block.supports_token_subset() is expected
    if not expected:
        with pytest.raises(ValueError, match="forward_tokens needs a ViT5Attention mixer"):
            block.forward_tokens(torch.randn(1, TOKENS, D), slice(9, 10))


def test_forward_hooks_disable_the_token_subset():
    block = make_block()
    handle = block.mlp.register_forward_hook(lambda module, args, out: None)
    assert not block.supports_token_subset()
    handle.remove()
    handle = block.register_forward_pre_hook(lambda module, args: None)
    assert not block.supports_token_subset()
    handle.remove()
    assert block.supports_token_subset()


def test_tokenwise_norms():
    assert (
        is_tokenwise_norm(RMSNorm(D)) and is_tokenwise_norm(nn.LayerNorm(D)) and is_tokenwise_norm(L2Norm())
    )
    assert not is_tokenwise_norm(L2Norm(dim=1)) and not is_tokenwise_norm(GlobalResponseNorm(D))


def _plain(block: ViT5ResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """The block output by the plain (out-of-place) path: a no-op hook turns the in-place path off."""
    handle = block.mlp_norm.register_forward_hook(lambda module, args, out: None)
    try:
        return block(x)
    finally:
        handle.remove()


@pytest.mark.parametrize("layer_scale", [0.5, 0.0], ids=["layer-scale", "no-layer-scale"])
@pytest.mark.parametrize("mixer", ["attention", "hyena"])
def test_inference_residuals_in_place_give_the_plain_bits_and_leave_the_input_alone(mixer, layer_scale):
    block = randomize_(make_block(mixer, layer_scale=layer_scale), seed=3).eval()
    tokens = TOKENS if mixer == "attention" else 9
    x = torch.randn(2, tokens, D)
    original = x.clone()
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            plain = _plain(block, x)
            fast = block(x)
        assert torch.equal(fast, plain)  # in-place residuals: the out-of-place (training) bits
        assert torch.equal(x, original)  # the caller's tokens are never written
    if mixer == "attention":
        with torch.no_grad():
            plain = _plain(block, x)[:, 9:10]
            assert relative_error(block.forward_tokens(x, slice(9, 10)), plain) <= 1e-6
        assert torch.equal(x, original)


def test_inference_keeps_hooked_mixer_outputs_and_active_drop_path():
    block = randomize_(make_block(drop_path=0.5), seed=4).eval()
    x = torch.randn(2, TOKENS, D)
    seen = []
    handle = block.sequence_mixer.register_forward_hook(lambda m, args, out: seen.append((out, out.clone())))
    with torch.no_grad():
        block(x)
    handle.remove()
    held, copy = seen[0]
    assert torch.equal(held, copy)  # not scaled in place behind the hook's back
    block.train()  # DropPath draws: the no-grad output is the autograd output for the same draws
    torch.manual_seed(9)
    expected = block(x.clone().requires_grad_()).detach()
    torch.manual_seed(9)
    with torch.no_grad():  # promise: the eval forward gives the training forward's bits
        assert torch.equal(block(x), expected)


@pytest.mark.parametrize("drop_path", [0.0, 0.5], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("mixer", ["attention", "hyena"])
def test_training_residuals_fused_match_the_module_path(mixer, drop_path):
    """In training the LayerScale'd (and DropPath'd) residual adds run as one fused kernel: the
    module path's values and gradients, the same random draws (the generator ends in the same
    state), and without DropPath the bits of the inference path (Hyena blocks)."""
    from vit5.ops import native

    block = randomize_(make_block(mixer, drop_path=drop_path), seed=5).train()
    tokens = TOKENS if mixer == "attention" else 9
    x = torch.randn(4, tokens, D)
    weight = torch.randn(4, tokens, D)
    results = []
    for context in (contextlib.nullcontext, native.disabled):
        block.zero_grad()
        leaf = x.clone().requires_grad_()
        torch.manual_seed(11)
        with context():
            out = block(leaf)
            (out * weight).sum().backward()
        results.append((out.detach(), leaf.grad, {n: p.grad for n, p in block.named_parameters()}))
        results[-1] += (torch.rand(1),)  # the generator's next draw
    (fused, fused_grad, fused_params, fused_next), (plain, plain_grad, plain_params, plain_next) = results
    assert torch.equal(fused_next, plain_next)
    assert relative_error(fused, plain) <= 1e-6
    assert relative_error(fused_grad, plain_grad) <= 1e-5
    for name, grad in fused_params.items():
        assert relative_error(grad, plain_params[name]) <= 1e-5, name
    if drop_path == 0.0:  # promise: the eval forward gives the training forward's bits
        with torch.no_grad():
            assert torch.equal(block.eval()(x), fused)
