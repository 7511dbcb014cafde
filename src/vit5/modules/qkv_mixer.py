"""QKVSequenceMixer: input projection to (q, k, v), an inner mixer, output projection."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vit5._validation import boolean, check_last_dim, positive_int
from vit5.config import build_callable, instantiate
from vit5.modules.hooks import has_hooks

__all__ = ["QKVSequenceMixer"]


class QKVSequenceMixer(nn.Module):
    """``out_proj(mixer(q, k, v))`` with ``[q | k | v] = qkv_proj(x)`` on channels-last tensors.

    ``qkv_proj`` is ``Linear(D, 3D)``; its output is split into three contiguous chunks of ``D``
    in the order q, k, v. The inner mixer (e.g. :class:`~vit5.modules.hyena.Hyena`) is built
    first, then the projections (the reference's order of random draws).

    Init: PyTorch's default Linear init, then — if given — ``init_method_in(D)(qkv_proj.weight)``
    and ``init_method_out(D)(out_proj.weight)`` (both called with ``hidden_dim``, unlike the MLP's
    ``out_features`` convention), in that order, zeroing the corresponding bias. Init methods may
    be callables ``fn(dim) -> fn(tensor)`` or recorded calls of factories returning one.

    Args:
        hidden_dim: Width ``D`` of input, q, k, v and output.
        mixer_cfg: Config of the inner mixer, called as ``mixer(q, k, v[, conditioning=...])``.
        qkv_bias: Bias on ``qkv_proj``.
        out_proj_bias: Bias on ``out_proj``.
        init_method_in: Initialiser factory for ``qkv_proj.weight`` (e.g. ``small_init``).
        init_method_out: Initialiser factory for ``out_proj.weight`` (e.g. the Wang init).

    Shapes:
        ``forward(x [B, *S, D], conditioning [B, cond] | None) -> [B, *S, D]``.
    """

    def __init__(
        self,
        hidden_dim: int,
        mixer_cfg: Any,
        qkv_bias: bool = False,
        out_proj_bias: bool = False,
        init_method_in: Any = None,
        init_method_out: Any = None,
    ) -> None:
        super().__init__()
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        boolean("qkv_bias", qkv_bias)
        boolean("out_proj_bias", out_proj_bias)
        init_in = build_callable(init_method_in, "init_method_in")
        init_out = build_callable(init_method_out, "init_method_out")
        self.mixer = instantiate(mixer_cfg)
        if not isinstance(self.mixer, nn.Module):
            raise TypeError(f"mixer_cfg must build an nn.Module, got {type(self.mixer).__name__}")
        width = getattr(self.mixer, "hidden_dim", hidden_dim)
        if width != hidden_dim:
            raise ValueError(f"mixer_cfg builds a mixer of width {width}, expected hidden_dim={hidden_dim}")
        self.qkv_proj = nn.Linear(hidden_dim, 3 * hidden_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(hidden_dim, hidden_dim, bias=out_proj_bias)
        for layer, init in ((self.qkv_proj, init_in), (self.out_proj, init_out)):
            if init is not None:
                init(hidden_dim)(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        check_last_dim("QKVSequenceMixer", x, self.hidden_dim)
        qkv = self.qkv_proj(x)  # (B, *S, 3D)
        # conditioning is only passed when given, so mixers without that keyword also work
        extra = {} if conditioning is None else {"conditioning": conditioning}
        packed = getattr(self.mixer, "forward_packed", None)
        if packed is not None and not has_hooks(self.mixer):
            # the mixer's own code on the packed projection: no split and re-concatenation
            return self.out_proj(packed(qkv, **extra))  # (B, *S, D)
        q, k, v = qkv.split(self.hidden_dim, dim=-1)  # (B, *S, D) each
        return self.out_proj(self.mixer(q, k, v, **extra))  # (B, *S, D)

    def flop_count(self, spatial_dims: Sequence[int], inference: bool = False) -> int:
        """``2 T D 3D + mixer + 2 T D D`` with ``T = prod(spatial_dims)`` (biases not counted)."""
        tokens, d = math.prod(spatial_dims), self.hidden_dim
        return (
            2 * tokens * d * 3 * d
            + self.mixer.flop_count(tuple(spatial_dims), inference)
            + 2 * tokens * d * d
        )
