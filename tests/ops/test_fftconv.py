"""FFT long convolutions vs direct (slow, obvious) convolutions."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from vit5.ops import fftplan, native
from vit5.ops.fftconv import (
    apply_spectrum,
    fft_conv,
    fft_conv_causal,
    fft_conv_circular,
    fft_conv_mixed,
    fft_conv_zero,
    fft_conv_zero_lowmem,
    kernel_spectrum,
    parse_padding,
    plan_fft_conv,
)

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def dense_conv(x: torch.Tensor, kernel: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Explicit sum ``y[i] = sum_j x[j] k[tap(i, j)]`` built as a dense [C, *S_out, *S_in] operator.

    Per axis: ``zero`` tap = ``i - j + K//2`` (valid if in range), ``circular`` tap =
    ``(i - j + (K-1)//2) mod N`` (valid if < K), ``causal`` tap = ``i - j`` (valid if in range).
    """
    d = len(modes)
    sizes, taps = x.shape[2:], kernel.shape[2:]
    index, valid = [], []
    for axis, (mode, n, k) in enumerate(zip(modes, sizes, taps)):
        i = torch.arange(n).view(-1, 1)
        j = torch.arange(n).view(1, -1)
        if mode == "zero":
            t = i - j + k // 2
        elif mode == "circular":
            t = (i - j + (k - 1) // 2) % n
        else:
            t = i - j
        ok = (t >= 0) & (t < k)
        shape = [1] * (2 * d)
        shape[axis], shape[d + axis] = n, n
        index.append(t.clamp(0, k - 1).view(shape))
        valid.append(ok.view(shape))
    mask = torch.ones([1] * (2 * d), dtype=torch.bool)
    for ok in valid:
        mask = mask & ok
    weights = kernel.double()[(slice(None), slice(None), *index)] * mask  # (1|B, C, *S_out, *S_in)
    flat_w = weights.reshape(*weights.shape[:2], x[0, 0].numel(), x[0, 0].numel())
    flat_x = x.double().reshape(*x.shape[:2], -1)
    y = torch.einsum("bcij,bcj->bci", flat_w.expand(x.shape[0], -1, -1, -1), flat_x)
    return y.reshape(x.shape).to(x.dtype)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 2e-5) -> None:
    scale = max(1.0, b.abs().max().item())
    assert (a.double() - b.double()).abs().max().item() / scale < tol


@pytest.mark.parametrize("size", [(7,), (8,), (5, 4), (4, 5), (1, 3), (6, 6), (3, 4, 2), (2, 3, 3)], ids=str)
def test_zero_mode_equals_flipped_conv(size: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    d = len(size)
    x = torch.randn(2, 3, *size)
    kernel = torch.randn(1, 3, *[2 * n - 1 for n in size])
    ours = fft_conv_zero(x, kernel)
    flipped = kernel[0].unsqueeze(1).flip(list(range(2, 2 + d)))  # (C, 1, *K)
    reference = CONV[d](x, flipped, padding=tuple(n - 1 for n in size), groups=3)
    close(ours, reference)


@pytest.mark.parametrize("size", [(5, 4), (6, 7), (9,)], ids=str)
def test_zero_mode_short_kernel_matches_explicit_sum(size: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 2, *size)
    kernel = torch.randn(1, 2, *[2 * ((n + 1) // 2) - 1 for n in size])  # the single-grid kernel
    close(fft_conv_zero(x, kernel), dense_conv(x, kernel, ("zero",) * len(size)))


@pytest.mark.parametrize("size", [(7,), (8,), (5, 4), (4, 6), (3, 3, 4)], ids=str)
def test_circular_mode_equals_modular_sum(size: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, *size)
    kernel = torch.randn(1, 3, *[n if n % 2 else n - 1 for n in size])
    close(fft_conv_circular(x, kernel), dense_conv(x, kernel, ("circular",) * len(size)))


def test_circular_even_size_never_reaches_the_antipodal_displacement() -> None:
    x = torch.zeros(1, 1, 6)
    x[0, 0, 0] = 1.0
    kernel = torch.arange(1.0, 6.0).view(1, 1, 5)  # displacements -2..2
    y = fft_conv_circular(x, kernel)[0, 0]
    # impulse at 0: y[i] = k[(i + 2) mod 6]; displacement 3 (y[3]) has no tap
    expected = torch.tensor([3.0, 4.0, 5.0, 0.0, 1.0, 2.0])
    close(y, expected)


@pytest.mark.parametrize("size,taps", [((7,), 7), ((8,), 8), ((8,), 3), ((5,), 1)])
def test_causal_mode_equals_explicit_sum(size: tuple[int, ...], taps: int) -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 3, *size)
    kernel = torch.randn(1, 3, taps)
    ours = fft_conv_causal(x, kernel)
    close(ours, dense_conv(x, kernel, ("causal",)))
    # causality: changing the future does not change the past
    x2 = x.clone()
    x2[..., -1] += 10.0
    assert torch.allclose(fft_conv_causal(x2, kernel)[..., :-1], ours[..., :-1], atol=1e-5)


@pytest.mark.parametrize(
    "modes", [("circular", "zero"), ("zero", "circular"), ("circular", "zero", "circular")]
)
@pytest.mark.parametrize("odd", [True, False])
def test_mixed_mode_equals_explicit_sum(modes: tuple[str, ...], odd: bool) -> None:
    torch.manual_seed(4)
    sizes = [5, 4, 3][: len(modes)] if odd else [4, 6, 2][: len(modes)]
    taps = [(n if n % 2 else n - 1) if m == "circular" else 2 * n - 1 for m, n in zip(modes, sizes)]
    x = torch.randn(2, 2, *sizes)
    kernel = torch.randn(2, 2, *taps)  # per-sample kernels
    periodic = [m == "circular" for m in modes]
    close(fft_conv_mixed(x, kernel, periodic), dense_conv(x, kernel, modes))
    close(fft_conv(x, kernel, list(modes)), dense_conv(x, kernel, modes))


def test_uniform_lists_dispatch_bit_identically() -> None:
    """A uniform per-axis list or another spelling calls the same function: a no-op, the same bits."""
    torch.manual_seed(5)
    x = torch.randn(2, 3, 5, 6)
    k_zero = torch.randn(1, 3, 9, 11)
    k_circ = torch.randn(1, 3, 5, 5)
    assert torch.equal(fft_conv(x, k_zero, ["zero", "ZERO"]), fft_conv_zero(x, k_zero))
    assert torch.equal(fft_conv(x, k_circ, ["circular", "circular"]), fft_conv_circular(x, k_circ))
    assert torch.equal(fft_conv(x, k_circ, "Circular"), fft_conv_circular(x, k_circ))


def test_per_sample_kernels_match_separate_calls() -> None:
    torch.manual_seed(6)
    x = torch.randn(3, 2, 4, 5)
    kernel = torch.randn(3, 2, 7, 9)
    together = fft_conv_zero(x, kernel)
    # A sample alone is another call of the FFT library (other batch layout and thread split):
    # equal to fp32 rounding of the transforms (the same bits on this code, not promised). The
    # tolerances of this file are ~10x that round-off against fp64 (2.2e-6 here, outputs up to 12).
    for b in range(3):
        torch.testing.assert_close(
            together[b : b + 1], fft_conv_zero(x[b : b + 1], kernel[b : b + 1]), rtol=1e-5, atol=2e-5
        )
    shared = torch.randn(1, 2, 7, 9)
    torch.testing.assert_close(
        fft_conv_zero(x, shared)[1:2], fft_conv_zero(x[1:2], shared), rtol=1e-5, atol=2e-5
    )


@pytest.mark.parametrize(
    "padding,causal,size,taps",
    [
        ("zero", False, (5, 4), (9, 7)),
        ("zero", True, (9,), (9,)),
        (["circular", "zero"], False, (5, 4), (5, 7)),
    ],
)
def test_chunked_matches_unchunked(padding: object, causal: bool, size: tuple, taps: tuple) -> None:
    torch.manual_seed(7)
    x = torch.randn(2, 10, *size)
    kernel = torch.randn(1, 10, *taps)
    whole = fft_conv(x, kernel, padding, causal=causal)
    for chunk in (1, 3, 4, 10, 128):  # chunks are other FFT calls: equal to fp32 rounding
        chunked = fft_conv(x, kernel, padding, causal=causal, chunk_size=chunk)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(
    "periodic,causal,size,taps",
    [
        ((False,), False, (9,), (17,)),
        ((False, False), False, (6, 5), (11, 9)),
        ((True, False), False, (6, 5), (5, 9)),
        ((True, True), False, (6, 5), (3, 4)),
        ((False, False), True, (6, 5), (6, 5)),
        ((False, False, False), False, (3, 4, 2), (5, 7, 3)),
    ],
)
def test_apply_spectrum_chunks_and_accumulation_give_the_training_bits(
    periodic: tuple[bool, ...], causal: bool, size: tuple, taps: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without autograd the channels go through in chunks; the values are those of the single
    recorded pass and of the direct sum, bit for bit across chunk sizes (the promise that an
    eval forward gives the bits of the training forward rests on it), and ``accumulate`` adds
    them in place with the rounding of ``acc + y.to(acc.dtype)``. A sample alone is another call
    of the FFT library: equal to fp32 rounding."""
    torch.manual_seed(11)
    channels = 70
    x = torch.randn(3, channels, *size)
    kernel = torch.randn(1, channels, *taps)
    plan = plan_fft_conv(size, taps, periodic, causal)
    spectrum = kernel_spectrum(kernel, plan)
    recorded = apply_spectrum(x.clone().requires_grad_(), spectrum, plan)  # one pass, autograd
    assert recorded.requires_grad
    modes = ("causal",) * len(size) if causal else tuple("circular" if p else "zero" for p in periodic)
    close(recorded.detach(), dense_conv(x, kernel, modes))
    threads = torch.get_num_threads()
    try:  # (MKL's FFTs round differently with another thread count; the batch must not matter)
        torch.set_num_threads(1)
        single_thread = apply_spectrum(x.clone().requires_grad_(), spectrum, plan).detach()
        monkeypatch.setattr(fftplan, "CHANNEL_CHUNK", 1)
        alone = apply_spectrum(x[1:2], spectrum, plan)
        torch.testing.assert_close(alone, single_thread[1:2], rtol=1e-5, atol=2e-5)
    finally:
        torch.set_num_threads(threads)
    for chunk in (1, 7, 32, 100):
        monkeypatch.setattr(fftplan, "CHANNEL_CHUNK", chunk)
        assert torch.equal(apply_spectrum(x, spectrum, plan), recorded.detach())  # eval == training bits
        alone = apply_spectrum(x[1:2], spectrum, plan)  # another batch: fp32 rounding
        torch.testing.assert_close(alone, recorded.detach()[1:2], rtol=1e-5, atol=2e-5)
        for dtype in (torch.float32, torch.bfloat16):
            base = torch.randn(3, *size, channels).to(dtype)  # channels-last, seen channels-first
            out = base.clone()
            returned = apply_spectrum(x, spectrum, plan, accumulate=out.movedim(-1, 1))
            assert returned.data_ptr() == out.data_ptr()
            expected = base + recorded.detach().to(dtype).movedim(1, -1)
            assert out.dtype == dtype and torch.equal(out, expected)  # in place == out of place


@pytest.mark.parametrize(
    "size,taps,per_sample", [((6, 5), (11, 9), False), ((7,), (13,), True), ((3, 4, 2), (5, 7, 3), False)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_lowmem_backward_matches_autograd_in_any_chunking(
    size: tuple, taps: tuple, per_sample: bool, channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recomputing backward of fft_conv_zero_lowmem (chunked over channels) gives autograd's
    gradients through the plain FFT convolution, for every chunk size. Channels-last 2-D fp32 on
    a CPU runs the fused kernel (vit5.ops.fftnative): the same values to fp32 rounding."""
    torch.manual_seed(13)
    channels = 40
    x = torch.randn(3, channels, *size)
    kernel = torch.randn(3 if per_sample else 1, channels, *taps)
    weight = torch.randn_like(x)
    xr, kr = x.clone().requires_grad_(), kernel.clone().requires_grad_()
    (fft_conv_zero(xr, kr) * weight).sum().backward()
    for chunk in (1, 32, 64):
        monkeypatch.setattr(fftplan, "CHANNEL_CHUNK", chunk)
        xi = (x.movedim(1, -1).contiguous() if channels_last else x.clone()).requires_grad_()
        ki = kernel.clone().requires_grad_()
        y = fft_conv_zero_lowmem(xi, ki, channels_last=channels_last)
        if channels_last and len(size) == 2 and not per_sample and native.library() is not None:
            # the fused kernel, another implementation: equal to fp32 rounding of the transforms
            torch.testing.assert_close(y.detach(), fft_conv_zero(x, kernel), rtol=1e-5, atol=1e-5)
        else:  # the same computation (apply_spectrum): the training forward whose bits eval gives
            assert torch.equal(y.detach(), fft_conv_zero(x, kernel))
        (y * weight).sum().backward()
        grad_x = xi.grad.movedim(-1, 1) if channels_last else xi.grad
        torch.testing.assert_close(grad_x, xr.grad, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(ki.grad, kr.grad, rtol=1e-5, atol=1e-4)


def test_apply_spectrum_accumulate_errors() -> None:
    x = torch.randn(2, 3, 5, 4)
    plan = plan_fft_conv((5, 4), (9, 7), (False, False))
    spectrum = kernel_spectrum(torch.randn(1, 3, 9, 7), plan)
    with pytest.raises(
        ValueError, match=r"accumulate must have the shape of x \(2, 3, 5, 4\), got \(2, 3, 4, 5\)"
    ):
        apply_spectrum(x, spectrum, plan, accumulate=torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="not differentiable"):
        apply_spectrum(x.requires_grad_(), spectrum, plan, accumulate=torch.zeros(2, 3, 5, 4))


def test_fp32_internally_and_output_in_input_dtype() -> None:
    torch.manual_seed(8)
    x = torch.randn(2, 3, 5, 4).bfloat16()
    kernel = torch.randn(1, 3, 9, 7).bfloat16()
    y = fft_conv_zero(x, kernel)
    assert y.dtype == torch.bfloat16
    # computed in fp32 from the bf16 values, then rounded once; the fp32 call may take another
    # implementation (the fused kernels are fp32-only): within one bf16 step (2**-7 relative)
    expected = fft_conv_zero(x.float(), kernel.float()).bfloat16()
    torch.testing.assert_close(y.float(), expected.float(), rtol=2**-7, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fft_conv(x.float(), kernel.float()).dtype == torch.float32


def test_gradients_flow_to_input_and_kernel() -> None:
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    kernel = torch.randn(1, 3, 7, 9, requires_grad=True)
    fft_conv_zero(x, kernel).square().sum().backward()
    assert x.grad is not None and kernel.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(kernel.grad).all()


@pytest.mark.parametrize(
    "padding,data_dim,error",
    [
        ("reflect", 2, ValueError),
        ("zero,circular", 2, ValueError),
        (["zero"], 2, ValueError),
        ([True, False], 2, TypeError),
        (3, 1, TypeError),
    ],
)
def test_parse_padding_rejects_bad_values(padding: object, data_dim: int, error: type) -> None:
    with pytest.raises(error, match="fft_padding"):
        parse_padding(padding, data_dim)


def test_parse_padding_accepts_any_case() -> None:
    assert parse_padding("CIRCULAR", 2) == (True, True)
    assert parse_padding(("Zero", "circular"), 2) == (False, True)


def test_shape_and_tap_errors() -> None:
    x = torch.randn(2, 3, 5, 4)
    with pytest.raises(ValueError, match="same number of dims"):
        fft_conv_zero(x, torch.randn(1, 3, 9))
    with pytest.raises(ValueError, match="kernel must have shape"):
        fft_conv_zero(x, torch.randn(1, 2, 9, 7))
    with pytest.raises(ValueError, match="kernel must have shape"):
        fft_conv_zero(x, torch.randn(3, 3, 9, 7))
    with pytest.raises(ValueError, match="at most 9"):
        fft_conv_zero(x, torch.randn(1, 3, 10, 7))
    with pytest.raises(ValueError, match="at most 5"):
        fft_conv_circular(x, torch.randn(1, 3, 6, 3))
    with pytest.raises(ValueError, match="causal"):
        fft_conv(torch.randn(1, 2, 5), torch.randn(1, 2, 3), "circular", causal=True)
    with pytest.raises(ValueError, match="chunk_size"):
        fft_conv(x, torch.randn(1, 3, 9, 7), chunk_size=0)


def test_dense_reference_itself_matches_conv2d() -> None:
    """Sanity check of the slow reference used above."""
    torch.manual_seed(9)
    for size in itertools.product([3, 4], [2, 5]):
        x = torch.randn(1, 2, *size)
        kernel = torch.randn(1, 2, *[2 * n - 1 for n in size])
        expected = F.conv2d(
            x, kernel[0].unsqueeze(1).flip(-1, -2), padding=tuple(n - 1 for n in size), groups=2
        )
        close(dense_conv(x, kernel, ("zero", "zero")), expected)


def test_channel_chunks_follow_the_spectrum_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPUs: as many channels as fit ``CHANNEL_CHUNK_BYTES`` of the batch's complex64 spectrum (at
    least one), or ``CHANNEL_CHUNK`` when set; other devices: every channel."""
    plan = plan_fft_conv((32, 32), (63, 63), (False, False))  # sizes (64, 64): 64 x 33 bins
    per_channel = 8 * 64 * 33
    x = torch.empty(2, 384, 32, 32)
    assert fftplan.CHANNEL_CHUNK is None
    assert fftplan.channel_chunk(x, plan) == fftplan.CHANNEL_CHUNK_BYTES // (2 * per_channel) == 62
    assert fftplan.channel_chunk(x[:1], plan) == 124  # half the batch, twice the channels
    monkeypatch.setattr(fftplan, "CHANNEL_CHUNK_BYTES", 1)
    assert fftplan.channel_chunk(x, plan) == 1
    monkeypatch.setattr(fftplan, "CHANNEL_CHUNK", 7)
    assert fftplan.channel_chunk(x, plan) == 7
    assert fftplan.channel_chunk(torch.empty(2, 384, 32, 32, device="meta"), plan) == 384


def test_one_chunking_policy_for_channels_and_batches() -> None:
    """fftplan.chunk_slices: equal consecutive slices of at most ``step`` items (at least one per
    slice), the policy of the channel chunks and of dftconv's batch chunks."""
    from vit5.ops import dftconv
    from vit5.ops.fftplan import chunk_slices

    assert chunk_slices(10, 4) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert chunk_slices(8, 8) == [slice(0, 8)]
    assert chunk_slices(3, 0) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert dftconv._chunks(10, dftconv.CHUNK_BYTES // 4, torch.device("cpu")) == chunk_slices(10, 4)
