"""A SIREN kernel trained at one resolution, resampled to run at another.

Used by :mod:`vit5.networks.resize` (``hyena_kernel="resample"``); its parameters and
``state_dict`` keys are exactly :class:`~vit5.modules.siren.SIRENKernelND`'s. It used to live in
``vit5.networks.resampled_kernel``, which still re-exports it so that saved configs naming
``vit5.networks.resampled_kernel.ResampledSIRENKernelND`` keep loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn import functional as F

from vit5._validation import int_or_per_axis, positive_float
from vit5.modules.siren import SIRENKernelND

__all__ = ["ResampledSIRENKernelND", "resample_kernel"]


def resample_kernel(
    trained: torch.Tensor,
    grid_lens: Sequence[int],
    sample_grid: Sequence[int],
    sample_scale: float,
    l_cache_per_axis: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """A 2-d kernel evaluated at ``sample_grid``, resampled for an image scaled by ``sample_scale``.

    The output tap at displacement ``d`` is the trained kernel at ``d / sample_scale`` (bicubic,
    zero beyond the trained support) times ``sample_scale ** -2`` (the area element).

    Args:
        trained: The kernel at ``sample_grid``, ``[1|B, 2s0 - 1, 2s1 - 1, C]``.
        grid_lens: The grid lengths to produce (``g`` per axis).
        sample_grid: The grid lengths ``trained`` was evaluated at.
        sample_scale: Current grid / training grid.
        l_cache_per_axis: The kernel's construction-time ``L_cache`` (for the tap coordinates).

    Returns:
        ``(kernel [1|B, 2g0 - 1, 2g1 - 1, C], coordinates [1, 2g0 - 1, 2g1 - 1, 2])``, the coordinates
        in the kernel's training coordinates (for masks).
    """
    positions = [
        torch.arange(-(g - 1), g, dtype=torch.float32, device=trained.device) / sample_scale
        for g in grid_lens
    ]  # per axis: the training displacement d / scale of every output tap d
    # grid_sample (align_corners=True) normalises tap index 0 .. 2s-2 to -1 .. 1: d -> d / (s - 1)
    normalised = [p / max(s - 1, 1) for p, s in zip(positions, sample_grid)]
    rows, cols = torch.meshgrid(*normalised, indexing="ij")
    where = torch.stack((cols, rows), dim=-1).expand(trained.shape[0], -1, -1, -1)  # (1|B, h, w, 2): (x, y)
    resampled = F.grid_sample(
        trained.float().permute(0, 3, 1, 2), where, mode="bicubic", padding_mode="zeros", align_corners=True
    )  # (1|B, C, 2g0 - 1, 2g1 - 1)
    kernel = resampled.permute(0, 2, 3, 1) * sample_scale ** -len(grid_lens)
    steps = [p / (length - 1) for p, length in zip(positions, l_cache_per_axis)]
    coordinates = torch.stack(torch.meshgrid(*steps, indexing="ij"), dim=-1).unsqueeze(0)  # (1, *taps, d)
    return kernel.to(trained.dtype), coordinates


class ResampledSIRENKernelND(SIRENKernelND):
    """A :class:`~vit5.modules.siren.SIRENKernelND` evaluated on its training grid, then resampled.

    A SIREN with ``omega_0 = 10`` varies a lot between adjacent taps, so evaluating it between the
    taps it was trained on gives values no training step constrained. This kernel instead takes the
    trained taps exactly (the SIREN at ``sample_grid``) and treats them as samples of a continuous
    kernel over image coordinates: for an image scaled by ``sample_scale`` the output tap at
    displacement ``d`` is the trained kernel at ``d / sample_scale`` (bicubic interpolation, zero
    beyond the trained support), times ``sample_scale ** -data_dim`` (the area element), so a
    convolution of the upsampled image approximates the upsampled convolution. At
    ``grid_lens == sample_grid`` and scale 1 it is exactly the SIREN kernel.

    Args:
        out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, omega_0, L_cache, use_bias,
        hidden_omega_0, film_cfg, film_after_pos_embed: As :class:`SIRENKernelND`.
        sample_grid: Grid lengths the kernel was trained at (``CKConvND``'s ``grid_lens``, e.g.
            ``[rows, g]``); ``None`` means ``L_cache``.
        sample_scale: Current grid / training grid (the image scale factor), e.g. ``12 / 8``.

    Shapes:
        ``forward(grid_lens, conditioning=None) -> (K [1|B, *(2g - 1), out_dim], grid [1, *(2g - 1), d])``;
        ``grid`` holds the taps' coordinates in the SIREN's training coordinates (for masks).
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
        hidden_omega_0: float = 1.0,
        film_cfg: Any = None,
        film_after_pos_embed: bool = False,
        sample_grid: int | Sequence[int] | None = None,
        sample_scale: float = 1.0,
    ) -> None:
        super().__init__(
            out_dim, data_dim, mlp_hidden_dim, num_layers, embedding_dim, omega_0, L_cache, use_bias,
            hidden_omega_0=hidden_omega_0, film_cfg=film_cfg, film_after_pos_embed=film_after_pos_embed,
        )  # fmt: skip
        if data_dim != 2:
            raise ValueError(
                f"ResampledSIRENKernelND supports data_dim=2 (image grids), got data_dim={data_dim}"
            )
        grid = self.L_cache_per_axis if sample_grid is None else sample_grid
        self.sample_grid = tuple(int_or_per_axis("sample_grid", grid, data_dim))
        self.sample_scale = positive_float("sample_scale", sample_scale)

    def forward(
        self, grid_lens: Sequence[int], conditioning: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid_lens = tuple(grid_lens)
        if grid_lens == self.sample_grid and self.sample_scale == 1.0:
            return super().forward(grid_lens, conditioning)
        trained, _ = super().forward(self.sample_grid, conditioning)  # (1|B, *(2s - 1), C)
        return resample_kernel(trained, grid_lens, self.sample_grid, self.sample_scale, self.L_cache_per_axis)

    def flop_count(self, grid_lens: Sequence[int], inference: bool = False) -> int:
        """The SIREN's cost at ``sample_grid`` (the resampling itself is not counted)."""
        return super().flop_count(self.sample_grid, inference)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sample_grid={list(self.sample_grid)}, sample_scale={self.sample_scale:g}"
