"""Resampling for the SIREN kernel family: ``sample_grid`` / ``sample_scale`` keywords.

:func:`vit5.networks.resize.resize_model` (``hyena_kernel="resample"``) replaces a plain
``SIRENKernelND`` by :class:`~vit5.modules.resampled_kernel.ResampledSIRENKernelND`. The kernels of
nvSubquadratic's ``kernels_nd`` family carry their own parameters (``omega_0_scale``, schedules), so
they resample themselves instead: with ``sample_grid`` / ``sample_scale`` set, the kernel is
evaluated at ``sample_grid`` and resampled with :func:`~vit5.modules.resampled_kernel.resample_kernel`.
Both are vit5 keywords; at their defaults (``None``, ``1.0``) the kernel is exactly the reference's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vit5._validation import int_or_per_axis, positive_float
from vit5.modules.resampled_kernel import resample_kernel

__all__ = ["SelfResampling"]


class SelfResampling:
    """Mixin for a SIREN kernel subclass (put it first in the bases)."""

    sample_grid: tuple[int, ...] | None = None
    sample_scale: float = 1.0

    def _set_resampling(self, sample_grid: Any, sample_scale: float) -> None:
        self.sample_scale = positive_float("sample_scale", sample_scale)
        self.sample_grid = None
        if sample_grid is not None or self.sample_scale != 1.0:
            if self.data_dim != 2:
                raise ValueError(
                    f"sample_grid / sample_scale need data_dim=2 (image grids), got {self.data_dim}"
                )
            grid = self.L_cache_per_axis if sample_grid is None else sample_grid
            self.sample_grid = tuple(int_or_per_axis("sample_grid", grid, self.data_dim))

    def forward(
        self, grid_lens: Sequence[int], conditioning: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid_lens = tuple(grid_lens)
        if self.sample_grid is None or (grid_lens == self.sample_grid and self.sample_scale == 1.0):
            return super().forward(grid_lens, conditioning)
        trained, _ = super().forward(self.sample_grid, conditioning)  # (1|B, *(2s - 1), C)
        return resample_kernel(trained, grid_lens, self.sample_grid, self.sample_scale, self.L_cache_per_axis)

    def flop_count(self, grid_lens: Sequence[int], inference: bool = False) -> int:
        """The kernel's cost at ``sample_grid`` when resampling (the resampling itself is not counted)."""
        return super().flop_count(self.sample_grid or grid_lens, inference)
