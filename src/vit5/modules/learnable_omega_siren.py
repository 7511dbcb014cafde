"""SIREN kernels whose first-layer frequency has a learnable per-row scale.

nvSubquadratic 0.2.0's ``LearnableOmegaSIRENKernelND`` and ``BlockDiagonalLearnableOmegaSIRENKernelND``
(same constructor keywords, parameter names and outputs); they go wherever
:class:`~vit5.modules.siren.SIRENKernelND` goes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from vit5._validation import boolean, positive_float
from vit5.modules.kernel_resampling import SelfResampling
from vit5.modules.multi_omega_siren import block_schedule, check_divisible, mask_blocks
from vit5.modules.siren import SIRENKernelND, SIRENPositionalEmbeddingND
from vit5.ops.capture import is_capturing

__all__ = [
    "BlockDiagonalLearnableOmegaSIRENKernelND",
    "LearnableOmegaSIRENKernelND",
    "LearnableOmegaSIRENPositionalEmbeddingND",
]


def _scale_init(value: Any, embedding_dim: int, low: float, high: float) -> torch.Tensor:
    if isinstance(value, bool):
        raise TypeError(f"omega_0_scale_init must be a number or {embedding_dim} numbers, got {value!r}")
    if isinstance(value, (int, float)):
        scale = torch.full((embedding_dim,), float(value), dtype=torch.float32)
    elif isinstance(value, torch.Tensor):
        scale = value.detach().to(torch.float32).flatten()
    elif isinstance(value, Sequence) and not isinstance(value, str):
        scale = torch.tensor([float(v) for v in value], dtype=torch.float32)
    else:
        raise TypeError(f"omega_0_scale_init must be a number or {embedding_dim} numbers, got {value!r:.120}")
    if scale.numel() != embedding_dim:
        raise ValueError(
            f"omega_0_scale_init must have {embedding_dim} values (embedding_dim), got {scale.numel()}"
        )
    if bool((scale < low).any()) or bool((scale > high).any()):
        raise ValueError(
            f"omega_0_scale_init values must lie in [{low}, {high}]; got min={float(scale.min()):.4g}, "
            f"max={float(scale.max()):.4g}"
        )
    return scale


class LearnableOmegaSIRENPositionalEmbeddingND(SIRENPositionalEmbeddingND):
    """First SIREN layer ``sin(2 pi omega_0 * s * (W0 p + b0))`` with a learnable per-row scale ``s``.

    ``W0 ~ U(+-1/d)`` (the ``2 pi omega_0`` factor is applied in the forward pass, from the
    non-persistent fp32 buffer ``omega_0_const``), ``b0 = 0``. ``omega_0_scale`` (``[E]``, the
    parameter) starts at ``omega_0_scale_init`` and is clamped in place to
    ``[omega_0_scale_min, omega_0_scale_max]`` before each forward pass (only when a value is out
    of range, so cached kernel spectra stay valid; under graph capture the clamp is functional).
    Computed in fp32.

    Args:
        data_dim, embedding_dim, L_cache, use_bias: As :class:`SIRENPositionalEmbeddingND`.
        omega_0: Constant frequency (> 0).
        omega_0_scale_init: A number or ``embedding_dim`` numbers within the clamp range.
        omega_0_scale_min: Lower clamp (> 0); ``omega_0_scale_max``: upper clamp (>= min).
        apply_lr_scale: Tag ``linear.weight`` (and bias) with ``_lr_scale = 1 / (2 pi omega_0)``,
            which vit5's optimiser multiplies into their learning rate.

    Shapes:
        ``forward(grid [1, *taps, d]) -> [1, *taps, E]`` (fp32).
    """

    def __init__(
        self,
        data_dim: int,
        embedding_dim: int,
        L_cache: int | Sequence[int],
        omega_0: float,
        omega_0_scale_init: float | Sequence[float] | torch.Tensor = 1.0,
        omega_0_scale_min: float = 1e-2,
        omega_0_scale_max: float = 2.0,
        use_bias: bool = True,
        apply_lr_scale: bool = False,
    ) -> None:
        low = positive_float("omega_0_scale_min", omega_0_scale_min)
        high = positive_float("omega_0_scale_max", omega_0_scale_max)
        if high < low:
            raise ValueError(f"omega_0_scale_max ({high}) must be >= omega_0_scale_min ({low})")
        super().__init__(data_dim, embedding_dim, L_cache, omega_0, use_bias)
        with torch.no_grad():
            self.linear.weight.uniform_(-1.0 / data_dim, 1.0 / data_dim)
        scale = _scale_init(omega_0_scale_init, embedding_dim, low, high)
        self.omega_0_scale_min, self.omega_0_scale_max = low, high
        self.register_buffer(
            "omega_0_const", torch.tensor(2.0 * math.pi * self.omega_0, dtype=torch.float32), persistent=False
        )
        self.omega_0_scale = torch.nn.Parameter(scale.clone())
        for parameter in self.parameters():
            parameter._no_weight_decay = True
        if boolean("apply_lr_scale", apply_lr_scale):
            for parameter in self.linear.parameters():
                parameter._lr_scale = 1.0 / (2.0 * math.pi * self.omega_0)

    def _scale(self) -> torch.Tensor:
        scale = self.omega_0_scale
        if is_capturing():
            return scale.clamp(self.omega_0_scale_min, self.omega_0_scale_max).float()
        if bool(((scale < self.omega_0_scale_min) | (scale > self.omega_0_scale_max)).any()):
            with torch.no_grad():
                scale.clamp_(self.omega_0_scale_min, self.omega_0_scale_max)
        return scale.float()

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=grid.device.type, enabled=False):
            weight = self.linear.weight.float()
            bias = None if self.linear.bias is None else self.linear.bias.float()
            pre = F.linear(grid.float(), weight, bias)  # (1, *taps, E)
            return (pre * (self.omega_0_const * self._scale())).sin()

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        constant = self.omega_0_const
        super()._apply(fn, recurse)
        if self.omega_0_const.dtype != torch.float32:
            self.omega_0_const = constant.to(device=self.omega_0_const.device, dtype=torch.float32)
        return self

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, omega_0={self.omega_0:.4g}, "
            f"clamp=[{self.omega_0_scale_min:.4g}, {self.omega_0_scale_max:.4g}]"
        )


class LearnableOmegaSIRENKernelND(SelfResampling, SIRENKernelND):
    """:class:`SIRENKernelND` whose positional embedding is a :class:`LearnableOmegaSIRENPositionalEmbeddingND`.

    Built as the SIREN with ``omega_0``, then the positional embedding is replaced (the reference's
    order of random draws). Forward, shapes and FiLM are the SIREN's.

    Args:
        omega_0_scale_init, omega_0_scale_min, omega_0_scale_max, apply_lr_scale: As
            :class:`LearnableOmegaSIRENPositionalEmbeddingND`.
        sample_grid, sample_scale: vit5's resampling (:mod:`~vit5.modules.kernel_resampling`).
        Others: as :class:`SIRENKernelND`.
    """

    def __init__(
        self,
        out_dim: int,
        data_dim: int,
        mlp_hidden_dim: int,
        num_layers: int,
        embedding_dim: int,
        omega_0: float,
        L_cache: int | Sequence[int],
        use_bias: bool,
        omega_0_scale_init: float | Sequence[float] | torch.Tensor = 1.0,
        omega_0_scale_min: float = 1e-2,
        omega_0_scale_max: float = 2.0,
        hidden_omega_0: float = 1.0,
        apply_lr_scale: bool = False,
        film_cfg: Any = None,
        film_after_pos_embed: bool = False,
        sample_grid: int | Sequence[int] | None = None,
        sample_scale: float = 1.0,
    ) -> None:
        super().__init__(
            out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, omega_0, L_cache, use_bias,
            hidden_omega_0=hidden_omega_0, film_cfg=film_cfg, film_after_pos_embed=film_after_pos_embed,
        )  # fmt: skip
        self.positional_embedding = LearnableOmegaSIRENPositionalEmbeddingND(
            data_dim, embedding_dim, L_cache, float(omega_0), omega_0_scale_init, omega_0_scale_min,
            omega_0_scale_max, use_bias, apply_lr_scale,
        )  # fmt: skip
        self._set_resampling(sample_grid, sample_scale)


class BlockDiagonalLearnableOmegaSIRENKernelND(LearnableOmegaSIRENKernelND):
    """Block-diagonal init with a learnable per-row scale initialised to a per-block schedule.

    ``omega_0 = max(omega_0_per_block)`` is the constant factor and ``omega_0_scale`` starts at
    ``omega_0_per_block / omega_0`` repeated over each block's rows, so the effective frequencies
    at init are the block schedule; then the hidden and output weights are block-masked as in
    :class:`~vit5.modules.multi_omega_siren.BlockDiagonalMultiOmegaSIRENKernelND`.

    Args:
        num_blocks, omega_0_min, omega_0_max, schedule, off_block_scale, omega_0_per_block: As
            ``BlockDiagonalMultiOmegaSIRENKernelND``.
        omega_0_scale_min, omega_0_scale_max, apply_lr_scale: As ``LearnableOmegaSIRENKernelND``.
        sample_grid, sample_scale: vit5's resampling (:mod:`~vit5.modules.kernel_resampling`).
        Others: as :class:`SIRENKernelND`.
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
        omega_0_scale_min: float = 1e-2,
        omega_0_scale_max: float = 2.0,
        hidden_omega_0: float = 1.0,
        apply_lr_scale: bool = False,
        film_cfg: Any = None,
        film_after_pos_embed: bool = False,
        sample_grid: int | Sequence[int] | None = None,
        sample_scale: float = 1.0,
    ) -> None:
        check_divisible(
            num_blocks, embedding_dim=embedding_dim, mlp_hidden_dim=mlp_hidden_dim, out_dim=out_dim
        )
        per_block = block_schedule(num_blocks, omega_0_min, omega_0_max, schedule, omega_0_per_block)
        constant = float(per_block.max())
        scale = (per_block.to(torch.float32) / constant).repeat_interleave(embedding_dim // num_blocks)
        super().__init__(
            out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, constant, L_cache, use_bias,
            omega_0_scale_init=scale, omega_0_scale_min=omega_0_scale_min, omega_0_scale_max=omega_0_scale_max,
            hidden_omega_0=hidden_omega_0, apply_lr_scale=apply_lr_scale, film_cfg=film_cfg,
            film_after_pos_embed=film_after_pos_embed, sample_grid=sample_grid, sample_scale=sample_scale,
        )  # fmt: skip
        mask_blocks(self, num_blocks, off_block_scale)
        self.num_blocks = int(num_blocks)
        self.off_block_scale = float(off_block_scale)
        self.register_buffer("omega_0_per_block", per_block.to(torch.float32), persistent=False)
