"""``scaled_add``: the residual update ``x + branch * gamma [* mask]`` and its gradients."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vit5.ops import native
from vit5.ops.scaled_add import scaled_add, scaled_add_into_branch

PATHS = pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "pytorch"])


def _path(fused: bool):
    return contextlib.nullcontext() if fused else native.disabled()


@PATHS
@pytest.mark.parametrize("shape", [(3, 7, 16), (2, 5, 4, 9), (4, 1), (1, 300, 24)], ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["shared", "per-sample"])
def test_values_and_gradients_match_the_formula(shape, masked, fused) -> None:
    generator = torch.Generator().manual_seed(0)
    x64, b64 = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(2))
    gamma64 = torch.randn(shape[-1], generator=generator, dtype=torch.float64)
    mask = None
    if masked:  # DropPath's factors: 0 (dropped) or 1 / keep
        mask = torch.tensor([0.0, 1.25, 1.25, 0.0][: shape[0]] or [1.25], dtype=torch.float64)
        mask = torch.cat([mask, torch.full((shape[0] - mask.numel(),), 1.25, dtype=torch.float64)])
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    leaves64 = [t.clone().requires_grad_() for t in (x64, b64, gamma64)]
    factor = 1.0 if mask is None else mask.reshape((-1,) + (1,) * (len(shape) - 1))
    expected_out = leaves64[0] + leaves64[1] * leaves64[2] * factor
    expected = torch.autograd.grad(expected_out, leaves64, g)
    leaves = [t.detach().float().requires_grad_() for t in leaves64]
    with _path(fused):
        out = scaled_add(*leaves, None if mask is None else mask.float())
        got = torch.autograd.grad(out, leaves, g.float())
    torch.testing.assert_close(out.double(), expected_out, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(got, expected):
        assert ours.dtype == torch.float32 and ours.shape == theirs.shape
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


def test_without_a_mask_the_fused_kernel_gives_the_plain_values() -> None:
    x, branch = torch.randn(2, 6, 40, 32).unbind(0)
    gamma = torch.randn(32)
    # one product and one sum per element in both: equal to fp32 rounding (an FMA may round once)
    torch.testing.assert_close(scaled_add(x, branch, gamma), x + branch * gamma, rtol=1e-6, atol=1e-6)


def test_only_requested_gradients_and_other_dtypes() -> None:
    x = torch.randn(2, 3, 8)
    branch = torch.randn(2, 3, 8, requires_grad=True)
    gamma = torch.rand(8)
    scaled_add(x, branch, gamma).sum().backward()
    torch.testing.assert_close(branch.grad, gamma.expand(2, 3, 8))
    half = scaled_add(x.bfloat16(), branch.detach().bfloat16(), gamma.bfloat16())  # PyTorch path
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), x + branch.detach() * gamma, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("rows", [1, 33, 20_000])
def test_gamma_gradient_sums_many_rows_accurately(rows: int) -> None:
    """The per-channel gradient sums every row of every sample (in blocks, per thread)."""
    generator = torch.Generator().manual_seed(1)
    x, branch, g = (torch.randn(3, rows, 16, generator=generator) for _ in range(3))
    gamma = torch.ones(16, requires_grad=True)
    mask = torch.tensor([2.0, 0.0, 2.0])
    (grad,) = torch.autograd.grad(scaled_add(x, branch, gamma, mask), gamma, g)
    expected = ((g.double() * branch.double()).sum(dim=1) * mask.double()[:, None]).sum(dim=0)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernel", "pytorch"])
def test_in_place_form_writes_the_plain_bits_over_the_branch(fused) -> None:
    generator = torch.Generator().manual_seed(3)
    x, branch = (torch.randn(2, 9, 24, generator=generator) for _ in range(2))
    gamma = torch.randn(24, generator=generator)
    expected = x + branch * gamma
    pointer = branch.data_ptr()
    with torch.profiler.profile() as prof, contextlib.nullcontext() if fused else native.disabled():
        out = scaled_add_into_branch(x, branch, gamma)
    # promise: the in-place inference residual gives the bits of the training forward's x + branch * gamma
    assert out.data_ptr() == pointer and torch.equal(out, expected) and torch.equal(branch, expected)
    assert any(e.name == "vit5::scaled_add_into_" for e in prof.events()) == (
        fused and native.library() is not None
    )
