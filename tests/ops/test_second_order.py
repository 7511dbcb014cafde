"""Second-order gradients and ``torch.func`` / forward-mode AD through every path.

A gradient penalty (``create_graph=True`` on the input gradient, then a backward to the
parameters) through the default path must give the plain path's (``VIT5_NATIVE=0``,
:func:`vit5.ops.native.disabled`) parameter gradients to fp32 rounding, on the same parameters;
``torch.func`` transforms and ``torch.autograd.forward_ad`` must run (on the plain ops) and agree
with ordinary autograd.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.nn.attention import SDPBackend, sdpa_kernel

import vit5
from vit5.ops import native
from vit5.ops.capture import capture_mode
from vit5.ops.denseconv import apply_dense_operator, dense_conv_operator
from vit5.ops.dftconv import dft_conv
from vit5.ops.fftconv import fft_conv_zero_lowmem
from vit5.ops.fftplan import plan_fft_conv
from vit5.ops.gates import gate
from vit5.ops.rmsnorm import rms_norm
from vit5.ops.rope import apply_rope
from vit5.ops.scaled_add import scaled_add

PRESETS = ("vit5_tiny_hybrid", "vit5_tiny_attention", "vit5_tiny_hyena")


def _model(name: str, train: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = vit5.create_model(name).train(train)
    with torch.no_grad():
        for p in model.parameters():  # away from the init's symmetric values (zero biases...)
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _penalty_grads(model: torch.nn.Module, plain: bool) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 32, 32, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH), native.disabled() if plain else contextlib.nullcontext():
        torch.manual_seed(3)  # the same DropPath / dropout draws on both paths
        loss = model({"input": x})["logits"].logsumexp(-1).sum()
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        (g**2).sum().backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", PRESETS)
def test_gradient_penalty_matches_plain_path(name: str) -> None:
    model = _model(name, train=True)
    fast, plain = _penalty_grads(model, plain=False), _penalty_grads(model, plain=True)
    plain_names = {n for n, g in plain.items() if g is not None}
    assert len(plain_names) > len(plain) // 2  # the penalty reaches most parameters
    assert {n for n, g in fast.items() if g is not None} == plain_names
    for n in plain_names:
        torch.testing.assert_close(fast[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)


def _second(fn, inputs: list[torch.Tensor], plain: bool) -> tuple[torch.Tensor, ...]:
    """d/dinputs sum(|d(w . fn)/dinputs|^2) for a fixed random w."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    with native.disabled() if plain else contextlib.nullcontext():
        out = fn(*inputs)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        grads = torch.autograd.grad((out * w.to(out.dtype)).sum(), inputs, create_graph=True)
        penalty = sum((g.double() ** 2).sum() for g in grads)
        return torch.autograd.grad(penalty, inputs, allow_unused=True)


def _cases() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    plan = plan_fft_conv((5, 4), (3, 3), (False, False))
    cos, sin = torch.cos(r(20, 8)), torch.sin(r(20, 8))
    return {
        "gate_l2_silu": (lambda a, b: gate(a, b, "silu", 1e-6), [r(2, 5, 4, 6), r(2, 5, 4, 6)]),
        "gate_sigmoid": (lambda a, b: gate(a, b, "sigmoid"), [r(2, 5, 4, 6), r(2, 5, 4, 6)]),
        "rms_norm": (lambda a, w: rms_norm(a, w, 1e-6), [r(2, 5, 4, 6), r(6)]),
        "scaled_add": (
            lambda a, b, w: scaled_add(a, b, w, torch.tensor([0.0, 2.0], dtype=a.dtype)),
            [r(2, 5, 4, 6), r(2, 5, 4, 6), r(6)],
        ),
        "scaled_add_dependent": (  # branch computed from x: each input's own paths only
            lambda a, w: scaled_add(a, torch.tanh(a), w),
            [r(2, 5, 4, 6), r(6)],
        ),
        "dense": (
            lambda a, k: apply_dense_operator(a, dense_conv_operator(k, (5, 4))),
            [r(2, 5, 4, 6), r(1, 6, 3, 3)],
        ),
        "dft": (lambda a, k, s: dft_conv(a, k, plan, s), [r(2, 5, 4, 6), r(1, 3, 3, 6), r(6)]),
        "fft_lowmem": (
            lambda a, k: fft_conv_zero_lowmem(a, k, channels_last=True),
            [r(2, 5, 4, 6), r(1, 6, 3, 3)],
        ),
        "rope": (  # u * u: rope is linear, its backward's own gradient must still be recorded
            lambda u: apply_rope(u * u, cos.to(u.dtype), sin.to(u.dtype), "interleaved"),
            [r(2, 20, 3, 8)],
        ),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_op_second_order_matches_float64_formula(case: str) -> None:
    fn, inputs = _cases()[case]
    fast = _second(fn, inputs, plain=False)
    exact = _second(fn, [t.double() for t in inputs], plain=True)  # float64: PyTorch ops only
    assert [g is None for g in fast] == [g is None for g in exact]  # None: the penalty is flat in it
    assert any(g is not None and g.abs().max() > 0 for g in fast)
    for got, want in zip(fast, exact):
        if want is None:
            continue
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("name", ["vit5_tiny_hybrid"])
def test_func_transforms_and_forward_ad_take_the_plain_path(name: str) -> None:
    model = _model(name, train=False)
    x = torch.randn(2, 32, 32, 3, generator=torch.Generator().manual_seed(1))
    params = dict(model.named_parameters())

    def loss(p: dict, images: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, ({"input": images},))["logits"].logsumexp(-1).sum()

    with sdpa_kernel(SDPBackend.MATH):
        modes = []
        torch.func.vmap(lambda v: modes.append(capture_mode()) or v)(x)
        assert modes == ["transform"]
        grads = torch.func.grad(loss)(params, x)
        loss(params, x).backward()
        for n, p in params.items():
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)

        logits = model({"input": x})["logits"]
        batched = torch.func.vmap(lambda v: model({"input": v[None]})["logits"][0])(x)
        torch.testing.assert_close(batched, logits, rtol=1e-4, atol=1e-5)

        tangent = torch.randn_like(x)
        _, jvp_out = torch.func.jvp(lambda v: model({"input": v})["logits"], (x,), (tangent,))
        with fwAD.dual_level():
            dual = model({"input": fwAD.make_dual(x, tangent)})["logits"]
            forward_tangent = fwAD.unpack_dual(dual).tangent
        step = 1e-2  # central difference in float64 of the same model
        m64 = model.double()
        with torch.no_grad():
            fd = (
                m64({"input": (x + step * tangent).double()})["logits"]
                - m64({"input": (x - step * tangent).double()})["logits"]
            ) / (2 * step)
        model.float()
    torch.testing.assert_close(jvp_out, forward_tangent, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(forward_tangent.double(), fd, rtol=1e-3, atol=1e-3 * fd.abs().max().item())
