"""Backward passes that autograd can record: the rule for ``create_graph=True``.

A custom ``torch.autograd.Function`` whose backward runs a fused kernel (or reuses tensors the
forward computed without autograd) returns gradients that carry no history: a second
differentiation (a gradient penalty, MAML, Hessian-vector products) would silently drop every
term that flows through them. Every such backward therefore asks :func:`recording` first; when it
holds (``torch.autograd.grad(..., create_graph=True)`` or ``backward(create_graph=True)``), it
returns :func:`recorded_vjp` of its plain PyTorch expression instead: the gradient of the same
formula as ordinary, differentiable PyTorch ops at the saved inputs, so the second derivative is
that of the plain path (``VIT5_NATIVE=0``) up to fp32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["recorded_vjp", "recording"]


def recording() -> bool:
    """True inside a backward pass run with ``create_graph=True`` (its ops are being recorded)."""
    return torch.is_grad_enabled()


def recorded_vjp(
    expression: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    inputs: Sequence[torch.Tensor | None],
    grads: torch.Tensor | Sequence[torch.Tensor | None],
    needs: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    """``grads^T d expression(*inputs) / d inputs`` as recorded (differentiable) PyTorch ops.

    Args:
        expression: The plain PyTorch formula of the operator; must not itself call a custom
            ``autograd.Function`` with a kernel backward (that would recurse).
        inputs: The operator's tensor inputs as saved for backward (``None`` allowed).
        grads: The gradient of each output of ``expression`` (``None`` for an unused output).
        needs: ``ctx.needs_input_grad`` for ``inputs``.

    Returns:
        One gradient per input: ``None`` where not needed, zeros where the expression does not
        depend on that input.
    """
    with torch.enable_grad():
        # Fresh alias nodes: the gradient with respect to an input must count only the paths
        # through this expression, not those through another input computed from it (the
        # residual update's x and branch = f(x)); the aliases keep the history for the next
        # differentiation.
        inputs = [t.view_as(t) if t is not None else None for t in inputs]
        outputs = expression(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grads = (grads,) if isinstance(grads, torch.Tensor) else tuple(grads)
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
    wanted = [i for i, (t, need) in enumerate(zip(inputs, needs)) if need and t is not None]
    result: list[torch.Tensor | None] = [None] * len(inputs)
    if not wanted:
        return tuple(result)
    if not pairs:
        for i in wanted:
            result[i] = torch.zeros_like(inputs[i])
        return tuple(result)
    found = torch.autograd.grad(
        [o for o, _ in pairs],
        [inputs[i] for i in wanted],
        [g for _, g in pairs],
        create_graph=True,
        allow_unused=True,
    )
    for i, g in zip(wanted, found):
        result[i] = torch.zeros_like(inputs[i]) if g is None else g
    return tuple(result)
