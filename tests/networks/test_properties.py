"""Property-based tests: every valid network configuration builds and runs; every invalid one raises
ValueError or TypeError (never AssertionError, IndexError, or a RuntimeError from inside torch)."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vit5.config import LazyConfig
from vit5.modules.norms import RMSNorm
from vit5.networks.presets import attention_mixer_config, hyena_mixer_config, residual_block_config
from vit5.networks.vit5_classification import ViT5ClassificationNet


@st.composite
def network_arguments(draw):
    """Small networks whose parts agree most of the time and disagree in every way now and then."""
    D = draw(st.sampled_from([8, 12, 16, 24, 32]))
    heads = draw(st.sampled_from([1, 2, 2, 3, 4]))
    patch = draw(st.sampled_from([2, 3, 4]))
    image = patch * draw(st.integers(1, 4)) + draw(st.sampled_from([0] * 8 + [1]))
    R = draw(st.sampled_from([0, 1, 2, 4, 4]))
    readout = draw(st.sampled_from(["cls"] * 4 + ["gap"] * 3 + ["register_concat"] * 3 + ["mean"]))
    ratio = draw(st.sampled_from([None, 1, 2, 4, 4, 3]))
    g = image // patch
    cls = readout == "cls"
    mismatch = draw(st.sampled_from([None] * 15 + ["cls", "registers", "grid", "grid_w", "norm"]))
    block_cls = (not cls) if mismatch == "cls" else cls
    block_R = (R + 1) if mismatch == "registers" else R
    block_grid = (g + 1) if mismatch == "grid" else max(g, 1)
    tokens = g * g + cls + R
    rows = -(-tokens // max(g, 1))
    L_cache = max(g, 2) if rows == g else [max(rows, 2), max(g, 2)]
    grid_w = (g + 1) if mismatch == "grid_w" else max(g, 1)

    def attention():
        mixer = attention_mixer_config(D, heads, block_grid, block_R, block_cls)
        return residual_block_config(mixer, D, mlp_ratio=2.0)

    def hyena():
        return residual_block_config(
            hyena_mixer_config(D, grid_w, L_cache, 2, siren_hidden_dim=4), D, mlp_ratio=2.0
        )

    mode = draw(st.sampled_from(["A", "H", "AH", "HHA"] * 3 + ["AX", "short"]))
    kwargs = dict(in_channels=draw(st.sampled_from([1, 3])), num_classes=3, hidden_dim=D, patch_size=patch,
                  image_size=image, num_registers=R, readout=readout)  # fmt: skip
    if mode == "A":
        kwargs.update(num_blocks=2, block_cfg=attention())
    elif mode == "H":
        kwargs.update(num_blocks=2, block_cfg=hyena())
    else:
        pattern = {"AH": "AH", "HHA": "HHA", "AX": "AX", "short": "AH"}[mode]
        kwargs.update(num_blocks=3 if mode == "short" else len(pattern), layer_pattern=pattern,
                      layer_types={"A": attention(), "H": hyena()})  # fmt: skip
    head = R * D // ratio if readout == "register_concat" and ratio and D % ratio == 0 else D
    norm_dim = head + 1 if mismatch == "norm" else head
    kwargs.update(norm_cfg=LazyConfig(RMSNorm)(dim=norm_dim), neck_compression_ratio=ratio)
    return kwargs, mode, mismatch


def expected_valid(kwargs, mode, mismatch) -> bool:
    """An independent statement of the documented construction rules."""
    D, heads, R = kwargs["hidden_dim"], None, kwargs["num_registers"]
    patch, image, readout, ratio = (
        kwargs["patch_size"],
        kwargs["image_size"],
        kwargs["readout"],
        kwargs["neck_compression_ratio"],
    )
    if readout not in ("cls", "gap", "register_concat") or image % patch:
        return False
    if readout == "register_concat" and (ratio is None or R == 0 or D % ratio):
        return False
    if mismatch == "norm" or mode in ("AX", "short"):
        return False
    uses_attention = mode in ("A", "AH", "HHA")
    uses_hyena = mode in ("H", "AH", "HHA")
    if uses_attention:
        heads = kwargs.get("block_cfg", kwargs.get("layer_types", {}).get("A", {}))
        mixer = heads["sequence_mixer_cfg"]
        if D % mixer["num_heads"] or (D // mixer["num_heads"]) % 4:
            return False
        if math.isqrt(mixer["num_registers"]) ** 2 != mixer["num_registers"]:
            return False
        if mismatch in ("cls", "registers", "grid"):
            return False
    return not (uses_hyena and mismatch == "grid_w")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(network_arguments())
def test_valid_configurations_build_and_run_and_invalid_ones_raise_value_or_type_errors(case):
    kwargs, mode, mismatch = case
    valid = expected_valid(kwargs, mode, mismatch)
    try:
        net = ViT5ClassificationNet(**kwargs)
    except (ValueError, TypeError) as error:
        assert not valid, f"valid configuration rejected: {error}"
        return
    assert valid, f"invalid configuration accepted ({mode}, {mismatch}, {kwargs['readout']})"
    x = torch.randn(2, kwargs["image_size"], kwargs["image_size"], kwargs["in_channels"])
    logits = net({"input": x})["logits"]
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert net.flop_count() > net.flop_count(inference=True) or mode == "A"


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=5),
    dtype=st.sampled_from(
        [torch.float32, torch.float64, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
    ),
)
def test_any_wrong_input_is_a_value_or_type_error(shape, dtype):
    net = ViT5ClassificationNet(
        in_channels=3, num_classes=2, hidden_dim=8, num_blocks=1, patch_size=2, image_size=4, num_registers=0,
        norm_cfg=LazyConfig(RMSNorm)(dim=8), readout="gap",
        block_cfg=residual_block_config(attention_mixer_config(8, 2, 2, 0, False), 8, mlp_ratio=1.0),
    )  # fmt: skip
    x = torch.zeros(shape, dtype=dtype)
    if list(shape) == [shape[0] if shape else 0, 4, 4, 3] and shape[0] > 0 and dtype.is_floating_point:
        assert net({"input": x})["logits"].shape == (shape[0], 2)
        return
    try:
        net({"input": x})
    except (ValueError, TypeError):
        return
    raise AssertionError(f"input of shape {shape} and dtype {dtype} was accepted")
