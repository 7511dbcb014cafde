"""The residual update ``x + branch * scale``, with ``scale`` per channel or per sample and channel.

A ViT-5 block adds its LayerScale'd (and, in training, DropPath'd) branches to the residual
stream. As PyTorch ops that is two or three full-size passes forward (scale, mask, add) and four
backward (the branch's gradient, the product for the scale's gradient, its sum, the mask); on
eager CPU fp32 tensors (:func:`vit5.ops.route.use_kernel`) :func:`scaled_add` does the forward in
one fused pass and the backward in one (the branch's gradient and the per-sample sums for the
scale's gradient together). Without a per-sample mask the result has the bits of
``x + branch * gamma``; with one, the scale ``mask * gamma`` is formed first (a ``[B, D]``
product), so the rounding differs from ``x + (branch * gamma) * mask`` in the last bit.
"""

from __future__ import annotations

import torch

from vit5.ops import kernels, native
from vit5.ops.route import use_kernel

__all__ = ["scaled_add", "scaled_add_into_branch"]


def scaled_add_into_branch(x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x + branch * gamma`` written over ``branch`` and returned (no autograd): the bits of
    ``branch.mul_(gamma).add_(x)`` in one pass instead of two when :func:`vit5.ops.route.use_kernel`
    says so for the contiguous same-shape tensors, those two in-place ops otherwise. The caller
    owns ``branch`` (a fresh output nothing else holds) and ``gamma`` is ``[D]``."""
    if use_kernel(
        "scaled_add_into",
        x,
        branch,
        gamma,
        layout_ok=x.shape == branch.shape and x.numel() > 0 and gamma.shape == x.shape[-1:],
    ):
        kernels.scaled_add_into_(x, branch, gamma, native.threads())  # vit5::scaled_add_into_
        return branch
    return branch.mul_(gamma.to(branch.dtype)).add_(x)


def scaled_add(
    x: torch.Tensor, branch: torch.Tensor, gamma: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``x + branch * gamma [* mask]``: ``x, branch`` ``[B, ..., D]``, ``gamma`` ``[D]``, ``mask`` ``[B]``.

    ``mask`` is a per-sample factor (DropPath's kept-and-rescaled mask). Differentiable in ``x``,
    ``branch`` and ``gamma``; fused ``vit5::`` kernels on eager CPU fp32 tensors of the same shape,
    PyTorch ops otherwise.
    """
    if use_kernel(
        "scaled_add",
        x,
        branch,
        gamma,
        *(() if mask is None else (mask,)),
        layout_ok=x.shape == branch.shape
        and x.dim() >= 2
        and x.numel() > 0
        and gamma.shape == x.shape[-1:]
        and (mask is None or mask.numel() == x.shape[0]),
    ):
        scale = gamma if mask is None else mask.detach().reshape(-1, 1) * gamma  # (D,) | (B, D)
        return kernels.scaled_add(x, branch, scale, native.threads())  # vit5::scaled_add
    return x + _reference(branch, gamma, mask)


def _reference(branch: torch.Tensor, gamma: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``branch * gamma [* mask]`` as plain PyTorch ops."""
    scaled = branch * gamma
    if mask is not None:
        scaled = scaled * mask.reshape((-1,) + (1,) * (branch.dim() - 1))
    return scaled
