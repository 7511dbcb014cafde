"""Traceable long convolutions for graph capture (``torch.compile``, ``torch.export``, ONNX, FX).

The eager paths of ``CKConvND`` use custom autograd functions, in-place accumulation and caches
keyed on data pointers; a captured graph can use none of them. These two functions are the same
convolutions written with plain, differentiable tensor ops only (no Python branch on values):

* :func:`traced_dense_conv` — the dense ``[C, T, T]`` operator of :mod:`vit5.ops.denseconv`
  (``index_select`` of the kernel) applied as one batched matrix product (small grids);
* :func:`traced_fft_conv` — ``rfftn`` of signal and kernel, their product in real arithmetic on
  ``view_as_real`` pairs, centring phase ramps as real ``cos`` / ``sin`` tables, ``irfftn`` and a
  crop (``torch.compile``, FX);
* :func:`traced_dft_conv` — the same with every transform a product with real DFT matrices
  (export: see :mod:`vit5.ops.longconv_plan` for why).

Which one runs is decided by :func:`vit5.ops.longconv_plan.plan_long_conv`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vit5.ops.denseconv import dense_conv_operator, dense_product_reference, fp32_region
from vit5.ops.fftplan import FFTConvPlan
from vit5.ops.spectral import complex_product, dft_matrix, phase_ramp

__all__ = ["traced_dense_conv", "traced_dft_conv", "traced_fft_conv"]


def traced_dense_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-boundary "same" convolution of channels-last ``x`` ``[B, *S, C]`` with ``kernel``
    ``[1, C, *K]`` through its dense operator: ``[B, *S, C]`` in ``x.dtype`` (no shortcut term).

    :func:`vit5.ops.denseconv.dense_product_reference` of :func:`vit5.ops.denseconv.dense_conv_operator`
    (fp32 products, even under autocast).
    """
    return dense_product_reference(x, dense_conv_operator(kernel, tuple(x.shape[1:-1])))


def _pairs(table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``[..., 2]`` (real, imaginary) pairs from two planes."""
    return torch.stack(table, dim=-1)


def _pair_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Product of ``[..., 2]`` (real, imaginary) pairs: :func:`vit5.ops.spectral.complex_product`."""
    return _pairs(complex_product(a[..., 0], a[..., 1], b[..., 0], b[..., 1]))


def traced_fft_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    plan: FFTConvPlan,
) -> torch.Tensor:
    """The convolution planned by ``plan`` (:func:`~vit5.ops.fftplan.plan_fft_conv`) of
    channels-first ``x`` ``[B, C, *S]`` with ``kernel`` ``[1|B, C, *K]``, in fp32: ``[B, C, *S]``.

    Same values as :func:`vit5.ops.fftplan.apply_spectrum` up to FFT round-off; every step is a
    plain tensor op.
    """
    sizes = plan.sizes
    dims = tuple(range(-len(sizes), 0))
    with fp32_region(x.device):
        x_f = torch.view_as_real(torch.fft.rfftn(x.float(), s=sizes, dim=dims))  # (B, C, *F', 2)
        k_f = torch.view_as_real(torch.fft.rfftn(kernel.float(), s=sizes, dim=dims))  # (1|B, C, *F', 2)
        ramp = phase_ramp(plan.shifts, sizes, x.device)  # (cos, sin) [*F'] or None
        if ramp is not None:
            k_f = _pair_product(k_f, _pairs(ramp))
        y_f = torch.view_as_complex(_pair_product(x_f, k_f).contiguous())  # (B, C, *F')
        y = torch.fft.irfftn(y_f, s=sizes, dim=dims)  # (B, C, *F)
    index = (Ellipsis, *(slice(s, s + n) for s, n in zip(plan.starts, plan.signal)))
    return y[index]  # (B, C, *S)


def _dft_pair(
    n_in: int, size: int, inverse: bool, real_axis: bool, start: int, n_out: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(re, im)`` fp32 matrices of one axis' DFT: :func:`vit5.ops.spectral.dft_matrix`.

    Forward (``inverse=False``): its transpose ``[n_in, F']`` for the input positions
    ``t < n_in``. Inverse: ``[F', n_out]`` for the kept outputs ``t = start .. start + n_out - 1``.
    """
    if inverse:
        positions = torch.arange(start, start + n_out, device=device, dtype=torch.int64)
        re, im = dft_matrix(size, positions, real_axis, inverse=True)  # (F', n_out)
        return re.float(), im.float()
    re, im = dft_matrix(size, torch.arange(n_in, device=device, dtype=torch.int64), real_axis)  # (F', n_in)
    return re.t().contiguous().float(), im.t().contiguous().float()


def _along(x: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """``x`` with its ``axis`` contracted against ``matrix`` ``[n, m]`` (the axis becomes ``m``)."""
    return torch.matmul(x.movedim(axis, -1), matrix).movedim(-1, axis)


def _dft_forward(x: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``rfftn`` of real ``x`` ``[..., *A]`` at ``sizes`` (zero padded) as ``(re, im)``: DFT matrices."""
    data_dim = len(sizes)
    axes = list(range(x.ndim - data_dim, x.ndim))
    last = axes[-1]
    c, s = _dft_pair(x.shape[last], sizes[-1], False, True, 0, 0, x.device)
    re, im = _along(x, last, c), _along(x, last, s)
    for axis, size in zip(axes[:-1], sizes[:-1]):
        c, s = _dft_pair(x.shape[axis], size, False, False, 0, 0, x.device)
        re, im = (
            _along(re, axis, c) - _along(im, axis, s),
            _along(re, axis, s) + _along(im, axis, c),
        )
    return re, im


def _dft_inverse(
    re: torch.Tensor, im: torch.Tensor, sizes: Sequence[int], starts: Sequence[int], lengths: Sequence[int]
) -> torch.Tensor:
    """The real window ``[..., *lengths]`` at ``starts`` of ``irfftn((re, im), sizes)``."""
    data_dim = len(sizes)
    axes = list(range(re.ndim - data_dim, re.ndim))
    for axis, size, start, n in zip(axes[:-1], sizes[:-1], starts[:-1], lengths[:-1]):
        c, s = _dft_pair(0, size, True, False, start, n, re.device)
        re, im = (
            _along(re, axis, c) - _along(im, axis, s),
            _along(re, axis, s) + _along(im, axis, c),
        )
    c, s = _dft_pair(0, sizes[-1], True, True, starts[-1], lengths[-1], re.device)
    return _along(re, axes[-1], c) - _along(im, axes[-1], s)


def traced_dft_conv(x: torch.Tensor, kernel: torch.Tensor, plan: FFTConvPlan) -> torch.Tensor:
    """:func:`traced_fft_conv` with every transform a product with real DFT matrices (export).

    Per axis the transform is one ``matmul`` with ``[N, F']`` cosine and sine tables; zero padding
    and the crop are folded into the tables (only the ``N`` input and kept output positions get
    rows / columns), so the graph has no pads, slices or complex numbers, only ``MatMul``, ``Mul``,
    ``Add``, ``Sub`` and ``Transpose``, which every runtime executes fast. ``x`` ``[B, C, *S]``,
    ``kernel`` ``[1|B, C, *K]``; returns fp32 ``[B, C, *S]``.
    """
    sizes = plan.sizes
    with fp32_region(x.device):
        x_re, x_im = _dft_forward(x.float(), sizes)  # (B, C, *F') each
        k_re, k_im = _dft_forward(kernel.float(), sizes)  # (1|B, C, *F')
        ramp = phase_ramp(plan.shifts, sizes, x.device)  # (cos, sin) [*F'] or None
        if ramp is not None:
            k_re, k_im = complex_product(k_re, k_im, *ramp)
        y_re, y_im = complex_product(x_re, x_im, k_re, k_im)
        return _dft_inverse(y_re, y_im, sizes, plan.starts, plan.signal)  # (B, C, *S)
