"""``plan_long_conv``: every row of its table, and the FFT sizes of the export path."""

from __future__ import annotations

import pytest

from vit5.ops import longconv_plan
from vit5.ops.fftplan import plan_fft_conv
from vit5.ops.longconv_plan import LongConvPath, LongConvPlan, plan_long_conv
from vit5.ops.tracedconv import pow2_sizes

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
        # rows 1-2: capture, whatever the grad mode; pow2 FFT sizes under export only
        (dict(capture="export"), LongConvPlan(LongConvPath.TRACED_DENSE)),
        (dict(capture="fx", grad_enabled=True), LongConvPlan(LongConvPath.TRACED_DENSE)),
        (dict(capture="export", signal=LARGE), LongConvPlan(LongConvPath.TRACED_FFT, pow2_fft=True)),
        (dict(capture="compile", signal=LARGE), LongConvPlan(LongConvPath.TRACED_FFT)),
        (dict(capture="export", zero_padding=False), LongConvPlan(LongConvPath.TRACED_FFT, pow2_fft=True)),
        (dict(capture="compile", chunked=True), LongConvPlan(LongConvPath.TRACED_DENSE)),
        # row 3
        (dict(chunked=True, grad_enabled=True), LongConvPlan(LongConvPath.FFT_CHUNKED)),
        (dict(chunked=True), LongConvPlan(LongConvPath.FFT_CHUNKED)),
        # rows 4-6: autograd
        (dict(grad_enabled=True, training=True), LongConvPlan(LongConvPath.DENSE)),
        (dict(grad_enabled=True, signal=LARGE), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, channels_last=False), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, per_sample_kernels=True), LongConvPlan(LongConvPath.FFT_LOWMEM)),
        (dict(grad_enabled=True, zero_padding=False), LongConvPlan(LongConvPath.FFT)),
        (dict(grad_enabled=True, causal=True), LongConvPlan(LongConvPath.FFT)),
        # rows 7-8: eval without autograd or conditioning: cached
        (dict(), LongConvPlan(LongConvPath.DENSE, cache=True)),
        (dict(signal=(14, 14), channels=384), LongConvPlan(LongConvPath.DENSE, cache=True)),  # 59 MB
        (dict(signal=LARGE), LongConvPlan(LongConvPath.FFT, cache=True)),
        (dict(channels_last=False), LongConvPlan(LongConvPath.FFT, cache=True)),
        # rows 9-10: no autograd, but training mode or conditioning: built per call
        (dict(training=True), LongConvPlan(LongConvPath.DENSE)),
        (dict(training=True, signal=(14, 14), channels=384), LongConvPlan(LongConvPath.FFT)),
        (dict(per_sample_kernels=True), LongConvPlan(LongConvPath.FFT)),
    ],
)
def test_table_rows(overrides: dict, expected: LongConvPlan) -> None:
    assert plan(**overrides) == expected


def test_budgets_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(longconv_plan, "DENSE_MAX_BYTES", 0)
    monkeypatch.setattr(longconv_plan, "BUILT_DENSE_MAX_BYTES", 0)
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


@pytest.mark.parametrize(
    "signal, taps, periodic, expected",
    [
        ((14, 14), (27, 27), (False, False), (32, 32)),  # ViT-5-S at 224 px: 28 -> 32
        ((32, 32), (63, 63), (False, False), (64, 64)),
        ((15, 14), (15, 27), (True, False), (15, 32)),  # a circular axis keeps its period
        ((8, 8), (15, 15), (False, False), (16, 16)),  # already a power of two
    ],
)
def test_export_fft_sizes_are_powers_of_two_on_zero_axes(signal, taps, periodic, expected) -> None:
    sizes = pow2_sizes(plan_fft_conv(signal, taps, periodic), periodic)
    assert sizes == expected
