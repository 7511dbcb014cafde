"""Implicit kernels on random Fourier features: nvSubquadratic 0.2.0's ``RandomFourierKernelND``.

Same constructor keywords, parameter names and outputs as the reference; the kernel goes wherever
:class:`~vit5.modules.siren.SIRENKernelND` goes (``CKConvND``, Hyena, export).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vit5._validation import boolean, positive_float, positive_int
from vit5.config import instantiate
from vit5.modules.siren import SIRENPositionalEmbeddingND

__all__ = ["RandomFourierKernelND", "RandomFourierPositionalEmbeddingND"]


class RandomFourierPositionalEmbeddingND(SIRENPositionalEmbeddingND):
    """Random Fourier features ``[cos(W p + b), sin(W p + b)]`` of the kernel's coordinate grid.

    ``W`` (``[E/2, d]``) is drawn from ``N(0, (2 pi omega_0)^2)``, ``b`` is zero; both are
    parameters tagged ``_no_weight_decay`` (the reference does not freeze them either). The grid
    and its cache are the SIREN embedding's (this class reuses them); the projection runs in fp32.

    Args:
        data_dim: Number of spatial axes ``d``.
        embedding_dim: Output width ``E`` (even: cosines then sines).
        L_cache: Construction-time grid length per axis (int or ``d`` ints >= 2).
        omega_0: Bandwidth of the random frequencies.
        use_bias: Whether the projection has a bias.

    Shapes:
        ``forward(grid [1, *taps, d]) -> [1, *taps, E]`` (fp32).
    """

    def __init__(
        self,
        data_dim: int,
        embedding_dim: int,
        L_cache: int | Sequence[int],
        omega_0: float,
        use_bias: bool = True,
    ) -> None:
        if positive_int("embedding_dim", embedding_dim) % 2 != 0:
            raise ValueError(f"embedding_dim must be even (cosines and sines), got {embedding_dim}")
        super().__init__(data_dim, embedding_dim // 2, L_cache, omega_0, use_bias)
        self.embedding_dim = embedding_dim
        with torch.no_grad():
            self.linear.weight.normal_(0.0, 2 * math.pi * self.omega_0)
            if self.linear.bias is not None:
                self.linear.bias.zero_()
        for parameter in self.parameters():
            parameter._no_weight_decay = True

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=grid.device.type, enabled=False):
            weight = self.linear.weight.float()
            bias = None if self.linear.bias is None else self.linear.bias.float()
            phase = F.linear(grid.float(), weight, bias)  # (1, *taps, E/2)
            return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)  # (1, *taps, E)


class RandomFourierKernelND(nn.Module):
    """Implicit convolution kernel ``K = W_o MLP(phi(p)) + b_o`` on random Fourier features ``phi``.

    ``kernel_network`` is ``Linear(E, h), act, [Linear(h, h), act] * (num_layers - 2)`` with the
    activation built from ``nonlinear_cfg`` per layer; ``out_linear`` maps ``h -> out_dim``. With
    ``init_method`` (a curried ``init(fan)(weight)``), hidden weights get ``init_method(h)`` and the
    output weight ``init_method(out_dim)``; the output weight is then scaled by
    ``sqrt(1 / prod(L_cache))``.

    Args:
        out_dim: Number of output channels ``C``.
        data_dim: Number of spatial axes ``d``.
        mlp_hidden_dim: Hidden width ``h``.
        num_layers: Linear layers including the output (>= 2).
        embedding_dim: Width ``E`` of the Fourier features (even).
        omega_0: Bandwidth of the random frequencies.
        L_cache: Construction-time grid length per axis (int or ``d`` ints >= 2).
        use_bias: Whether the linear layers have biases.
        nonlinear_cfg: Config (or class) of the activation, e.g. ``LazyConfig(nn.GELU)()``.
        init_method: Optional curried initialiser.

    Shapes:
        ``forward(grid_lens, conditioning=None) -> (K [1, *(2g - 1), out_dim], grid [1, *(2g - 1), d])``;
        ``conditioning`` is accepted and ignored (no FiLM), as in the reference.
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
        nonlinear_cfg: Any,
        init_method: Callable[[int], Callable[[torch.Tensor], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.out_dim = positive_int("out_dim", out_dim)
        self.data_dim = positive_int("data_dim", data_dim)
        self.mlp_hidden_dim = positive_int("mlp_hidden_dim", mlp_hidden_dim)
        self.num_layers = positive_int("num_layers", num_layers)
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2 (a hidden and the output layer), got {num_layers}")
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        self.omega_0 = positive_float("omega_0", omega_0)
        self.use_bias = boolean("use_bias", use_bias)
        if init_method is not None and not callable(init_method):
            raise TypeError(
                f"init_method must be None or a callable init(fan)(weight), got {init_method!r:.80}"
            )
        self.L_cache = L_cache
        self.positional_embedding = RandomFourierPositionalEmbeddingND(
            data_dim, embedding_dim, L_cache, omega_0, use_bias
        )
        self.L_cache_per_axis = self.positional_embedding.L_cache_per_axis
        layers: list[nn.Module] = [
            nn.Linear(embedding_dim, mlp_hidden_dim, bias=use_bias),
            _activation(nonlinear_cfg),
        ]
        for _ in range(num_layers - 2):
            layers += [nn.Linear(mlp_hidden_dim, mlp_hidden_dim, bias=use_bias), _activation(nonlinear_cfg)]
        self.kernel_network = nn.Sequential(*layers)
        self.out_linear = nn.Linear(mlp_hidden_dim, out_dim, bias=use_bias)
        with torch.no_grad():
            if init_method is not None:
                for layer in self.kernel_network:
                    if isinstance(layer, nn.Linear):
                        init_method(mlp_hidden_dim)(layer.weight)
                init_method(out_dim)(self.out_linear.weight)
            self.out_linear.weight.mul_(math.sqrt(1.0 / math.prod(self.L_cache_per_axis)))

    def forward(
        self, grid_lens: Sequence[int], conditioning: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.positional_embedding.grid(grid_lens)  # (1, *taps, d) fp32
        features = self.positional_embedding(grid).to(self.out_linear.weight.dtype)  # (1, *taps, E)
        return self.out_linear(self.kernel_network(features)), grid  # (1, *taps, out_dim), (1, *taps, d)

    def flop_count(self, grid_lens: Sequence[int], inference: bool = False) -> int:
        """Kernel-generation FLOPs on ``prod(2g - 1)`` taps (0 at inference: the kernel is cacheable).

        ``2 G d E/2 + 2 G E/2`` (projection, cos/sin) ``+ sum_linear 2 G in out + G h`` per activation.
        """
        if inference:
            return 0
        taps = math.prod(2 * g - 1 for g in grid_lens)
        flops = 2 * taps * self.data_dim * (self.embedding_dim // 2) + taps * self.embedding_dim
        for layer in (*self.kernel_network, self.out_linear):
            if isinstance(layer, nn.Linear):
                flops += 2 * taps * layer.in_features * layer.out_features
            else:
                flops += taps * self.mlp_hidden_dim
        return flops

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, data_dim={self.data_dim}, mlp_hidden_dim={self.mlp_hidden_dim}, "
            f"num_layers={self.num_layers}, omega_0={self.omega_0}, L_cache={self.L_cache}"
        )


def _activation(cfg: Any) -> nn.Module:
    module = instantiate(cfg) if not (isinstance(cfg, type) and issubclass(cfg, nn.Module)) else cfg()
    if not isinstance(module, nn.Module):
        raise TypeError(f"nonlinear_cfg must build an nn.Module, got {type(module).__name__}")
    return module
