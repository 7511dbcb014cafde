"""Numerical, state-dict and FLOP parity with the reference library nvsubquadratic==0.2.0.

Each vit5 config is translated target-by-target to the reference's classes (tests/reference.py),
both networks are built, the reference's parameters are set to random O(1) values, copied into
vit5 with ``strict=True``, and the logits compared with the tolerance of spec/00-overview.md.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.helpers import assert_parity, copy_state, randomize_, requires_reference
from tests.reference import build_reference
from vit5.config import instantiate
from vit5.networks.presets import model_config, vit5_config

pytestmark = [pytest.mark.parity, requires_reference]


def check_parity(cfg, batch=2, seed=0, image=None):
    torch.manual_seed(seed)
    reference = build_reference(cfg)
    ours = instantiate(cfg)
    randomize_(reference, seed=seed)
    copy_state(reference, ours)
    reference.eval()
    ours.eval()
    size = ours.image_size if image is None else image
    x = torch.randn(batch, size, size, ours.in_channels, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        ref_logits = reference({"input": x, "condition": None})["logits"]
        our_logits = ours({"input": x})["logits"]
    assert_parity(our_logits, ref_logits)
    for inference in (False, True):
        ours_flops, ref_flops = (
            ours.flop_count(inference=inference),
            reference.flop_count(inference=inference),
        )
        assert abs(ours_flops - ref_flops) <= 1e-3 * ref_flops, (inference, ours_flops, ref_flops)
    for name in (
        "_pad_size",
        "_num_non_pad",
        "_grid_w",
        "num_patches",
        "use_cls_token",
        "neck_dim",
        "layer_pattern",
    ):
        assert getattr(ours, name) == getattr(reference, name), name
    # Homogeneous mode differs on purpose: vit5 pads grid-mixer blocks (the reference strips the
    # padding from every block, which only works without padding).
    if ours.layer_pattern is not None:
        assert ours._block_needs_padding == reference._block_needs_padding
    tagged = {n for n, p in ours.named_parameters() if getattr(p, "_no_weight_decay", False)}
    tagged_ref = {n for n, p in reference.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert tagged == tagged_ref
    return ours, reference


def small(pattern, readout, registers, image=16, patch=4, depth=None, **kw):
    ratio = 4 if readout == "register_concat" else None
    return vit5_config(
        hidden_dim=32,
        num_blocks=depth or max(2, len(pattern)),
        num_heads=2,
        pattern=pattern,
        patch_size=patch,
        image_size=image,
        num_classes=11,
        num_registers=registers,
        readout=readout,
        siren_hidden_dim=16,
        neck_compression_ratio=ratio,
        **kw,
    )


def _reference_can_run(pattern, readout, registers, image, patch):
    g = image // patch
    pad = -(g * g + (readout == "cls") + registers) % g
    homogeneous_hyena = set(pattern) == {"H"}
    return not (homogeneous_hyena and pad)  # the reference crashes on homogeneous Hyena with padding


SMALL_MATRIX = [
    combo
    for combo in itertools.product(
        ["A", "H", "HA", "AH", "HHA"], ["cls", "gap", "register_concat"], [0, 1, 4], [(16, 4), (20, 4)]
    )  # fmt: skip
    if not (combo[1] == "register_concat" and combo[2] == 0)
    and _reference_can_run(combo[0], combo[1], combo[2], *combo[3])
]


@pytest.mark.parametrize("pattern, readout, registers, size", SMALL_MATRIX, ids=lambda v: str(v))
def test_small_networks(pattern, readout, registers, size):
    image, patch = size
    check_parity(small(pattern, readout, registers, image, patch))


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_drop_path_and_dropout_configs_match_in_eval(schedule):
    check_parity(small("HA", "cls", 4, max_drop_path_rate=0.3, drop_path_schedule=schedule, dropout_rate=0.2))


def test_register_concat_with_wide_head():
    cfg = small("HA", "register_concat", 4)
    cfg.neck_compression_ratio = 2
    cfg.norm_cfg.dim = 4 * 16
    check_parity(cfg)


def test_reg_init_zeros():
    cfg = small("A", "cls", 4)
    cfg.reg_init = "zeros"
    check_parity(cfg)


# The reference's three ViT-5-S configurations at full size (D 384, depth 12, 224 px).
@pytest.mark.parametrize(
    "name, keys, params",
    [
        ("vit5_small_ref", 126, 22_010_112),
        ("vit5_small_hyena_gap", 244, 22_323_456),
        ("vit5_small_hybrid", 186, 22_167_744),
    ],  # fmt: skip
)
def test_reference_vit5_s_configurations(name, keys, params):
    ours, reference = check_parity(model_config(name), batch=1)
    assert len(ours.state_dict()) == keys
    assert sum(p.numel() for p in ours.parameters()) == params
    assert list(ours.state_dict()) == list(reference.state_dict())


def test_published_flop_counts():
    assert instantiate(model_config("vit5_small_ref")).flop_count() == 9_412_799_616
    hyena = instantiate(model_config("vit5_small_hyena_gap"))
    assert hyena.flop_count() == 9_307_855_044 and hyena.flop_count(inference=True) == 8_881_398_864
