"""FFT long convolutions of channels-first signals with per-channel (depthwise) kernels.

Every function takes ``x`` of shape ``[B, C, *S]`` and a kernel of shape ``[1|B, C, *K]`` (a
leading ``B`` gives every sample its own kernel, as FiLM-modulated kernels do), convolves each
channel with its kernel over the trailing ``data_dim = kernel.ndim - 2`` axes, and returns
``[B, C, *S]`` in the dtype of ``x``. The transforms run in fp32 (real FFTs), whatever the input
dtype and autocast state.

Boundary modes (kernel tap ``m`` on an axis of ``K`` taps is the displacement ``m - K // 2``
for the zero and circular modes):

* :func:`fft_conv_zero` — linear, non-causal, "same"-size output with a zero boundary:
  ``y[i] = sum_j x[j] * k[i - j + K // 2]``. With ``K = 2N - 1`` this is
  ``F.conv_nd(x, flip(k), padding=N - 1, groups=C)``.
* :func:`fft_conv_causal` — ``y[i] = sum_{t <= i} k[t] * x[i - t]`` (tap ``t`` is displacement
  ``t >= 0``).
* :func:`fft_conv_circular` — periodic boundary, FFT size ``N``:
  ``y[i] = sum_j x[j] * k_pad[(i - j + (K - 1) // 2) mod N]``; implemented with a phase ramp on
  the kernel spectrum instead of a spatial roll.
* :func:`fft_conv_mixed` — a per-axis choice of the two above (``periodic`` flags).
* :func:`fft_conv_zero_lowmem` — :func:`fft_conv_zero` with a memory-lean backward for training.

:func:`fft_conv` dispatches on a padding string / per-axis list and optionally processes the
channels in chunks (equal to fp32 rounding, lower peak memory).

Each of them is :func:`~vit5.ops.fftplan.plan_fft_conv` (FFT sizes, crop, centring) +
:func:`~vit5.ops.fftplan.kernel_spectrum` + :func:`~vit5.ops.fftplan.apply_spectrum`, from
:mod:`vit5.ops.fftplan` and re-exported here; callers that convolve many inputs with one kernel
(``CKConvND`` in eval mode) keep the spectrum and call :func:`apply_spectrum` alone. The chunked
no-grad pass of :func:`apply_spectrum` gives the bits of the training forward (see
:func:`vit5.ops.fftplan._cmul`); other batch sizes or ``chunk_size`` are other FFT calls, equal
to fp32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vit5.ops import fftnative
from vit5.ops.fftplan import (
    FFTConvPlan,
    apply_spectrum,
    channel_slices,
    forward_transform,
    inverse_transform,
    kernel_spectrum,
    plan_fft_conv,
)
from vit5.ops.route import use_kernel

__all__ = [
    "PADDING_MODES",
    "FFTConvPlan",
    "apply_spectrum",
    "fft_conv",
    "fft_conv_causal",
    "fft_conv_circular",
    "fft_conv_mixed",
    "fft_conv_zero",
    "fft_conv_zero_lowmem",
    "kernel_spectrum",
    "parse_padding",
    "plan_fft_conv",
]

PADDING_MODES = ("zero", "circular")


def parse_padding(padding: str | Sequence[str], data_dim: int) -> tuple[bool, ...]:
    """Per-axis ``periodic`` flags from ``"zero"``, ``"circular"`` or a list of those (any case).

    Raises:
        TypeError: ``padding`` is neither a string nor a sequence of strings (e.g. booleans).
        ValueError: an unknown mode, a comma-joined string, or a list whose length is not
            ``data_dim``.
    """
    if isinstance(padding, str):
        return (_parse_mode("fft_padding", padding),) * data_dim
    if not isinstance(padding, Sequence):
        raise TypeError(
            f"fft_padding must be 'zero', 'circular' or a list of those (one per axis), got {padding!r}"
        )
    items = list(padding)
    if len(items) != data_dim:
        raise ValueError(f"fft_padding must have one mode per axis (data_dim={data_dim}), got {items!r}")
    return tuple(_parse_mode(f"fft_padding[{axis}]", item) for axis, item in enumerate(items))


def _parse_mode(name: str, mode: object) -> bool:
    if not isinstance(mode, str):
        raise TypeError(f"{name} must be the string 'zero' or 'circular', got {type(mode).__name__} {mode!r}")
    if "," in mode:
        raise ValueError(f"{name} must be a single mode, not a comma-joined string ({mode!r}); use a list")
    lowered = mode.strip().lower()
    if lowered not in PADDING_MODES:
        raise ValueError(f"{name} must be 'zero' or 'circular' (any case), got {mode!r}")
    return lowered == "circular"


def _check(x: torch.Tensor, kernel: torch.Tensor) -> int:
    """Validate shapes and return ``data_dim``."""
    data_dim = kernel.ndim - 2
    if data_dim < 1 or x.ndim != kernel.ndim:
        raise ValueError(
            f"expected x [B, C, *S] and kernel [1|B, C, *K] with the same number of dims (>= 3), "
            f"got x {tuple(x.shape)} and kernel {tuple(kernel.shape)}"
        )
    if kernel.shape[1] != x.shape[1] or kernel.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"kernel must have shape [1 or B, C, *K] for x of shape {tuple(x.shape)}, got {tuple(kernel.shape)}"
        )
    if not x.is_floating_point() or not kernel.is_floating_point():
        raise TypeError(f"fft convolutions need floating-point tensors, got {x.dtype} and {kernel.dtype}")
    return data_dim


def _convolve(x: torch.Tensor, kernel: torch.Tensor, periodic: Sequence[bool], causal: bool) -> torch.Tensor:
    plan = plan_fft_conv(x.shape[2:], kernel.shape[2:], periodic, causal)
    return apply_spectrum(x, kernel_spectrum(kernel, plan), plan)


def fft_conv_zero(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Linear "same" convolution with a zero boundary (non-causal, centred).

    ``y[b, c, i] = sum_j x[b, c, j] * kernel[b|0, c, i - j + K // 2]`` per axis (out-of-range taps
    are zero). FFT size per axis ``min(N + (K + 1) // 2, 2N)`` (no aliasing), crop from ``K // 2``.

    Args:
        x: ``[B, C, *S]`` signal.
        kernel: ``[1|B, C, *K]`` kernel with ``K_a <= 2 S_a - 1`` taps per axis.

    Returns:
        ``[B, C, *S]`` in ``x.dtype``.
    """
    data_dim = _check(x, kernel)
    return _convolve(x, kernel, (False,) * data_dim, causal=False)


def fft_conv_causal(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal convolution: ``y[i] = sum_{t <= i} kernel[t] * x[i - t]`` per axis.

    FFT size per axis ``min(N + K, 2N)``; the first ``N`` outputs are kept.

    Args:
        x: ``[B, C, *S]`` signal.
        kernel: ``[1|B, C, *K]`` kernel with ``K_a <= S_a`` taps (tap ``t`` = displacement ``t``).

    Returns:
        ``[B, C, *S]`` in ``x.dtype``.
    """
    data_dim = _check(x, kernel)
    return _convolve(x, kernel, (False,) * data_dim, causal=True)


def fft_conv_circular(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Periodic (circular) centred convolution at FFT size ``N``.

    ``y[i] = sum_j x[j] * k_pad[(i - j + c) mod N]`` with ``c = (K - 1) // 2`` per axis and
    ``k_pad`` the kernel zero-padded at the end to ``N``. The centring is a phase ramp
    ``exp(-2 pi i sum_a s_a f_a)`` (``s_a = -c_a``, phases summed over axes) on the kernel
    spectrum, skipped when every shift is 0.

    Args:
        x: ``[B, C, *S]`` signal.
        kernel: ``[1|B, C, *K]`` kernel with ``K_a <= S_a`` taps per axis.

    Returns:
        ``[B, C, *S]`` in ``x.dtype``.
    """
    data_dim = _check(x, kernel)
    return _convolve(x, kernel, (True,) * data_dim, causal=False)


def fft_conv_mixed(x: torch.Tensor, kernel: torch.Tensor, periodic: Sequence[bool]) -> torch.Tensor:
    """Per-axis boundary: circular on axes with ``periodic[a]``, zero ("same") elsewhere.

    One ``rfftn`` with per-axis sizes (``N`` on periodic axes, ``min(N + (K+1)//2, 2N)`` on the
    others), the phase ramp of the periodic axes on the kernel spectrum
    (:func:`vit5.ops.spectral.phase_ramp`), ``irfftn``, and a crop from ``K // 2`` on the zero
    axes. Uniform flags give the same bits as
    :func:`fft_conv_circular` / :func:`fft_conv_zero`.

    Args:
        x: ``[B, C, *S]`` signal.
        kernel: ``[1|B, C, *K]`` kernel (``K_a <= S_a`` on periodic axes, ``<= 2 S_a - 1`` elsewhere).
        periodic: One flag per spatial axis.

    Returns:
        ``[B, C, *S]`` in ``x.dtype``.
    """
    data_dim = _check(x, kernel)
    periodic = tuple(bool(flag) for flag in periodic)
    if len(periodic) != data_dim:
        raise ValueError(f"periodic must have one flag per axis ({data_dim}), got {periodic!r}")
    return _convolve(x, kernel, periodic, causal=False)


def fft_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    padding: str | Sequence[str] = "zero",
    *,
    causal: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """FFT long convolution with the boundary given by ``padding``.

    Args:
        x: ``[B, C, *S]`` signal (channels first).
        kernel: ``[1|B, C, *K]`` per-channel kernel.
        padding: ``"zero"``, ``"circular"`` (any case) or a per-axis list of those.
        causal: Use :func:`fft_conv_causal` (requires ``padding="zero"`` as a string).
        chunk_size: If given, process the channels in consecutive chunks of this many channels
            (equal to fp32 rounding, lower peak memory).

    Returns:
        ``[B, C, *S]`` in ``x.dtype``.
    """
    data_dim = _check(x, kernel)
    periodic = parse_padding(padding, data_dim)
    if causal:
        if not isinstance(padding, str) or any(periodic):
            raise ValueError(f"causal convolution needs padding='zero' (a string), got {padding!r}")
        op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = fft_conv_causal
    else:

        def op(signal: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
            return fft_conv_mixed(signal, taps, periodic)

    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size is None or chunk_size >= x.shape[1]:
        return op(x, kernel)
    chunks = [
        op(x[:, start : start + chunk_size], kernel[:, start : start + chunk_size])
        for start in range(0, x.shape[1], chunk_size)
    ]
    return torch.cat(chunks, dim=1)


class _ZeroFFTConv(torch.autograd.Function):
    """Zero-boundary FFT convolution whose backward recomputes spectra instead of saving them.

    Autograd through ``rfftn -> product -> irfftn`` keeps the input's spectrum (about 4x the
    input in memory) for the backward pass; this function keeps the input itself. Backward
    (``s`` = crop start, ``G`` = spectrum of the output gradient placed at offset ``s``):
    ``dx = irfftn(G conj(K))[:S]`` and ``dk = irfftn(sum_b conj(X) G)[:K]`` (no wrap-around for
    FFT sizes from :func:`plan_fft_conv`, see ``tests/ops/test_fftconv.py``). PyTorch's
    transforms; the fused kernels' version is :func:`vit5.ops.fftnative.fused_conv`.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, kernel: torch.Tensor, plan: FFTConvPlan, channels_last: bool
    ) -> torch.Tensor:
        ctx.save_for_backward(x, kernel)
        ctx.plan, ctx.channels_last = plan, channels_last
        z = x.movedim(-1, 1).contiguous() if channels_last else x  # (B, C, *S)
        return apply_spectrum(z, kernel_spectrum(kernel, plan), plan)  # (B, C, *S)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, kernel = ctx.saved_tensors
        plan: FFTConvPlan = ctx.plan
        z = x.movedim(-1, 1) if ctx.channels_last else x  # (B, C, *S)
        origin = (0,) * len(plan.sizes)
        need_x, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty(z.shape, dtype=x.dtype, device=x.device) if need_x else None
        grad_kernel = torch.empty_like(kernel) if need_kernel else None
        for part in channel_slices(z, plan) if need_x or need_kernel else ():  # see vit5.ops.fftplan
            g_f = forward_transform(grad[:, part], plan, plan.starts)  # (B, c, *F')
            if grad_x is not None:
                k_f = forward_transform(kernel[:, part], plan)  # (1|B, c, *F')
                grad_x[:, part] = inverse_transform(g_f * k_f.conj(), plan, origin, plan.signal)
            if grad_kernel is not None:
                product = forward_transform(z[:, part], plan).conj() * g_f  # (B, c, *F')
                if kernel.shape[0] == 1 and product.shape[0] != 1:
                    product = product.sum(dim=0, keepdim=True)  # (1, c, *F')
                grad_kernel[:, part] = inverse_transform(product, plan, origin, plan.taps)
        if grad_x is not None and ctx.channels_last:
            grad_x = grad_x.movedim(1, -1)  # (B, *S, C)
        return grad_x, grad_kernel, None, None


def fft_conv_zero_lowmem(
    x: torch.Tensor, kernel: torch.Tensor, channels_last: bool = False, fused: bool | None = None
) -> torch.Tensor:
    """:func:`fft_conv_zero` with a memory-lean backward (saves ``x``, not its spectrum).

    Args:
        x: ``[B, C, *S]`` signal, or ``[B, *S, C]`` with ``channels_last=True``.
        kernel: ``[1|B, C, *K]`` kernel (channels first), ``K_a <= 2 S_a - 1``.
        channels_last: ``x`` is channels-last; it is transposed to channels-first for the FFTs.
        fused: Run the fused CPU kernels (:func:`vit5.ops.fftnative.fused_conv`, forward and both
            gradients; channels-last input they take) or PyTorch's transforms; ``None`` asks
            :mod:`vit5.ops.route` (CKConvND passes its plan's decision).

    Returns:
        ``[B, C, *S]`` in ``x.dtype`` (channels first in both cases); the same values as
        :func:`fft_conv_zero` (bit for bit in the forward pass, except on the fused kernels: to
        fp32 rounding).
    """
    z = x.movedim(-1, 1) if channels_last else x
    data_dim = _check(z, kernel)
    plan = plan_fft_conv(z.shape[2:], kernel.shape[2:], (False,) * data_dim)
    if fused is None:
        fused = (
            channels_last
            and fftnative.supports(x, plan, kernel.shape[0])
            and use_kernel("fft_conv", any_layout=(x,))
        )
    if fused:
        return fftnative.fused_conv(x, kernel, plan).to(x.dtype).movedim(-1, 1)  # (B, C, *S)
    return _ZeroFFTConv.apply(x, kernel, plan, channels_last)
