"""The transformer MLP (feed-forward) block, with plain and gated activations."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vit5._validation import boolean, check_last_dim, choice, positive_float, positive_int
from vit5.config import build_callable, instantiate
from vit5.modules.hooks import fast_path_allowed

logger = logging.getLogger(__name__)

ACTIVATIONS = ("relu", "gelu", "silu", "glu", "swiglu")
GATED = ("glu", "swiglu")
_INPLACE = {"gelu": torch.ops.aten.gelu_, "relu": torch.relu_, "silu": torch.ops.aten.silu_}


class MLP(nn.Module):
    """``layer2(dropout(act(layer1(x))))`` with hidden width ``int(dim * expansion_factor)``.

    Activations (``h = layer1(x)``):

    * ``"relu"``, ``"silu"``; ``"gelu"`` is the exact erf GELU (not the tanh approximation);
    * ``"glu"``: ``h[..., :Hm] * sigmoid(h[..., Hm:])`` (value first, gate second);
    * ``"swiglu"``: ``a, b = h.chunk(2)``; ``b * silu(a)`` (gate first).

    Gated variants double ``layer1``'s output width to ``2 * Hm``. Without autograd the plain
    activations run in place on ``layer1``'s output (same bits, one full-size buffer fewer) when
    ``layer1`` is a plain ``nn.Linear`` and no hook on it could hold that output.

    Args:
        dim: Input and output width.
        activation: One of ``"relu"``, ``"gelu"``, ``"silu"``, ``"glu"``, ``"swiglu"``.
        dropout_cfg: Config (or module) of the dropout between the activation and ``layer2``;
            ``None`` means no dropout.
        expansion_factor: Hidden width ``Hm = int(dim * expansion_factor)``.
        bias: Whether both linear layers have a bias.
        backend: ``"torch"``; ``"quack"`` (the reference's fused GPU kernel) is accepted and runs
            the same math in PyTorch.
        init_method_in: ``fn(out_features) -> fn(weight)`` applied to ``layer1.weight`` after
            PyTorch's default init (its bias is then zeroed). ``None`` keeps the default init.
        init_method_out: The same for ``layer2``.

    Shapes:
        ``[..., dim] -> [..., dim]``.
    """

    def __init__(
        self,
        dim: int,
        activation: str,
        dropout_cfg: Any,
        expansion_factor: float = 2.0,
        bias: bool = False,
        backend: str = "torch",
        init_method_in: Any = None,
        init_method_out: Any = None,
    ) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.activation = choice("activation", activation, ACTIVATIONS)
        self.expansion_factor = positive_float("expansion_factor", expansion_factor)
        self.backend = choice("backend", backend, ("torch", "quack"))
        if backend == "quack":
            logger.info("MLP backend='quack' is not available in vit5; using the PyTorch path (same math)")
        boolean("bias", bias)
        self.hidden_dim = int(dim * expansion_factor)
        if self.hidden_dim < 1:
            raise ValueError(f"dim * expansion_factor must be >= 1, got {dim} * {expansion_factor}")
        self.is_glu_variant = activation in GATED
        width = 2 * self.hidden_dim if self.is_glu_variant else self.hidden_dim
        init_in = build_callable(init_method_in, "init_method_in")
        init_out = build_callable(init_method_out, "init_method_out")

        self.layer1 = nn.Linear(dim, width, bias=bias)
        _apply_init(self.layer1, init_in)
        self.dropout = nn.Identity() if dropout_cfg is None else instantiate(dropout_cfg)
        self.layer2 = nn.Linear(self.hidden_dim, dim, bias=bias)
        _apply_init(self.layer2, init_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("MLP", x, self.dim)
        h = self.layer1(x)  # (..., width)
        if (
            self.activation in _INPLACE
            and type(self.layer1) is nn.Linear  # its output is always a fresh tensor
            and fast_path_allowed(self.layer1)
        ):
            h = _INPLACE[self.activation](h)  # same bits in layer1's fresh output: no new buffer
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "silu":
            h = F.silu(h)
        elif self.activation == "glu":
            h = F.glu(h, dim=-1)
        else:  # swiglu
            gate, value = h.chunk(2, dim=-1)
            h = value * F.silu(gate)
        return self.layer2(self.dropout(h))  # (..., dim)

    def flop_count(self, num_tokens: int) -> int:
        """Both matmuls plus the activation (twice for gated ones); biases are not counted."""
        hidden, width = self.hidden_dim, self.layer1.out_features
        activation = 2 * num_tokens * hidden if self.is_glu_variant else num_tokens * hidden
        return 2 * num_tokens * self.dim * width + activation + 2 * num_tokens * hidden * self.dim


def _apply_init(layer: nn.Linear, init_method: Any) -> None:
    """Apply a curried ``init_method(out_features)(weight)`` and zero the bias, if given."""
    if init_method is None:
        return
    init_method(layer.out_features)(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
