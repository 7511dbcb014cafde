"""``vit5::conv2d_backward`` and :func:`vit5.ops.conv.conv2d` (the short convolution under
``torch.compile``), and ``Hyena.forward_packed`` (the mixer's packed projection, no concatenation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from vit5.ops import conv, route
from vit5.ops.capture import capture_mode

ARGS = ([1, 1], [1, 1], [1, 1], 6)  # stride, padding, dilation, groups (depthwise, 6 channels)


def _channels_last(*shape: int, grad: bool = False, dtype=torch.float32) -> torch.Tensor:
    t = torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(grad)


def test_opcheck() -> None:
    torch.manual_seed(0)
    grad, x = _channels_last(2, 6, 5, 4, grad=True), _channels_last(2, 6, 5, 4, grad=True)
    weight = torch.randn(6, 1, 3, 3, requires_grad=True)
    torch.library.opcheck(
        torch.ops.vit5.conv2d_backward.default,
        (grad, x, weight, *ARGS),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )


def test_operator_gives_the_convolution_gradients_and_their_derivatives() -> None:
    torch.manual_seed(0)
    x = _channels_last(2, 6, 5, 4, grad=True, dtype=torch.float64)
    weight = torch.randn(6, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    out = F.conv2d(x, weight, bias, padding=1, groups=6)
    grad = torch.randn_like(out)
    expected = torch.autograd.grad(out, (x, weight, bias), grad)
    got = torch.ops.vit5.conv2d_backward(grad, x, weight, *ARGS)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)  # the same ATen backward
    # the registered autograd formula: second derivatives, checked numerically in float64
    small = [_channels_last(1, 2, 3, 3, grad=True, dtype=torch.float64) for _ in range(2)]
    small.append(torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True))
    torch.autograd.gradcheck(
        lambda g, a, w: torch.ops.vit5.conv2d_backward(g, a, w, [1, 1], [1, 1], [1, 1], 2), small
    )


def test_eager_calls_are_plain_convolutions() -> None:
    x, weight = _channels_last(2, 6, 5, 4, grad=True), torch.randn(6, 1, 3, 3, requires_grad=True)
    y = conv.conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), 6)
    assert type(y.grad_fn).__name__ == "ConvolutionBackward0"  # PyTorch's own backward eagerly
    assert not route.use_kernel("conv2d_backward", any_layout=(x, weight))
    assert capture_mode() == "eager"


def _records(graphs: list[torch.fx.Graph]):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def record(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm.graph)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=record, bw_compiler=record)


def test_compiled_backward_is_the_operator_and_matches_eager() -> None:
    torch.manual_seed(0)
    module = nn.Conv2d(6, 6, 3, padding=1, groups=6)

    def f(q: torch.Tensor) -> torch.Tensor:  # channels-last in and out, as in Hyena
        y = conv.conv2d(q.movedim(-1, 1), module.weight, module.bias, (1, 1), (1, 1), (1, 1), 6)
        return y.movedim(1, -1)

    graphs: list[torch.fx.Graph] = []
    compiled = torch.compile(f, backend=_records(graphs), fullgraph=True)
    q = torch.randn(2, 5, 4, 6, requires_grad=True)
    out = compiled(q)
    out.square().sum().backward()
    got = (q.grad, module.weight.grad, module.bias.grad)
    q.grad = module.weight.grad = module.bias.grad = None
    reference = module(q.movedim(-1, 1)).movedim(1, -1)
    reference.square().sum().backward()
    torch.testing.assert_close(out, reference, rtol=0, atol=0)  # the same forward op
    for a, b in zip(got, (q.grad, module.weight.grad, module.bias.grad)):
        torch.testing.assert_close(a, b)  # the same ATen backward
    backward_ops = {str(n.target) for n in graphs[1].nodes if n.op == "call_function"}
    assert "vit5.conv2d_backward.default" in backward_ops
    assert not any("convolution_backward" in t for t in backward_ops)


def test_recorded_backward_gives_second_derivatives_of_the_plain_convolution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the autograd function's create_graph branch, reached here without a compiler
    monkeypatch.setattr(conv, "use_kernel", lambda op, *a, **k: op == "conv2d_backward")
    torch.manual_seed(0)
    x = _channels_last(2, 6, 5, 4, grad=True)
    weight, bias = torch.randn(6, 1, 3, 3, requires_grad=True), torch.randn(6, requires_grad=True)
    results = []
    for call in (
        lambda: conv.conv2d(x, weight, bias, (1, 1), (1, 1), (1, 1), 6),
        lambda: F.conv2d(x, weight, bias, padding=1, groups=6),
    ):
        y = call()
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), (x, weight)))
    assert type(conv.conv2d(x, weight, bias, (1, 1), (1, 1), (1, 1), 6).grad_fn).__name__ != (
        "ConvolutionBackward0"
    )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # fp32 rounding


def test_mixer_passes_its_packed_projection_to_hyena() -> None:
    from vit5.networks.presets import create_model

    torch.manual_seed(0)
    model = create_model("vit5_tiny_hyena", num_blocks=1).eval()
    mixer = next(m for m in model.modules() if hasattr(m, "mixer") and hasattr(m.mixer, "forward_packed"))
    x = torch.randn(2, 4, 4, mixer.hidden_dim)
    seen: list[tuple] = []
    with torch.no_grad():
        packed = mixer(x)
        handle = mixer.mixer.register_forward_hook(lambda m, args, out: seen.append(args))
        hooked = mixer(x)  # with a hook, the mixer calls Hyena as a module on q, k, v
        handle.remove()
        q, k, v = mixer.qkv_proj(x).split(mixer.hidden_dim, dim=-1)
        direct = mixer.out_proj(mixer.mixer(q, k, v))
    assert len(seen) == 1 and len(seen[0]) == 3
    # the packed projection is the concatenation itself: the same computation, the same bits
    torch.testing.assert_close(packed, direct, rtol=0, atol=0)
    # a hook on Hyena also turns its fused gates off (modules/hooks.py): fp32 rounding
    torch.testing.assert_close(hooked, direct, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"packed channels-last \[B, \*S, \d+\] input, got \(2, 4, 4, 5\)"):
        mixer.mixer.forward_packed(torch.randn(2, 4, 4, 5))
