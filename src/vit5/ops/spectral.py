"""The spectral arithmetic of the long convolutions, one PyTorch definition of each piece.

Every path of a long convolution (eager ``torch.fft``, DFT matrices, the traced paths of compile
and export) and the kernels' reference tests build on these:

* :func:`complex_product` — ``a * b`` or ``a * conj(b)`` on real and imaginary planes, each real
  product and each sum rounded once (no fused multiply-add). :func:`vit5.ops.fftplan._cmul` is
  the same product on complex tensors; it and the C kernel ``vit5::complex_product_`` agree with
  it to fp32 rounding (``tests/ops/test_spectral.py``).
* :func:`dft_angles` — the phases ``2 pi (r c mod F) / F`` of DFT matrices, reduced modulo the
  transform size in integers and computed in fp64 (exact arguments).
* :func:`dft_matrix` — one axis' forward or inverse (cropped, Hermitian-weighted) DFT matrix as
  fp64 ``(re, im)`` tables ``[F', n]``: the one definition whose transposes and real-block
  layouts :mod:`vit5.ops.dftconv` and :mod:`vit5.ops.tracedconv` use (so their matrices are
  as exact as fp32 allows).
* :func:`phase_ramp` — the centring ramp ``exp(-2 pi i sum_a s_a f_a)`` of circular axes on the
  ``rfftn`` grid, as ``(cos, sin)`` tables with integer-reduced phases summed over the axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["complex_product", "dft_angles", "dft_matrix", "phase_ramp"]


def complex_product(
    a_re: torch.Tensor,
    a_im: torch.Tensor,
    b_re: torch.Tensor,
    b_im: torch.Tensor,
    conjugate: bool = False,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(re, im)`` of ``a * b`` (``a * conj(b)`` with ``conjugate``) from real planes (broadcasting).

    ``re = a_re b_re - a_im b_im`` and ``im = a_im b_re + a_re b_im`` (signs of the ``b_im`` terms
    flipped with ``conjugate``), each product and each sum rounded once. With ``out`` the planes
    are written there (they must not overlap the inputs); not differentiable then.
    """
    if out is None:
        if conjugate:
            return a_re * b_re + a_im * b_im, a_im * b_re - a_re * b_im
        return a_re * b_re - a_im * b_im, a_im * b_re + a_re * b_im
    re, im = out
    torch.mul(a_re, b_re, out=re)
    torch.mul(a_im, b_re, out=im)
    if conjugate:
        re.add_(a_im * b_im)
        im.sub_(a_re * b_im)
    else:
        re.sub_(a_im * b_im)
        im.add_(a_re * b_im)
    return re, im


def dft_angles(rows: torch.Tensor, cols: torch.Tensor, size: int) -> torch.Tensor:
    """``2 pi (rows[:, None] cols[None, :] mod size) / size`` in fp64 for int64 ``rows``, ``cols``
    (the product reduced in integers: exact phases)."""
    return (2 * math.pi / size) * torch.remainder(rows[:, None] * cols[None, :], size).double()


def dft_matrix(
    size: int, positions: torch.Tensor, real: bool, inverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(re, im)`` fp64 tables ``[F', n]`` of one axis' size-``size`` DFT at the int64 ``positions``.

    ``F' = size // 2 + 1`` frequencies ``f`` on the ``real`` axis (that of ``rfft``), else ``size``.
    Forward: ``e^{-2 pi i f t / F}`` for the input positions ``t`` (a zero padding to ``F`` is
    implicit: only the ``n`` given positions get columns), so ``rfft(x, F)[f] = sum_t W[f, t] x[t]``.
    Inverse: ``w_f e^{+2 pi i f t / F} / F`` for the kept outputs ``t`` (the crop is implicit), with
    ``w_f = 2`` on the real axis except at ``f = 0`` and ``f = F / 2`` (the Hermitian half, as
    ``irfft``: ``y[t] = sum_f re(V[f, t] Y[f])``), else ``w_f = 1``. Phases from :func:`dft_angles`;
    the tables are on ``positions.device``.
    """
    frequencies = torch.arange(size // 2 + 1 if real else size, device=positions.device, dtype=torch.int64)
    angle = dft_angles(frequencies, positions, size)  # (F', n)
    if not inverse:
        return torch.cos(angle), -torch.sin(angle)
    weight = torch.ones(frequencies.shape, device=positions.device, dtype=torch.float64)
    if real:
        weight = torch.where((frequencies == 0) | (2 * frequencies == size), weight, 2 * weight)
    weight = weight[:, None]
    return torch.cos(angle) * weight / size, torch.sin(angle) * weight / size


def phase_ramp(
    shifts: Sequence[int], sizes: Sequence[int], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(cos, sin)`` fp32 tables ``[*F']`` of ``exp(-2 pi i sum_a s_a f_a)`` on the ``rfftn`` grid of
    ``sizes`` (the last axis real, ``F // 2 + 1`` frequencies; the others in ``fftfreq`` order), or
    ``None`` when every shift is 0.

    Per axis the turns ``(f s mod F) / F`` are reduced in integers before the fp32 sum, so the
    phases are exact up to that sum's rounding.
    """
    if not any(shifts):
        return None
    data_dim = len(sizes)
    phase = torch.zeros((1,) * data_dim, device=device)
    for axis, (shift, size) in enumerate(zip(shifts, sizes)):
        if not shift:
            continue
        last = axis == data_dim - 1
        index = torch.arange(size // 2 + 1 if last else size, device=device)
        if not last:  # fftfreq order: 0, 1, ..., then negative frequencies
            index = torch.where(index < (size + 1) // 2, index, index - size)
        turns = torch.remainder(index * shift, size).float() / size  # (length,)
        shape = [1] * data_dim
        shape[axis] = -1
        phase = phase + turns.view(shape)
    angle = (-2.0 * math.pi) * phase
    return torch.cos(angle), torch.sin(angle)
