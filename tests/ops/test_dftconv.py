"""``dft_conv`` (training) and ``dft_conv_spectrum`` (inference from a cached kernel spectrum): the
DFT-matrix path equals the FFT convolutions, values and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vit5.ops.dftconv import dft_conv, dft_conv_spectrum, dft_kernel_spectrum, dft_sizes, dft_supported
from vit5.ops.fftconv import fft_conv_causal, fft_conv_zero
from vit5.ops.fftplan import plan_fft_conv


def _reference(x: torch.Tensor, kernel: torch.Tensor, causal: bool) -> torch.Tensor:
    """fp64 FFT convolution of channels-last tensors (through the channels-first functions)."""
    convolve = fft_conv_causal if causal else fft_conv_zero
    return convolve(x.movedim(-1, 1), kernel.movedim(-1, 1)).movedim(1, -1)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach()).abs().max() / b.detach().abs().max())


def _check(signal: tuple[int, ...], taps: tuple[int, ...], kernel_rows: int, causal: bool, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch, channels = 3, 5
    x = torch.randn(batch, *signal, channels, generator=generator, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(
        kernel_rows, *taps, channels, generator=generator, dtype=torch.float64, requires_grad=True
    )
    expected = _reference(x, kernel, causal)
    weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    grad_x, grad_kernel = torch.autograd.grad(expected, (x, kernel), weights)

    plan = plan_fft_conv(signal, taps, (False,) * len(signal), causal)
    x32 = x.detach().float().requires_grad_()
    kernel32 = kernel.detach().float().requires_grad_()
    out = dft_conv(x32, kernel32, plan)
    assert out.shape == expected.shape and out.dtype == torch.float32
    ours_x, ours_kernel = torch.autograd.grad(out, (x32, kernel32), weights.float())
    assert _relative(out, expected) < 2e-6
    assert _relative(ours_x, grad_x) < 2e-6
    assert _relative(ours_kernel, grad_kernel) < 2e-6


@pytest.mark.parametrize(
    "signal, taps, kernel_rows, causal",
    [
        ((14, 14), (27, 27), 1, False),  # ViT-5 at 224 px, double grid
        ((5, 7), (9, 5), 3, False),  # anisotropic, fewer taps than the double grid, per-sample kernels
        ((6, 6), (7, 7), 1, False),  # single grid (about N taps)
        ((9,), (17,), 1, False),
        ((9,), (9,), 1, True),
        ((1, 1), (1, 1), 1, False),
    ],
    ids=str,
)
def test_values_and_gradients_match_the_fft_convolution(signal, taps, kernel_rows, causal) -> None:
    _check(signal, taps, kernel_rows, causal, seed=0)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    single=st.booleans(),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_zero_boundary_grid(h: int, w: int, single: bool, per_sample: bool, seed: int) -> None:
    taps = tuple(2 * ((n + 1) // 2) - 1 if single else 2 * n - 1 for n in (h, w))
    _check((h, w), taps, 3 if per_sample else 1, False, seed)


def test_runs_in_fp32_under_autocast_and_returns_the_input_dtype() -> None:
    x = torch.randn(2, 6, 5, 4, dtype=torch.bfloat16, requires_grad=True)
    kernel = torch.randn(1, 11, 9, 4, requires_grad=True)
    plan = plan_fft_conv((6, 5), (11, 9), (False, False))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dft_conv(x, kernel, plan)
    assert out.dtype == torch.bfloat16
    expected = _reference(x.detach().double(), kernel.detach().double(), False)
    assert _relative(out, expected) < 1e-2  # bf16 output rounding only
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and kernel.grad.dtype == torch.float32


def test_only_the_requested_gradient_is_computed() -> None:
    x = torch.randn(2, 4, 4, 3, requires_grad=True)
    kernel = torch.randn(1, 7, 7, 3)  # a fixed kernel
    out = dft_conv(x, kernel, plan_fft_conv((4, 4), (7, 7), (False, False)))
    out.sum().backward()
    assert x.grad is not None and kernel.grad is None


def test_unsupported_plans_and_mismatched_shapes_are_refused() -> None:
    circular = plan_fft_conv((6, 5), (5, 5), (True, True))
    assert not dft_supported(circular)
    assert not dft_supported(plan_fft_conv((3, 3, 3), (5, 5, 5), (False,) * 3))
    with pytest.raises(ValueError, match="1-D or 2-D zero-boundary"):
        dft_conv(torch.randn(1, 6, 5, 2), torch.randn(1, 5, 5, 2), circular)
    plan = plan_fft_conv((6, 5), (11, 9), (False, False))
    with pytest.raises(ValueError, match=r"expects x \[B, \*\(6, 5\), C\]"):
        dft_conv(torch.randn(1, 5, 6, 2), torch.randn(1, 11, 9, 2), plan)
    with pytest.raises(ValueError, match="1 or B=2 rows"):
        dft_conv(torch.randn(2, 6, 5, 2), torch.randn(3, 11, 9, 2), plan)


@pytest.mark.parametrize(
    "signal, taps, kernel_rows", [((14, 14), (27, 27), 1), ((5, 3), (9, 5), 2), ((9,), (17,), 1)]
)
def test_shortcut_term_and_its_gradient(signal, taps, kernel_rows) -> None:
    """``dft_conv(..., shortcut=s)`` = ``s * x + conv``, with every gradient (CKConvND's skip term)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, *signal, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(kernel_rows, *taps, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(4, generator=generator, dtype=torch.float64, requires_grad=True)
    expected = skip * x + _reference(x, kernel, False)
    weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad(expected, (x, kernel, skip), weights)
    ours_in = [t.detach().float().requires_grad_() for t in (x, kernel, skip)]
    out = dft_conv(
        ours_in[0], ours_in[1], plan_fft_conv(signal, taps, (False,) * len(signal)), shortcut=ours_in[2]
    )
    assert _relative(out, expected) < 2e-6
    for ours, theirs in zip(torch.autograd.grad(out, ours_in, weights.float()), grads):
        assert ours.dtype == torch.float32 and _relative(ours, theirs) < 2e-6
    with pytest.raises(ValueError, match=r"shortcut must have shape \[C=4\]"):
        dft_conv(
            ours_in[0],
            ours_in[1],
            plan_fft_conv(signal, taps, (False,) * len(signal)),
            shortcut=ours_in[2][:3],
        )


def test_transform_sizes_are_the_smallest_alias_free_ones() -> None:
    assert dft_sizes(plan_fft_conv((14, 14), (27, 27), (False, False))) == (27, 27)  # FFT plan: 28
    assert dft_sizes(plan_fft_conv((7, 6), (7, 6), (False, False))) == (10, 9)  # odd / even taps
    assert dft_sizes(plan_fft_conv((9,), (9,), (False,), causal=True)) == (17,)
    for n in range(1, 20):
        for k in range(1, 2 * n):
            plan = plan_fft_conv((n,), (k,), (False,))
            (size,) = dft_sizes(plan)
            start, length = plan.starts[0], n + k - 1
            assert size <= plan.sizes[0]
            # outputs start..start+n-1 fold onto p +- size: outside the linear result, but not at size - 1
            assert start + size >= length and start + n - 1 - size < 0
            assert not (start + size - 1 >= length and start + n - 1 - (size - 1) < 0)


@pytest.mark.parametrize("kernel_rows", [1, 3])
def test_batch_chunks_give_the_same_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch, kernel_rows: int
) -> None:
    """Several batch chunks (one sample each here): the same results as one chunk."""
    from vit5.ops import dftconv

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 5, 4, generator=generator)
    kernel = torch.randn(kernel_rows, 11, 9, 4, generator=generator)
    skip = torch.randn(4, generator=generator)
    plan = plan_fft_conv((6, 5), (11, 9), (False, False))
    weights = torch.randn(3, 6, 5, 4, generator=generator)

    def run() -> list[torch.Tensor]:
        inputs = [t.clone().requires_grad_() for t in (x, kernel, skip)]
        out = dft_conv(inputs[0], inputs[1], plan, shortcut=inputs[2])
        return [out.detach(), *torch.autograd.grad(out, inputs, weights)]

    whole = run()
    monkeypatch.setattr(dftconv, "CHUNK_BYTES", 1)
    cpu = torch.device("cpu")
    assert dftconv._chunks(3, 4096, cpu) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert dftconv._chunks(3, 4096, torch.device("cuda")) == [slice(0, 3)]  # GPUs: one launch per stage
    for chunked, single in zip(run(), whole):
        torch.testing.assert_close(chunked, single, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "signal, taps, kernel_rows, causal",
    [((14, 14), (27, 27), 1, False), ((6, 5), (11, 9), 7, False), ((9,), (9,), 1, True)],
    ids=str,
)
@pytest.mark.parametrize("chunk_bytes", [None, 1, "three"])
def test_cached_spectrum_gives_the_bits_of_the_training_forward(
    signal, taps, kernel_rows, causal, chunk_bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inference path (kernel spectrum made once, two reused chunk buffers) returns exactly the
    training forward's values, and matches the fp64 FFT convolution; with one chunk, one sample per
    chunk, or uneven chunks (2, 2, 3 samples: the buffers are sized for the largest)."""
    from vit5.ops import dftconv

    generator = torch.Generator().manual_seed(4)
    batch, channels = 7, 6
    x = torch.randn(batch, *signal, channels, generator=generator)
    kernel = torch.randn(kernel_rows, *taps, channels, generator=generator)
    skip = torch.randn(channels, generator=generator)
    plan = plan_fft_conv(signal, taps, (False,) * len(signal), causal)
    spectrum = dft_kernel_spectrum(kernel, plan)
    assert spectrum.dtype == torch.float32 and not spectrum.requires_grad
    sizes = [batch]
    if chunk_bytes == 1:
        sizes = [1] * batch
    elif chunk_bytes == "three":  # 3 samples' spectra per chunk: 7 = 2 + 2 + 3
        chunk_bytes, sizes = 3 * spectrum[0].numel() * 4, [2, 2, 3]
    if chunk_bytes is not None:
        monkeypatch.setattr(dftconv, "CHUNK_BYTES", chunk_bytes)
    assert [
        p.stop - p.start for p in dftconv._chunks(batch, spectrum[0].numel() * 4, torch.device("cpu"))
    ] == sizes
    trained = dft_conv(x.requires_grad_(), kernel.requires_grad_(), plan, shortcut=skip.requires_grad_())
    with torch.no_grad():
        cached = dft_conv_spectrum(x, spectrum, plan, shortcut=skip)
        uncached = dft_conv(x, kernel, plan, shortcut=skip)  # no autograd: the same forward
    # promise: eval forwards (cached spectrum; per-sample kernels build it per call) give the training bits
    assert torch.equal(cached, trained.detach()) and torch.equal(uncached, cached)
    expected = skip.double() * x.detach().double() + _reference(
        x.detach().double(), kernel.detach().double(), causal
    )
    assert _relative(cached, expected) < 2e-6


def test_cached_spectrum_dtypes_and_refusals() -> None:
    plan = plan_fft_conv((6, 5), (11, 9), (False, False))
    spectrum = dft_kernel_spectrum(torch.randn(1, 11, 9, 4, dtype=torch.float64), plan)
    assert spectrum.shape == (1, 6, 2, 9 * 4) and spectrum.dtype == torch.float32  # sizes (11, 9)
    x = torch.randn(2, 6, 5, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dft_conv_spectrum(x, spectrum, plan)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    with pytest.raises(ValueError, match="1-D or 2-D zero-boundary"):
        dft_kernel_spectrum(torch.randn(1, 5, 5, 4), plan_fft_conv((6, 5), (5, 5), (True, True)))
    with pytest.raises(ValueError, match=r"kernel must be \[1\|B, \*\(11, 9\), C\]"):
        dft_kernel_spectrum(torch.randn(1, 9, 11, 4), plan)
    with pytest.raises(ValueError, match=r"expects x \[B, \*\(6, 5\), C\] and a spectrum"):
        dft_conv_spectrum(torch.randn(2, 5, 6, 4), spectrum, plan)
    with pytest.raises(ValueError, match=r"expects x .* and a spectrum"):
        dft_conv_spectrum(torch.randn(2, 6, 5, 3), spectrum, plan)  # C differs from the spectrum's
    with pytest.raises(ValueError, match="1 or B=2 rows"):
        dft_conv_spectrum(torch.randn(2, 6, 5, 4), spectrum.expand(3, -1, -1, -1), plan)
    with pytest.raises(TypeError, match="must be float32 .* got torch.float64"):
        dft_conv_spectrum(torch.randn(2, 6, 5, 4), spectrum.double(), plan)


def test_matrices_first_made_under_inference_mode_serve_training_too() -> None:
    """``CKConvND`` in eval under ``torch.inference_mode`` may be the first to ask for a size's
    matrices; the cached matrices are normal tensors, so a later training step can use them."""
    from vit5.ops import dftconv

    plan = plan_fft_conv((5, 4), (9, 7), (False, False))
    dftconv._matrices.cache_clear()
    x, kernel = torch.randn(2, 5, 4, 3), torch.randn(1, 9, 7, 3)
    with torch.inference_mode():
        evaluated = dft_conv_spectrum(x, dft_kernel_spectrum(kernel, plan), plan)
    assert not any(m.is_inference() for axis in dftconv._plan_matrices(plan, x.device) for m in axis)
    inputs = [x.clone().requires_grad_(), kernel.clone().requires_grad_()]
    trained = dft_conv(*inputs, plan)
    trained.square().sum().backward()
    assert torch.equal(trained.detach(), evaluated)
    expected = _reference(inputs[0].detach().double().requires_grad_(), inputs[1].detach().double(), False)
    assert _relative(trained, expected) < 2e-6 and inputs[0].grad is not None and inputs[1].grad is not None


@pytest.mark.parametrize("conjugate", [False, True])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-sample"])
def test_spectral_products_of_the_fused_kernel_match_the_definition(conjugate: bool, shared: bool) -> None:
    """The fused complex product agrees with vit5.ops.spectral.complex_product to fp32 rounding
    (the kernel fuses each multiply-add, the definition rounds each product: at most an ulp or so
    of the larger term); the kernel-gradient sum over the batch agrees to rounding."""
    from vit5.ops import dftconv, native

    generator = torch.Generator().manual_seed(3)
    a = torch.randn(5, 4, 2, 37, generator=generator)
    b = torch.randn(1 if shared else 5, 4, 2, 37, generator=generator)
    fused = dftconv._product(a, b, conjugate=conjugate)
    with native.disabled():
        plain = dftconv._product(a, b, conjugate=conjugate)
    torch.testing.assert_close(fused, plain, rtol=1e-6, atol=1e-6)
    if not shared:
        acc = torch.ones(1, 4, 2, 37)
        dftconv._add_product_sum(acc, a, b)
        a_c, b_c = (torch.view_as_complex(t.movedim(2, -1).contiguous().double()) for t in (a, b))
        expected = 1 + torch.view_as_real((a_c * b_c.conj()).sum(0)).movedim(-1, 1)  # (F1', 2, R)
        torch.testing.assert_close(acc[0].double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [5, 16, 37, 64, 100, 384])
@pytest.mark.parametrize("transposed", [False, True])
def test_batched_small_matrix_products_match_matmul(n: int, transposed: bool) -> None:
    """The fused kernel for ``m @ x[i]`` (the DFT stages) on every width: 64-wide tiles, 16-wide
    tiles, the last columns; row counts not a multiple of the tile; a transposed ``m`` view."""
    from vit5.ops import dftconv, native

    generator = torch.Generator().manual_seed(4)
    m = torch.randn(9, 7, generator=generator).t() if transposed else torch.randn(7, 9, generator=generator)
    x = torch.randn(3, 9, n, generator=generator)
    got = dftconv._apply(m, x)
    with native.disabled():
        expected = dftconv._apply(m, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.double(), m.double() @ x.double(), rtol=1e-5, atol=1e-5)
