"""Hyena's gates ``x' * act(gate)`` (``x'``: ``x`` or its L2-normalised rows), fused on CPUs.

Hyena multiplies a signal by an activated gate twice per block: ``L2Norm(q) * silu(k)`` before
the long convolution and ``h * sigmoid(v)`` after it. As PyTorch ops that is three to five
full-size passes forward and five to eight backward (the norm's reduction, division and clamp,
the activation, the product, each derivative). On eager CPU fp32 tensors
(:func:`vit5.ops.native.usable`; ``x`` and ``gate`` may be channel slices of one tensor, as
Hyena's ``q, k, v`` are) :func:`gate` runs one fused C kernel forward and one backward; the
kernels evaluate ``exp`` with their own polynomial (about 1 ulp), so they agree with the PyTorch
expression to fp32 rounding, not bit for bit. Elsewhere it runs the PyTorch expression.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from vit5.ops import native
from vit5.ops.recorded import recorded_vjp, recording

__all__ = ["ACTIVATIONS", "gate", "gate_reference"]

#: Activation name -> the kernels' code.
ACTIVATIONS = {"silu": 1, "sigmoid": 2}


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None
    ) -> torch.Tensor:
        d = x.shape[-1]
        n = x.numel() // d
        out = x.new_empty(x.shape)  # contiguous
        rnorm = x.new_empty(n if l2_eps is not None else 0)
        native.run(
            "vit5_gate_forward",
            x.data_ptr(), *native.row_blocks(x), g.data_ptr(), *native.row_blocks(g), out.data_ptr(),
            rnorm.data_ptr(), n, d, ACTIVATIONS[activation], int(l2_eps is not None), l2_eps or 0.0,
            native.threads(),
        )  # fmt: skip
        ctx.save_for_backward(x, g, rnorm)
        ctx.activation, ctx.l2_eps = activation, l2_eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, g, rnorm = ctx.saved_tensors
        if recording():  # create_graph: the plain expression's gradient, recorded
            grads = recorded_vjp(
                lambda a, b: gate_reference(a, b, ctx.activation, ctx.l2_eps),
                (x, g),
                grad,
                ctx.needs_input_grad[:2],
            )
            return *grads, None, None
        d = x.shape[-1]
        n = x.numel() // d
        grad = grad.contiguous()
        need_x, need_g = ctx.needs_input_grad[:2]
        grad_x = torch.empty(x.shape, dtype=x.dtype) if need_x else None
        grad_g = torch.empty(g.shape, dtype=g.dtype) if need_g else None
        native.run(
            "vit5_gate_backward",
            x.data_ptr(), *native.row_blocks(x), g.data_ptr(), *native.row_blocks(g), rnorm.data_ptr(),
            grad.data_ptr(),
            grad_x.data_ptr() if need_x else None, grad_g.data_ptr() if need_g else None, n, d,
            ACTIVATIONS[ctx.activation], int(ctx.l2_eps is not None), ctx.l2_eps or 0.0, native.threads(),
        )  # fmt: skip
        return grad_x, grad_g, None, None


def gate(x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None = None) -> torch.Tensor:
    """``x' * act(g)`` for ``x, g`` ``[..., D]`` of one shape; ``act`` is ``"silu"`` or ``"sigmoid"``.

    With ``l2_eps`` the rows of ``x`` are first scaled to unit L2 norm, ``x / max(||x||, l2_eps)``
    (``L2Norm(dim=-1)``, computed in fp32). Differentiable in ``x`` and ``g``.

    Raises:
        ValueError: For an unknown activation or inputs of different shapes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"gate activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if x.shape != g.shape:
        raise ValueError(f"gate expects x and g of one shape, got {tuple(x.shape)} and {tuple(g.shape)}")
    if x.numel() > 0 and native.usable(strided=(x, g)):
        return _Gate.apply(x, g, activation, l2_eps)
    return gate_reference(x, g, activation, l2_eps)


def gate_reference(
    x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None = None
) -> torch.Tensor:
    """:func:`gate` as plain PyTorch ops (no checks): the formula the kernels implement."""
    if l2_eps is not None:
        x = F.normalize(x.float(), p=2.0, dim=-1, eps=l2_eps).to(x.dtype)
    return x * (F.silu(g) if activation == "silu" else torch.sigmoid(g))
