"""Normalisation layers: RMSNorm, L2Norm and GlobalResponseNorm.

Statistics are always computed in fp32 and the output has the dtype of the input, so these layers
behave the same in fp32, under ``torch.autocast`` and after ``model.to(torch.bfloat16)``.
"""

from __future__ import annotations

import torch
from torch import nn

from vit5._validation import boolean, check_last_dim, positive_float, positive_int
from vit5.ops.rmsnorm import rms_norm


def no_weight_decay(module: nn.Module) -> nn.Module:
    """Tag every parameter of ``module`` with ``_no_weight_decay = True`` (read by the trainer)."""
    for parameter in module.parameters():
        parameter._no_weight_decay = True
    return module


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension with a learned gain.

    ``y = weight * x / sqrt(mean(x**2, -1) + eps)``, computed in fp32 and cast back to ``x.dtype``.

    Args:
        dim: Size of the normalised (last) dimension.
        eps: Added to the mean of squares inside the square root.
        use_quack: Accepted for compatibility with the reference library, whose fused QuACK kernel
            computes the same formula on recent NVIDIA GPUs; vit5 always uses the PyTorch path.

    Shapes:
        ``[..., dim] -> [..., dim]``. The ``weight`` (``[dim]``, ones at init) is tagged
        ``_no_weight_decay``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, use_quack: bool = True) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.eps = positive_float("eps", eps)
        self.use_quack = boolean("use_quack", use_quack)
        self.weight = nn.Parameter(torch.ones(dim))
        self.weight._no_weight_decay = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("RMSNorm", x, self.dim)
        return rms_norm(
            x, self.weight, self.eps
        )  # fused kernel / closed-form backward / plain (vit5.ops.route)

    def flop_count(self, num_tokens: int) -> int:
        """``3 * num_tokens * dim`` (square, mean, scale)."""
        return 3 * num_tokens * self.dim

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class L2Norm(nn.Module):
    """Scale vectors to unit Euclidean norm along ``dim``: ``x / max(||x||_2, eps)``.

    The norm is computed in fp32; the output has the dtype of the input. With ``dim=1`` the layer
    is a channels-first norm (``channels_first`` is True), which Hyena applies to ``[B, C, *S]``
    tensors directly.

    Args:
        dim: The dimension to normalise.
        eps: Lower bound of the norm (a clamp, not an additive term).
    """

    def __init__(self, dim: int = -1, eps: float = 1e-12) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = dim
        self.eps = positive_float("eps", eps)
        self.channels_first = dim == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x.float(), p=2.0, dim=self.dim, eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class GlobalResponseNorm(nn.Module):
    """Global Response Normalisation (ConvNeXt-V2) over the token axes of ``[B, *tokens, C]``.

    ``g = ||x||_2`` over every axis between batch and channels (per sample and channel),
    ``n = g / (mean_C(g) + eps)``, ``y = gamma * (x * n) + beta + x``. ``gamma`` and ``beta``
    (``[dim]``) start at zero, so the layer is the identity at init; they are not tagged
    ``_no_weight_decay``.

    Args:
        dim: Number of channels ``C``.
        eps: Added to the channel mean of the norms.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = positive_int("dim", dim)
        self.eps = positive_float("eps", eps)
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_last_dim("GlobalResponseNorm", x, self.dim)
        if x.ndim < 3:
            raise ValueError(
                f"GlobalResponseNorm expects [B, *tokens, C] (>= 3 dims), got shape {tuple(x.shape)}"
            )
        token_axes = tuple(range(1, x.ndim - 1))
        g = torch.linalg.vector_norm(x.float(), ord=2, dim=token_axes, keepdim=True)  # (B, 1.., C)
        n = (g / (g.mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.gamma.to(x.dtype) * (x * n) + self.beta.to(x.dtype) + x

    def flop_count(self, num_tokens: int) -> int:
        """``6 * num_tokens * dim``."""
        return 6 * num_tokens * self.dim

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
