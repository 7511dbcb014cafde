"""The one route (issue 28, item 3): which implementation runs each fused op and long convolution."""

from __future__ import annotations

import pytest
import torch

from vit5.ops import native, route
from vit5.ops.longconv_plan import CAPTURE_MODES, LongConvPath
from vit5.ops.route import KERNEL, KERNEL_CAPTURE, TORCH, route_long_conv, route_op, use_kernel

FACTS = dict(capture="eager", device="cpu", dtype=torch.float32, layout_ok=True, installed=True)


#: Where each operator runs: the FFT convolution and the gates also inside compiled graphs
#: (faster than inductor's code for them), the short convolution's backward operator only there
#: (eagerly PyTorch's own backward already reads the right layouts).
EAGER_ONLY = {"rms_norm", "scaled_add", "scaled_add_into", "rope", "complex_product", "complex_product_sum"}
EAGER_AND_COMPILE = {"fft_conv", "gate"}
COMPILE_ONLY = {"conv2d_backward"}


def test_the_table_names_every_operator() -> None:
    assert set(KERNEL_CAPTURE) == EAGER_ONLY | EAGER_AND_COMPILE | COMPILE_ONLY


@pytest.mark.parametrize("op", sorted(KERNEL_CAPTURE))
def test_every_op_runs_its_kernel_only_eager_or_compiled_on_cpu_fp32(op: str) -> None:
    home = "compile" if op in COMPILE_ONLY else "eager"
    facts = dict(capture=home, device="cpu", dtype=torch.float32, layout_ok=True, installed=True)
    assert route_op(op, **facts) == KERNEL
    for change in (
        dict(device="cuda"),  # the device as data: no GPU needed
        dict(device="mps"),
        dict(dtype=torch.bfloat16),
        dict(dtype=torch.float64),
        dict(layout_ok=False),
        dict(installed=False),
    ):
        assert route_op(op, **{**facts, **change}) == TORCH, change
    for capture in CAPTURE_MODES:
        runs = {"eager": op not in COMPILE_ONLY, "compile": op in EAGER_AND_COMPILE | COMPILE_ONLY}
        expected = KERNEL if runs.get(capture, False) else TORCH
        assert route_op(op, **{**facts, "capture": capture}) == expected, capture


def test_unknown_op_or_capture_mode_is_one_line() -> None:
    with pytest.raises(ValueError, match="op must be one of .* got 'conv3d'"):
        route_op("conv3d", **FACTS)
    with pytest.raises(ValueError, match="capture must be one of .* got 'jit'"):
        route_op("gate", **{**FACTS, "capture": "jit"})


def test_use_kernel_reads_the_facts_of_a_call() -> None:
    x = torch.randn(4, 8)
    installed = native.library() is not None
    assert use_kernel("scaled_add", x, x, x[0]) is installed
    assert not use_kernel("scaled_add", x, x.t().contiguous().t(), x[0])  # a strided operand
    assert not use_kernel("scaled_add", x.double(), x.double(), x[0].double())
    assert not use_kernel("scaled_add", x, x, x[0], layout_ok=False)
    with native.disabled():
        assert not use_kernel("scaled_add", x, x, x[0])
    # torch.func transforms take the plain ops
    seen = []
    torch.func.vmap(lambda row: seen.append(use_kernel("gate", row)) or row)(x)
    assert seen == [False]


def test_long_convolutions_are_planned_from_the_call() -> None:
    facts = dict(
        channels_last=True,
        training=False,
        channels=384,
        per_sample_kernels=False,
        zero_padding=True,
        causal=False,
        chunked=False,
    )
    x = torch.randn(2, 14, 14, 384)
    installed = native.library() is not None
    with torch.no_grad():
        plan = route_long_conv(x, **facts)
        assert plan.fused is installed and plan.cache and not plan.captured
        with native.disabled():
            assert route_long_conv(x, **facts).path is LongConvPath.DFT  # the table without the kernels
        assert not route_long_conv(x.to(torch.bfloat16), **facts).fused
        # a tensor on another device (meta stands in for a GPU): the reference's torch.fft
        assert route_long_conv(x.to("meta"), **facts).path is LongConvPath.FFT
        # channels without unit stride: the kernels do not read them
        strided = x.movedim(-1, 1).contiguous().movedim(1, -1)
        assert not route_long_conv(strided, **facts).fused
    plan = route_long_conv(x.requires_grad_(), **{**facts, "training": True})
    assert plan.path is (LongConvPath.FFT_LOWMEM if installed else LongConvPath.DFT)
    assert plan.fused is installed


def test_kernel_capture_table_names_only_known_modes() -> None:
    assert all(set(modes) <= set(CAPTURE_MODES) for modes in route.KERNEL_CAPTURE.values())
