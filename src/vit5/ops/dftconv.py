"""Long convolutions of channels-last signals as products with real DFT matrices.

On the small grids of ViT-5 (14 x 14 tokens at 224 px) a depthwise long convolution computed
with ``torch.fft`` spends most of its time outside the arithmetic: a few thousand tiny transforms,
transposes and channel-chunk copies per training step. This module computes the same convolution
(:func:`vit5.ops.fftconv.fft_conv_zero` and its causal 1-D form: the crops of
:func:`vit5.ops.fftplan.plan_fft_conv`, at the smallest alias-free sizes of :func:`dft_sizes`)
with every transform a matrix product whose long side is the channel axis, straight on the
channels-last ``[B, *S, C]`` layout of the blocks:

* ``[B, H, W, C]``: the height transform is ``A1 [2 F1', H] @ x[b] [H, W C]`` (a real transform,
  ``F1' = F1 // 2 + 1`` frequencies, rows ``(f, re|im)``); the width transform is, per
  ``(b, f1)``, ``A2 [2 F2, 2 W] @ [2 W, C]`` (complex in, complex out, rows ``(re|im, f)``). The
  spectrum is ``[B, F1', 2, F2, C]``; the kernel's (``[1|B, *K, C]``) is made the same way with
  matrices for ``K`` taps. The inverse runs the transposed structure with the crop folded into the
  matrices: only the kept outputs get rows. ``[B, L, C]`` (1-D) takes the first transform only.
* No transposing copies, no complex dtype: matrices and spectra are real fp32 (built in fp64 with
  phases reduced modulo the FFT size in integers), so the products run at GEMM speed.
* The backward pass (:class:`_DFTConv`) applies the adjoint of each step: the transposed matrices
  and the conjugate spectral products, reusing the forward spectra it saved (``x``'s spectrum,
  ``2 F1' F2 / (H W)`` times ``x``).

Where the fused FFT kernels of :mod:`vit5.ops.fftnative` apply (2-D, zero padding, one kernel
for the batch, channels-last fp32 on a CPU) the planner prefers them; this path serves bf16, per-sample kernels, 1-D and machines without a C
compiler.

* The transforms are ``torch.matmul`` products. On eager CPU fp32 tensors the spectral products
  (:func:`vit5.ops.spectral.complex_product`) run as fused CPU kernels (:mod:`vit5.ops.native`) in
  one pass (to fp32 rounding), the kernel gradient's batch sum without writing the products;
  PyTorch ops elsewhere.

* Inference (:func:`dft_conv_spectrum`) starts from a kernel spectrum made once
  (:func:`dft_kernel_spectrum`, cached by ``CKConvND`` in eval mode) and runs the batch chunk by
  chunk through two reused chunk-sized buffers, keeping nothing; it gives the bits of the
  training forward.

Cost per transform is ``O(N F)`` per axis instead of ``O(F log F)``: it wins on small grids and
loses on large ones; :func:`vit5.ops.longconv_plan.plan_long_conv` decides where.
Matrices are cached per (sizes, crop, device).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

from vit5.ops import kernels, native
from vit5.ops.fftplan import FFTConvPlan, apply_spectrum, chunk_slices, kernel_spectrum
from vit5.ops.longconv_plan import DFT_MAX_DIM
from vit5.ops.recorded import recorded_vjp, recording
from vit5.ops.route import use_kernel
from vit5.ops.spectral import complex_product, dft_matrix

__all__ = [
    "DFT_MAX_DIM",
    "dft_conv",
    "dft_conv_spectrum",
    "dft_kernel_spectrum",
    "dft_sizes",
    "dft_supported",
]


def dft_supported(plan: FFTConvPlan) -> bool:
    """Whether :func:`dft_conv` computes ``plan``: 1 or 2 axes, no circular centring shift."""
    return 1 <= len(plan.sizes) <= DFT_MAX_DIM and not any(plan.shifts)


@lru_cache(maxsize=64)
def _matrices(
    n: int, taps: int, size: int, start: int, real: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(forward for n inputs, forward for taps inputs, inverse keeping outputs start..start+n-1)``:
    the tables of :func:`vit5.ops.spectral.dft_matrix` laid out as real matrices.

    ``real``: the axis of the real transform (``F' = size // 2 + 1`` frequencies; forward
    ``[2 F', n]`` with rows ``(f, re|im)``, inverse ``[n, 2 F']`` with columns ``(f, re|im)`` and
    the Hermitian weights of ``irfft``). Else a complex axis: forward ``[2 F, 2 n]`` (rows
    ``(re|im, f)``, columns ``(re|im, t)``), inverse ``[2 n, 2 F]``. Built as normal tensors even
    when first asked for under ``torch.inference_mode`` (the cache outlives that context).
    """
    with torch.inference_mode(False):
        return _build_matrices(n, taps, size, start, real, device)


def _build_matrices(
    n: int, taps: int, size: int, start: int, real: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def complex_block(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """``(re + i im) (p_re + i p_im)`` as the real ``[[re, -im], [im, re]]`` acting on ``(p_re | p_im)``."""
        return torch.cat([torch.cat([re, -im], 1), torch.cat([im, re], 1)], 0)

    def forward(length: int) -> torch.Tensor:
        re, im = dft_matrix(size, torch.arange(length, dtype=torch.int64), real)  # (F', length)
        if real:  # real input: rows (f, re|im)
            return torch.stack([re, im], dim=1).reshape(-1, length)  # (2F', length)
        return complex_block(re, im)  # (2F, 2 length)

    re, im = dft_matrix(size, torch.arange(start, start + n, dtype=torch.int64), real, inverse=True)
    re, im = re.t(), im.t()  # (n, F')
    if real:  # y = sum_f re(V Y) = sum_f (V_re Y_re - V_im Y_im): columns (f, re|im)
        inverse = torch.stack([re, -im], dim=2).reshape(n, -1)  # (n, 2F')
    else:
        inverse = complex_block(re, im)  # (2n, 2F)
    return tuple(m.float().to(device) for m in (forward(n), forward(taps), inverse))  # type: ignore[return-value]


def dft_sizes(plan: FFTConvPlan) -> tuple[int, ...]:
    """The smallest alias-free transform size per axis for ``plan``'s crop.

    The linear convolution has ``L = N + K - 1`` outputs and the window ``[s, s + N)`` is kept; a
    size-``F`` circular convolution folds output ``p`` onto ``p +- F``, so the window is exact
    when ``F >= max(L - s, s + N)``: ``N + (K - 1) // 2`` for odd ``K`` centred (27 for 14
    positions and 27 taps, where ``plan.sizes`` has 28: an FFT prefers even sizes, a matrix
    product does not), ``N + K - 1`` causal.
    """
    return tuple(
        max(n + k - 1 - start, start + n) for n, k, start in zip(plan.signal, plan.taps, plan.starts)
    )


def _plan_matrices(plan: FFTConvPlan, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """Per axis ``(A_signal, A_kernel, B)``; axis 0 is the real one."""
    return [
        _matrices(n, k, size, start, axis == 0, device)
        for axis, (n, k, size, start) in enumerate(zip(plan.signal, plan.taps, dft_sizes(plan), plan.starts))
    ]


#: Bytes of spectrum one batch chunk may hold on a CPU: a chunk's temporaries stay in cache and
#: re-use freed heap blocks instead of faulting in fresh pages. Other
#: devices take the whole batch at once (fewer, larger kernel launches).
CHUNK_BYTES = 8 * 2**20


def _chunks(batch: int, spectrum_bytes_per_sample: int, device: torch.device) -> list[slice]:
    """The batch in :func:`vit5.ops.fftplan.chunk_slices` holding at most :data:`CHUNK_BYTES` of
    spectrum each (at least 1 sample) on a CPU; one slice elsewhere."""
    if device.type != "cpu":
        return [slice(0, batch)]
    return chunk_slices(batch, CHUNK_BYTES // max(spectrum_bytes_per_sample, 1))


def _apply(m: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``m @ x[i]`` for every ``i``: ``m`` ``[M, K]`` (any strides), ``x`` ``[n, K, N]`` -> ``[n, M, N]``
    (written to ``out`` when given), by ``torch.matmul`` (a fused kernel for these small-``K``
    products did not beat it: benchmarks/results/2026-12-07-cpp-kernels.md)."""
    if out is None:
        out = x.new_empty(x.shape[0], m.shape[0], x.shape[2])
    return torch.matmul(m, x, out=out)


def _spectrum(x: torch.Tensor, mats: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """Channels-last ``x`` ``[b, *A, C]`` to its spectrum, written to ``out`` ``[b, F1', 2, F2 C]``."""
    b, c = x.shape[0], x.shape[-1]
    if len(mats) == 1:
        _apply(mats[0], x.reshape(b, x.shape[1], -1), out=out.view(b, -1, c))  # (b, 2F1', C)
        return
    z = _apply(mats[0], x.reshape(b, x.shape[1], -1))  # (b, 2F1', A2 C)
    f1 = mats[0].shape[0] // 2
    _apply(mats[1], z.view(b * f1, -1, c), out=out.view(b * f1, -1, c))  # (b F1', 2F2, C)


def _spectrum_adjoint(s: torch.Tensor, mats: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """Adjoint of :func:`_spectrum`: ``[b, F1', 2, F2 C]`` back to ``out`` ``[b, *A, C]``."""
    b, c = out.shape[0], out.shape[-1]
    if len(mats) == 2:
        s = _apply(mats[1].t(), s.reshape(-1, mats[1].shape[0], c))  # (b F1', 2 A2, C)
    _apply(mats[0].t(), s.reshape(b, mats[0].shape[0], -1), out=out.view(b, out.shape[1], -1))


def _inverse(p: torch.Tensor, mats: Sequence[torch.Tensor], out: torch.Tensor) -> None:
    """Spectrum ``[b, F1', 2, F2 C]`` to the cropped channels-last signal, written to ``out`` ``[b, *S, C]``."""
    b, c = out.shape[0], out.shape[-1]
    if len(mats) == 2:
        p = _apply(mats[1], p.reshape(-1, mats[1].shape[1], c))  # (b F1', 2 S2, C)
    _apply(mats[0], p.reshape(b, mats[0].shape[1], -1), out=out.view(b, out.shape[1], -1))


def _inverse_adjoint(g: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Adjoint of :func:`_inverse`: ``[b, *S, C]`` to ``[b, F1', 2, F2 C]``."""
    b, c = g.shape[0], g.shape[-1]
    q = _apply(mats[0].t(), g.reshape(b, g.shape[1], -1))  # (b, 2F1', S2 C)
    if len(mats) == 2:
        q = _apply(mats[1].t(), q.view(-1, mats[1].shape[0], c))  # (b F1', 2F2, C)
    return q.view(b, mats[0].shape[1] // 2, 2, -1)


def _product(
    a: torch.Tensor, b: torch.Tensor, conjugate: bool = False, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Complex product of ``[..., 2, R]`` (re, im) spectra, ``a * conj(b)`` with ``conjugate``
    (written to ``out`` when given; it must not overlap ``a`` or ``b``)."""
    if out is None:
        out = torch.empty((max(a.shape[0], b.shape[0]), *a.shape[1:]), dtype=a.dtype, device=a.device)
    if use_kernel("complex_product", a, b, out, layout_ok=a.dim() == 4 and a.shape[0] == out.shape[0]):
        # vit5.ops.spectral.complex_product in one pass (to fp32 rounding: the kernel fuses the
        # multiply-adds, tests/ops/test_dftconv.py).
        kernels.complex_product_(a, b, out, conjugate)  # vit5::complex_product_
        return out
    planes = (a.select(-2, 0), a.select(-2, 1), b.select(-2, 0), b.select(-2, 1))
    complex_product(*planes, conjugate=conjugate, out=(out.select(-2, 0), out.select(-2, 1)))
    return out


def _add_product_sum(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc [1, F1', 2, R] += sum_i a[i] * conj(b[i])`` over the rows of ``[n, F1', 2, R]`` spectra."""
    if use_kernel("complex_product_sum", acc, a, b):
        kernels.complex_product_sum_(a, b, acc, native.threads())  # vit5::complex_product_sum_
        return
    acc.add_(_product(a, b, conjugate=True).sum(dim=0, keepdim=True))


def _spectrum_shape(rows: int, plan: FFTConvPlan, channels: int) -> tuple[int, ...]:
    """``[rows, F1', 2, F2 C]`` (``F2 = 1`` in 1-D)."""
    sizes = dft_sizes(plan)
    f2 = sizes[1] if len(sizes) == 2 else 1
    return (rows, sizes[0] // 2 + 1, 2, f2 * channels)


def _kernel_spectrum(kernel: torch.Tensor, plan: FFTConvPlan) -> torch.Tensor:
    """fp32 spectrum ``[1|B, F1', 2, F2 C]`` of a channels-last ``[1|B, *K, C]`` kernel (no autograd)."""
    mats = _plan_matrices(plan, kernel.device)
    taps = kernel.float().contiguous()
    k_f = taps.new_empty(_spectrum_shape(kernel.shape[0], plan, kernel.shape[-1]))
    _spectrum(taps, [m[1] for m in mats], k_f)
    return k_f


def _convolve(
    signal: torch.Tensor,
    k_f: torch.Tensor,
    plan: FFTConvPlan,
    skip: torch.Tensor | None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """fp32 ``crop(IDFT(DFT(signal) k_f)) [+ skip signal]`` chunk by chunk (:func:`_chunks`).

    ``keep`` (``[B, F1', 2, F2 C]``) receives the whole batch's spectrum (for a backward pass);
    without it the spectrum goes to a reused chunk-sized buffer, as the spectral product always
    does. Both chunk the batch alike and run the same operations, so training forward and
    inference give the same bits.
    """
    mats = _plan_matrices(plan, signal.device)
    a_x, inv = [m[0] for m in mats], [m[2] for m in mats]
    batch, shared = signal.shape[0], k_f.shape[0] == 1
    y = torch.empty_like(signal)  # (B, *S, C)
    parts = _chunks(batch, k_f[0].numel() * 4, signal.device)
    rows = max(part.stop - part.start for part in parts)
    product = signal.new_empty(_spectrum_shape(rows, plan, signal.shape[-1]))  # reused per chunk
    scratch = torch.empty_like(product) if keep is None else None
    for part in parts:
        rows = part.stop - part.start
        x_f = keep[part] if scratch is None else scratch[:rows]
        _spectrum(signal[part], a_x, x_f)
        _inverse(_product(x_f, k_f if shared else k_f[part], out=product[:rows]), inv, y[part])
        if skip is not None:
            y[part].addcmul_(signal[part], skip)
    return y


class _DFTConv(torch.autograd.Function):
    """``y = crop(IDFT(DFT(x) DFT(k))) [+ shortcut x]`` on channels-last tensors, with the adjoint
    as backward.

    Works through the batch in :func:`_chunks`; the forward keeps ``x``'s spectrum for the
    kernel gradient (and ``x`` itself for the shortcut's)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, kernel: torch.Tensor, shortcut: torch.Tensor | None, plan: FFTConvPlan
    ) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            signal = x.float().contiguous()
            skip = None if shortcut is None else shortcut.float()
            k_f = _kernel_spectrum(kernel, plan)  # (1|B, F1', 2, F2 C)
            x_f = signal.new_empty(_spectrum_shape(x.shape[0], plan, x.shape[-1]))
            y = _convolve(signal, k_f, plan, skip, keep=x_f)  # (B, *S, C)
        ctx.save_for_backward(x_f, k_f, x, shortcut, kernel)
        ctx.plan, ctx.kernel_shape, ctx.dtypes = plan, kernel.shape, (x.dtype, kernel.dtype)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_f, k_f, x, shortcut, kernel = ctx.saved_tensors
        if recording():  # create_graph: differentiate the formula as recorded PyTorch ops
            grads = recorded_vjp(
                lambda a, k, s: planned_conv_reference(a, k, ctx.plan, s),
                (x, kernel, shortcut),
                grad,
                ctx.needs_input_grad[:3],
            )
            return *grads, None
        mats = _plan_matrices(ctx.plan, grad.device)
        a_x, a_k, inv = ([m[i] for m in mats] for i in range(3))
        k_shape = ctx.kernel_shape
        shared = k_shape[0] == 1
        need_x, need_kernel, need_shortcut = ctx.needs_input_grad[:3]
        with torch.autocast(grad.device.type, enabled=False):
            g = grad.float().contiguous()  # (B, *S, C)
            grad_x = torch.empty_like(g) if need_x else None
            k_grad_f = torch.zeros_like(k_f) if need_kernel else None  # (1|B, F1', 2, F2 C)
            skip = None if shortcut is None else shortcut.float()
            grad_skip = torch.zeros_like(skip) if need_shortcut else None  # (C,)
            for part in _chunks(g.shape[0], x_f[0].numel() * 4, g.device):
                g_f = _inverse_adjoint(g[part], inv)  # (b, F1', 2, F2 C)
                kernel_f = k_f if shared else k_f[part]
                if grad_x is not None:
                    _spectrum_adjoint(_product(g_f, kernel_f, conjugate=True), a_x, grad_x[part])
                    if skip is not None:
                        grad_x[part].addcmul_(g[part], skip)
                if k_grad_f is not None:
                    if shared:
                        _add_product_sum(k_grad_f, g_f, x_f[part])
                    else:
                        _product(g_f, x_f[part], conjugate=True, out=k_grad_f[part])
                if grad_skip is not None:
                    grad_skip.add_((g[part] * x[part].float()).reshape(-1, g.shape[-1]).sum(dim=0))
            grad_kernel = None
            if k_grad_f is not None:
                grad_kernel = k_grad_f.new_empty(k_shape)
                _spectrum_adjoint(k_grad_f, a_k, grad_kernel)
                grad_kernel = grad_kernel.to(ctx.dtypes[1])
        if grad_x is not None:
            grad_x = grad_x.to(ctx.dtypes[0])
        if grad_skip is not None:
            grad_skip = grad_skip.to(shortcut.dtype)
        return grad_x, grad_kernel, grad_skip, None


def planned_conv_reference(
    x: torch.Tensor, kernel: torch.Tensor, plan: FFTConvPlan, shortcut: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`dft_conv` as plain differentiable ``torch.fft`` ops (:mod:`vit5.ops.fftplan`)."""
    with torch.autocast(x.device.type, enabled=False):
        z = x.movedim(-1, 1)  # (B, C, *S)
        y = apply_spectrum(z, kernel_spectrum(kernel.movedim(-1, 1), plan), plan).movedim(1, -1)
        if shortcut is not None:
            y = y + x.float() * shortcut.float()
    return y.to(x.dtype)  # (B, *S, C)


def dft_conv(
    x: torch.Tensor, kernel: torch.Tensor, plan: FFTConvPlan, shortcut: torch.Tensor | None = None
) -> torch.Tensor:
    """The convolution planned by ``plan`` of channels-last ``x`` with a channels-last kernel.

    Same values as :func:`vit5.ops.fftconv.fft_conv_zero` (or the causal form) on the
    channels-first views, up to fp32 round-off; differentiable in every tensor argument. Runs in
    fp32 (even under autocast) and returns ``x.dtype``.

    Args:
        x: ``[B, *S, C]`` signal (``len(S)`` 1 or 2).
        kernel: ``[1|B, *K, C]`` per-channel kernel (a leading ``B``: one kernel per sample).
        plan: From :func:`vit5.ops.fftplan.plan_fft_conv` for ``S`` and ``K``, without circular
            axes (:func:`dft_supported`).
        shortcut: Optional ``[C]`` per-channel skip weight: ``shortcut * x`` is added to the
            result in the same pass (``CKConvND``'s skip term).

    Returns:
        ``[B, *S, C]`` channels-last.

    Raises:
        ValueError: shapes that do not match ``plan``, or a plan this path does not take.
    """
    if not dft_supported(plan):
        raise ValueError(f"dft_conv takes 1-D or 2-D zero-boundary plans, got {plan}")
    spatial, taps = tuple(x.shape[1:-1]), tuple(kernel.shape[1:-1])
    if spatial != plan.signal or taps != plan.taps or kernel.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"dft_conv expects x [B, *{plan.signal}, C] and kernel [1|B, *{plan.taps}, C], "
            f"got {tuple(x.shape)} and {tuple(kernel.shape)}"
        )
    if kernel.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"kernel must have 1 or B={x.shape[0]} rows, got shape {tuple(kernel.shape)}")
    if shortcut is not None and tuple(shortcut.shape) != (x.shape[-1],):
        raise ValueError(f"shortcut must have shape [C={x.shape[-1]}], got {tuple(shortcut.shape)}")
    tensors = (x, kernel) if shortcut is None else (x, kernel, shortcut)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _DFTConv.apply(x, kernel, shortcut, plan)
    return dft_conv_spectrum(x, dft_kernel_spectrum(kernel, plan), plan, shortcut)  # nothing kept


def dft_kernel_spectrum(kernel: torch.Tensor, plan: FFTConvPlan) -> torch.Tensor:
    """The spectrum of a channels-last ``[1|B, *K, C]`` kernel, for :func:`dft_conv_spectrum`.

    fp32 ``[1|B, F1', 2, F2 C]`` (see the module doc); not differentiable. Computing it once and
    reusing it (``CKConvND``'s eval cache) leaves one transform pair per call.

    Raises:
        ValueError: a plan this path does not take, or a kernel that does not match it.
    """
    if not dft_supported(plan):
        raise ValueError(f"dft_kernel_spectrum takes 1-D or 2-D zero-boundary plans, got {plan}")
    if tuple(kernel.shape[1:-1]) != plan.taps:
        raise ValueError(f"kernel must be [1|B, *{plan.taps}, C], got {tuple(kernel.shape)}")
    with torch.no_grad(), torch.autocast(kernel.device.type, enabled=False):
        return _kernel_spectrum(kernel, plan)


def dft_conv_spectrum(
    x: torch.Tensor, kernel_spectrum: torch.Tensor, plan: FFTConvPlan, shortcut: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`dft_conv` from a kernel spectrum (:func:`dft_kernel_spectrum`), without autograd.

    The same bits as :func:`dft_conv`'s forward with the kernel the spectrum came from; the batch
    runs in chunks through two reused chunk-sized buffers. Runs in fp32 (even under autocast) and
    returns ``x.dtype``.

    Args:
        x: ``[B, *S, C]`` signal.
        kernel_spectrum: ``[1|B, F1', 2, F2 C]`` from :func:`dft_kernel_spectrum`.
        plan: The plan the spectrum was made for.
        shortcut: Optional ``[C]`` skip weight (``shortcut * x`` is added).

    Raises:
        ValueError: shapes that do not match ``plan``.
        TypeError: a spectrum that is not float32.
    """
    expected = _spectrum_shape(1, plan, x.shape[-1])[1:]
    if tuple(x.shape[1:-1]) != plan.signal or tuple(kernel_spectrum.shape[1:]) != expected:
        raise ValueError(
            f"dft_conv_spectrum expects x [B, *{plan.signal}, C] and a spectrum [1|B, *{expected}], "
            f"got {tuple(x.shape)} and {tuple(kernel_spectrum.shape)}"
        )
    if kernel_spectrum.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"kernel_spectrum must have 1 or B={x.shape[0]} rows, got {tuple(kernel_spectrum.shape)}"
        )
    if kernel_spectrum.dtype != torch.float32:
        raise TypeError(
            f"kernel_spectrum must be float32 (from dft_kernel_spectrum), got {kernel_spectrum.dtype}"
        )
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        skip = None if shortcut is None else shortcut.float()
        return _convolve(x.float().contiguous(), kernel_spectrum, plan, skip).to(x.dtype)
