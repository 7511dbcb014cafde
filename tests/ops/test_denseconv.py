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
