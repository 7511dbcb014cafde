"""``gate``: Hyena's ``x' * act(g)`` (optionally L2-normalised ``x``) and its gradients."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn import functional as F

from vit5.ops import native
from vit5.ops.gates import gate


def _path(fused: bool):
    return contextlib.nullcontext() if fused else native.disabled()


def _expected(x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None) -> torch.Tensor:
    if l2_eps is not None:
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(l2_eps)
    return x * (F.silu(g) if activation == "silu" else torch.sigmoid(g))


@pytest.mark.parametrize("fused", [True, False], ids=["fused-kernels", "pytorch"])
@pytest.mark.parametrize("l2_eps", [None, 1e-12], ids=["plain", "l2"])
@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("sliced", [False, True], ids=["contiguous", "channel-slices"])
def test_values_and_gradients_match_the_formula(activation, l2_eps, sliced, fused) -> None:
    generator = torch.Generator().manual_seed(0)
    if sliced:  # Hyena's q, k: channel slices of one [B, H, W, 3C] tensor
        base = torch.randn(2, 5, 4, 3 * 24, generator=generator, dtype=torch.float64) * 3
        x64, g64, _ = base.split(24, dim=-1)
    else:
        x64, g64 = (torch.randn(3, 7, 24, generator=generator, dtype=torch.float64) * 3 for _ in range(2))
    x64[0, 0] = 0.0  # a zero row: the norm's clamp
    out_grad = torch.randn(x64.shape, generator=generator, dtype=torch.float64)
    leaves64 = [t.clone().requires_grad_() for t in (x64, g64)]
    expected_out = _expected(*leaves64, activation, l2_eps)
    expected = torch.autograd.grad(expected_out, leaves64, out_grad)
    if sliced:
        base32 = base.float().requires_grad_()
        leaves = list(base32.split(24, dim=-1)[:2])
    else:
        leaves = [t.detach().float().requires_grad_() for t in (x64, g64)]
    with _path(fused):
        out = gate(*leaves, activation, l2_eps)
        got = torch.autograd.grad(out, leaves, out_grad.float())
    assert out.dtype == torch.float32 and out.shape == x64.shape
    torch.testing.assert_close(out.double(), expected_out, rtol=2e-6, atol=2e-6)
    for ours, theirs in zip(got, expected):
        torch.testing.assert_close(ours.double(), theirs, rtol=2e-5, atol=2e-5 * float(theirs.abs().max()))


def test_the_kernels_exp_over_the_whole_range() -> None:
    """sigmoid and silu of the fused kernel vs fp64 from -100 to 100, saturating at both ends."""
    g = torch.linspace(-100, 100, 200_001)
    x = torch.ones_like(g)
    for activation, exact in (("sigmoid", torch.sigmoid), ("silu", F.silu)):
        got = gate(x, g, activation).double()
        torch.testing.assert_close(got, exact(g.double()), rtol=1e-6, atol=1e-30)
    assert gate(x[:1], torch.tensor([-200.0]), "sigmoid").item() < 1e-37
    assert gate(x[:1], torch.tensor([200.0]), "silu").item() == 200.0


def test_same_bits_with_and_without_autograd() -> None:
    x, g = torch.randn(2, 6, 5, 32).unbind(0)
    with torch.no_grad():
        inference = gate(x, g, "silu", 1e-12)
    trained = gate(x.clone().requires_grad_(), g, "silu", 1e-12)
    assert torch.equal(inference, trained.detach())


def test_bad_arguments_are_clear_errors() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="one of .*'relu'"):
        gate(x, x, "relu")
    with pytest.raises(ValueError, match=r"one shape, got \(2, 4\) and \(2, 3\)"):
        gate(x, x[:, :3], "silu")
