"""Stochastic depth: drop a whole residual branch per sample."""

from __future__ import annotations

import torch
from torch import nn

from vit5._validation import probability


class DropPath(nn.Module):
    """Zero the input for a random subset of samples during training and rescale the rest.

    In training each sample is kept with probability ``1 - drop_prob`` and kept samples are
    divided by ``1 - drop_prob`` so the expectation is unchanged (with ``drop_prob == 1`` the
    output is all zeros). In eval mode, or with ``drop_prob == 0``, it is the identity.

    Args:
        drop_prob: Probability of dropping a sample's branch, in [0, 1].
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = probability("drop_prob", drop_prob)

    def is_identity(self) -> bool:
        """Whether ``forward`` returns its input unchanged now (eval mode or ``drop_prob == 0``)."""
        return not self.training or self.drop_prob == 0.0

    def sample_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The per-sample factors ``forward(x)`` multiplies by (``[B, 1, ..., 1]``: 0 or
        ``1 / (1 - drop_prob)``), drawn from the generator as ``forward`` draws them; ``None``
        when ``forward`` is the identity (no draw)."""
        if self.is_identity():
            return None
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
        if keep > 0.0:
            mask.div_(keep)
        return mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.sample_mask(x)
        return x if mask is None else x * mask

    def flop_count(self, num_tokens: int = 0) -> int:
        return 0

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
