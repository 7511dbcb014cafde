"""The route: which implementation runs each fused operator and each long convolution.

Every call that has a fused CPU kernel (:mod:`vit5.ops.kernels`) and a plain PyTorch expression
asks this module, once, which of the two runs; the executors (:mod:`vit5.ops.rmsnorm`,
:mod:`vit5.ops.gates`, :mod:`vit5.ops.scaled_add`, :mod:`vit5.ops.rope`, :mod:`vit5.ops.dftconv`,
:mod:`vit5.ops.fftconv`, the modules) run what they are told and do not test the device,
the capture mode or the library again.

:func:`route_op` is the decision as a pure function of data (``device="cuda"`` may be passed in
a test on a machine without a GPU); :func:`use_kernel` reads the facts of a call (its tensors,
:func:`vit5.ops.capture.capture_mode`, the installed library) and asks it.
:func:`route_long_conv` does the same for a long convolution, whose path is the table of
:func:`vit5.ops.longconv_plan.plan_long_conv` with the fused FFT kernels' verdict from
:func:`route_op` (``"fft_conv"``) as one of its inputs; the plan it returns names the kernels
for the forward pass *and* both gradients, so the backward pass does not decide again.

A kernel runs when (first failing condition wins, the library is asked last so that its one
warning about a missing or stale build comes only when a kernel would have run):

===============  ===================================================================================
condition        why
===============  ===================================================================================
capture mode     :data:`KERNEL_CAPTURE`: every kernel eagerly; the FFT convolution and the gates
                 also under ``torch.compile``, where their operators stay in the graph (they beat
                 the code the compiler generates from ``torch.fft`` and for the gates' backward);
                 the other elementwise chains (norms, residual adds, RoPE) the compiler fuses
                 itself. ``vit5::conv2d_backward`` runs only under ``torch.compile``
                 (:mod:`vit5.ops.conv`: it keeps the eager layouts of the short convolution's
                 backward). ``torch.export`` / ONNX / FX graphs and ``torch.func`` transforms get
                 ATen operators only. Measurements: ``benchmarks/results/*compile-route.md``.
device, dtype    CPU, float32 (the kernels' only build); GPUs take the reference's ``torch.fft``
                 and PyTorch ops.
layout           each operator's own: contiguous, rows in two levels
                 (:func:`vit5.ops.native.row_blocks`) or any strides; shape conditions of the call.
installed        the library was built at install time for this torch and these sources, and is
                 not switched off (``VIT5_NATIVE=0``, :func:`vit5.ops.native.disabled` in eager
                 mode). Operators written with PyTorch ops (:data:`PYTORCH_OPERATORS`) need no
                 library.
===============  ===================================================================================

Grad mode does not enter the operator route: each kernel's forward gives the same bits with and
without autograd (and the backward of a recorded backward pass, ``create_graph=True``, is the
plain formula's, :mod:`vit5.ops.recorded`). In the long-convolution table it picks among paths
whose forwards give the same bits (eval and training forwards stay bit-equal).
"""

from __future__ import annotations

import torch

from vit5.ops import native
from vit5.ops.capture import capture_mode
from vit5.ops.longconv_plan import CAPTURE_MODES, LongConvPlan, plan_long_conv

__all__ = [
    "KERNEL",
    "KERNEL_CAPTURE",
    "PYTORCH_OPERATORS",
    "TORCH",
    "closed_form_backward",
    "route_long_conv",
    "route_op",
    "use_kernel",
]

KERNEL, TORCH = "kernel", "torch"

#: Operator -> the capture modes in which its kernel may run.
KERNEL_CAPTURE: dict[str, tuple[str, ...]] = {
    "rms_norm": ("eager",),
    "gate": ("eager", "compile"),
    "scaled_add": ("eager",),
    "scaled_add_into": ("eager",),
    "rope": ("eager",),
    "complex_product": ("eager",),
    "complex_product_sum": ("eager",),
    "fft_conv": ("eager", "compile"),
    "conv2d_backward": ("compile",),
}

#: Operators implemented with PyTorch ops (``torch.library.custom_op``), not by the library.
PYTORCH_OPERATORS = frozenset({"conv2d_backward"})


def route_op(
    op: str, *, capture: str, device: str, dtype: torch.dtype, layout_ok: bool, installed: bool
) -> str:
    """:data:`KERNEL` or :data:`TORCH` for one call of ``op`` (see the module table).

    Args:
        op: A key of :data:`KERNEL_CAPTURE`.
        capture: :func:`vit5.ops.capture.capture_mode`.
        device: The device type of every tensor of the call (``"cpu"``, ``"cuda"``, ...; a mix is
            any string but ``"cpu"``).
        dtype: The dtype of every tensor of the call.
        layout_ok: The call's tensors have the layout and shapes the kernel reads.
        installed: The kernel library is available and not switched off.

    Raises:
        ValueError: an unknown operator or capture mode.
    """
    if op not in KERNEL_CAPTURE:
        raise ValueError(f"op must be one of {sorted(KERNEL_CAPTURE)}, got {op!r}")
    if capture not in CAPTURE_MODES:
        raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    runs = capture in KERNEL_CAPTURE[op] and device == "cpu" and dtype == torch.float32 and layout_ok
    return KERNEL if runs and installed else TORCH


@torch.compiler.assume_constant_result
def _library_loaded() -> bool:
    """The build and the environment switch (``VIT5_NATIVE``); a constant of a compiled graph
    (loading the library reads files, which dynamo would not trace)."""
    return native.library() is not None


def _installed(capture: str) -> bool:
    """The library, asked last (its warning comes only where a kernel would have run)."""
    if capture == "eager":
        return native.enabled()  # not switched off (env or disabled()), built and loaded
    return _library_loaded()


def use_kernel(
    op: str,
    *contiguous: torch.Tensor,
    strided: tuple[torch.Tensor, ...] = (),
    any_layout: tuple[torch.Tensor, ...] = (),
    layout_ok: bool = True,
) -> bool:
    """Whether ``op``'s kernel runs on these tensors: :func:`route_op` with this call's facts.

    Args:
        op: A key of :data:`KERNEL_CAPTURE`.
        contiguous: Tensors the kernel reads contiguously.
        strided: Tensors read as rows in two levels (:func:`vit5.ops.native.row_blocks`).
        any_layout: Tensors read through their strides.
        layout_ok: The caller's shape conditions hold (checked first, so nothing else is asked
            when they fail).
    """
    if not layout_ok:
        return False
    capture = capture_mode()
    if capture not in KERNEL_CAPTURE[op]:
        return False
    tensors = (*contiguous, *strided, *any_layout)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if not all(t.is_contiguous() for t in contiguous) or any(native.row_blocks(t) is None for t in strided):
        return False
    facts = dict(capture=capture, device="cpu", dtype=torch.float32, layout_ok=True)
    installed = op in PYTORCH_OPERATORS or _installed(capture)
    return route_op(op, **facts, installed=installed) == KERNEL


def closed_form_backward() -> bool:
    """Whether an op without its kernel records its hand-written backward (a custom autograd
    function of PyTorch ops, e.g. :func:`vit5.ops.rmsnorm.rms_norm`'s) rather than autograd's
    trace of its plain expression: autograd is on and the call is eager. Graph capture and
    ``torch.func`` transforms / forward-mode AD (no jvp rule) record the plain expression. Both
    give the same forward bits."""
    return torch.is_grad_enabled() and capture_mode() == "eager"


def fft_conv_layout(x: torch.Tensor) -> bool:
    """Whether channels-last ``x`` ``[B, H, W, C]`` has the layout the fused FFT kernels read
    (4-D, contiguous channels; batch, row and column strides are free)."""
    return x.dim() == 4 and (x.shape[-1] <= 1 or x.stride(-1) == 1)


def route_long_conv(
    x: torch.Tensor,
    *,
    channels_last: bool,
    training: bool,
    channels: int,
    per_sample_kernels: bool,
    zero_padding: bool,
    causal: bool,
    chunked: bool,
) -> LongConvPlan:
    """The plan of one long convolution of ``x`` (``[B, *S, C]`` or ``[B, C, *S]``).

    :func:`vit5.ops.longconv_plan.plan_long_conv` with this call's capture mode, grad mode,
    device and the fused FFT kernels' verdict (:func:`route_op` ``"fft_conv"``: CPU fp32
    channels-last input with contiguous channels, eager or compiled, library installed). The
    library is asked only when the table would take the fused kernels, and the table is then
    read again without them if it is missing.
    """
    capture = capture_mode()
    spatial = tuple(int(n) for n in (x.shape[1:-1] if channels_last else x.shape[2:]))
    layout_ok = channels_last and fft_conv_layout(x)
    fused_possible = (
        route_op(
            "fft_conv",
            capture=capture,
            device=x.device.type,
            dtype=x.dtype,
            layout_ok=layout_ok,
            installed=True,
        )
        == KERNEL
    )

    def plan(fused_input: bool) -> LongConvPlan:
        return plan_long_conv(
            capture=capture,
            grad_enabled=torch.is_grad_enabled(),
            training=training,
            channels_last=channels_last,
            signal=spatial,
            channels=channels,
            per_sample_kernels=per_sample_kernels,
            zero_padding=zero_padding,
            causal=causal,
            chunked=chunked,
            fused_input=fused_input,
            device=x.device.type,
        )

    chosen = plan(fused_possible)
    if chosen.fused and not _installed(capture):
        return plan(False)
    return chosen
