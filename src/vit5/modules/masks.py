"""Kernel masks: multiply an implicit kernel by a per-channel window over the coordinate grid.

A mask is called as ``mask(grid, x)`` with the fp32 coordinate grid ``[1, *taps, d]`` returned by
the kernel and the channels-last kernel ``x`` of shape ``[1|B, *taps, C]``; it returns
``x * window`` in ``x.dtype``. The window is computed in fp32 (the grid is upcast if needed; the
reference asserts an fp32 grid instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vit5._validation import choice, positive_float, positive_int

__all__ = ["BlockAlignedGaussianModulationND", "ExponentialModulationND", "GaussianModulationND"]

PARAMETRIZATIONS = ("direct", "log", "softplus")


def _check_call(module: nn.Module, grid: torch.Tensor, x: torch.Tensor) -> None:
    d, c = module.data_dim, module.num_channels
    if grid.ndim != d + 2 or grid.shape[-1] != d or grid.shape[0] != 1:
        raise ValueError(
            f"{type(module).__name__} expects a grid of shape [1, *taps, {d}], got {tuple(grid.shape)}"
        )
    if x.ndim != d + 2 or x.shape[-1] != c or tuple(x.shape[1:-1]) != tuple(grid.shape[1:-1]):
        raise ValueError(
            f"{type(module).__name__} expects a kernel of shape [1|B, {', '.join(map(str, grid.shape[1:-1]))}, {c}], "
            f"got {tuple(x.shape)}"
        )


def _attenuation(name: str, value: Any) -> float:
    value = positive_float(name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _kappa(attenuation: float) -> float:
    """Standard deviation at which ``exp(-1 / (2 sigma^2)) = attenuation`` at unit distance."""
    return math.sqrt(-1.0 / (2.0 * math.log(attenuation)))


class ExponentialModulationND(nn.Module):
    """Exponential decay window ``m_c(p) = prod_a exp(-|p_a| * |w_{a,c}|)``.

    ``weight`` (``[d, C]``, trainable, tagged ``_no_weight_decay``) starts with every row equal to
    ``linspace(slow_decay_pct, fast_decay_pct, C) / d``, so channel 0 decays slowest.

    Args:
        data_dim: Number of spatial axes ``d``.
        num_channels: Number of kernel channels ``C``.
        fast_decay_pct: Largest total decay rate (last channel).
        slow_decay_pct: Smallest total decay rate (first channel).

    Shapes:
        ``forward(grid [1, *taps, d], x [1|B, *taps, C]) -> [1|B, *taps, C]`` in ``x.dtype``.
    """

    def __init__(
        self, data_dim: int, num_channels: int, fast_decay_pct: float = 13.81, slow_decay_pct: float = 2.3
    ) -> None:
        super().__init__()
        self.data_dim = positive_int("data_dim", data_dim)
        self.num_channels = positive_int("num_channels", num_channels)
        self.fast_decay_pct = positive_float("fast_decay_pct", fast_decay_pct, allow_zero=True)
        self.slow_decay_pct = positive_float("slow_decay_pct", slow_decay_pct, allow_zero=True)
        rates = torch.linspace(slow_decay_pct, fast_decay_pct, num_channels, dtype=torch.float32) / data_dim
        self.weight = nn.Parameter(rates.unsqueeze(0).repeat(data_dim, 1))  # (d, C)
        self.weight._no_weight_decay = True

    def forward(self, grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_call(self, grid, x)
        rates = self.weight.float().abs()  # (d, C)
        decay = torch.exp(-grid.float().abs().unsqueeze(-1) * rates)  # (1, *taps, d, C)
        window = decay.prod(dim=-2)  # (1, *taps, C)
        return x * window.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"data_dim={self.data_dim}, num_channels={self.num_channels}, "
            f"fast_decay_pct={self.fast_decay_pct}, slow_decay_pct={self.slow_decay_pct}"
        )


class GaussianModulationND(nn.Module):
    """Gaussian window ``m_c(p) = exp(-1/2 sum_a p_a^2 / sigma_{a,c}^2)`` with learned widths.

    ``sigma`` is kept in ``[min_std, max_std]`` with ``kappa(a) = sqrt(-1 / (2 ln a))``:
    ``min_std = 2 / (grid_size - 1) * kappa(min_attenuation_at_step)`` (the narrowest window
    attenuates to ``min_attenuation_at_step`` one grid step away) and
    ``max_std = kappa(max_attenuation_at_limit)`` (the widest is still at least that at distance 1).
    :class:`~vit5.modules.ckconv.CKConvND` overrides ``grid_size`` with ``2 max(L_eff) - 1``.

    Init per axis ``a`` with extent ``e_a``: ``logspace`` over the channels from
    ``clip(min_std e_a)`` to ``clip(kappa(0.1) e_a)`` (the constant 0.1, as in the reference), so
    channel 0 is the narrowest. The parameter ``std_param`` (``[d, C]``, tagged
    ``_no_weight_decay``) stores ``sigma`` (``"direct"``), ``log(sigma)`` (``"log"``) or the
    inverse softplus ``log(expm1(sigma))`` (``"softplus"``).

    In the forward pass: ``"direct"`` clamps ``std_param`` **in place** (a forward pre-hook, no
    grad) and uses it as is (identity gradient); ``"log"`` / ``"softplus"`` map and then clamp
    (zero gradient outside the bounds) and never modify the parameter.

    Args:
        data_dim: Number of spatial axes ``d``.
        num_channels: Number of kernel channels ``C``.
        grid_size: Number of grid taps across ``[-1, 1]`` (sets ``min_std``), >= 2.
        min_attenuation_at_step: Window value one step from the centre for the narrowest width.
        max_attenuation_at_limit: Window value at distance 1 for the widest width.
        init_extent: Positive float or one per axis; scales the initial widths.
        parametrization: ``"direct"``, ``"log"`` or ``"softplus"``.

    Shapes:
        ``forward(grid [1, *taps, d], x [1|B, *taps, C]) -> [1|B, *taps, C]`` in ``x.dtype``.
    """

    def __init__(
        self,
        data_dim: int,
        num_channels: int,
        grid_size: int,
        min_attenuation_at_step: float = 0.1,
        max_attenuation_at_limit: float = 0.95,
        init_extent: float | Sequence[float] = 1.0,
        parametrization: str = "direct",
    ) -> None:
        super().__init__()
        self.data_dim = positive_int("data_dim", data_dim)
        self.num_channels = positive_int("num_channels", num_channels)
        self.grid_size = positive_int("grid_size", grid_size)
        if grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        self.min_attenuation_at_step = _attenuation("min_attenuation_at_step", min_attenuation_at_step)
        self.max_attenuation_at_limit = _attenuation("max_attenuation_at_limit", max_attenuation_at_limit)
        self.parametrization = choice("parametrization", parametrization, PARAMETRIZATIONS)
        self.init_extent = self._extents(init_extent, data_dim)
        self.min_std = (2.0 / (grid_size - 1)) * _kappa(min_attenuation_at_step)
        self.max_std = _kappa(max_attenuation_at_limit)
        if self.min_std > self.max_std:
            raise ValueError(
                f"min_std {self.min_std:.4g} (from grid_size={grid_size}, min_attenuation_at_step="
                f"{min_attenuation_at_step}) exceeds max_std {self.max_std:.4g} (from max_attenuation_at_limit="
                f"{max_attenuation_at_limit}); use a larger grid_size or a larger max_attenuation_at_limit"
            )

        rows = []
        for extent in self.init_extent:
            low = min(max(self.min_std * extent, self.min_std), self.max_std)
            high = min(max(_kappa(0.1) * extent, self.min_std), self.max_std)
            rows.append(torch.logspace(math.log10(low), math.log10(high), num_channels, dtype=torch.float32))
        std = torch.stack(rows)  # (d, C)
        if parametrization == "log":
            std = torch.log(std)
        elif parametrization == "softplus":
            std = torch.log(torch.expm1(std))
        self.std_param = nn.Parameter(std)
        self.std_param._no_weight_decay = True
        if parametrization == "direct":
            self.register_forward_pre_hook(self._clamp_direct_std_param_pre_hook)

    @staticmethod
    def _extents(init_extent: Any, data_dim: int) -> tuple[float, ...]:
        if isinstance(init_extent, Sequence) and not isinstance(init_extent, str):
            values = list(init_extent)
            if len(values) != data_dim:
                raise ValueError(
                    f"init_extent must have one entry per axis (data_dim={data_dim}), got {values!r}"
                )
        else:
            values = [init_extent] * data_dim
        return tuple(positive_float(f"init_extent[{axis}]", value) for axis, value in enumerate(values))

    @staticmethod
    def _clamp_direct_std_param_pre_hook(module: GaussianModulationND, args: Any) -> None:
        with torch.no_grad():
            module.std_param.clamp_(module.min_std, module.max_std)

    def _compute_std(self) -> torch.Tensor:
        """``sigma`` as fp32 ``[d, C]``."""
        param = self.std_param.float()
        if self.parametrization == "direct":
            return param
        sigma = torch.exp(param) if self.parametrization == "log" else F.softplus(param)
        return sigma.clamp(self.min_std, self.max_std)

    def forward(self, grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_call(self, grid, x)
        inv_var = 1.0 / self._compute_std().pow(2)  # (d, C)
        exponent = -0.5 * (grid.float().pow(2).unsqueeze(-1) * inv_var).sum(dim=-2)  # (1, *taps, C)
        return x * torch.exp(exponent).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"data_dim={self.data_dim}, num_channels={self.num_channels}, parametrization={self.parametrization!r}, "
            f"std bounds=[{self.min_std:.4f}, {self.max_std:.4f}], init_extent={self.init_extent}"
        )


class BlockAlignedGaussianModulationND(GaussianModulationND):
    """:class:`GaussianModulationND` with the initial widths reversed over channels (channel 0 widest).

    Same arguments, bounds and forward; only the stored ``std_param`` is flipped after init.
    """

    def __init__(
        self,
        data_dim: int,
        num_channels: int,
        grid_size: int,
        min_attenuation_at_step: float = 0.1,
        max_attenuation_at_limit: float = 0.95,
        init_extent: float | Sequence[float] = 1.0,
        parametrization: str = "direct",
    ) -> None:
        super().__init__(
            data_dim,
            num_channels,
            grid_size,
            min_attenuation_at_step,
            max_attenuation_at_limit,
            init_extent,
            parametrization,
        )
        with torch.no_grad():
            self.std_param.copy_(self.std_param.flip(-1))
