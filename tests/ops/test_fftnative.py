"""The fused 2-D FFT convolution kernel (vit5.ops.fftnative): values, layouts, refusals, gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vit5.ops import fftnative, native
from vit5.ops.fftconv import fft_conv_zero_lowmem
from vit5.ops.fftplan import plan_fft_conv
from vit5.ops.route import use_kernel

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler for the native kernels")


def direct(x: torch.Tensor, kernel: torch.Tensor, starts: tuple[int, int]) -> torch.Tensor:
    """fp64 zero-padded depthwise convolution of channels-last ``x`` cropped at ``starts``."""
    k_h, k_w = kernel.shape[-2:]
    n_h, n_w = x.shape[1:3]
    weight = kernel[0].double().flip(-1, -2).unsqueeze(1)  # (C, 1, K_h, K_w)
    full = F.conv2d(x.double().movedim(-1, 1), weight, padding=(k_h - 1, k_w - 1), groups=x.shape[-1])
    return full[:, :, starts[0] : starts[0] + n_h, starts[1] : starts[1] + n_w].movedim(1, -1)


CASES = [  # batch, grid, channels, taps: powers of two and not, channel tails, even taps
    (2, (8, 8), 32, (15, 15)),
    (1, (16, 8), 20, (31, 15)),
    (3, (5, 4), 37, (9, 7)),
    (2, (6, 7), 16, (4, 6)),
    (1, (1, 3), 5, (1, 5)),
    (1, (32, 32), 48, (63, 63)),
]


@pytest.mark.parametrize("batch,grid,channels,taps", CASES, ids=str)
def test_matches_a_direct_convolution(batch, grid, channels, taps) -> None:
    torch.manual_seed(0)
    packed = torch.randn(batch, *grid, 3 * channels)
    x = packed[..., channels : 2 * channels]  # a channel slice of a packed projection, read in place
    kernel = torch.randn(1, channels, *taps)
    plan = plan_fft_conv(grid, taps, (False, False))
    assert fftnative.supports(x, plan)
    spec = fftnative.spectrum(kernel, plan)
    f_h, f_w = fftnative.fused_sizes(plan)  # one frequency of each pair (k, -k) is stored
    assert spec.shape == (-(-channels // 16), f_h * f_w // 2 + 2, 4, 8)
    y = fftnative.convolve(x, spec, plan)
    expected = direct(x, kernel, plan.starts)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.is_contiguous()
    assert (y.double() - expected).abs().max() <= 2e-6 * expected.abs().max()
    shortcut = torch.randn(channels)
    fused = fftnative.convolve(x, fftnative.spectrum(kernel, plan), plan, shortcut=shortcut)
    # the shortcut folded into the kernel: PyTorch's shortcut * x + y to fp32 rounding
    torch.testing.assert_close(fused, shortcut * x + y, rtol=1e-6, atol=1e-6)


def test_kernel_spectrum_reads_any_strides_and_any_crop_start() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 8, 24)
    kernel_last = torch.randn(1, 15, 15, 24)  # how CKConvND generates kernels: channels-last
    kernel = kernel_last.movedim(-1, 1)
    for starts in [(7, 7), (6, 8), (8, 6)]:  # crops the 16-point transforms keep alias-free
        plan = dataclasses.replace(plan_fft_conv((8, 8), (15, 15), (False, False)), starts=starts)
        y = fftnative.convolve(x, fftnative.spectrum(kernel, plan), plan)
        # channels-last and channels-first reads of one kernel: equal to fp32 rounding
        strided, contiguous = fftnative.spectrum(kernel, plan), fftnative.spectrum(kernel.contiguous(), plan)
        torch.testing.assert_close(strided, contiguous, rtol=1e-5, atol=2e-4)
        expected = direct(x, kernel, starts)
        assert (y.double() - expected).abs().max() <= 2e-6 * expected.abs().max()


def test_values_do_not_depend_on_batch_channels_or_threads() -> None:
    """Other batch sizes, channel counts and thread splits partition the work differently:
    equal to fp32 rounding (the same bits on this code, not promised). The tolerance is 10x the
    transforms' round-off measured against an fp64 direct convolution here (1.8e-5 absolute,
    outputs up to 66)."""
    torch.manual_seed(2)
    x = torch.randn(3, 16, 16, 40)
    kernel = torch.randn(1, 40, 31, 31)
    plan = plan_fft_conv((16, 16), (31, 31), (False, False))
    spec = fftnative.spectrum(kernel, plan)
    whole = fftnative.convolve(x, spec, plan)
    torch.testing.assert_close(fftnative.convolve(x[1:2], spec, plan), whole[1:2], rtol=1e-5, atol=2e-4)
    first_groups = fftnative.spectrum(kernel[:, :32], plan)
    first = fftnative.convolve(x[..., :32], first_groups, plan)
    torch.testing.assert_close(first, whole[..., :32], rtol=1e-5, atol=2e-4)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fftnative.convolve(x, fftnative.spectrum(kernel, plan), plan)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(one, whole, rtol=1e-5, atol=2e-4)


def test_sizes_are_powers_of_two_of_at_least_twice_the_signal() -> None:
    assert fftnative.fused_sizes(plan_fft_conv((32, 32), (63, 63), (False, False))) == (64, 64)
    assert fftnative.fused_sizes(plan_fft_conv((28, 14), (55, 27), (False, False))) == (64, 32)
    assert fftnative.fused_sizes(plan_fft_conv((1, 2), (1, 3), (False, False))) == (4, 4)


def test_supports_only_what_it_was_written_for() -> None:
    x = torch.randn(2, 8, 8, 16)
    zero = plan_fft_conv((8, 8), (15, 15), (False, False))
    assert fftnative.supports(x, zero)
    assert not fftnative.supports(x, zero, kernel_batch=2)  # per-sample (FiLM) kernels
    assert not fftnative.supports(x, plan_fft_conv((8, 8), (7, 7), (True, True)))  # circular
    assert not fftnative.supports(x, plan_fft_conv((8, 8), (7, 15), (True, False)))  # mixed
    assert not fftnative.supports(torch.randn(2, 8, 16), plan_fft_conv((8,), (15,), (False,)))  # 1-D
    assert not fftnative.supports(x.movedim(-1, 1).contiguous().movedim(1, -1), zero)  # strided channels
    assert not fftnative.supports(x.to(torch.bfloat16), zero)
    assert not fftnative.supports(x[:, :4], zero)  # not the planned signal
    big = plan_fft_conv((600, 8), (1199, 15), (False, False))  # 2048-point transforms
    assert not fftnative.supports(torch.empty(1, 600, 8, 16), big)
    with pytest.raises(ValueError, match=r"does not take FFT sizes \(2048, 16\)"):
        fftnative.spectrum(torch.randn(1, 16, 1199, 15), big)  # the C kernel refuses too
    with native.disabled():  # whether the kernel runs is the route's question, not the input's
        assert fftnative.supports(x, zero)
        assert not use_kernel("fft_conv", any_layout=(x,))


def test_a_spectrum_of_the_wrong_shape_is_refused() -> None:
    x = torch.randn(1, 8, 8, 20)
    plan = plan_fft_conv((8, 8), (15, 15), (False, False))
    spec = fftnative.spectrum(torch.randn(1, 16, 15, 15), plan)  # one group, 20 channels need two
    with pytest.raises(ValueError, match=r"spectrum must be \[2, 130, 4, 8\] contiguous for 20 channels"):
        fftnative.convolve(x, spec, plan)
    with pytest.raises(ValueError, match=r"x must be a channels-last fp32 CPU \[B, 8, 8, C\] tensor"):
        fftnative.convolve(x.to(torch.bfloat16), spec, plan)
    with pytest.raises(ValueError, match=r"shortcut must have shape \[20\]"):
        fftnative.convolve(
            x, fftnative.spectrum(torch.randn(1, 20, 15, 15), plan), plan, shortcut=torch.ones(3)
        )


@pytest.mark.parametrize("taps", [(15, 15), (8, 6)], ids=str)
def test_low_memory_training_runs_the_kernels_forward_and_backward(taps) -> None:
    """Forward, input gradient and kernel gradient of the low-memory FFT convolution on
    channels-last input come from the fused kernels (profiler ranges) and agree with the PyTorch
    transforms."""
    torch.manual_seed(3)
    x = torch.randn(2, 8, 8, 24)
    kernel = torch.randn(1, 24, *taps)
    weight = torch.randn(2, 8, 8, 24).movedim(-1, 1)  # a channels-last output gradient
    results = []
    for fused in (True, False):
        xi, ki = x.clone().requires_grad_(), kernel.clone().requires_grad_()
        with torch.profiler.profile() as prof, native.disabled() if not fused else torch.enable_grad():
            y = fft_conv_zero_lowmem(xi, ki, channels_last=True)
            (y * weight).sum().backward()
        calls = {e.key: e.count for e in prof.key_averages()}
        assert calls.get("vit5::fft_conv2d", 0) == (2 if fused else 0)  # forward, input gradient
        assert calls.get("vit5::fft_conv2d_kernel_grad", 0) == (1 if fused else 0)
        results.append((y.detach(), xi.grad, ki.grad))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,grid,channels,taps", CASES[:5], ids=str)
def test_kernel_gradient_is_the_batch_sum_of_correlations(batch, grid, channels, taps) -> None:
    """dk[c, t] = sum_b sum_i g[b, i, c] x[b, i + s - t, c], against fp64 autograd of the direct
    convolution, for strided inputs and a channels-last kernel layout."""
    torch.manual_seed(4)
    x = torch.randn(batch, *grid, 2 * channels)[..., :channels]
    grad = torch.randn(batch, *grid, channels)
    kernel = torch.randn(1, *taps, channels).movedim(-1, 1)  # channels-last strides, as CKConvND's
    plan = plan_fft_conv(grid, taps, (False, False))
    ours = fftnative.kernel_gradient(x, grad, plan, kernel)
    k64 = kernel.double().requires_grad_()
    (direct(x, k64, plan.starts) * grad.double()).sum().backward()
    assert ours.shape == kernel.shape and ours.stride() == kernel.stride()
    assert (ours.double() - k64.grad).abs().max() <= 2e-6 * k64.grad.abs().max()
    with pytest.raises(ValueError, match="grad must be fp32"):
        fftnative.kernel_gradient(x, grad[..., :1], plan, kernel)


def test_double_backward_runs_on_pytorch_ops() -> None:
    """With create_graph=True the backward is recorded, so it takes PyTorch's transforms: the
    gradient of a gradient matches the kernels-off computation (a kernel call would be a constant)."""
    torch.manual_seed(5)
    x = torch.randn(2, 8, 8, 16)
    kernel = torch.randn(1, 16, 15, 15)
    results = []
    for fused in (True, False):
        xi, ki = x.clone().requires_grad_(), kernel.clone().requires_grad_()
        with native.disabled() if not fused else torch.enable_grad():
            y = fft_conv_zero_lowmem(xi, ki, channels_last=True)
            (gx,) = torch.autograd.grad(y.square().sum(), xi, create_graph=True)
            (gk,) = torch.autograd.grad(gx.square().sum(), ki)
        results.append(gk)
    scale = results[1].abs().max()
    assert scale > 0 and (results[0] - results[1]).abs().max() <= 1e-5 * scale
