"""Small-grid depthwise convolutions as batched matrix products (an alternative to FFTs).

For a signal of ``T = prod(S)`` positions the zero-boundary "same" convolution of
:func:`vit5.ops.fftconv.fft_conv_zero` is, per channel, a ``T x T`` matrix
``M[c, i, j] = kernel[c, i - j + K // 2]`` (per axis; zero where the tap is out of range). For
small grids (ViT-5-S at 224 px: ``T = 196``) one batched GEMM with a cached ``M`` beats the three
FFTs and the spectral products, and it sums in plain fp32 without transform round-off.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from vit5.ops.recorded import recorded_vjp, recording

__all__ = ["apply_dense_operator", "dense_conv_operator", "dense_operator_bytes", "dense_operator_product"]


def dense_operator_bytes(signal: Sequence[int], channels: int) -> int:
    """Size in bytes of the fp32 operator :func:`dense_conv_operator` builds."""
    positions = 1
    for n in signal:
        positions *= n
    return 4 * channels * positions * positions


def dense_conv_operator(kernel: torch.Tensor, signal: Sequence[int]) -> torch.Tensor:
    """``[C, T, T]`` fp32 matrices of the zero-boundary "same" convolution with ``kernel``.

    Built as one ``index_select`` of the flattened kernel (with an appended zero for taps that fall
    outside it), so the backward pass is a single ``index_add`` rather than an accumulating
    scatter over ``[C, T, T]`` indices.

    Args:
        kernel: ``[1, C, *K]`` kernel (channels first), ``K_a <= 2 S_a - 1``.
        signal: Spatial size ``S`` (``T = prod(S)``).

    Returns:
        ``M`` with ``y[b, i, c] = sum_j M[c, i, j] x[b, j, c]`` (row-major flattened positions).
    """
    taps = kernel.shape[2:]
    device = kernel.device
    grids = torch.meshgrid(*(torch.arange(n, device=device) for n in signal), indexing="ij")
    valid = torch.ones((), dtype=torch.bool, device=device)
    flat_tap = torch.zeros((), dtype=torch.long, device=device)
    for grid, k in zip(grids, taps):
        coord = grid.reshape(-1)  # (T,) coordinate of each position along this axis
        tap = coord[:, None] - coord[None, :] + k // 2  # (T_out, T_in)
        valid = valid & (tap >= 0) & (tap < k)
        flat_tap = flat_tap * k + tap.clamp(0, k - 1)  # row-major index into the kernel taps
    num_taps = math.prod(taps)
    flat_tap = torch.where(valid, flat_tap, num_taps).reshape(-1)  # out-of-range taps -> the zero
    weights = kernel[0].float().reshape(kernel.shape[1], num_taps)  # (C, K)
    weights = torch.cat([weights, weights.new_zeros(weights.shape[0], 1)], dim=1)  # (C, K + 1)
    return weights.index_select(1, flat_tap).reshape(kernel.shape[1], *valid.shape)  # (C, T, T)


def _channels_first(t: torch.Tensor) -> torch.Tensor:
    """Channels-last ``[B, *S, C]`` as a contiguous fp32 ``[C, B, T]`` copy."""
    return t.float().reshape(t.shape[0], -1, t.shape[-1]).permute(2, 0, 1).contiguous()


def dense_operator_product(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """``M x`` for channels-last ``x`` ``[B, *S, C]``, left channels-first: ``[C, B, T]`` fp32.

    The product :func:`apply_dense_operator` computes (the same bits), before the copy back to
    channels-last; callers that add it into another tensor skip that copy. Not differentiable.
    """
    with torch.autocast(x.device.type, enabled=False):
        return torch.bmm(_channels_first(x), operator.transpose(1, 2))  # (C, B, T)


class _ApplyDense(torch.autograd.Function):
    """``y = M x`` per channel with explicit channels-first copies, so that every batched GEMM
    (forward and both gradients) reads contiguous or transposed-contiguous matrices: CPU ``bmm``
    otherwise copies each strided slice separately (hundreds of small copies per call)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            z = _channels_first(x)  # (C, B, T)
            y = torch.bmm(z, operator.transpose(1, 2))  # (C, B, T)
        ctx.save_for_backward(z, operator, x)
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return y.permute(1, 2, 0).reshape(x.shape).to(x.dtype)  # (B, *S, C)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        z, operator, x = ctx.saved_tensors
        if recording():  # create_graph: z was copied without autograd; differentiate the formula
            return recorded_vjp(dense_product_reference, (x, operator), grad, ctx.needs_input_grad)
        grad_x = grad_operator = None
        with torch.autocast(grad.device.type, enabled=False):
            g = _channels_first(grad)  # (C, B, T)
            if ctx.needs_input_grad[0]:
                grad_x = torch.bmm(g, operator).permute(1, 2, 0).reshape(ctx.shape).to(ctx.dtype)
            if ctx.needs_input_grad[1]:
                grad_operator = torch.bmm(g.transpose(1, 2), z)  # (C, T, T)
        return grad_x, grad_operator


def fp32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off for fp32 products; no context when autocast is off anyway, so a traced graph
    holds plain ops rather than an autocast region."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def dense_product_reference(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """:func:`apply_dense_operator` as plain differentiable PyTorch ops (fp32 products): the one
    definition, also the traced path's (:func:`vit5.ops.tracedconv.traced_dense_conv`)."""
    with fp32_region(x.device):
        z = x.float().reshape(x.shape[0], -1, x.shape[-1]).permute(2, 0, 1)  # (C, B, T)
        y = torch.bmm(z, operator.float().transpose(1, 2))  # (C, B, T)
    return y.permute(1, 2, 0).reshape(x.shape).to(x.dtype)  # (B, *S, C)


def apply_dense_operator(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """Convolve channels-last ``x`` ``[B, *S, C]`` with ``M`` from :func:`dense_conv_operator`.

    Differentiable in ``x`` and ``M``. The products run in fp32 even under ``torch.autocast``.

    Returns:
        ``[B, *S, C]`` channels-last, in ``x.dtype``.
    """
    return _ApplyDense.apply(x, operator)
