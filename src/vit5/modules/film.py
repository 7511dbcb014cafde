"""FiLM generator for implicit kernels: a conditioning vector -> per-layer (gamma, beta) pairs."""

from __future__ import annotations

import math

import torch
from torch import nn

from vit5._validation import choice, positive_float, positive_int

__all__ = ["KernelFiLMGenerator"]


class KernelFiLMGenerator(nn.Module):
    """Map a conditioning vector to FiLM ``(gamma, beta)`` pairs for the hidden layers of a kernel.

    ``u = W2 GELU(W1 c + b1) + b2`` (exact erf GELU) with ``u`` of width
    ``2 * num_film_layers * kernel_hidden_dim``; pair ``l`` is ``gamma_l = u[:, 2hl : 2hl + h]``,
    ``beta_l = u[:, 2hl + h : 2hl + 2h]`` (``h = kernel_hidden_dim``).

    Init: ``mlp.0`` keeps PyTorch's default Linear init; ``mlp.2.weight`` is zero (``"identity"``) or
    ``N(0, init_std^2)`` (``"small_random"``); ``mlp.2.bias`` is 1 on the gamma slots and 0 on the beta
    slots, so the modulation starts as the identity (``gamma = 1, beta = 0``).

    Weight decay tags: both biases always get ``_no_weight_decay = True``. The weights get it too
    if ``no_weight_decay is True``; a number instead sets ``_weight_decay = float(no_weight_decay)``
    on the weights (a per-parameter decay for the trainer); ``False`` leaves them untagged.

    Args:
        cond_dim: Width of the conditioning vector ``c``.
        kernel_hidden_dim: Width ``h`` of the kernel's hidden layers (size of each gamma/beta).
        num_film_layers: Number ``n`` of modulated kernel layers (pairs produced).
        film_hidden_dim: Hidden width ``F`` of the generator MLP.
        no_weight_decay: ``bool`` or a non-negative number; see above.
        init_type: ``"identity"`` or ``"small_random"`` (init of ``mlp.2.weight``).
        init_std: Standard deviation for ``"small_random"``.

    Shapes:
        ``forward(conditioning [B, cond_dim]) -> [(gamma [B, h], beta [B, h])] * n``.
    """

    def __init__(
        self,
        cond_dim: int,
        kernel_hidden_dim: int,
        num_film_layers: int,
        film_hidden_dim: int = 64,
        no_weight_decay: bool | float = False,
        init_type: str = "identity",
        init_std: float = 1e-4,
    ) -> None:
        super().__init__()
        self.cond_dim = positive_int("cond_dim", cond_dim)
        self.kernel_hidden_dim = positive_int("kernel_hidden_dim", kernel_hidden_dim)
        self.num_film_layers = positive_int("num_film_layers", num_film_layers)
        self.film_hidden_dim = positive_int("film_hidden_dim", film_hidden_dim)
        self.init_type = choice("init_type", init_type, ("identity", "small_random"))
        self.init_std = positive_float("init_std", init_std, allow_zero=True)
        if not isinstance(no_weight_decay, bool):
            if not isinstance(no_weight_decay, (int, float)):
                raise TypeError(
                    f"no_weight_decay must be a bool or a non-negative number (a weight-decay value), "
                    f"got {type(no_weight_decay).__name__} {no_weight_decay!r}"
                )
            if not math.isfinite(no_weight_decay) or no_weight_decay < 0:
                raise ValueError(
                    f"no_weight_decay as a weight-decay value must be finite and >= 0, got {no_weight_decay}"
                )
        self.no_weight_decay = no_weight_decay

        out_dim = 2 * num_film_layers * kernel_hidden_dim
        self.mlp = nn.Sequential(
            nn.Linear(cond_dim, film_hidden_dim),
            nn.GELU(),
            nn.Linear(film_hidden_dim, out_dim),
        )
        self._init_weights()
        for layer in (self.mlp[0], self.mlp[2]):
            layer.bias._no_weight_decay = True
            if no_weight_decay is True:
                layer.weight._no_weight_decay = True
            elif not isinstance(no_weight_decay, bool):
                layer.weight._weight_decay = float(no_weight_decay)

    @torch.no_grad()
    def _init_weights(self) -> None:
        last = self.mlp[2]
        if self.init_type == "identity":
            last.weight.zero_()
        else:
            last.weight.normal_(0.0, self.init_std)
        h = self.kernel_hidden_dim
        bias = last.bias.view(self.num_film_layers, 2, h)  # (n, [gamma, beta], h)
        bias[:, 0].fill_(1.0)
        bias[:, 1].zero_()

    def forward(self, conditioning: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if conditioning.ndim != 2 or conditioning.shape[-1] != self.cond_dim:
            raise ValueError(
                f"KernelFiLMGenerator expects conditioning of shape [B, {self.cond_dim}], "
                f"got {tuple(conditioning.shape)}"
            )
        u = self.mlp(conditioning)  # (B, 2 n h)
        u = u.view(u.shape[0], self.num_film_layers, 2, self.kernel_hidden_dim)  # (B, n, 2, h)
        return [(u[:, layer, 0], u[:, layer, 1]) for layer in range(self.num_film_layers)]

    def flop_count(self) -> int:
        """``2 cond F + F + 2 F (2 n h)`` per call (independent of the batch; GELU counted as ``F``)."""
        f, out = self.film_hidden_dim, 2 * self.num_film_layers * self.kernel_hidden_dim
        return 2 * self.cond_dim * f + f + 2 * f * out

    def extra_repr(self) -> str:
        return (
            f"cond_dim={self.cond_dim}, kernel_hidden_dim={self.kernel_hidden_dim}, "
            f"num_film_layers={self.num_film_layers}, init_type={self.init_type!r}"
        )
