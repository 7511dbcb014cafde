"""The fused kernels as ``torch.library`` operators: ``opcheck`` for each, the profiler sees them
by name with shapes, and exported graphs hold no ``vit5::`` operator."""

from __future__ import annotations

import pytest
import torch

import vit5
from vit5.ops import kernels, native
from vit5.ops.fftnative import fused_sizes
from vit5.ops.fftplan import plan_fft_conv

pytestmark = pytest.mark.skipif(native.library() is None, reason="the native kernels are not available")

_OPS = torch.ops.vit5 if native.library() is not None else None


def _r(*shape: int, grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, generator=_G).requires_grad_(grad)


_G = torch.Generator().manual_seed(0)


def _tables(impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    return kernels._partner_tables(8, impl)


def _cases() -> dict[str, tuple]:
    plan = plan_fft_conv((6, 5), (11, 9), (False, False))
    f_h, f_w = fused_sizes(plan)
    taps = _r(20, 11, 9)
    spectrum = kernels.fft_kernel_spectrum(taps, *plan.starts, f_h, f_w)
    packed = _r(2, 7, 3, 24)  # q, k slices of one projection: rows in two levels
    return {
        "rms_norm": (_OPS.rms_norm.default, (_r(2, 7, 8, grad=True), _r(8, grad=True), 1e-6)),
        "rms_norm_strided": (_OPS.rms_norm.default, (packed[..., 8:16], _r(8), 1e-6)),
        "rms_norm_backward": (
            _OPS.rms_norm_backward.default,
            (_r(2, 7, 8), _r(8), _r(2, 7, 1).abs(), _r(2, 7, 8), True, True),
        ),
        "gate_l2": (_OPS.gate.default, (_r(2, 7, 8, grad=True), _r(2, 7, 8, grad=True), 1, 1e-6)),
        "gate_sigmoid": (_OPS.gate.default, (_r(2, 7, 8, grad=True), _r(2, 7, 8, grad=True), 2, None)),
        "gate_backward": (
            _OPS.gate_backward.default,
            (_r(2, 7, 8), _r(2, 7, 8), _r(14).abs(), _r(2, 7, 8), 1, 1e-6, True, True),
        ),
        "scaled_add": (
            _OPS.scaled_add.default,
            (_r(2, 7, 8, grad=True), _r(2, 7, 8, grad=True), _r(8, grad=True)),
        ),
        "scaled_add_per_sample": (
            _OPS.scaled_add.default,
            (_r(2, 7, 8, grad=True), _r(2, 7, 8, grad=True), _r(2, 8, grad=True)),
        ),
        "scaled_add_backward": (
            _OPS.scaled_add_backward.default,
            (_r(2, 7, 8), _r(2, 7, 8), _r(2, 8), True, True),
        ),
        "scaled_add_into_": (_OPS.scaled_add_into_.default, (_r(2, 7, 8), _r(2, 7, 8), _r(8))),
        "rope": (
            _OPS.rope.default,
            (
                _r(2, 5, 3, 8, grad=True),
                torch.cos(_r(5, 8)),
                torch.sin(_r(5, 8)),
                *_tables("interleaved"),
                False,
            ),
        ),
        "rope_adjoint": (
            _OPS.rope.default,
            (_r(2, 5, 3, 8), torch.cos(_r(5, 8)), torch.sin(_r(5, 8)), *_tables("nvsubquadratic"), True),
        ),
        "fft_kernel_spectrum": (_OPS.fft_kernel_spectrum.default, (taps, *plan.starts, f_h, f_w)),
        "fft_conv2d": (_OPS.fft_conv2d.default, (_r(2, 6, 5, 20), spectrum, f_h, f_w, _r(20))),
        "fft_conv2d_kernel_grad": (
            _OPS.fft_conv2d_kernel_grad.default,
            (_r(2, 6, 5, 20), _r(2, 6, 5, 20), *plan.starts, f_h, f_w, _r(1, 20, 11, 9)),
        ),
        "complex_product_": (
            _OPS.complex_product_.default,
            (_r(3, 4, 2, 5), _r(1, 4, 2, 5), torch.empty(3, 4, 2, 5), True),
        ),
        "complex_product_sum_": (
            _OPS.complex_product_sum_.default,
            (_r(3, 4, 2, 5), _r(3, 4, 2, 5), torch.zeros(1, 4, 2, 5)),
        ),
    }


CASES = _cases() if native.library() is not None else {}


def test_every_operator_has_a_case() -> None:
    covered = {op._schema.name for op, _ in CASES.values()}
    assert covered == set(kernels.OPERATORS)


@pytest.mark.parametrize("case", sorted(CASES))
def test_opcheck(case: str) -> None:
    op, args = CASES[case]
    # test_aot_dispatch_dynamic re-traces with symbolic shapes: slow and not what these checks are
    # about (the kernels run eagerly only; capture takes the PyTorch ops).
    torch.library.opcheck(
        op, args, test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )


def test_profiler_shows_operators_with_shapes() -> None:
    model = vit5.create_model("vit5_tiny_hybrid").train()
    x = torch.randn(2, 32, 32, 3)
    with torch.profiler.profile(record_shapes=True) as profile:
        model({"input": x})["logits"].sum().backward()
    events = {e.key: e for e in profile.key_averages(group_by_input_shape=True)}
    names = {name for name in events if name.startswith("vit5::")}
    assert {"vit5::rms_norm", "vit5::gate", "vit5::scaled_add", "vit5::rope"} <= names, names
    assert {"vit5::rms_norm_backward", "vit5::gate_backward", "vit5::scaled_add_backward"} <= names, names
    shapes = [
        e.input_shapes for e in profile.key_averages(group_by_input_shape=True) if e.key == "vit5::gate"
    ]
    assert any(s and len(s[0]) == 4 and s[0][0] == 2 and s[0][-1] == 64 for s in shapes), shapes


def _vit5_nodes(graph: torch.fx.Graph) -> list[str]:
    return [str(n.target) for n in graph.nodes if n.op == "call_function" and "vit5" in str(n.target)]


def test_exported_graphs_hold_no_vit5_operators() -> None:
    """A Hyena block (T = 72 with padding) and an attention block (T = 69) of the tiny hybrid:
    exported in eager-CPU-fp32 conditions where the kernels would run, ATen operators only."""
    model = vit5.create_model("vit5_tiny_hybrid").eval()
    for block, tokens in ((model.blocks[0], 72), (model.blocks[1], 69)):
        program = torch.export.export(block, (torch.randn(2, tokens, 64),))
        assert _vit5_nodes(program.graph) == []
        assert any(n.op == "call_function" for n in program.graph.nodes)
