"""Only torch.compile keeps the ``vit5::`` FFT operators (issue 28, item 1): compiled graphs hold
them without a graph break and match eager; ONNX and FX graphs hold ATen operators only.

The compile tests use AOTAutograd with recording compilers (no inductor code generation), so they
see the forward and backward graphs that inductor would get, in a few seconds. The ONNX export of
the fused route's convolution is checked in ``test_capture_paths.py``
(``test_onnx_export_of_the_fft_path``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tests.helpers import randomize_
from tests.modules.test_ckconv import make
from vit5.networks import vit5_classification
from vit5.networks.presets import create_model
from vit5.ops import longconv_plan, native

D = 6

needs_kernels = pytest.mark.skipif(native.library() is None, reason="the fused CPU kernels are not built")


def _recording_backend(graphs: list[torch.fx.Graph]):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm.graph)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=record, bw_compiler=record)


def _targets(graph: torch.fx.Graph) -> set[str]:
    return {str(n.target) for n in graph.nodes if n.op == "call_function"}


class _Logits(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net({"input": x})["logits"]


@needs_kernels
def test_compiled_long_convolution_keeps_the_fused_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)  # not the dense operator
    torch.manual_seed(0)
    eager = randomize_(make(), low=-0.5, high=0.5)
    compiled_module = copy.deepcopy(eager)
    graphs: list[torch.fx.Graph] = []
    compiled = torch.compile(compiled_module, backend=_recording_backend(graphs), fullgraph=True)
    x = torch.randn(2, 5, 4, D)
    with torch.no_grad():
        expected = eager.eval()(x)
        got = compiled_module.eval() and compiled(x)
    # fp32 rounding: the same kernels, a spectrum made per call instead of the cached one
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert {"vit5.fft_kernel_spectrum.default", "vit5.fft_conv2d.default"} <= _targets(graphs[-1])
    assert not any("fft_r2c" in t or "fft_c2r" in t for t in _targets(graphs[-1]))

    graphs.clear()
    eager.train(), compiled_module.train()
    weight = torch.randn_like(x)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    (eager(xe) * weight).sum().backward()
    (compiled(xc) * weight).sum().backward()
    forward, backward = graphs
    assert "vit5.fft_conv2d.default" in _targets(forward)
    assert {"vit5.fft_conv2d.default", "vit5.fft_conv2d_kernel_grad.default"} <= _targets(backward)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-5, atol=1e-6)
    for a, b in zip(eager.parameters(), compiled_module.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)


@needs_kernels
@pytest.mark.parametrize(
    "name", ["vit5_tiny_hyena", pytest.param("vit5_tiny_hybrid", marks=pytest.mark.slow)]
)
def test_compiled_networks_have_no_graph_break_and_match_eager(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
    monkeypatch.setattr(vit5_classification, "check_images", lambda x, *args: x)
    torch.manual_seed(1)
    blocks = {"num_blocks": 1} if name == "vit5_tiny_hyena" else {}  # one Hyena block: a fast compile
    eager = _Logits(create_model(name, **blocks))
    compiled_module = copy.deepcopy(eager)
    graphs: list[torch.fx.Graph] = []
    compiled = torch.compile(compiled_module, backend=_recording_backend(graphs), fullgraph=True)
    size = eager.net.image_size
    x = torch.randn(2, size, size, 3)
    eager.train(), compiled_module.train()
    logits = compiled(x)
    logits.square().mean().backward()
    reference = eager(x)
    reference.square().mean().backward()
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)  # fp32 rounding
    for (key, a), b in zip(eager.named_parameters(), compiled_module.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=key)
    assert len(graphs) == 2  # one forward and one backward graph: no break
    assert "vit5.fft_conv2d_kernel_grad.default" in _targets(graphs[1])
    # norms, residual adds and RoPE are the compiler's; the FFT operators, the gates and the short
    # convolution's backward stay (vit5.ops.route.KERNEL_CAPTURE)
    ops = {t for g in graphs for t in _targets(g) if t.startswith("vit5.")}
    assert ops == {
        "vit5.fft_kernel_spectrum.default",
        "vit5.fft_conv2d.default",
        "vit5.fft_conv2d_kernel_grad.default",
        "vit5.gate.default",
        "vit5.gate_backward.default",
        "vit5.conv2d_backward.default",
    }


@pytest.mark.parametrize("name", ["vit5_tiny_hyena", "vit5_tiny_hybrid"])
def test_fx_graph_module_holds_no_vit5_operator(name: str) -> None:
    """timm's FX feature extraction (blocks and RMSNorms are leaf calls, see
    vit5.networks.timm_models) gives a GraphModule of ATen / torch functions and module calls."""
    timm = pytest.importorskip("timm")
    from torchvision.models import feature_extraction

    torch.manual_seed(3)
    model = create_model(name).eval()
    kwargs = dict(
        leaf_modules=timm.models.get_notrace_modules(), autowrap_functions=timm.models.get_notrace_functions()
    )
    graph = feature_extraction.NodePathTracer(**kwargs).trace(model)
    functions = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert functions and not any("vit5" in f for f in functions), functions
    traced = torch.fx.GraphModule(model, graph)
    x = torch.randn(2, model.image_size, model.image_size, 3)
    with torch.no_grad():
        expected = model({"input": x})["logits"]
        torch.testing.assert_close(traced({"input": x})["logits"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vit5_tiny_hyena", "vit5_tiny_hybrid"])
def test_torchscript_trace_holds_no_vit5_operator(name: str) -> None:
    """``torch.jit.trace`` (and the TorchScript ONNX exporter, ``dynamo=False``) records what a call
    runs: it counts as export, so the trace holds ATen operators only and runs other inputs right."""
    import re

    torch.manual_seed(4)
    model = _Logits(create_model(name)).eval()
    size = model.net.image_size
    x, other = torch.randn(2, size, size, 3), torch.randn(2, size, size, 3)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        assert not re.findall(r"vit5::\w+", str(traced.inlined_graph))
        torch.testing.assert_close(traced(other), model(other), rtol=1e-5, atol=1e-6)  # fp32 rounding
