"""Dense (batched-GEMM) small-grid convolution vs the FFT convolution and the explicit sum."""

from __future__ import annotations

import pytest
import torch

from tests.ops.test_fftconv import close, dense_conv
from vit5.ops.denseconv import apply_dense_operator, dense_conv_operator, dense_operator_bytes


@pytest.mark.parametrize(
    "size, taps", [((5, 4), (9, 7)), ((5, 4), (3, 3)), ((6,), (11,)), ((3, 2, 4), (5, 3, 7))]
)
def test_dense_operator_equals_zero_padded_convolution(size: tuple, taps: tuple) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    kernel = torch.randn(1, 3, *taps)
    expected = dense_conv(x, kernel, ("zero",) * len(size))  # (B, C, *S)
    operator = dense_conv_operator(kernel, size)
    y = apply_dense_operator(x.movedim(1, -1), operator)  # channels-last in and out
    close(y.movedim(-1, 1), expected, tol=1e-5)


def test_dense_operator_dtype_and_size() -> None:
    kernel = torch.randn(1, 4, 5, 3)
    operator = dense_conv_operator(kernel, (3, 2))
    assert operator.shape == (4, 6, 6) and operator.dtype == torch.float32
    assert dense_operator_bytes((3, 2), 4) == operator.numel() * 4
    x = torch.randn(2, 3, 2, 4).bfloat16()
    assert apply_dense_operator(x, operator).dtype == torch.bfloat16


@pytest.mark.parametrize("size, taps", [((5, 4), (9, 7)), ((7, 7), (13, 13)), ((6,), (5,))])
def test_dense_operator_gradients_match_the_explicit_sum(size: tuple, taps: tuple) -> None:
    """The custom backward (both GEMM gradients, the index_select build) equals autograd through
    the explicit per-position sum."""
    torch.manual_seed(1)
    x = torch.randn(3, *size, 4, requires_grad=True)  # channels-last
    kernel = torch.randn(1, 4, *taps, requires_grad=True)
    grad = torch.randn(3, *size, 4)
    y = apply_dense_operator(x, dense_conv_operator(kernel, size))
    gx, gk = torch.autograd.grad(y, (x, kernel), grad)
    x_ref, kernel_ref = x.detach().clone().requires_grad_(), kernel.detach().clone().requires_grad_()
    expected = dense_conv(x_ref.movedim(-1, 1), kernel_ref, ("zero",) * len(size)).movedim(1, -1)
    gx_ref, gk_ref = torch.autograd.grad(expected, (x_ref, kernel_ref), grad)
    close(y, expected, tol=1e-5)
    close(gx, gx_ref, tol=1e-5)
    close(gk, gk_ref, tol=1e-5)
    # Taps outside the kernel's reach never receive gradient; taps of a kernel larger than needed do not either.
    assert torch.isfinite(gk).all()


def test_dense_operator_runs_in_fp32_under_autocast() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 7, 7, 8)
    operator = dense_conv_operator(torch.randn(1, 8, 13, 13), (7, 7))
    expected = apply_dense_operator(x, operator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = apply_dense_operator(x, operator)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=0, atol=0)  # no bf16 rounding of the GEMM
