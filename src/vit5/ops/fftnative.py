"""The 2-D zero-padded FFT convolution as one fused CPU kernel (``vit5::fft_conv2d``).

On CPUs the FFT path of :mod:`vit5.ops.fftplan` runs a chain of PyTorch ops per channel chunk
(a transposing copy, padding, ``rfft``, transpose, ``fft``, a three-pass complex product,
``ifft``, ``irfft``, crop and an accumulating add), each a pass over memory and most of them
over small transforms that the FFT library runs far below the machine's speed. The kernel in
``csrc/fft.cpp`` does the whole convolution of one sample and 16 channels in a work buffer that
stays in the processor's cache: it reads the channels-last input in place, packs two groups of 8
channels as the real and imaginary parts of one complex transform (so a real convolution costs
half a complex one), skips the half of the first forward stage that would read padding zeros and
the half of the last inverse stage that would write cropped outputs, and writes ``y`` or
``shortcut * x + y`` channels-last. The kernel spectrum (:func:`spectrum`) is prepared once in
the order the kernel reads it (bit-reversed frequencies, crop shift and ``1 / (F_h F_w)`` folded
in, the two packed channels combined; one frequency of each pair ``(k, -k)``, as the kernel reads
the other as its conjugate), so CKConvND caches it in eval mode like the PyTorch spectrum.

It takes (:func:`supports`): 2-D grids, zero padding on both axes (no circular axis), one
kernel for the batch, channels-last fp32 CPU input with contiguous channels; where it runs is
:mod:`vit5.ops.route`'s choice (eager and ``torch.compile``). Its transforms are radix-2 (after the first stage, two stages
per pass over the buffer, the intermediate values in registers): it uses per axis the power of
two at least the plan's size and twice the signal (:func:`fused_sizes`; a larger size is still
alias-free): ViT-5 at 224 px (14 x 14 grid) runs 32-point transforms, at 512 and 1024 px (32 x
32 and 64 x 64 grids) 64- and 128-point transforms, the plan's own sizes. Everything else keeps the PyTorch ops.
Results agree with those to fp32 rounding (not bit for bit); they do not depend on the batch size, the channel
count or the thread count (every sample and channel group is computed alone), and training's
forward runs the same kernel as eval, so a model gives the same bits in both modes. The
low-memory training backward (:func:`vit5.ops.fftconv.fft_conv_zero_lowmem`) runs on it too:
the input's gradient is the output gradient convolved with the flipped kernel, the kernel's
gradient (:func:`kernel_gradient`, ``vit5_fft_conv2d_kernel_grad``) the batch sum of
``conj(X) G`` transformed back in full.

Timings: ``benchmarks/results/2026-12-07-ops-notes.md``.
"""

from __future__ import annotations

from typing import Any

import torch

from vit5.ops import kernels
from vit5.ops.fftplan import FFTConvPlan, apply_spectrum, kernel_spectrum, plan_fft_conv
from vit5.ops.recorded import recorded_vjp, recording

__all__ = [
    "GROUP",
    "MAX_SIZE",
    "convolve",
    "fused_conv",
    "fused_sizes",
    "kernel_gradient",
    "spectrum",
    "spectrum_entries",
    "supports",
    "takes_input",
]

#: Channels per work item (two packed groups of 8 vector lanes): the operators' own constant.
GROUP = kernels.GROUP
#: Largest transform size per axis (grids up to 512 x 512; the work buffer of a thread holds
#: ``F_h F_w`` elements of 64 bytes, 64 MiB at 1024 x 1024): the operators' own limit.
MAX_SIZE = kernels.MAX_FFT


def takes_input(x: torch.Tensor) -> bool:
    """Whether ``x`` ``[B, H, W, C]`` has the form the fused kernel reads: 4-D fp32 on a CPU with
    contiguous channels (batch, row and column strides are free). Whether the kernel *runs* is
    :mod:`vit5.ops.route`'s decision (capture mode, the installed library)."""
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and (x.shape[-1] <= 1 or x.stride(-1) == 1)
    )


def supports(x: torch.Tensor, plan: FFTConvPlan, kernel_batch: int = 1) -> bool:
    """Whether :func:`convolve` computes ``plan`` on channels-last ``x`` ``[B, H, W, C]``: 2-D, zero
    padding on both axes, one kernel for the batch, transforms of at most :data:`MAX_SIZE` points,
    and :func:`takes_input` (see the module doc)."""
    if len(plan.sizes) != 2 or kernel_batch != 1 or any(plan.shifts) or plan.summed_ramp:
        return False
    if any(f <= n for f, n in zip(plan.sizes, plan.signal)):  # a circular axis
        return False
    if max(fused_sizes(plan)) > MAX_SIZE:
        return False
    return tuple(x.shape[1:3]) == plan.signal and takes_input(x)


def fused_sizes(plan: FFTConvPlan) -> tuple[int, ...]:
    """The transform sizes the fused kernel uses: per axis the power of two (at least 4) at least
    the plan's size and twice the signal (larger sizes than the plan's stay alias-free)."""
    return tuple(max(4, 1 << (max(f, 2 * n) - 1).bit_length()) for f, n in zip(plan.sizes, plan.signal))


def spectrum_entries(sizes: tuple[int, ...]) -> int:
    """Frequencies per channel group that :func:`spectrum` stores for transform ``sizes``
    ``(F_h, F_w)``: one of each pair ``(k, -k)`` (the spectra are Hermitian, the kernel reads
    ``A[-k] = conj A[k]``), i.e. ``F_h F_w / 2 + 2`` (four frequencies are their own partner)."""
    return sizes[0] * sizes[1] // 2 + 2


def spectrum(kernel: torch.Tensor, plan: FFTConvPlan) -> torch.Tensor:
    """The kernel's spectrum in the fused kernel's layout: ``[ceil(C / 16), E, 4, 8]`` fp32, with
    ``E`` = :func:`spectrum_entries` of :func:`fused_sizes` (``F_h F_w / 2 + 2``).

    Args:
        kernel: ``[1, C, K_h, K_w]`` kernel (any float dtype; transformed in fp32).
        plan: From :func:`vit5.ops.fftplan.plan_fft_conv`, accepted by :func:`supports`.

    Per group of 16 channels ``c`` (lanes ``c0 .. c0 + 7``) and ``d`` (``c0 + 8 ..``) and per
    stored frequency (the bit-reversed positions ``p`` in row-major order whose partner ``-k`` is
    not before ``p``): ``A = (S_c + S_d) / 2`` and ``B = (S_c - S_d) / 2`` (real and imaginary
    parts), ``S`` the DFT at the plan's sizes of the kernel shifted back by the crop start (so the
    kept window starts at 0) and divided by ``F_h F_w``. The sums, the shift and the scale are
    applied to the taps before the transform (the DFT is linear), and the two sums are transformed
    together as one complex signal. Missing channels of the last group are zero. Needs
    the kernel library (:mod:`vit5.ops.route` decides; :func:`supports` checks the input).
    """
    (f_h, f_w), (s_h, s_w) = fused_sizes(plan), plan.starts
    taps = kernel[0].detach().float()  # (C, K_h, K_w), any strides
    return kernels.fft_kernel_spectrum(taps, s_h, s_w, f_h, f_w)  # vit5::fft_kernel_spectrum


def convolve(
    x: torch.Tensor, spec: torch.Tensor, plan: FFTConvPlan, shortcut: torch.Tensor | None = None
) -> torch.Tensor:
    """``y = K * x`` (or ``shortcut * x + y``) for channels-last ``x`` ``[B, H, W, C]``.

    Args:
        x: fp32 input accepted by :func:`supports` (any batch, row and column strides).
        spec: :func:`spectrum` of the kernel for ``plan``.
        plan: The FFT plan.
        shortcut: Optional ``[C]`` per-channel factor: returns ``shortcut * x + y`` (each product
            and the sum rounded once, the bits of the PyTorch expression for a given ``y``).

    Returns:
        ``[B, H, W, C]`` fp32, contiguous.
    """
    if not takes_input(x) or tuple(x.shape[1:3]) != plan.signal:
        raise ValueError(
            f"x must be a channels-last fp32 CPU [B, {plan.signal[0]}, {plan.signal[1]}, C] tensor with "
            f"contiguous channels, got {x.dtype} {tuple(x.shape)} on {x.device}"
        )
    batch, n_h, n_w, channels = x.shape
    f_h, f_w = fused_sizes(plan)
    groups, entries = -(-channels // GROUP), spectrum_entries((f_h, f_w))
    if (
        spec.shape != (groups, entries, 4, GROUP // 2)
        or spec.dtype != torch.float32
        or not spec.is_contiguous()
    ):
        raise ValueError(
            f"spectrum must be [{groups}, {entries}, 4, 8] contiguous for {channels} channels, "
            f"got {tuple(spec.shape)}"
        )
    if shortcut is not None:
        shortcut = shortcut.detach().to(torch.float32).contiguous()
        if shortcut.shape != (channels,):
            raise ValueError(f"shortcut must have shape [{channels}], got {tuple(shortcut.shape)}")
    return kernels.fft_conv2d(x, spec, f_h, f_w, shortcut)  # vit5::fft_conv2d


def kernel_gradient(
    x: torch.Tensor, grad: torch.Tensor, plan: FFTConvPlan, kernel: torch.Tensor
) -> torch.Tensor:
    """Gradient of :func:`convolve`'s ``y`` with respect to the kernel, summed over the batch.

    Args:
        x: The convolution's input ``[B, H, W, C]`` (accepted by :func:`supports`).
        grad: ``dL/dy`` ``[B, H, W, C]`` (contiguous channels, any other strides).
        plan: The FFT plan of the forward convolution.
        kernel: The ``[1, C, K_h, K_w]`` kernel (its shape, dtype and strides are the result's).

    Returns:
        ``dL/dkernel`` like ``kernel`` (fp32 computed, cast to ``kernel.dtype``).
    """
    batch, n_h, n_w, channels = x.shape
    f_h, f_w = fused_sizes(plan)
    if grad.shape != x.shape or not takes_input(grad):
        raise ValueError(
            f"grad must be fp32 {tuple(x.shape)} with contiguous channels, got {tuple(grad.shape)}"
        )
    out = kernels.fft_conv2d_kernel_grad(
        x, grad, *plan.starts, f_h, f_w, kernel
    )  # vit5::fft_conv2d_kernel_grad
    return out.to(kernel.dtype)


class _FusedConv(torch.autograd.Function):
    """``K * x`` on channels-last ``x`` with the fused kernels forward and in both gradients.

    Plain integers and tensors only (no plan object), so ``torch.compile`` traces it into one
    graph with the ``vit5::`` operators as nodes. Backward: the input gradient is the output
    gradient convolved with the flipped kernel, cropped at ``K - 1 - s`` (the same transform
    sizes are alias-free for it); the kernel gradient is ``vit5::fft_conv2d_kernel_grad``. Under
    ``create_graph=True`` the backward is recorded as the PyTorch formula's
    (:mod:`vit5.ops.recorded`), so second derivatives are right.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, kernel: torch.Tensor, s_h: int, s_w: int, f_h: int, f_w: int
    ) -> torch.Tensor:
        ctx.save_for_backward(x, kernel)
        ctx.geometry = (s_h, s_w, f_h, f_w)
        spec = kernels.fft_kernel_spectrum(kernel[0].detach().float(), s_h, s_w, f_h, f_w)
        return kernels.fft_conv2d(x, spec, f_h, f_w, None)  # (B, H, W, C)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        s_h, s_w, f_h, f_w = ctx.geometry
        need_x, need_kernel = ctx.needs_input_grad[:2]
        if recording():  # create_graph: differentiate the PyTorch formula, recorded

            def formula(a: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
                plan = plan_fft_conv(a.shape[1:3], k.shape[2:], (False, False))
                return apply_spectrum(a.movedim(-1, 1), kernel_spectrum(k, plan), plan).movedim(1, -1)

            return *recorded_vjp(formula, (x, kernel), grad, (need_x, need_kernel)), None, None, None, None
        g = grad.float()
        if not (g.shape[-1] <= 1 or g.stride(-1) == 1):
            g = g.contiguous()  # the kernels read contiguous channels
        grad_x = grad_kernel = None
        if need_x:
            k_h, k_w = kernel.shape[2:]
            flipped = kernel[0].detach().float().flip((1, 2))  # (C, K_h, K_w)
            spec = kernels.fft_kernel_spectrum(flipped, k_h - 1 - s_h, k_w - 1 - s_w, f_h, f_w)
            grad_x = kernels.fft_conv2d(g, spec, f_h, f_w, None).to(x.dtype)  # (B, H, W, C)
        if need_kernel:
            grad_kernel = kernels.fft_conv2d_kernel_grad(x, g, s_h, s_w, f_h, f_w, kernel).to(kernel.dtype)
        return grad_x, grad_kernel, None, None, None, None


def fused_conv(x: torch.Tensor, kernel: torch.Tensor, plan: FFTConvPlan) -> torch.Tensor:
    """``K * x`` for channels-last ``x`` ``[B, H, W, C]``, differentiable, on the fused kernels.

    Args:
        x: fp32 input accepted by :func:`supports` for ``plan``.
        kernel: ``[1, C, K_h, K_w]`` kernel (channels first, any strides).
        plan: From :func:`vit5.ops.fftplan.plan_fft_conv`, accepted by :func:`supports`.

    Returns:
        ``[B, H, W, C]`` fp32, contiguous; forward and both gradients from the fused kernels, the
        forward the bits of :func:`convolve` (eval and training give the same bits).

    Raises:
        ValueError: input or plan the kernels do not take.
    """
    if not supports(x, plan, kernel.shape[0]):
        raise ValueError(
            f"fused_conv takes channels-last fp32 CPU [B, {', '.join(map(str, plan.signal))}, C] input "
            f"with contiguous channels, one 2-D zero-padded kernel and transforms of at most {MAX_SIZE} "
            f"points, got x {x.dtype} {tuple(x.shape)} on {x.device} and kernel {tuple(kernel.shape)}"
        )
    f_h, f_w = fused_sizes(plan)
    return _FusedConv.apply(x, kernel, *plan.starts, f_h, f_w)
