"""Size budgets for networks described by files: checked before anything real is allocated.

A config or checkpoint read from a file (or a download) decides how large a network vit5 builds:
a 2 KB safetensors file can ask for ``hidden_dim=32768`` or a ``Conv3d(4096, 4096, 64)``. Before
such a network is built, :func:`check_network_budget` sizes it without allocating:

1. structural counts read from the config tree itself: at most :data:`MAX_CONFIG_NODES` entries,
   block/layer counts (``num_blocks``, ``num_layers``, ``depth``) at most :data:`MAX_BLOCKS`, and
   no integer larger than the parameter budget (no count or width can sensibly exceed it);
2. then a build on the ``meta`` device (shapes only, no memory): the exact parameter count, and an
   estimate of the activation memory of one image (batch 1, inference).

Budgets (one vocabulary): ``max_params=`` / ``--max-params`` / ``VIT5_MAX_PARAMS`` (default
``4e9`` parameters, which the official ViT-L and larger fit well under) and
``max_activation_gib=`` / ``--max-activation-gib`` / ``VIT5_MAX_ACTIVATION_GIB`` (default 32 GiB at
batch 1). Python configs and command-line overrides are the user's own choices and are not
budgeted; only configs and weights read from files or downloads are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from vit5.config import instantiate, to_container

__all__ = [
    "DEFAULT_MAX_ACTIVATION_GIB",
    "DEFAULT_MAX_PARAMS",
    "MAX_BLOCKS",
    "MAX_CONFIG_NODES",
    "BudgetError",
    "activation_bytes",
    "current_budgets",
    "budget_limits",
    "check_network_budget",
    "activation_budget_gib",
    "params_budget",
]

DEFAULT_MAX_PARAMS = 4_000_000_000
DEFAULT_MAX_ACTIVATION_GIB = 32.0
#: Most blocks / layers one module of a config read from a file may stack.
MAX_BLOCKS = 1024
#: Most entries a network config read from a file may have (a ViT-XL config has a few hundred).
MAX_CONFIG_NODES = 100_000
_COUNT_KEYS = ("num_blocks", "num_layers", "depth", "num_hidden_layers")
_FLAG_PARAMS = "--max-params / max_params= / VIT5_MAX_PARAMS"
_FLAG_ACTIVATIONS = "--max-activation-gib / max_activation_gib= / VIT5_MAX_ACTIVATION_GIB"


class BudgetError(ValueError):
    """A network described by a file is larger than the budget (the message gives both numbers)."""


#: The budgets a caller set for the loads it runs (:func:`budget_limits`); ``None``: the defaults.
_LIMITS: ContextVar[tuple[Any, Any]] = ContextVar("vit5_budget_limits", default=(None, None))


@contextmanager
def budget_limits(
    max_params: float | int | None = None, max_activation_gib: float | None = None
) -> Iterator[None]:
    """Within the block, networks described by files are checked against these budgets.

    This is how ``vit5.load_model(..., max_params=...)`` and ``--max-params`` reach every loader
    without each format's reader taking the keywords. ``None`` keeps the enclosing (or default)
    budget. The values are checked on entry.
    """
    outer = _LIMITS.get()
    params = outer[0] if max_params is None else params_budget(max_params)
    activations = outer[1] if max_activation_gib is None else activation_budget_gib(max_activation_gib)
    token = _LIMITS.set((params, activations))
    try:
        yield
    finally:
        _LIMITS.reset(token)


def _number(value: Any, name: str, env: str, default: float) -> float:
    if value is None:
        text = os.environ.get(env)
        if text is None or not text.strip():
            return default
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{env}={text!r}: expected a positive number") from None
        name = env
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def params_budget(value: float | int | None = None) -> int:
    """The parameter budget: ``value``, else ``$VIT5_MAX_PARAMS``, else 4e9."""
    return int(_number(value, "max_params", "VIT5_MAX_PARAMS", DEFAULT_MAX_PARAMS))


def activation_budget_gib(value: float | None = None) -> float:
    """The batch-1 activation budget in GiB: ``value``, else ``$VIT5_MAX_ACTIVATION_GIB``, else 32."""
    return _number(value, "max_activation_gib", "VIT5_MAX_ACTIVATION_GIB", DEFAULT_MAX_ACTIVATION_GIB)


def current_budgets() -> tuple[int, float]:
    """The budgets in force: (parameters, batch-1 activation GiB), from the enclosing
    :func:`budget_limits`, else the environment, else the defaults."""
    scoped = _LIMITS.get()
    return params_budget(scoped[0]), activation_budget_gib(scoped[1])


def _structure(tree: Any, source: str, limit: int) -> None:
    """Step 1: counts read from the tree alone (iterative: a deep tree cannot overflow the stack)."""
    nodes, stack = 0, [(tree, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        nodes += 1
        if nodes > MAX_CONFIG_NODES or depth > 64:
            raise BudgetError(f"{source}: the network config has more than {MAX_CONFIG_NODES} entries or nests "
                              "deeper than 64 levels (a crafted file)")  # fmt: skip
        if isinstance(node, Mapping):
            stack.extend(
                (value, f"{where}.{key}" if where else str(key), depth + 1) for key, value in node.items()
            )
        elif isinstance(node, (list, tuple)):
            stack.extend((value, f"{where}[{i}]", depth + 1) for i, value in enumerate(node))
        elif isinstance(node, int) and not isinstance(node, bool):
            key = where.rsplit(".", 1)[-1]
            if key in _COUNT_KEYS and node > MAX_BLOCKS:
                raise BudgetError(f"{source}: {where}={node} stacks more than {MAX_BLOCKS} blocks (a crafted or "
                                  "damaged config)")  # fmt: skip
            if abs(node) > limit:
                raise BudgetError(
                    f"{source}: {where}={node} is larger than the parameter budget {limit:.3g} (raise it with "
                    f"{_FLAG_PARAMS} if the file is yours)"
                )


def _tokens(model: nn.Module) -> int:
    image, patch = getattr(model, "image_size", None), getattr(model, "patch_size", None)
    if not isinstance(image, int) or not isinstance(patch, int) or patch <= 0:
        return 1
    grid = max(image // patch, 1)
    return grid * grid + grid + 1 + int(getattr(model, "num_registers", 0) or 0)


def activation_bytes(model: nn.Module) -> int:
    """Estimated peak activation memory (bytes) of one fp32 image through ``model`` in inference.

    The input image, a few ``[T, D]`` token tensors live across a block (``T`` tokens including
    CLS, registers and padding), plus the largest single intermediate of any layer: a linear or
    convolution output over all tokens, or a ``[heads, T, T]`` attention matrix (the math path
    materialises it). An estimate for budgeting, not a measurement.
    """
    tokens = _tokens(model)
    width = int(getattr(model, "hidden_dim", 0) or 0)
    image = int(getattr(model, "image_size", 0) or 0)
    base = 4 * (int(getattr(model, "in_channels", 3) or 3) * image * image + 6 * tokens * width)
    largest = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            largest = max(largest, 4 * tokens * module.out_features)
        elif isinstance(module, nn.modules.conv._ConvNd):
            largest = max(largest, 4 * tokens * module.out_channels)
        heads = getattr(module, "num_heads", None)
        if isinstance(heads, int) and heads > 0:
            largest = max(largest, 4 * heads * tokens * tokens)
        if "Hyena" in type(module).__name__ or "CKConv" in type(module).__name__:
            largest = max(largest, 4 * 16 * tokens * max(width, 1))  # padded 2D FFTs of every channel
    return base + 2 * largest


def check_network_budget(
    config: Any,
    source: str,
    *,
    max_params: float | int | None = None,
    max_activation_gib: float | None = None,
) -> int:
    """Refuse a network config read from a file whose network would exceed the budgets.

    Args:
        config: The network config (a tree of recorded calls, resolved) that is about to be built.
        source: The file or download it came from, for the message.
        max_params: Parameter budget (``None``: the enclosing :func:`budget_limits`, else
            ``$VIT5_MAX_PARAMS``, else 4e9).
        max_activation_gib: Batch-1 activation budget in GiB (``None``: the enclosing
            :func:`budget_limits`, else ``$VIT5_MAX_ACTIVATION_GIB``, else 32).

    Returns:
        The network's parameter count.

    Raises:
        BudgetError: Over a budget; the message gives the numbers and the flag that raises it.
    """
    scoped = _LIMITS.get()
    limit = (params_budget(scoped[0] if max_params is None else max_params),
             activation_budget_gib(scoped[1] if max_activation_gib is None else max_activation_gib))  # fmt: skip
    tree = to_container(config) if not isinstance(config, (Mapping, list)) else config
    _structure(tree, source, limit[0])
    with torch.device("meta"):
        model = instantiate(config)
    if not isinstance(model, nn.Module):
        return 0
    count = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    if count > limit[0]:
        raise BudgetError(
            f"{source}: the network has {count:,} parameters, more than the budget of {limit[0]:,} (raise it with "
            f"{_FLAG_PARAMS} if the file is yours)"
        )
    needed = activation_bytes(model)
    if needed > limit[1] * 2**30:
        raise BudgetError(
            f"{source}: one image through this network needs about {needed / 2**30:.1f} GiB of activations, more "
            f"than the budget of {limit[1]:g} GiB (raise it with {_FLAG_ACTIVATIONS} if the file is yours)"
        )
    return count
