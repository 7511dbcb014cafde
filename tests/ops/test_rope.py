"""``apply_rope``: the fused ``vit5_rope`` kernel against the PyTorch expression and the math."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vit5.ops import native
from vit5.ops.rope import ROPE_IMPLS, apply_rope, rope_angles_2d, rotation_signs, swap_partners

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C compiler for the native kernels")


def _tables(tokens: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    angles = rope_angles_2d(torch.arange(tokens).float(), torch.arange(2).float() * 0.7, head_dim, 100.0)
    angles = angles[::2].contiguous() * 3.1  # (tokens, hd): varied angles per token and channel
    return angles.cos(), angles.sin()


def _rope_fp64(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, impl: str) -> torch.Tensor:
    """``u * cos + sign * swap(u) * sin`` in fp64, the definition."""
    u, cos, sin = u.double(), cos.double()[:, None, :], sin.double()[:, None, :]
    signs = rotation_signs(u.shape[-1], impl).double()
    return u * cos + signs * swap_partners(u, impl) * sin


def _run(u: torch.Tensor, grad: torch.Tensor, cos, sin, impl: str, fused: bool):
    leaf = u.detach().clone().requires_grad_()
    with contextlib.nullcontext() if fused else native.disabled():
        out = apply_rope(leaf[:, :, 1] if leaf.dim() == 5 else leaf, cos, sin, impl)
        out.backward(grad)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("impl", ROPE_IMPLS)
@pytest.mark.parametrize("packed", [False, True], ids=["contiguous", "packed-qkv-slice"])
def test_kernel_matches_the_pytorch_path_forward_and_backward(impl, packed) -> None:
    generator = torch.Generator().manual_seed(0)
    batch, tokens, heads, head_dim = 2, 11, 3, 16
    shape = (batch, tokens, 3, heads, head_dim) if packed else (batch, tokens, heads, head_dim)
    u = torch.randn(shape, generator=generator) * 2
    grad = torch.randn(batch, tokens, heads, head_dim, generator=generator)
    cos, sin = _tables(tokens, head_dim)
    with torch.profiler.profile() as prof:
        fused_out, fused_grad = _run(u, grad, cos, sin, impl, fused=True)
    kernel_calls = [e for e in prof.events() if e.name == "vit5::rope"]
    assert len(kernel_calls) == 2  # forward and backward each one kernel pass
    torch_out, torch_grad = _run(u, grad, cos, sin, impl, fused=False)
    # two implementations of one formula: equal to fp32 rounding (bits are not promised across them)
    torch.testing.assert_close(fused_out, torch_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused_grad, torch_grad, rtol=1e-6, atol=1e-6)
    # and both are the rotation: values against fp64, gradient against fp64 autograd
    expected = _rope_fp64(u[:, :, 1] if packed else u, cos, sin, impl)
    assert torch.allclose(fused_out.double(), expected, rtol=0, atol=1e-5)
    leaf = u.double().requires_grad_()
    _rope_fp64(leaf[:, :, 1] if packed else leaf, cos, sin, impl).backward(grad.double())
    assert torch.allclose(fused_grad.double(), leaf.grad, rtol=0, atol=1e-5)


def test_a_rotation_preserves_pair_norms_in_the_interleaved_convention() -> None:
    u = torch.randn(1, 5, 2, 8)
    cos, sin = _tables(5, 8)
    out = apply_rope(u, cos, sin, "interleaved")
    pairs_in, pairs_out = u.unflatten(-1, (4, 2)).norm(dim=-1), out.unflatten(-1, (4, 2)).norm(dim=-1)
    assert torch.allclose(pairs_in, pairs_out, atol=1e-5)


def test_without_autograd_the_kernel_runs_and_the_result_needs_no_grad() -> None:
    u = torch.randn(2, 6, 4, 8, requires_grad=True)
    cos, sin = _tables(6, 8)
    with torch.no_grad(), torch.profiler.profile() as prof:
        out = apply_rope(u, cos, sin, "nvsubquadratic")
    assert not out.requires_grad and any(e.name == "vit5::rope" for e in prof.events())
    with native.disabled(), torch.no_grad():
        # the PyTorch path: the same formula, to fp32 rounding
        torch.testing.assert_close(out, apply_rope(u, cos, sin, "nvsubquadratic"), rtol=1e-6, atol=1e-6)


def test_double_backward_runs_on_pytorch_ops() -> None:
    u = torch.randn(1, 4, 2, 8, dtype=torch.float32, requires_grad=True)
    cos, sin = _tables(4, 8)
    out = apply_rope(u, cos, sin, "nvsubquadratic")
    (grad,) = torch.autograd.grad((out**2).sum(), u, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), u)
    leaf = u.detach().double().requires_grad_()
    (grad64,) = torch.autograd.grad(
        (_rope_fp64(leaf, cos, sin, "nvsubquadratic") ** 2).sum(), leaf, create_graph=True
    )
    (second64,) = torch.autograd.grad(grad64.sum(), leaf)
    assert torch.allclose(second.double(), second64, atol=1e-5)


def test_other_inputs_take_the_pytorch_path() -> None:
    u = torch.randn(2, 6, 4, 8)
    cos, sin = _tables(6, 8)
    learnable = cos.clone().requires_grad_()
    for args in [(u.bfloat16(), cos, sin), (u, learnable, sin)]:
        with torch.profiler.profile() as prof:
            out = apply_rope(args[0], args[1], args[2], "interleaved")
        assert not any(e.name == "vit5::rope" for e in prof.events())
        assert out.dtype == args[0].dtype
    out = apply_rope(u, learnable, sin, "interleaved")
    out.sum().backward()
    assert learnable.grad is not None and learnable.grad.shape == cos.shape  # tables learn on that path


def test_a_training_call_after_a_first_call_under_inference_mode_runs_backward() -> None:
    # The kernel's per-head-dim tables are cached for the process; built under inference_mode
    # they would be inference tensors, which autograd refuses to save for a later training call.
    from vit5.ops import kernels

    kernels._partner_tables.cache_clear()
    cos, sin = _tables(5, 8)
    u = torch.randn(1, 5, 2, 8)
    with torch.inference_mode():
        first = apply_rope(u, cos, sin, ROPE_IMPLS[0])
    leaf = u.clone().requires_grad_()
    apply_rope(leaf, cos, sin, ROPE_IMPLS[0]).sum().backward()
    assert leaf.grad is not None and leaf.grad.shape == u.shape
    assert torch.allclose(apply_rope(u, cos, sin, ROPE_IMPLS[0]), first, atol=1e-6)
