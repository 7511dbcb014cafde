"""``plan_long_conv``: every row of its table, and the FFT sizes of the export path."""

from __future__ import annotations

import pytest
import torch

from vit5.ops import longconv_plan
from vit5.ops.fftplan import apply_spectrum, kernel_spectrum, plan_fft_conv
from vit5.ops.longconv_plan import LongConvPath, LongConvPlan, plan_long_conv
from vit5.ops.tracedconv import traced_dft_conv, traced_fft_conv

SMALL, LARGE = (7, 7), (32, 32)  # at C = 64: 0.6 MB and 268 MB dense operators


def plan(**overrides: object) -> LongConvPlan:
    arguments = dict(
        capture="eager",
        grad_enabled=False,
        training=False,
        channels_last=True,
        signal=SMALL,
        channels=64,
        per_sample_kernels=False,
        zero_padding=True,
        causal=False,
        chunked=False,
    )
    return plan_long_conv(**{**arguments, **overrides})


@pytest.mark.parametrize(
    "overrides, expected",
    [
        # rows 1-2: capture, whatever the grad mode; DFT matrices under export only
        (dict(capture="export"), LongConvPlan(LongConvPath.TRACED_DENSE, captured=True)),
        (dict(capture="fx", grad_enabled=True), LongConvPlan(LongConvPath.TRACED_DENSE, captured=True)),
        (
            dict(capture="export", signal=LARGE),
            LongConvPlan(LongConvPath.TRACED_FFT, dft_matrices=True, captured=True),
        ),
        (dict(capture="compile", signal=LARGE), LongConvPlan(LongConvPath.TRACED_FFT, captured=True)),
        (
            dict(capture="export", zero_padding=False),
            LongConvPlan(LongConvPath.TRACED_FFT, dft_matrices=True, captured=True),
        ),
        (dict(capture="compile", chunked=True), LongConvPlan(LongConvPath.TRACED_DENSE, captured=True)),
        # row 1b: torch.compile keeps the fused FFT kernels (forward and both gradients)
        (
            dict(capture="compile", signal=LARGE, fused_input=True),
            LongConvPlan(LongConvPath.FFT, fused=True, captured=True),
        ),
        (
            dict(capture="compile", signal=LARGE, fused_input=True, grad_enabled=True, training=True),
            LongConvPlan(LongConvPath.FFT_LOWMEM, fused=True, captured=True),
        ),
        (
            dict(capture="export", signal=LARGE, fused_input=True),
            LongConvPlan(LongConvPath.TRACED_FFT, dft_matrices=True, captured=True),
        ),
        (
            dict(capture="fx", signal=LARGE, fused_input=True),
            LongConvPlan(LongConvPath.TRACED_FFT, captured=True),
        ),
        (
            dict(capture="transform", signal=LARGE, fused_input=True),
            LongConvPlan(LongConvPath.TRACED_FFT, captured=True),
        ),
        # row 3
        (dict(chunked=True, grad_enabled=True), LongConvPlan(LongConvPath.FFT_CHUNKED)),
        (dict(chunked=True), LongConvPlan(LongConvPath.FFT_CHUNKED)),
        # rows 4-8: autograd
        (dict(grad_enabled=True, training=True), LongConvPlan(LongConvPath.DENSE)),
        (dict(grad_enabled=True, fused_input=True), LongConvPlan(LongConvPath.DENSE)),  # tiny: dense first
        (
            dict(grad_enabled=True, fused_input=True, signal=(14, 14), channels=384),
            LongConvPlan(LongConvPath.FFT_LOWMEM, fused=True),
        ),
        (
            dict(grad_enabled=True, fused_input=True, signal=(512, 300)),
            LongConvPlan(LongConvPath.FFT_LOWMEM, fused=True),
        ),
        (dict(grad_enabled=True, fused_input=True, signal=(513, 8)), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (
            dict(grad_enabled=True, fused_input=True, signal=(14, 14), per_sample_kernels=True),
            LongConvPlan(LongConvPath.DFT),
        ),
        (dict(grad_enabled=True, fused_input=True, signal=(9,), causal=True), LongConvPlan(LongConvPath.DFT)),
        (dict(grad_enabled=True, fused_input=True, signal=(8, 8, 8)), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (
            dict(grad_enabled=True, fused_input=True, signal=LARGE, channels_last=False),
            LongConvPlan(LongConvPath.FFT_LOWMEM),
        ),
        (
            dict(grad_enabled=True, fused_input=True, signal=LARGE, zero_padding=False),
            LongConvPlan(LongConvPath.FFT),
        ),
        (dict(grad_enabled=True, signal=(14, 14), channels=384), LongConvPlan(LongConvPath.DFT)),
        (dict(grad_enabled=True, signal=(24, 24)), LongConvPlan(LongConvPath.DFT)),  # the bound
        (dict(grad_enabled=True, signal=LARGE), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, per_sample_kernels=True), LongConvPlan(LongConvPath.DFT)),
        (dict(grad_enabled=True, causal=True, signal=(9,)), LongConvPlan(LongConvPath.DFT)),
        (dict(grad_enabled=True, signal=(25, 24)), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, signal=(8, 8, 8), channels=384), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, channels_last=False), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, zero_padding=False), LongConvPlan(LongConvPath.FFT)),
        (dict(grad_enabled=True, causal=True, signal=(64,)), LongConvPlan(LongConvPath.FFT)),
        # rows 9-13: no autograd; eval without conditioning caches the operand
        (dict(), LongConvPlan(LongConvPath.DENSE, cache=True)),  # 0.6 MB operator
        (dict(fused_input=True), LongConvPlan(LongConvPath.DENSE, cache=True)),
        (
            dict(fused_input=True, signal=(14, 14), channels=384),
            LongConvPlan(LongConvPath.FFT, cache=True, fused=True),
        ),
        (
            dict(fused_input=True, signal=LARGE, training=True),
            LongConvPlan(LongConvPath.FFT, fused=True),
        ),
        (
            dict(fused_input=True, signal=LARGE, per_sample_kernels=True),
            LongConvPlan(LongConvPath.FFT),
        ),
        (
            dict(fused_input=True, signal=(4, 4, 4), channels=384),
            LongConvPlan(LongConvPath.DENSE, cache=True),
        ),
        (dict(signal=(14, 14), channels=384), LongConvPlan(LongConvPath.DFT, cache=True)),  # 59 MB
        (dict(signal=(24, 24), channels=384), LongConvPlan(LongConvPath.DFT, cache=True)),
        (dict(signal=(9,), causal=True), LongConvPlan(LongConvPath.DFT, cache=True)),
        (dict(signal=(40,), channels=384), LongConvPlan(LongConvPath.DENSE, cache=True)),  # 1-D, 2.5 MB
        (dict(signal=(100,), channels=384), LongConvPlan(LongConvPath.DENSE, cache=True)),  # 15 MB
        (dict(signal=(4, 4, 4), channels=384), LongConvPlan(LongConvPath.DENSE, cache=True)),  # 6 MB
        (dict(signal=LARGE), LongConvPlan(LongConvPath.FFT, cache=True)),
        (dict(signal=(600,), channels=384), LongConvPlan(LongConvPath.FFT, cache=True)),  # 553 MB
        (dict(channels_last=False), LongConvPlan(LongConvPath.FFT, cache=True)),
        (dict(zero_padding=False), LongConvPlan(LongConvPath.FFT, cache=True)),
        # the same rows in training mode or with conditioning: built per call, nothing cached
        (dict(training=True), LongConvPlan(LongConvPath.DENSE)),
        (dict(training=True, signal=(14, 14), channels=384), LongConvPlan(LongConvPath.DFT)),
        (dict(per_sample_kernels=True), LongConvPlan(LongConvPath.DFT)),
        (dict(training=True, signal=(100,), channels=384), LongConvPlan(LongConvPath.FFT)),
        (dict(per_sample_kernels=True, signal=LARGE), LongConvPlan(LongConvPath.FFT)),
    ],
)
def test_table_rows(overrides: dict, expected: LongConvPlan) -> None:
    assert plan(**overrides) == expected


def test_budgets_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longconv_plan, "DENSE_MAX_BYTES", 0)
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
    assert plan() == LongConvPlan(LongConvPath.DFT, cache=True)
    assert plan(grad_enabled=True) == LongConvPlan(LongConvPath.DFT)
    monkeypatch.setattr(longconv_plan, "DFT_MAX_SIGNAL", 6)
    assert plan() == LongConvPlan(LongConvPath.FFT, cache=True)
    assert plan(grad_enabled=True) == LongConvPlan(LongConvPath.FFT_LOWMEM)
    assert plan(capture="export").path is LongConvPath.TRACED_FFT
    assert plan(dense_max_bytes=1 << 30) == LongConvPlan(LongConvPath.DENSE, cache=True)


def test_batch_size_is_not_an_input() -> None:
    with pytest.raises(TypeError):
        plan(batch=8)


def test_unknown_capture_mode() -> None:
    with pytest.raises(ValueError, match="capture must be one of"):
        plan(capture="jit")


CONVOLUTIONS = [  # (signal, taps, periodic, causal)
    ((5, 4), (9, 7), (False, False), False),
    ((6, 5), (5, 5), (True, True), False),
    ((6, 5), (5, 9), (True, False), False),
    ((7,), (7,), (False,), True),
    ((14, 14), (27, 27), (False, False), False),
]


@pytest.mark.parametrize("signal, taps, periodic, causal", CONVOLUTIONS)
def test_traced_convolutions_match_the_eager_spectrum_path(signal, taps, periodic, causal) -> None:
    torch.manual_seed(0)
    x, kernel = torch.randn(3, 4, *signal), torch.randn(1, 4, *taps)
    plan = plan_fft_conv(signal, taps, periodic, causal)
    expected = apply_spectrum(x, kernel_spectrum(kernel, plan), plan)
    for convolve in (traced_fft_conv, traced_dft_conv):
        out = convolve(x, kernel, plan)
        assert out.shape == expected.shape
        assert float((out - expected).abs().max() / expected.abs().max()) < 2e-6


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("signal", [SMALL, (14, 14), (24, 24), LARGE])
def test_cuda_route_is_torch_fft(grad: bool, signal: tuple[int, int]) -> None:
    """On a GPU (the device passed as data) the eager route is the reference's torch.fft, whatever
    the grid: no CPU-tuned dense operator, DFT matrices or fused kernels."""
    got = plan(device="cuda", grad_enabled=grad, signal=signal, fused_input=True)
    assert got == LongConvPlan(LongConvPath.FFT, cache=not grad)
    training = plan(device="cuda", grad_enabled=grad, signal=signal, training=True)
    assert training == LongConvPlan(LongConvPath.FFT)
    assert plan(device="cuda", capture="compile", signal=signal).path in (
        LongConvPath.TRACED_DENSE,
        LongConvPath.TRACED_FFT,
    )
    assert plan(device="cuda", capture="transform", signal=signal).path in (
        LongConvPath.TRACED_DENSE,
        LongConvPath.TRACED_FFT,
    )


def test_fused_limit_has_one_definition() -> None:
    from vit5.ops import fftnative

    assert longconv_plan.FUSED_MAX_SIGNAL * 2 == fftnative.MAX_SIZE
    edge = longconv_plan.FUSED_MAX_SIGNAL
    assert plan(signal=(edge, 4), fused_input=True, channels=1).fused
    assert not plan(signal=(edge + 1, 4), fused_input=True, channels=1).fused
    fft_plan = plan_fft_conv((edge, 4), (2 * edge - 1, 7), (False, False))
    assert max(fftnative.fused_sizes(fft_plan)) == fftnative.MAX_SIZE
