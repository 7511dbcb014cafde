"""``rms_norm``: the closed-form backward equals autograd's; the forward keeps the plain bits."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vit5.modules.norms import RMSNorm
from vit5.ops import native
from vit5.ops.rmsnorm import rms_norm


def _plain(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    u = x.float()
    return (weight * (u * torch.rsqrt(u.pow(2).mean(dim=-1, keepdim=True) + eps))).to(x.dtype)


def _exact(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula in fp64 throughout."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps))


@pytest.mark.parametrize("shape", [(3, 7, 16), (5, 1), (2, 3, 4, 9), (4, 384)], ids=str)
def test_values_and_gradients_match_the_formula(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    x64 = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    w64 = torch.randn(shape[-1], generator=generator, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad(_exact(x64, w64, 1e-6), (x64, w64), g)
    x, weight = (t.detach().float().requires_grad_() for t in (x64, w64))
    with native.disabled():
        # the library's PyTorch path and this file's formula: equal to fp32 rounding
        torch.testing.assert_close(rms_norm(x, weight, 1e-6), _plain(x, weight, 1e-6), rtol=1e-6, atol=1e-6)
    for fused in (True, False):  # the fused CPU kernels and the PyTorch path
        with contextlib.nullcontext() if fused else native.disabled():
            out = rms_norm(x, weight, 1e-6)
            got = torch.autograd.grad(out, (x, weight), g.float())
        torch.testing.assert_close(out.double(), _exact(x64, w64, 1e-6), rtol=2e-6, atol=1e-6)
        for ours, theirs in zip(got, expected):
            assert ours.dtype == torch.float32
            torch.testing.assert_close(
                ours.double(), theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()) + 1e-7
            )


def test_fp32_forward_bits_and_gradients_of_the_module() -> None:
    torch.manual_seed(1)
    norm = RMSNorm(12)
    with torch.no_grad():
        norm.weight.uniform_(-2, 2)
    x = torch.randn(4, 5, 12, requires_grad=True)
    out = norm(x)
    with torch.no_grad():
        assert torch.equal(out, norm(x))  # promise: an eval forward gives the training bits
    out.backward(torch.ones_like(out))
    x2 = x.detach().double().requires_grad_()
    w2 = norm.weight.detach().double().requires_grad_()
    _plain(x2, w2, norm.eps).backward(torch.ones(4, 5, 12, dtype=torch.float64))
    torch.testing.assert_close(x.grad.double(), x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.weight.grad.double(), w2.grad, rtol=1e-5, atol=1e-5)


def test_bf16_input_keeps_fp32_statistics_and_dtypes() -> None:
    x = (torch.randn(3, 8) * 50).bfloat16().requires_grad_()
    weight = torch.rand(8, requires_grad=True)
    out = rms_norm(x, weight, 1e-6)
    assert out.dtype == torch.bfloat16  # fp32 statistics, rounded once: within one bf16 step of the formula
    torch.testing.assert_close(out.float(), _plain(x, weight, 1e-6).float(), rtol=2**-7, atol=1e-6)
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32


def test_only_requested_gradients() -> None:
    x = torch.randn(2, 6, requires_grad=True)
    weight = torch.ones(6)
    rms_norm(x, weight, 1e-6).sum().backward()
    assert x.grad is not None and weight.grad is None


def test_torch_func_grad_and_vmap_work_through_the_module() -> None:
    """``torch.func`` (functional_call, grad, vmap: per-sample gradients) as through plain ops."""
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(2)
    norm = RMSNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    params = {name: p.detach() for name, p in norm.named_parameters()}
    x = torch.randn(5, 3, 8)

    def module_loss(p: dict, sample: torch.Tensor) -> torch.Tensor:
        return (functional_call(norm, p, (sample,)) ** 2).sum()

    def plain_loss(p: dict, sample: torch.Tensor) -> torch.Tensor:
        return (_plain(sample, p["weight"], norm.eps) ** 2).sum()

    ours = vmap(grad(module_loss), in_dims=(None, 0))(params, x)
    expected = vmap(grad(plain_loss), in_dims=(None, 0))(params, x)
    assert ours["weight"].shape == (5, 8)
    torch.testing.assert_close(ours["weight"], expected["weight"], rtol=1e-5, atol=1e-6)


def test_per_head_views_of_a_packed_projection() -> None:
    """q and k of attention's packed ``[B, T, 3, H, hd]`` projection (rows in two levels): the
    fused kernels read them in place and agree with the PyTorch path, values and gradients."""
    generator = torch.Generator().manual_seed(5)
    qkv = (torch.randn(2, 7, 3, 4, 16, generator=generator) * 2).requires_grad_()
    weight = torch.rand(16, generator=generator).requires_grad_()
    g = torch.randn(2, 7, 4, 16, generator=generator)
    assert native.row_blocks(qkv[:, :, 1]) == (4, 3 * 4 * 16, 16)
    results = []
    for context in (contextlib.nullcontext, native.disabled):
        with context():
            out = rms_norm(qkv[:, :, 1], weight, 1e-6)
            results.append((out, *torch.autograd.grad(out, (qkv, weight), g)))
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    assert results[0][1][:, :, 0].abs().max() == 0  # only k's rows get a gradient
