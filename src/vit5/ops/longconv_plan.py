"""Which algorithm computes a long (CKConvND) convolution: one small pure planner.

:func:`plan_long_conv` takes everything that decides how a depthwise long convolution runs and
returns a :class:`LongConvPlan`; ``CKConvND.forward`` only plans, gets the kernel (or its cached
spectrum / operator) and runs the planned path. A call's path can be read off this table without
reading the module (``dense fits`` = the fp32 ``[C, T, T]`` operator, ``T = prod(S)``, is at most
the budget named in the row; ``dense ok`` = zero padding, not causal, channels-last input, one
kernel shared by the batch; first matching row wins):

===  ==========  ======  =============================  ===============  =====  ==========================
row  capture     grad    other conditions               path             cache  why
===  ==========  ======  =============================  ===============  =====  ==========================
1    not eager   any     dense ok, fits                 TRACED_DENSE     no     plain ``index_select`` +
                         :data:`BUILT_DENSE_MAX_BYTES`                          ``bmm``: traceable, one GEMM
1b   compile     any     fused ok                       FFT (no grad) /  no     ``vit5::`` FFT operators
                                                        FFT_LOWMEM,             stay in the graph: they
                                                        ``fused``               beat inductor's FFT code
2    not eager   any     otherwise                      TRACED_FFT       no     plain ``torch.fft`` ops
                                                                                (export: DFT matrices)
3    eager       any     ``use_chunked_fftconv``        FFT_CHUNKED      no     the config asks for it
3b   eager       on      device is not a CPU            FFT              no     the reference's route
                                                                                (``torch.fft``) on GPUs
3c   eager       off     device is not a CPU            FFT              eval   as 3b, spectrum reused
4    eager       on      dense ok, fits                 DENSE            no     one GEMM per channel beats
                         :data:`BUILT_DENSE_MAX_BYTES`                          three FFTs on tiny grids
5    eager       on      fused ok                       FFT_LOWMEM,      no     forward and both gradients
                                                        ``fused``               in cache-resident C++ kernels
6    eager       on      dft ok                         DFT              no     transforms as GEMMs on the
                                                                                channels-last layout
7    eager       on      zero padding, not causal       FFT_LOWMEM       no     backward keeps x, not its
                                                                                spectrum (~4x less memory)
8    eager       on      otherwise (circular, mixed,    FFT              no     autograd through the FFTs
                         causal)
9    eager       off     dense ok, fits                 DENSE            eval   as row 4; the operator
                         :data:`BUILT_DENSE_MAX_BYTES`                          stays in cache
10   eager       off     fused ok                       FFT, ``fused``   eval   as row 5, from the cached
                                                                                kernel spectrum
11   eager       off     dft ok                         DFT              eval   as row 6, from the cached
                                                                                kernel spectrum
12   eager       off     eval, no conditioning, dense   DENSE            yes    built once, reused while
                         ok, fits :data:`DENSE_MAX_BYTES`                       the kernel is unchanged
13   eager       off     otherwise                      FFT              eval   kernel spectrum reused
===  ==========  ======  =============================  ===============  =====  ==========================

``cache`` ``eval`` = cached in eval mode without conditioning (one kernel for every call), built
per call in training mode or with FiLM conditioning (per-sample kernels).

``fused ok`` = the route lets the fused CPU kernels read the input (``fused_input``:
:func:`vit5.ops.route.route_op` ``"fft_conv"``, i.e. eager or compiled, fp32 CPU, contiguous
channels, the library installed and not switched off), channels-last, 2-D, zero padding, not causal, one
kernel for the batch, each axis at most :data:`FUSED_MAX_SIGNAL`. Rows 5 and 10
(:mod:`vit5.ops.fftnative`): per sample and 16 channels, one C++ kernel reads the input in place,
runs radix-2 transforms packed two channels per complex signal in a cache-resident buffer,
multiplies by the kernel spectrum and writes ``y`` (eval: ``shortcut * x + y``); the low-memory
backward runs the same kernel for the input gradient and a sibling for the kernel gradient.
Elsewhere (GPUs, bf16, channels-first, circular axes,
FiLM kernels, ``VIT5_NATIVE=0``, no C compiler) the other rows apply, with PyTorch's transforms
(:mod:`vit5.ops.fftplan`) on the FFT rows.

``dft ok`` = zero padding (causal allowed), channels-last input, 1 or 2 spatial axes, each at
most :data:`DFT_MAX_SIGNAL` long (per-sample kernels allowed). Rows 6 and 11
(:mod:`vit5.ops.dftconv`): the transforms are products with real DFT matrices whose long side
is the channel axis, so a call runs a few GEMMs instead of thousands of tiny transforms and
copies; it costs ``O(N F)`` per axis instead of ``O(F log F)``, and a training call keeps the
input's spectrum (about 4x the input) for the backward pass. The bound
:data:`DFT_MAX_SIGNAL` and the order of rows 4 / 9 (small cached operators first) come from
measurements listed in ``benchmarks/results/2026-12-07-ops-notes.md``.

Capture (``torch.compile``, ``torch.export`` / ``torch.onnx.export``, ``torch.fx.symbolic_trace``;
see :mod:`vit5.ops.capture`) takes the traced rows, whatever the grad mode: no caches keyed on
data pointers, no in-place accumulation, no data-dependent Python; only ``torch.compile`` keeps
the fused FFT operators (row 1b, through an autograd function of ``vit5::`` operators with fake
implementations that dynamo traces without a graph break), so exported and FX graphs hold ATen
operators only. A traced graph builds the operator on every call (or a constant folder
turns it into a constant of the file), so the traced dense path has the small per-call budget:
ViT-5-S at 224 px (``T = 196``, ``C = 384``, 59 MB per block) exports as FFTs, a tiny 8 x 8 grid
at ``C = 192`` (3 MB) as the dense operator.

Transforms under export (``dft_matrices``): real DFT matrices, one ``MatMul`` per axis
(:func:`vit5.ops.tracedconv.traced_dft_conv`). ONNX has no complex type; the dynamo exporter does
lower ``rfftn`` / ``irfftn`` to ONNX ``DFT`` (on a trailing real/imaginary axis), and that exports
and matches, but onnxruntime runs its ``DFT`` far slower than the matrix form (measurements in
``benchmarks/results/2026-12-07-ops-notes.md``, "longconv_plan: export"). As matrices, the zero
padding and the crop fold into the tables, nothing in the graph is complex, and the smallest
alias-free size per axis (``>= N + (K + 1) // 2``, from :func:`vit5.ops.fftplan.plan_fft_conv`)
is used: a size need not be a power of two for a matrix product. The cost is ``O(N F)`` per axis
instead of ``O(F log F)``, small next to the block's linear layers at these grids (timings in
``benchmarks/results/2026-12-07-ops-notes.md``). FX keeps ``torch.fft``; compile keeps
``torch.fft`` where the fused operators do not apply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vit5.ops import fftnative
from vit5.ops.denseconv import dense_operator_bytes

__all__ = [
    "BUILT_DENSE_MAX_BYTES",
    "CAPTURE_MODES",
    "DENSE_MAX_BYTES",
    "DFT_MAX_DIM",
    "DFT_MAX_SIGNAL",
    "FUSED_MAX_SIGNAL",
    "LongConvPath",
    "LongConvPlan",
    "plan_long_conv",
]

#: Largest cached dense operator (``C T^2`` fp32) used in eval mode where the DFT path does not
#: apply (3-D grids, 1-D sequences longer than :data:`DFT_MAX_SIGNAL`); larger ones use the FFTs.
DENSE_MAX_BYTES = 96 * 2**20
#: Largest dense operator built on every call (training, uncached inference, traced graphs) or
#: preferred to the DFT path in eval: in training it and its gradient are kept per block and
#: step, and an operator this small stays in cache (a 7x7 grid at ``C = 64`` is 0.6 MB, an 8x8
#: grid at ``C = 192`` 3 MB).
BUILT_DENSE_MAX_BYTES = 4 * 2**20
#: Longest axis the DFT-matrix path (rows 6 and 11) takes; longer grids use the FFTs.
DFT_MAX_SIGNAL = 24
#: Spatial axes the DFT-matrix path handles (1-D sequences and 2-D grids).
DFT_MAX_DIM = 2
#: Longest axis the fused FFT kernels (rows 5 and 10) take: their radix-2 transforms are twice the
#: signal, at most :data:`vit5.ops.fftnative.MAX_SIZE` points (the one definition of that limit).
FUSED_MAX_SIGNAL = fftnative.MAX_SIZE // 2
CAPTURE_MODES = ("eager", "compile", "export", "fx", "transform")


class LongConvPath(str, enum.Enum):
    """The algorithms of a long convolution (see the module table)."""

    DENSE = "dense"  #: ``[C, T, T]`` operator, one batched GEMM (``vit5.ops.denseconv``)
    FFT = "fft"  #: kernel spectrum times signal spectrum (``vit5.ops.fftplan``)
    FFT_LOWMEM = "fft_lowmem"  #: FFT with a backward that keeps x (``fft_conv_zero_lowmem``)
    FFT_CHUNKED = "fft_chunked"  #: FFT over ``CHUNK_SIZE`` channels at a time, plain autograd
    DFT = "dft"  #: transforms as real DFT-matrix products on channels-last data (``vit5.ops.dftconv``)
    TRACED_DENSE = "traced_dense"  #: dense operator from plain ops (``vit5.ops.tracedconv``)
    TRACED_FFT = "traced_fft"  #: FFTs (export: DFT matrices) from plain ops (``vit5.ops.tracedconv``)


@dataclass(frozen=True)
class LongConvPlan:
    """What :func:`plan_long_conv` decided.

    Attributes:
        path: The algorithm.
        cache: Keep the kernel's spectrum (or dense operator) for the next call with the same
            input size and unchanged kernel tensors (eval mode, no autograd, no conditioning,
            eager only); on the DFT path the operand is then the kernel's DFT-matrix spectrum.
        dft_matrices: Transform with real DFT matrices instead of ``torch.fft`` (export only, see
            the module doc).
        fused: The FFT path runs the fused CPU kernels of :mod:`vit5.ops.fftnative` (rows 1b, 5
            and 10) instead of ``torch.fft``: the forward pass and, on the ``FFT_LOWMEM`` path,
            both gradients (the backward pass does not decide again).
        captured: The call is being captured (compile, export, FX, ``torch.func``): the module
            keeps no state from it (no cache is read, written or cleared).
    """

    path: LongConvPath
    cache: bool = False
    dft_matrices: bool = False
    fused: bool = False
    captured: bool = False


def plan_long_conv(
    *,
    capture: str,
    grad_enabled: bool,
    training: bool,
    channels_last: bool,
    signal: tuple[int, ...],
    channels: int,
    per_sample_kernels: bool,
    zero_padding: bool,
    causal: bool,
    chunked: bool,
    dense_max_bytes: int | None = None,
    built_dense_max_bytes: int | None = None,
    fused_input: bool = False,
    device: str = "cpu",
) -> LongConvPlan:
    """The path of one long-convolution call (first matching row of the module table).

    Args:
        capture: :func:`vit5.ops.capture.capture_mode` (``"eager"``, ``"compile"``, ``"export"``,
            ``"fx"``).
        grad_enabled: ``torch.is_grad_enabled()``.
        training: The module's ``training`` flag.
        channels_last: The input is ``[B, *S, C]`` (else ``[B, C, *S]``).
        signal: Spatial size ``S``.
        channels: ``C``.
        per_sample_kernels: The kernel has one copy per sample (FiLM conditioning).
        zero_padding: Zero boundary on every axis (else circular on some axis).
        causal: Causal 1-D convolution.
        chunked: The module was built with ``use_chunked_fftconv=True``.
        dense_max_bytes: Budget of a cached dense operator (default :data:`DENSE_MAX_BYTES`,
            read at call time).
        built_dense_max_bytes: Budget of a dense operator built on every call (default
            :data:`BUILT_DENSE_MAX_BYTES`, read at call time).
        fused_input: The input is one the fused CPU kernels read
            (:func:`vit5.ops.fftnative.takes_input`).
        device: The input's device type (``"cpu"``, ``"cuda"``, ...): off the CPU the eager
            route is ``torch.fft`` (rows 3b / 3c), the route of nvSubquadratic's ``torch_fft``
            backend; the CPU-tuned rows (dense operator, DFT matrices, fused kernels) are not
            taken there.

    Raises:
        ValueError: an unknown ``capture`` mode.
    """
    if capture not in CAPTURE_MODES:
        raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    if dense_max_bytes is None:
        dense_max_bytes = DENSE_MAX_BYTES
    if built_dense_max_bytes is None:
        built_dense_max_bytes = BUILT_DENSE_MAX_BYTES
    dense_ok = zero_padding and not causal and channels_last and not per_sample_kernels
    size = dense_operator_bytes(tuple(signal), channels) if dense_ok else None
    built_fits = size is not None and size <= built_dense_max_bytes
    dft_ok = (
        zero_padding and channels_last and 1 <= len(signal) <= DFT_MAX_DIM and max(signal) <= DFT_MAX_SIGNAL
    )
    fused_ok = (
        fused_input
        and channels_last
        and len(signal) == 2
        and zero_padding
        and not causal
        and not per_sample_kernels
        and max(signal) <= FUSED_MAX_SIGNAL
    )
    if capture != "eager":
        if built_fits:
            return LongConvPlan(LongConvPath.TRACED_DENSE, captured=True)
        if capture == "compile" and fused_ok:
            path = LongConvPath.FFT_LOWMEM if grad_enabled else LongConvPath.FFT
            return LongConvPlan(path, fused=True, captured=True)
        return LongConvPlan(LongConvPath.TRACED_FFT, dft_matrices=capture == "export", captured=True)
    if chunked:
        return LongConvPlan(LongConvPath.FFT_CHUNKED)
    if device != "cpu":
        if grad_enabled:
            return LongConvPlan(LongConvPath.FFT)
        return LongConvPlan(LongConvPath.FFT, cache=not training and not per_sample_kernels)
    if grad_enabled:
        if built_fits:
            return LongConvPlan(LongConvPath.DENSE)
        if fused_ok:
            return LongConvPlan(LongConvPath.FFT_LOWMEM, fused=True)
        if dft_ok:
            return LongConvPlan(LongConvPath.DFT)
        if zero_padding and not causal:
            return LongConvPlan(LongConvPath.FFT_LOWMEM)
        return LongConvPlan(LongConvPath.FFT)
    cache = not training and not per_sample_kernels
    if built_fits:
        return LongConvPlan(LongConvPath.DENSE, cache=cache)
    if fused_ok:
        return LongConvPlan(LongConvPath.FFT, cache=cache, fused=True)
    if dft_ok:
        return LongConvPlan(LongConvPath.DFT, cache=cache)
    if cache and size is not None and size <= dense_max_bytes:
        return LongConvPlan(LongConvPath.DENSE, cache=True)
    return LongConvPlan(LongConvPath.FFT, cache=cache)
