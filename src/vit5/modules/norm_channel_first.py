"""RMSNorm over the channel axis of channel-first tensors: nvSubquadratic's ``RMSNormChannelFirst``."""

from __future__ import annotations

import torch
from torch import nn

from vit5._validation import boolean, positive_float, positive_int
from vit5.ops.rmsnorm import rms_inverse

__all__ = ["RMSNormChannelFirst"]


class RMSNormChannelFirst(nn.Module):
    """``y[b, c, ...] = weight[c] * x[b, c, ...] / sqrt(mean_c(x[b, :, ...]**2) + eps)`` (fp32 inside).

    The channel-first counterpart of :class:`~vit5.modules.norms.RMSNorm` for ``[B, C, *spatial]``
    tensors. ``channels_first = True`` tells :class:`~vit5.modules.hyena.Hyena` to apply it to its
    ``[B, C, *S]`` activations directly.

    Args:
        dim: Number of channels ``C``.
        eps: Added to the mean of squares inside the square root.
        use_quack: Accepted for compatibility (the reference's fused GPU kernel computes the same
            formula); vit5 always uses the PyTorch path.

    Shapes:
        ``[B, C, *spatial] -> [B, C, *spatial]`` in the input's dtype. ``weight`` (``[C]``, ones at
        init) is tagged ``_no_weight_decay``.
    """

    channels_first: bool = True

    def __init__(self, dim: int, eps: float = 1e-6, use_quack: bool = True) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.eps = positive_float("eps", eps)
        self.use_quack = boolean("use_quack", use_quack)
        self.weight = nn.Parameter(torch.ones(dim))
        self.weight._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.dim:
            raise ValueError(f"RMSNormChannelFirst expects [B, {self.dim}, ...], got shape {tuple(x.shape)}")
        u = x.float()
        y = u * rms_inverse(u, self.eps, dim=1)  # (B, C, *S)
        return (y * self.weight.float().view(1, -1, *([1] * (x.dim() - 2)))).to(x.dtype)

    def flop_count(self, num_tokens: int) -> int:
        """``3 * num_tokens * dim`` (square, mean, scale), as the channel-last norm."""
        return 3 * num_tokens * self.dim

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
