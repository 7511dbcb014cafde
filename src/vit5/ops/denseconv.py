"""Small-grid depthwise convolutions as batched matrix products (an alternative to FFTs).

For a signal of ``T = prod(S)`` positions the zero-boundary "same" convolution of
:func:`vit5.ops.fftconv.fft_conv_zero` is, per channel, a ``T x T`` matrix
``M[c, i, j] = kernel[c, i - j + K // 2]`` (per axis; zero where the tap is out of range). For
small grids (ViT-5-S at 224 px: ``T = 196``) one batched GEMM with a cached ``M`` beats the three
FFTs and the spectral products, and it sums in plain fp32 without transform round-off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["apply_dense_operator", "dense_conv_operator", "dense_operator_bytes"]


def dense_operator_bytes(signal: Sequence[int], channels: int) -> int:
    """Size in bytes of the fp32 operator :func:`dense_conv_operator` builds."""
    positions = 1
    for n in signal:
        positions *= n
    return 4 * channels * positions * positions


def dense_conv_operator(kernel: torch.Tensor, signal: Sequence[int]) -> torch.Tensor:
    """``[C, T, T]`` fp32 matrices of the zero-boundary "same" convolution with ``kernel``.

    Args:
        kernel: ``[1, C, *K]`` kernel (channels first), ``K_a <= 2 S_a - 1``.
        signal: Spatial size ``S`` (``T = prod(S)``).

    Returns:
        ``M`` with ``y[b, i, c] = sum_j M[c, i, j] x[b, j, c]`` (row-major flattened positions).
    """
    taps = kernel.shape[2:]
    device = kernel.device
    index, valid = [], torch.ones((), dtype=torch.bool, device=device)
    grids = torch.meshgrid(*(torch.arange(n, device=device) for n in signal), indexing="ij")
    flat = [g.reshape(-1) for g in grids]  # per axis: (T,) coordinate of each position
    for coord, k in zip(flat, taps):
        tap = coord[:, None] - coord[None, :] + k // 2  # (T_out, T_in)
        valid = valid & (tap >= 0) & (tap < k)
        index.append(tap.clamp(0, k - 1))
    matrix = kernel[0].float()[(slice(None), *index)]  # (C, T, T)
    return matrix * valid


def apply_dense_operator(x: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """Convolve channels-last ``x`` ``[B, *S, C]`` with ``M`` from :func:`dense_conv_operator`.

    Returns:
        ``[B, *S, C]`` channels-last, in ``x.dtype`` (computed in fp32).
    """
    batch, channels = x.shape[0], x.shape[-1]
    z = x.float().reshape(batch, -1, channels).permute(2, 0, 1)  # (C, B, T)
    y = torch.bmm(z, operator.transpose(1, 2))  # (C, B, T)
    return y.permute(1, 2, 0).reshape(x.shape).to(x.dtype)  # (B, *S, C)
