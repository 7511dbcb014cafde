"""The residual update ``x + branch * scale``, with ``scale`` per channel or per sample and channel.

A ViT-5 block adds its LayerScale'd (and, in training, DropPath'd) branches to the residual
stream. As PyTorch ops that is two or three full-size passes forward (scale, mask, add) and four
backward (the branch's gradient, the product for the scale's gradient, its sum, the mask); on
eager CPU fp32 tensors (:func:`vit5.ops.native.usable`) :func:`scaled_add` does the forward in
one fused pass and the backward in one (the branch's gradient and the per-sample sums for the
scale's gradient together). Without a per-sample mask the result has the bits of
``x + branch * gamma``; with one, the scale ``mask * gamma`` is formed first (a ``[B, D]``
product), so the rounding differs from ``x + (branch * gamma) * mask`` in the last bit.
"""

from __future__ import annotations

from typing import Any

import torch

from vit5.ops import native
from vit5.ops.recorded import recorded_vjp, recording

__all__ = ["scaled_add", "scaled_add_into_branch"]


def _fold(branch: torch.Tensor, per_sample: bool) -> tuple[int, int, int]:
    """``(samples, rows per sample, channels)`` of a contiguous ``[B, ..., D]`` tensor."""
    d = branch.shape[-1]
    if per_sample:
        return branch.shape[0], branch.numel() // (branch.shape[0] * d), d
    return 1, branch.numel() // d, d


def _forward_kernel(
    x: torch.Tensor, branch: torch.Tensor, scale: torch.Tensor, out: torch.Tensor, per_sample: bool
) -> torch.Tensor:
    """``out = x + branch * scale`` by ``vit5_scaled_add`` (``scale`` ``[B, D]`` per sample or
    ``[D]``); ``out`` may be ``branch`` itself (element j is read before it is written)."""
    samples, rows, d = _fold(branch, per_sample)
    native.run(
        "vit5_scaled_add",
        x.data_ptr(), branch.data_ptr(), scale.data_ptr(), out.data_ptr(), samples, rows, d,
        int(per_sample), native.threads(),
    )  # fmt: skip
    return out


class _ScaledAdd(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        per_sample = mask is not None
        scale = (mask.reshape(-1, 1) * gamma).contiguous() if per_sample else gamma  # (B, D) | (D,)
        out = _forward_kernel(x, branch, scale, torch.empty_like(x), per_sample)
        ctx.save_for_backward(branch, scale, mask, gamma)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        branch, scale, mask, gamma = ctx.saved_tensors
        need_x, need_branch, need_gamma = ctx.needs_input_grad[:3]
        if recording():  # create_graph: the plain expression's gradient, recorded
            grad_branch, grad_gamma = recorded_vjp(
                lambda b, w: _reference(b, w, mask), (branch, gamma), grad, (need_branch, need_gamma)
            )
            return (grad if need_x else None), grad_branch, grad_gamma, None
        g = grad.contiguous()
        per_sample = mask is not None
        samples, rows, d = _fold(branch, per_sample)
        grad_branch = torch.empty_like(branch) if need_branch else None
        sums = branch.new_empty(samples, d) if need_gamma else None  # sum of g * branch per sample
        status = native.run(
            "vit5_scaled_add_backward",
            g.data_ptr(), branch.data_ptr(), scale.data_ptr(),
            grad_branch.data_ptr() if need_branch else None, sums.data_ptr() if need_gamma else None,
            samples, rows, d, int(per_sample), native.threads(),
        )  # fmt: skip
        if status != 0:
            raise MemoryError("scaled_add backward: the fused kernel could not allocate its scratch memory")
        grad_gamma = None
        if need_gamma:
            grad_gamma = (sums * mask.reshape(-1, 1)).sum(dim=0) if per_sample else sums[0]
        return (grad if need_x else None), grad_branch, grad_gamma, None


def scaled_add_into_branch(x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x + branch * gamma`` written over ``branch`` and returned (no autograd): the bits of
    ``branch.mul_(gamma).add_(x)`` in one pass instead of two when :func:`vit5.ops.native.usable`
    holds for the contiguous same-shape tensors, those two in-place ops otherwise. The caller
    owns ``branch`` (a fresh output nothing else holds) and ``gamma`` is ``[D]``."""
    if (
        x.shape == branch.shape
        and x.numel() > 0
        and gamma.shape == x.shape[-1:]
        and native.usable(x, branch, gamma)
    ):
        return _forward_kernel(x, branch, gamma, branch, per_sample=False)
    return branch.mul_(gamma.to(branch.dtype)).add_(x)


def scaled_add(
    x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``x + branch * gamma [* mask]``: ``x, branch`` ``[B, ..., D]``, ``gamma`` ``[D]``, ``mask`` ``[B]``.

    ``mask`` is a per-sample factor (DropPath's kept-and-rescaled mask). Differentiable in ``x``,
    ``branch`` and ``gamma``; fused C kernels on eager CPU fp32 tensors of the same shape,
    PyTorch ops otherwise.
    """
    if (
        x.shape == branch.shape
        and x.dim() >= 2
        and x.numel() > 0
        and gamma.shape == x.shape[-1:]
        and (mask is None or mask.numel() == x.shape[0])
        and native.usable(x, branch, gamma, *(() if mask is None else (mask,)))
    ):
        return _ScaledAdd.apply(x, branch, gamma, None if mask is None else mask.detach().reshape(-1))
    return x + _reference(branch, gamma, mask)


def _reference(branch: torch.Tensor, gamma: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``branch * gamma [* mask]`` as plain PyTorch ops."""
    scaled = branch * gamma
    if mask is not None:
        scaled = scaled * mask.reshape((-1,) + (1,) * (branch.dim() - 1))
    return scaled
