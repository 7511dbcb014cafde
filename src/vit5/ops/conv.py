"""The short 2D convolution with its backward as one operator (``vit5::conv2d_backward``).

Hyena's short convolution (a depthwise ``nn.Conv2d``) runs on a channels-last view. Eagerly,
PyTorch's convolution and its backward read that layout directly. Under ``torch.compile`` on
CPU, inductor chooses new memory layouts for the inputs of the backward convolution (the
gradient as a contiguous ``[B, C, H, W]`` copy and the saved input in a mixed order), and the
backward then runs several times slower than eagerly, more than the compiled graph saves
elsewhere in a training step (``benchmarks/results/2026-12-07-compile-route.md``).

``vit5::conv2d_backward`` is ``aten.convolution_backward`` as a ``torch.library`` operator.
Inductor passes a custom operator its inputs in the strides they had when the graph was
traced, so the compiled backward reads the same channels-last tensors as the eager one. The
operator has a fake implementation and an autograd formula (the convolution's second
derivatives), so ``torch.library.opcheck`` and double backward hold. It is PyTorch code, so it
needs no compiled extension.

:func:`conv2d` is the entry point: :func:`vit5.ops.route.use_kernel` decides (compile, CPU,
fp32) whether its backward runs through the operator; otherwise it is ``F.conv2d``. The forward
is ``F.conv2d`` either way, so both routes give the same forward bits.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from vit5.ops.recorded import recorded_vjp, recording
from vit5.ops.route import use_kernel

__all__ = ["conv2d"]

_Pair = tuple[int, int]


@torch.library.custom_op("vit5::conv2d_backward", mutates_args=())
def conv2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(x, weight, bias)`` of ``F.conv2d(x, weight, bias, stride, padding, dilation,
    groups)`` for the output gradient ``grad`` (``aten.convolution_backward``)."""
    gx, gw, gb = torch.ops.aten.convolution_backward(
        grad, x, weight, [weight.shape[0]], stride, padding, dilation, False, [0, 0], groups, [True] * 3
    )
    return gx, gw, gb


@conv2d_backward.register_fake
def _conv2d_backward_fake(grad, x, weight, stride, padding, dilation, groups):
    return torch.empty_like(x), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _conv2d_backward_setup(ctx: Any, inputs: tuple, output: Any) -> None:
    grad, x, weight, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad, x, weight)
    ctx.args = (stride, padding, dilation, groups)


def _conv2d_backward_grad(ctx: Any, gg_x: torch.Tensor, gg_w: torch.Tensor, gg_b: torch.Tensor):
    """Second derivatives: ``gx`` is linear in ``(grad, weight)``, ``gw`` in ``(grad, x)``, ``gb``
    in ``grad``; so ``d/d grad`` is the forward convolution of ``gg_x`` and with ``gg_w`` (plus
    ``gg_b``), ``d/d x`` the input gradient with weight ``gg_w``, ``d/d weight`` the weight
    gradient at input ``gg_x``."""
    grad, x, weight = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.args
    d_grad = F.conv2d(gg_x, weight, gg_b, stride, padding, dilation, groups)
    d_grad = d_grad + F.conv2d(x, gg_w, None, stride, padding, dilation, groups)
    d_x = conv2d_backward(grad, x, gg_w, stride, padding, dilation, groups)[0]
    d_w = conv2d_backward(grad, gg_x, weight, stride, padding, dilation, groups)[1]
    return d_grad, d_x, d_w, None, None, None, None


conv2d_backward.register_autograd(_conv2d_backward_grad, setup_context=_conv2d_backward_setup)


class _Conv2d(torch.autograd.Function):
    """``F.conv2d`` whose backward is :func:`conv2d_backward` (one operator for inductor)."""

    @staticmethod
    def forward(ctx: Any, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight, bias)
        ctx.args = (list(stride), list(padding), list(dilation), groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight, bias = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.args
        if recording():  # create_graph: the gradient of the plain convolution, recorded

            def expression(a, w, b):
                return F.conv2d(a, w, b, stride, padding, dilation, groups)

            gx, gw, gb = recorded_vjp(expression, (x, weight, bias), grad, ctx.needs_input_grad[:3])
        else:
            gx, gw, gb = conv2d_backward(grad, x, weight, stride, padding, dilation, groups)
        return gx, gw, gb if bias is not None else None, None, None, None, None


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: _Pair,
    padding: _Pair,
    dilation: _Pair,
    groups: int,
) -> torch.Tensor:
    """``F.conv2d`` with numeric (not ``"same"``) padding; under ``torch.compile`` on CPU fp32
    its backward is the single operator ``vit5::conv2d_backward`` (see the
    module doc). Same forward bits on every route."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if use_kernel("conv2d_backward", any_layout=tensors):
        return _Conv2d.apply(x, weight, bias, stride, padding, dilation, groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
