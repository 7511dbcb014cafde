"""The fused CPU kernels as PyTorch operators (namespace ``vit5``), and their Python parts.

The operators' schemas and CPU implementations are C++ (``csrc/``, a ``TORCH_LIBRARY``
extension built at install time and loaded by :mod:`vit5.ops.native`), so the dispatcher, the
profiler (by name, with input shapes under ``record_shapes=True``), ``torch.library.opcheck``
and fake-tensor tracing see them. This module registers, once the extension is loaded, each
operator's fake (meta) implementation (``torch.library.register_fake``) and, for the forward
operators of differentiable maths, its autograd formula (``torch.library.register_autograd``):
the matching ``*_backward`` operator, or, when the backward pass is itself recorded
(``create_graph=True``), the gradient of the plain PyTorch formula (:mod:`vit5.ops.recorded`),
so second derivatives are right. The FFT and DFT operators are the primitives of the
convolutions' own autograd functions and are called only without autograd. Operators ending in
``_`` write into the argument their schema marks ``(a!)``.

The functions below (``rms_norm``, ``gate``, ...) are the callers' entry points: thin wrappers
that call ``torch.ops.vit5.*``. Callers decide with :func:`vit5.ops.route.use_kernel` (eager CPU
fp32, extension loaded) whether one may run; graph capture, ``torch.func`` transforms, GPUs and
other dtypes take the plain PyTorch path, so exported and FX graphs hold ATen operators only.
The ``threads`` arguments some wrappers take are not used: the kernels run on PyTorch's intra-op
threads (``torch.set_num_threads``).

Without the extension (not built, stale record) the ``vit5::`` operators are not defined at
all, and nothing calls these wrappers (the route never picks them); ``VIT5_NATIVE=0`` or
:func:`vit5.ops.native.disabled` leave a loaded extension's operators defined but unused.

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

__all__ = ["ACTIVATIONS", "NAMES", "OPERATORS"]

#: Activation name -> the gate kernels' code.
ACTIVATIONS = {"silu": 1, "sigmoid": 2}
_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}

#: The operators the extension defines (``vit5::<name>``).
NAMES = (
    "rms_norm", "rms_norm_backward", "gate", "gate_backward", "scaled_add", "scaled_add_backward",
    "scaled_add_into_", "rope", "fft_kernel_spectrum", "fft_conv2d", "fft_conv2d_kernel_grad",
    "complex_product_", "complex_product_sum_",
)  # fmt: skip

#: Qualified name -> ``OpOverload`` of every operator, once the extension is loaded (else empty).
OPERATORS: dict[str, Any] = {}


def _empty(shape: Any, like: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=dtype, device=like.device)


# -- RMSNorm ------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, r)``: ``y = weight * (x * r)``, ``r = 1 / sqrt(mean(x^2) + eps)`` per row ``[..., 1]``
    (``x`` may be a per-head slice, rows in two levels)."""
    return torch.ops.vit5.rms_norm(x, weight, eps)


def rms_norm_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    r: torch.Tensor,
    grad: torch.Tensor,
    need_x: bool,
    need_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_weight)``; an unneeded one is an empty tensor."""
    return torch.ops.vit5.rms_norm_backward(x, weight, r, grad.float(), need_x, need_weight)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula of ``vit5::rms_norm``'s ``y``: :func:`vit5.ops.rmsnorm.rms_norm_reference`."""
    from vit5.ops.rmsnorm import rms_norm_reference as formula  # the one definition (no import cycle)

    return formula(x, weight, eps)


def _rms_fake(x, weight, eps):  # noqa: ANN001, ANN202
    return _empty(x.shape, x, x.dtype), _empty((*x.shape[:-1], 1), x)


def _rms_backward_fake(x, weight, r, grad, need_x, need_weight):  # noqa: ANN001, ANN202
    return _empty(x.shape if need_x else (0,), x, x.dtype), _empty(
        weight.shape if need_weight else (0,), x, weight.dtype
    )


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


# -- Hyena's gates ------------------------------------------------------------------------------


def gate(
    x: torch.Tensor, g: torch.Tensor, activation: int, l2_eps: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x' * act(g), 1 / max(||x||, eps) per row)`` (the second empty without ``l2_eps``)."""
    return torch.ops.vit5.gate(x, g, activation, l2_eps)


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
    return torch.ops.vit5.gate_backward(x, g, rnorm, grad, activation, l2_eps, need_x, need_g)


def gate_reference(
    x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None = None
) -> torch.Tensor:
    """``x' * act(g)`` as plain PyTorch ops: the formula of ``vit5::gate``."""
    if l2_eps is not None:
        x = F.normalize(x.float(), p=2.0, dim=-1, eps=l2_eps).to(x.dtype)
    return x * (F.silu(g) if activation == "silu" else torch.sigmoid(g))


def _gate_fake(x, g, activation, l2_eps):  # noqa: ANN001, ANN202
    n = x.numel() // x.shape[-1] if l2_eps is not None else 0
    return _empty(x.shape, x, x.dtype), _empty((n,), x, x.dtype)


def _gate_backward_fake(x, g, rnorm, grad, activation, l2_eps, need_x, need_g):  # noqa: ANN001, ANN202
    return _empty(x.shape if need_x else (0,), x, x.dtype), _empty(g.shape if need_g else (0,), x, g.dtype)


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


# -- Residual updates ---------------------------------------------------------------------------


def scaled_add(x: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor, threads: int = 0) -> torch.Tensor:
    """``x + branch * scale`` for ``x, branch`` ``[B, ..., D]`` and ``scale`` ``[D]`` or per sample
    ``[B, D]`` (``threads`` unused)."""
    return torch.ops.vit5.scaled_add(x, branch, scale)


def scaled_add_backward(
    grad: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor, need_branch: bool, need_scale: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_branch, grad_scale)`` (the latter the shape of ``scale``); unneeded ones empty."""
    return torch.ops.vit5.scaled_add_backward(grad, branch, scale, need_branch, need_scale)


def scaled_add_into_(x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, threads: int = 0) -> None:
    """``branch = x + branch * gamma`` in place (the bits of :func:`scaled_add`; ``threads`` unused)."""
    torch.ops.vit5.scaled_add_into_(x, branch, gamma)


def scaled_add_reference(x: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x + branch * scale`` as plain PyTorch ops (``scale`` ``[D]`` or ``[B, D]``)."""
    if scale.dim() == 2:
        scale = scale.reshape(scale.shape[0], *(1,) * (branch.dim() - 2), scale.shape[1])
    return x + branch * scale


def _scaled_add_backward_fake(grad, branch, scale, need_branch, need_scale):  # noqa: ANN001, ANN202
    return _empty(branch.shape if need_branch else (0,), branch, branch.dtype), _empty(
        scale.shape if need_scale else (0,), branch, branch.dtype
    )


def _scaled_add_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, branch, scale = inputs
    ctx.save_for_backward(x, branch, scale)


def _scaled_add_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    x, branch, scale = ctx.saved_tensors
    need_x, need_branch, need_scale = ctx.needs_input_grad[:3]
    if recording():
        return recorded_vjp(scaled_add_reference, (x, branch, scale), grad, (need_x, need_branch, need_scale))
    grad_branch = grad_scale = None
    if need_branch or need_scale:
        grad_branch, grad_scale = scaled_add_backward(grad, branch, scale, need_branch, need_scale)
    return (
        (grad if need_x else None),
        (grad_branch if need_branch else None),
        (grad_scale if need_scale else None),
    )


# -- RoPE ---------------------------------------------------------------------------------------


@functools.cache
def _partner_tables(head_dim: int, impl: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(partner, sign)``: ``rot(u)[c] = sign[c] * u[partner[c]]`` (int32 and fp32 ``[hd]``)."""
    from vit5.ops.rope import rotation_signs, swap_partners

    # Cached for the process: built as normal tensors even when the first call runs under
    # inference_mode, so a later training call may save them for its backward pass.
    with torch.inference_mode(False):
        partner = swap_partners(torch.arange(head_dim, dtype=torch.float32), impl).to(torch.int32)
        return partner.contiguous(), rotation_signs(head_dim, impl).contiguous()


def rope(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, impl: str, transpose: bool) -> torch.Tensor:
    """The rotation of ``u`` ``[..., T, H, hd]`` (rows in two levels) by ``[T, hd]`` tables, or with
    ``transpose`` its adjoint (the backward pass). Contiguous fp32 result."""
    partner, sign = _partner_tables(u.shape[-1], impl)
    return torch.ops.vit5.rope(u, cos, sin, partner, sign, transpose)


def _rope_setup(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    _, cos, sin, partner, sign, transpose = inputs
    ctx.save_for_backward(cos, sin, partner, sign)
    ctx.transpose = transpose


def _rope_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    cos, sin, partner, sign = ctx.saved_tensors
    none = (None,) * 5
    if recording() or ctx.transpose:  # create_graph: PyTorch ops autograd can record
        index = partner.long()
        c, s = cos[:, None, :], sin[:, None, :]  # (T, 1, hd)
        if ctx.transpose:  # the adjoint's adjoint is the rotation: rot(v) = sign * v[partner]
            return grad * c + sign * grad[..., index] * s, *none
        # rot's adjoint: rot^T(v)[j] = sign[p] v[p] with p = partner[j]
        return grad * c + (sign * (grad * s))[..., index], *none
    from vit5.ops.route import use_kernel  # the route imports this module (via fftnative)

    if not use_kernel("rope", strided=(grad,)):
        grad = grad.contiguous().float()
    return torch.ops.vit5.rope(grad, cos, sin, partner, sign, True), *none


# -- The fused FFT convolution (primitives of vit5.ops.fftconv's autograd function) ----------------

#: Channels per work item of the FFT kernels (two packed groups of 8 vector lanes).
GROUP = 16
#: The largest transform per axis the FFT kernels take (csrc/fft.cpp: kMaxFFT).
MAX_FFT = 1024


def _spectrum_entries(f_h: int, f_w: int) -> int:
    return f_h * f_w // 2 + 2


def _check_fft_sizes(op: str, f_h: int, f_w: int, what: str) -> None:
    if not all(4 <= f <= MAX_FFT and f & (f - 1) == 0 for f in (f_h, f_w)):
        raise ValueError(f"vit5::{op} does not take FFT sizes {(f_h, f_w)} for {what}")


def fft_kernel_spectrum(taps: torch.Tensor, s_h: int, s_w: int, f_h: int, f_w: int) -> torch.Tensor:
    """Spectrum ``[ceil(C / 16), F_h F_w / 2 + 2, 4, 8]`` of fp32 taps ``[C, K_h, K_w]`` (any strides)
    for transform sizes ``(f_h, f_w)`` (powers of two in ``[4, 1024]``) and crop starts ``(s_h, s_w)``."""
    _check_fft_sizes("fft_kernel_spectrum", f_h, f_w, f"taps {tuple(taps.shape[1:])}")
    return torch.ops.vit5.fft_kernel_spectrum(taps, s_h, s_w, f_h, f_w)


def _spectrum_fake(taps, s_h, s_w, f_h, f_w):  # noqa: ANN001, ANN202
    return _empty((-(-taps.shape[0] // GROUP), _spectrum_entries(f_h, f_w), 4, GROUP // 2), taps)


def fft_conv2d(
    x: torch.Tensor, spectrum: torch.Tensor, f_h: int, f_w: int, shortcut: torch.Tensor | None
) -> torch.Tensor:
    """``K * x`` (``+ shortcut * x``) for channels-last fp32 ``x`` ``[B, H, W, C]`` (contiguous
    channels, any other strides) and a :func:`fft_kernel_spectrum`: contiguous ``[B, H, W, C]``."""
    _check_fft_sizes("fft_conv2d", f_h, f_w, f"a {tuple(x.shape[1:3])} signal")
    return torch.ops.vit5.fft_conv2d(x, spectrum, f_h, f_w, shortcut)


def fft_conv2d_kernel_grad(
    x: torch.Tensor, grad: torch.Tensor, s_h: int, s_w: int, f_h: int, f_w: int, kernel: torch.Tensor
) -> torch.Tensor:
    """Gradient of :func:`fft_conv2d`'s output with respect to a ``[1, C, K_h, K_w]`` kernel (whose
    shape and strides the fp32 result has), summed over the batch."""
    _check_fft_sizes("fft_conv2d_kernel_grad", f_h, f_w, f"a {tuple(x.shape[1:3])} signal")
    return torch.ops.vit5.fft_conv2d_kernel_grad(x, grad, s_h, s_w, f_h, f_w, kernel)


# -- DFT-matrix convolution primitives (vit5.ops.dftconv) -----------------------------------------


def complex_product_(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, conjugate: bool) -> None:
    """``out = a * b`` (``a * conj(b)`` with ``conjugate``) on contiguous ``[n, F, 2, R]`` (re, im)
    spectra; ``b`` may have one row for all."""
    torch.ops.vit5.complex_product_(a, b, out, conjugate)


def complex_product_sum_(a: torch.Tensor, b: torch.Tensor, acc: torch.Tensor, threads: int = 0) -> None:
    """``acc [1, F, 2, R] += sum_i a[i] * conj(b[i])`` over contiguous ``[n, F, 2, R]`` spectra
    (``threads`` unused)."""
    torch.ops.vit5.complex_product_sum_(a, b, acc)


def _none(*args: Any) -> None:
    return None


def _register() -> None:
    """Fake implementations and autograd formulas of the loaded extension's operators."""
    fakes = {
        "rms_norm": _rms_fake,
        "rms_norm_backward": _rms_backward_fake,
        "gate": _gate_fake,
        "gate_backward": _gate_backward_fake,
        "scaled_add": lambda x, branch, scale: torch.empty_like(x),
        "scaled_add_backward": _scaled_add_backward_fake,
        "scaled_add_into_": _none,
        "rope": lambda u, cos, sin, partner, sign, transpose: _empty(u.shape, u),
        "fft_kernel_spectrum": _spectrum_fake,
        "fft_conv2d": lambda x, spectrum, f_h, f_w, shortcut: _empty(x.shape, x),
        "fft_conv2d_kernel_grad": lambda x, grad, s_h, s_w, f_h, f_w, kernel: torch.empty_like(
            kernel, dtype=torch.float32
        ),
        "complex_product_": _none,
        "complex_product_sum_": _none,
    }
    for name in NAMES:
        torch.library.register_fake(f"vit5::{name}", fakes[name])
    torch.library.register_autograd("vit5::rms_norm", _rms_backward, setup_context=_rms_setup)
    torch.library.register_autograd("vit5::gate", _gate_backward, setup_context=_gate_setup)
    torch.library.register_autograd("vit5::scaled_add", _scaled_add_backward, setup_context=_scaled_add_setup)
    torch.library.register_autograd("vit5::rope", _rope_backward, setup_context=_rope_setup)
    OPERATORS.update({f"vit5::{name}": getattr(torch.ops.vit5, name).default for name in NAMES})


native.on_load(_register)
