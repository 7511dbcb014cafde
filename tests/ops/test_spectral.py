"""One definition of each piece of spectral math (issue 28, item 4): vit5.ops.spectral."""

from __future__ import annotations

import math

import pytest
import torch

from vit5.ops.fftplan import _cmul
from vit5.ops.spectral import complex_product, dft_angles, dft_matrix, phase_ramp


@pytest.mark.parametrize("conjugate", [False, True])
def test_complex_product_against_complex128(conjugate: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    a_re, a_im, b_re, b_im = torch.randn(4, 3, 33, generator=generator).unbind(0)
    re, im = complex_product(a_re, a_im, b_re, b_im, conjugate=conjugate)
    a, b = torch.complex(a_re.double(), a_im.double()), torch.complex(b_re.double(), b_im.double())
    expected = a * (b.conj() if conjugate else b)
    torch.testing.assert_close(torch.complex(re, im).to(torch.complex128), expected, rtol=1e-6, atol=1e-6)
    out = (torch.empty_like(re), torch.empty_like(im))
    written = complex_product(a_re, a_im, b_re, b_im, conjugate=conjugate, out=out)
    assert written[0] is out[0] and written[1] is out[1]
    # the out= form is the same definition: the same bits (each product and sum rounded once)
    assert torch.equal(out[0], re) and torch.equal(out[1], im)


def test_the_complex_tensor_form_is_the_same_definition() -> None:
    """fftplan._cmul (complex64 tensors, used by the eager FFT path) is the planar definition:
    every real product and sum rounded once, whatever the tensor length. Two implementations
    (complex tensors, real planes): equal to fp32 rounding (a fused multiply-add would differ by
    one rounding of a product)."""
    generator = torch.Generator().manual_seed(1)
    for n in (1, 7, 64, 1001):
        a = torch.complex(*torch.randn(2, 3, n, generator=generator))
        b = torch.complex(*torch.randn(2, 1, n, generator=generator))
        re, im = complex_product(a.real, a.imag, b.real, b.imag)
        got = _cmul(a, b)
        torch.testing.assert_close(got.real, re.expand_as(got.real), rtol=1e-6, atol=1e-5, msg=str(n))
        torch.testing.assert_close(got.imag, im.expand_as(got.imag), rtol=1e-6, atol=1e-5, msg=str(n))


def test_dft_angles_reduce_the_phase_in_integers() -> None:
    rows = torch.tensor([0, 1, 5, 1023, 10**6], dtype=torch.int64)
    cols = torch.tensor([0, 3, 1024], dtype=torch.int64)
    angles = dft_angles(rows, cols, 1025)
    assert angles.dtype == torch.float64 and angles.shape == (5, 3)
    for i, r in enumerate(rows.tolist()):
        for j, c in enumerate(cols.tolist()):
            assert angles[i, j].item() == pytest.approx(2 * math.pi * ((r * c) % 1025) / 1025, abs=1e-12)


@pytest.mark.parametrize("size, n, start", [(8, 5, 0), (9, 9, 0), (27, 14, 13), (16, 7, 3)], ids=str)
def test_dft_matrix_is_the_transform_of_torch_fft(size: int, n: int, start: int) -> None:
    """Forward tables times ``n`` positions are ``rfft`` / ``fft`` of the zero-padded signal; the
    inverse tables give the window ``[start, start + n)`` of ``irfft`` / ``ifft`` (fp64: round-off)."""
    generator = torch.Generator().manual_seed(size)
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    positions = torch.arange(n, dtype=torch.int64)
    for real, transform in ((True, torch.fft.rfft), (False, torch.fft.fft)):
        re, im = dft_matrix(size, positions, real)
        assert re.dtype == torch.float64 and re.shape == (size // 2 + 1 if real else size, n)
        torch.testing.assert_close(
            torch.complex(re @ x, im @ x), transform(x, n=size), rtol=1e-10, atol=1e-10
        )
    window = torch.arange(start, start + n, dtype=torch.int64)
    spectrum = torch.fft.rfft(torch.randn(size, generator=generator, dtype=torch.float64))
    re, im = dft_matrix(size, window, True, inverse=True)  # (F', n)
    expected = torch.fft.irfft(spectrum, n=size)[start : start + n]
    torch.testing.assert_close(spectrum.real @ re - spectrum.imag @ im, expected, rtol=1e-10, atol=1e-10)
    full = torch.fft.fft(torch.randn(size, generator=generator, dtype=torch.float64))
    re, im = dft_matrix(size, window, False, inverse=True)  # (F, n)
    got = torch.complex(full.real @ re - full.imag @ im, full.real @ im + full.imag @ re)
    torch.testing.assert_close(got, torch.fft.ifft(full)[start : start + n], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "shifts, sizes", [((-3, -2), (7, 6)), ((0, -4), (9, 9)), ((-2,), (5,)), ((-1, 0, -2), (4, 5, 6))]
)
def test_phase_ramp_is_the_shift_theorem_on_the_rfftn_grid(shifts, sizes) -> None:
    """The ramp times the spectrum of a signal is the spectrum of the signal shifted by ``s``."""
    cos, sin = phase_ramp(shifts, sizes)
    x = torch.randn(*sizes, dtype=torch.float64)
    expected = torch.fft.rfftn(torch.roll(x, shifts=tuple(shifts), dims=tuple(range(len(sizes)))))
    got = torch.fft.rfftn(x) * torch.complex(cos.double(), sin.double())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # fp32 tables


def test_phase_ramp_without_shifts_is_none() -> None:
    assert phase_ramp((0, 0), (8, 8)) is None
