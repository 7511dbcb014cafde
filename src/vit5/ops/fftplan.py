"""Planned FFT convolutions: FFT sizes, crop and centring, kernel spectra, and their product.

The building blocks of :mod:`vit5.ops.fftconv`: :func:`plan_fft_conv` decides, from the signal
size, the kernel taps and the per-axis boundary, the FFT size, crop start and centring shift of
every axis; :func:`kernel_spectrum` transforms a ``[1|B, C, *K]`` kernel once (centring phase ramp
included); :func:`apply_spectrum` convolves a ``[B, C, *S]`` signal with it. Callers that convolve
many inputs with one kernel (``CKConvND`` in eval mode) keep the spectrum and call
:func:`apply_spectrum` alone. The transforms run in fp32 (real FFTs), and the spectral product
rounds the same way whatever the channel chunking (see :func:`_cmul`), so the chunked no-grad
pass gives the bits of the training forward (eval and training forwards stay bit-equal). Other
batch sizes are other calls of the FFT library: equal to fp32 rounding.

For 2-D zero-padded channels-last fp32 input on a CPU the planner runs the fused kernels of
:mod:`vit5.ops.fftnative` instead. Elsewhere, two choices make :func:`apply_spectrum` fast on
CPUs (timings: ``benchmarks/results/2026-12-07-ops-notes.md``):

* Without autograd it works through the channels a chunk at a time (on CPUs; about
  :data:`CHANNEL_CHUNK_BYTES` of spectrum per chunk, see :func:`channel_chunk`). A chunk's
  spectra stay in cache from the forward transform through the product to the inverse
  transform, and its temporaries re-use freed heap blocks instead of faulting in freshly mapped
  pages (the same bits).
* On 2-D grids every transform runs along the contiguous last axis: ``rfft`` along the width,
  one transpose, ``fft`` along the height, and the reverse on the way back, so the spectra (and
  :func:`kernel_spectrum`) are laid out ``[..., F_w // 2 + 1, F_h]``. The crop happens between the
  two inverse transforms, so the width transform only runs on the rows that are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vit5.ops.spectral import phase_ramp

__all__ = [
    "CHANNEL_CHUNK",
    "CHANNEL_CHUNK_BYTES",
    "FFTConvPlan",
    "apply_spectrum",
    "channel_chunk",
    "channel_slices",
    "chunk_slices",
    "forward_transform",
    "inverse_transform",
    "kernel_spectrum",
    "plan_fft_conv",
]

#: Bytes of complex64 spectrum (all samples of the batch) in one channel chunk on CPUs, for
#: :func:`apply_spectrum` without autograd and the backward of the low-memory FFT convolution.
CHANNEL_CHUNK_BYTES = 2 * 2**20
#: A fixed number of channels per chunk instead of :data:`CHANNEL_CHUNK_BYTES` (``None``: the byte
#: budget); for tests and tuning.
CHANNEL_CHUNK: int | None = None


def chunk_slices(count: int, step: int) -> list[slice]:
    """``range(count)`` in equal consecutive slices (sizes differ by at most 1) of at most
    ``step`` items: the one chunking policy of the long convolutions (channel chunks here, batch
    chunks in :mod:`vit5.ops.dftconv`; each with its byte budget)."""
    pieces = -(-count // max(step, 1))
    bounds = [count * i // pieces for i in range(pieces + 1)] if pieces else [0, 0]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def channel_slices(x: torch.Tensor, plan: FFTConvPlan) -> list[slice]:
    """The channel chunks of ``x`` ``[B, C, ...]`` for ``plan``: :func:`chunk_slices` of at most
    :func:`channel_chunk` channels."""
    return chunk_slices(x.shape[1], channel_chunk(x, plan))


def channel_chunk(x: torch.Tensor, plan: FFTConvPlan) -> int:
    """How many channels of ``x`` ``[B, C, ...]`` to transform together for ``plan``: on CPUs
    :data:`CHANNEL_CHUNK`, or as many as fit :data:`CHANNEL_CHUNK_BYTES` of spectrum (at least
    one); on other devices every channel (fewer, larger kernel launches)."""
    if x.device.type != "cpu":
        return max(x.shape[1], 1)
    if CHANNEL_CHUNK is not None:
        return CHANNEL_CHUNK
    spectrum = 8 * x.shape[0] * math.prod(plan.sizes[:-1]) * (plan.sizes[-1] // 2 + 1)  # per channel
    return max(1, CHANNEL_CHUNK_BYTES // max(spectrum, 1))


def _crop(y: torch.Tensor, starts: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
    index = (Ellipsis, *(slice(start, start + size) for start, size in zip(starts, sizes)))
    return y[index]


def _split(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(re(b) + 0i, 0 + i im(b))``: the two halves :func:`_cmul` multiplies by."""
    zero = torch.zeros_like(b.real)
    return torch.complex(b.real, zero), torch.complex(zero, b.imag)


def _cmul(a: torch.Tensor, b: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Complex product ``a * b`` with every real product and sum rounded once (broadcasting).

    :func:`vit5.ops.spectral.complex_product` on complex tensors (equal to fp32 rounding). ATen's
    vectorised complex multiply rounds differently from its scalar tail loop (which may fuse a
    multiply-add), so ``a * b`` would depend on how many elements a call processes (batch size,
    channel chunk, thread split). A complex factor with a zero real or imaginary part has
    one exact-zero product per component, so ``a * (re b)`` and ``a * (i im b)`` are rounded
    the same way by every code path; their sum is ``(ar br - ai bi) + i (ai br + ar bi)`` with
    each product and the sum rounded once — the same bits as the four real products. Three
    vectorised passes instead of seven strided ones. ``b`` may be given pre-split (:func:`_split`).
    """
    b_re, b_im = _split(b) if isinstance(b, torch.Tensor) else b
    out = a * b_re
    return out.add_(a * b_im)


@dataclass(frozen=True)
class FFTConvPlan:
    """FFT sizes, crop and centring of one convolution (from :func:`plan_fft_conv`).

    Attributes:
        signal: Spatial size ``S`` of the input (and output) per axis.
        taps: Kernel taps ``K`` per axis.
        sizes: FFT size per axis.
        starts: Crop start per axis (``K // 2`` zero, ``0`` causal and circular).
        shifts: Phase-ramp shift per axis (``-((K - 1) // 2)`` circular, else ``0``).
        summed_ramp: All axes circular (the ramp, :func:`vit5.ops.spectral.phase_ramp`, sums
            the phases of every shifted axis in either case).
    """

    signal: tuple[int, ...]
    taps: tuple[int, ...]
    sizes: tuple[int, ...]
    starts: tuple[int, ...]
    shifts: tuple[int, ...]
    summed_ramp: bool

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(range(-len(self.sizes), 0))


def plan_fft_conv(
    signal: Sequence[int], taps: Sequence[int], periodic: Sequence[bool], causal: bool = False
) -> FFTConvPlan:
    """Plan a convolution of an ``S``-sized signal with a ``K``-tap kernel (see the module doc).

    Raises:
        ValueError: too many taps for the mode on some axis.
    """
    signal, taps, periodic = tuple(signal), tuple(taps), tuple(bool(p) for p in periodic)
    if causal:
        what, limits = "causal", [n for n in signal]
    elif all(periodic):
        what, limits = "circular padding", [n for n in signal]
    elif not any(periodic):
        what, limits = "zero padding", [2 * n - 1 for n in signal]
    else:
        what, limits = "mixed padding", [n if p else 2 * n - 1 for n, p in zip(signal, periodic)]
    for axis, (k, n, limit) in enumerate(zip(taps, signal, limits)):
        if k > limit:
            raise ValueError(
                f"{what}: kernel axis {axis} has {k} taps, at most {limit} allowed for an input of size {n} "
                f"(taps {taps}, signal {signal})"
            )
    if causal:
        sizes = tuple(min(n + k, 2 * n) for n, k in zip(signal, taps))
        starts, shifts = (0,) * len(signal), (0,) * len(signal)
    else:
        sizes = tuple(n if p else min(n + (k + 1) // 2, 2 * n) for n, k, p in zip(signal, taps, periodic))
        starts = tuple(0 if p else k // 2 for k, p in zip(taps, periodic))
        shifts = tuple(-((k - 1) // 2) if p else 0 for k, p in zip(taps, periodic))
    return FFTConvPlan(signal, taps, sizes, starts, shifts, summed_ramp=all(periodic) and not causal)


def kernel_spectrum(kernel: torch.Tensor, plan: FFTConvPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's fp32 spectrum (centring phase ramp included), split for :func:`_cmul`.

    Args:
        kernel: ``[1|B, C, *K]`` kernel.
        plan: From :func:`plan_fft_conv`.

    Returns:
        ``(re + 0i, 0 + i im)``, each ``[1|B, C, *F']`` complex64 (``F'`` = rfftn grid; on 2-D
        grids the last two axes are swapped, ``[1|B, C, F_w // 2 + 1, F_h]``, the layout
        :func:`apply_spectrum` works in). Reusable for any input of the planned size (e.g. cached
        while the kernel does not change).
    """
    k_f = torch.fft.rfftn(kernel.float(), s=plan.sizes, dim=plan.dims)  # (1|B, C, *F')
    ramp = phase_ramp(plan.shifts, plan.sizes, kernel.device)  # on the rfftn grid, then the layout
    if ramp is not None:
        k_f = _cmul(k_f, torch.complex(*ramp))
    if len(plan.sizes) == 2:
        k_f = k_f.transpose(-1, -2).contiguous()  # (1|B, C, F_w', F_h)
    return _split(k_f)


def forward_transform(
    x: torch.Tensor, plan: FFTConvPlan, offsets: Sequence[int] | None = None
) -> torch.Tensor:
    """Spectrum of ``x`` ``[B, C, *A]`` placed at ``offsets`` (default 0) in a zero ``plan.sizes`` grid.

    fp32 complex, in the layout of :func:`kernel_spectrum` (on 2-D grids ``[B, C, F_w', F_h]``).
    """
    offsets = tuple(offsets) if offsets is not None else (0,) * len(plan.sizes)
    x = x.float()
    if len(plan.sizes) == 2:  # every transform along the contiguous last axis (see the module doc)
        (f_h, f_w), (o_h, o_w) = plan.sizes, offsets
        x_f = torch.fft.rfft(F.pad(x, (o_w, 0)) if o_w else x, n=f_w, dim=-1)  # (B, C, A_h, F_w')
        x_f = x_f.transpose(-1, -2)  # (B, C, F_w', A_h)
        return torch.fft.fft(F.pad(x_f, (o_h, 0)) if o_h else x_f, n=f_h, dim=-1)  # (B, C, F_w', F_h)
    if any(offsets):
        widths: list[int] = []
        for n, offset, size in zip(reversed(x.shape[2:]), reversed(offsets), reversed(plan.sizes)):
            widths += [offset, size - n - offset]
        x = F.pad(x, widths)
    return torch.fft.rfftn(x, s=plan.sizes, dim=plan.dims)  # (B, C, *F')


def inverse_transform(
    spectrum: torch.Tensor, plan: FFTConvPlan, starts: Sequence[int], sizes: Sequence[int]
) -> torch.Tensor:
    """The fp32 ``[B, C, *sizes]`` window at ``starts`` of the inverse of a :func:`forward_transform` layout.

    On 2-D grids the window's rows are cut between the two inverse transforms, so the width
    transform only runs on the rows that are kept. The result is a view.
    """
    if len(plan.sizes) == 2:
        f_w, (s_h, s_w), (n_h, n_w) = plan.sizes[1], starts, sizes
        y = torch.fft.ifft(spectrum, dim=-1)[..., s_h : s_h + n_h]  # (B, C, F_w', n_h)
        # contiguous: from a strided view MKL's c2r rounds differently for a single row batch
        y = torch.fft.irfft(y.transpose(-1, -2).contiguous(), n=f_w, dim=-1)  # (B, C, n_h, F_w)
        return y[..., s_w : s_w + n_w]  # (B, C, n_h, n_w)
    y = torch.fft.irfftn(spectrum, s=plan.sizes, dim=plan.dims)  # (B, C, *F)
    return _crop(y, starts, sizes)


def _convolve(
    x: torch.Tensor, spectrum: tuple[torch.Tensor, torch.Tensor], plan: FFTConvPlan
) -> torch.Tensor:
    """``x`` ``[B, C, *S]`` convolved with a :func:`kernel_spectrum`: fp32 ``[B, C, *S]`` (a view)."""
    product = _cmul(forward_transform(x, plan), spectrum)
    return inverse_transform(product, plan, plan.starts, plan.signal)


def apply_spectrum(
    x: torch.Tensor,
    spectrum: tuple[torch.Tensor, torch.Tensor],
    plan: FFTConvPlan,
    accumulate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolve ``x`` ``[B, C, *S]`` with a kernel given by its :func:`kernel_spectrum`.

    Args:
        x: ``[B, C, *S]`` signal (any strides).
        spectrum: From :func:`kernel_spectrum` for ``plan``.
        plan: From :func:`plan_fft_conv`.
        accumulate: Optional ``[B, C, *S]`` tensor (any strides, e.g. a channels-first view of a
            channels-last tensor) that the result is added to in place and that is returned:
            ``accumulate += y`` with ``y`` first rounded to ``accumulate.dtype``, the same bits as
            ``accumulate + y.to(accumulate.dtype)``. Not recorded by autograd.

    Returns:
        ``[B, C, *S]`` in ``x.dtype``, or ``accumulate``. Without autograd the channels are
        processed in :func:`channel_slices` (the same bits as all at once).
    """
    if accumulate is not None and accumulate.shape != x.shape:
        raise ValueError(
            f"accumulate must have the shape of x {tuple(x.shape)}, got {tuple(accumulate.shape)}"
        )
    recording = torch.is_grad_enabled() and (
        x.requires_grad or spectrum[0].requires_grad or spectrum[1].requires_grad
    )
    if recording:
        if accumulate is not None:
            raise ValueError(
                "apply_spectrum(accumulate=...) is not differentiable; call it under torch.no_grad()"
            )
        return _convolve(x, spectrum, plan).to(x.dtype)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device) if accumulate is None else accumulate
    for part in channel_slices(x, plan):
        y = _convolve(x[:, part], (spectrum[0][:, part], spectrum[1][:, part]), plan)
        if accumulate is None:
            out[:, part] = y
        else:
            out[:, part].add_(y.to(out.dtype))
    return out
