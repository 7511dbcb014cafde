"""The fused CPU kernels as PyTorch operators (``torch.library``, namespace ``vit5``).

Every kernel of ``cpu_kernels.c`` (:mod:`vit5.ops.native`) is called only through one of these
operators, so the dispatcher, the profiler (by name, with input shapes under
``record_shapes=True``), ``torch.library.opcheck`` and fake-tensor tracing see it. Each has a
fake (meta) implementation; operators that write into an argument declare it in
``mutates_args``. The forward operators of differentiable maths carry their autograd formula
(``register_autograd``): the matching ``*_backward`` operator, or, when the backward pass is
itself recorded (``create_graph=True``), the gradient of the plain PyTorch formula
(:mod:`vit5.ops.recorded`), so second derivatives are right. The FFT and DFT operators are the
primitives of the convolutions' own autograd functions and are called only without autograd.

Callers decide with :func:`vit5.ops.native.usable` (eager CPU fp32, library available) whether
an operator may run; graph capture, ``torch.func`` transforms, GPUs and other dtypes take the
plain PyTorch path, so exported and FX graphs hold ATen operators only.

Operators (all CPU, fp32; ``threads`` is the kernels' thread count, :func:`vit5.ops.native.threads`:
PyTorch's profiler records no event for a Python operator whose arguments are all tensors, so
those take it as an argument):

==============================  =============================================================
``vit5::rms_norm``              ``(y, r)`` of :func:`vit5.ops.rmsnorm.rms_norm` (autograd)
``vit5::rms_norm_backward``     its gradients
``vit5::gate``                  ``(x' * act(g), 1 / ||x||)`` of :func:`vit5.ops.gates.gate` (autograd)
``vit5::gate_backward``         its gradients
``vit5::scaled_add``            ``x + branch * scale`` (autograd)
``vit5::scaled_add_backward``   its gradients (branch, per-sample sums for the scale)
``vit5::scaled_add_into_``      ``branch = x + branch * gamma`` in place (inference)
``vit5::rope``                  the rotation of :func:`vit5.ops.rope.apply_rope` or its adjoint
                                (autograd)
``vit5::fft_kernel_spectrum``   the fused FFT convolution's kernel spectrum
``vit5::fft_conv2d``            the fused FFT convolution (optionally ``+ shortcut * x``)
``vit5::fft_conv2d_kernel_grad`` its kernel gradient
``vit5::batched_matmul_``       ``out[i] = m @ x[i]`` (DFT-matrix transforms)
``vit5::complex_product_``      ``out = a * b`` or ``a * conj(b)`` on (re, im) planes
``vit5::complex_product_sum_``  ``acc += sum_i a[i] * conj(b[i])``
==============================  =============================================================
"""

import functools
from typing import Any

import torch
from torch.nn import functional as F

from vit5.ops import native
from vit5.ops.recorded import recorded_vjp, recording

__all__ = ["ACTIVATIONS", "OPERATORS"]

#: Activation name -> the gate kernels' code.
ACTIVATIONS = {"silu": 1, "sigmoid": 2}
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def _empty(shape: Any, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device=like.device)


def _check(status: object, what: str) -> None:
    if status != 0:
        raise MemoryError(f"{what}: the fused kernel could not allocate its scratch memory")


# -- RMSNorm ------------------------------------------------------------------------------------


@torch.library.custom_op("vit5::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty(x.shape, dtype=x.dtype)
    r = torch.empty((*x.shape[:-1], 1), dtype=torch.float32)
    native.run(
        "vit5_rms_forward",
        x.data_ptr(), *native.row_blocks(x), weight.data_ptr(), y.data_ptr(), r.data_ptr(),
        x.numel() // x.shape[-1], x.shape[-1], eps, native.threads(),
    )  # fmt: skip
    return y, r


@rms_norm.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _empty(x.shape, x, x.dtype), _empty((*x.shape[:-1], 1), x)


@torch.library.custom_op("vit5::rms_norm_backward", mutates_args=())
def rms_norm_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    r: torch.Tensor,
    grad: torch.Tensor,
    need_x: bool,
    need_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_weight)``; an unneeded one is an empty tensor."""
    grad = grad.contiguous().float()
    grad_x = torch.empty(x.shape if need_x else (0,), dtype=x.dtype)
    grad_weight = torch.empty(weight.shape if need_weight else (0,), dtype=weight.dtype)
    status = native.run(
        "vit5_rms_backward",
        x.data_ptr(), *native.row_blocks(x), weight.data_ptr(), r.data_ptr(), grad.data_ptr(),
        grad_x.data_ptr() if need_x else None, grad_weight.data_ptr() if need_weight else None,
        x.numel() // x.shape[-1], x.shape[-1], native.threads(),
    )  # fmt: skip
    _check(status, "vit5::rms_norm_backward")
    return grad_x, grad_weight


@rms_norm_backward.register_fake
def _(x, weight, r, grad, need_x, need_weight):  # noqa: ANN001, ANN202
    return _empty(x.shape if need_x else (0,), x, x.dtype), _empty(
        weight.shape if need_weight else (0,), x, weight.dtype
    )


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula of ``vit5::rms_norm``'s ``y`` as plain PyTorch ops, in its op order."""
    u = x.float()
    return (weight * (u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps))).to(x.dtype)


def _rms_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.eps = eps


def _rms_backward(ctx: Any, grad: torch.Tensor, _grad_r: torch.Tensor | None) -> tuple:
    x, weight, r = ctx.saved_tensors
    need_x, need_weight = ctx.needs_input_grad[:2]
    if recording():  # create_graph: r's own derivative must be recorded too
        return *recorded_vjp(
            lambda a, w: rms_norm_reference(a, w, ctx.eps), (x, weight), grad, (need_x, need_weight)
        ), None
    grad_x, grad_weight = rms_norm_backward(x, weight, r, grad, need_x, need_weight)
    return (grad_x if need_x else None), (grad_weight if need_weight else None), None


rms_norm.register_autograd(_rms_backward, setup_context=_rms_setup)


# -- Hyena's gates ------------------------------------------------------------------------------


@torch.library.custom_op("vit5::gate", mutates_args=())
def gate(
    x: torch.Tensor, g: torch.Tensor, activation: int, l2_eps: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x' * act(g), 1 / max(||x||, eps) per row)`` (the second empty without ``l2_eps``)."""
    d = x.shape[-1]
    n = x.numel() // d
    out = torch.empty(x.shape, dtype=x.dtype)
    rnorm = torch.empty(n if l2_eps is not None else 0, dtype=x.dtype)
    native.run(
        "vit5_gate_forward",
        x.data_ptr(), *native.row_blocks(x), g.data_ptr(), *native.row_blocks(g), out.data_ptr(),
        rnorm.data_ptr(), n, d, activation, int(l2_eps is not None), l2_eps or 0.0, native.threads(),
    )  # fmt: skip
    return out, rnorm


@gate.register_fake
def _(x, g, activation, l2_eps):  # noqa: ANN001, ANN202
    n = x.numel() // x.shape[-1] if l2_eps is not None else 0
    return _empty(x.shape, x, x.dtype), _empty((n,), x, x.dtype)


@torch.library.custom_op("vit5::gate_backward", mutates_args=())
def gate_backward(
    x: torch.Tensor,
    g: torch.Tensor,
    rnorm: torch.Tensor,
    grad: torch.Tensor,
    activation: int,
    l2_eps: float | None,
    need_x: bool,
    need_g: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_g)``; an unneeded one is an empty tensor."""
    d = x.shape[-1]
    n = x.numel() // d
    grad = grad.contiguous()
    grad_x = torch.empty(x.shape if need_x else (0,), dtype=x.dtype)
    grad_g = torch.empty(g.shape if need_g else (0,), dtype=g.dtype)
    native.run(
        "vit5_gate_backward",
        x.data_ptr(), *native.row_blocks(x), g.data_ptr(), *native.row_blocks(g), rnorm.data_ptr(),
        grad.data_ptr(), grad_x.data_ptr() if need_x else None, grad_g.data_ptr() if need_g else None, n, d,
        activation, int(l2_eps is not None), l2_eps or 0.0, native.threads(),
    )  # fmt: skip
    return grad_x, grad_g


@gate_backward.register_fake
def _(x, g, rnorm, grad, activation, l2_eps, need_x, need_g):  # noqa: ANN001, ANN202
    return _empty(x.shape if need_x else (0,), x, x.dtype), _empty(g.shape if need_g else (0,), x, g.dtype)


def gate_reference(
    x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None = None
) -> torch.Tensor:
    """``x' * act(g)`` as plain PyTorch ops: the formula of ``vit5::gate``."""
    if l2_eps is not None:
        x = F.normalize(x.float(), p=2.0, dim=-1, eps=l2_eps).to(x.dtype)
    return x * (F.silu(g) if activation == "silu" else torch.sigmoid(g))


def _gate_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, g, activation, l2_eps = inputs
    ctx.save_for_backward(x, g, output[1])
    ctx.activation, ctx.l2_eps = activation, l2_eps


def _gate_backward(ctx: Any, grad: torch.Tensor, _grad_rnorm: torch.Tensor | None) -> tuple:
    x, g, rnorm = ctx.saved_tensors
    need_x, need_g = ctx.needs_input_grad[:2]
    if recording():
        name = _ACTIVATION_NAMES[ctx.activation]
        grads = recorded_vjp(
            lambda a, b: gate_reference(a, b, name, ctx.l2_eps), (x, g), grad, (need_x, need_g)
        )
        return *grads, None, None
    grad_x, grad_g = gate_backward(x, g, rnorm, grad, ctx.activation, ctx.l2_eps, need_x, need_g)
    return (grad_x if need_x else None), (grad_g if need_g else None), None, None


gate.register_autograd(_gate_backward, setup_context=_gate_setup)


# -- Residual updates ---------------------------------------------------------------------------


def _fold(branch: torch.Tensor, per_sample: bool) -> tuple[int, int, int]:
    """``(samples, rows per sample, channels)`` of a contiguous ``[B, ..., D]`` tensor."""
    d = branch.shape[-1]
    if per_sample:
        return branch.shape[0], branch.numel() // (branch.shape[0] * d), d
    return 1, branch.numel() // d, d


def _scaled_add_kernel(
    x: torch.Tensor,
    branch: torch.Tensor,
    scale: torch.Tensor,
    out: torch.Tensor,
    per_sample: bool,
    threads: int,
) -> None:
    samples, rows, d = _fold(branch, per_sample)
    native.run(
        "vit5_scaled_add",
        x.data_ptr(), branch.data_ptr(), scale.data_ptr(), out.data_ptr(), samples, rows, d, int(per_sample),
        threads,
    )  # fmt: skip


@torch.library.custom_op("vit5::scaled_add", mutates_args=())
def scaled_add(x: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor, threads: int) -> torch.Tensor:
    """``x + branch * scale`` for contiguous ``x, branch`` ``[B, ..., D]`` and ``scale`` ``[D]``
    or per sample ``[B, D]``."""
    out = torch.empty_like(x)
    _scaled_add_kernel(x, branch, scale, out, scale.dim() == 2, threads)
    return out


@scaled_add.register_fake
def _(x, branch, scale, threads):  # noqa: ANN001, ANN202
    return torch.empty_like(x)


@torch.library.custom_op("vit5::scaled_add_backward", mutates_args=())
def scaled_add_backward(
    grad: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor, need_branch: bool, need_scale: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_branch, grad_scale)`` (the latter the shape of ``scale``); unneeded ones empty."""
    per_sample = scale.dim() == 2
    g = grad.contiguous()
    samples, _, d = _fold(branch, per_sample)
    grad_branch = torch.empty(branch.shape if need_branch else (0,), dtype=branch.dtype)
    sums = torch.empty((samples, d) if need_scale else (0,), dtype=branch.dtype)
    status = native.run(
        "vit5_scaled_add_backward",
        g.data_ptr(), branch.data_ptr(), scale.data_ptr(), grad_branch.data_ptr() if need_branch else None,
        sums.data_ptr() if need_scale else None, samples, _fold(branch, per_sample)[1], d, int(per_sample),
        native.threads(),
    )  # fmt: skip
    _check(status, "vit5::scaled_add_backward")
    return grad_branch, (sums if per_sample or not need_scale else sums.reshape(d))


@scaled_add_backward.register_fake
def _(grad, branch, scale, need_branch, need_scale):  # noqa: ANN001, ANN202
    return _empty(branch.shape if need_branch else (0,), branch, branch.dtype), _empty(
        scale.shape if need_scale else (0,), branch, branch.dtype
    )


def scaled_add_reference(x: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x + branch * scale`` as plain PyTorch ops (``scale`` ``[D]`` or ``[B, D]``)."""
    if scale.dim() == 2:
        scale = scale.reshape(scale.shape[0], *(1,) * (branch.dim() - 2), scale.shape[1])
    return x + branch * scale


def _scaled_add_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, branch, scale, _ = inputs
    ctx.save_for_backward(x, branch, scale)


def _scaled_add_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    x, branch, scale = ctx.saved_tensors
    need_x, need_branch, need_scale = ctx.needs_input_grad[:3]
    if recording():
        return *recorded_vjp(
            scaled_add_reference, (x, branch, scale), grad, (need_x, need_branch, need_scale)
        ), None
    grad_branch = grad_scale = None
    if need_branch or need_scale:
        grad_branch, grad_scale = scaled_add_backward(grad, branch, scale, need_branch, need_scale)
    return (
        (grad if need_x else None),
        (grad_branch if need_branch else None),
        (grad_scale if need_scale else None),
        None,
    )


scaled_add.register_autograd(_scaled_add_backward, setup_context=_scaled_add_setup)


@torch.library.custom_op("vit5::scaled_add_into_", mutates_args=("branch",))
def scaled_add_into_(x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, threads: int) -> None:
    """``branch = x + branch * gamma`` in place (element j read before it is written)."""
    _scaled_add_kernel(x, branch, gamma, branch, False, threads)


@scaled_add_into_.register_fake
def _(x, branch, gamma, threads):  # noqa: ANN001, ANN202
    return None


# -- RoPE ---------------------------------------------------------------------------------------


@functools.cache
def _partner_tables(head_dim: int, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partner, sign)``: ``rot(u)[c] = sign[c] * u[partner[c]]`` (int32 and fp32 ``[hd]``)."""
    from vit5.ops.rope import rotation_signs, swap_partners

    partner = swap_partners(torch.arange(head_dim, dtype=torch.float32), impl).to(torch.int32)
    return partner.contiguous(), rotation_signs(head_dim, impl).contiguous()


@torch.library.custom_op("vit5::rope", mutates_args=())
def rope(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, impl: str, transpose: bool) -> torch.Tensor:
    """The rotation of ``u`` ``[..., T, H, hd]`` (rows in two levels) by ``[T, hd]`` tables, or with
    ``transpose`` its adjoint (the backward pass). Contiguous fp32 result."""
    head_dim = u.shape[-1]
    partner, sign = _partner_tables(head_dim, impl)
    out = torch.empty(u.shape, dtype=torch.float32)
    native.run(
        "vit5_rope",
        u.data_ptr(), *native.row_blocks(u), cos.data_ptr(), sin.data_ptr(), partner.data_ptr(),
        sign.data_ptr(), out.data_ptr(), u.numel() // max(head_dim, 1), head_dim, u.shape[-2], u.shape[-3],
        int(transpose), native.threads(),
    )  # fmt: skip
    return out


@rope.register_fake
def _(u, cos, sin, impl, transpose):  # noqa: ANN001, ANN202
    return _empty(u.shape, u)


def _rope_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    _, cos, sin, impl, transpose = inputs
    ctx.save_for_backward(cos, sin)
    ctx.impl, ctx.transpose = impl, transpose


def _rope_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    from vit5.ops.rope import rotation_signs, swap_partners

    cos, sin = ctx.saved_tensors
    if recording() or ctx.transpose:  # create_graph: PyTorch ops autograd can record
        signs = rotation_signs(grad.shape[-1], ctx.impl, grad.device)
        c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, hd)
        if ctx.transpose:  # the adjoint's adjoint is the rotation: rot(v) = signs * swap(v)
            return grad * c + signs * swap_partners(grad, ctx.impl) * s, None, None, None, None
        # rot's adjoint: rot^T(v)[j] = sign[p] v[p] with p = partner[j], i.e. swap(sign * v)
        return grad * c + swap_partners(signs * (grad * s), ctx.impl), None, None, None, None
    if not native.usable(strided=(grad,)):
        grad = grad.contiguous().float()
    return rope(grad, cos, sin, ctx.impl, True), None, None, None, None


rope.register_autograd(_rope_backward, setup_context=_rope_setup)


# -- The fused FFT convolution (primitives of vit5.ops.fftconv's autograd function) ----------------

#: Channels per work item of the FFT kernels (two packed groups of 8 vector lanes).
GROUP = 16


def _spectrum_entries(f_h: int, f_w: int) -> int:
    return f_h * f_w // 2 + 2


@torch.library.custom_op("vit5::fft_kernel_spectrum", mutates_args=())
def fft_kernel_spectrum(taps: torch.Tensor, s_h: int, s_w: int, f_h: int, f_w: int) -> torch.Tensor:
    """Spectrum ``[ceil(C / 16), F_h F_w / 2 + 2, 4, 8]`` of fp32 taps ``[C, K_h, K_w]`` (any strides)
    for transform sizes ``(f_h, f_w)`` and crop starts ``(s_h, s_w)``."""
    channels = taps.shape[0]
    out = torch.empty(-(-channels // GROUP), _spectrum_entries(f_h, f_w), 4, GROUP // 2, dtype=torch.float32)
    threads = native.threads()
    work = torch.empty(threads * f_h * f_w * 2 * GROUP, dtype=torch.float32)
    status = native.run(
        "vit5_fft_kernel_spectrum",
        taps.data_ptr(), channels, *taps.shape[1:], *taps.stride(), s_h, s_w, f_h, f_w,
        out.data_ptr(), work.data_ptr(), threads,
    )  # fmt: skip
    if status != 0:
        raise ValueError(
            f"vit5::fft_kernel_spectrum does not take FFT sizes {(f_h, f_w)} for taps {tuple(taps.shape[1:])}"
        )
    return out


@fft_kernel_spectrum.register_fake
def _(taps, s_h, s_w, f_h, f_w):  # noqa: ANN001, ANN202
    return _empty((-(-taps.shape[0] // GROUP), _spectrum_entries(f_h, f_w), 4, GROUP // 2), taps)


@torch.library.custom_op("vit5::fft_conv2d", mutates_args=())
def fft_conv2d(
    x: torch.Tensor, spectrum: torch.Tensor, f_h: int, f_w: int, shortcut: torch.Tensor | None
) -> torch.Tensor:
    """``K * x`` (``+ shortcut * x``) for channels-last fp32 ``x`` ``[B, H, W, C]`` (contiguous
    channels, any other strides) and a :func:`fft_kernel_spectrum`: contiguous ``[B, H, W, C]``."""
    batch, n_h, n_w, channels = x.shape
    out = torch.empty(x.shape, dtype=torch.float32)
    threads = native.threads()
    work = torch.empty(threads * f_h * f_w * 2 * GROUP, dtype=torch.float32)
    status = native.run(
        "vit5_fft_conv2d",
        x.data_ptr(), batch, n_h, n_w, channels, x.stride(0), x.stride(1), x.stride(2),
        spectrum.data_ptr(), f_h, f_w, shortcut.data_ptr() if shortcut is not None else None,
        out.data_ptr(), out.stride(0), out.stride(1), out.stride(2), work.data_ptr(), threads,
    )  # fmt: skip
    if status != 0:
        raise ValueError(f"vit5::fft_conv2d does not take FFT sizes {(f_h, f_w)} for a {(n_h, n_w)} signal")
    return out


@fft_conv2d.register_fake
def _(x, spectrum, f_h, f_w, shortcut):  # noqa: ANN001, ANN202
    return _empty(x.shape, x)


@torch.library.custom_op("vit5::fft_conv2d_kernel_grad", mutates_args=())
def fft_conv2d_kernel_grad(
    x: torch.Tensor, grad: torch.Tensor, s_h: int, s_w: int, f_h: int, f_w: int, kernel: torch.Tensor
) -> torch.Tensor:
    """Gradient of :func:`fft_conv2d`'s output with respect to a ``[1, C, K_h, K_w]`` kernel (whose
    shape and strides the fp32 result has), summed over the batch."""
    batch, n_h, n_w, channels = x.shape
    out = torch.empty_like(kernel, dtype=torch.float32)
    taps = out[0]  # (C, K_h, K_w)
    threads = native.threads()
    work = torch.empty(threads * 3 * f_h * f_w * 2 * GROUP, dtype=torch.float32)
    status = native.run(
        "vit5_fft_conv2d_kernel_grad",
        x.data_ptr(), grad.data_ptr(), batch, n_h, n_w, channels, *x.stride()[:3], *grad.stride()[:3],
        s_h, s_w, f_h, f_w, taps.data_ptr(), *taps.shape[1:], *taps.stride(), work.data_ptr(), threads,
    )  # fmt: skip
    if status != 0:
        raise ValueError(f"vit5::fft_conv2d_kernel_grad does not take FFT sizes {(f_h, f_w)}")
    return out


@fft_conv2d_kernel_grad.register_fake
def _(x, grad, s_h, s_w, f_h, f_w, kernel):  # noqa: ANN001, ANN202
    return torch.empty_like(kernel, dtype=torch.float32)


# -- DFT-matrix convolution primitives (vit5.ops.dftconv) -----------------------------------------


@torch.library.custom_op("vit5::batched_matmul_", mutates_args=("out",))
def batched_matmul_(m: torch.Tensor, x: torch.Tensor, out: torch.Tensor, threads: int) -> None:
    """``out[i] = m @ x[i]``: ``m`` ``[M, K]`` (any strides), ``x`` ``[n, K, N]``, ``out`` ``[n, M, N]``
    (both contiguous)."""
    native.run(
        "vit5_batched_matmul",
        m.data_ptr(), m.shape[0], m.shape[1], m.stride(0), m.stride(1), x.data_ptr(), x.shape[2], x.shape[0],
        out.data_ptr(), threads,
    )  # fmt: skip


@batched_matmul_.register_fake
def _(m, x, out, threads):  # noqa: ANN001, ANN202
    return None


@torch.library.custom_op("vit5::complex_product_", mutates_args=("out",))
def complex_product_(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, conjugate: bool) -> None:
    """``out = a * b`` (``a * conj(b)`` with ``conjugate``) on contiguous ``[n, F, 2, R]`` (re, im)
    spectra; ``b`` may have one row for all."""
    n, f, _, r = a.shape
    native.run(
        "vit5_complex_product",
        a.data_ptr(), b.data_ptr(), out.data_ptr(), n, f, r, int(b.shape[0] == 1), int(conjugate), native.threads(),
    )  # fmt: skip


@complex_product_.register_fake
def _(a, b, out, conjugate):  # noqa: ANN001, ANN202
    return None


@torch.library.custom_op("vit5::complex_product_sum_", mutates_args=("acc",))
def complex_product_sum_(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, threads: int) -> None:
    """``acc [1, F, 2, R] += sum_i a[i] * conj(b[i])`` over contiguous ``[n, F, 2, R]`` spectra."""
    n, f, _, r = a.shape
    native.run("vit5_complex_product_sum", a.data_ptr(), b.data_ptr(), acc.data_ptr(), n, f, r, threads)


@complex_product_sum_.register_fake
def _(a, b, acc, threads):  # noqa: ANN001, ANN202
    return None


#: Every operator of this module, by its qualified name.
OPERATORS = {
    op._qualname: op
    for op in (
        rms_norm, rms_norm_backward, gate, gate_backward, scaled_add, scaled_add_backward, scaled_add_into_,
        rope, fft_kernel_spectrum, fft_conv2d, fft_conv2d_kernel_grad, batched_matmul_, complex_product_,
        complex_product_sum_,
    )
}  # fmt: skip
