"""RMS normalisation with a hand-written backward pass, fused into one kernel on CPUs.

Autograd through ``w * (u * rsqrt(mean(u^2) + eps))`` saves and walks six ops; its backward makes
about nine full-size passes (two products per multiplication, the square's derivative, the
broadcast of the mean, the sum of two input gradients). :func:`rms_norm` computes the backward
from the closed form, with ``n = u r`` and ``r = rsqrt(mean(u^2) + eps)`` per row:

* ``grad_weight = sum_rows(g * n)``;
* ``grad_u = r * (g w - n * mean(g w * n))``.

On eager CPU fp32 tensors (:func:`vit5.ops.native.usable`) forward and backward each run as one
fused C kernel (one read and one write of the rows; the rows may be spread in two levels, as the
per-head q and k of attention's packed projection are: :func:`vit5.ops.native.row_blocks`);
elsewhere (GPU, bf16, graph capture, ``torch.func``) they run as PyTorch ops, the forward with the plain expression's ops in its
order. The two paths agree to fp32 rounding (a few ulp); one path gives the same bits with and
without autograd.
"""

from __future__ import annotations

from typing import Any

import torch

from vit5.ops import native
from vit5.ops.recorded import recorded_vjp, recording

__all__ = ["rms_norm", "rms_norm_reference"]


def _normalise(u: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u * r, r)`` with ``r = rsqrt(mean(u^2, -1) + eps)`` (``[..., 1]``)."""
    r = torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps)
    return u * r, r


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`rms_norm` as plain PyTorch ops through autograd (the formula, in its op order)."""
    return (weight * _normalise(x.float(), eps)[0]).to(x.dtype)


def _recorded_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The backward under ``create_graph``: the reference's gradient, recorded."""
    x, weight = ctx.saved_tensors[:2]
    grads = recorded_vjp(
        lambda a, w: rms_norm_reference(a, w, ctx.eps), (x, weight), grad, ctx.needs_input_grad[:2]
    )
    return *grads, None


class _RMSNorm(torch.autograd.Function):
    # setup_context form + a generated vmap rule: torch.func (grad, vmap, functional_call) works,
    # as it does through the plain expression.
    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        n, r = _normalise(x.float(), eps)
        return (weight * n).to(x.dtype), r  # r: [..., 1], kept for the backward pass

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight, _ = inputs
        r = output[1]
        ctx.mark_non_differentiable(r)
        ctx.save_for_backward(x, weight, r)
        ctx.eps = inputs[2]

    @staticmethod
    def backward(
        ctx: Any, grad: torch.Tensor, _grad_r: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        if recording():  # create_graph: r's own derivative must be recorded too
            return _recorded_backward(ctx, grad)
        x, weight, r = ctx.saved_tensors
        u, g = x.float(), grad.float()
        n = u * r  # (..., D) the normalised input, recomputed rather than kept
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = (g * n).reshape(-1, n.shape[-1]).sum(dim=0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            gw = g * weight  # (..., D)
            mean = (gw * n).mean(dim=-1, keepdim=True)  # (..., 1)
            grad_x = (gw - n * mean).mul_(r).to(x.dtype)
        return grad_x, grad_weight, None


def _forward_kernel(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused forward: ``(y, r)``, ``y`` contiguous, ``r`` ``[..., 1]``."""
    y = torch.empty(x.shape, dtype=x.dtype)
    r = torch.empty((*x.shape[:-1], 1), dtype=torch.float32)
    rows, d = x.numel() // x.shape[-1], x.shape[-1]
    native.run(
        "vit5_rms_forward",
        x.data_ptr(), *native.row_blocks(x), weight.data_ptr(), y.data_ptr(), r.data_ptr(), rows, d, eps,
        native.threads(),
    )  # fmt: skip
    return y, r


class _RMSNormKernel(torch.autograd.Function):
    """:class:`_RMSNorm` with both passes in the fused C kernels (fp32 CPU only)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, r = _forward_kernel(x, weight, eps)
        ctx.save_for_backward(x, weight, r)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if recording():
            return _recorded_backward(ctx, grad)
        x, weight, r = ctx.saved_tensors
        grad = grad.contiguous().float()
        need_x, need_w = ctx.needs_input_grad[:2]
        grad_x = torch.empty(x.shape, dtype=x.dtype) if need_x else None
        grad_weight = torch.empty_like(weight) if need_w else None
        status = native.run(
            "vit5_rms_backward",
            x.data_ptr(),
            *native.row_blocks(x),
            weight.data_ptr(),
            r.data_ptr(),
            grad.data_ptr(),
            grad_x.data_ptr() if need_x else None,
            grad_weight.data_ptr() if need_w else None,
            x.numel() // x.shape[-1],
            x.shape[-1],
            native.threads(),
        )
        if status != 0:
            raise MemoryError("rms_norm backward: the fused kernel could not allocate its scratch memory")
        return grad_x, grad_weight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2, -1) + eps)``, statistics in fp32, result in ``x.dtype``.

    Differentiable in ``x`` and ``weight`` (``[D]``) through the closed-form backward of the
    module doc; fused C kernels on eager CPU fp32 tensors, PyTorch ops otherwise.
    """
    if x.numel() > 0 and weight.shape == x.shape[-1:] and native.usable(weight, strided=(x,)):
        if torch.is_grad_enabled():
            return _RMSNormKernel.apply(x, weight, eps)
        return _forward_kernel(x, weight, eps)[0]
    return _RMSNorm.apply(x, weight, eps)[0]
