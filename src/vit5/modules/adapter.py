"""ViT5HyenaAdapter: run a 2D grid mixer on a flat token sequence."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vit5._validation import positive_int
from vit5.config import instantiate

__all__ = ["ViT5HyenaAdapter"]


class ViT5HyenaAdapter(nn.Module):
    """Reshape ``[B, T, C]`` tokens row-major to a ``[B, T // grid_w, grid_w, C]`` grid and back.

    Token ``t`` goes to row ``t // grid_w``, column ``t % grid_w``. The adapter has no parameters;
    ``conditioning`` is passed through to the inner mixer. ``T`` must be a multiple of ``grid_w``
    (the network pads the sequence for grid mixers); otherwise ``forward`` and ``flop_count``
    raise ``ValueError`` (the reference fails inside ``reshape``, and its ``flop_count`` floors).

    Args:
        inner_mixer_cfg: Config of a 2D mixer taking ``[B, H, W, C]`` (e.g. ``QKVSequenceMixer``
            around ``Hyena``).
        grid_w: Grid width ``W`` (the patch grid width of the network).

    Shapes:
        ``forward(x [B, T, C], conditioning [B, cond] | None) -> [B, T, C]``.
    """

    def __init__(self, inner_mixer_cfg: Any, grid_w: int) -> None:
        super().__init__()
        self.grid_w = positive_int("grid_w", grid_w)
        self.inner_mixer = instantiate(inner_mixer_cfg)
        if not isinstance(self.inner_mixer, nn.Module):
            raise TypeError(f"inner_mixer_cfg must build an nn.Module, got {type(self.inner_mixer).__name__}")

    def _rows(self, num_tokens: int) -> int:
        if num_tokens % self.grid_w != 0:
            raise ValueError(
                f"ViT5HyenaAdapter needs the token count T to be a multiple of grid_w; got T={num_tokens}, "
                f"grid_w={self.grid_w}"
            )
        return num_tokens // self.grid_w

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"ViT5HyenaAdapter expects [B, T, C] tokens, got shape {tuple(x.shape)}")
        batch, tokens, channels = x.shape
        grid = x.reshape(batch, self._rows(tokens), self.grid_w, channels)  # (B, H, W, C)
        if conditioning is None:
            y = self.inner_mixer(grid)
        else:
            y = self.inner_mixer(grid, conditioning=conditioning)
        return y.reshape(batch, tokens, channels)  # (B, T, C)

    def flop_count(self, num_tokens: int, inference: bool = False) -> int:
        """The inner mixer's ``flop_count((T // grid_w, grid_w), inference)``."""
        return self.inner_mixer.flop_count((self._rows(num_tokens), self.grid_w), inference)

    def extra_repr(self) -> str:
        return f"grid_w={self.grid_w}"
