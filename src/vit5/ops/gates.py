"""Hyena's gates ``x' * act(gate)`` (``x'``: ``x`` or its L2-normalised rows), fused on CPUs.

Hyena multiplies a signal by an activated gate twice per block: ``L2Norm(q) * silu(k)`` before
the long convolution and ``h * sigmoid(v)`` after it. As PyTorch ops that is three to five
full-size passes forward and five to eight backward (the norm's reduction, division and clamp,
the activation, the product, each derivative). On eager CPU fp32 tensors
(:func:`vit5.ops.route.use_kernel`; ``x`` and ``gate`` may be channel slices of one tensor, as
Hyena's ``q, k, v`` are) :func:`gate` runs the operators ``vit5::gate`` and ``vit5::gate_backward`` (:mod:`vit5.ops.kernels`); the
kernels evaluate ``exp`` with their own polynomial (about 1 ulp), so they agree with the PyTorch
expression to fp32 rounding, not bit for bit. Elsewhere it runs the PyTorch expression.
"""

from __future__ import annotations

import torch

from vit5.ops import kernels
from vit5.ops.kernels import ACTIVATIONS, gate_reference
from vit5.ops.route import use_kernel

__all__ = ["ACTIVATIONS", "gate", "gate_reference"]


def gate(x: torch.Tensor, g: torch.Tensor, activation: str, l2_eps: float | None = None) -> torch.Tensor:
    """``x' * act(g)`` for ``x, g`` ``[..., D]`` of one shape; ``act`` is ``"silu"`` or ``"sigmoid"``.

    With ``l2_eps`` the rows of ``x`` are first scaled to unit L2 norm, ``x / max(||x||, l2_eps)``
    (``L2Norm(dim=-1)``, computed in fp32). Differentiable in ``x`` and ``g``.

    Raises:
        ValueError: For an unknown activation or inputs of different shapes.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"gate activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if x.shape != g.shape:
        raise ValueError(f"gate expects x and g of one shape, got {tuple(x.shape)} and {tuple(g.shape)}")
    if use_kernel("gate", strided=(x, g), layout_ok=x.numel() > 0):
        return kernels.gate(x, g, ACTIVATIONS[activation], l2_eps)[0]  # vit5::gate
    return gate_reference(x, g, activation, l2_eps)
