"""RMS normalisation with a hand-written backward pass, fused into one kernel on CPUs.

Autograd through ``w * (u * rsqrt(mean(u^2) + eps))`` saves and walks six ops; its backward makes
about nine full-size passes (two products per multiplication, the square's derivative, the
broadcast of the mean, the sum of two input gradients). :func:`rms_norm` computes the backward
from the closed form, with ``n = u r`` and ``r = rsqrt(mean(u^2) + eps)`` per row:

* ``grad_weight = sum_rows(g * n)``;
* ``grad_u = r * (g w - n * mean(g w * n))``.

On eager CPU fp32 tensors (:func:`vit5.ops.route.use_kernel`) forward and backward each run as one
fused ``vit5::rms_norm`` operator (one read and one write of the rows; the rows may be spread in two levels, as the
per-head q and k of attention's packed projection are: :func:`vit5.ops.native.row_blocks`);
elsewhere (GPU, bf16, graph capture, ``torch.func``) they run as PyTorch ops, the forward with the plain expression's ops in its
order. The two paths agree to fp32 rounding (a few ulp); one path gives the same bits with and
without autograd.
"""

from __future__ import annotations

from typing import Any

import torch

from vit5.ops import kernels
from vit5.ops.recorded import recorded_vjp, recording
from vit5.ops.route import closed_form_backward, use_kernel

__all__ = ["rms_inverse", "rms_norm", "rms_norm_reference"]


def rms_inverse(u: torch.Tensor, eps: float, dim: int = -1) -> torch.Tensor:
    """``r = rsqrt(mean(u^2, dim) + eps)`` (kept dimension): the one definition of the RMS
    statistic, shared by :func:`rms_norm` (every path) and ``RMSNormChannelFirst``."""
    return torch.rsqrt(torch.pow(u, 2).mean(dim=dim, keepdim=True) + eps)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * (u * r)`` with ``u = x`` in fp32 and ``r`` = :func:`rms_inverse`, cast to
    ``x.dtype``: the formula of every RMSNorm path, as plain PyTorch ops (the kernels' reference)."""
    u = x.float()
    return (weight * (u * rms_inverse(u, eps))).to(x.dtype)


def _normalise(u: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u * r, r)`` with ``r`` = :func:`rms_inverse` (``[..., 1]``)."""
    r = rms_inverse(u, eps)
    return u * r, r


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


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * x / sqrt(mean(x^2, -1) + eps)``, statistics in fp32, result in ``x.dtype``.

    Differentiable in ``x`` and ``weight`` (``[D]``). Which implementation runs is
    :mod:`vit5.ops.route`'s choice: the fused ``vit5::`` kernels (eager CPU fp32), the closed-form backward
    of the module doc (:func:`vit5.ops.route.closed_form_backward`), or the plain expression
    (no autograd, graph capture). All three give the same forward bits but the kernel's (fp32
    rounding, a few ulp).
    """
    if use_kernel("rms_norm", weight, strided=(x,), layout_ok=x.numel() > 0 and weight.shape == x.shape[-1:]):
        return kernels.rms_norm(x, weight, eps)[0]  # vit5::rms_norm (with autograd when enabled)
    if closed_form_backward():
        return _RMSNorm.apply(x, weight, eps)[0]
    return rms_norm_reference(x, weight, eps)
