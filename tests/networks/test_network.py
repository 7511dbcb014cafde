"""ViT5ClassificationNet in every mode: layout, padding, readouts, gradients, dtypes, FLOPs (errors:
test_network_errors.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.helpers import randomize_, relative_error
from vit5.config import instantiate, load_config, save_config
from vit5.modules.adapter import ViT5HyenaAdapter
from vit5.networks.presets import vit5_config
from vit5.networks.vit5_classification import ViT5ClassificationNet, drop_path_rates

# Small networks covering every mode: (pattern, readout, registers, image, patch)
MODES = {
    "attention_cls_r4": ("A", "cls", 4, 16, 4),
    "attention_gap_r0": ("A", "gap", 0, 16, 4),
    "attention_regcat": ("A", "register_concat", 4, 16, 4),
    "hyena_gap_nopad": ("H", "gap", 0, 16, 4),
    "hyena_cls_padded": ("H", "cls", 4, 16, 4),
    "hyena_regcat_padded": ("H", "register_concat", 1, 20, 4),
    "hybrid_HA_cls": ("HA", "cls", 4, 16, 4),
    "hybrid_HHA_gap": ("HHA", "gap", 1, 12, 4),
    "hybrid_AH_regcat": ("AH", "register_concat", 4, 16, 4),
}


def small_config(pattern="HA", readout="cls", registers=4, image=16, patch=4, **kw):
    depth = kw.pop("num_blocks", 2 * len(pattern) if len(pattern) < 3 else len(pattern))
    ratio = kw.pop("neck_compression_ratio", 4 if readout == "register_concat" else None)
    return vit5_config(
        hidden_dim=32,
        num_blocks=depth,
        num_heads=2,
        pattern=pattern,
        patch_size=patch,
        image_size=image,
        in_channels=3,
        num_classes=7,
        num_registers=registers,
        readout=readout,
        siren_hidden_dim=8,
        neck_compression_ratio=ratio,
        **kw,
    )


def images(net: ViT5ClassificationNet, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net.image_size, net.image_size, net.in_channels, generator=generator)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_runs_and_every_parameter_gets_a_gradient(mode):
    torch.manual_seed(0)
    net = instantiate(small_config(*MODES[mode]))
    x = images(net)
    logits = net({"input": x})["logits"]
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # LayerScale hides nothing: every parameter's gradient is non-zero somewhere
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


@pytest.mark.parametrize("mode", sorted(MODES))
def test_token_layout_and_padding(mode):
    pattern, readout, R, image, patch = MODES[mode]
    net = instantiate(small_config(pattern, readout, R, image, patch))
    g = image // patch
    cls = readout == "cls"
    assert net._grid_w == g and net.num_patches == g * g and net.use_cls_token == cls
    assert net._num_non_pad == g * g + cls + R
    assert net._pad_size == (-(g * g + cls + R)) % g and (net._num_non_pad + net._pad_size) % g == 0
    tokens = net.embed(images(net))
    assert tokens.shape == (2, net._num_non_pad + net._pad_size, 32)
    if net._pad_size:
        assert net._zero_pad.shape == (1, net._pad_size, 32) and torch.all(tokens[:, net._num_non_pad :] == 0)
        assert "_zero_pad" not in net.state_dict()
    else:
        assert net._zero_pad is None
    if cls:
        torch.testing.assert_close(tokens[0, g * g], net.cls_token[0, 0])
    if R:
        torch.testing.assert_close(tokens[1, g * g + cls : g * g + cls + R], net.reg_token[0])
    expected = [isinstance(b.sequence_mixer, ViT5HyenaAdapter) for b in net.blocks]
    assert net._block_needs_padding == expected


def test_patch_order_is_row_major_and_pos_embed_is_added_to_patches_only():
    net = instantiate(small_config("A", "cls", 4, 16, 4))
    x = torch.zeros(1, 16, 16, 3)
    x[0, 4:8, 8:12, :] = 1.0  # patch (y=1, x=2) -> token 1 * 4 + 2 = 6
    tokens = net.embed(x)
    changed = (tokens[0] - net.embed(torch.zeros(1, 16, 16, 3))[0]).abs().sum(-1)
    assert changed.nonzero().flatten().tolist() == [6]


def test_attention_blocks_get_the_stripped_sequence_and_padding_passes_through():
    net = instantiate(small_config("A", "cls", 4, 16, 4))  # 16 + 1 + 4 = 21 tokens, pad 3
    assert net._pad_size == 3
    seen = []
    net.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    tokens = net.forward_features(images(net))
    assert seen == [21] and torch.all(tokens[:, 21:] == 0)


def test_hyena_blocks_write_into_the_padding():
    torch.manual_seed(0)
    net = instantiate(small_config("H", "cls", 4, 16, 4, layer_scale_init=0.5))
    tokens = net.forward_features(images(net))
    assert tokens[:, net._num_non_pad :].abs().max() > 0


@pytest.mark.parametrize("readout", ["cls", "gap", "register_concat"])
def test_readouts(readout):
    torch.manual_seed(0)
    net = instantiate(small_config("A", readout, 4, 16, 4)).eval()
    tokens = net.forward_features(images(net))
    if readout == "cls":
        pooled = tokens[:, 16]
    elif readout == "gap":
        pooled = tokens[:, :16].mean(1)
    else:
        pooled = (tokens[:, 16:20] @ net.register_neck.weight.T).reshape(2, -1)
        assert net.neck_dim == 8 and net.head_dim == 32 and net.cls_token is None
    expected = net.out_proj(net.out_norm(pooled))
    torch.testing.assert_close(net({"input": images(net)})["logits"], expected)


def test_register_concat_with_a_wider_head():
    net = instantiate(small_config("H", "register_concat", 4, 16, 4, neck_compression_ratio=2))
    assert net.head_dim == 4 * 16 and net.out_proj.in_features == 64 and net.out_norm.weight.shape == (64,)
    assert net({"input": images(net)})["logits"].shape == (2, 7)


def test_reg_init_zeros_and_truncated_normal_init():
    torch.manual_seed(0)
    cfg = small_config("A", "cls", 4, 16, 4)
    cfg.reg_init = "zeros"
    net = instantiate(cfg)
    assert torch.all(net.reg_token == 0)
    for p in (net.pos_embed, net.patch_embed.weight, net.out_proj.weight):
        assert p.abs().max() <= 2 and 0.01 < p.std().item() < 0.03
    assert net.out_proj.bias is None


@pytest.mark.parametrize(
    "schedule, expected", [("constant", [0.2] * 4), ("linear", [0.0, 0.2 / 3, 0.4 / 3, 0.2])]
)
def test_drop_path_schedules_are_injected(schedule, expected):
    net = instantiate(
        small_config("HA", "cls", 4, 16, 4, max_drop_path_rate=0.2, drop_path_schedule=schedule)
    )
    rates = [b.drop_path.drop_prob if not isinstance(b.drop_path, nn.Identity) else 0.0 for b in net.blocks]
    assert rates == pytest.approx(expected)
    assert drop_path_rates(0.3, 1, "linear") == [0.3]


def test_dropout_and_drop_path_only_act_in_training():
    torch.manual_seed(0)
    net = instantiate(
        small_config("A", "cls", 4, 16, 4, dropout_rate=0.5, max_drop_path_rate=0.5, layer_scale_init=1.0)
    )
    x = images(net)
    net.eval()
    assert torch.equal(net({"input": x})["logits"], net({"input": x})["logits"])  # eval is deterministic
    net.train()
    assert not torch.equal(net({"input": x})["logits"], net({"input": x})["logits"])


def test_register_start_idx_is_injected():
    net = instantiate(small_config("HA", "cls", 4, 16, 4))
    assert all(b.register_start_idx == 17 for b in net.blocks)
    gap = instantiate(small_config("A", "gap", 4, 16, 4))
    assert all(b.register_start_idx == 16 for b in gap.blocks)


def test_flop_count_closed_form_attention():
    net = instantiate(small_config("A", "cls", 4, 16, 4, num_blocks=2))
    D, T, Np, K, C, P, hd, Hm = 32, 21, 16, 7, 3, 4, 16, 128
    attn = 8 * T * D * D + 4 * T * T * D + 4 * T * D + 2 * 3 * T * hd
    mlp = 2 * T * D * Hm + T * Hm + 2 * T * Hm * D
    block = 3 * T * D + attn + T * D + 3 * T * D + mlp + T * D
    expected = 2 * C * D * P * P * Np + Np * D + 2 * block + 3 * D + 2 * D * K
    assert net.flop_count() == expected == net.flop_count(inference=True)


def test_flop_count_uses_padded_length_for_hyena_blocks():
    net = instantiate(small_config("HA", "cls", 4, 16, 4))
    T_nonpad, T_pad = 21, 24
    head = 2 * 3 * 32 * 16 * 16 + 16 * 32 + 3 * 32 + 2 * 32 * 7
    blocks = sum(
        b.flop_count(T_pad if pad else T_nonpad) for b, pad in zip(net.blocks, net._block_needs_padding)
    )
    assert net.flop_count() == head + blocks
    assert net.flop_count(inference=True) < net.flop_count()


# ------------------------------------------------------------------------------------------------
# Readout shortcut: forward runs the last (attention) block for the read tokens only


READOUT_REGISTERS = [("cls", 0), ("cls", 1), ("cls", 4), ("register_concat", 1), ("register_concat", 4)]
READOUT_REGISTERS += [("gap", 0), ("gap", 4)]


def logits_and_grads(net, fn, x, weights, seed=123):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same DropPath draws for both computations
    logits = fn(x)
    (logits * weights).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("pattern", ["A", "HA", "AHA", "AH"])
@pytest.mark.parametrize("readout, registers", READOUT_REGISTERS)
def test_readout_shortcut_matches_the_full_computation(readout, registers, pattern, training):
    torch.manual_seed(0)
    cfg = small_config(pattern, readout, registers, 16, 4, num_blocks=len(pattern), max_drop_path_rate=0.5)
    net = randomize_(instantiate(cfg), seed=1).train(training)
    shortcut = readout != "gap" and pattern.endswith("A")
    assert net.readout_shortcut_applies() is shortcut
    last, calls = net.blocks[-1], []
    forward_tokens = last.forward_tokens
    last.forward_tokens = lambda x, rows: calls.append(rows) or forward_tokens(x, rows)
    x, weights = images(net, batch=4), torch.randn(4, 7)
    logits, grads = logits_and_grads(net, lambda x: net({"input": x})["logits"], x, weights)
    full, full_grads = logits_and_grads(net, lambda x: net.forward_head(net.forward_features(x)), x, weights)
    assert calls == ([net.readout_tokens()] if shortcut else [])
    assert relative_error(logits, full) <= 1e-6
    assert grads.keys() == full_grads.keys() == {n for n, _ in net.named_parameters()}
    for name, grad in grads.items():
        assert relative_error(grad, full_grads[name]) <= 1e-5, name
    if training:  # the DropPath draws matter: another seed gives other logits
        torch.manual_seed(9)
        assert not torch.allclose(logits, net({"input": x})["logits"])


def test_readout_shortcut_with_head_dropout_and_its_exclusions():
    torch.manual_seed(0)
    net = instantiate(
        small_config("A", "cls", 4, 16, 4, num_blocks=2, dropout_rate=0.5, max_drop_path_rate=0.2)
    )
    net.train()
    assert net.readout_shortcut_applies()  # the head dropout sees [B, D] either way
    x, weights = images(net), torch.randn(2, 7)
    logits, _ = logits_and_grads(net, lambda x: net({"input": x})["logits"], x, weights)
    full, _ = logits_and_grads(net, lambda x: net.forward_head(net.forward_features(x)), x, weights)
    assert relative_error(logits, full) <= 1e-6
    handle = net.blocks[-1].register_forward_hook(lambda module, args, out: None)
    assert not net.readout_shortcut_applies()
    handle.remove()
    net.blocks[-1].mlp.dropout.p = 0.1  # active MLP dropout in training would draw per-token masks
    assert not net.readout_shortcut_applies()
    assert net.eval().readout_shortcut_applies()


def test_state_dict_round_trip_and_config_round_trip(tmp_path):
    cfg = small_config("HA", "register_concat", 4, 16, 4)
    net = instantiate(cfg)
    path = save_config(cfg, tmp_path / "net.yaml")
    rebuilt = instantiate(load_config(path))
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    x = images(net)
    torch.testing.assert_close(rebuilt({"input": x})["logits"], net({"input": x})["logits"])
    torch.save(net.state_dict(), tmp_path / "w.pt")
    again = instantiate(cfg)
    again.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    torch.testing.assert_close(again({"input": x})["logits"], net({"input": x})["logits"])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_cpu_bf16_autocast_and_bf16_weights(mode):
    net = instantiate(small_config(*MODES[mode]))
    x = images(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net({"input": x})["logits"]
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    reference = net({"input": x})["logits"]
    assert (logits.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05
    net_bf16 = copy.deepcopy(net).to(torch.bfloat16)
    out = net_bf16({"input": x.bfloat16()})["logits"]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_no_weight_decay_tags():
    net = instantiate(small_config("HA", "cls", 4, 16, 4))
    tagged = net.no_weight_decay()
    assert {"cls_token", "pos_embed", "reg_token", "out_norm.weight"} <= tagged
    assert {"blocks.1.input_norm.weight", "blocks.1.mlp_norm.weight", "blocks.1.ls_attn.gamma",
            "blocks.1.sequence_mixer.q_norm.weight"} <= tagged  # fmt: skip
    assert not {"patch_embed.weight", "out_proj.weight", "blocks.1.sequence_mixer.qkv.weight"} & tagged


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("readout, registers", [("gap", 0), ("cls", 4)])
def test_the_embedded_sequence_is_contiguous(in_channels, readout, registers):
    """The blocks get a contiguous ``[B, T, D]`` sequence whatever the images' memory layout. A
    channels-last view of channels-first images (what the training loop passes) gives a
    channels-first conv output, whose transposed view would make every reduction over ``D`` sum
    in another order: training would round differently than with contiguous tokens."""
    cfg = vit5_config(
        hidden_dim=32, num_blocks=2, num_heads=2, pattern="HA", patch_size=4, image_size=16,
        in_channels=in_channels, num_classes=5, num_registers=registers, readout=readout,
        siren_hidden_dim=8,
    )  # fmt: skip
    net = instantiate(cfg)
    channels_last = torch.randn(3, 16, 16, in_channels)
    channels_first = torch.randn(3, in_channels, 16, 16).permute(0, 2, 3, 1)
    for x in (channels_last, channels_first):
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                tokens = net.embed(x)
            assert tokens.shape == (3, 16 if readout == "gap" else 24, 32)  # 16 + 1 + 4 padded to 4 x 6
            assert tokens.is_contiguous()
