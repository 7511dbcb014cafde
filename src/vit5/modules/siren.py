"""SIREN implicit kernels: an MLP with sine activations evaluated on a coordinate grid."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vit5._validation import boolean, positive_float, positive_int
from vit5.config import instantiate

__all__ = ["SIRENKernelND", "SIRENPositionalEmbeddingND"]


def _l_cache_per_axis(L_cache: Any, data_dim: int) -> tuple[int, ...]:
    if isinstance(L_cache, bool):
        raise TypeError(f"L_cache must be an int or a list of {data_dim} ints, got {L_cache!r}")
    if isinstance(L_cache, int):
        values = [L_cache] * data_dim
    elif isinstance(L_cache, Sequence) and not isinstance(L_cache, str):
        values = list(L_cache)
        if len(values) != data_dim:
            raise ValueError(f"L_cache must have one entry per axis (data_dim={data_dim}), got {values!r}")
    else:
        raise TypeError(f"L_cache must be an int or a list of {data_dim} ints, got {L_cache!r}")
    for axis, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"L_cache[{axis}] must be an int, got {value!r}")
        if value < 2:
            raise ValueError(f"L_cache values must be >= 2 (the coordinate step is 1/(L-1)), got {values!r}")
    return tuple(values)


class SIRENPositionalEmbeddingND(nn.Module):
    """Coordinate grid (cached) and the first SIREN layer ``sin(W0 p + b0)``.

    The grid for per-axis lengths ``g`` has ``2g - 1`` taps per axis: the relative displacements
    ``-(g-1) .. g-1`` at coordinates ``displacement / (L - 1)`` (``L`` = the construction-time
    ``L_cache`` of that axis), taken as the central slice of the cached
    ``linspace(-lim, lim, 2 L_cur - 1)`` (fp32; ``lim = 1 + (L_cur - L) / (L - 1)``, so ``lim = 1``
    until the cache grows). Channel ``a`` of the grid is the coordinate of spatial axis ``a``
    (channel 0 = rows).

    Growth: an input longer than the cache on some axis grows the cache on that axis to the input
    length, permanently. The limit is always computed from the construction-time ``L``, so the
    coordinate step never changes. (The reference library computes the limit of a *second* growth
    relative to the current cache length, and re-squashes axes that grew earlier to ``[-1, 1]``;
    vit5 keeps the step fixed. The first growth is bit-identical to the reference.)

    ``grid_cache`` is a non-persistent fp32 buffer that stays fp32 when the module is cast (e.g.
    ``model.to(torch.bfloat16)``). The linear layer and the sine run in fp32 with autocast
    disabled; the output is fp32.

    Args:
        data_dim: Number of spatial axes ``d``.
        embedding_dim: Output width ``E``.
        L_cache: Construction-time length per axis (int or ``d`` ints, each >= 2).
        omega_0: First-layer frequency: ``W0 ~ U(-2 pi omega_0 / d, 2 pi omega_0 / d)``.
        use_bias: Whether the linear layer has a bias (zero-initialised).

    Shapes:
        ``forward(grid [1, *taps, d]) -> [1, *taps, E]`` (fp32).
    """

    def __init__(
        self, data_dim: int, embedding_dim: int, L_cache: Any, omega_0: float, use_bias: bool
    ) -> None:
        super().__init__()
        self.data_dim = positive_int("data_dim", data_dim)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        self.L_cache_per_axis = _l_cache_per_axis(L_cache, data_dim)
        self.L_cache = L_cache
        self.omega_0 = positive_float("omega_0", omega_0)
        self.use_bias = boolean("use_bias", use_bias)
        self.step_sizes = tuple(1.0 / (length - 1) for length in self.L_cache_per_axis)
        self.linear = nn.Linear(data_dim, embedding_dim, bias=use_bias)
        with torch.no_grad():
            bound = 2 * math.pi * self.omega_0 / data_dim
            self.linear.weight.uniform_(-bound, bound)
            if self.linear.bias is not None:
                self.linear.bias.zero_()
        self._cache_lens = self.L_cache_per_axis
        self.register_buffer("grid_cache", self._build_grid(self._cache_lens, None), persistent=False)

    def _build_grid(self, lengths: Sequence[int], device: torch.device | None) -> torch.Tensor:
        axes = []
        for length, base in zip(lengths, self.L_cache_per_axis):
            limit = 1 + (length - base) / (base - 1)
            axes.append(torch.linspace(-limit, limit, 2 * length - 1, dtype=torch.float32, device=device))
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*taps, d)
        return grid.unsqueeze(0)  # (1, *taps, d)

    def grid(self, grid_lens: Sequence[int]) -> torch.Tensor:
        """Coordinates of the ``2g - 1`` taps per axis, ``[1, *(2g - 1), d]`` fp32 (grows the cache)."""
        grid_lens = tuple(grid_lens)
        if len(grid_lens) != self.data_dim:
            raise ValueError(f"grid_lens must have {self.data_dim} entries (one per axis), got {grid_lens!r}")
        for axis, length in enumerate(grid_lens):
            positive_int(f"grid_lens[{axis}]", length)
        if any(g > cached for g, cached in zip(grid_lens, self._cache_lens)):
            self._cache_lens = tuple(max(g, cached) for g, cached in zip(grid_lens, self._cache_lens))
            self.grid_cache = self._build_grid(self._cache_lens, self.grid_cache.device)
        index = (slice(None), *(slice(c - g, c + g - 1) for g, c in zip(grid_lens, self._cache_lens)))
        return self.grid_cache[index]

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=grid.device.type, enabled=False):
            weight = self.linear.weight.float()
            bias = None if self.linear.bias is None else self.linear.bias.float()
            return torch.sin(F.linear(grid.float(), weight, bias))  # (1, *taps, E)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        cache = self.grid_cache
        super()._apply(fn, recurse)
        if self.grid_cache.dtype != torch.float32:
            # Casting the module must not round the coordinates: keep the fp32 values, new device.
            self.grid_cache = cache.to(device=self.grid_cache.device, dtype=torch.float32)
        return self

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, embedding_dim={self.embedding_dim}, L_cache={self.L_cache}"


class SIRENKernelND(nn.Module):
    """Implicit convolution kernel: a SIREN evaluated on a grid of relative displacements.

    ``h0 = sin(W0 p + b0)`` (the positional embedding, fp32), ``h_i = sin(W_i h_{i-1} + b_i)`` for
    the hidden layers, ``K = W_o h + b_o`` (no activation). There are ``max(num_layers - 1, 1)``
    hidden layers: ``E -> h`` then ``h -> h`` (the reference builds one hidden layer for
    ``num_layers <= 2``; vit5 keeps that and rejects ``num_layers < 1``).

    Init (matching the reference, including the order of random draws): all biases zero;
    ``W0 ~ U(+-2 pi omega_0 / d)``; hidden and output weights ``~ U(+-sqrt(6 / in_features))``
    (``hidden_omega_0`` cancels out of the bound); the output layer is then scaled by
    ``sqrt(1 / prod(L_cache))``. Every parameter except ``out_linear.weight`` is tagged
    ``_no_weight_decay``.

    FiLM: with ``film_cfg`` (a :class:`~vit5.modules.film.KernelFiLMGenerator` config) and a
    ``conditioning`` vector ``[B, cond]`` in ``forward``, each hidden output becomes
    ``gamma_l * h + beta_l`` (and, with ``film_after_pos_embed``, ``h0`` too, shifting the pair
    index by one); the kernel is then per-sample ``[B, *taps, out_dim]``. Without conditioning
    (or without a generator) the plain kernel ``[1, *taps, out_dim]`` is returned.

    Args:
        out_dim: Number of output channels ``C`` (the convolution's hidden dim).
        data_dim: Number of spatial axes ``d``.
        mlp_hidden_dim: Hidden width ``h``.
        num_layers: Sine layers including the positional embedding (see above).
        embedding_dim: Width ``E`` of the positional embedding.
        omega_0: First-layer frequency (init only).
        L_cache: Construction-time grid length per axis (int or ``d`` ints >= 2); sets the
            coordinate step ``1 / (L - 1)`` and the output scale.
        use_bias: Whether the linear layers have biases.
        hidden_omega_0: Hidden-layer frequency (cancels out of the init bound; kept for configs).
        film_cfg: Optional FiLM generator config; its ``num_film_layers`` must equal the number
            of hidden layers plus ``film_after_pos_embed`` and its ``kernel_hidden_dim`` must be
            ``mlp_hidden_dim``.
        film_after_pos_embed: Also modulate the positional embedding (needs ``E == h``).

    Shapes:
        ``forward(grid_lens, conditioning=None) -> (K [1|B, *(2g - 1), out_dim], grid [1, *(2g - 1), d])``
        where ``grid_lens = g`` per axis and ``grid`` is fp32.
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
    ) -> None:
        super().__init__()
        self.out_dim = positive_int("out_dim", out_dim)
        self.data_dim = positive_int("data_dim", data_dim)
        self.mlp_hidden_dim = positive_int("mlp_hidden_dim", mlp_hidden_dim)
        self.num_layers = positive_int("num_layers", num_layers)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        self.omega_0 = positive_float("omega_0", omega_0)
        self.hidden_omega_0 = positive_float("hidden_omega_0", hidden_omega_0)
        self.L_cache_per_axis = _l_cache_per_axis(L_cache, data_dim)
        self.L_cache = L_cache
        self.use_bias = boolean("use_bias", use_bias)
        self.film_after_pos_embed = boolean("film_after_pos_embed", film_after_pos_embed)
        if film_after_pos_embed and embedding_dim != mlp_hidden_dim:
            raise ValueError(
                f"film_after_pos_embed=True needs embedding_dim == mlp_hidden_dim, got {embedding_dim} != {mlp_hidden_dim}"
            )

        self.positional_embedding = SIRENPositionalEmbeddingND(
            data_dim, embedding_dim, L_cache, omega_0, use_bias
        )
        widths = [embedding_dim] + [mlp_hidden_dim] * max(num_layers - 2, 0)
        self.hidden_linears = nn.ModuleList(
            nn.Linear(width, mlp_hidden_dim, bias=use_bias) for width in widths
        )
        self.out_linear = nn.Linear(mlp_hidden_dim, out_dim, bias=use_bias)
        self._init_siren()
        self.num_film_layers = len(self.hidden_linears)

        for name, parameter in self.named_parameters():
            if name != "out_linear.weight":
                parameter._no_weight_decay = True

        self.film_generator = None if film_cfg is None else instantiate(film_cfg)
        if self.film_generator is not None:
            expected = self.num_film_layers + int(film_after_pos_embed)
            given = getattr(self.film_generator, "num_film_layers", None)
            if given != expected:
                raise ValueError(
                    f"film_cfg.num_film_layers must be {expected} (hidden layers {self.num_film_layers} + "
                    f"film_after_pos_embed {int(film_after_pos_embed)}), got {given}"
                )
            width = getattr(self.film_generator, "kernel_hidden_dim", mlp_hidden_dim)
            if width != mlp_hidden_dim:
                raise ValueError(
                    f"film_cfg.kernel_hidden_dim must equal mlp_hidden_dim={mlp_hidden_dim}, got {width}"
                )

    @torch.no_grad()
    def _init_siren(self) -> None:
        for layer in (*self.hidden_linears, self.out_linear):
            bound = math.sqrt(6.0 / layer.in_features)
            layer.weight.uniform_(-bound, bound)
            if layer.bias is not None:
                layer.bias.zero_()
        scale = math.sqrt(1.0 / math.prod(self.L_cache_per_axis))
        self.out_linear.weight.mul_(scale)
        if self.out_linear.bias is not None:
            self.out_linear.bias.mul_(scale)

    def forward(
        self, grid_lens: Sequence[int], conditioning: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.positional_embedding.grid(grid_lens)  # (1, *taps, d) fp32
        h = self.positional_embedding(grid)  # (1, *taps, E) fp32
        film = None
        if conditioning is not None and self.film_generator is not None:
            batch = conditioning.shape[0]
            view = (batch, *([1] * self.data_dim), self.mlp_hidden_dim)
            film = [
                (gamma.reshape(view), beta.reshape(view)) for gamma, beta in self.film_generator(conditioning)
            ]
        pair = 0
        if film is not None and self.film_after_pos_embed:
            gamma, beta = film[0]
            h = gamma * h + beta  # (B, *taps, E)
            pair = 1
        h = h.to(self.out_linear.weight.dtype)
        for layer in self.hidden_linears:
            h = torch.sin(layer(h))  # (1|B, *taps, h)
            if film is not None:
                gamma, beta = film[pair]
                h = gamma * h + beta
                pair += 1
        return self.out_linear(h), grid  # (1|B, *taps, out_dim), (1, *taps, d)

    def flop_count(self, grid_lens: Sequence[int], inference: bool = False) -> int:
        """Kernel-generation FLOPs on ``prod(2g - 1)`` taps (0 at inference without FiLM: cacheable).

        ``2 G d E + G E + sum_hidden (2 G in out + G out) + 2 G h out_dim``, plus with FiLM the
        generator's ``flop_count()`` and ``n * 2 G h`` for the ``n`` modulations.
        """
        if inference and self.film_generator is None:
            return 0
        taps = math.prod(2 * g - 1 for g in grid_lens)
        flops = 2 * taps * self.data_dim * self.embedding_dim + taps * self.embedding_dim
        for layer in self.hidden_linears:
            flops += 2 * taps * layer.in_features * layer.out_features + taps * layer.out_features
        flops += 2 * taps * self.mlp_hidden_dim * self.out_dim
        if self.film_generator is not None:
            flops += self.film_generator.flop_count()
            flops += self.film_generator.num_film_layers * 2 * taps * self.mlp_hidden_dim
        return flops

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, data_dim={self.data_dim}, mlp_hidden_dim={self.mlp_hidden_dim}, "
            f"num_layers={self.num_layers}, omega_0={self.omega_0}, L_cache={self.L_cache}"
        )
