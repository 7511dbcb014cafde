"""Register-token conditioning: pool or compress the register tokens into one vector per sample."""

from __future__ import annotations

import torch
from torch import nn

from vit5._validation import positive_int


def _check_registers(module: str, registers: torch.Tensor, num_registers: int, width: int | None) -> None:
    if (
        registers.ndim != 3
        or registers.shape[1] != num_registers
        or (width is not None and registers.shape[2] != width)
    ):
        expected = f"[B, {num_registers}, {'C' if width is None else width}]"
        raise ValueError(f"{module} expects register tokens {expected}, got shape {tuple(registers.shape)}")


class RegisterPooling(nn.Module):
    """Softmax-weighted average of the register tokens: ``c = sum_r softmax(logits)_r * reg_r``.

    ``logits`` (``[R]``, zeros at init, so the first pooling is the plain mean) is tagged
    ``_no_weight_decay``. The weights are computed in fp32.

    Args:
        num_registers: Number of register tokens ``R``.

    Shapes:
        ``[B, R, C] -> [B, C]``.
    """

    def __init__(self, num_registers: int) -> None:
        super().__init__()
        self.num_registers = positive_int("num_registers", num_registers)
        self.logits = nn.Parameter(torch.zeros(num_registers))
        self.logits._no_weight_decay = True

    def forward(self, registers: torch.Tensor) -> torch.Tensor:
        _check_registers("RegisterPooling", registers, self.num_registers, None)
        weights = torch.softmax(self.logits.float(), dim=0).to(registers.dtype)  # (R,)
        return torch.einsum("r,brc->bc", weights, registers)  # (B, C)

    def flop_count(self, dim: int) -> int:
        """``3R + 2R * dim`` (softmax, weighted sum)."""
        return 3 * self.num_registers + 2 * self.num_registers * dim


class RegisterCompressConcat(nn.Module):
    """Project each register token to ``compressed_dim`` channels and concatenate them.

    Args:
        num_registers: Number of register tokens ``R``.
        hidden_dim: Register width ``D``.
        compressed_dim: Width ``c`` of each compressed register (``compress``: Linear, no bias).

    Shapes:
        ``[B, R, D] -> [B, R * c]`` in register-major order (``out_dim = R * c``).
    """

    def __init__(self, num_registers: int, hidden_dim: int, compressed_dim: int) -> None:
        super().__init__()
        self.num_registers = positive_int("num_registers", num_registers)
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.compressed_dim = positive_int("compressed_dim", compressed_dim)
        self.compress = nn.Linear(hidden_dim, compressed_dim, bias=False)

    @property
    def out_dim(self) -> int:
        return self.num_registers * self.compressed_dim

    def forward(self, registers: torch.Tensor) -> torch.Tensor:
        _check_registers("RegisterCompressConcat", registers, self.num_registers, self.hidden_dim)
        return self.compress(registers).flatten(1)  # (B, R*c)

    def flop_count(self, dim: int | None = None) -> int:
        """``2 * R * hidden_dim * compressed_dim``; ``dim`` is accepted for a uniform call and ignored."""
        return 2 * self.num_registers * self.hidden_dim * self.compressed_dim
