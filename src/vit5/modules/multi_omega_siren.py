"""SIREN kernels with a per-row first-layer frequency, and their block-diagonal variant.

nvSubquadratic 0.2.0's ``MultiOmegaSIRENKernelND`` and ``BlockDiagonalMultiOmegaSIRENKernelND``
(same constructor keywords, parameter names and outputs). Both differ from
:class:`~vit5.modules.siren.SIRENKernelND` only in their initialisation, so their forward pass is
the SIREN's and they go wherever a SIREN kernel goes (``CKConvND``, Hyena, export).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vit5._validation import positive_int
from vit5.modules.kernel_resampling import SelfResampling
from vit5.modules.siren import SIRENKernelND, SIRENPositionalEmbeddingND

__all__ = [
    "BlockDiagonalMultiOmegaSIRENKernelND",
    "MultiOmegaSIRENKernelND",
    "MultiOmegaSIRENPositionalEmbeddingND",
]


def positive_vector(name: str, values: Any) -> torch.Tensor:
    """A non-empty 1-D float64 tensor of strictly positive values (a list, tuple or tensor).

    Raises:
        TypeError: ``values`` is not a sequence of numbers or a tensor.
        ValueError: it is not 1-D, is empty, or holds a value <= 0.
    """
    if isinstance(values, torch.Tensor):
        out = values.detach().to(dtype=torch.float64).flatten()
    elif isinstance(values, Sequence) and not isinstance(values, str):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{name} must be a list of numbers, got {list(values)!r:.120}")
        out = torch.tensor([float(v) for v in values], dtype=torch.float64)
    else:
        raise TypeError(f"{name} must be a list of positive numbers or a 1-D tensor, got {values!r:.120}")
    if out.numel() == 0:
        raise ValueError(f"{name} must be non-empty")
    if not bool((out > 0).all()):
        raise ValueError(f"{name} entries must all be strictly positive, got {out.tolist()}")
    return out


def omega_0_schedule(num_blocks: int, omega_0_min: float, omega_0_max: float, schedule: str) -> torch.Tensor:
    """Per-block ``omega_0`` (float64, ``[num_blocks]``): evenly spaced (``"linear"``) or evenly
    spaced in ``log10`` (``"log"``) from ``omega_0_min`` to ``omega_0_max``.

    Raises:
        ValueError: ``num_blocks < 1``, an endpoint <= 0, ``omega_0_max < omega_0_min``, or an
            unknown ``schedule``.
    """
    positive_int("num_blocks", num_blocks)
    if omega_0_min <= 0 or omega_0_max <= 0:
        raise ValueError(f"omega_0_min/omega_0_max must be positive, got ({omega_0_min}, {omega_0_max})")
    if omega_0_max < omega_0_min:
        raise ValueError(f"omega_0_max must be >= omega_0_min, got ({omega_0_min}, {omega_0_max})")
    if schedule == "linear":
        return torch.linspace(float(omega_0_min), float(omega_0_max), num_blocks, dtype=torch.float64)
    if schedule == "log":
        low, high = math.log10(float(omega_0_min)), math.log10(float(omega_0_max))
        return torch.logspace(low, high, num_blocks, dtype=torch.float64)
    raise ValueError(f"schedule must be 'linear' or 'log', got {schedule!r}")


def block_mask(
    rows: int, cols: int, num_blocks: int, off_block_scale: float, like: torch.Tensor
) -> torch.Tensor:
    """``[rows, cols]``: 1 on the ``num_blocks`` diagonal blocks of ``rows // num_blocks`` x
    ``cols // num_blocks``, ``off_block_scale`` elsewhere (dtype and device of ``like``)."""
    mask = torch.full((rows, cols), float(off_block_scale), dtype=like.dtype, device=like.device)
    block_rows, block_cols = rows // num_blocks, cols // num_blocks
    for k in range(num_blocks):
        mask[k * block_rows : (k + 1) * block_rows, k * block_cols : (k + 1) * block_cols] = 1.0
    return mask


def check_divisible(num_blocks: int, **dims: int) -> None:
    positive_int("num_blocks", num_blocks)
    for name, dim in dims.items():
        if dim % num_blocks != 0:
            raise ValueError(f"{name}={dim} must be divisible by num_blocks={num_blocks}")


def block_schedule(
    num_blocks: int, omega_0_min: float, omega_0_max: float, schedule: str, given: Any
) -> torch.Tensor:
    """``given`` (length ``num_blocks``) or the schedule from the endpoints, float64."""
    if given is None:
        return omega_0_schedule(num_blocks, omega_0_min, omega_0_max, schedule)
    values = positive_vector("omega_0_per_block", given)
    if values.numel() != num_blocks:
        raise ValueError(f"omega_0_per_block length ({values.numel()}) must equal num_blocks ({num_blocks})")
    return values


@torch.no_grad()
def mask_blocks(kernel: SIRENKernelND, num_blocks: int, off_block_scale: float) -> None:
    """Scale the off-block weights of every hidden and the output linear by ``off_block_scale``."""
    for linear in (*kernel.hidden_linears, kernel.out_linear):
        weight = linear.weight
        weight.mul_(block_mask(weight.shape[0], weight.shape[1], num_blocks, off_block_scale, weight))


class MultiOmegaSIRENPositionalEmbeddingND(SIRENPositionalEmbeddingND):
    """The SIREN's first layer with one ``omega_0`` per embedding row.

    Row ``k`` of ``W0`` is drawn from ``U(+-2 pi omega_0_per_row[k] / d)`` (rows in order, after
    the parent's draw with ``omega_0 = 1``); the forward pass is the parent's ``sin(W0 p + b0)``.

    Args:
        data_dim, embedding_dim, L_cache, use_bias: As :class:`SIRENPositionalEmbeddingND`.
        omega_0_per_row: ``embedding_dim`` positive frequencies (list or 1-D tensor).

    Attributes:
        omega_0: The mean of the schedule (diagnostic).
        omega_0_per_row: Non-persistent fp32 buffer ``[embedding_dim]``.
    """

    def __init__(
        self,
        data_dim: int,
        embedding_dim: int,
        L_cache: int | Sequence[int],
        omega_0_per_row: Sequence[float] | torch.Tensor,
        use_bias: bool = True,
    ) -> None:
        omega = positive_vector("omega_0_per_row", omega_0_per_row)
        if omega.numel() != embedding_dim:
            raise ValueError(
                f"omega_0_per_row length ({omega.numel()}) must equal embedding_dim ({embedding_dim})"
            )
        super().__init__(data_dim, embedding_dim, L_cache, 1.0, use_bias)
        with torch.no_grad():
            for row, frequency in enumerate(omega.tolist()):
                bound = 2.0 * math.pi * frequency / data_dim
                self.linear.weight[row].uniform_(-bound, bound)
        self.register_buffer("omega_0_per_row", omega.to(torch.float32), persistent=False)
        self.omega_0 = float(omega.mean())


class MultiOmegaSIRENKernelND(SelfResampling, SIRENKernelND):
    """:class:`SIRENKernelND` whose positional embedding has a per-row ``omega_0`` schedule.

    Built as the SIREN with ``omega_0 = mean(omega_0_per_row)``, then the positional embedding is
    replaced by a :class:`MultiOmegaSIRENPositionalEmbeddingND` (the reference's order of random
    draws). Forward, shapes and FiLM are the SIREN's.

    Args:
        omega_0_per_row: ``embedding_dim`` positive frequencies of the first layer.
        out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, L_cache, use_bias,
        hidden_omega_0, film_cfg, film_after_pos_embed: As :class:`SIRENKernelND`.
        sample_grid, sample_scale: vit5's resampling at another resolution
            (:mod:`~vit5.modules.kernel_resampling`); the defaults leave the kernel as the reference's.
    """

    def __init__(
        self,
        out_dim: int,
        data_dim: int,
        mlp_hidden_dim: int,
        num_layers: int,
        embedding_dim: int,
        omega_0_per_row: Sequence[float] | torch.Tensor,
        L_cache: int | Sequence[int],
        use_bias: bool,
        hidden_omega_0: float = 1.0,
        film_cfg: Any = None,
        film_after_pos_embed: bool = False,
        sample_grid: int | Sequence[int] | None = None,
        sample_scale: float = 1.0,
    ) -> None:
        omega = positive_vector("omega_0_per_row", omega_0_per_row)
        if omega.numel() != embedding_dim:
            raise ValueError(
                f"omega_0_per_row length ({omega.numel()}) must equal embedding_dim ({embedding_dim})"
            )
        super().__init__(
            out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, float(omega.mean()), L_cache, use_bias,
            hidden_omega_0=hidden_omega_0, film_cfg=film_cfg, film_after_pos_embed=film_after_pos_embed,
        )  # fmt: skip
        self.positional_embedding = MultiOmegaSIRENPositionalEmbeddingND(
            data_dim, embedding_dim, L_cache, omega, use_bias
        )
        for parameter in self.positional_embedding.parameters():
            parameter._no_weight_decay = True
        self.register_buffer("omega_0_per_row", omega.to(torch.float32), persistent=False)
        self._set_resampling(sample_grid, sample_scale)


class BlockDiagonalMultiOmegaSIRENKernelND(MultiOmegaSIRENKernelND):
    """A multi-omega SIREN kernel with a per-block schedule and block-diagonal init.

    Embedding rows fall into ``num_blocks`` equal blocks with ``omega_0`` from ``omega_0_per_block``
    (or the ``schedule`` from ``omega_0_min`` to ``omega_0_max``); every hidden and the output
    linear's weight is then multiplied by :func:`block_mask` (1 on the diagonal blocks,
    ``off_block_scale`` elsewhere). ``off_block_scale=1`` is :class:`MultiOmegaSIRENKernelND`.

    Args:
        num_blocks: Number of blocks; divides ``embedding_dim``, ``mlp_hidden_dim`` and ``out_dim``.
        omega_0_min, omega_0_max, schedule: The per-block schedule (``"linear"`` or ``"log"``).
        off_block_scale: Init scale of the off-block weights.
        omega_0_per_block: Explicit ``num_blocks`` frequencies (overrides the schedule).
        sample_grid, sample_scale: vit5's resampling (:mod:`~vit5.modules.kernel_resampling`).
        Others: as :class:`SIRENKernelND`.

    Raises:
        ValueError: a width not divisible by ``num_blocks``, or an invalid schedule.
    """

    def __init__(
        self,
        out_dim: int,
        data_dim: int,
        mlp_hidden_dim: int,
        num_layers: int,
        embedding_dim: int,
        L_cache: int | Sequence[int],
        use_bias: bool,
        num_blocks: int = 8,
        omega_0_min: float = 1.0,
        omega_0_max: float = 12.0,
        schedule: str = "linear",
        off_block_scale: float = 0.1,
        omega_0_per_block: Sequence[float] | torch.Tensor | None = None,
        hidden_omega_0: float = 1.0,
        film_cfg: Any = None,
        film_after_pos_embed: bool = False,
        sample_grid: int | Sequence[int] | None = None,
        sample_scale: float = 1.0,
    ) -> None:
        check_divisible(
            num_blocks, embedding_dim=embedding_dim, mlp_hidden_dim=mlp_hidden_dim, out_dim=out_dim
        )
        per_block = block_schedule(num_blocks, omega_0_min, omega_0_max, schedule, omega_0_per_block)
        super().__init__(
            out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim,
            per_block.repeat_interleave(embedding_dim // num_blocks), L_cache, use_bias,
            hidden_omega_0=hidden_omega_0, film_cfg=film_cfg, film_after_pos_embed=film_after_pos_embed,
            sample_grid=sample_grid, sample_scale=sample_scale,
        )  # fmt: skip
        mask_blocks(self, num_blocks, off_block_scale)
        self.num_blocks = int(num_blocks)
        self.off_block_scale = float(off_block_scale)
        self.register_buffer("omega_0_per_block", per_block.to(torch.float32), persistent=False)
