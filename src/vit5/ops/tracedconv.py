"""Traceable long convolutions for graph capture (``torch.compile``, ``torch.export``, ONNX, FX).

The eager paths of ``CKConvND`` use custom autograd functions, in-place accumulation and caches
keyed on data pointers; a captured graph can use none of them. These two functions are the same
convolutions written with plain, differentiable tensor ops only (no Python branch on values):

* :func:`traced_dense_conv` — the dense ``[C, T, T]`` operator of :mod:`vit5.ops.denseconv`
  (``index_select`` of the kernel) applied as one batched matrix product (small grids);
* :func:`traced_fft_conv` — ``rfftn`` of signal and kernel, their product in real arithmetic on
  ``view_as_real`` pairs (ONNX has no complex type; the exporter lowers the FFTs to ``DFT`` on a
  trailing real/imaginary axis), centring phase ramps as real ``cos`` / ``sin`` tables, ``irfftn``
  and a crop. ``pow2=True`` rounds the FFT size of every zero-padded axis up to a power of two
  (see :mod:`vit5.ops.longconv_plan` for why).

Which one runs is decided by :func:`vit5.ops.longconv_plan.plan_long_conv`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch

from vit5.ops.denseconv import dense_conv_operator
from vit5.ops.fftplan import FFTConvPlan

__all__ = ["pow2_sizes", "traced_dense_conv", "traced_fft_conv"]


def pow2_sizes(plan: FFTConvPlan, periodic: Sequence[bool]) -> tuple[int, ...]:
    """``plan.sizes`` rounded up to powers of two on the non-periodic axes (no wrap-around: a zero
    axis only needs at least ``plan.sizes``); periodic axes keep their period ``N``."""
    return tuple(n if p else 1 << (n - 1).bit_length() for n, p in zip(plan.sizes, periodic))


def _fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off for the products (fp32, as the eager paths); no context when autocast is off
    anyway, so an exported graph holds plain ops rather than an autocast region."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def traced_dense_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-boundary "same" convolution of channels-last ``x`` ``[B, *S, C]`` with ``kernel``
    ``[1, C, *K]`` through its dense operator: ``[B, *S, C]`` in ``x.dtype`` (no shortcut term).

    The product runs in fp32 (as the eager dense path does), even under autocast.
    """
    signal = tuple(x.shape[1:-1])
    operator = dense_conv_operator(kernel, signal)  # (C, T, T)
    with _fp32(x.device):
        z = x.float().reshape(x.shape[0], -1, x.shape[-1]).permute(2, 0, 1)  # (C, B, T)
        y = torch.bmm(z, operator.transpose(1, 2))  # (C, B, T)
    return y.permute(1, 2, 0).reshape(x.shape).to(x.dtype)  # (B, *S, C)


def _phase_ramp(plan: FFTConvPlan, sizes: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """Real ``[..., 2]`` table ``(cos, sin)`` of ``exp(-2 pi i sum_a s_a f_a)`` on the rfftn grid
    (``s_a`` = the circular centring shift of axis ``a``), or ``None`` without shifts."""
    if not any(plan.shifts):
        return None
    data_dim = len(sizes)
    phase = torch.zeros((1,) * data_dim, device=device)
    for axis, (shift, size) in enumerate(zip(plan.shifts, sizes)):
        if not shift:
            continue
        last = axis == data_dim - 1
        length = size // 2 + 1 if last else size
        # integer index times shift, reduced modulo the size before the fp32 angle: exact phases
        index = torch.arange(length, device=device)
        if not last:  # fftfreq order: 0, 1, ..., then negative frequencies
            index = torch.where(index < (size + 1) // 2, index, index - size)
        turns = torch.remainder(index * shift, size).float() / size  # (length,)
        shape = [1] * data_dim
        shape[axis] = length
        phase = phase + turns.view(shape)
    angle = (-2.0 * math.pi) * phase
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (*F', 2)


def _complex_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Product of ``[..., 2]`` (real, imaginary) pairs, in real arithmetic."""
    ar, ai = a[..., 0], a[..., 1]
    br, bi = b[..., 0], b[..., 1]
    return torch.stack([ar * br - ai * bi, ar * bi + ai * br], dim=-1)


def traced_fft_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    plan: FFTConvPlan,
    periodic: Sequence[bool],
    pow2: bool = False,
) -> torch.Tensor:
    """The convolution planned by ``plan`` (:func:`~vit5.ops.fftplan.plan_fft_conv`) of
    channels-first ``x`` ``[B, C, *S]`` with ``kernel`` ``[1|B, C, *K]``, in fp32: ``[B, C, *S]``.

    Same values as :func:`vit5.ops.fftplan.apply_spectrum` up to FFT round-off (other sizes with
    ``pow2``); every step is a plain tensor op.
    """
    sizes = pow2_sizes(plan, periodic) if pow2 else plan.sizes
    dims = tuple(range(-len(sizes), 0))
    with _fp32(x.device):
        x_f = torch.view_as_real(torch.fft.rfftn(x.float(), s=sizes, dim=dims))  # (B, C, *F', 2)
        k_f = torch.view_as_real(torch.fft.rfftn(kernel.float(), s=sizes, dim=dims))  # (1|B, C, *F', 2)
        ramp = _phase_ramp(plan, sizes, x.device)
        if ramp is not None:
            k_f = _complex_product(k_f, ramp)
        y_f = torch.view_as_complex(_complex_product(x_f, k_f).contiguous())  # (B, C, *F')
        y = torch.fft.irfftn(y_f, s=sizes, dim=dims)  # (B, C, *F)
    index = (Ellipsis, *(slice(s, s + n) for s, n in zip(plan.starts, plan.signal)))
    return y[index]  # (B, C, *S)
