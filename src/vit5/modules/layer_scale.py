"""LayerScale: a learned per-channel gain on a residual branch (CaiT)."""

from __future__ import annotations

import torch
from torch import nn

from vit5._validation import positive_float, positive_int


class LayerScale(nn.Module):
    """Multiply the last dimension by a learned vector ``gamma`` (``[dim]``, ``init_value`` at init).

    ``gamma`` is tagged ``_no_weight_decay``. The output has the dtype of the input.

    Args:
        dim: Number of channels.
        init_value: Initial value of every entry of ``gamma`` (ViT-5 uses 1e-4).
    """

    def __init__(self, dim: int, init_value: float = 1e-4) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.init_value = positive_float("init_value", init_value, allow_zero=True)
        self.gamma = nn.Parameter(torch.full((dim,), self.init_value))
        self.gamma._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype)  # (..., dim)

    def flop_count(self, num_tokens: int) -> int:
        """``num_tokens * dim``."""
        return num_tokens * self.dim

    def extra_repr(self) -> str:
        return f"{self.dim}, init_value={self.init_value}"
